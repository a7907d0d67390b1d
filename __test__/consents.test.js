// Auth sessions and consents (Fiskil-style account linking).

const { openClient, storeOptions } = require('./helpers')

const URIS = { redirect_uri: 'https://app.example/linked', cancel_uri: 'https://app.example/cancelled' }
const GRANT = {
  institution_id: 'bank-au',
  institution_name: 'Bank of Examples',
  account_ids: ['acc-1', 'acc-2'],
  permissions: ['accounts', 'balances'],
  duration_seconds: 90 * 24 * 3600,
}
const ERROR_TYPES = [
  'AUTH_SESSION_CANCELLED',
  'CONSENT_ENDUSER_DENIED',
  'CONSENT_OTP_FAILURE',
  'CONSENT_ENDUSER_INELIGIBLE',
  'CONSENT_TIMEOUT',
  'CONSENT_UPSTREAM_PROCESSING_ERROR',
]

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Waits until the wall clock is past `unixMs` (plus a margin for rounding). */
async function sleepPast(unixMs) {
  while (Date.now() <= unixMs + 50) await sleep(Math.max(10, unixMs + 60 - Date.now()))
}

let seq = 0
async function newUser(client, prefix = 'user') {
  const id = `${prefix}-${++seq}`
  await client.upsertLinkedAccount({ linked_account_id: id, name: id })
  return id
}

async function lastEventId(client) {
  let after = 0
  for (;;) {
    const page = await client.listEvents({ after, limit: 1000 })
    if (page.events.length) after = page.events[page.events.length - 1].id
    if (page.next === null) return after
  }
}

async function eventsAfter(client, after, options = {}) {
  const out = []
  for (;;) {
    const page = await client.listEvents({ ...options, after, limit: 1000 })
    out.push(...page.events)
    if (page.events.length) after = page.events[page.events.length - 1].id
    if (page.next === null) return out
  }
}

async function consentFor(client, user, grant = GRANT) {
  const s = await client.createAuthSession({ linked_account_id: user, ...URIS })
  return client.completeAuthSession(s.session_id, grant)
}

describe('auth sessions', () => {
  let client
  let db
  beforeAll(async () => {
    db = storeOptions()
    client = await openClient(db)
  })
  afterAll(() => client.close())

  test('createAuthSession returns Fiskil shape with a 5-day default lifetime', async () => {
    const user = await newUser(client)
    const before = Math.floor(Date.now() / 1000)
    const s = await client.createAuthSession({ linked_account_id: user, ...URIS })
    expect(s).toMatchObject({
      status: 'pending',
      // Without authUrlBase or publicUrl: the linkvault server's consent page, relative.
      auth_url: `/link/session/${s.session_id}`,
      linked_account_id: user,
      end_user_id: user,
      redirect_uri: URIS.redirect_uri,
      cancel_uri: URIS.cancel_uri,
      institution_id: null,
      permissions: null,
      arrangement_id: null,
      consent_id: null,
      error_type: null,
    })
    expect(s.id).toMatch(/^[0-9a-f]{24}$/)
    expect(typeof s.session_id).toBe('string')
    expect(s.session_id.length).toBeGreaterThanOrEqual(32)
    expect(Number.isInteger(s.expires_at)).toBe(true)
    expect(s.expires_at - before).toBeGreaterThanOrEqual(5 * 86400)
    expect(s.expires_at - before).toBeLessThanOrEqual(5 * 86400 + 60)
    const again = await client.getAuthSession(s.session_id)
    expect(again).toEqual(s)
  })

  test('end_user_id is an alias of linked_account_id; they must agree', async () => {
    const user = await newUser(client)
    const s = await client.createAuthSession({ end_user_id: user, ...URIS, ttl_seconds: 60 })
    expect(s.linked_account_id).toBe(user)
    await expect(
      client.createAuthSession({ end_user_id: user, linked_account_id: 'other', ...URIS }),
    ).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field: 'linked_account_id' })
    await expect(client.createAuthSession({ ...URIS })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'linked_account_id',
    })
  })

  test('unknown account → NOT_FOUND; unknown session → NOT_FOUND', async () => {
    await expect(
      client.createAuthSession({ linked_account_id: 'nobody', ...URIS }),
    ).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(client.getAuthSession('no-such-session')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.completeAuthSession('no-such-session', GRANT)).rejects.toMatchObject({
      code: 'NOT_FOUND',
    })
    await expect(client.cancelAuthSession('no-such-session')).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  test('URIs must be absolute http(s) URLs; other inputs are validated', async () => {
    const user = await newUser(client)
    const bad = [
      [{ redirect_uri: '/relative' }, 'redirect_uri'],
      [{ redirect_uri: 'app.example/cb' }, 'redirect_uri'],
      [{ redirect_uri: 'javascript:alert(1)' }, 'redirect_uri'],
      [{ redirect_uri: 'ftp://app.example/cb' }, 'redirect_uri'],
      [{ redirect_uri: 'https://app.example/cb#token' }, 'redirect_uri'],
      [{ redirect_uri: 'https://user:pw@app.example/cb' }, 'redirect_uri'],
      [{ redirect_uri: undefined }, 'redirect_uri'],
      [{ cancel_uri: 'mailto:x@example.com' }, 'cancel_uri'],
      [{ cancel_uri: 42 }, 'cancel_uri'],
      [{ ttl_seconds: 0 }, 'ttl_seconds'],
      [{ ttl_seconds: 5 * 86400 + 1 }, 'ttl_seconds'],
      [{ permissions: [] }, 'permissions'],
      [{ permissions: ['ok', 7] }, 'permissions'],
      [{ institution_id: '' }, 'institution_id'],
    ]
    for (const [patch, field] of bad) {
      await expect(
        client.createAuthSession({ linked_account_id: user, ...URIS, ...patch }),
      ).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
    }
    await expect(client.createAuthSession()).rejects.toMatchObject({ code: 'VALIDATION_ERROR' })
    const ok = await client.createAuthSession({
      linked_account_id: user,
      redirect_uri: 'http://localhost:3000/cb?x=1',
      cancel_uri: 'HTTPS://APP.EXAMPLE/no',
    })
    expect(ok.status).toBe('pending')
  })

  test('authUrlBase gives auth_url; an invalid authUrlBase is refused at open', async () => {
    const c2 = await openClient({
      ...db,
      authUrlBase: 'https://link.example.com/consent',
    })
    try {
      const user = await newUser(c2)
      const s = await c2.createAuthSession({ linked_account_id: user, ...URIS })
      expect(s.auth_url).toBe(`https://link.example.com/consent?session_id=${s.session_id}`)
      expect((await c2.getAuthSession(s.session_id)).auth_url).toBe(s.auth_url)
    } finally {
      await c2.close()
    }
    await expect(
      openClient({ ...db, authUrlBase: 'link.example.com' }),
    ).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'authUrlBase' })
  })

  test('pending → completed: returns the consent; a second completion or a cancel is refused', async () => {
    const user = await newUser(client)
    const s = await client.createAuthSession({ linked_account_id: user, ...URIS })
    const consent = await client.completeAuthSession(s.session_id, GRANT)
    expect(consent).toMatchObject({
      active: true,
      end_user_id: user,
      institution_id: 'bank-au',
      institution_name: 'Bank of Examples',
      account_ids: ['acc-1', 'acc-2'],
      permissions: ['accounts', 'balances'],
      duration: GRANT.duration_seconds,
      termination_reason: null,
    })
    expect(consent.arrangement_id).toMatch(/^[0-9a-f-]{36}$/)
    for (const k of ['created_at', 'expires_at', 'last_consent']) {
      expect(consent[k]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    }
    expect((Date.parse(consent.expires_at) - Date.parse(consent.created_at)) / 1000).toBe(GRANT.duration_seconds)
    expect(consent.last_consent).toBe(consent.created_at)
    const done = await client.getAuthSession(s.session_id)
    expect(done).toMatchObject({ status: 'completed', consent_id: consent.arrangement_id })
    await expect(client.completeAuthSession(s.session_id, GRANT)).rejects.toMatchObject({
      code: 'AUTH_SESSION_ALREADY_USED',
      status: 409,
    })
    await expect(client.cancelAuthSession(s.session_id)).rejects.toMatchObject({
      code: 'AUTH_SESSION_ALREADY_USED',
      status: 409,
    })
    expect(await client.getConsent(consent.arrangement_id)).toEqual(consent)
  })

  test('pending → cancelled with each Fiskil error type; then single use', async () => {
    const user = await newUser(client)
    for (const error_type of ERROR_TYPES) {
      const s = await client.createAuthSession({ linked_account_id: user, ...URIS })
      const c = await client.cancelAuthSession(s.session_id, { error_type })
      expect(c).toMatchObject({ status: 'cancelled', error_type, consent_id: null })
      await expect(client.completeAuthSession(s.session_id, GRANT)).rejects.toMatchObject({
        code: 'AUTH_SESSION_ALREADY_USED',
      })
      await expect(client.cancelAuthSession(s.session_id, { error_type })).rejects.toMatchObject({
        code: 'AUTH_SESSION_ALREADY_USED',
      })
    }
    const s = await client.createAuthSession({ linked_account_id: user, ...URIS })
    await expect(client.cancelAuthSession(s.session_id, { error_type: 'NOPE' })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'error_type',
    })
    expect((await client.getAuthSession(s.session_id)).status).toBe('pending')
    expect(await client.cancelAuthSession(s.session_id)).toMatchObject({
      status: 'cancelled',
      error_type: 'AUTH_SESSION_CANCELLED',
    })
  })

  test('pending → expired with a short ttl_seconds: completion and cancel refused', async () => {
    const user = await newUser(client)
    const s = await client.createAuthSession({ linked_account_id: user, ...URIS, ttl_seconds: 1 })
    expect(s.status).toBe('pending')
    await sleepPast(s.expires_at * 1000)
    expect((await client.getAuthSession(s.session_id)).status).toBe('expired')
    await expect(client.completeAuthSession(s.session_id, GRANT)).rejects.toMatchObject({
      code: 'AUTH_SESSION_EXPIRED',
      status: 410,
    })
    await expect(client.cancelAuthSession(s.session_id)).rejects.toMatchObject({
      code: 'AUTH_SESSION_EXPIRED',
      status: 410,
    })
    expect((await client.getAuthSession(s.session_id)).status).toBe('expired')
  })

  test('concurrent completions of one session from two clients: exactly one succeeds', async () => {
    const other = await openClient(db)
    try {
      const user = await newUser(client)
      const s = await client.createAuthSession({ linked_account_id: user, ...URIS })
      const attempts = []
      for (let i = 0; i < 8; i++) {
        const c = i % 2 ? other : client
        attempts.push(c.completeAuthSession(s.session_id, { ...GRANT, account_ids: [`acc-${i}`] }))
        attempts.push(c.cancelAuthSession(s.session_id, { error_type: 'CONSENT_TIMEOUT' }))
      }
      const results = await Promise.allSettled(attempts)
      const ok = results.filter((r) => r.status === 'fulfilled')
      expect(ok).toHaveLength(1)
      for (const r of results.filter((r) => r.status === 'rejected')) {
        expect(r.reason).toMatchObject({ code: 'AUTH_SESSION_ALREADY_USED' })
      }
      const consents = await client.listConsents({ end_user_id: user })
      const session = await other.getAuthSession(s.session_id)
      if (session.status === 'completed') {
        expect(consents).toHaveLength(1)
        expect(session.consent_id).toBe(consents[0].arrangement_id)
      } else {
        expect(session.status).toBe('cancelled')
        expect(consents).toHaveLength(0)
      }
      const evs = await client.listEvents({ linked_account_id: user, types: ['auth_session.completed', 'auth_session.cancelled'] })
      expect(evs.events).toHaveLength(1)
    } finally {
      await other.close()
    }
  })

  test('completion validation: institution lock, permission subset, duration ≤ 365 days', async () => {
    const user = await newUser(client)
    const s = await client.createAuthSession({
      linked_account_id: user,
      ...URIS,
      institution_id: 'bank-au',
      permissions: ['accounts', 'balances', 'transactions'],
    })
    const bad = [
      [{ ...GRANT, institution_id: 'other-bank' }, 'institution_id'],
      [{ ...GRANT, permissions: ['accounts', 'payments'] }, 'permissions'],
      [{ ...GRANT, duration_seconds: 365 * 86400 + 1 }, 'duration_seconds'],
      [{ ...GRANT, duration_seconds: 0 }, 'duration_seconds'],
      [{ ...GRANT, duration_seconds: 1.5 }, 'duration_seconds'],
      [{ ...GRANT, account_ids: [] }, 'account_ids'],
      [{ ...GRANT, account_ids: undefined }, 'account_ids'],
      [{ ...GRANT, institution_name: 5 }, 'institution_name'],
    ]
    for (const [result, field] of bad) {
      await expect(client.completeAuthSession(s.session_id, result)).rejects.toMatchObject({
        code: 'VALIDATION_ERROR',
        status: 400,
        field,
      })
    }
    await expect(client.completeAuthSession(s.session_id)).rejects.toMatchObject({ code: 'VALIDATION_ERROR' })
    expect((await client.getAuthSession(s.session_id)).status).toBe('pending')
    // The session's institution and permissions are the defaults; 365 days is allowed.
    const c = await client.completeAuthSession(s.session_id, {
      account_ids: ['a'],
      duration_seconds: 365 * 86400,
    })
    expect(c).toMatchObject({ institution_id: 'bank-au', permissions: ['accounts', 'balances', 'transactions'] })
    // Without a session constraint, institution, permissions and duration are required.
    const s2 = await client.createAuthSession({ linked_account_id: user, ...URIS })
    for (const field of ['institution_id', 'permissions', 'duration_seconds']) {
      const result = { ...GRANT }
      delete result[field]
      await expect(client.completeAuthSession(s2.session_id, result)).rejects.toMatchObject({
        code: 'VALIDATION_ERROR',
        field,
      })
    }
  })
})

describe('consents', () => {
  let client
  let db
  beforeAll(async () => {
    db = storeOptions()
    client = await openClient(db)
  })
  afterAll(() => client.close())

  test('listConsents and getConsent filter by end user and active', async () => {
    const a = await newUser(client, 'list')
    const b = await newUser(client, 'list')
    const a1 = await consentFor(client, a)
    const a2 = await consentFor(client, a, { ...GRANT, institution_id: 'energy-co' })
    const b1 = await consentFor(client, b)
    await client.revokeConsent(a2.arrangement_id)
    const ids = (list) => list.map((c) => c.arrangement_id)
    expect(ids(await client.listConsents({ end_user_id: a }))).toEqual([a1.arrangement_id, a2.arrangement_id])
    expect(ids(await client.listConsents({ linked_account_id: a, active: true }))).toEqual([a1.arrangement_id])
    expect(ids(await client.listConsents({ end_user_id: a, active: false }))).toEqual([a2.arrangement_id])
    expect(ids(await client.listConsents({ end_user_id: b }))).toEqual([b1.arrangement_id])
    expect(ids(await client.listConsents())).toEqual(expect.arrayContaining([a1, a2, b1].map((c) => c.arrangement_id)))
    await expect(client.listConsents({ end_user_id: 'nobody' })).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.listConsents({ active: 'yes' })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'active',
    })
    await expect(client.getConsent('nope')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(client.getConsent(42)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'arrangement_id' })
  })

  test('revokeConsent: inactive, revoked, one event; revoking again is a no-op', async () => {
    const user = await newUser(client, 'revoke')
    const c = await consentFor(client, user)
    const from = await lastEventId(client)
    const r1 = await client.revokeConsent(c.arrangement_id)
    expect(r1).toMatchObject({ ...c, active: false, termination_reason: 'revoked' })
    const r2 = await client.revokeConsent(c.arrangement_id)
    expect(r2).toEqual(r1)
    expect(await client.getConsent(c.arrangement_id)).toEqual(r1)
    const evs = await eventsAfter(client, from)
    expect(evs.map((e) => e.type)).toEqual(['consent.revoked'])
    expect(evs[0]).toMatchObject({
      linked_account_id: user,
      data: {
        consent_id: c.arrangement_id,
        arrangement_id: c.arrangement_id,
        end_user_id: user,
        active: false,
        termination_reason: 'revoked',
        account_ids: c.account_ids,
      },
    })
    await expect(client.revokeConsent('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  test('renewal via arrangement_id updates the same consent', async () => {
    const user = await newUser(client, 'renew')
    const c = await consentFor(client, user, { ...GRANT, duration_seconds: 100 })
    const from = await lastEventId(client)
    await sleep(1100) // so last_consent visibly moves (times have 1 s resolution)
    const r = await client.createAuthSession({ end_user_id: user, ...URIS, arrangement_id: c.arrangement_id })
    expect(r).toMatchObject({ arrangement_id: c.arrangement_id, institution_id: 'bank-au' })
    const renewed = await client.completeAuthSession(r.session_id, {
      account_ids: ['acc-1'],
      duration_seconds: 3600,
    })
    expect(renewed).toMatchObject({
      arrangement_id: c.arrangement_id,
      active: true,
      created_at: c.created_at,
      institution_id: 'bank-au',
      institution_name: 'Bank of Examples',
      permissions: c.permissions,
      account_ids: ['acc-1'],
      duration: 3600,
    })
    expect(Date.parse(renewed.last_consent)).toBeGreaterThan(Date.parse(c.last_consent))
    expect(Date.parse(renewed.expires_at)).toBeGreaterThan(Date.parse(c.expires_at))
    expect((Date.parse(renewed.expires_at) - Date.parse(renewed.last_consent)) / 1000).toBe(3600)
    expect(await client.listConsents({ end_user_id: user })).toEqual([renewed])
    expect((await client.getAuthSession(r.session_id)).consent_id).toBe(c.arrangement_id)
    const evs = await eventsAfter(client, from)
    expect(evs.map((e) => e.type)).toEqual(['auth_session.created', 'auth_session.completed', 'consent.updated'])
    expect(evs[2].data).toMatchObject({ arrangement_id: c.arrangement_id, reason: 'renewed', active: true })
    expect(evs[1].data).toMatchObject({ consent_id: c.arrangement_id, renewal: true })
    // A renewal at another institution, of another user's consent, of an unknown or ended one.
    await expect(
      client.createAuthSession({ end_user_id: user, ...URIS, arrangement_id: c.arrangement_id, institution_id: 'x' }),
    ).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'institution_id' })
    const other = await newUser(client, 'renew')
    await expect(
      client.createAuthSession({ end_user_id: other, ...URIS, arrangement_id: c.arrangement_id }),
    ).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'arrangement_id' })
    await expect(
      client.createAuthSession({ end_user_id: user, ...URIS, arrangement_id: 'nope' }),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await client.revokeConsent(c.arrangement_id)
    await expect(
      client.createAuthSession({ end_user_id: user, ...URIS, arrangement_id: c.arrangement_id }),
    ).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'arrangement_id' })
  })

  test('a renewal whose consent ended meanwhile creates a new consent', async () => {
    const user = await newUser(client, 'renew2')
    const c = await consentFor(client, user)
    const r = await client.createAuthSession({ end_user_id: user, ...URIS, arrangement_id: c.arrangement_id })
    await client.revokeConsent(c.arrangement_id)
    const fresh = await client.completeAuthSession(r.session_id, { account_ids: ['acc-9'] })
    expect(fresh.arrangement_id).not.toBe(c.arrangement_id)
    expect(fresh).toMatchObject({ active: true, institution_id: c.institution_id, permissions: c.permissions })
    const [ev] = (await client.listEvents({ linked_account_id: user, types: ['consent.received'] })).events.slice(-1)
    expect(ev.data).toMatchObject({ arrangement_id: fresh.arrangement_id, renewal_of: c.arrangement_id })
  })

  test('expiry: a lapsed consent reads expired at once; its event is emitted exactly once with two clients sweeping', async () => {
    const other = await openClient(db)
    try {
      const user = await newUser(client, 'expiry')
      const c = await consentFor(client, user, { ...GRANT, duration_seconds: 1 })
      const keep = await consentFor(client, user, { ...GRANT, duration_seconds: 3600 })
      expect(c.active).toBe(true)
      await sleepPast(Date.parse(c.expires_at))
      // Reads already say expired, on both clients, before any sweep ran.
      const seen = await Promise.all([client.getConsent(c.arrangement_id), other.getConsent(c.arrangement_id)])
      for (const s of seen) expect(s).toMatchObject({ active: false, termination_reason: 'expired' })
      expect((await other.listConsents({ end_user_id: user, active: true })).map((x) => x.arrangement_id)).toEqual([
        keep.arrangement_id,
      ])
      // Both clients sweep at once, several times, while reads also notice.
      const sweeps = await Promise.all([
        client.expireConsents(),
        other.expireConsents(),
        client.listConsents({ end_user_id: user }),
        other.expireConsents(),
        client.expireConsents(),
      ])
      const recorded = sweeps
        .filter((r) => r && r.arrangement_ids)
        .flatMap((r) => r.arrangement_ids)
        .filter((id) => id === c.arrangement_id)
      expect(recorded.length).toBeLessThanOrEqual(1)
      // Flush any sweep a read queued, on both writers.
      await client.expireConsents()
      await other.expireConsents()
      const evs = await client.listEvents({ linked_account_id: user, types: ['consent.revoked'] })
      const mine = evs.events.filter((e) => e.data.arrangement_id === c.arrangement_id)
      expect(mine).toHaveLength(1)
      expect(mine[0].data).toMatchObject({ termination_reason: 'expired', active: false })
      expect(evs.events.filter((e) => e.data.arrangement_id === keep.arrangement_id)).toHaveLength(0)
      expect(await client.getConsent(c.arrangement_id)).toMatchObject({
        active: false,
        termination_reason: 'expired',
        expires_at: c.expires_at,
      })
      // Revoking an expired consent changes nothing.
      expect(await client.revokeConsent(c.arrangement_id)).toMatchObject({ termination_reason: 'expired' })
      expect(await client.expireConsents()).toEqual({ expired: 0, arrangement_ids: [] })
    } finally {
      await other.close()
    }
  })

  test('deleting a linked account revokes its active consents (account_deleted) in the same transaction', async () => {
    const user = await newUser(client, 'delete')
    const c1 = await consentFor(client, user)
    const c2 = await consentFor(client, user, { ...GRANT, institution_id: 'energy-co' })
    const c3 = await consentFor(client, user)
    await client.revokeConsent(c3.arrangement_id)
    const pending = await client.createAuthSession({ linked_account_id: user, ...URIS })
    const from = await lastEventId(client)
    await client.deleteLinkedAccount(user)
    for (const c of [c1, c2]) {
      expect(await client.getConsent(c.arrangement_id)).toMatchObject({
        active: false,
        termination_reason: 'account_deleted',
        end_user_id: user,
      })
    }
    expect(await client.getConsent(c3.arrangement_id)).toMatchObject({ termination_reason: 'revoked' })
    await expect(client.getAuthSession(pending.session_id)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.listConsents({ end_user_id: user })).rejects.toMatchObject({ code: 'NOT_FOUND' })
    const evs = await eventsAfter(client, from)
    expect(evs.map((e) => e.type)).toEqual(['consent.revoked', 'consent.revoked', 'linked_account.deleted'])
    expect(evs.slice(0, 2).map((e) => e.data.arrangement_id)).toEqual([c1.arrangement_id, c2.arrangement_id])
    for (const e of evs.slice(0, 2)) expect(e.data.termination_reason).toBe('account_deleted')
    // Re-creating the id starts clean.
    await client.upsertLinkedAccount({ linked_account_id: user })
    expect(await client.listConsents({ end_user_id: user })).toEqual([])
  })

  test('every call on a closed client rejects with CLIENT_CLOSED', async () => {
    const c = await openClient()
    const user = await newUser(c, 'closed')
    const s = await c.createAuthSession({ linked_account_id: user, ...URIS })
    await c.close()
    for (const p of [
      c.createAuthSession({ linked_account_id: user, ...URIS }),
      c.getAuthSession(s.session_id),
      c.completeAuthSession(s.session_id, GRANT),
      c.cancelAuthSession(s.session_id),
      c.listConsents(),
      c.getConsent('x'),
      c.revokeConsent('x'),
      c.expireConsents(),
    ]) {
      await expect(p).rejects.toMatchObject({ code: 'CLIENT_CLOSED', status: 400 })
    }
  })

  test('outbox: mutations that fail leave no event', async () => {
    const user = await newUser(client, 'outbox')
    const s = await client.createAuthSession({ linked_account_id: user, ...URIS, institution_id: 'bank-au' })
    const used = await client.createAuthSession({ linked_account_id: user, ...URIS })
    await client.completeAuthSession(used.session_id, GRANT)
    const from = await lastEventId(client)
    const failures = [
      client.createAuthSession({ linked_account_id: 'ghost', ...URIS }),
      client.createAuthSession({ linked_account_id: user, ...URIS, redirect_uri: 'nope' }),
      client.completeAuthSession(s.session_id, { ...GRANT, duration_seconds: 366 * 86400 }),
      // Fails inside the write job, after the session was read.
      client.completeAuthSession(s.session_id, { ...GRANT, institution_id: 'other' }),
      client.completeAuthSession(used.session_id, GRANT),
      client.cancelAuthSession(s.session_id, { error_type: 'BOGUS' }),
      client.cancelAuthSession(used.session_id),
      client.revokeConsent('unknown'),
    ]
    for (const r of await Promise.allSettled(failures)) expect(r.status).toBe('rejected')
    expect(await eventsAfter(client, from)).toEqual([])
    expect((await client.getAuthSession(s.session_id)).status).toBe('pending')
  })
})

describe('merging accounts (identity linking)', () => {
  test("linkAccounts moves the secondary's consents and pending sessions to the primary", async () => {
    const client = await openClient()
    const primary = await newUser(client, 'primary')
    const secondary = await newUser(client, 'secondary')
    const consent = await consentFor(client, secondary)
    const pending = await client.createAuthSession({ linked_account_id: secondary, ...URIS })
    const before = await lastEventId(client)
    await client.linkAccounts(primary, secondary)
    await expect(client.getLinkedAccountById(secondary)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    const moved = await client.getConsent(consent.arrangement_id)
    expect(moved).toMatchObject({ arrangement_id: consent.arrangement_id, active: true, end_user_id: primary })
    expect((await client.listConsents({ end_user_id: primary })).map((c) => c.arrangement_id)).toEqual([consent.arrangement_id])
    const events = await eventsAfter(client, before)
    expect(events.filter((e) => e.type === 'consent.updated')).toEqual([
      expect.objectContaining({ linked_account_id: primary, data: expect.objectContaining({ reason: 'account_merged', previous_end_user_id: secondary }) }),
    ])
    // The pending session completes onto the primary.
    const completed = await client.completeAuthSession(pending.session_id, GRANT)
    expect(completed.end_user_id).toBe(primary)
    await client.close()
  })
})

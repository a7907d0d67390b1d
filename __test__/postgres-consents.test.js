// Auth sessions and consents on the PostgreSQL store: the Fiskil flow end to end, and issue 11's
// guarantees with several clients on one schema (each its own connection pool, as separate
// processes would be): concurrent completions of one session → exactly one wins, the others
// AUTH_SESSION_ALREADY_USED; two clients sweeping expiries → each expiry recorded once.
const { openClient, newSchema } = require('./helpers')

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
  'AUTH_SESSION_INVALID',
  'CONSUMERDATA_PROCESSING_ERROR',
]

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Waits until the wall clock is past `unixMs` (plus a margin for rounding). */
async function sleepPast(unixMs) {
  while (Date.now() <= unixMs + 50) await sleep(Math.max(10, unixMs + 60 - Date.now()))
}

async function allEvents(client, options = {}) {
  const out = []
  let after = 0
  for (;;) {
    const page = await client.listEvents({ ...options, after, limit: 1000 })
    out.push(...page.events)
    if (page.events.length) after = page.events[page.events.length - 1].id
    if (page.next === null) return out
  }
}

describe('auth sessions and consents on PostgreSQL', () => {
  const schema = newSchema()
  let a
  let b
  let seq = 0
  async function newUser(prefix = 'user') {
    const id = `${prefix}-${++seq}`
    await a.upsertLinkedAccount({ linked_account_id: id, name: id })
    return id
  }

  beforeAll(async () => {
    a = await openClient({ store: 'postgres', schema })
    b = await openClient({ store: 'postgres', schema })
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
  })

  test('Fiskil flow: create session → complete → get/list consent → access → revoke (idempotent), across clients', async () => {
    const { end_user_id: user } = await a.createEndUser({ email: 'Flow@Example.com' })
    const s = await a.createAuthSession({ end_user_id: user, ...URIS, permissions: ['accounts', 'balances'] })
    expect(s).toMatchObject({ status: 'pending', end_user_id: user })
    expect((await b.getAuthSession(s.session_id)).status).toBe('pending')

    const consent = await b.completeAuthSession(s.session_id, GRANT)
    expect(consent).toMatchObject({
      active: true,
      end_user_id: user,
      end_user_email: 'Flow@Example.com',
      institution_id: 'bank-au',
      account_ids: ['acc-1', 'acc-2'],
      permissions: ['accounts', 'balances'],
      duration: GRANT.duration_seconds,
      termination_reason: null,
    })
    expect((Date.parse(consent.expires_at) - Date.parse(consent.last_consent)) / 1000).toBe(GRANT.duration_seconds)
    expect(await a.getAuthSession(s.session_id)).toMatchObject({ status: 'completed', consent_id: consent.arrangement_id })
    expect(await a.getConsent(consent.arrangement_id)).toEqual(consent)
    expect(await a.listConsents({ end_user_id: user })).toEqual([consent])
    expect(await a.listConsents({ end_user_id: user, active: false })).toEqual([])
    await expect(a.completeAuthSession(s.session_id, GRANT)).rejects.toMatchObject({ code: 'AUTH_SESSION_ALREADY_USED', status: 409 })

    const accessed = await b.recordConsentAccess(consent.arrangement_id)
    expect(accessed.last_accessed).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)

    // A renewal updates the same consent in place.
    const r = await a.createAuthSession({ end_user_id: user, ...URIS, arrangement_id: consent.arrangement_id })
    expect(r.institution_id).toBe('bank-au')
    const renewed = await a.completeAuthSession(r.session_id, { account_ids: ['acc-3'] })
    expect(renewed).toMatchObject({ arrangement_id: consent.arrangement_id, account_ids: ['acc-3'], active: true })

    const revoked = await a.revokeConsent(consent.arrangement_id)
    expect(revoked).toMatchObject({ active: false, termination_reason: 'revoked' })
    expect(await b.revokeConsent(consent.arrangement_id)).toEqual(revoked)
    await expect(a.recordConsentAccess(consent.arrangement_id)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'arrangement_id' })
    await expect(a.getConsent('no-such-consent')).rejects.toMatchObject({ code: 'NOT_FOUND' })

    const types = (await allEvents(a, { linked_account_id: user })).map((e) => e.type)
    expect(types.filter((t) => t.startsWith('consent.') || t.startsWith('auth_session.'))).toEqual([
      'auth_session.created',
      'auth_session.completed',
      'consent.received',
      'consent.accessed',
      'auth_session.created',
      'auth_session.completed',
      'consent.updated',
      'consent.revoked',
    ])
  })

  test('cancel with every Fiskil error type, then single use; an expired session is AUTH_SESSION_EXPIRED (410)', async () => {
    const user = await newUser()
    for (const error_type of ERROR_TYPES) {
      const s = await a.createAuthSession({ linked_account_id: user, ...URIS })
      expect(await b.cancelAuthSession(s.session_id, { error_type })).toMatchObject({ status: 'cancelled', error_type, consent_id: null })
      await expect(a.completeAuthSession(s.session_id, GRANT)).rejects.toMatchObject({ code: 'AUTH_SESSION_ALREADY_USED' })
      await expect(a.cancelAuthSession(s.session_id, { error_type })).rejects.toMatchObject({ code: 'AUTH_SESSION_ALREADY_USED' })
    }
    const bad = await a.createAuthSession({ linked_account_id: user, ...URIS })
    await expect(a.cancelAuthSession(bad.session_id, { error_type: 'NOPE' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'error_type' })
    expect((await a.getAuthSession(bad.session_id)).status).toBe('pending')

    const s = await a.createAuthSession({ linked_account_id: user, ...URIS, ttl_seconds: 1 })
    await sleepPast(s.expires_at * 1000)
    expect((await b.getAuthSession(s.session_id)).status).toBe('expired')
    await expect(a.completeAuthSession(s.session_id, GRANT)).rejects.toMatchObject({ code: 'AUTH_SESSION_EXPIRED', status: 410 })
    await expect(b.cancelAuthSession(s.session_id)).rejects.toMatchObject({ code: 'AUTH_SESSION_EXPIRED', status: 410 })
    await expect(a.createAuthSession({ linked_account_id: 'nobody', ...URIS })).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  test('concurrent completeAuthSession of one session from two clients: exactly one succeeds, the others AUTH_SESSION_ALREADY_USED', async () => {
    for (let round = 0; round < 3; round++) {
      const user = await newUser('race')
      const s = await a.createAuthSession({ linked_account_id: user, ...URIS })
      const attempts = []
      for (let i = 0; i < 16; i++) {
        const c = i % 2 ? b : a
        attempts.push(c.completeAuthSession(s.session_id, { ...GRANT, account_ids: [`acc-${i}`] }))
      }
      const results = await Promise.allSettled(attempts)
      const ok = results.filter((r) => r.status === 'fulfilled')
      expect(ok).toHaveLength(1)
      for (const r of results.filter((r) => r.status === 'rejected')) {
        // Never a raw STORAGE_ERROR (a serialization failure is retried inside).
        expect(r.reason).toMatchObject({ code: 'AUTH_SESSION_ALREADY_USED', status: 409 })
      }
      const consents = await b.listConsents({ end_user_id: user })
      expect(consents).toEqual([ok[0].value])
      expect(await a.getAuthSession(s.session_id)).toMatchObject({ status: 'completed', consent_id: ok[0].value.arrangement_id })
      const evs = await allEvents(a, { linked_account_id: user, types: ['auth_session.completed', 'consent.received'] })
      expect(evs.map((e) => e.type)).toEqual(['auth_session.completed', 'consent.received'])
    }
  })

  test('expireConsents() from two clients at once: each expiry recorded once, with one consent.revoked event', async () => {
    const user = await newUser('expiry')
    const lapsing = []
    for (let i = 0; i < 6; i++) {
      const s = await a.createAuthSession({ linked_account_id: user, ...URIS })
      lapsing.push(await a.completeAuthSession(s.session_id, { ...GRANT, duration_seconds: 1 }))
    }
    const s = await a.createAuthSession({ linked_account_id: user, ...URIS })
    const keep = await a.completeAuthSession(s.session_id, GRANT)
    await sleepPast(Math.max(...lapsing.map((c) => Date.parse(c.expires_at))))
    // Reads say expired at once, before any sweep.
    for (const c of lapsing) expect(await b.getConsent(c.arrangement_id)).toMatchObject({ active: false, termination_reason: 'expired' })
    expect((await b.listConsents({ end_user_id: user, active: true })).map((c) => c.arrangement_id)).toEqual([keep.arrangement_id])

    const sweeps = await Promise.all([a.expireConsents(), b.expireConsents(), a.expireConsents(), b.expireConsents()])
    const recorded = sweeps.flatMap((r) => r.arrangement_ids)
    // The reads above queued sweeps of their own; whatever ran first, no expiry is recorded twice.
    expect(new Set(recorded).size).toBe(recorded.length)
    for (const r of sweeps) expect(r.expired).toBe(r.arrangement_ids.length)
    await a.expireConsents()
    await b.expireConsents()

    const evs = await allEvents(a, { linked_account_id: user, types: ['consent.revoked'] })
    expect(evs.map((e) => e.data.arrangement_id).sort()).toEqual(lapsing.map((c) => c.arrangement_id).sort())
    for (const e of evs) expect(e.data).toMatchObject({ termination_reason: 'expired', active: false })
    expect(await a.expireConsents()).toEqual({ expired: 0, arrangement_ids: [] })
    expect(await a.getConsent(keep.arrangement_id)).toMatchObject({ active: true })
  })

  test('deleting the end user ends its active consents (account_deleted) and drops its pending sessions', async () => {
    const user = await newUser('delete')
    const s1 = await a.createAuthSession({ linked_account_id: user, ...URIS })
    const c1 = await a.completeAuthSession(s1.session_id, GRANT)
    const pending = await a.createAuthSession({ linked_account_id: user, ...URIS })
    await b.deleteLinkedAccount(user)
    expect(await a.getConsent(c1.arrangement_id)).toMatchObject({ active: false, termination_reason: 'account_deleted', end_user_id: user })
    await expect(a.getAuthSession(pending.session_id)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    const evs = await allEvents(a, { linked_account_id: user, types: ['consent.revoked', 'linked_account.deleted'] })
    expect(evs.map((e) => e.type)).toEqual(['consent.revoked', 'linked_account.deleted'])
    expect(evs[0].data).toMatchObject({ arrangement_id: c1.arrangement_id, termination_reason: 'account_deleted' })
  })
})

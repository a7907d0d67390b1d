// Fiskil compatibility (issue 12): end users on linked accounts, auth sessions for the Link SDK
// flow, and the consent fields of Fiskil's consent object. Payloads are the seeds' own
// (../shared/seeds/002_*: Fiskil's "Linking Accounts" page), verbatim.
const { openClient, storeOptions } = require('./helpers')

// Seed 002, step 1: POST /v1/end-users body.
const SEED_END_USER = {
  "email": "user@example.com",
  "name": "John Doe"
}
// Seed 002, step 2: POST /v1/auth/session body (the Link SDK flow: no redirect_uri / cancel_uri).
const SEED_AUTH_SESSION = {
  "end_user_id": "482c0e2b-5866-46b1-b795-220b7bba45b5"
}
const GRANT = { institution_id: 'bank-au', account_ids: ['acc-1'], permissions: ['accounts', 'balances'], duration_seconds: 7776000 }
// The ATO's example ABN, and an E.164 number.
const ABN = '51824753556'
const PHONE = '+61412345678'

async function eventsSince(client, after) {
  const out = []
  for (;;) {
    const page = await client.listEvents({ after, limit: 1000 })
    out.push(...page.events)
    if (page.events.length) after = page.events[page.events.length - 1].id
    if (page.next === null) return out
  }
}
const lastEvent = async (client) => {
  const all = await eventsSince(client, 0)
  return all.length ? all[all.length - 1].id : 0
}

describe('end users', () => {
  let client
  beforeAll(async () => {
    client = await openClient()
  })
  afterAll(() => client.close())

  test("the seed's createEndUser body → { end_user_id }: a linked account with Fiskil's fields", async () => {
    const created = await client.createEndUser(SEED_END_USER)
    expect(Object.keys(created)).toEqual(['end_user_id'])
    expect(created.end_user_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    const id = created.end_user_id
    expect(await client.getEndUser(id)).toEqual({ id, email: 'user@example.com', name: 'John Doe' })
    // It is a linked account: its id is the linked_account_id, and every read carries the fields.
    const account = await client.getLinkedAccountById(id)
    expect(account).toMatchObject({ account_id: id, name: 'John Doe', email: 'user@example.com', __v: 0 })
    expect(account).not.toHaveProperty('phone')
    expect(account).not.toHaveProperty('abn')
    const page = await client.getAllLinkedAccounts({ limit: 1000 })
    expect(page.docs.find((d) => d.account_id === id).email).toBe('user@example.com')
    // All fields are optional, as at Fiskil.
    const bare = await client.createEndUser()
    expect(await client.getEndUser(bare.end_user_id)).toEqual({ id: bare.end_user_id })
    expect((await client.createEndUser({})).end_user_id).not.toBe(bare.end_user_id)
  })

  test('phone (E.164) and abn (checksum) are stored and returned; the ABN without its spaces', async () => {
    const { end_user_id: id } = await client.createEndUser({ ...SEED_END_USER, phone: PHONE, abn: '51 824 753 556' })
    expect(await client.getEndUser(id)).toEqual({ id, email: 'user@example.com', name: 'John Doe', phone: PHONE, abn: ABN })
    expect(await client.getLinkedAccountById(id)).toMatchObject({ phone: PHONE, abn: ABN })
  })

  test.each([
    ['email without @', { email: 'user.example.com' }, 'email'],
    ['email not a string', { email: 42 }, 'email'],
    ['phone with spaces', { phone: '+61 412 345 678' }, 'phone'],
    ['phone without +', { phone: '0412345678' }, 'phone'],
    ['phone over 15 digits', { phone: '+1234567890123456' }, 'phone'],
    ['abn with a bad checksum', { abn: '51824753557' }, 'abn'],
    ['abn of 10 digits', { abn: '5182475355' }, 'abn'],
    ['abn as a number', { abn: 51824753556 }, 'abn'],
    ['name over 1,024 characters', { name: 'n'.repeat(1025) }, 'name'],
    ["an unknown field (Fiskil's session_id has no meaning here)", { session_id: 'x' }, 'session_id'],
  ])('%s → VALIDATION_ERROR naming the field, nothing written', async (_label, body, field) => {
    const before = await lastEvent(client)
    await expect(client.createEndUser(body)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
    const { end_user_id: id } = await client.createEndUser(SEED_END_USER)
    const mid = await lastEvent(client)
    await expect(client.updateEndUser(id, body)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
    expect(await client.getEndUser(id)).toEqual({ id, ...SEED_END_USER })
    expect(await lastEvent(client)).toBe(mid)
    expect(mid).toBeGreaterThan(before)
  })

  test('updateEndUser resolves with no value (Fiskil answers 204): sent set, null clears, others kept', async () => {
    const { end_user_id: id } = await client.createEndUser(SEED_END_USER)
    const before = await lastEvent(client)
    expect(await client.updateEndUser(id, { phone: PHONE, abn: ABN })).toBeUndefined()
    expect(await client.getEndUser(id)).toEqual({ id, ...SEED_END_USER, phone: PHONE, abn: ABN })
    expect(await client.updateEndUser(id, { email: 'New@Example.com', name: null })).toBeUndefined()
    expect(await client.getEndUser(id)).toEqual({ id, email: 'New@Example.com', phone: PHONE, abn: ABN })
    const account = await client.getLinkedAccountById(id)
    expect(account.__v).toBe(2)
    expect(account.name).toBeUndefined()
    // The events name the fields changed, never their values.
    const events = (await eventsSince(client, before)).filter((e) => e.linked_account_id === id)
    expect(events.map((e) => [e.type, e.data.changed])).toEqual([
      ['linked_account.updated', ['phone', 'abn']],
      ['linked_account.updated', ['email', 'name']],
    ])
    expect(JSON.stringify(events)).not.toMatch(/@|\+61|51824753556/)
    // Nothing to change: no new version, no event.
    await client.updateEndUser(id, { email: 'New@Example.com' })
    await client.updateEndUser(id, {})
    expect((await client.getLinkedAccountById(id)).__v).toBe(2)
  })

  test('getEndUsers({ email }) matches as identity linking does (trimmed, case-insensitive); emails are not unique', async () => {
    const email = `Dup.${Date.now()}@Example.com`
    const a = await client.createEndUser({ email, name: 'A' })
    const b = await client.createEndUser({ email: email.toLowerCase(), name: 'B' })
    const found = await client.getEndUsers({ email: `  ${email.toUpperCase()} ` })
    expect(found.map((u) => u.id)).toEqual([a.end_user_id, b.end_user_id])
    expect(found[0]).toEqual({ id: a.end_user_id, email, name: 'A' })
    expect(await client.getEndUsers({ email: 'nobody@example.com' })).toEqual([])
    // After an update the old address no longer finds it; the new one does at once.
    await client.updateEndUser(a.end_user_id, { email: 'moved@example.com' })
    expect((await client.getEndUsers({ email })).map((u) => u.id)).toEqual([b.end_user_id])
    expect((await client.getEndUsers({ email: 'MOVED@example.com' })).map((u) => u.id)).toContain(a.end_user_id)
    await expect(client.getEndUsers({})).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'email' })
    await expect(client.getEndUsers({ email: 'x' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'email' })
  })

  test("unknown end user → NOT_FOUND (Fiskil's end_user_not_found) for get, update and delete", async () => {
    for (const call of [
      () => client.getEndUser('nobody'),
      () => client.updateEndUser('nobody', { name: 'x' }),
      () => client.deleteEndUser('nobody'),
    ]) {
      const err = await call().catch((e) => e)
      expect(err).toMatchObject({ code: 'NOT_FOUND', status: 404 })
      expect(err.message).toContain('end_user_not_found')
    }
    await expect(client.getEndUser('')).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'end_user_id' })
  })

  test('deleteEndUser has the cascade of deleting the account: consents end, tokens die', async () => {
    const { end_user_id: id } = await client.createEndUser(SEED_END_USER)
    const session = await client.createAuthSession({ end_user_id: id })
    const consent = await client.completeAuthSession(session.session_id, GRANT)
    const { token } = await client.getTokenForLinkedAccount({ linked_account_id: id })
    expect(await client.deleteEndUser(id)).toBeUndefined()
    await expect(client.getEndUser(id)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.getLinkedAccountById(id)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    expect(await client.getConsent(consent.arrangement_id)).toMatchObject({ active: false, termination_reason: 'account_deleted' })
    await expect(client.verifySessionToken(token)).rejects.toMatchObject({ code: 'TOKEN_REVOKED' })
  })
})

describe('auth sessions for the Link SDK flow', () => {
  let client
  let db
  beforeAll(async () => {
    db = storeOptions()
    client = await openClient(db)
  })
  afterAll(() => client.close())

  test("the seed's createAuthSession body, without URIs, gives a session and an auth_url", async () => {
    // The seed names end user 482c0e2b-…: an end user is a linked account of that id.
    await client.upsertLinkedAccount({ linked_account_id: SEED_AUTH_SESSION.end_user_id })
    const s = await client.createAuthSession(SEED_AUTH_SESSION)
    expect(s).toMatchObject({
      status: 'pending',
      end_user_id: SEED_AUTH_SESSION.end_user_id,
      redirect_uri: null,
      cancel_uri: null,
      // Without authUrlBase or publicUrl: the linkvault server's consent page, relative to it.
      auth_url: `/link/session/${s.session_id}`,
    })
    expect(Number.isInteger(s.expires_at)).toBe(true)
    expect(await client.getAuthSession(s.session_id)).toEqual(s)
    // `link(authSession.session_id)` resolves with a consentID: the completion's consent.
    const consent = await client.completeAuthSession(s.session_id, GRANT)
    expect((await client.getAuthSession(s.session_id)).consent_id).toBe(consent.arrangement_id)
    // Step 1 then 2 of the seed, with the id createEndUser returned.
    const { end_user_id } = await client.createEndUser(SEED_END_USER)
    expect((await client.createAuthSession({ end_user_id })).end_user_id).toBe(end_user_id)
  })

  test('redirect_uri and cancel_uri stay required together', async () => {
    const { end_user_id } = await client.createEndUser()
    await expect(client.createAuthSession({ end_user_id, redirect_uri: 'https://app.example/ok' })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'cancel_uri',
    })
    await expect(client.createAuthSession({ end_user_id, cancel_uri: 'https://app.example/no' })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'redirect_uri',
    })
    const s = await client.createAuthSession({ end_user_id, redirect_uri: 'https://app.example/ok', cancel_uri: 'https://app.example/no' })
    expect(s).toMatchObject({ redirect_uri: 'https://app.example/ok', cancel_uri: 'https://app.example/no' })
  })

  test('auth_url: authUrlBase when set, else ${publicUrl}/link/session/<session_id>', async () => {
    const withPublic = await openClient({ ...db, publicUrl: 'https://lv.example.com/base/' })
    const withBoth = await openClient({
      ...db,
      publicUrl: 'https://lv.example.com',
      authUrlBase: 'https://app.example.com/consent?x=1',
    })
    try {
      const { end_user_id } = await withPublic.createEndUser()
      const s = await withPublic.createAuthSession({ end_user_id })
      expect(s.auth_url).toBe(`https://lv.example.com/base/link/session/${s.session_id}`)
      const t = await withBoth.createAuthSession({ end_user_id })
      expect(t.auth_url).toBe(`https://app.example.com/consent?x=1&session_id=${t.session_id}`)
      expect((await withBoth.getAuthSession(t.session_id)).auth_url).toBe(t.auth_url)
    } finally {
      await withPublic.close()
      await withBoth.close()
    }
    for (const [option, value] of [
      ['publicUrl', 'lv.example.com'],
      ['publicUrl', 'https://lv.example.com/?q=1'],
      ['appLogo', 'logo.png'],
      ['appName', ''],
      ['appName', 5],
    ]) {
      await expect(openClient({ ...db, [option]: value })).rejects.toMatchObject({
        code: 'VALIDATION_ERROR',
        field: option,
      })
    }
  })
})

describe("consents carry Fiskil's fields", () => {
  let client
  beforeAll(async () => {
    client = await openClient({ appName: 'Budget Buddy', appLogo: 'https://app.example.com/logo.png' })
  })
  afterAll(() => client.close())

  async function consentFor(grant = GRANT, body = SEED_END_USER) {
    const { end_user_id } = await client.createEndUser(body)
    const s = await client.createAuthSession({ end_user_id })
    return client.completeAuthSession(s.session_id, grant)
  }

  test('app_name, app_logo, end_user_email, institution_logo, institution_type, last_accessed', async () => {
    const consent = await consentFor({
      ...GRANT,
      institution_logo: 'https://bank.example.com/logo.svg',
      institution_type: 'energy',
    })
    expect(consent).toMatchObject({
      active: true,
      app_name: 'Budget Buddy',
      app_logo: 'https://app.example.com/logo.png',
      end_user_email: 'user@example.com',
      institution_logo: 'https://bank.example.com/logo.svg',
      institution_type: 'energy',
      last_accessed: null,
    })
    expect(Object.keys(consent).sort()).toEqual(
      [
        'account_ids', 'active', 'app_logo', 'app_name', 'arrangement_id', 'created_at', 'duration', 'end_user_email',
        'end_user_id', 'expires_at', 'institution_id', 'institution_logo', 'institution_name', 'institution_type',
        'last_accessed', 'last_consent', 'permissions', 'termination_reason',
      ].sort(),
    )
    expect(await client.getConsent(consent.arrangement_id)).toEqual(consent)
    const listed = await client.listConsents({ end_user_id: consent.end_user_id })
    expect(listed).toEqual([consent])
    // end_user_email follows the end user's email.
    await client.updateEndUser(consent.end_user_id, { email: 'renamed@example.com' })
    expect((await client.getConsent(consent.arrangement_id)).end_user_email).toBe('renamed@example.com')
  })

  test("institution_type defaults to 'banking'; a renewal keeps the consent's logo and type", async () => {
    const plain = await consentFor(GRANT, {})
    expect(plain).toMatchObject({ institution_type: 'banking', institution_logo: null, end_user_email: null })
    const energy = await consentFor({ ...GRANT, institution_type: 'energy', institution_logo: 'https://e.example/l.png' })
    const renewal = await client.createAuthSession({ end_user_id: energy.end_user_id, arrangement_id: energy.arrangement_id })
    const renewed = await client.completeAuthSession(renewal.session_id, { account_ids: ['acc-2'] })
    expect(renewed).toMatchObject({ arrangement_id: energy.arrangement_id, institution_type: 'energy', institution_logo: 'https://e.example/l.png' })
    const { end_user_id } = await client.createEndUser()
    const s = await client.createAuthSession({ end_user_id })
    await expect(client.completeAuthSession(s.session_id, { ...GRANT, institution_type: 'telco' })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'institution_type',
    })
    await expect(client.completeAuthSession(s.session_id, { ...GRANT, institution_logo: 'logo.png' })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'institution_logo',
    })
  })

  test('recordConsentAccess stamps last_accessed (with consent.accessed); an ended consent is refused', async () => {
    const consent = await consentFor()
    const before = await lastEvent(client)
    const t0 = Math.floor(Date.now() / 1000)
    const accessed = await client.recordConsentAccess(consent.arrangement_id)
    const stamped = Date.parse(accessed.last_accessed) / 1000
    expect(stamped).toBeGreaterThanOrEqual(t0 - 1)
    expect(stamped).toBeLessThanOrEqual(Math.floor(Date.now() / 1000))
    expect(accessed.last_accessed).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    expect(await client.getConsent(consent.arrangement_id)).toEqual(accessed)
    const events = await eventsSince(client, before)
    expect(events.map((e) => e.type)).toEqual(['consent.accessed'])
    expect(events[0].data).toMatchObject({ arrangement_id: consent.arrangement_id, last_accessed: accessed.last_accessed })
    await client.revokeConsent(consent.arrangement_id)
    const mid = await lastEvent(client)
    await expect(client.recordConsentAccess(consent.arrangement_id)).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'arrangement_id',
    })
    expect(await lastEvent(client)).toBe(mid)
    expect((await client.getConsent(consent.arrangement_id)).last_accessed).toBe(accessed.last_accessed)
    await expect(client.recordConsentAccess('nope')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
  })

  test('without appName / appLogo the app fields are null', async () => {
    const other = await openClient()
    try {
      const { end_user_id } = await other.createEndUser()
      const s = await other.createAuthSession({ end_user_id })
      expect(await other.completeAuthSession(s.session_id, GRANT)).toMatchObject({ app_name: null, app_logo: null })
    } finally {
      await other.close()
    }
  })
})

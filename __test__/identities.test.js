// Identity linking and account merging (issue 4).
const { openClient, storeOptions } = require('./helpers')

let client
let n = 0
/** A fresh account id per test, so tests share one file without colliding. */
const uid = (p = 'acc') => `${p}-${++n}-${Math.random().toString(36).slice(2, 8)}`
const provider = () => `prov-${++n}`

beforeAll(async () => {
  client = await openClient()
})
afterAll(async () => {
  await client.close()
})

async function account(extra = {}) {
  const id = uid()
  await client.upsertLinkedAccount({ linked_account_id: id, ...extra })
  return id
}

describe('model', () => {
  test('identities have Auth0 names and appear on every read of an account', async () => {
    const created = await client.createLinkedAccount({ linked_account_id: uid() })
    expect(created.identities).toEqual([])
    const id = created.account_id
    const p = provider()
    const identities = await client.linkIdentity(id, {
      provider: p,
      user_id: 123,
      connection: 'github',
      isSocial: true,
      email: 'Ann@Example.com',
      email_verified: true,
      profileData: { login: 'ann', followers: 3 },
    })
    expect(identities).toHaveLength(1)
    const [identity] = identities
    expect(Object.keys(identity).sort()).toEqual(
      ['connection', 'email', 'email_verified', 'isSocial', 'linkedAt', 'profileData', 'provider', 'user_id'].sort(),
    )
    expect(identity).toMatchObject({
      provider: p,
      user_id: '123',
      connection: 'github',
      isSocial: true,
      email: 'Ann@Example.com',
      email_verified: true,
      profileData: { login: 'ann', followers: 3 },
    })
    expect(new Date(identity.linkedAt).toISOString()).toBe(identity.linkedAt)

    expect((await client.getLinkedAccountById(id)).identities).toEqual(identities)
    const upserted = await client.upsertLinkedAccount({ linked_account_id: id, name: 'Ann' })
    expect(upserted.identities).toEqual(identities)
    const page = await client.getAllLinkedAccounts({ limit: 1000 })
    expect(page.docs.find((d) => d.account_id === id).identities).toEqual(identities)
    let cursor
    let found
    do {
      const list = await client.listLinkedAccounts({ limit: 100, ...(cursor ? { after: cursor } : {}) })
      found = found ?? list.docs.find((d) => d.account_id === id)
      cursor = list.next
    } while (cursor)
    expect(found.identities).toEqual(identities)
  })

  test('defaults: isSocial and email_verified false, connection the provider, optional fields absent', async () => {
    const id = await account()
    const p = provider()
    const [identity] = await client.linkIdentity(id, { provider: p, user_id: 'x' })
    expect(identity.isSocial).toBe(false)
    expect(identity.email_verified).toBe(false)
    // Every identity carries `connection`, as Auth0's do: the provider's name unless one was sent.
    expect(identity.connection).toBe(p)
    expect(identity).not.toHaveProperty('email')
    expect(identity).not.toHaveProperty('connection_id')
    expect(identity).not.toHaveProperty('profileData')
  })
})

describe('linkIdentity', () => {
  test('9 and "9" are the same identity; relinking updates profile fields', async () => {
    const id = await account()
    const p = provider()
    await client.linkIdentity(id, { provider: p, user_id: 9, email: 'a@x.io' })
    const before = await client.getLinkedAccountById(id)
    const again = await client.linkIdentity(id, {
      provider: p,
      user_id: '9',
      email_verified: true,
      profileData: { name: 'Ann' },
    })
    expect(again).toHaveLength(1)
    expect(again[0]).toMatchObject({ user_id: '9', email: 'a@x.io', email_verified: true, profileData: { name: 'Ann' } })
    // Unchanged repeat: same result, no new version.
    const after = await client.getLinkedAccountById(id)
    await client.linkIdentity(id, { provider: p, user_id: 9 })
    expect((await client.getLinkedAccountById(id)).__v).toBe(after.__v)
    expect(after.__v).toBe(before.__v + 1)
  })

  test('a new email without email_verified is not verified', async () => {
    const id = await account()
    const p = provider()
    await client.linkIdentity(id, { provider: p, user_id: 1, email: 'a@x.io', email_verified: true })
    const [i] = await client.linkIdentity(id, { provider: p, user_id: 1, email: 'b@x.io' })
    expect(i.email_verified).toBe(false)
  })

  test('an identity held by another account: IDENTITY_ALREADY_LINKED, nothing changes', async () => {
    const a = await account()
    const b = await account()
    const p = provider()
    await client.linkIdentity(a, { provider: p, user_id: 1 })
    const bBefore = await client.getLinkedAccountById(b)
    await expect(client.linkIdentity(b, { provider: p, user_id: '1', email: 'x@y.z' })).rejects.toMatchObject({
      code: 'IDENTITY_ALREADY_LINKED',
      status: 409,
    })
    expect(await client.getLinkedAccountById(b)).toEqual(bBefore)
    expect((await client.getLinkedAccountById(a)).identities[0]).not.toHaveProperty('email')
  })

  test('unknown account: NOT_FOUND', async () => {
    await expect(client.linkIdentity(uid('none'), { provider: 'github', user_id: 1 })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      status: 404,
    })
  })

  test.each([
    ['provider', { user_id: 1 }],
    ['provider', { provider: '', user_id: 1 }],
    ['provider', { provider: 'has|pipe', user_id: 1 }],
    ['provider', { provider: 'p'.repeat(65), user_id: 1 }],
    ['provider', { provider: 7, user_id: 1 }],
    ['user_id', { provider: 'github' }],
    ['user_id', { provider: 'github', user_id: '' }],
    ['user_id', { provider: 'github', user_id: 'u'.repeat(257) }],
    ['user_id', { provider: 'github', user_id: 1.5 }],
    ['user_id', { provider: 'github', user_id: {} }],
    ['email', { provider: 'github', user_id: 1, email: 'no-at-sign' }],
    ['email', { provider: 'github', user_id: 1, email: 'a@b@c' }],
    ['email', { provider: 'github', user_id: 1, email: `${'a'.repeat(320)}@x.io` }],
    ['email', { provider: 'github', user_id: 1, email: 42 }],
    ['profileData', { provider: 'github', user_id: 1, profileData: 'x' }],
    ['profileData', { provider: 'github', user_id: 1, profileData: [1] }],
    ['profileData', { provider: 'github', user_id: 1, profileData: { big: 'x'.repeat(64 * 1024) } }],
    ['isSocial', { provider: 'github', user_id: 1, isSocial: 'yes' }],
    ['email_verified', { provider: 'github', user_id: 1, email_verified: 1 }],
    ['connection', { provider: 'github', user_id: 1, connection: '' }],
    ['userId', { provider: 'github', user_id: 1, userId: 1 }],
    ['identity', 'github|1'],
  ])('VALIDATION_ERROR naming %s', async (field, input) => {
    const id = await account()
    await expect(client.linkIdentity(id, input)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
    expect((await client.getLinkedAccountById(id)).identities).toEqual([])
  })

  test('the boundaries are accepted', async () => {
    const id = await account()
    const ids = await client.linkIdentity(id, {
      provider: 'a.B_c-9'.padEnd(64, 'x'),
      user_id: 'u'.repeat(256),
      email: `${'a'.repeat(310)}@x.io`.slice(0, 320),
      profileData: { big: 'x'.repeat(64 * 1024 - 20) },
    })
    expect(ids).toHaveLength(1)
  })

  test('linked_account_id is validated', async () => {
    await expect(client.linkIdentity('', { provider: 'github', user_id: 1 })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'linked_account_id',
    })
  })
})

describe('linkAccounts', () => {
  test('metadata of the secondary survives link then unlink, by value', async () => {
    const a = await account({ name: 'Primary', udf: { plan: 'pro', only_a: 1 } })
    const b = uid('B')
    const secondaryUdf = { plan: 'free', only_b: { nested: [1, 'two', { three: true }] }, n: 0 }
    await client.upsertLinkedAccount({
      linked_account_id: b,
      name: 'Secondary',
      udf: secondaryUdf,
      your_app: { app_id: 'app-b', auth_credentials: { Authorization: 'Bearer secret-of-b' } },
    })
    const bBefore = await client.getLinkedAccountById(b)
    const [pa, pb] = [provider(), provider()]
    await client.linkIdentity(a, { provider: pa, user_id: 'a' })
    await client.linkIdentity(b, { provider: pb, user_id: 'b', email: 'b@x.io', profileData: { k: 1 } })

    const merged = await client.linkAccounts(a, b)
    expect(merged.account_id).toBe(a)
    expect(merged.name).toBe('Primary')
    // B's identity and B's own identity (unlinking that one would undo the whole merge).
    expect(merged.identities.map((i) => `${i.provider}|${i.user_id}`)).toEqual([`${pa}|a`, `${pb}|b`, `linkvault|${b}`])
    const udf = Object.fromEntries(merged.udf.map((u) => [u.key_name, u.key_value]))
    expect(udf).toEqual({ plan: 'pro', only_a: 1, only_b: secondaryUdf.only_b, n: 0 })
    await expect(client.getLinkedAccountById(b)).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(client.getLinkedAccountCredentials(b)).rejects.toMatchObject({ code: 'NOT_FOUND' })

    // Unlinking one of B's identities brings B back with it (B's own identity goes too: B's id
    // implies it).
    const remaining = await client.unlinkIdentity(a, pb, 'b')
    expect(remaining.map((i) => i.provider)).toEqual([pa])
    const restored = await client.getLinkedAccountById(b)
    expect(restored._id).toBe(bBefore._id)
    expect(restored.name).toBe('Secondary')
    expect(restored.udf.map((u) => [u.key_name, u.key_value])).toEqual(bBefore.udf.map((u) => [u.key_name, u.key_value]))
    expect(restored.udf.map((u) => u._id)).toEqual(bBefore.udf.map((u) => u._id))
    expect(restored.your_app).toEqual({ app_id: 'app-b' })
    expect(restored.identities).toHaveLength(1)
    expect(restored.identities[0]).toMatchObject({ provider: pb, user_id: 'b', email: 'b@x.io', profileData: { k: 1 } })
    expect(await client.getLinkedAccountCredentials(b)).toEqual({
      app_id: 'app-b',
      auth_credentials: { Authorization: 'Bearer secret-of-b' },
    })
    // The primary keeps the merged UDF keys (nothing is taken back from it).
    expect((await client.getLinkedAccountById(a)).udf.map((u) => u.key_name)).toContain('only_b')
  })

  test("udf: 'secondary_wins' takes the secondary's value for shared keys", async () => {
    const a = await account({ udf: { plan: 'pro', a: 1 } })
    const b = await account({ udf: { plan: 'free', b: 2 } })
    const merged = await client.linkAccounts(a, b, { udf: 'secondary_wins' })
    expect(Object.fromEntries(merged.udf.map((u) => [u.key_name, u.key_value]))).toEqual({ plan: 'free', a: 1, b: 2 })
  })

  test('the 200-key UDF limit: VALIDATION_ERROR (udf), nothing changes', async () => {
    const many = (p, k) => Object.fromEntries(Array.from({ length: k }, (_, i) => [`${p}${i}`, i]))
    const a = await account({ udf: many('a', 150) })
    const b = await account({ udf: many('b', 51) })
    await client.linkIdentity(b, { provider: provider(), user_id: 1 })
    await expect(client.linkAccounts(a, b)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'udf' })
    expect((await client.getLinkedAccountById(b)).identities).toHaveLength(1)
    expect((await client.getLinkedAccountById(a)).udf).toHaveLength(150)
  })

  test('a second merge of the same secondary, or unknown accounts: NOT_FOUND', async () => {
    const a = await account()
    const b = await account()
    await client.linkAccounts(a, b)
    await expect(client.linkAccounts(a, b)).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(client.linkAccounts(uid('none'), a)).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  test('linking an account to itself: VALIDATION_ERROR', async () => {
    const a = await account()
    await expect(client.linkAccounts(a, a)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400 })
    await client.getLinkedAccountById(a)
  })

  test.each([
    ['primary_id', [undefined, 'b']],
    ['secondary_id', ['a', undefined]],
    ['secondary_id', ['a', 5]],
    ['secondary_id', ['a', '']],
    ['link_with', ['a', {}]],
    ['link_with', ['a', { link_with: '' }]],
    ['link_with', ['a', { link_with: 42 }]],
    ['provider', ['a', { link_with: 'tok', provider: 'github' }]],
    ['udf', ['a', 'b', { udf: 'newest' }]],
    ['options', ['a', 'b', 'primary_wins']],
  ])('argument validation names %s', async (field, args) => {
    await expect(client.linkAccounts(...args)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field })
  })

})

describe('linkAccounts with link_with (a session token minted for the secondary)', () => {
  const jwt = require('jsonwebtoken')
  const SECRET = 'identity-tests-signing-secret-32-bytes!!'
  const now = () => Math.floor(Date.now() / 1000)
  let c
  let db
  beforeAll(async () => {
    db = storeOptions()
    c = await openClient({ ...db, signingSecret: SECRET })
  })
  afterAll(() => c.close())

  async function pair() {
    const a = uid('primary')
    const b = uid('secondary')
    await c.upsertLinkedAccount({ linked_account_id: a })
    await c.upsertLinkedAccount({ linked_account_id: b, name: 'B', udf: { from: 'b' } })
    await c.linkIdentity(b, { provider: 'github', user_id: uid('gh') })
    return { a, b }
  }
  /** A token for `b` signed with the client's secret and key id, with chosen times. */
  async function signed(b, iat, exp) {
    const { token } = await c.getTokenForLinkedAccount({ linked_account_id: b, force_refresh: true })
    const { header, payload } = jwt.decode(token, { complete: true })
    return jwt.sign({ ...payload, jti: `${payload.jti}-x`, iat, exp }, SECRET, { algorithm: 'HS256', keyid: header.kid })
  }

  test('a token minted for the secondary merges it, and is consumed', async () => {
    const { a, b } = await pair()
    const { token } = await c.getTokenForLinkedAccount({ linked_account_id: b })
    const merged = await c.linkAccounts(a, { link_with: token })
    expect(merged.account_id).toBe(a)
    expect(merged.identities.map((i) => i.provider)).toEqual(['github', 'linkvault'])
    expect(merged.udf.map((u) => [u.key_name, u.key_value])).toEqual([['from', 'b']])
    await expect(c.getLinkedAccountById(b)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    // Re-create the secondary id: the used token still cannot link again.
    await c.upsertLinkedAccount({ linked_account_id: b })
    await expect(c.linkAccounts(a, { link_with: token })).rejects.toMatchObject({ code: 'TOKEN_REVOKED', status: 401 })
    await c.getLinkedAccountById(b)
  })

  test('expired → TOKEN_EXPIRED; older than 10 minutes → INVALID_TOKEN; nothing changes', async () => {
    const { a, b } = await pair()
    const expired = await signed(b, now() - 3600, now() - 600)
    await expect(c.linkAccounts(a, { link_with: expired })).rejects.toMatchObject({ code: 'TOKEN_EXPIRED', status: 401 })
    const old = await signed(b, now() - 11 * 60, now() + 3600)
    expect(c.verifySessionTokenSync(old).linked_account_id).toBe(b)
    await expect(c.linkAccounts(a, { link_with: old })).rejects.toMatchObject({ code: 'INVALID_TOKEN', status: 401 })
    const fresh = await signed(b, now() - 9 * 60, now() + 3600)
    expect((await c.linkAccounts(a, { link_with: fresh })).account_id).toBe(a)
  })

  test('a token of another org, a forged one, and one for the primary itself are refused', async () => {
    const { a, b } = await pair()
    const other = await openClient({ ...db, orgId: 'org_other', signingSecret: SECRET })
    await other.upsertLinkedAccount({ linked_account_id: b })
    const foreign = (await other.getTokenForLinkedAccount({ linked_account_id: b })).token
    await expect(c.linkAccounts(a, { link_with: foreign })).rejects.toMatchObject({ code: 'INVALID_TOKEN' })
    await other.close()
    await expect(c.linkAccounts(a, { link_with: 'not.a.token' })).rejects.toMatchObject({ code: 'INVALID_TOKEN' })
    const own = (await c.getTokenForLinkedAccount({ linked_account_id: a })).token
    await expect(c.linkAccounts(a, { link_with: own })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'link_with' })
    // The failed attempts consumed nothing: the secondary's token still links.
    const { token } = await c.getTokenForLinkedAccount({ linked_account_id: b })
    expect((await c.linkAccounts(a, { link_with: token })).account_id).toBe(a)
  })

  test("the merged secondary's session tokens stop verifying", async () => {
    const { a, b } = await pair()
    const { token, refresh_token } = await c.getTokenForLinkedAccount({ linked_account_id: b })
    expect(c.verifySessionTokenSync(token).linked_account_id).toBe(b)
    await c.linkAccounts(a, b)
    expect(() => c.verifySessionTokenSync(token)).toThrow(expect.objectContaining({ code: 'TOKEN_REVOKED' }))
    await expect(c.verifySessionToken(token)).rejects.toMatchObject({ code: 'TOKEN_REVOKED' })
    await expect(c.refreshSessionToken(refresh_token)).rejects.toMatchObject({ status: 401 })
  })
})

describe('unlinkIdentity', () => {
  test('a directly linked identity leaves as `${provider}|${user_id}`', async () => {
    const a = await account()
    const p = provider()
    await client.linkIdentity(a, { provider: p, user_id: 7, email: 'x@y.io' })
    await client.linkIdentity(a, { provider: p, user_id: 8 })
    const rest = await client.unlinkIdentity(a, p, 7)
    expect(rest.map((i) => i.user_id)).toEqual(['8'])
    const standalone = await client.getLinkedAccountById(`${p}|7`)
    expect(standalone.identities).toHaveLength(1)
    expect(standalone.identities[0]).toMatchObject({ provider: p, user_id: '7', email: 'x@y.io' })
    expect(standalone.udf).toEqual([])
  })

  test('restored id taken → falls back; both taken → ALREADY_EXISTS, nothing changes', async () => {
    const a = await account()
    const b = uid('B')
    await client.upsertLinkedAccount({ linked_account_id: b, name: 'Bee', udf: { k: 'v' } })
    const p = provider()
    await client.linkIdentity(b, { provider: p, user_id: 1 })
    await client.linkIdentity(b, { provider: p, user_id: 2 })
    await client.linkAccounts(a, b)
    await client.upsertLinkedAccount({ linked_account_id: b, name: 'someone else' })
    await client.upsertLinkedAccount({ linked_account_id: `${p}|2` })
    const before = await client.getLinkedAccountById(a)
    await expect(client.unlinkIdentity(a, p, 2)).rejects.toMatchObject({ code: 'ALREADY_EXISTS', status: 409 })
    expect(await client.getLinkedAccountById(a)).toEqual(before)
    await client.unlinkIdentity(a, p, 1)
    const fallback = await client.getLinkedAccountById(`${p}|1`)
    expect(fallback.name).toBe('Bee')
    expect(fallback.udf.map((u) => [u.key_name, u.key_value])).toEqual([['k', 'v']])
    expect((await client.getLinkedAccountById(b)).name).toBe('someone else')
  })

  test('unknown identity, or one on another account: NOT_FOUND', async () => {
    const a = await account()
    const b = await account()
    const p = provider()
    await client.linkIdentity(b, { provider: p, user_id: 1 })
    await expect(client.unlinkIdentity(a, p, 1)).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(client.unlinkIdentity(a, p, 2)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.unlinkIdentity(uid('none'), p, 1)).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  test.each([
    ['provider', ['a', 'bad provider', 1]],
    ['user_id', ['a', 'github', '']],
    ['user_id', ['a', 'github', undefined]],
    ['linked_account_id', [undefined, 'github', 1]],
  ])('argument validation names %s', async (field, args) => {
    await expect(client.unlinkIdentity(...args)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field })
  })
})

describe('email look-up and suggestions', () => {
  test('case-insensitive, trimmed, Unicode-aware, consistent right after writes', async () => {
    const domain = `${provider()}.example`
    const a = await account()
    const b = await account()
    await client.linkIdentity(a, { provider: provider(), user_id: 1, email: `ann@${domain}` })
    expect((await client.getLinkedAccountsByEmail(`Ann@${domain.toUpperCase()}`)).map((x) => x.account_id)).toEqual([a])
    await client.linkIdentity(b, { provider: provider(), user_id: 1, email: `  ANN@${domain} ` })
    const both = await client.getLinkedAccountsByEmail(` ann@${domain}`)
    expect(both.map((x) => x.account_id)).toEqual([a, b])
    expect(both[0].identities[0].email).toBe(`ann@${domain}`)
    await client.linkIdentity(a, { provider: provider(), user_id: 2, email: `ÉLODIE@${domain}` })
    expect((await client.getLinkedAccountsByEmail(`élodie@${domain}`)).map((x) => x.account_id)).toEqual([a])
    expect(await client.getLinkedAccountsByEmail(`nobody@${domain}`)).toEqual([])
    await expect(client.getLinkedAccountsByEmail('not-an-email')).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'email',
    })
    await expect(client.getLinkedAccountsByEmail()).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'email' })
  })

  test('suggestions need the email verified on both sides and never link anything', async () => {
    const domain = `${provider()}.example`
    const [a, b, c, d] = [await account(), await account(), await account(), await account()]
    await client.linkIdentity(a, { provider: provider(), user_id: 1, email: `Ann@${domain}`, email_verified: true })
    await client.linkIdentity(b, { provider: provider(), user_id: 1, email: `ann@${domain}`, email_verified: true })
    await client.linkIdentity(c, { provider: provider(), user_id: 1, email: `ann@${domain}` }) // unverified
    await client.linkIdentity(d, { provider: provider(), user_id: 1, email: `other@${domain}`, email_verified: true })
    expect(await client.getLinkSuggestions(a)).toEqual([
      { linked_account_id: b, reason: 'verified_email', email: `ann@${domain}` },
    ])
    expect(await client.getLinkSuggestions(c)).toEqual([])
    expect(await client.getLinkSuggestions(d)).toEqual([])
    // Nothing was linked automatically.
    for (const id of [a, b, c]) expect((await client.getLinkedAccountById(id)).identities).toHaveLength(1)
    await expect(client.getLinkSuggestions(uid('none'))).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.getLinkSuggestions(3)).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'linked_account_id',
    })
  })
})

test('deleting a primary deletes its identities', async () => {
  const a = await account()
  const b = await account()
  const p = provider()
  const email = `del@${p}.example`
  await client.linkIdentity(a, { provider: p, user_id: 1, email })
  await client.linkIdentity(b, { provider: p, user_id: 2 })
  await client.linkAccounts(a, b)
  await client.deleteLinkedAccount(a)
  expect(await client.getLinkedAccountsByEmail(email)).toEqual([])
  const c = await account()
  // Both identities are free again.
  expect(await client.linkIdentity(c, { provider: p, user_id: 1 })).toHaveLength(1)
  expect(await client.linkIdentity(c, { provider: p, user_id: 2 })).toHaveLength(2)
})

describe('races on one database (two clients)', () => {
  let db
  let c1
  let c2
  beforeAll(async () => {
    db = storeOptions()
    c1 = await openClient(db)
    c2 = await openClient(db)
  })
  afterAll(async () => {
    await c1.close()
    await c2.close()
  })

  async function allIdentities(c) {
    const out = []
    let after
    do {
      const page = await c.listLinkedAccounts({ limit: 1000, ...(after ? { after } : {}) })
      for (const d of page.docs) for (const i of d.identities) out.push({ key: `${i.provider}|${i.user_id}`, on: d.account_id })
      after = page.next
    } while (after)
    return out
  }

  test('100 concurrent linkIdentity of one identity onto 100 accounts: exactly one wins', async () => {
    const ids = Array.from({ length: 100 }, (_, i) => `race1-${i}`)
    await Promise.all(ids.map((id, i) => (i % 2 ? c1 : c2).upsertLinkedAccount({ linked_account_id: id })))
    const results = await Promise.allSettled(
      ids.map((id, i) => (i % 2 ? c1 : c2).linkIdentity(id, { provider: 'github', user_id: i % 3 ? 4242 : '4242' })),
    )
    const ok = results.filter((r) => r.status === 'fulfilled')
    const failed = results.filter((r) => r.status === 'rejected')
    expect(ok).toHaveLength(1)
    expect(failed).toHaveLength(99)
    for (const f of failed) expect(f.reason).toMatchObject({ code: 'IDENTITY_ALREADY_LINKED', status: 409 })
    const holders = (await allIdentities(c1)).filter((x) => x.key === 'github|4242')
    expect(holders).toHaveLength(1)
  })

  test('50 concurrent linkAccounts(Ai, B): exactly one merges B; no identity lost or doubled', async () => {
    const primaries = Array.from({ length: 50 }, (_, i) => `race2-A${i}`)
    await Promise.all(
      primaries.map((id, i) =>
        c1
          .upsertLinkedAccount({ linked_account_id: id })
          .then(() => c1.linkIdentity(id, { provider: 'auth0', user_id: `a${i}` })),
      ),
    )
    await c2.upsertLinkedAccount({ linked_account_id: 'race2-B', udf: { from_b: true } })
    for (let k = 0; k < 3; k++) await c2.linkIdentity('race2-B', { provider: 'google-oauth2', user_id: `b${k}` })
    // The merge also puts B's own identity on the winner.
    const expected = [...primaries.map((_, i) => `auth0|a${i}`), 'google-oauth2|b0', 'google-oauth2|b1', 'google-oauth2|b2', 'linkvault|race2-B']

    const results = await Promise.allSettled(primaries.map((id, i) => (i % 2 ? c1 : c2).linkAccounts(id, 'race2-B')))
    const ok = results.filter((r) => r.status === 'fulfilled')
    const failed = results.filter((r) => r.status === 'rejected')
    expect(ok).toHaveLength(1)
    expect(failed).toHaveLength(49)
    for (const f of failed) expect(f.reason).toMatchObject({ code: 'NOT_FOUND', status: 404 })
    const winner = ok[0].value
    expect(winner.identities).toHaveLength(5)
    expect(winner.udf.map((u) => u.key_name)).toContain('from_b')
    await expect(c1.getLinkedAccountById('race2-B')).rejects.toMatchObject({ code: 'NOT_FOUND' })

    const all = (await allIdentities(c2)).filter((x) => x.on.startsWith('race2-'))
    const keys = all.map((x) => x.key).sort()
    expect(keys).toEqual([...expected].sort()) // each exactly once, none lost
    for (const k of ['google-oauth2|b0', 'google-oauth2|b1', 'google-oauth2|b2']) {
      expect(all.find((x) => x.key === k).on).toBe(winner.account_id)
    }
  })

  test('concurrent link, merge and unlink across both clients keep every identity on one account', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `race3-${i}`)
    await Promise.all(ids.map((id) => c1.upsertLinkedAccount({ linked_account_id: id })))
    await Promise.all(ids.map((id, i) => c2.linkIdentity(id, { provider: 'race3', user_id: i })))
    const ops = []
    for (let i = 0; i < 20; i++) {
      const c = i % 2 ? c1 : c2
      ops.push(c.linkAccounts(ids[i], ids[(i + 1) % 20]))
      ops.push(c.linkIdentity(ids[(i + 5) % 20], { provider: 'race3', user_id: (i + 7) % 20 }))
      ops.push(c.unlinkIdentity(ids[i], 'race3', i))
    }
    const results = await Promise.allSettled(ops)
    for (const r of results) {
      if (r.status === 'rejected') {
        expect(['NOT_FOUND', 'IDENTITY_ALREADY_LINKED', 'ALREADY_EXISTS']).toContain(r.reason.code)
      }
    }
    const keys = (await allIdentities(c1)).filter((x) => x.key.startsWith('race3|')).map((x) => x.key).sort()
    expect(keys).toEqual(ids.map((_, i) => `race3|${i}`).sort())
  })
})

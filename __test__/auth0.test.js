// Auth0 compatibility (issue 12): the Auth0 user object (getUser, getUsersByEmail), linking an
// existing user by its own identity (a merge that unlink undoes), connection_id and numeric
// user_ids. Payloads and calls are the seeds' own (../shared/seeds/003_*, 004_*: Auth0's account
// linking guides), verbatim where they are code.
const { openClient } = require('./helpers')

let client
let n = 0
const uid = (p) => `${p}${++n}${Math.random().toString(36).slice(2, 7)}`

beforeAll(async () => {
  client = await openClient()
})
afterAll(() => client.close())

/**
 * Seed 003's server-side helper, with the Management API call replaced by linkvault's:
 * `POST /api/v2/users/{rootUserId}/identities { provider, user_id }`.
 */
const Auth0Client = {
  linkAccounts(rootUserId, targetUserId) {
    const provider = targetUserId.split('|')[0]
    const user_id = targetUserId.split('|')[1]
    return client.linkIdentity(rootUserId, {
      provider,
      user_id,
    })
  },
  // `DELETE /api/v2/users/{rootUserId}/identities/{provider}/{user_id}`.
  unlinkAccounts(rootUserId, targetUserId) {
    const provider = targetUserId.split('|')[0]
    const user_id = targetUserId.split('|')[1]
    return client.unlinkIdentity(rootUserId, provider, user_id)
  },
}

describe('getUser: the Auth0 user object', () => {
  test('user_id, email, email_verified, name, dates, identities (own first), app_metadata, user_metadata', async () => {
    const id = uid('user_')
    const created = await client.upsertLinkedAccount({ linked_account_id: id, name: 'Ann', udf: { plan: 'pro', seats: 3 } })
    await client.linkIdentity(id, {
      provider: 'google-oauth2',
      user_id: uid('g'),
      email: 'Ann@Example.com',
      email_verified: true,
      isSocial: true,
      profileData: { given_name: 'Ann' },
    })
    const user = await client.getUser(id)
    expect(Object.keys(user).sort()).toEqual(
      ['app_metadata', 'created_at', 'email', 'email_verified', 'identities', 'name', 'updated_at', 'user_id', 'user_metadata'].sort(),
    )
    expect(user).toMatchObject({
      user_id: id,
      email: 'Ann@Example.com',
      email_verified: true,
      name: 'Ann',
      created_at: created.createdAt,
      app_metadata: { plan: 'pro', seats: 3 },
      user_metadata: {},
    })
    expect(new Date(user.updated_at).toISOString()).toBe(user.updated_at)
    // identities[0] is the account's own identity, as Auth0 always lists it.
    expect(user.identities[0]).toMatchObject({ provider: 'linkvault', connection: 'linkvault', user_id: id, isSocial: false })
    expect(user.identities[1]).toMatchObject({ provider: 'google-oauth2', connection: 'google-oauth2', isSocial: true, profileData: { given_name: 'Ann' } })
    expect(user.identities.slice(1)).toEqual((await client.getLinkedAccountById(id)).identities)
    for (const identity of user.identities) expect(typeof identity.connection).toBe('string')
  })

  test('an id of the form provider|user_id has that provider and user_id as its own identity', async () => {
    const id = `auth0|${uid('abc')}`
    await client.upsertLinkedAccount({ linked_account_id: id })
    const user = await client.getUser(id)
    expect(user).toMatchObject({ user_id: id, email: null, email_verified: false, name: null, app_metadata: {} })
    expect(user.identities).toEqual([
      expect.objectContaining({ provider: 'auth0', connection: 'auth0', user_id: id.slice('auth0|'.length), isSocial: false }),
    ])
  })

  test('the end-user email is the user email; verified only when an identity verified it', async () => {
    const { end_user_id } = await client.createEndUser({ email: 'eu@example.com', name: 'Eu' })
    expect(await client.getUser(end_user_id)).toMatchObject({ email: 'eu@example.com', email_verified: false, name: 'Eu' })
    await client.linkIdentity(end_user_id, { provider: 'auth0', user_id: uid('eu'), email: 'EU@example.com', email_verified: true })
    expect(await client.getUser(end_user_id)).toMatchObject({ email: 'eu@example.com', email_verified: true })
  })

  test('unknown id → NOT_FOUND; a bad id → VALIDATION_ERROR', async () => {
    await expect(client.getUser('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(client.getUser('')).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'id' })
  })
})

describe('getUsersByEmail', () => {
  test('the same shape; trimmed, case-insensitive (unlike Auth0); identity and end-user emails', async () => {
    const email = `${uid('Mixed.Case')}@Example.com`
    const a = uid('a_')
    await client.upsertLinkedAccount({ linked_account_id: a })
    await client.linkIdentity(a, { provider: 'github', user_id: uid('gh'), email, email_verified: true })
    const { end_user_id: b } = await client.createEndUser({ email: email.toLowerCase() })
    const users = await client.getUsersByEmail(` ${email.toUpperCase()}`)
    expect(users.map((u) => u.user_id)).toEqual([a, b])
    expect(users[0]).toEqual(await client.getUser(a))
    expect(users[0].identities[0]).toMatchObject({ provider: 'linkvault', user_id: a })
    expect(await client.getUsersByEmail('nobody@example.com')).toEqual([])
    await expect(client.getUsersByEmail('no-at')).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'email' })
    // getLinkedAccountsByEmail sees end-user emails too.
    expect((await client.getLinkedAccountsByEmail(email)).map((x) => x.account_id)).toEqual([a, b])
  })
})

describe('linking an existing user (seed 003) merges it; unlinking restores it', () => {
  test("Auth0Client.linkAccounts(root, 'provider|id') from the seed: the target disappears, its identities join the root", async () => {
    const root = `auth0|${uid('root')}`
    const target = `google-oauth2|${uid('')}`
    await client.upsertLinkedAccount({ linked_account_id: root, name: 'Root', udf: { plan: 'pro' } })
    await client.upsertLinkedAccount({
      linked_account_id: target,
      name: 'Target',
      udf: { plan: 'free', only_target: { x: [1] } },
      your_app: { app_id: 'app_t', auth_credentials: { Authorization: 'Bearer target-secret' } },
    })
    const gh = uid('')
    await client.linkIdentity(target, { provider: 'github', user_id: gh, email: 't@example.com' })
    const before = await client.getLinkedAccountById(target)
    const { token } = await client.getTokenForLinkedAccount({ linked_account_id: target })

    // The seed's code, verbatim apart from the call it makes.
    const identities = await Auth0Client.linkAccounts(root, target)
    expect(identities.map((i) => `${i.provider}|${i.user_id}`).sort()).toEqual([target, `github|${gh}`].sort())
    for (const identity of identities) expect(typeof identity.connection).toBe('string')
    await expect(client.getLinkedAccountById(target)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.getUser(target)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(client.verifySessionToken(token)).rejects.toMatchObject({ code: 'TOKEN_REVOKED' })
    const rootUser = await client.getUser(root)
    expect(rootUser.identities.map((i) => `${i.provider}|${i.user_id}`)).toEqual([root, ...identities.map((i) => `${i.provider}|${i.user_id}`)])
    // Unlike Auth0, the secondary's metadata is not lost: the primary's values win, the rest join.
    expect(rootUser.app_metadata).toEqual({ plan: 'pro', only_target: { x: [1] } })

    // Unlinking it (the seed's unlinkAccounts) brings the target back exactly as it was.
    const remaining = await Auth0Client.unlinkAccounts(root, target)
    expect(remaining).toEqual([])
    const after = await client.getLinkedAccountById(target)
    expect({ ...after, __v: undefined, updatedAt: undefined }).toEqual({ ...before, __v: undefined, updatedAt: undefined })
    expect(after.__v).toBe(before.__v + 1)
    expect(await client.getLinkedAccountCredentials(target)).toEqual({ app_id: 'app_t', auth_credentials: { Authorization: 'Bearer target-secret' } })
  })

  test('a merged account with no linked identities is restorable through its own identity', async () => {
    const root = uid('root_')
    const plain = uid('plain_')
    await client.upsertLinkedAccount({ linked_account_id: root })
    await client.upsertLinkedAccount({ linked_account_id: plain, name: 'Plain', udf: { k: 1 } })
    const before = await client.getLinkedAccountById(plain)
    expect(before.identities).toEqual([])
    // Through linkAccounts …
    const merged = await client.linkAccounts(root, plain)
    expect(merged.identities.map((i) => [i.provider, i.user_id, i.connection])).toEqual([['linkvault', plain, 'linkvault']])
    await client.unlinkIdentity(root, 'linkvault', plain)
    const back = await client.getLinkedAccountById(plain)
    expect({ ...back, __v: 0, updatedAt: 0 }).toEqual({ ...before, __v: 0, updatedAt: 0 })
    // … and through linkIdentity of its own identity.
    const ids = await client.linkIdentity(root, { provider: 'linkvault', user_id: plain })
    expect(ids.map((i) => i.user_id)).toEqual([plain])
    await expect(client.getLinkedAccountById(plain)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await client.unlinkIdentity(root, 'linkvault', plain)
    expect((await client.getLinkedAccountById(plain)).name).toBe('Plain')
    expect((await client.getLinkedAccountById(root)).identities).toEqual([])
  })

  test('a merge that could not be undone is refused; an undo whose id is taken is refused', async () => {
    // C holds github/<n> before the account github|<n> exists.
    const c = uid('c_')
    const gh = uid('')
    await client.upsertLinkedAccount({ linked_account_id: c })
    await client.linkIdentity(c, { provider: 'github', user_id: gh })
    await client.upsertLinkedAccount({ linked_account_id: `github|${gh}` })
    const root = uid('root_')
    await client.upsertLinkedAccount({ linked_account_id: root })
    await expect(client.linkAccounts(root, `github|${gh}`)).rejects.toMatchObject({ code: 'IDENTITY_ALREADY_LINKED', status: 409 })
    await client.getLinkedAccountById(`github|${gh}`)
    // A merged account whose id is taken again cannot come back through its own identity.
    const b = uid('b_')
    await client.upsertLinkedAccount({ linked_account_id: b })
    await client.linkAccounts(root, b)
    await client.upsertLinkedAccount({ linked_account_id: b })
    await expect(client.unlinkIdentity(root, 'linkvault', b)).rejects.toMatchObject({ code: 'ALREADY_EXISTS', status: 409 })
    expect((await client.getLinkedAccountById(root)).identities.map((i) => i.user_id)).toEqual([b])
  })

  test("an account's own identity cannot be linked to itself nor unlinked from it", async () => {
    const id = `github|${uid('')}`
    await client.upsertLinkedAccount({ linked_account_id: id })
    const [, user_id] = id.split('|')
    await expect(client.linkIdentity(id, { provider: 'github', user_id })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'user_id' })
    await expect(client.unlinkIdentity(id, 'github', user_id)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'user_id' })
  })

  test('seed 004: the user-initiated link with { link_with: <secondary token> } also merges, and is undone the same way', async () => {
    const primaryUserId = uid('primary_')
    const secondary = uid('secondary_')
    await client.upsertLinkedAccount({ linked_account_id: primaryUserId })
    await client.upsertLinkedAccount({ linked_account_id: secondary, udf: { from: 'secondary' } })
    const { token: secondaryJWT } = await client.getTokenForLinkedAccount({ linked_account_id: secondary })
    // The seed's request body: `data: { link_with: secondaryJWT }`.
    const merged = await client.linkAccounts(primaryUserId, { link_with: secondaryJWT })
    expect(merged.identities.map((i) => i.user_id)).toEqual([secondary])
    await client.unlinkIdentity(primaryUserId, 'linkvault', secondary)
    expect((await client.getLinkedAccountById(secondary)).udf.map((u) => u.key_value)).toEqual(['secondary'])
  })
})

describe('the link body: connection_id, user_id as number or string', () => {
  test("connection_id is stored on the identity (Auth0's con_ + 16 alphanumerics)", async () => {
    const id = uid('acc_')
    await client.upsertLinkedAccount({ linked_account_id: id })
    const [identity] = await client.linkIdentity(id, { provider: 'auth0', user_id: 'abc', connection_id: 'con_0123456789ABCDEF' })
    expect(identity).toMatchObject({ provider: 'auth0', user_id: 'abc', connection: 'auth0', connection_id: 'con_0123456789ABCDEF' })
    expect((await client.getUser(id)).identities[1].connection_id).toBe('con_0123456789ABCDEF')
    // Kept by a relink that does not send it; null clears it.
    expect((await client.linkIdentity(id, { provider: 'auth0', user_id: 'abc' }))[0].connection_id).toBe('con_0123456789ABCDEF')
    expect((await client.linkIdentity(id, { provider: 'auth0', user_id: 'abc', connection_id: null }))[0]).not.toHaveProperty('connection_id')
    for (const bad of ['con_short', 'xyz_0123456789ABCDEF', 'con_0123456789ABCDE!', 42]) {
      await expect(client.linkIdentity(id, { provider: 'auth0', user_id: 'abc', connection_id: bad })).rejects.toMatchObject({
        code: 'VALIDATION_ERROR',
        field: 'connection_id',
      })
    }
  })

  test('user_id as a number or a string names the same identity, for links, merges and unlinks', async () => {
    const root = uid('root_')
    await client.upsertLinkedAccount({ linked_account_id: root })
    const num = Number(String(Date.now()).slice(-9)) + n
    const [identity] = await client.linkIdentity(root, { provider: 'github', user_id: num })
    expect(identity.user_id).toBe(String(num))
    expect(await client.linkIdentity(root, { provider: 'github', user_id: String(num) })).toHaveLength(1)
    // An existing user `facebook|<number>` is merged whichever form the link uses.
    const fb = num + 1
    await client.upsertLinkedAccount({ linked_account_id: `facebook|${fb}` })
    await client.linkIdentity(root, { provider: 'facebook', user_id: fb })
    await expect(client.getLinkedAccountById(`facebook|${fb}`)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await client.unlinkIdentity(root, 'facebook', fb)
    await client.getLinkedAccountById(`facebook|${fb}`)
    await client.unlinkIdentity(root, 'github', num)
    expect((await client.getLinkedAccountById(`github|${num}`)).identities[0].user_id).toBe(String(num))
  })
})

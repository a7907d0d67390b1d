// Identity linking on the PostgreSQL store (issue 11): the concurrency guarantees of SQLite
// hold with many clients and processes on one schema, and merges are undone exactly.
const { spawn } = require('node:child_process')
const path = require('node:path')
const readline = require('node:readline')
const { openClient, pgUrl, newSchema, KEY } = require('./helpers')

const ORG = 'org_pg'

/** `n` clients on one new schema (each with its own pool of connections). */
async function clients(n, schema = newSchema()) {
  const out = []
  for (let i = 0; i < n; i++) out.push(await openClient({ store: 'postgres', schema, orgId: ORG }))
  return out
}

async function closeAll(cs) {
  for (const c of cs) await c.close()
}

/** Starts a racer child process; resolves when its accounts exist. */
function racer(schema, mode, n) {
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'pg-identity-racer.js'), pgUrl(), schema, KEY, mode, String(n)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const lines = readline.createInterface({ input: child.stdout })
  const next = () =>
    new Promise((resolve, reject) => {
      lines.once('line', resolve)
      child.once('exit', (code) => reject(new Error(`racer exited with ${code}`)))
    })
  return next().then((ready) => {
    expect(ready).toBe('ready')
    return {
      go: () => {
        const result = next().then(JSON.parse)
        child.stdin.write('go\n')
        return result
      },
    }
  })
}

describe('identities on PostgreSQL', () => {
  test('100 concurrent linkIdentity of one identity from 4 clients: exactly one wins', async () => {
    const cs = await clients(4)
    const ids = Array.from({ length: 100 }, (_, i) => `acc${i}`)
    await Promise.all(ids.map((id, i) => cs[i % 4].upsertLinkedAccount({ linked_account_id: id })))
    const results = await Promise.allSettled(
      ids.map((id, i) => cs[i % 4].linkIdentity(id, { provider: 'github', user_id: 'shared', email: 'ann@x.io' })),
    )
    const won = results.filter((r) => r.status === 'fulfilled')
    const lost = results.filter((r) => r.status === 'rejected')
    expect(won).toHaveLength(1)
    expect(lost).toHaveLength(99)
    for (const r of lost) expect(r.reason).toMatchObject({ code: 'IDENTITY_ALREADY_LINKED', status: 409 })
    // The identity is on exactly one account, the winner's.
    const holders = await cs[0].getLinkedAccountsByEmail('ANN@x.io')
    expect(holders).toHaveLength(1)
    expect(holders[0].identities.map((i) => `${i.provider}|${i.user_id}`)).toEqual(['github|shared'])
    const winner = ids[results.findIndex((r) => r.status === 'fulfilled')]
    expect(holders[0].account_id).toBe(winner)
    const { events } = await cs[1].listEvents({ types: ['identity.linked'] })
    expect(events).toHaveLength(1)
    await closeAll(cs)
  })

  test('50 concurrent linkAccounts(Ai, B) from 3 clients: exactly one merge', async () => {
    const cs = await clients(3)
    const primaries = Array.from({ length: 50 }, (_, i) => `A${i}`)
    for (const id of primaries) await cs[0].upsertLinkedAccount({ linked_account_id: id })
    await cs[0].upsertLinkedAccount({
      linked_account_id: 'B',
      name: 'Bee',
      udf: { plan: 'free' },
      your_app: { app_id: 'app-b', auth_credentials: { Authorization: 'Bearer b-secret' } },
    })
    await cs[0].linkIdentity('B', { provider: 'google-oauth2', user_id: 'b1', email: 'b@x.io' })
    const results = await Promise.allSettled(primaries.map((id, i) => cs[i % 3].linkAccounts(id, 'B')))
    const won = results.filter((r) => r.status === 'fulfilled')
    expect(won).toHaveLength(1)
    for (const r of results.filter((x) => x.status === 'rejected')) expect(r.reason).toMatchObject({ code: 'NOT_FOUND', status: 404 })
    const merged = won[0].value
    expect(merged.identities.map((i) => `${i.provider}|${i.user_id}`).sort()).toEqual(['google-oauth2|b1', 'linkvault|B'])
    await expect(cs[2].getLinkedAccountById('B')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    const { events } = await cs[1].listEvents({ types: ['linked_accounts.merged'] })
    expect(events).toHaveLength(1)
    expect(events[0].linked_account_id).toBe(merged.account_id)
    await closeAll(cs)
  })

  test('two processes race: one identity linked once, one account merged once', async () => {
    const schema = newSchema()
    const [c] = await clients(1, schema)
    await c.upsertLinkedAccount({ linked_account_id: 'B' })
    const links = await Promise.all([racer(schema, 'link', 25), racer(schema, 'link', 25)])
    const linked = await Promise.all(links.map((r) => r.go()))
    expect(linked[0].ok + linked[1].ok).toBe(1)
    for (const r of linked) for (const code of r.codes) expect(code).toBe('IDENTITY_ALREADY_LINKED')
    const merges = await Promise.all([racer(schema, 'merge', 20), racer(schema, 'merge', 20)])
    const merged = await Promise.all(merges.map((r) => r.go()))
    expect(merged[0].ok + merged[1].ok).toBe(1)
    for (const r of merged) for (const code of r.codes) expect(code).toBe('NOT_FOUND')
    const winner = [...merged[0].winners, ...merged[1].winners][0]
    const primary = await c.getLinkedAccountById(winner)
    expect(primary.identities.map((i) => `${i.provider}|${i.user_id}`)).toEqual(['linkvault|B'])
    await c.close()
  })

  test('merge then unlink restores the secondary exactly, credentials and all', async () => {
    const [c, d] = await clients(2)
    await c.upsertLinkedAccount({ linked_account_id: 'A', name: 'Primary', udf: { plan: 'pro', a: 1 } })
    await c.upsertLinkedAccount({
      linked_account_id: 'B',
      name: 'Second',
      udf: { plan: 'free', b: { x: [1, 2] } },
      your_app: { app_id: 'app1', auth_credentials: { Authorization: 'Bearer s3cr3t-b' } },
    })
    await c.linkIdentity('A', { provider: 'auth0', user_id: 'a1' })
    await c.linkIdentity('B', { provider: 'github', user_id: 9, email: 'b@x.io', email_verified: true })
    const before = await c.getLinkedAccountById('B')
    const merged = await d.linkAccounts('A', 'B', { udf: 'secondary_wins' })
    expect(merged.identities).toHaveLength(3)
    expect(merged.udf.find((u) => u.key_name === 'plan').key_value).toBe('free')
    expect(merged.udf.find((u) => u.key_name === 'a').key_value).toBe(1)
    expect(merged.name).toBe('Primary')
    // Unlinking B's own identity undoes the whole merge.
    const rest = await c.unlinkIdentity('A', 'linkvault', 'B')
    expect(rest.map((i) => `${i.provider}|${i.user_id}`)).toEqual(['auth0|a1'])
    const after = await d.getLinkedAccountById('B')
    expect(after._id).toBe(before._id)
    expect(after.name).toBe(before.name)
    expect(after.udf).toEqual(before.udf)
    expect(after.your_app).toEqual(before.your_app)
    expect(after.createdAt).toBe(before.createdAt)
    expect(after.identities).toEqual(before.identities)
    expect(after.__v).toBe(before.__v + 1)
    const creds = await d.getLinkedAccountCredentials('B')
    expect(creds.auth_credentials).toEqual({ Authorization: 'Bearer s3cr3t-b' })
    // The primary keeps what the merge gave its UDF; only B's identities left it.
    const a = await c.getLinkedAccountById('A')
    expect(a.udf.map((u) => [u.key_name, u.key_value])).toEqual([['plan', 'free'], ['a', 1], ['b', { x: [1, 2] }]])
    // The record is used: unlinking again is NOT_FOUND; github|9 leaves B as a bare account.
    await expect(c.unlinkIdentity('A', 'linkvault', 'B')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await c.unlinkIdentity('B', 'github', '9')
    const bare = await c.getLinkedAccountById('github|9')
    expect(bare.identities.map((i) => i.email)).toEqual(['b@x.io'])
    await closeAll([c, d])
  })

  test('getUser, getUsersByEmail, link by own identity, suggestions and unlink round trip', async () => {
    const [c] = await clients(1)
    await c.upsertLinkedAccount({ linked_account_id: 'auth0|p', name: 'P' })
    await c.upsertLinkedAccount({ linked_account_id: 'google-oauth2|1034', name: 'G', udf: { plan: 'free' } })
    await c.linkIdentity('auth0|p', { provider: 'github', user_id: 'p9', email: 'Ann@X.com', email_verified: true })
    await c.linkIdentity('google-oauth2|1034', { provider: 'samlp', user_id: 's', email: 'ann@x.com', email_verified: true })
    expect(await c.getLinkSuggestions('auth0|p')).toEqual([
      { linked_account_id: 'google-oauth2|1034', reason: 'verified_email', email: 'ann@x.com' },
    ])
    const users = await c.getUsersByEmail(' ANN@x.com ')
    expect(users.map((u) => u.user_id)).toEqual(['auth0|p', 'google-oauth2|1034'])
    const user = await c.getUser('auth0|p')
    expect(user.identities.map((i) => `${i.provider}|${i.user_id}`)).toEqual(['auth0|p', 'github|p9'])
    expect(user.email).toBe('Ann@X.com')
    // Linking another account's own identity merges it (Auth0's link of an existing user).
    const ids = await c.linkIdentity('auth0|p', { provider: 'google-oauth2', user_id: 1034 })
    expect(ids.map((i) => `${i.provider}|${i.user_id}`).sort()).toEqual(['github|p9', 'google-oauth2|1034', 'samlp|s'])
    await expect(c.getUser('google-oauth2|1034')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    expect((await c.getUsersByEmail('ann@x.com')).map((u) => u.user_id)).toEqual(['auth0|p'])
    await expect(c.linkIdentity('auth0|p', { provider: 'auth0', user_id: 'p' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'user_id' })
    // Unlinking it brings the account back as it was.
    await c.unlinkIdentity('auth0|p', 'google-oauth2', '1034')
    const g = await c.getUser('google-oauth2|1034')
    expect(g.name).toBe('G')
    expect(g.app_metadata).toEqual({ plan: 'free' })
    expect(g.identities.map((i) => `${i.provider}|${i.user_id}`)).toEqual(['google-oauth2|1034', 'samlp|s'])
    expect((await c.getUsersByEmail('ann@x.com')).map((u) => u.user_id)).toEqual(['auth0|p', 'google-oauth2|1034'])
    await expect(c.unlinkIdentity('auth0|p', 'nope', 'x')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await c.close()
  })
})

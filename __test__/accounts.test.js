const fs = require('node:fs')
const path = require('node:path')
const { Client, tmpDir, openClient, storeOptions, isPostgres, testSqlite, newKey, KEY } = require('./helpers')

const EXAMPLE = {
  linked_account_id: 'user@example.com',
  name: 'Example User',
  udf: { plan: 'pro', seats: 3 },
  your_app: { auth_credentials: { Authorization: 'Bearer sk_live_abcdef123456' } },
}

describe('linked accounts', () => {
  let client
  beforeAll(async () => {
    client = await openClient()
  })
  afterAll(() => client.close())

  test('upsert creates, then returns the documented shape', async () => {
    const a = await client.upsertLinkedAccount({ ...EXAMPLE, linked_account_id: 'shape-1' })
    expect(a.new_account).toBe(true)
    expect(a._id).toMatch(/^[0-9a-f]{24}$/)
    expect(a.associated_org).toBe('org_test')
    expect(a.account_id).toBe('shape-1')
    expect(a.environment).toBe('test')
    expect(a.name).toBe('Example User')
    expect(a.__v).toBe(0)
    expect(a.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    expect(a.updatedAt).toBe(a.createdAt)
    expect(a.your_app).toEqual({})
    expect(a.udf.map((u) => [u.key_name, u.key_value])).toEqual([
      ['plan', 'pro'],
      ['seats', 3],
    ])
    for (const u of a.udf) {
      expect(u._id).toMatch(/^[0-9a-f]{24}$/)
      expect(u.createdAt).toBe(a.createdAt)
    }
    expect(JSON.stringify(a)).not.toContain('sk_live')
    const got = await client.getLinkedAccountById('shape-1')
    expect(got).toEqual({ ...a, new_account: undefined })
  })

  test('older docs example with app_id, and the account_id alias', async () => {
    const a = await client.upsertLinkedAccount({
      account_id: 'legacy-1',
      your_app: { app_id: 'app_1', auth_credentials: { 'x-api-key': 'k' } },
    })
    expect(a.account_id).toBe('legacy-1')
    expect(a.your_app).toEqual({ app_id: 'app_1' })
    expect(await client.getLinkedAccountCredentials('legacy-1')).toEqual({
      app_id: 'app_1',
      auth_credentials: { 'x-api-key': 'k' },
    })
  })

  test('v3 nested payload wins over flat fields', async () => {
    const a = await client.upsertLinkedAccount({ linked_account_id: 'nested-1', name: 'flat', payload: { name: 'nested' } })
    expect(a.name).toBe('nested')
  })

  test('createLinkedAccount refuses an existing id with ALREADY_EXISTS', async () => {
    const a = await client.createLinkedAccount({ linked_account_id: 'create-1', name: 'one' })
    expect(a.new_account).toBe(true)
    await expect(client.createLinkedAccount({ linked_account_id: 'create-1', name: 'two' })).rejects.toMatchObject({
      code: 'ALREADY_EXISTS',
      status: 409,
    })
    expect((await client.getLinkedAccountById('create-1')).name).toBe('one')
  })

  test('update keeps unsent fields; __v grows only on change', async () => {
    const id = 'v-1'
    const a = await client.upsertLinkedAccount({ ...EXAMPLE, linked_account_id: id })
    const same = await client.upsertLinkedAccount({ ...EXAMPLE, linked_account_id: id })
    expect(same.new_account).toBe(false)
    expect(same.__v).toBe(0)
    expect(same.updatedAt).toBe(a.updatedAt)
    const idOnly = await client.upsertLinkedAccount({ linked_account_id: id })
    expect(idOnly.__v).toBe(0)
    expect(idOnly.name).toBe('Example User')
    expect(idOnly.your_app).toEqual({})
    await new Promise((r) => setTimeout(r, 5))
    const renamed = await client.upsertLinkedAccount({ linked_account_id: id, name: 'New' })
    expect(renamed.__v).toBe(1)
    expect(renamed.updatedAt > a.updatedAt).toBe(true)
    expect(renamed.createdAt).toBe(a.createdAt)
    expect(renamed.udf).toEqual(a.udf)
    // Credentials changes count as changes; identical credentials do not.
    const creds = await client.upsertLinkedAccount({
      linked_account_id: id,
      your_app: { auth_credentials: { Authorization: 'Bearer other' } },
    })
    expect(creds.__v).toBe(2)
    const credsAgain = await client.upsertLinkedAccount({
      linked_account_id: id,
      your_app: { auth_credentials: { Authorization: 'Bearer other' } },
    })
    expect(credsAgain.__v).toBe(2)
    // A sent your_app replaces the stored one as a whole.
    const replaced = await client.upsertLinkedAccount({ linked_account_id: id, your_app: { app_id: 'app_9', auth_credentials: {} } })
    expect(replaced.__v).toBe(3)
    expect(await client.getLinkedAccountCredentials(id)).toEqual({ app_id: 'app_9', auth_credentials: {} })
    // null clears.
    const cleared = await client.upsertLinkedAccount({ linked_account_id: id, name: null, your_app: null })
    expect(cleared.__v).toBe(4)
    expect(cleared.name).toBeUndefined()
    expect(cleared.your_app).toBeUndefined()
    expect(await client.getLinkedAccountCredentials(id)).toBeNull()
  })

  test('UDF: set, keep, remove with null, any JSON value, stable ids and order', async () => {
    const id = 'udf-1'
    const a = await client.upsertLinkedAccount({
      linked_account_id: id,
      udf: { z: 1, a: { nested: [1, 'two', null, { deep: true }] }, m: 'x' },
    })
    expect(a.udf.map((u) => u.key_name)).toEqual(['z', 'a', 'm'])
    await new Promise((r) => setTimeout(r, 5))
    const b = await client.upsertLinkedAccount({ linked_account_id: id, udf: { a: { nested: [1, 'two', null, { deep: true }] }, m: 'y', z: null, n: false } })
    expect(b.__v).toBe(1)
    expect(b.udf.map((u) => [u.key_name, u.key_value])).toEqual([
      ['a', { nested: [1, 'two', null, { deep: true }] }],
      ['m', 'y'],
      ['n', false],
    ])
    const [ua, um] = b.udf
    expect(ua._id).toBe(a.udf[1]._id)
    expect(ua.updatedAt).toBe(a.udf[1].updatedAt)
    expect(um._id).toBe(a.udf[2]._id)
    expect(um.createdAt).toBe(a.udf[2].createdAt)
    expect(um.updatedAt > a.udf[2].updatedAt).toBe(true)
    const c = await client.upsertLinkedAccount({ linked_account_id: id, udf: { nothere: null } })
    expect(c.__v).toBe(1)
    // Object key order inside a value does not count as a change.
    const d = await client.upsertLinkedAccount({ linked_account_id: id, udf: { a: { nested: [1, 'two', null, { deep: true }] } } })
    expect(d.__v).toBe(1)
  })

  test('ifVersion is a compare-and-set', async () => {
    const id = 'cas-1'
    await client.upsertLinkedAccount({ linked_account_id: id, name: 'a' })
    const ok = await client.upsertLinkedAccount({ linked_account_id: id, name: 'b' }, { ifVersion: 0 })
    expect(ok.__v).toBe(1)
    await expect(client.upsertLinkedAccount({ linked_account_id: id, name: 'c' }, { ifVersion: 0 })).rejects.toMatchObject({
      code: 'VERSION_CONFLICT',
      status: 409,
    })
    await expect(
      client.upsertLinkedAccount({ linked_account_id: 'cas-missing', name: 'c' }, { ifVersion: 0 }),
    ).rejects.toMatchObject({ code: 'VERSION_CONFLICT' })
    await expect(client.getLinkedAccountById('cas-missing')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    expect((await client.getLinkedAccountById(id)).name).toBe('b')
  })

  test('get and delete of unknown ids fail with NOT_FOUND; delete returns the documented message', async () => {
    await expect(client.getLinkedAccountById('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(client.deleteLinkedAccount('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(client.getLinkedAccountCredentials('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await client.upsertLinkedAccount({ linked_account_id: 'del-1', udf: { a: 1 } })
    expect(await client.deleteLinkedAccount('del-1')).toEqual({ message: 'User deleted successfully' })
    await expect(client.getLinkedAccountById('del-1')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    // Re-creating after delete starts fresh.
    const again = await client.upsertLinkedAccount({ linked_account_id: 'del-1' })
    expect(again.new_account).toBe(true)
    expect(again.udf).toEqual([])
  })

  test('errors are real Errors with code, status and message', async () => {
    const err = await client.getLinkedAccountById('missing-x').catch((e) => e)
    expect(require('node:util').types.isNativeError(err)).toBe(true)
    expect(err.message).toContain('missing-x')
    expect(err.stack).toBeDefined()
  })
})

describe('validation', () => {
  let client
  beforeAll(async () => {
    client = await openClient()
  })
  afterAll(() => client.close())

  const cases = [
    ['missing id', {}, 'linked_account_id'],
    ['empty id', { linked_account_id: '' }, 'linked_account_id'],
    ['numeric id', { linked_account_id: 42 }, 'linked_account_id'],
    ['object id', { linked_account_id: {} }, 'linked_account_id'],
    ['id over 256 chars', { linked_account_id: 'x'.repeat(257) }, 'linked_account_id'],
    ['empty your_app', { linked_account_id: 'v', your_app: {} }, 'your_app.auth_credentials'],
    ['your_app without auth_credentials (Cobalt refuses it)', { linked_account_id: 'v', your_app: { app_id: 'app_1' } }, 'your_app.auth_credentials'],
    ['a header directly in your_app', { linked_account_id: 'v', your_app: { auth_credentials: {}, Authorization: 'Bearer x' } }, 'your_app.Authorization'],
    ['your_app not an object', { linked_account_id: 'v', your_app: 'x' }, 'your_app'],
    ['non-string app_id', { linked_account_id: 'v', your_app: { app_id: 7 } }, 'your_app.app_id'],
    ['credentials not an object', { linked_account_id: 'v', your_app: { auth_credentials: 'Bearer x' } }, 'your_app.auth_credentials'],
    ['udf not an object', { linked_account_id: 'v', udf: [1, 2] }, 'udf'],
    ['udf a string', { linked_account_id: 'v', udf: 'x' }, 'udf'],
    ['udf key over 128 chars', { linked_account_id: 'v', udf: { ['k'.repeat(129)]: 1 } }, 'udf'],
    ['more than 200 udf keys', { linked_account_id: 'v', udf: Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`k${i}`, i])) }, 'udf'],
    ['name over 1024 chars', { linked_account_id: 'v', name: 'n'.repeat(1025) }, 'name'],
    ['name not a string', { linked_account_id: 'v', name: 5 }, 'name'],
    ['payload over 256 KiB', { linked_account_id: 'v', udf: { big: 'x'.repeat(300 * 1024) } }, 'payload'],
    ['NaN in udf', { linked_account_id: 'v', udf: { n: NaN } }, 'udf'],
    ['function in udf', { linked_account_id: 'v', udf: { f() {} } }, 'udf'],
  ]

  test.each(cases)('%s → VALIDATION_ERROR naming the field, nothing written', async (_name, payload, field) => {
    await expect(client.upsertLinkedAccount(payload)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
    await expect(client.createLinkedAccount(payload)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field })
    await expect(client.getLinkedAccountById('v')).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  test('payload that is not an object', async () => {
    for (const p of [undefined, null, 'str', 5, [1]]) {
      await expect(client.upsertLinkedAccount(p)).rejects.toMatchObject({ code: 'VALIDATION_ERROR' })
    }
  })

  test('a failed update leaves the stored account untouched', async () => {
    const a = await client.upsertLinkedAccount({ linked_account_id: 'keep-1', name: 'n', udf: { a: 1 } })
    await expect(
      client.upsertLinkedAccount({ linked_account_id: 'keep-1', name: 'changed', udf: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`k${i}`, i])) }),
    ).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'udf' })
    expect(await client.getLinkedAccountById('keep-1')).toEqual({ ...a, new_account: undefined })
  })

  test('bad ids for get/delete/credentials', async () => {
    for (const m of ['getLinkedAccountById', 'deleteLinkedAccount', 'getLinkedAccountCredentials']) {
      for (const bad of [undefined, null, '', 5, {}, 'x'.repeat(257)]) {
        await expect(client[m](bad)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'linked_account_id' })
      }
    }
  })

  test('bad list options', async () => {
    await expect(client.getAllLinkedAccounts({ page: 0 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'page' })
    await expect(client.getAllLinkedAccounts({ limit: 1001 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'limit' })
    await expect(client.getAllLinkedAccounts({ limit: 1.5 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'limit' })
    await expect(client.getAllLinkedAccounts({ udf: 'x' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'udf' })
    await expect(client.getAllLinkedAccounts({ search: 5 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'search' })
    await expect(client.listLinkedAccounts({ after: 'garbage' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'after' })
    await expect(client.upsertLinkedAccount({ linked_account_id: 'x' }, { ifVersion: -1 })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'ifVersion',
    })
  })

  test('bad open options', async () => {
    const db = storeOptions()
    await expect(Client.open({ ...db, environment: 'staging', encryptionKey: KEY })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'environment',
    })
    await expect(Client.open({ ...db, encryptionKey: 'short' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'encryptionKey' })
    await expect(Client.open({ ...db, encryptionKey: KEY, orgId: '' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'orgId' })
    await expect(Client.open('nope')).rejects.toMatchObject({ code: 'VALIDATION_ERROR' })
    // `durability` is SQLite's `synchronous`, and only SQLite has a file that must not appear.
    if (!isPostgres) {
      await expect(Client.open({ ...db, encryptionKey: KEY, durability: 'maybe' })).rejects.toMatchObject({
        code: 'VALIDATION_ERROR',
        field: 'durability',
      })
      expect(fs.existsSync(db.path)).toBe(false)
    }
  })
})

describe('listing', () => {
  let client
  beforeAll(async () => {
    client = await openClient()
    for (let i = 0; i < 23; i++) {
      await client.upsertLinkedAccount({
        linked_account_id: `acct-${String(i).padStart(2, '0')}`,
        name: i % 2 ? `Ödön ${i}` : `Ann ${i}`,
        udf: { tier: i % 3 === 0 ? 'gold' : 'basic', region: i < 10 ? 'eu' : 'us' },
      })
    }
  })
  afterAll(() => client.close())

  test('getAllLinkedAccounts defaults and envelope', async () => {
    const p = await client.getAllLinkedAccounts()
    expect(p).toMatchObject({
      totalDocs: 23,
      limit: 10,
      totalPages: 3,
      page: 1,
      pagingCounter: 1,
      hasPrevPage: false,
      hasNextPage: true,
      prevPage: null,
      nextPage: 2,
    })
    expect(p.docs.map((d) => d.account_id)).toEqual(Array.from({ length: 10 }, (_, i) => `acct-${String(i).padStart(2, '0')}`))
    const last = await client.getAllLinkedAccounts({ page: 3, limit: 10 })
    expect(last).toMatchObject({ page: 3, pagingCounter: 21, hasPrevPage: true, hasNextPage: false, prevPage: 2, nextPage: null })
    expect(last.docs).toHaveLength(3)
    const beyond = await client.getAllLinkedAccounts({ page: 9 })
    expect(beyond.docs).toEqual([])
  })

  test('udf filters: all must match, exact values', async () => {
    const gold = await client.getAllLinkedAccounts({ udf: { tier: 'gold' }, limit: 100 })
    expect(gold.totalDocs).toBe(8)
    const goldEu = await client.getAllLinkedAccounts({ udf: { tier: 'gold', region: 'eu' }, limit: 100 })
    expect(goldEu.docs.map((d) => d.account_id)).toEqual(['acct-00', 'acct-03', 'acct-06', 'acct-09'])
    expect((await client.getAllLinkedAccounts({ udf: { tier: 'GOLD' } })).totalDocs).toBe(0)
    expect((await client.getAllLinkedAccounts({ udf: { missing: 'x' } })).totalDocs).toBe(0)
  })

  test('search is a case-insensitive substring of id or name (Unicode-aware)', async () => {
    expect((await client.getAllLinkedAccounts({ search: 'ACCT-1', limit: 100 })).totalDocs).toBe(10)
    expect((await client.getAllLinkedAccounts({ search: 'ödön', limit: 100 })).totalDocs).toBe(11)
    expect((await client.getAllLinkedAccounts({ search: 'ÖDÖN 1', limit: 100 })).docs.map((d) => d.name)).toEqual([
      'Ödön 1',
      'Ödön 11',
      'Ödön 13',
      'Ödön 15',
      'Ödön 17',
      'Ödön 19',
    ])
    expect((await client.getAllLinkedAccounts({ search: "'; DROP TABLE accounts; --" })).totalDocs).toBe(0)
  })

  test('listLinkedAccounts pages with a cursor and the same filters', async () => {
    const seen = []
    let after
    let pages = 0
    do {
      const page = await client.listLinkedAccounts({ limit: 7, ...(after ? { after } : {}) })
      seen.push(...page.docs.map((d) => d.account_id))
      after = page.next
      pages++
    } while (after)
    expect(pages).toBe(4)
    expect(seen).toHaveLength(23)
    expect(new Set(seen).size).toBe(23)
    const first = await client.listLinkedAccounts()
    expect(first.docs).toHaveLength(23)
    expect(first.next).toBeNull()
    const gold = await client.listLinkedAccounts({ udf: { tier: 'gold' }, search: 'ann', limit: 2 })
    expect(gold.docs.map((d) => d.account_id)).toEqual(['acct-00', 'acct-06'])
    expect(typeof gold.next).toBe('string')
  })

  test('keyset paging visits every existing account once during concurrent inserts', async () => {
    const c = await openClient()
    for (let i = 0; i < 100; i++) await c.upsertLinkedAccount({ linked_account_id: `k${i}` })
    const inserts = []
    const seen = []
    let after = null
    let n = 0
    do {
      const page = await c.listLinkedAccounts({ limit: 9, ...(after ? { after } : {}) })
      seen.push(...page.docs.map((d) => d.account_id))
      inserts.push(c.upsertLinkedAccount({ linked_account_id: `new${n++}` }))
      after = page.next
    } while (after)
    await Promise.all(inserts)
    const original = seen.filter((s) => s.startsWith('k'))
    expect(original).toHaveLength(100)
    expect(new Set(seen).size).toBe(seen.length)
    await c.close()
  })
})

describe('scoping, persistence and keys', () => {
  test('clients with another environment or org never see each other', async () => {
    const db = storeOptions()
    const test = await openClient({ ...db, orgId: 'org_a' })
    const prod = await openClient({ ...db, orgId: 'org_a', environment: 'production' })
    const other = await openClient({ ...db, orgId: 'org_b' })
    await test.upsertLinkedAccount({ linked_account_id: 'same', name: 'test' })
    await prod.upsertLinkedAccount({ linked_account_id: 'same', name: 'prod' })
    expect((await test.getLinkedAccountById('same')).name).toBe('test')
    expect((await prod.getLinkedAccountById('same')).environment).toBe('production')
    expect((await prod.getLinkedAccountById('same')).name).toBe('prod')
    await expect(other.getLinkedAccountById('same')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    expect((await other.getAllLinkedAccounts()).totalDocs).toBe(0)
    await prod.deleteLinkedAccount('same')
    expect((await test.getLinkedAccountById('same')).name).toBe('test')
    await Promise.all([test.close(), prod.close(), other.close()])
  })

  test('data persists across close and reopen; default orgId is kept in the database', async () => {
    const db = storeOptions()
    const a = await Client.open({ ...db, encryptionKey: KEY })
    expect(a.orgId).toMatch(/^[0-9a-f]{24}$/)
    expect(a.environment).toBe('test')
    const created = await a.upsertLinkedAccount(EXAMPLE)
    expect(created.associated_org).toBe(a.orgId)
    await a.close()
    await a.close()
    await expect(a.getLinkedAccountById(EXAMPLE.linked_account_id)).rejects.toMatchObject({ code: 'CLIENT_CLOSED', status: 400 })
    await expect(a.upsertLinkedAccount(EXAMPLE)).rejects.toMatchObject({ code: 'CLIENT_CLOSED' })
    const b = await Client.open({ ...db, encryptionKey: KEY })
    expect(b.orgId).toBe(a.orgId)
    expect(await b.getLinkedAccountById(EXAMPLE.linked_account_id)).toEqual({ ...created, new_account: undefined })
    expect((await b.getLinkedAccountCredentials(EXAMPLE.linked_account_id)).auth_credentials).toEqual(EXAMPLE.your_app.auth_credentials)
    await b.close()
  })

  test('every method rejects with CLIENT_CLOSED after close', async () => {
    const c = await openClient()
    await c.close()
    const calls = [
      () => c.createLinkedAccount({ linked_account_id: 'x' }),
      () => c.upsertLinkedAccount({ linked_account_id: 'x' }),
      () => c.getLinkedAccountById('x'),
      () => c.deleteLinkedAccount('x'),
      () => c.getAllLinkedAccounts(),
      () => c.listLinkedAccounts(),
      () => c.getLinkedAccountCredentials('x'),
    ]
    for (const call of calls) await expect(call()).rejects.toMatchObject({ code: 'CLIENT_CLOSED', status: 400 })
  })

  test('a wrong key fails with DECRYPTION_FAILED, never garbage', async () => {
    const db = storeOptions()
    const a = await openClient(db)
    await a.upsertLinkedAccount(EXAMPLE)
    await a.close()
    const err = await openClient({ ...db, encryptionKey: newKey() }).catch((e) => e)
    expect(err).toMatchObject({ code: 'DECRYPTION_FAILED', status: 500 })
    expect(err.message).not.toContain(KEY)
  })

  testSqlite('base64 keys, LINKVAULT_ENCRYPTION_KEY, and a generated <path>.key with mode 0600', 'the key file', async () => {
    const dir = tmpDir()
    const b64 = Buffer.from(KEY, 'hex').toString('base64')
    const c1 = await Client.open({ path: path.join(dir, 'b64.db'), encryptionKey: b64 })
    await c1.upsertLinkedAccount(EXAMPLE)
    await c1.close()
    // The same key in hex opens the same file.
    const c2 = await Client.open({ path: path.join(dir, 'b64.db'), encryptionKey: KEY })
    expect((await c2.getLinkedAccountCredentials(EXAMPLE.linked_account_id)).auth_credentials).toEqual(EXAMPLE.your_app.auth_credentials)
    await c2.close()

    const file = path.join(dir, 'gen.db')
    const saved = process.env.LINKVAULT_ENCRYPTION_KEY
    delete process.env.LINKVAULT_ENCRYPTION_KEY
    try {
      const g = await Client.open({ path: file })
      await g.upsertLinkedAccount(EXAMPLE)
      await g.close()
      const stat = fs.statSync(`${file}.key`)
      expect(stat.mode & 0o777).toBe(0o600)
      expect(fs.readFileSync(`${file}.key`, 'utf8').trim()).toMatch(/^[0-9a-f]{64}$/)
      const g2 = await Client.open({ path: file })
      expect((await g2.getLinkedAccountCredentials(EXAMPLE.linked_account_id)).auth_credentials).toEqual(EXAMPLE.your_app.auth_credentials)
      await g2.close()

      // Jest gives each test file its own copy of process.env, so use a child process.
      const envFile = path.join(dir, 'env.db')
      const { execFileSync } = require('node:child_process')
      const script = `const { Client } = require(${JSON.stringify(path.join(__dirname, '..'))});
        Client.open({ path: ${JSON.stringify(envFile)} }).then(async (c) => { await c.upsertLinkedAccount(${JSON.stringify(EXAMPLE)}); await c.close() })`
      execFileSync(process.execPath, ['-e', script], { env: { ...process.env, LINKVAULT_ENCRYPTION_KEY: KEY } })
      expect(fs.existsSync(`${envFile}.key`)).toBe(false)
      const e2 = await Client.open({ path: envFile, encryptionKey: KEY })
      expect((await e2.getLinkedAccountCredentials(EXAMPLE.linked_account_id)).auth_credentials).toEqual(EXAMPLE.your_app.auth_credentials)
      await e2.close()
    } finally {
      if (saved === undefined) delete process.env.LINKVAULT_ENCRYPTION_KEY
      else process.env.LINKVAULT_ENCRYPTION_KEY = saved
    }
  })

  testSqlite('no credential byte is stored in clear (database, -wal, -shm)', 'scans the database files', async () => {
    const dir = tmpDir()
    const file = path.join(dir, 'grep.db')
    const secret = 'cred-needle-7f3a9c'
    const c = await Client.open({ path: file, encryptionKey: KEY })
    for (let i = 0; i < 20; i++) {
      await c.upsertLinkedAccount({
        linked_account_id: `g${i}`,
        your_app: { app_id: 'app', auth_credentials: { Authorization: `Bearer ${secret}`, [`${secret}-key`]: i } },
      })
    }
    const files = fs.readdirSync(dir).filter((f) => f.startsWith('grep.db'))
    expect(files).toEqual(expect.arrayContaining(['grep.db', 'grep.db-wal']))
    for (const f of files) {
      const bytes = fs.readFileSync(path.join(dir, f))
      expect(bytes.includes(Buffer.from(secret))).toBe(false)
    }
    await c.close()
    const bytes = fs.readFileSync(file)
    expect(bytes.includes(Buffer.from(secret))).toBe(false)
    // Sanity: the scan itself finds plain values that are stored in clear.
    expect(bytes.includes(Buffer.from('g19'))).toBe(true)
  })

  testSqlite('a database from a newer linkvault is refused, not touched', "edits the SQLite header (PostgreSQL's case: src/store/postgres/tests.rs)", async () => {
    const dir = tmpDir()
    const file = path.join(dir, 'future.db')
    const c = await Client.open({ path: file, encryptionKey: KEY })
    await c.close()
    // Pretend a newer linkvault migrated the file: user_version is the 4-byte big-endian integer
    // at offset 60 of the SQLite header.
    const buf = fs.readFileSync(file)
    buf.writeUInt32BE(9999, 60)
    fs.writeFileSync(file, buf)
    const err = await Client.open({ path: file, encryptionKey: KEY }).catch((e) => e)
    expect(err).toMatchObject({ code: 'STORAGE_ERROR', status: 500 })
    expect(err.message).toMatch(/newer/)
  })
})

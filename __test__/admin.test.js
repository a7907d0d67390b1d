// What running linkvault in production needs: online backups, a required encryption key outside
// `test`, stats for a health endpoint, the list of signing keys, and progress reports.
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { Client, LinkvaultError } = require('..')
const { tmpDir, newKey, openClient, storeOptions, isPostgres, describeSqlite, KEY } = require('./helpers')

describeSqlite('backup(destPath)', 'backup copies the SQLite file; on PostgreSQL use pg_dump', () => {
  test('a copy taken while writes are in flight opens, passes the integrity check and holds every write acknowledged before it', async () => {
    const dir = tmpDir()
    const client = await Client.open({ path: path.join(dir, 'live.db'), orgId: 'org_b', encryptionKey: KEY })
    await client.upsertLinkedAccount({ linked_account_id: 'seed', your_app: { auth_credentials: { token: 'seed-secret' } } })

    // Writers keep 16 upserts in flight for the whole test.
    const acknowledged = new Set()
    let stop = false
    let n = 0
    const writer = async () => {
      while (!stop) {
        const id = `acc-${n++}`
        await client.upsertLinkedAccount({ linked_account_id: id, udf: { n } })
        acknowledged.add(id)
      }
    }
    const writers = Array.from({ length: 16 }, writer)
    while (acknowledged.size < 300) await new Promise((r) => setTimeout(r, 5))

    const copies = []
    for (let i = 0; i < 3; i++) {
      const before = new Set(acknowledged) // acknowledged before the backup starts
      const dest = path.join(dir, `copy-${i}.db`)
      const result = await client.backup(dest)
      expect(result).toMatchObject({ path: dest })
      expect(result.bytes).toBe(fs.statSync(dest).size)
      expect(result.pages).toBeGreaterThan(0)
      expect(result.duration_ms).toBeGreaterThanOrEqual(0)
      copies.push({ dest, before })
    }
    stop = true
    await Promise.all(writers)
    const during = await client.stats()
    await client.close()

    for (const { dest, before } of copies) {
      // One self-contained file: no -wal or temporary file beside it.
      expect(fs.existsSync(`${dest}-wal`)).toBe(false)
      const copy = await Client.open({ path: dest, orgId: 'org_b', encryptionKey: KEY })
      expect(await copy.checkIntegrity()).toEqual({ ok: true, details: [] })
      const ids = new Set()
      let after
      do {
        const page = await copy.listLinkedAccounts({ limit: 1000, ...(after && { after }) })
        for (const a of page.docs) ids.add(a.account_id)
        after = page.next
      } while (after)
      for (const id of before) expect(ids.has(id) ? id : `missing ${id}`).toBe(id)
      expect(ids.size).toBeLessThanOrEqual(during.accounts)
      expect(await copy.getLinkedAccountCredentials('seed')).toEqual({ auth_credentials: { token: 'seed-secret' } })
      await copy.close()
    }
    expect(fs.readdirSync(dir).filter((f) => f.includes('.partial-'))).toEqual([])
  })

  test('refuses to replace a file, the database itself, a missing directory and :memory:', async () => {
    const dir = tmpDir()
    const file = path.join(dir, 'a.db')
    const client = await Client.open({ path: file, encryptionKey: KEY })
    fs.writeFileSync(path.join(dir, 'taken.db'), 'precious')
    const bad = [path.join(dir, 'taken.db'), file, path.join(dir, 'no', 'such', 'dir.db'), '', 42, undefined]
    for (const dest of bad) {
      await expect(client.backup(dest)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field: 'destPath' })
    }
    expect(fs.readFileSync(path.join(dir, 'taken.db'), 'utf8')).toBe('precious')
    await client.close()
    const memory = await Client.open({ path: ':memory:', encryptionKey: KEY })
    await expect(memory.backup(path.join(dir, 'm.db'))).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'destPath' })
    await memory.close()
  })
})

describeSqlite('encryptionKey outside the test environment', 'the <path>.key default; with url a key is always required (postgres.test.js)', () => {
  // The key comes from the real process environment, which Jest's sandbox does not change:
  // each case runs in a child process with the environment it needs.
  function run(script, env = {}) {
    const { LINKVAULT_ENCRYPTION_KEY, ...rest } = process.env
    const out = spawnSync(
      process.execPath,
      ['-e', `const { Client } = require(${JSON.stringify(path.join(__dirname, '..'))});\n(async () => {\n${script}\n})().catch((e) => { console.log(JSON.stringify({ name: e.name, code: e.code, field: e.field, status: e.status, message: e.message })) })`],
      { encoding: 'utf8', env: { ...rest, ...env } },
    )
    expect(out.stderr).toBe('')
    return out.stdout.trim()
  }

  test('Client.open without a key in production fails with VALIDATION_ERROR naming encryptionKey and writes nothing', () => {
    const dir = tmpDir()
    const file = path.join(dir, 'prod.db')
    const err = JSON.parse(run(`await Client.open({ path: ${JSON.stringify(file)}, environment: 'production' })`))
    expect(err).toMatchObject({ name: 'LinkvaultError', code: 'VALIDATION_ERROR', status: 400, field: 'encryptionKey' })
    expect(err.message).toMatch(/LINKVAULT_ENCRYPTION_KEY/)
    expect(fs.readdirSync(dir)).toEqual([])
  })

  test('the option, or LINKVAULT_ENCRYPTION_KEY, opens production; test keeps the key file default', async () => {
    const dir = tmpDir()
    const file = path.join(dir, 'p.db')
    const key = newKey()
    const withOption = await Client.open({ path: file, environment: 'production', encryptionKey: key })
    await withOption.upsertLinkedAccount({ linked_account_id: 'p' })
    await withOption.close()
    const out = run(
      `const c = await Client.open({ path: ${JSON.stringify(file)}, environment: 'production' })
       console.log((await c.getLinkedAccountById('p')).environment); await c.close()`,
      { LINKVAULT_ENCRYPTION_KEY: key },
    )
    expect(out).toBe('production')
    expect(fs.existsSync(`${file}.key`)).toBe(false)

    const testFile = path.join(dir, 't.db')
    expect(run(`const c = await Client.open({ path: ${JSON.stringify(testFile)} }); console.log(c.environment); await c.close()`)).toBe('test')
    expect(fs.statSync(`${testFile}.key`).mode & 0o777).toBe(0o600)
  })
})

describe('stats()', () => {
  test("counts this scope's accounts, identities, consents, live tokens and events, with file sizes and the write queue", async () => {
    const db = storeOptions()
    const client = await openClient({ ...db, orgId: 'org_s' })
    const other = await openClient({ ...db, orgId: 'org_other' })
    await other.upsertLinkedAccount({ linked_account_id: 'not-counted' })
    for (const id of ['a', 'b', 'c']) await client.upsertLinkedAccount({ linked_account_id: id })
    await client.linkIdentity('a', { provider: 'github', user_id: 1 })
    const { token } = await client.getTokenForLinkedAccount({ linked_account_id: 'a' })
    await client.getTokenForLinkedAccount({ linked_account_id: 'b' })
    await client.revokeSessionToken(token)
    const s = await client.createAuthSession({ end_user_id: 'c', redirect_uri: 'https://x.test/ok', cancel_uri: 'https://x.test/no' })
    const consent = await client.completeAuthSession(s.session_id, { institution_id: 'bank', account_ids: ['1'], permissions: ['accounts'], duration_seconds: 3600 })
    const s2 = await client.createAuthSession({ end_user_id: 'c', redirect_uri: 'https://x.test/ok', cancel_uri: 'https://x.test/no' })
    await client.completeAuthSession(s2.session_id, { institution_id: 'bank', account_ids: ['2'], permissions: ['accounts'], duration_seconds: 3600 })
    await client.revokeConsent(consent.arrangement_id)
    const { events } = await client.listEvents({ limit: 1000 })

    const stats = await client.stats()
    expect(stats).toEqual({
      org_id: 'org_s',
      environment: 'test',
      accounts: 3,
      identities: 1,
      consents: 2,
      active_consents: 1,
      tokens: 1,
      events: events.length,
      // The SQLite file and its WAL; on PostgreSQL the schema's size.
      database_bytes: isPostgres ? expect.any(Number) : fs.statSync(db.path).size,
      wal_bytes: isPostgres ? expect.any(Number) : fs.statSync(`${db.path}-wal`).size,
      write_queue: expect.any(Number),
    })
    expect(stats.write_queue).toBe(0)
    // 2,000 writes made in one go: stats() counts those the writer has not taken yet, as it
    // finds them (how many depends on how fast the writer keeps up; the depth behind a busy
    // writer is checked in the engine's own tests: write_queue_counts_the_writes_not_yet_taken).
    const writes = Array.from({ length: 2000 }, (_, i) => client.upsertLinkedAccount({ linked_account_id: `q${i}` }))
    const busy = await client.stats()
    await Promise.all(writes)
    expect(Number.isInteger(busy.write_queue)).toBe(true)
    expect(busy.write_queue).toBeGreaterThanOrEqual(0)
    expect(busy.write_queue).toBeLessThanOrEqual(2000)
    expect((await client.stats()).accounts).toBe(2003)
    await Promise.all([client.close(), other.close()])
  })
})

describe('listSigningKeys()', () => {
  test('lists kid, created_at, retired_at and the current key, never a secret', async () => {
    const secret = 'a-signing-secret-of-at-least-32-bytes!!'
    const client = await openClient({ signingSecret: secret })
    const [first] = await client.listSigningKeys()
    expect(first).toEqual({ kid: expect.any(String), created_at: expect.stringMatching(/Z$/), retired_at: null, current: true })
    const { kid: second } = await client.rotateSigningKey()
    await client.retireSigningKey(first.kid)
    const keys = await client.listSigningKeys()
    expect(keys.map((k) => [k.kid, k.current, k.retired_at === null])).toEqual([
      [first.kid, false, false],
      [second, true, true],
    ])
    expect(Date.parse(keys[0].retired_at)).toBeGreaterThanOrEqual(Date.parse(keys[0].created_at))
    expect(JSON.stringify(keys)).not.toContain(secret)
    await client.close()
  })
})

describe('onProgress', () => {
  test('rotateEncryptionKey reports { done, total } on Node\'s thread, all before it resolves, ending at done === total', async () => {
    const client = await openClient()
    for (let i = 0; i < 1200; i++) {
      await client.upsertLinkedAccount({ linked_account_id: `u${i}`, your_app: { auth_credentials: { t: i } } })
    }
    const seen = []
    let resolved = false
    const newKey1 = newKey()
    const result = await client.rotateEncryptionKey(newKey1, {
      onProgress: (p) => {
        expect(resolved).toBe(false)
        seen.push(p)
      },
    }).then((r) => {
      resolved = true
      return r
    })
    // 1,200 credentials and 1 signing secret, in batches of 500 rows.
    expect(result.resealed).toBe(1201)
    expect(seen[0]).toEqual({ done: 0, total: 1201 })
    expect(seen.at(-1)).toEqual({ done: 1201, total: 1201 })
    expect(seen.length).toBeGreaterThanOrEqual(4)
    for (let i = 1; i < seen.length; i++) expect(seen[i].done).toBeGreaterThanOrEqual(seen[i - 1].done)
    // Nothing left to do: one report of 0 of 0.
    const again = []
    await client.rotateEncryptionKey(newKey1, { onProgress: (p) => again.push(p) })
    expect(again).toEqual([{ done: 0, total: 0 }])
    await client.close()
  })

  test('checkIntegrity reports its three steps', async () => {
    const client = await openClient()
    const seen = []
    expect(await client.checkIntegrity({ onProgress: (p) => seen.push(p) })).toEqual({ ok: true, details: [] })
    expect(seen).toEqual([0, 1, 2, 3].map((done) => ({ done, total: 3 })))
    expect(await client.checkIntegrity({})).toEqual({ ok: true, details: [] })
    await client.close()
  })

  test('a non-function onProgress is a VALIDATION_ERROR naming it; nothing is rotated', async () => {
    const client = await openClient()
    await expect(client.checkIntegrity({ onProgress: 5 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'onProgress' })
    await expect(client.rotateEncryptionKey(newKey(), { onProgress: 'x' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'onProgress' })
    await expect(client.checkIntegrity('x')).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'options' })
    const throwing = { get onProgress() { throw new Error('boom') } }
    await expect(client.checkIntegrity(throwing)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'onProgress' })
    await client.close()
  })

  test('an exception thrown by onProgress is an uncaught exception, as with an EventEmitter listener', () => {
    const script = `
      const { Client } = require(${JSON.stringify(path.join(__dirname, '..'))})
      process.on('uncaughtException', (e) => { console.log('uncaught: ' + e.message) })
      Client.open({ path: ':memory:', encryptionKey: '${KEY}' }).then(async (c) => {
        const r = await c.checkIntegrity({ onProgress: () => { throw new Error('from onProgress') } })
        console.log('resolved ok=' + r.ok)
        await c.close()
      })`
    const out = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
    expect(out.stdout).toContain('uncaught: from onProgress')
    expect(out.stdout).toContain('resolved ok=true')
  })
})

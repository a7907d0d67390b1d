'use strict'
// `linkvault serve` and `linkvault keys` as commands (server/bin.js dispatches them as
// bin/linkvault.js does): flags, exit codes, the ready line, graceful shutdown, and keys
// shown once and stored hashed.

const fs = require('node:fs')
const http = require('node:http')
const net = require('node:net')
const path = require('node:path')

const { newStore, run, createKey, startServer } = require('./helpers')

describe('serve: flags', () => {
  const bad = [
    [['--bogus'], /Unknown option '--bogus'/],
    [['--port', 'abc'], /--port must be an integer from 0 to 65535/],
    [['--port', '70000'], /--port must be an integer/],
    [['--port', '-1'], /./],
    [['--port'], /argument missing/],
    [['--tls-cert', 'x.pem'], /--tls-cert and --tls-key go together/],
    [['--tls-cert', '/nonexistent/c.pem', '--tls-key', '/nonexistent/k.pem'], /--tls-cert: cannot read/],
    [['--public-url', 'ftp://example.com'], /--public-url must be an absolute http\(s\) URL/],
    [['--public-url', 'not a url'], /--public-url/],
    [['--url', 'postgres://localhost/x'], /either --db or --url/],
    [['--url', 'mysql://localhost/x'], /--url must be a postgres/, { noDb: true }],
    [['extra'], /Unexpected argument 'extra'/],
    [['--schema', 'other'], /--schema names a PostgreSQL schema: it needs --url/],
  ]
  test.each(bad)('serve %j exits 2 with a one-line error', async (args, message, { noDb } = {}) => {
    // Flags are checked before any store is opened: a SQLite path serves on either store.
    const store = newStore()
    const db = path.join(store.dir, 'vault.db')
    const r = await run(['serve', ...(noDb ? [] : ['--db', db]), ...args], { env: store.env })
    expect(r.code).toBe(2)
    expect(r.stdout).toBe('')
    const lines = r.stderr.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^linkvault serve: /)
    expect(lines[0]).toMatch(message)
    // A bad flag never touches the database.
    expect(fs.existsSync(db)).toBe(false)
  })

  test('a store that cannot be opened (--url this build or this host cannot reach) exits 1 with one line', async () => {
    const store = newStore()
    const r = await run(['serve', '--url', 'postgres://nobody@linkvault-test.invalid:5432/db', '--port', '0'], { env: store.env })
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(/^linkvault serve: [A-Z_]+: /)
    expect(fs.existsSync('linkvault.db')).toBe(false)
  })

  test('--help prints the usage and exits 0', async () => {
    const r = await run(['serve', '--help'])
    expect(r.code).toBe(0)
    for (const flag of ['--db', '--url', '--schema', '--host', '--port', '--tls-cert', '--tls-key', '--public-url']) expect(r.stdout).toContain(flag)
  })
})

describe('serve: ready line and graceful shutdown', () => {
  test('--port 0 takes a free port; SIGTERM finishes the request in flight, refuses new connections, closes the store, exits 0', async () => {
    const store = newStore()
    const key = await createKey(store, 'org_a')
    const server = await startServer(store, ['--host', '127.0.0.1', '--public-url', 'https://vault.example.com/'])
    expect(server.out.stdout).toMatch(/^listening on http:\/\/127\.0\.0\.1:\d+\n$/)
    expect(server.port).toBeGreaterThan(0)

    // A request whose body is still arriving when SIGTERM lands.
    const body = JSON.stringify({ linked_account_id: 'in-flight', name: 'Slow body' })
    const response = new Promise((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: server.port, method: 'PUT', path: '/api/v2/public/linked-account', headers: { 'x-api-key': key.api_key, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          let text = ''
          res.on('data', (d) => (text += d))
          res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(text) }))
        },
      )
      req.on('error', reject)
      req.write(body.slice(0, 10))
      setTimeout(() => {
        server.child.kill('SIGTERM')
        setTimeout(() => req.end(body.slice(10)), 300)
      }, 200)
    })
    const r = await response
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ account_id: 'in-flight', new_account: true })
    const exit = await server.exited
    expect(exit).toEqual({ code: 0, signal: null })
    // Closed cleanly: the WAL was folded into the file (SQLite).
    if (store.db) expect(fs.existsSync(`${store.db}-wal`)).toBe(false)
    await expect(
      new Promise((resolve, reject) => {
        const s = net.connect(server.port, '127.0.0.1', () => {
          s.destroy()
          resolve('connected')
        })
        s.on('error', reject)
      }),
    ).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    expect(server.out.stderr).toMatch(/"signal":"SIGTERM"/)
  })

  test('SIGINT stops it too, with exit code 0', async () => {
    const store = newStore()
    const server = await startServer(store)
    expect(await server.stop('SIGINT')).toEqual({ code: 0, signal: null })
  })
})

describe('keys', () => {
  test('create prints { api_key, client_id, client_secret } last; list never shows secrets; revoke', async () => {
    const store = newStore()
    const created = await run(['keys', 'create', ...store.args, '--org', 'org_a', '--name', 'ci'], { env: store.env })
    expect(created.code).toBe(0)
    const last = JSON.parse(created.stdout.trim().split('\n').pop())
    expect(Object.keys(last)).toEqual(['api_key', 'client_id', 'client_secret'])
    expect(last.api_key).toMatch(/^tk_[0-9a-f]{64}$/)
    const prod = await createKey(store, 'org_a', 'production')
    expect(prod.api_key).toMatch(/^pk_[0-9a-f]{64}$/)

    const listed = await run(['keys', 'list', ...store.args, '--json'], { env: store.env })
    expect(listed.code).toBe(0)
    const keys = JSON.parse(listed.stdout)
    expect(keys).toEqual([
      expect.objectContaining({ client_id: last.client_id, org_id: 'org_a', environment: 'test', name: 'ci', revoked_at: null, api_key_hint: `tk_…${last.api_key.slice(-4)}` }),
      expect.objectContaining({ client_id: prod.client_id, environment: 'production' }),
    ])
    const table = await run(['keys', 'list', ...store.args, '--environment', 'production'], { env: store.env })
    expect(table.stdout).toContain(prod.client_id)
    expect(table.stdout).not.toContain(last.client_id)
    for (const out of [listed.stdout, table.stdout, listed.stderr, created.stderr]) {
      for (const s of [last.api_key, last.client_secret, prod.api_key, prod.client_secret]) expect(out).not.toContain(s)
    }

    const revoked = await run(['keys', 'revoke', last.client_id, ...store.args], { env: store.env })
    expect(revoked.code).toBe(0)
    expect(revoked.stdout).toContain(last.client_id)
    const after = JSON.parse((await run(['keys', 'list', ...store.args, '--json', '--org', 'org_a'], { env: store.env })).stdout)
    expect(after.find((k) => k.client_id === last.client_id).revoked_at).toEqual(expect.any(String))

    const unknown = await run(['keys', 'revoke', 'lvc_nope', ...store.args], { env: store.env })
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/NOT_FOUND/)

    // Stored hashed: no secret is anywhere in the database files (SQLite; PostgreSQL leaves none in store.dir).
    for (const file of fs.readdirSync(store.dir)) {
      const bytes = fs.readFileSync(`${store.dir}/${file}`)
      for (const s of [last.api_key, last.client_secret, prod.api_key, prod.client_secret]) expect(bytes.includes(Buffer.from(s))).toBe(false)
    }
  })

  test.each([
    [['create'], /--org is required/],
    [['create', '--org', 'o', '--environment', 'staging'], /--environment must be 'test' or 'production'/],
    [['create', '--org', 'o', '--bogus'], /Unknown option '--bogus'/],
    [['revoke'], /CLIENT_ID is required/],
    [['revoke', 'a', 'b'], /unexpected argument 'b'/],
    [['frobnicate'], /unknown subcommand 'frobnicate'/],
    [[], /a subcommand is required/],
  ])('keys %j exits 2 with a one-line error', async (args, message) => {
    const store = newStore()
    const r = await run(['keys', ...args, ...(args.length ? store.args : [])], { env: store.env })
    expect(r.code).toBe(2)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(message)
  })
})

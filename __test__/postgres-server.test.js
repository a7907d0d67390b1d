'use strict'
// API keys, webhooks and the admin calls on PostgreSQL, and `linkvault serve --url` with the
// `keys`/`webhooks` commands on a PostgreSQL store (issue 11 for the modules, issue 13 for the
// server). Events the webhook tests deliver are written into the schema's event log by psql,
// as a concurrent writer would (the modules that append end-user events are not on PostgreSQL
// in this build yet); one psql session holds its transaction open to commit an event late.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const { Client, pgUrl, newSchema, KEY } = require('./helpers')

const PSQL = '/usr/lib/postgresql/15/bin/psql'
const ROOT = path.join(__dirname, '..')
const SERVER_BIN = path.join(ROOT, 'server', 'bin.js')
const CLI_BIN = path.join(ROOT, 'bin', 'linkvault.js')

function open(schema, extra = {}) {
  return Client.open({ url: pgUrl(), schema, encryptionKey: KEY, orgId: 'org_pg', poolSize: 4, ...extra })
}

/** A psql session on `schema`: `run(sql)` resolves with psql's output for that statement. */
function psql(schema) {
  if (!fs.existsSync(PSQL)) throw new Error(`psql not found at ${PSQL}: the PostgreSQL 15 client is needed by this suite`)
  const child = spawn(PSQL, [pgUrl(), '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=0'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (err += d))
  let n = 0
  const session = {
    /** Runs `sql` and waits for a marker printed after it. */
    async run(sql) {
      const mark = `__done_${++n}__`
      child.stdin.write(`${sql};\n\\echo ${mark}\n`)
      const start = Date.now()
      while (!out.includes(mark)) {
        if (err) throw new Error(`psql: ${err}`)
        if (Date.now() - start > 10000) throw new Error(`psql did not answer: ${out}`)
        await new Promise((r) => setTimeout(r, 10))
      }
      const [before, after] = out.split(mark)
      out = after.replace(/^\n/, '')
      return before.trim()
    },
    end() {
      child.stdin.end()
      return new Promise((r) => child.on('exit', r))
    },
  }
  return session.run(`SET search_path TO "${schema}"`).then(() => session)
}

/** Appends an event the way the store does: its id from the writing transaction's id. */
function insertEvent(scopeId, user, serial = 1) {
  return `INSERT INTO events (id, scope_id, type, linked_account_id, data, created_at)
          VALUES (pg_current_xact_id()::text::bigint * 65536 + ${serial}, ${scopeId}, 'linked_account.created', '${user}', '{}', ${Date.now()})`
}

function userOf(claimed) {
  return JSON.parse(claimed.body).data.end_user_id
}

/** Runs the `linkvault` command line; resolves with { code, stdout, stderr }. */
function cli(args, env = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI_BIN, ...args], { env: { ...process.env, LINKVAULT_ENCRYPTION_KEY: KEY, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

function lastJson(stdout) {
  return JSON.parse(stdout.trim().split('\n').pop())
}


describe('PostgreSQL: API keys', () => {
  test('create, resolve, issue and resolve access tokens, revoke; scopes kept apart', async () => {
    const schema = newSchema()
    const root = await open(schema)
    const prod = await root.forScope({ orgId: 'org_b', environment: 'production' })
    const key = await prod.createApiKey({ name: 'ci' })
    expect(key.api_key).toMatch(/^pk_[0-9a-f]{64}$/)
    expect(key.client_secret).toMatch(/^lvs_/)
    // Another process (another client on the same schema) resolves it to its scope.
    const other = await open(schema, { orgId: 'someone_else' })
    const found = await other.resolveApiKey(key.api_key)
    expect(found).toMatchObject({ client_id: key.client_id, org_id: 'org_b', environment: 'production', name: 'ci' })
    // A test-prefixed copy of the same secret opens nothing.
    expect(await other.resolveApiKey(`tk_${key.api_key.slice(3)}`)).toBeNull()
    const issued = await other.issueAccessToken({ client_id: key.client_id, client_secret: key.client_secret, audience: 'fiskil' })
    expect(issued.access_token).toMatch(/^lva_/)
    const grant = await root.resolveAccessToken(issued.access_token, 'fiskil')
    expect(grant).toMatchObject({ client_id: key.client_id, org_id: 'org_b', environment: 'production', audience: 'fiskil' })
    expect(await root.resolveAccessToken(issued.access_token, 'auth0')).toBeNull()
    expect(await root.issueAccessToken({ client_id: key.client_id, client_secret: `lvs_${'0'.repeat(64)}`, audience: 'fiskil' })).toBeNull()

    const revoked = await other.revokeApiKey(key.client_id)
    expect(revoked.revoked_at).not.toBeNull()
    expect(await root.resolveApiKey(key.api_key)).toBeNull()
    expect(await root.resolveAccessToken(issued.access_token, 'fiskil')).toBeNull()
    expect(await root.issueAccessToken({ client_id: key.client_id, client_secret: key.client_secret, audience: 'fiskil' })).toBeNull()
    // Revoking twice changes nothing; an unknown key is NOT_FOUND.
    expect((await root.revokeApiKey(key.client_id)).revoked_at).toBe(revoked.revoked_at)
    await expect(root.revokeApiKey('lvc_unknown')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    const listed = await root.listApiKeys({ orgId: 'org_b' })
    expect(listed.map((k) => k.client_id)).toEqual([key.client_id])
    expect(await root.listApiKeys({ environment: 'test' })).toEqual([])
    for (const c of [other, prod, root]) await c.close()
  })

  test('concurrent access-token issues from several clients all land', async () => {
    const schema = newSchema()
    const clients = await Promise.all([open(schema), open(schema), open(schema)])
    const key = await clients[0].createApiKey()
    const issued = await Promise.all(
      Array.from({ length: 30 }, (_, i) => clients[i % 3].issueAccessToken({ client_id: key.client_id, client_secret: key.client_secret, audience: 'a' })),
    )
    const grants = await Promise.all(issued.map((t) => clients[1].resolveAccessToken(t.access_token, 'a')))
    expect(grants.every((g) => g && g.client_id === key.client_id)).toBe(true)
    for (const c of clients) await c.close()
  })
})

describe('PostgreSQL: webhooks', () => {
  test('create, list, deliveries: claim → attempt → retry → delivered, in order per end user; delete', async () => {
    const schema = newSchema()
    const c = await open(schema)
    const { id, secret } = await c.createWebhook({ url: 'https://h.example/hook' })
    expect(secret).toMatch(/^whsec_/)
    const db = await psql(schema)
    const scopeId = Number(await db.run(`SELECT id FROM scopes WHERE org_id = 'org_pg'`))
    await db.run(`BEGIN; ${insertEvent(scopeId, 'u1', 1)}; ${insertEvent(scopeId, 'u2', 2)}; ${insertEvent(scopeId, 'u1', 3)}; COMMIT`)
    const first = await c.claimWebhookDeliveries({ limit: 10, lease_ms: 60000 })
    // One head per end user: u1's second event waits for its first.
    expect(first.map(userOf).sort()).toEqual(['u1', 'u2'])
    expect(first.every((d) => d.attempt === 1)).toBe(true)
    expect(await c.claimWebhookDeliveries({ limit: 10 })).toEqual([])
    const u1 = first.find((d) => userOf(d) === 'u1')
    const u2 = first.find((d) => userOf(d) === 'u2')
    const failed = await c.recordWebhookAttempt(u1.id, { attempt: 1, status: 500, retry_base_ms: 1 })
    expect(failed).toMatchObject({ state: 'pending', attempts: 1, last_status: 500 })
    await c.recordWebhookAttempt(u2.id, { attempt: 1, status: 204 })
    await new Promise((r) => setTimeout(r, 10))
    const retry = await c.claimWebhookDeliveries({ limit: 10 })
    expect(retry).toHaveLength(1)
    expect(retry[0]).toMatchObject({ id: u1.id, message_id: u1.message_id, body: u1.body, attempt: 2 })
    // A stale outcome (attempt 1) changes nothing; the current one delivers.
    expect((await c.recordWebhookAttempt(u1.id, { attempt: 1, status: 200 })).state).toBe('pending')
    expect((await c.recordWebhookAttempt(u1.id, { attempt: 2, status: 200 })).state).toBe('delivered')
    const next = await c.claimWebhookDeliveries({ limit: 10 })
    expect(next.map(userOf)).toEqual(['u1'])
    expect(BigInt(next[0].message_id) > BigInt(u1.message_id)).toBe(true)
    const [listed] = await c.listWebhooks()
    expect(listed).toMatchObject({ id, url: 'https://h.example/hook', pending: 1, failed: 0 })
    const delivered = await c.listWebhookDeliveries(id, { state: 'delivered' })
    expect(delivered.deliveries.map((d) => d.attempts).sort()).toEqual([1, 2])
    expect(await c.deleteWebhook(id)).toMatchObject({ id })
    await expect(c.listWebhookDeliveries(id)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await expect(c.deleteWebhook(id)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await db.end()
    await c.close()
  })

  test('an event whose transaction commits after a later event is still delivered, first', async () => {
    const schema = newSchema()
    const c = await open(schema)
    const { id } = await c.createWebhook({ url: 'https://h.example/hook' })
    const slow = await psql(schema)
    const fast = await psql(schema)
    const scopeId = Number(await fast.run(`SELECT id FROM scopes WHERE org_id = 'org_pg'`))
    // The slow transaction takes its id (and so its event's) first, and commits last.
    await slow.run(`BEGIN; ${insertEvent(scopeId, 'same_user')}`)
    await fast.run(insertEvent(scopeId, 'same_user'))
    expect(await c.claimWebhookDeliveries({ limit: 10 })).toEqual([])
    await slow.run('COMMIT')
    const claimed = await c.claimWebhookDeliveries({ limit: 10 })
    // Same end user: the earlier id is the head, and the later one waits for it.
    expect(claimed).toHaveLength(1)
    await c.recordWebhookAttempt(claimed[0].id, { attempt: 1, status: 200 })
    const second = await c.claimWebhookDeliveries({ limit: 10 })
    expect(second).toHaveLength(1)
    expect(BigInt(second[0].message_id) > BigInt(claimed[0].message_id)).toBe(true)
    const all = await c.listWebhookDeliveries(id)
    expect(all.deliveries).toHaveLength(2)
    await slow.end()
    await fast.end()
    await c.close()
  })
})

describe('PostgreSQL: admin', () => {
  test('stats and listSigningKeys; backup answers VALIDATION_ERROR (use pg_dump)', async () => {
    const c = await open(newSchema())
    const before = await c.stats()
    expect(before).toMatchObject({ accounts: 0, identities: 0, consents: 0, tokens: 0, wal_bytes: 0 })
    expect(before.database_bytes).toBeGreaterThan(0)
    const { kid } = await c.rotateSigningKey()
    const after = await c.stats()
    expect(after.events).toBe(before.events + 1)
    const keys = await c.listSigningKeys()
    expect(keys.map((k) => k.current)).toEqual([false, true])
    expect(keys[1].kid).toBe(kid)
    await expect(c.backup('/tmp/never-written.db')).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'destPath', message: expect.stringMatching(/pg_dump/) })
    await c.close()
  })
})

describe('linkvault serve --url and the keys/webhooks commands on PostgreSQL', () => {
  test('keys create/list/revoke and webhooks create/list/delete --url', async () => {
    const schema = newSchema()
    const url = pgUrl()
    const created = await cli(['keys', 'create', '--url', url, '--schema', schema, '--org', 'org_cli', '--name', 'n1'])
    expect(created.code).toBe(0)
    const key = lastJson(created.stdout)
    expect(key.api_key).toMatch(/^tk_/)
    const listed = await cli(['keys', 'list', '--url', url, '--schema', schema, '--json'])
    expect(lastJson(listed.stdout).map((k) => k.client_id)).toEqual([key.client_id])
    // The key is in the schema named by the URL.
    const c = await open(schema)
    expect(await c.resolveApiKey(key.api_key)).toMatchObject({ org_id: 'org_cli' })
    const revoked = await cli(['keys', 'revoke', key.client_id, '--url', url, '--schema', schema])
    expect(revoked.code).toBe(0)
    expect(await c.resolveApiKey(key.api_key)).toBeNull()

    const wh = await cli(['webhooks', 'create', '--url', url, '--schema', schema, '--org', 'org_cli', '--url', 'https://h.example/in'])
    expect(wh.code).toBe(0)
    const { id, secret } = lastJson(wh.stdout)
    expect(secret).toMatch(/^whsec_/)
    const whList = await cli(['webhooks', 'list', '--url', url, '--schema', schema, '--json'])
    expect(lastJson(whList.stdout).map((w) => w.id)).toEqual([id])
    expect((await cli(['webhooks', 'delete', id, '--url', url, '--schema', schema])).code).toBe(0)
    expect(await c.listWebhooks()).toEqual([])
    await c.close()
  })

  test('serve --url: /healthz, /readyz; a Cobalt route writes and reads an account there', async () => {
    const schema = newSchema()
    const url = pgUrl()
    const key = lastJson((await cli(['keys', 'create', '--url', url, '--schema', schema, '--org', 'org_srv'])).stdout)
    const child = spawn(process.execPath, [SERVER_BIN, 'serve', '--url', url, '--schema', schema, '--port', '0'], {
      env: { ...process.env, LINKVAULT_ENCRYPTION_KEY: KEY, LINKVAULT_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    const exited = new Promise((r) => child.on('exit', (code) => r(code)))
    try {
      const base = await new Promise((resolve, reject) => {
        child.stdout.on('data', (d) => {
          stdout += d
          const m = /listening on (http:\/\/\S+)/.exec(stdout)
          if (m) resolve(m[1])
        })
        exited.then((code) => reject(new Error(`serve exited (${code}): ${stderr}`)))
      })
      expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: 'ok' })
      const ready = await fetch(`${base}/readyz`)
      expect(ready.status).toBe(200)
      const res = await fetch(`${base}/api/v2/public/linked-account`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': key.api_key },
        body: JSON.stringify({ linked_account_id: 'u1', name: 'Ann' }),
      })
      // The API key was resolved on PostgreSQL (a wrong one is 401), the account written there.
      expect(res.status).toBe(200)
      expect(await res.json()).toMatchObject({ account_id: 'u1', name: 'Ann', __v: 0 })
      const got = await fetch(`${base}/api/v2/public/linked-account/u1`, { headers: { 'x-api-key': key.api_key } })
      expect(got.status).toBe(200)
      expect(await got.json()).toMatchObject({ account_id: 'u1', name: 'Ann' })
      const wrong = await fetch(`${base}/api/v2/public/linked-account`, { headers: { 'x-api-key': `tk_${'0'.repeat(64)}` } })
      expect(wrong.status).toBe(401)
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)
  })

  test('serve --url waits for PostgreSQL, then fails in one line with exit code 1', async () => {
    const started = Date.now()
    const out = await new Promise((resolve) => {
      const child = spawn(process.execPath, [SERVER_BIN, 'serve', '--url', 'postgres://nobody:secret-pw@127.0.0.1:1/db', '--port', '0', '--wait', '1'], {
        env: { ...process.env, LINKVAULT_ENCRYPTION_KEY: KEY, LINKVAULT_LOG_LEVEL: 'error' },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let stderr = ''
      child.stderr.on('data', (d) => (stderr += d))
      child.on('exit', (code) => resolve({ code, stderr }))
    })
    expect(out.code).toBe(1)
    const lines = out.stderr.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^linkvault serve: STORAGE_ERROR: .*127\.0\.0\.1:1.*waited 1 s/)
    expect(out.stderr).not.toContain('secret-pw')
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000)
    // A bad value is a usage error (exit 2), before any connection.
    const bad = await new Promise((resolve) => {
      const child = spawn(process.execPath, [SERVER_BIN, 'serve', '--url', pgUrl(), '--wait', 'soon'], { env: { ...process.env, LINKVAULT_ENCRYPTION_KEY: KEY }, stdio: ['ignore', 'pipe', 'pipe'] })
      let stderr = ''
      child.stderr.on('data', (d) => (stderr += d))
      child.on('exit', (code) => resolve({ code, stderr }))
    })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--wait must be an integer/)
  })
})

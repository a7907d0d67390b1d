// The PostgreSQL store: opening, errors, and what must hold across processes (revocation
// within a second, concurrent writers, a server restart). The server is the suites' throwaway
// one (pg-global.js), or a private one for the restart test.
const { execFile, spawn } = require('node:child_process')
const path = require('node:path')
const readline = require('node:readline')
const jwt = require('jsonwebtoken')
const { Client, openClient, pgUrl, newSchema, newKey, KEY } = require('./helpers')
const { startKeeper } = require('./pg-global')

const SECRET = 'a-postgres-signing-secret-of-32-bytes!!'

function run(fixture, args) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(__dirname, 'fixtures', fixture), ...args], (err, stdout, stderr) => {
      if (err) reject(new Error(`${fixture} failed: ${stderr || err.message}`))
      else resolve(stdout.trim().split('\n').map((l) => JSON.parse(l)))
    })
  })
}

async function secretKid(client) {
  const { events } = await client.listEvents({ types: ['signing_key.added'] })
  return events.find((e) => e.data.reason === 'signingSecret').data.kid
}

function externalToken(kid, jti) {
  const now = Math.floor(Date.now() / 1000)
  return jwt.sign(
    { org_id: 'org_pg', linked_account_id: 'u1', environment: 'test', iat: now - 1, exp: now + 600, jti },
    SECRET,
    { algorithm: 'HS256', keyid: kid },
  )
}

describe('PostgreSQL store', () => {
  test('open: url with path, another scheme, no key, bad schema or poolSize are VALIDATION_ERRORs', async () => {
    const cases = [
      [{ url: pgUrl(), path: 'x.db', encryptionKey: KEY }, 'url'],
      [{ url: 'mysql://user:pw@localhost/db', encryptionKey: KEY }, 'url'],
      [{ url: 'postgres://user:pw@localhost/db?sslmode=verify-full', encryptionKey: KEY }, 'url'],
      [{ url: pgUrl(), encryptionKey: KEY, schema: 'no spaces' }, 'schema'],
      [{ url: pgUrl(), encryptionKey: KEY, poolSize: 0 }, 'poolSize'],
      [{ url: pgUrl(), encryptionKey: KEY, poolSize: 101 }, 'poolSize'],
      [{ path: 'x.db', schema: 'linkvault' }, 'schema'],
    ]
    if (!process.env.LINKVAULT_ENCRYPTION_KEY) cases.push([{ url: pgUrl() }, 'encryptionKey'])
    for (const [options, field] of cases) {
      await expect(Client.open(options)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
    }
  })

  test('a server that is down: STORAGE_ERROR 503 naming host and port, never the password', async () => {
    const err = await Client.open({ url: 'postgresql://app:s3cr3t-pw@127.0.0.1:1/db?connect_timeout=2', encryptionKey: KEY }).catch((e) => e)
    expect(err).toMatchObject({ code: 'STORAGE_ERROR', status: 503 })
    expect(err.message).toContain('127.0.0.1:1')
    expect(err.message).not.toContain('s3cr3t-pw')
  })

  test('a wrong key is DECRYPTION_FAILED; the schema is created, and reused by a second client', async () => {
    const schema = newSchema()
    const a = await openClient({ store: 'postgres', schema, orgId: 'org_pg' })
    const b = await openClient({ store: 'postgres', schema, orgId: 'org_pg' })
    expect(a.orgId).toBe('org_pg')
    await a.close()
    await b.close()
    await expect(openClient({ store: 'postgres', schema, encryptionKey: newKey() })).rejects.toMatchObject({ code: 'DECRYPTION_FAILED' })
  })

  test('a revocation in one process is honoured by another within a second (lag measured)', async () => {
    const schema = newSchema()
    const a = await openClient({ store: 'postgres', schema, orgId: 'org_pg', signingSecret: SECRET })
    const kid = await secretKid(a)
    const lags = []
    for (let i = 0; i < 3; i++) {
      const token = externalToken(kid, `pg-${i}`)
      expect(a.verifySessionTokenSync(token).jti).toBe(`pg-${i}`)
      const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'pg-verifier.js'), pgUrl(), schema, KEY, token], {
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      const lines = readline.createInterface({ input: child.stdout })
      const next = () => new Promise((resolve) => lines.once('line', (l) => resolve(JSON.parse(l))))
      expect(await next()).toEqual({ ready: true })
      const seen = next()
      await a.revokeSessionToken(token)
      const revokedAt = Date.now()
      // At once in the revoking client.
      expect(() => a.verifySessionTokenSync(token)).toThrow(expect.objectContaining({ code: 'TOKEN_REVOKED' }))
      const report = await seen
      expect(report.code).toBe('TOKEN_REVOKED')
      lags.push(report.revokedSeenAt - revokedAt)
      await new Promise((r) => child.once('exit', r))
    }
    console.log(`revocation lag to another process (ms): ${lags.join(', ')}`)
    for (const lag of lags) expect(lag).toBeLessThan(1000)
    await a.close()
  })

  test('several processes writing at once: every write lands once (conflicts retried inside)', async () => {
    const schema = newSchema()
    const a = await openClient({ store: 'postgres', schema, orgId: 'org_pg' })
    const outs = await Promise.all([0, 1, 2].map(() => run('pg-key-writer.js', [pgUrl(), schema, KEY, '15'])))
    const kids = outs.flatMap((o) => o[0].kids)
    expect(new Set(kids).size).toBe(45)
    const { events } = await a.listEvents({ types: ['signing_key.added'], limit: 1000 })
    const added = new Set(events.map((e) => e.data.kid))
    for (const kid of kids) expect(added.has(kid)).toBe(true)
    // Event ids only grow, with no duplicate.
    const ids = events.map((e) => e.id)
    expect([...ids].sort((x, y) => x - y)).toEqual(ids)
    expect(new Set(ids).size).toBe(ids.length)
    await a.close()
  })

  test('a server restart: calls meanwhile fail with STORAGE_ERROR, later ones work without reopening', async () => {
    const keeper = await startKeeper()
    try {
      const url = keeper.url
      const c = await Client.open({ url, encryptionKey: KEY, orgId: 'org_pg', poolSize: 2 })
      const before = await c.rotateSigningKey()
      await keeper.send('stop')
      const err = await c.rotateSigningKey().catch((e) => e)
      expect(err).toMatchObject({ code: 'STORAGE_ERROR', status: 503 })
      await keeper.send('start')
      const after = await c.rotateSigningKey()
      const { events } = await c.listEvents({ types: ['signing_key.added'] })
      const kids = events.map((e) => e.data.kid)
      // The acknowledged writes, before and after, are there.
      expect(kids).toEqual(expect.arrayContaining([before.kid, after.kid]))
      await c.close()
    } finally {
      await keeper.close()
    }
  })
})

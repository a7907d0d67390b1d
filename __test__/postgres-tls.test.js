// TLS to PostgreSQL per the URL's `sslmode`, as libpq users expect: `require` encrypts or
// fails, `prefer` encrypts when the server offers it, `disable` never does. Checked from the
// server's side (pg_stat_ssl) on a private server with TLS on, and against the suites' server
// without TLS.
const { execFileSync } = require('node:child_process')
const path = require('node:path')
const { Client, KEY, pgUrl } = require('./helpers')
const { startKeeper } = require('./pg-global')

/** The TLS flag of every server connection whose application_name is `app` (psql, as the superuser). */
function sslOf(keeper, app) {
  const out = execFileSync(
    path.join(keeper.bin, 'psql'),
    ['-h', '127.0.0.1', '-p', String(keeper.port), '-U', 'postgres', '-d', 'postgres', '-Atc',
      `SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '${app}'`],
    { encoding: 'utf8' },
  )
  return out.split('\n').filter(Boolean).map((v) => v === 't')
}

function withParams(url, params) {
  const u = new URL(url)
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v)
  return u.toString()
}

describe('PostgreSQL TLS (sslmode)', () => {
  let keeper
  beforeAll(async () => {
    keeper = await startKeeper(['--ssl'])
  })
  afterAll(async () => {
    if (keeper) await keeper.close()
  })

  test.each([
    ['require', true],
    ['prefer', true],
    ['disable', false],
  ])('sslmode=%s on a server with TLS: every pooled connection is encrypted = %s', async (mode, encrypted) => {
    const app = `lv_tls_${mode}`
    const url = withParams(keeper.url, { sslmode: mode, application_name: app })
    const c = await Client.open({ url, schema: `tls_${mode}`, encryptionKey: KEY, orgId: 'org_tls', poolSize: 2 })
    // Work that holds connections open: the verifier's listener and the pool's workers.
    await c.rotateSigningKey()
    await c.listEvents()
    const flags = sslOf(keeper, app)
    expect(flags.length).toBeGreaterThan(0)
    expect(flags.every((f) => f === encrypted)).toBe(true)
    await c.close()
  })

  test('sslmode=require on a server without TLS: STORAGE_ERROR 503 naming the server, never the password', async () => {
    const url = new URL(pgUrl())
    url.password = 'pw-that-must-not-leak'
    url.searchParams.set('sslmode', 'require')
    const err = await Client.open({ url: url.toString(), encryptionKey: KEY, orgId: 'org_tls' }).catch((e) => e)
    expect(err).toMatchObject({ code: 'STORAGE_ERROR', status: 503 })
    expect(err.message).toContain(`${url.hostname}:${url.port}`)
    expect(err.message).not.toContain('pw-that-must-not-leak')
    expect(JSON.stringify(err)).not.toContain('pw-that-must-not-leak')
  })

  test('sslmode=prefer on a server without TLS connects unencrypted', async () => {
    const url = withParams(pgUrl(), { sslmode: 'prefer' })
    const c = await Client.open({ url, schema: 'tls_prefer_plain', encryptionKey: KEY, orgId: 'org_tls' })
    await expect(c.rotateSigningKey()).resolves.toMatchObject({ kid: expect.any(String) })
    await c.close()
  })
})

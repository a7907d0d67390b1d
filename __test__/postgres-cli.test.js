// The admin command line on a PostgreSQL store (--url, --schema): stats, check, export and
// import, rotate-key, and backup refused (pg_dump).
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { Client, pgUrl, newSchema, newKey } = require('./helpers')

const BIN = path.join(__dirname, '..', 'bin', 'linkvault.js')
const { LINKVAULT_ENCRYPTION_KEY, LINKVAULT_NEW_ENCRYPTION_KEY, ...baseEnv } = process.env

function cli(args, env = {}, input) {
  const out = spawnSync(process.execPath, [BIN, ...args], { env: { ...baseEnv, ...env }, input, encoding: 'utf8' })
  return { code: out.status, stdout: out.stdout, stderr: out.stderr }
}

test('stats, check, export, import and rotate-key work on --url --schema; backup points to pg_dump', async () => {
  const schema = newSchema()
  const key = newKey()
  const c = await Client.open({ url: pgUrl(), schema, encryptionKey: key, orgId: 'org_cli' })
  await c.upsertLinkedAccount({ linked_account_id: 'ann', name: 'Ann', udf: { plan: 'pro' }, your_app: { app_id: 'a', auth_credentials: { t: 'ann-secret' } } })
  await c.upsertLinkedAccount({ linked_account_id: 'bob', name: 'Bob' })
  await c.close()
  const where = ['--url', pgUrl(), '--schema', schema, '--org', 'org_cli']
  const env = { LINKVAULT_ENCRYPTION_KEY: key }

  // Without a key: one line, exit 1.
  const nokey = cli(['stats', ...where])
  expect(nokey.code).toBe(1)
  expect(nokey.stderr).toMatch(/no encryption key for the PostgreSQL store/)

  const stats = cli(['stats', ...where, '--json'], env)
  expect(stats.code).toBe(0)
  expect(JSON.parse(stats.stdout)).toMatchObject({ accounts: 2 })

  const check = cli(['check', '--url', pgUrl(), '--schema', schema, '--json'], env)
  expect(check.code).toBe(0)
  expect(JSON.parse(check.stdout)).toEqual({ ok: true, details: [] })

  const exported = cli(['export', ...where, '--with-credentials'], env)
  expect(exported.code).toBe(0)
  const lines = exported.stdout.trim().split('\n').map((l) => JSON.parse(l))
  expect(lines[0]).toMatchObject({ type: 'linkvault.export', org_id: 'org_cli' })
  expect(lines.slice(1).map((l) => l.account.account_id).sort()).toEqual(['ann', 'bob'])

  // Into another schema, then read back through a client.
  const other = newSchema()
  const imported = cli(['import', '--url', pgUrl(), '--schema', other, '--org', 'org_cli'], env, exported.stdout)
  expect(imported.code).toBe(0)
  const d = await Client.open({ url: pgUrl(), schema: other, encryptionKey: key, orgId: 'org_cli' })
  expect((await d.getLinkedAccountCredentials('ann')).auth_credentials).toEqual({ t: 'ann-secret' })
  await d.close()

  const next = newKey()
  const rotated = cli(['rotate-key', ...where, '--json'], { ...env, LINKVAULT_NEW_ENCRYPTION_KEY: next })
  expect(rotated.code).toBe(0)
  expect(JSON.parse(rotated.stdout)).toMatchObject({ resumed: false })
  const e = await Client.open({ url: pgUrl(), schema, encryptionKey: next, orgId: 'org_cli' })
  expect((await e.getLinkedAccountCredentials('ann')).auth_credentials).toEqual({ t: 'ann-secret' })
  await e.close()

  const backup = cli(['backup', '/tmp/never.db', ...where], { LINKVAULT_ENCRYPTION_KEY: next })
  expect(backup.code).toBe(2)
  expect(backup.stderr).toMatch(/back up a PostgreSQL store with pg_dump/)
})

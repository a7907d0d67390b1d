// The `linkvault` command line, run as a user runs it: a child process per command.
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { Client } = require('..')
const { tmpDir, newKey } = require('./helpers')

const root = path.join(__dirname, '..')
const BIN = path.join(root, 'bin', 'linkvault.js')
const { LINKVAULT_ENCRYPTION_KEY, LINKVAULT_NEW_ENCRYPTION_KEY, ...baseEnv } = process.env

/** Runs `linkvault ...args`; `preload` is a module required first (to fake the server package). */
function cli(args, { env = {}, cwd = root, input, preload } = {}) {
  const node = preload ? ['-r', preload] : []
  const out = spawnSync(process.execPath, [...node, BIN, ...args], { cwd, env: { ...baseEnv, ...env }, input, encoding: 'utf8' })
  return { code: out.status, stdout: out.stdout, stderr: out.stderr }
}

/** A preload that makes `linkvault-server/cli` resolve to `target` (or be missing when null). */
function serverPreload(target) {
  const file = path.join(tmpDir(), 'server-preload.js')
  fs.writeFileSync(
    file,
    `const Module = require('node:module')
     const resolve = Module._resolveFilename
     Module._resolveFilename = function (request, ...rest) {
       if (request === 'linkvault-server/cli') {
         ${target === null ? "const e = new Error(\"Cannot find module 'linkvault-server/cli'\"); e.code = 'MODULE_NOT_FOUND'; throw e" : `return ${JSON.stringify(target)}`}
       }
       return resolve.call(this, request, ...rest)
     }`,
  )
  return file
}

/** A test database with accounts, identities and credentials; its key is in <db>.key. */
async function seeded(dir = tmpDir()) {
  const db = path.join(dir, 'cli.db')
  const client = await Client.open({ path: db, orgId: 'org_cli' })
  await client.upsertLinkedAccount({ linked_account_id: 'ann', name: 'Ann', udf: { plan: 'pro', seats: 3 }, your_app: { app_id: 'app_1', auth_credentials: { Authorization: 'Bearer ann-secret' } } })
  await client.upsertLinkedAccount({ linked_account_id: 'bob', your_app: { auth_credentials: { token: 'bob-secret' } } })
  await client.upsertLinkedAccount({ linked_account_id: 'cy' })
  await client.linkIdentity('ann', { provider: 'github', user_id: 7, email: 'ann@example.com', email_verified: true, profileData: { login: 'ann' } })
  await client.close()
  return { dir, db }
}

describe('dispatch, help and usage errors', () => {
  test('--help lists every command; each command has its own --help', () => {
    const help = cli(['--help'])
    expect(help.code).toBe(0)
    for (const c of ['backup', 'check', 'rotate-key', 'stats', 'export', 'import', 'serve', 'keys', 'webhooks']) expect(help.stdout).toMatch(new RegExp(`^  ${c} `, 'm'))
    for (const c of ['backup', 'check', 'rotate-key', 'stats', 'export', 'import']) {
      const h = cli([c, '--help'])
      expect([c, h.code, h.stderr]).toEqual([c, 0, ''])
      expect(h.stdout).toMatch(new RegExp(`^Usage: linkvault ${c}`))
      expect(h.stdout).toMatch(/--db PATH/)
      expect(h.stdout).toMatch(/--url URL/)
      expect(cli(['help', c]).stdout).toBe(h.stdout)
    }
    expect(cli(['--version']).stdout.trim()).toBe(require('../package.json').version)
  })

  test('no command prints the help on stderr and exits 2', () => {
    const r = cli([])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/^Usage: linkvault <command>/)
  })

  test.each([
    [['frobnicate'], /^linkvault frobnicate: unknown command 'frobnicate'/],
    [['backup', '--nope', 'x.db'], /^linkvault backup: Unknown option '--nope'$/],
    [['stats', '--db'], /^linkvault stats: Option '--db <value>' argument missing$/],
    [['backup'], /^linkvault backup: missing DEST$/],
    [['check', 'extra'], /^linkvault check: unexpected argument 'extra'$/],
    [['stats', '--url', 'mysql://x'], /^linkvault stats: --url must be a postgres:\/\/ or postgresql:\/\/ URL$/],
    [['stats', '--schema', 's'], /^linkvault stats: --schema names a PostgreSQL schema: it needs --url$/],
    [['check', '--db', 'x.db', '--url', 'postgres://h/db'], /^linkvault check: give either --db or --url, not both$/],
    [['backup', 'x.db', '--url', 'postgres://h/db'], /^linkvault backup: backup copies a SQLite file; back up a PostgreSQL store with pg_dump$/],
    [['stats', '--environment', 'staging'], /^linkvault stats: --environment must be 'test' or 'production'/],
  ])('%j is a usage error: one line on stderr, exit 2', (args, message) => {
    const r = cli(args)
    expect(r.code).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr.split('\n')).toHaveLength(2) // one line and its newline
    expect(r.stderr.trim()).toMatch(message)
  })

  test('serve, keys and webhooks without linkvault-server: one line saying how to get it, exit 1', () => {
    const preload = serverPreload(null)
    for (const c of ['serve', 'keys', 'webhooks']) {
      const r = cli([c, '--port', '0'], { preload })
      expect(r.code).toBe(1)
      expect(r.stderr.trim().split('\n')).toHaveLength(1)
      expect(r.stderr).toMatch(new RegExp(`^linkvault ${c}: '${c}' is part of the linkvault-server package, which is not installed: npm install linkvault-server`))
    }
    expect(cli(['--help'], { preload }).stdout).toMatch(/serve +serve .*\(needs linkvault-server\)/)
  })

  test("serve, keys and webhooks are routed to linkvault-server/cli's command modules", () => {
    const fake = path.join(tmpDir(), 'fake-server-cli.js')
    fs.writeFileSync(
      fake,
      `const cmd = (name) => ({
         summary: 'fake ' + name,
         usage: 'Usage: linkvault ' + name + ' (fake)\\n',
         async run(argv) { console.log(JSON.stringify({ name, argv })); return name === 'keys' ? 3 : 0 },
       })
       module.exports = { serve: cmd('serve'), keys: cmd('keys'), webhooks: cmd('webhooks') }`,
    )
    const preload = serverPreload(fake)
    expect(JSON.parse(cli(['serve', '--port', '0'], { preload }).stdout)).toEqual({ name: 'serve', argv: ['--port', '0'] })
    const keys = cli(['keys', 'create', '--org', 'o'], { preload })
    expect(keys.code).toBe(3)
    expect(JSON.parse(keys.stdout)).toEqual({ name: 'keys', argv: ['create', '--org', 'o'] })
    expect(cli(['--help'], { preload }).stdout).toMatch(/^ {2}webhooks +fake webhooks$/m)
  })

  test('npx linkvault --help works from the repository root', () => {
    const r = spawnSync('npx', ['--no-install', 'linkvault', '--help'], { cwd: root, encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/^Usage: linkvault <command>/)
  })
})

describe('commands on a database', () => {
  test('stats and check', async () => {
    const { db } = await seeded()
    const stats = cli(['stats', '--db', db, '--org', 'org_cli', '--json'])
    expect(stats.stderr).toBe('')
    expect(JSON.parse(stats.stdout)).toMatchObject({ org_id: 'org_cli', environment: 'test', accounts: 3, identities: 1 })
    const table = cli(['stats', '--db', db, '--org', 'org_cli'])
    expect(table.stdout).toMatch(/^accounts +3$/m)
    const check = cli(['check', '--db', db, '--org', 'org_cli'])
    expect([check.code, check.stdout, check.stderr]).toEqual([0, 'ok\n', ''])
    expect(JSON.parse(cli(['check', '--db', db, '--org', 'org_cli', '--json']).stdout)).toEqual({ ok: true, details: [] })
  })

  test('a missing database or key is one line and exit 1; the key is never generated', async () => {
    const dir = tmpDir()
    const missing = cli(['check', '--db', path.join(dir, 'none.db')])
    expect(missing.code).toBe(1)
    expect(missing.stderr.trim()).toMatch(/^linkvault check: no database at .*none\.db \(use --db PATH\)$/)
    const { db } = await seeded(dir)
    fs.renameSync(`${db}.key`, path.join(dir, 'moved.key'))
    const noKey = cli(['stats', '--db', db])
    expect(noKey.code).toBe(1)
    expect(noKey.stderr.trim()).toMatch(/^linkvault stats: no encryption key for .*: set LINKVAULT_ENCRYPTION_KEY or pass --key-file FILE$/)
    expect(fs.existsSync(`${db}.key`)).toBe(false)
    expect(cli(['stats', '--db', db, '--org', 'org_cli', '--key-file', path.join(dir, 'moved.key')]).code).toBe(0)
    const key = fs.readFileSync(path.join(dir, 'moved.key'), 'utf8').trim()
    expect(cli(['stats', '--db', db, '--org', 'org_cli'], { env: { LINKVAULT_ENCRYPTION_KEY: key } }).code).toBe(0)
    const wrong = cli(['stats', '--db', db], { env: { LINKVAULT_ENCRYPTION_KEY: newKey() } })
    expect(wrong.code).toBe(1)
    expect(wrong.stderr.trim()).toMatch(/^linkvault stats: DECRYPTION_FAILED: /)
  })

  test('backup DEST writes a copy that opens; an existing DEST is refused', async () => {
    const { dir, db } = await seeded()
    const dest = path.join(dir, 'copy.db')
    const r = cli(['backup', dest, '--db', db, '--org', 'org_cli'])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(new RegExp(`^backup written: ${dest.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(\\d+ bytes, \\d+ pages, \\d+ ms\\)\\n$`))
    fs.copyFileSync(`${db}.key`, `${dest}.key`)
    expect(JSON.parse(cli(['stats', '--db', dest, '--org', 'org_cli', '--json']).stdout).accounts).toBe(3)
    const again = cli(['backup', dest, '--db', db, '--org', 'org_cli'])
    expect(again.code).toBe(1)
    expect(again.stderr.trim()).toMatch(/^linkvault backup: VALIDATION_ERROR: .*already exists/)
  })

  test('rotate-key re-encrypts with a progress bar on a terminal, and the file keeps opening', async () => {
    const { dir, db } = await seeded()
    const next = newKey()
    // stderr is a pipe here: no progress bar.
    const plain = cli(['rotate-key', '--db', db, '--org', 'org_cli'], { env: { LINKVAULT_NEW_ENCRYPTION_KEY: next } })
    expect(plain.stderr).toBe('')
    expect(plain.stdout).toMatch(/^finished: 3 sealed values re-encrypted in \d+ batches; new key id [0-9a-f]{16}\n$/)
    expect(fs.readFileSync(`${db}.key`, 'utf8').trim()).toBe(next) // <db>.key now holds the new key
    expect(fs.existsSync(`${db}.key.next`)).toBe(false)
    expect(cli(['check', '--db', db, '--org', 'org_cli']).stdout).toBe('ok\n')
    // The same with stderr a terminal: a bar drawn with carriage returns, ending at 100%.
    const third = path.join(dir, 'third.key')
    fs.writeFileSync(third, newKey())
    const tty = spawnSync(process.execPath, ['-e', `process.stderr.isTTY = true; require(${JSON.stringify(path.join(root, 'cli', 'main'))}).main(process.argv.slice(1)).then((c) => { process.exitCode = c })`, 'rotate-key', '--db', db, '--org', 'org_cli', '--new-key-file', third], { env: baseEnv, encoding: 'utf8' })
    expect(tty.status).toBe(0)
    expect(fs.readFileSync(`${db}.key`, 'utf8')).toBe(fs.readFileSync(third, 'utf8').trim() + '\n')
    expect(cli(['check', '--db', db, '--org', 'org_cli']).stdout).toBe('ok\n')
    expect(tty.stderr).toMatch(/^\rre-encrypting \[-{30}\] {3}0% 0\/3/)
    expect(tty.stderr).toMatch(/\rre-encrypting \[#{30}\] 100% 3\/3\n$/)
    expect(cli(['rotate-key', '--db', db]).stderr.trim()).toMatch(/^linkvault rotate-key: no new key: set LINKVAULT_NEW_ENCRYPTION_KEY or pass --new-key-file FILE$/)

    // A key from the environment is left to the user to change, with a reminder.
    const current = fs.readFileSync(`${db}.key`, 'utf8').trim()
    const fourth = newKey()
    const env = cli(['rotate-key', '--db', db, '--org', 'org_cli'], { env: { LINKVAULT_ENCRYPTION_KEY: current, LINKVAULT_NEW_ENCRYPTION_KEY: fourth } })
    expect(env.code).toBe(0)
    expect(env.stdout).toMatch(/\nLINKVAULT_ENCRYPTION_KEY still holds the old key: set it to the new one before the next open\n$/)
    expect(fs.readFileSync(`${db}.key`, 'utf8').trim()).toBe(current) // untouched
    expect(cli(['check', '--db', db, '--org', 'org_cli'], { env: { LINKVAULT_ENCRYPTION_KEY: fourth } }).stdout).toBe('ok\n')
  })

  test('export writes JSON lines without credentials unless --with-credentials; import reads them back', async () => {
    const { dir, db } = await seeded()
    const plain = cli(['export', '--db', db, '--org', 'org_cli'])
    expect(plain.stderr).toBe('')
    const lines = plain.stdout.trim().split('\n').map((l) => JSON.parse(l))
    expect(lines[0]).toMatchObject({ type: 'linkvault.export', version: 1, org_id: 'org_cli', environment: 'test' })
    expect(lines.slice(1).map((l) => [l.type, l.account.account_id])).toEqual([
      ['linked_account', 'ann'],
      ['linked_account', 'bob'],
      ['linked_account', 'cy'],
    ])
    expect(plain.stdout).not.toMatch(/ann-secret|bob-secret|credentials/)

    const out = path.join(dir, 'full.jsonl')
    const full = cli(['export', '--db', db, '--org', 'org_cli', '--with-credentials', '--out', out])
    expect([full.code, full.stdout, full.stderr]).toEqual([0, '', ''])
    expect(fs.statSync(out).mode & 0o777).toBe(0o600)
    const withCreds = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
    expect(withCreds[1].credentials).toEqual({ app_id: 'app_1', auth_credentials: { Authorization: 'Bearer ann-secret' } })
    expect(withCreds[3].credentials).toBeUndefined() // cy has no your_app

    // Into a new database (created, with its <db>.key) in another organization.
    const copy = path.join(dir, 'imported.db')
    const imp = cli(['import', out, '--db', copy, '--org', 'org_new'])
    expect(imp.stderr).toBe('')
    expect(imp.stdout).toBe('imported 3 linked accounts (3 new) and 1 identities into org_new/test\n')
    const client = await Client.open({ path: copy, orgId: 'org_new' })
    const ann = await client.getLinkedAccountById('ann')
    expect(ann).toMatchObject({ name: 'Ann', your_app: { app_id: 'app_1' } })
    expect(ann.udf.map((u) => [u.key_name, u.key_value])).toEqual([['plan', 'pro'], ['seats', 3]])
    expect(ann.identities).toEqual([expect.objectContaining({ provider: 'github', user_id: '7', email: 'ann@example.com', email_verified: true, profileData: { login: 'ann' } })])
    expect(await client.getLinkedAccountCredentials('bob')).toEqual({ auth_credentials: { token: 'bob-secret' } })
    await client.close()

    // Again from stdin, without credentials: nothing changes, no credentials are dropped.
    const again = cli(['import', '--db', copy, '--org', 'org_new'], { input: plain.stdout })
    expect(again.stdout).toBe('imported 3 linked accounts (0 new) and 1 identities into org_new/test\n')
    const after = await Client.open({ path: copy, orgId: 'org_new' })
    expect((await after.getLinkedAccountById('ann')).__v).toBe(ann.__v)
    expect(await after.getLinkedAccountCredentials('ann')).toEqual({ app_id: 'app_1', auth_credentials: { Authorization: 'Bearer ann-secret' } })
    await after.close()
  })

  test('import stops at the first bad line, naming it', async () => {
    const { dir, db } = await seeded()
    const file = path.join(dir, 'bad.jsonl')
    fs.writeFileSync(file, `${JSON.stringify({ type: 'linked_account', account: { account_id: 'ok1' } })}\nnot json\n`)
    const r = cli(['import', file, '--db', db, '--org', 'org_cli'])
    expect(r.code).toBe(1)
    expect(r.stderr.trim()).toBe('linkvault import: line 2: not JSON')
    fs.writeFileSync(file, `${JSON.stringify({ type: 'linked_account', account: { account_id: 'x', udf: [{ key_name: '', key_value: 1 }] } })}\n`)
    const v = cli(['import', file, '--db', db, '--org', 'org_cli'])
    expect(v.code).toBe(1)
    expect(v.stderr.trim()).toMatch(/^linkvault import: line 1 \(x\): VALIDATION_ERROR: /)
    expect(cli(['import', path.join(dir, 'nope.jsonl'), '--db', db]).stderr.trim()).toMatch(/^linkvault import: cannot read .*nope\.jsonl: ENOENT$/)
  })
})

'use strict'
// `linkvault webhooks create|list|delete|deliveries`: output, strict parsing (one-line error,
// exit code 2), and errors from the store (exit code 1).

const { spawnSync } = require('node:child_process')
const path = require('node:path')

const { Client } = require('linkvault')
const { BIN, tempDir, cli } = require('./webhook-helpers')
const { storeArgs } = require('./helpers')
const { storeOptions } = require('../../__test__/helpers')

function lastJson(stdout) {
  return JSON.parse(stdout.trim().split('\n').pop())
}

function expectUsageError(out, pattern) {
  expect(out.code).toBe(2)
  expect(out.stdout).toBe('')
  expect(out.stderr.trim().split('\n')).toHaveLength(1)
  expect(out.stderr).toMatch(/^linkvault webhooks: /)
  if (pattern) expect(out.stderr).toMatch(pattern)
}

describe('linkvault webhooks', () => {
  let db // Client.open options of the store
  let args // its flags
  // Production scopes need an encryption key (no key file outside 'test'); the commands run in
  // this process, so they read it from its environment.
  const savedKey = process.env.LINKVAULT_ENCRYPTION_KEY

  beforeAll(() => {
    db = storeOptions({ dir: tempDir('lv-webhooks-cli-'), name: 'cli.db' })
    args = storeArgs(db)
    process.env.LINKVAULT_ENCRYPTION_KEY = require('node:crypto').randomBytes(32).toString('hex')
  })

  afterAll(() => {
    if (savedKey === undefined) delete process.env.LINKVAULT_ENCRYPTION_KEY
    else process.env.LINKVAULT_ENCRYPTION_KEY = savedKey
  })

  test('--help for the command and every subcommand', async () => {
    for (const argv of [['--help'], ['-h'], ['create', '--help'], ['list', '--help'], ['delete', '--help'], ['deliveries', '--help']]) {
      const out = await cli('webhooks', argv)
      expect(out.code).toBe(0)
      expect(out.stdout).toContain('linkvault webhooks create')
      expect(out.stdout).toContain('linkvault webhooks deliveries ID')
      expect(out.stdout).toContain('x-linkvault-signature')
    }
  })

  test('create prints {"id","secret"} last; list shows it without the secret; delete removes it', async () => {
    const a = await cli('webhooks', ['create', ...args, '--org', 'org_a', '--url', 'https://hooks.example/a', '--events', 'consent.received, consent.revoked'])
    expect(a.code).toBe(0)
    const created = lastJson(a.stdout)
    expect(Object.keys(created)).toEqual(['id', 'secret'])
    expect(created.id).toMatch(/^wh_[0-9a-f]{24}$/)
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/)
    expect(a.stderr).not.toContain(created.secret)
    const b = await cli('webhooks', ['create', ...args, '--org', 'org_b', '--environment', 'production', '--url', 'https://hooks.example/b'])
    expect(b.code).toBe(0)
    const other = lastJson(b.stdout)

    const table = await cli('webhooks', ['list', ...args])
    expect(table.code).toBe(0)
    const lines = table.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^id\s+org\s+environment\s+url\s+events\s+pending\s+failed\s+created_at$/)
    expect(lines[1]).toMatch(new RegExp(`^${created.id}\\s+org_a\\s+test\\s+https://hooks.example/a\\s+consent.received,consent.revoked\\s+0\\s+0\\s+`))
    expect(lines[2]).toMatch(new RegExp(`^${other.id}\\s+org_b\\s+production\\s+https://hooks.example/b\\s+\\*\\s+0\\s+0\\s+`))
    expect(table.stdout).not.toContain('whsec_')

    const onlyB = JSON.parse((await cli('webhooks', ['list', ...args, '--org', 'org_b', '--json'])).stdout)
    expect(onlyB).toEqual([expect.objectContaining({ id: other.id, org_id: 'org_b', environment: 'production', events: null, pending: 0, failed: 0 })])
    expect(JSON.parse((await cli('webhooks', ['list', ...args, '--environment', 'test', '--json'])).stdout).map((w) => w.id)).toEqual([created.id])

    const empty = await cli('webhooks', ['deliveries', created.id, ...args])
    expect(empty.code).toBe(0)
    expect(empty.stdout.trim().split('\n')).toHaveLength(1)

    const del = await cli('webhooks', ['delete', created.id, ...args])
    expect(del.code).toBe(0)
    expect(del.stdout).toBe(`deleted ${created.id} (org org_a, test, https://hooks.example/a)\n`)
    const again = await cli('webhooks', ['delete', created.id, ...args])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/^linkvault webhooks: NOT_FOUND: /)
    const gone = await cli('webhooks', ['deliveries', created.id, ...args])
    expect(gone.code).toBe(1)
    expect(gone.stderr).toMatch(/NOT_FOUND/)
    expect(JSON.parse((await cli('webhooks', ['list', ...args, '--json'])).stdout).map((w) => w.id)).toEqual([other.id])
  })

  test('the secret signs: a webhook made by the CLI is the one the store delivers', async () => {
    const made = lastJson((await cli('webhooks', ['create', ...args, '--org', 'org_sig', '--url', 'http://127.0.0.1:9/x'])).stdout)
    const client = await Client.open({ ...db, orgId: 'org_sig', encryptionKey: process.env.LINKVAULT_ENCRYPTION_KEY })
    try {
      await client.upsertLinkedAccount({ linked_account_id: 'u_sig' })
      const claimed = (await client.claimWebhookDeliveries({ limit: 100 })).filter((d) => d.webhook_id === made.id)
      expect(claimed).toHaveLength(1)
      const { verifyWebhook } = require('linkvault')
      expect(verifyWebhook(claimed[0].body, claimed[0].signature, made.secret)).toBe(true)
      const out = JSON.parse((await cli('webhooks', ['deliveries', made.id, ...args, '--json', '--state', 'pending'])).stdout)
      expect(out).toEqual([expect.objectContaining({ message_id: claimed[0].message_id, event: 'linked_account.created', end_user_id: 'u_sig', state: 'pending', attempts: 1 })])
    } finally {
      await client.close()
    }
  })

  test('strict parsing: one-line errors and exit code 2, before any store is touched', async () => {
    // Never opened: every case fails while parsing, so a SQLite path serves on either store.
    const db = path.join(tempDir('lv-webhooks-cli-'), 'never-opened.db')
    const base = ['--db', db, '--org', 'o']
    expectUsageError(await cli('webhooks', []), /a subcommand is required/)
    expectUsageError(await cli('webhooks', ['frob']), /unknown subcommand 'frob'/)
    expectUsageError(await cli('webhooks', ['create', ...base, '--url', 'https://h.example', '--bogus']), /bogus/)
    expectUsageError(await cli('webhooks', ['create', '--db', db, '--url', 'https://h.example']), /--org is required/)
    expectUsageError(await cli('webhooks', ['create', ...base]), /--url ENDPOINT/)
    expectUsageError(await cli('webhooks', ['create', ...base, '--url', 'ftp://h.example']), /postgres:\/\/ store URL or an http\(s\):\/\/ endpoint/)
    expectUsageError(await cli('webhooks', ['create', ...base, '--url', 'https://a.example', '--url', 'https://b.example']), /one http\(s\)/)
    expectUsageError(await cli('webhooks', ['create', ...base, '--url', 'https://a.example', '--url', 'postgres://x/db']), /either --db or --url/)
    expectUsageError(await cli('webhooks', ['create', ...base, '--url', 'https://a.example', '--environment', 'staging']), /--environment must be/)
    expectUsageError(await cli('webhooks', ['create', ...base, '--url', 'https://a.example', '--events', 'consent.received,,x']), /--events must be/)
    expectUsageError(await cli('webhooks', ['list', '--db', db, '--environment', 'dev']), /--environment/)
    expectUsageError(await cli('webhooks', ['delete', '--db', db]), /ID is required/)
    expectUsageError(await cli('webhooks', ['delete', 'a', 'b', '--db', db]), /unexpected argument 'b'/)
    expectUsageError(await cli('webhooks', ['deliveries', 'wh_x', '--db', db, '--state', 'done']), /--state must be/)
    expectUsageError(await cli('webhooks', ['deliveries', 'wh_x', '--db', db, '--limit', '0']), /--limit must be/)
    expectUsageError(await cli('webhooks', ['list', '--db', db, '--schema', 'x']), /--schema names a PostgreSQL schema/)
  })

  test('input the store refuses is a usage error too (exit 2): unknown event types, http in production', async () => {
    expectUsageError(await cli('webhooks', ['create', ...args, '--org', 'o', '--url', 'https://a.example', '--events', 'consent.recieved']), /--events: unknown event type 'consent.recieved'/)
    expectUsageError(await cli('webhooks', ['create', ...args, '--org', 'o', '--environment', 'production', '--url', 'http://a.example']), /--url: url must use https in the production environment/)
  })

  test('as a process: exit code 2 and one line on stderr', () => {
    const r = spawnSync(process.execPath, [BIN, 'webhooks', 'create', '--org', 'o', '--nope'], { encoding: 'utf8' })
    expect(r.status).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^linkvault webhooks: .*nope.*\(see linkvault webhooks --help\)$/)])
  })

  test('dispatcher settings: options, then LINKVAULT_WEBHOOK_* variables, then defaults; bad values refused', () => {
    const { settings } = require('../lib/webhooks/dispatcher')
    expect(settings({}, {})).toEqual({ retryBaseMs: 40000, timeoutMs: 10000, pollMs: 500, concurrency: 16, leaseMs: 15000 })
    expect(settings({ timeoutMs: 1000 }, { LINKVAULT_WEBHOOK_RETRY_BASE_MS: '100', LINKVAULT_WEBHOOK_TIMEOUT_MS: '5' })).toMatchObject({ retryBaseMs: 100, timeoutMs: 1000, leaseMs: 2000 })
    expect(() => settings({}, { LINKVAULT_WEBHOOK_RETRY_BASE_MS: '1e3' })).toThrow(expect.objectContaining({ code: 'VALIDATION_ERROR', field: 'LINKVAULT_WEBHOOK_RETRY_BASE_MS' }))
    expect(() => settings({ concurrency: 0 }, {})).toThrow(expect.objectContaining({ field: 'concurrency' }))
    // linkvault serve refuses to start with a bad value.
    const r = spawnSync(process.execPath, [BIN, 'serve', ...args, '--port', '0'], { encoding: 'utf8', env: { ...process.env, LINKVAULT_WEBHOOK_POLL_MS: 'soon' } })
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/LINKVAULT_WEBHOOK_POLL_MS must be an integer/)
  })
})

'use strict'
// `linkvault keys create|list|revoke`: API keys and client credentials, each bound to one
// org and environment. Secrets are printed once, at creation; the store keeps only hashes.

const { STORE_OPTIONS, UsageError, parse, runCommand, storeOptions } = require('./args')

const usage = `Usage:
  linkvault keys create [--db PATH | --url URL [--schema NAME]] --org ORG [--environment test|production] [--name N]
  linkvault keys list   [--db PATH | --url URL [--schema NAME]] [--org ORG] [--environment test|production] [--json]
  linkvault keys revoke CLIENT_ID [--db PATH | --url URL [--schema NAME]]

--schema NAME with --url: the PostgreSQL schema of linkvault's tables (default linkvault).

create  Makes an API key (Cobalt's x-api-key: tk… for test, pk… for production) and client
        credentials (client_id, client_secret for POST /oauth/token and POST /v1/token),
        bound to ORG and the environment (default test). Prints, as its last stdout line,
        {"api_key","client_id","client_secret"}: they are shown this once.
list    Lists keys (never their secrets): client_id, org, environment, name, key hint,
        created and revoked times. --json prints a JSON array.
revoke  Revokes a key by its client_id: its API key, secret and access tokens stop working
        (a running server stops accepting them within a second).

With --url (a PostgreSQL store), --schema NAME picks the schema of its tables (default linkvault).
`

function environmentOf(values) {
  const env = values.environment ?? 'test'
  if (env !== 'test' && env !== 'production') throw new UsageError(`--environment must be 'test' or 'production', got '${env}'`)
  return env
}

async function withClient(store, openOptions, body) {
  const { openStore } = require('../lib/store')
  const client = await openStore(store, openOptions)
  try {
    return await body(client)
  } finally {
    await client.close()
  }
}

async function create(argv, io) {
  const { values } = parse(argv, { ...STORE_OPTIONS, org: { type: 'string' }, environment: { type: 'string' }, name: { type: 'string' } })
  if (values.help) return io.stdout.write(usage) && 0
  const store = storeOptions(values)
  if (values.org === undefined || values.org === '') throw new UsageError('--org is required')
  const environment = environmentOf(values)
  return withClient(store, { orgId: values.org, environment }, async (client) => {
    const key = await client.createApiKey(values.name !== undefined ? { name: values.name } : {})
    io.stderr.write(`created key ${key.client_id} for org ${key.org_id} (${key.environment}); the secrets below are shown only now\n`)
    io.stdout.write(`${JSON.stringify({ api_key: key.api_key, client_id: key.client_id, client_secret: key.client_secret })}\n`)
    return 0
  })
}

function table(rows) {
  const head = ['client_id', 'org', 'environment', 'name', 'api_key', 'created_at', 'revoked_at']
  const cells = rows.map((k) => [k.client_id, k.org_id, k.environment, k.name ?? '', k.api_key_hint, k.created_at, k.revoked_at ?? ''])
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((r) => String(r[i]).length)))
  const line = (r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd()
  return [line(head), ...cells.map(line)].join('\n') + '\n'
}

async function list(argv, io) {
  const { values } = parse(argv, { ...STORE_OPTIONS, org: { type: 'string' }, environment: { type: 'string' }, json: { type: 'boolean' } })
  if (values.help) return io.stdout.write(usage) && 0
  const store = storeOptions(values)
  const filter = {}
  if (values.org !== undefined) filter.orgId = values.org
  if (values.environment !== undefined) filter.environment = environmentOf(values)
  return withClient(store, {}, async (client) => {
    const keys = await client.listApiKeys(filter)
    io.stdout.write(values.json ? `${JSON.stringify(keys)}\n` : table(keys))
    return 0
  })
}

async function revoke(argv, io) {
  const { values, positionals } = parse(argv, { ...STORE_OPTIONS }, { positionals: 1 })
  if (values.help) return io.stdout.write(usage) && 0
  const store = storeOptions(values)
  if (positionals.length !== 1) throw new UsageError('CLIENT_ID is required')
  return withClient(store, {}, async (client) => {
    const key = await client.revokeApiKey(positionals[0])
    io.stdout.write(`revoked ${key.client_id} (org ${key.org_id}, ${key.environment})\n`)
    return 0
  })
}

const SUBCOMMANDS = { create, list, revoke }

module.exports = {
  summary: 'Create, list and revoke API keys and client credentials',
  usage,
  run(argv, io = process) {
    return runCommand('keys', async () => {
      const [sub, ...rest] = argv
      if (sub === '--help' || sub === '-h' || sub === 'help') {
        io.stdout.write(usage)
        return 0
      }
      if (!Object.hasOwn(SUBCOMMANDS, sub ?? '')) {
        throw new UsageError(sub ? `unknown subcommand '${sub}' (create, list or revoke)` : 'a subcommand is required: create, list or revoke')
      }
      return SUBCOMMANDS[sub](rest, io)
    }, io)
  },
}

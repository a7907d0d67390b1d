'use strict'
// `linkvault webhooks create|list|delete|deliveries`: webhook endpoints and their deliveries.
// A running `linkvault serve` on the same store delivers them.

const { STORE_OPTIONS, UsageError, parse, runCommand, storeOptions } = require('./args')

const usage = `Usage:
  linkvault webhooks create [--db PATH | --url POSTGRES_URL [--schema NAME]] --org ORG [--environment test|production]
                            --url ENDPOINT [--events TYPE,TYPE]
  linkvault webhooks list [--db PATH | --url POSTGRES_URL [--schema NAME]] [--org ORG] [--environment E] [--json]
  linkvault webhooks delete ID [--db PATH | --url POSTGRES_URL [--schema NAME]]
  linkvault webhooks deliveries ID [--db PATH | --url POSTGRES_URL [--schema NAME]] [--state pending|delivered|failed]
                                   [--limit N] [--json]

create      Subscribes ENDPOINT to the events of ORG's environment (default test) appended from
            now on: all types, or only --events (e.g. consent.received,consent.revoked).
            --url takes both the store and the endpoint: a postgres:// URL names the store, an
            http(s):// URL the endpoint (https in production). Prints, as its last stdout line,
            {"id","secret"}: the secret is shown this once. Verify each delivery with
            verifyWebhook(rawBody, req.headers['x-linkvault-signature'], secret).
            --schema NAME: with a postgres:// --url, the schema of linkvault's tables.
list        Lists webhooks (never their secrets) with their pending and failed deliveries.
delete      Deletes a webhook and its delivery records; nothing more is sent to it.
deliveries  Shows a webhook's deliveries, newest first: message_id, event, end user, state
            (pending, delivered, failed), attempts, last HTTP status or error, and the next
            attempt of a pending one or when it finished. A delivery is tried 5 times over
            about 10 minutes (40 s, 80 s, 160 s, 320 s apart) before it is recorded as failed.

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

/** Splits the repeated --url of `create` into the store (postgres://) and the endpoint (http(s)://). */
function splitUrls(urls = []) {
  const store = urls.filter((u) => /^postgres(ql)?:\/\//i.test(u))
  const endpoints = urls.filter((u) => /^https?:\/\//i.test(u))
  const other = urls.find((u) => !store.includes(u) && !endpoints.includes(u))
  if (other !== undefined) throw new UsageError(`--url must be a postgres:// store URL or an http(s):// endpoint, got '${other}'`)
  if (store.length > 1) throw new UsageError('give one postgres:// --url (the store)')
  if (endpoints.length > 1) throw new UsageError('give one http(s):// --url (the endpoint)')
  if (endpoints.length === 0) throw new UsageError('--url ENDPOINT (an http(s):// URL) is required')
  return { storeUrl: store[0], endpoint: endpoints[0] }
}

async function create(argv, io) {
  const { values } = parse(argv, {
    db: STORE_OPTIONS.db,
    schema: STORE_OPTIONS.schema,
    url: { type: 'string', multiple: true },
    schema: STORE_OPTIONS.schema,
    org: { type: 'string' },
    environment: { type: 'string' },
    events: { type: 'string' },
  })
  if (values.help) return io.stdout.write(usage) && 0
  const { storeUrl, endpoint } = splitUrls(values.url)
  const store = storeOptions({ db: values.db, url: storeUrl, schema: values.schema })
  if (values.org === undefined || values.org === '') throw new UsageError('--org is required')
  const environment = environmentOf(values)
  let events
  if (values.events !== undefined) {
    events = values.events.split(',').map((e) => e.trim())
    if (events.some((e) => e === '')) throw new UsageError(`--events must be event types separated by commas, got '${values.events}'`)
  }
  return withClient(store, { orgId: values.org, environment }, async (client) => {
    let webhook
    try {
      webhook = await client.createWebhook(events ? { url: endpoint, events } : { url: endpoint })
    } catch (e) {
      // Bad input is a usage error (exit 2), whichever layer found it.
      if (e && e.code === 'VALIDATION_ERROR') throw new UsageError(`${e.field === 'url' ? '--url' : `--${e.field}`}: ${e.message}`)
      throw e
    }
    io.stderr.write(`created webhook ${webhook.id} for org ${webhook.org_id} (${webhook.environment}) -> ${webhook.url}; the secret below is shown only now\n`)
    io.stdout.write(`${JSON.stringify({ id: webhook.id, secret: webhook.secret })}\n`)
    return 0
  })
}

function table(head, rows) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd()
  return [line(head), ...rows.map(line)].join('\n') + '\n'
}

async function list(argv, io) {
  const { values } = parse(argv, { ...STORE_OPTIONS, org: { type: 'string' }, environment: { type: 'string' }, json: { type: 'boolean' } })
  if (values.help) return io.stdout.write(usage) && 0
  const store = storeOptions(values)
  const filter = {}
  if (values.org !== undefined) filter.orgId = values.org
  if (values.environment !== undefined) filter.environment = environmentOf(values)
  return withClient(store, {}, async (client) => {
    const hooks = await client.listWebhooks(filter)
    if (values.json) {
      io.stdout.write(`${JSON.stringify(hooks)}\n`)
    } else {
      const head = ['id', 'org', 'environment', 'url', 'events', 'pending', 'failed', 'created_at']
      io.stdout.write(table(head, hooks.map((w) => [w.id, w.org_id, w.environment, w.url, w.events ? w.events.join(',') : '*', w.pending, w.failed, w.created_at])))
    }
    return 0
  })
}

function oneId(positionals, what = 'ID') {
  if (positionals.length !== 1) throw new UsageError(`${what} is required`)
  return positionals[0]
}

async function remove(argv, io) {
  const { values, positionals } = parse(argv, { ...STORE_OPTIONS }, { positionals: 1 })
  if (values.help) return io.stdout.write(usage) && 0
  const store = storeOptions(values)
  const id = oneId(positionals)
  return withClient(store, {}, async (client) => {
    const w = await client.deleteWebhook(id)
    io.stdout.write(`deleted ${w.id} (org ${w.org_id}, ${w.environment}, ${w.url})\n`)
    return 0
  })
}

async function deliveries(argv, io) {
  const { values, positionals } = parse(argv, { ...STORE_OPTIONS, state: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' } }, { positionals: 1 })
  if (values.help) return io.stdout.write(usage) && 0
  const store = storeOptions(values)
  const id = oneId(positionals)
  const query = {}
  if (values.state !== undefined) {
    if (!['pending', 'delivered', 'failed'].includes(values.state)) throw new UsageError(`--state must be pending, delivered or failed, got '${values.state}'`)
    query.state = values.state
  }
  if (values.limit !== undefined) {
    if (!/^\d{1,4}$/.test(values.limit) || Number(values.limit) < 1 || Number(values.limit) > 1000) throw new UsageError(`--limit must be an integer from 1 to 1000, got '${values.limit}'`)
    query.limit = Number(values.limit)
  }
  return withClient(store, {}, async (client) => {
    const page = await client.listWebhookDeliveries(id, query)
    if (values.json) {
      io.stdout.write(`${JSON.stringify(page.deliveries)}\n`)
      return 0
    }
    const head = ['message_id', 'event', 'end_user_id', 'state', 'attempts', 'last_status', 'last_error', 'next_attempt_at', 'finished_at']
    const rows = page.deliveries.map((d) => [d.message_id, d.event, d.end_user_id ?? '', d.state, d.attempts, d.last_status ?? '', d.last_error ?? '', d.next_attempt_at ?? '', d.finished_at ?? ''])
    io.stdout.write(table(head, rows))
    if (page.next !== null) io.stderr.write(`(more: older deliveries not shown; raise --limit or use --json)\n`)
    return 0
  })
}

const SUBCOMMANDS = { create, list, delete: remove, deliveries }

module.exports = {
  summary: 'Create, list and delete webhook endpoints; show their deliveries',
  usage,
  run(argv, io = process) {
    return runCommand(
      'webhooks',
      async () => {
        const [sub, ...rest] = argv
        if (sub === '--help' || sub === '-h' || sub === 'help') {
          io.stdout.write(usage)
          return 0
        }
        if (!Object.hasOwn(SUBCOMMANDS, sub ?? '')) {
          throw new UsageError(sub ? `unknown subcommand '${sub}' (create, list, delete or deliveries)` : 'a subcommand is required: create, list, delete or deliveries')
        }
        return SUBCOMMANDS[sub](rest, io)
      },
      io,
    )
  },
}

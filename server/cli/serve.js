'use strict'
// `linkvault serve`: runs the HTTP server until SIGTERM or SIGINT.

const fs = require('node:fs')

const { STORE_OPTIONS, UsageError, parse, runCommand, storeOptions } = require('./args')

const usage = `Usage: linkvault serve [--db PATH | --url POSTGRES_URL [--schema NAME]] [--host 127.0.0.1]
                       [--port 8080] [--tls-cert FILE --tls-key FILE] [--public-url URL]
                       [--wait SECONDS]

Serves Cobalt's, Auth0's and Fiskil's REST APIs on a linkvault store.

  --db PATH          SQLite file (default linkvault.db); its key: LINKVAULT_ENCRYPTION_KEY or PATH.key
  --url URL          PostgreSQL URL instead of --db (needs LINKVAULT_ENCRYPTION_KEY)
  --schema NAME      with --url: the PostgreSQL schema of linkvault's tables (default linkvault)
  --host HOST        address to listen on (default 127.0.0.1)
  --port PORT        port, 0-65535 (default 8080; 0 takes a free port)
  --tls-cert FILE    PEM certificate chain: serve HTTPS (with --tls-key)
  --tls-key FILE     PEM private key of --tls-cert
  --public-url URL   the URL clients reach this server at (for absolute links such as auth_url)
  --wait SECONDS     with --url: how long to wait for PostgreSQL at start (default 30; 0: one try).
                     While the server is down, starting up or refuses connections, opening is
                     retried with backoff (0.2 s doubling to 5 s); then one line on stderr and
                     exit code 1. A refused login, a missing database or a host name that
                     does not resolve fails at once.

Prints "listening on http(s)://HOST:PORT" on stdout when ready; JSON logs go to stderr
(level: LINKVAULT_LOG_LEVEL, default info). SIGTERM or SIGINT: stops accepting connections,
finishes requests in flight, closes the store and exits 0.
`

function parsePort(text) {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new UsageError(`--port must be an integer from 0 to 65535, got '${text}'`)
  return Number(text)
}

function parsePublicUrl(text) {
  let url
  try {
    url = new URL(text)
  } catch {
    throw new UsageError(`--public-url must be an absolute http(s) URL, got '${text}'`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--public-url must be an absolute http(s) URL, got '${text}'`)
  return url.href.replace(/\/+$/, '')
}

/** Default of --wait: seconds to wait for PostgreSQL at start. */
const DEFAULT_WAIT_SECONDS = 30

function parseWait(text) {
  if (!/^\d{1,4}$/.test(text) || Number(text) > 3600) throw new UsageError(`--wait must be an integer from 0 to 3600 (seconds), got '${text}'`)
  return Number(text)
}

/**
 * Whether opening failed because the PostgreSQL server cannot be reached yet (down, starting
 * up, refusing connections), as opposed to a refused login or a missing database, which waiting
 * does not fix.
 */
function serverNotReady(e) {
  if (!e || e.code !== 'STORAGE_ERROR') return false
  const m = String(e.message)
  // A refused login, a missing database or role, or a host name that does not resolve: waiting
  // does not fix a wrong URL.
  if (/authentication|password|does not exist|pg_hba|permission denied|lookup address|name or service not known|nodename nor servname/i.test(m)) return false
  return /cannot connect to the PostgreSQL server|is unavailable|starting up|shutting down/.test(m)
}

/**
 * Runs `open` until it succeeds, retrying while `serverNotReady` with backoff (0.2 s doubling to
 * 5 s) for at most `waitSeconds`; then rethrows the last error, saying how long it waited.
 */
async function withStartupRetries(open, waitSeconds, logger, sleep = (ms) => new Promise((r) => setTimeout(r, ms))) {
  const deadline = Date.now() + waitSeconds * 1000
  let delay = 200
  for (let attempt = 1; ; attempt++) {
    try {
      return await open()
    } catch (e) {
      const left = deadline - Date.now()
      if (!serverNotReady(e) || left <= 0) {
        if (serverNotReady(e) && waitSeconds > 0) e.message = `${e.message} (waited ${waitSeconds} s; see --wait)`
        throw e
      }
      logger.warn({ attempt, retryInMs: Math.min(delay, left) }, 'PostgreSQL is not reachable yet; retrying')
      await sleep(Math.min(delay, left))
      delay = Math.min(delay * 2, 5000)
    }
  }
}

function readPem(flag, file) {
  try {
    return fs.readFileSync(file)
  } catch (e) {
    throw new UsageError(`${flag}: cannot read '${file}' (${e.code || e.message})`)
  }
}

/** The address as a URL host: IPv6 in brackets. */
function urlHost(host) {
  return host.includes(':') ? `[${host}]` : host
}

/**
 * Options for the run: everything is checked before the store is opened, so a bad flag never
 * touches a database.
 */
function parseServeArgs(argv) {
  const { values } = parse(argv, {
    ...STORE_OPTIONS,
    host: { type: 'string' },
    port: { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'public-url': { type: 'string' },
    wait: { type: 'string' },
  })
  if (values.help) return { help: true }
  const store = storeOptions(values)
  const host = values.host ?? '127.0.0.1'
  if (host === '' || /\s/.test(host)) throw new UsageError(`--host must be an address or host name, got '${host}'`)
  const port = values.port === undefined ? 8080 : parsePort(values.port)
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) throw new UsageError('--tls-cert and --tls-key go together')
  const https = values['tls-cert'] !== undefined ? { cert: readPem('--tls-cert', values['tls-cert']), key: readPem('--tls-key', values['tls-key']) } : undefined
  const publicUrl = values['public-url'] !== undefined ? parsePublicUrl(values['public-url']) : undefined
  const wait = values.wait !== undefined ? parseWait(values.wait) : DEFAULT_WAIT_SECONDS
  if (values.wait !== undefined && store.url === undefined) throw new UsageError('--wait applies to --url (a PostgreSQL server)')
  return { store, host, port, https, publicUrl, wait }
}

async function serve(argv, io = process) {
  const opts = parseServeArgs(argv)
  if (opts.help) {
    io.stdout.write(usage)
    return 0
  }
  const pino = require('pino')
  // Lines are buffered and written 8 KiB at a time (a write per line was a tenth of a request's
  // CPU), and at least every 250 ms so that a quiet server's lines still appear promptly.
  const destination = pino.destination({ fd: 2, sync: false, minLength: 8192 })
  const flusher = setInterval(() => destination.flush(), 250).unref()
  const logger = pino(require('../lib/logger').loggerOptions(process.env.LINKVAULT_LOG_LEVEL || 'info'), destination)
  try {
    return await run(opts, logger, io)
  } finally {
    clearInterval(flusher)
    destination.flushSync()
  }
}

async function run(opts, logger, io) {
  const { buildServer } = require('../index')
  const where = opts.store.url !== undefined ? { url: opts.store.url, schema: opts.store.schema } : { db: opts.store.path }
  const build = () => buildServer({ ...where, https: opts.https, publicUrl: opts.publicUrl, loggerInstance: logger })
  const app = opts.store.url !== undefined ? await withStartupRetries(build, opts.wait, logger) : await build()
  let address
  try {
    await app.listen({ host: opts.host, port: opts.port })
    address = app.server.address()
  } catch (e) {
    await app.close()
    throw e
  }
  const stopped = new Promise((resolve) => {
    let stopping = false
    const stop = (signal) => {
      if (stopping) return
      stopping = true
      logger.info({ signal }, 'stopping: finishing requests in flight')
      app.close().then(
        () => resolve(0),
        (e) => {
          logger.error({ err: e }, 'error while stopping')
          resolve(1)
        },
      )
    }
    process.once('SIGTERM', stop)
    process.once('SIGINT', stop)
  })
  io.stdout.write(`listening on ${opts.https ? 'https' : 'http'}://${urlHost(opts.host)}:${address.port}\n`)
  return stopped
}

module.exports = {
  summary: "Serve Cobalt's, Auth0's and Fiskil's REST APIs over HTTP",
  usage,
  run(argv) {
    return runCommand('serve', () => serve(argv))
  },
  parseServeArgs,
  withStartupRetries,
  serverNotReady,
  DEFAULT_WAIT_SECONDS,
}

'use strict'
// `linkvault serve`: runs the HTTP server until SIGTERM or SIGINT.

const fs = require('node:fs')

const { STORE_OPTIONS, UsageError, parse, runCommand, storeOptions } = require('./args')

const usage = `Usage: linkvault serve [--db PATH | --url POSTGRES_URL [--schema NAME]] [--host 127.0.0.1]
                       [--port 8080] [--tls-cert FILE --tls-key FILE] [--public-url URL]

Serves Cobalt's, Auth0's and Fiskil's REST APIs on a linkvault store.

  --db PATH          SQLite file (default linkvault.db); its key: LINKVAULT_ENCRYPTION_KEY or PATH.key
  --url URL          PostgreSQL URL instead of --db (needs LINKVAULT_ENCRYPTION_KEY)
  --schema NAME      with --url: the PostgreSQL schema of linkvault's tables (default linkvault)
  --host HOST        address to listen on (default 127.0.0.1)
  --port PORT        port, 0-65535 (default 8080; 0 takes a free port)
  --tls-cert FILE    PEM certificate chain: serve HTTPS (with --tls-key)
  --tls-key FILE     PEM private key of --tls-cert
  --public-url URL   the URL clients reach this server at (for absolute links such as auth_url)

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
  })
  if (values.help) return { help: true }
  const store = storeOptions(values)
  const host = values.host ?? '127.0.0.1'
  if (host === '' || /\s/.test(host)) throw new UsageError(`--host must be an address or host name, got '${host}'`)
  const port = values.port === undefined ? 8080 : parsePort(values.port)
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) throw new UsageError('--tls-cert and --tls-key go together')
  const https = values['tls-cert'] !== undefined ? { cert: readPem('--tls-cert', values['tls-cert']), key: readPem('--tls-key', values['tls-key']) } : undefined
  const publicUrl = values['public-url'] !== undefined ? parsePublicUrl(values['public-url']) : undefined
  return { store, host, port, https, publicUrl }
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
  const where =
    opts.store.url !== undefined
      ? { url: opts.store.url, clientOptions: opts.store.schema !== undefined ? { schema: opts.store.schema } : {} }
      : { db: opts.store.path }
  const app = await buildServer({ ...where, https: opts.https, publicUrl: opts.publicUrl, loggerInstance: logger })
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
}

'use strict'
// linkvault-server: Cobalt's, Auth0's and Fiskil's REST APIs over HTTP on a linkvault store.
//
//   const { buildServer } = require('linkvault-server')
//   const app = await buildServer({ db: './linkvault.db', publicUrl: 'https://vault.example.com' })
//   await app.listen({ host: '127.0.0.1', port: 8080 })
//
// `buildServer` returns a fastify instance with every route registered and not yet listening;
// add plugins with `app.register(...)` before `listen`. `app.linkvault` holds the root Client,
// the per-scope resolver and the public URL for plugins to use.

const fastify = require('fastify')
const crypto = require('node:crypto')

const errors = require('./lib/errors')
const { loggerOptions } = require('./lib/logger')
const { Scopes } = require('./lib/scopes')
const { openStore } = require('./lib/store')
const openapi = require('./lib/openapi')

/**
 * Input validation and output: bodies are validated without type coercion (a number sent as
 * a name is an error, not a string), query strings and path parameters with it (they are
 * text on the wire). Answers are serialized with JSON.stringify: response schemas document,
 * they never reshape. JSON bodies may be empty (read as no body), which some SDKs send with
 * DELETE; prototype-poisoning keys are refused.
 */
function validation(app) {
  const Ajv = require('ajv')
  const common = { useDefaults: true, removeAdditional: false, allErrors: false, strict: false }
  const bodies = new Ajv({ ...common, coerceTypes: false })
  const text = new Ajv({ ...common, coerceTypes: 'array' })
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? bodies : text).compile(schema))
  app.setSerializerCompiler(() => (data) => JSON.stringify(data))
  // No body at all reads as an empty object (an SDK may POST without one). Attached only to
  // routes that declare a body, so that GETs run no extra hook.
  const emptyBody = (request, reply, done) => {
    if (request.body === undefined) request.body = {}
    done()
  }
  app.addHook('onRoute', (route) => {
    if (!route.schema || !route.schema.body) return
    const own = route.preValidation ? [].concat(route.preValidation) : []
    route.preValidation = [emptyBody, ...own]
  })
  const sjson = require('secure-json-parse')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body.length === 0) return done(null, undefined)
    try {
      done(null, sjson.parse(body, { protoAction: 'error', constructorAction: 'error' }))
    } catch (e) {
      const forbidden = /forbidden (prototype|constructor)/.test(String(e && e.message))
      done(new errors.HttpError(400, 'INVALID_JSON', forbidden ? 'Request body has a forbidden __proto__ or constructor key' : 'Request body is not valid JSON'), undefined)
    }
  })
}

/** One access-log line per request, when it completes (fastify logs two by default). */
class AccessLog extends fastify.LogController {
  incomingRequest() {}
  requestCompleted(error, request, reply) {
    if (error) reply.log.error({ req: request, res: reply, responseTime: reply.elapsedTime, err: error }, 'request errored')
    else if (!reply.log.isLevelEnabled || reply.log.isLevelEnabled('info')) reply.log.info({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed')
  }
}

/** Largest request body accepted (bigger: 413). */
const BODY_LIMIT = 256 * 1024

/**
 * Opens the Client the server runs on: `client` as given (not closed by the server), or one
 * opened from `db` (a SQLite path) or `url` (a PostgreSQL URL) plus `clientOptions` (closed
 * with the server).
 */
async function openClient(options) {
  if (options.client) return { client: options.client, owned: false }
  if (options.db !== undefined && options.url !== undefined) {
    throw Object.assign(new Error('give either db or url, not both'), { code: 'VALIDATION_ERROR', field: 'url' })
  }
  const where = options.url !== undefined ? { url: options.url, ...(options.schema !== undefined ? { schema: options.schema } : {}) } : { path: options.db ?? 'linkvault.db' }
  const open = { ...(options.clientOptions || {}) }
  if (options.publicUrl) open.publicUrl = String(options.publicUrl).replace(/\/+$/, '')
  if (options.appName !== undefined) open.appName = options.appName
  if (options.appLogo !== undefined) open.appLogo = options.appLogo
  return { client: await openStore(where, open), owned: true }
}

/**
 * Builds the server (not listening yet).
 *
 * @param {object} [options]
 * @param {import('linkvault').Client} [options.client] an open root Client (kept open on close)
 * @param {string} [options.db] SQLite file to open when no client is given (default linkvault.db)
 * @param {string} [options.url] PostgreSQL URL to open when no client is given
 * @param {string} [options.schema] with `url`: the PostgreSQL schema (default 'linkvault')
 * @param {object} [options.clientOptions] further `Client.open` options (encryptionKey, …)
 * @param {string} [options.publicUrl] the URL clients reach the server at (default: from the
 *   request's Host); used for absolute links such as a session's `auth_url`
 * @param {boolean|string|object} [options.logger] false, a level, or pino options
 * @param {object} [options.loggerInstance] a pino logger to use instead (made with
 *   `loggerOptions()` of lib/logger.js to keep the redaction)
 * @param {{ key: string|Buffer, cert: string|Buffer }} [options.https] serve HTTPS
 * @param {number} [options.cacheMs] how long a verified API key or access token is trusted
 *   without a database read (default 1000)
 * @param {string} [options.appName] your app's name: GET /api/v3/org/basics' `name` and the
 *   consents' `app_name` (passed to Client.open when the server opens the store)
 * @param {string} [options.appLogo] your app's logo URL: `logo` and the consents' `app_logo`
 * @param {false|object} [options.webhooks] false: deliver no webhooks from this server; else
 *   the dispatcher's settings `{ retryBaseMs, timeoutMs, pollMs, concurrency }` (defaults and
 *   environment variables in lib/webhooks/dispatcher.js)
 * @returns {Promise<import('fastify').FastifyInstance>}
 */
async function buildServer(options = {}) {
  const { client, owned } = await openClient(options)
  let app
  try {
    app = fastify({
      ...(options.loggerInstance ? { loggerInstance: options.loggerInstance } : { logger: loggerOptions(options.logger) }),
      bodyLimit: BODY_LIMIT,
      genReqId: (req) => {
        const given = req.headers['x-request-id']
        return typeof given === 'string' && /^[A-Za-z0-9._-]{1,128}$/.test(given) ? given : crypto.randomUUID()
      },
      requestIdHeader: false,
      logController: new AccessLog(),
      return503OnClosing: true,
      forceCloseConnections: 'idle',
      ...(options.https ? { https: options.https } : {}),
      ajv: { customOptions: { coerceTypes: 'array', removeAdditional: false, allErrors: false } },
    })
  } catch (e) {
    if (owned) await client.close()
    throw e
  }
  const scopes = new Scopes(client, { cacheMs: options.cacheMs })
  let ready = true
  app.decorate('linkvault', {
    client,
    scopes,
    publicUrl: options.publicUrl ? String(options.publicUrl).replace(/\/+$/, '') : null,
    appName: options.appName,
    appLogo: options.appLogo,
    /** The URL the server is reached at, for one request. */
    baseUrl(request) {
      return this.publicUrl || `${request.protocol}://${request.host}`
    },
  })
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id)
    done()
  })
  errors.install(app)
  validation(app)
  await app.register(openapi.plugin)
  await app.register(require('@fastify/formbody'), { bodyLimit: BODY_LIMIT })

  app.get('/healthz', { schema: { hide: false, tags: ['health'], summary: 'Liveness: the process answers', response: { 200: { type: 'object', properties: { status: { type: 'string' } } } } } }, async () => ({ status: 'ok' }))
  app.get(
    '/readyz',
    { schema: { tags: ['health'], summary: 'Readiness: the store answers a read', response: { 200: { type: 'object', properties: { status: { type: 'string' } } }, 503: { type: 'object', properties: { status: { type: 'string' } } } } } },
    async (request, reply) => {
      if (!ready) return reply.code(503).send({ status: 'closing' })
      try {
        await client.listApiKeys({ limit: 1 })
        return { status: 'ok' }
      } catch (e) {
        request.log.warn({ code: e && e.code }, 'readiness check failed')
        return reply.code(503).send({ status: 'unavailable' })
      }
    },
  )

  await app.register(require('./lib/routes/cobalt'))
  await app.register(require('./lib/routes/auth0'))
  await app.register(require('./lib/routes/fiskil'))
  await app.register(require('./lib/routes/consent-page'))
  await app.register(require('./lib/webhooks/plugin'), options.webhooks === false ? { enabled: false } : { ...options.webhooks })

  app.addHook('preClose', async () => {
    ready = false
  })
  app.addHook('onClose', async () => {
    await scopes.close()
    if (owned) await client.close()
  })
  return app
}

module.exports = { buildServer, BODY_LIMIT }

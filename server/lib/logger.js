'use strict'
// pino options for the server: JSON lines, a request id on every line, and no secret ever
// written. Secrets reach a server in headers (x-api-key, Authorization, cookies), in bodies
// (client_secret, credentials: bodies are never logged) and in query strings (a consent page's
// session_id): headers are censored by path, query values by name.

const CENSOR = '[REDACTED]'

// Our req/res serializers never include headers or bodies. These paths censor the secret
// headers should a plugin log a request's `headers` object. Exact paths only: pino applies
// them to every line holding a `headers` key, so the access log line costs no redaction.
const REDACT_PATHS = ['headers.authorization', 'headers["x-api-key"]', 'headers.cookie', 'headers["set-cookie"]']

// Query parameters whose values are secrets (compared case-insensitively).
const SECRET_QUERY = /^(session_id|token|access_token|refresh_token|id_token|client_secret|api_key|apikey|key|secret|code|password|signature)$/i

// Path segments that are secrets: the consent page's /link/session/<session_id>.
const SECRET_PATH = /^(\/link\/session\/)[^/?#]+/

/**
 * The URL with secret path segments and the value of every secret-looking query parameter
 * replaced by [REDACTED].
 */
function redactUrl(raw) {
  const url = SECRET_PATH.test(raw) ? raw.replace(SECRET_PATH, `$1${CENSOR}`) : raw
  const q = url.indexOf('?')
  if (q < 0) return url
  const parts = url.slice(q + 1).split('&').map((pair) => {
    const eq = pair.indexOf('=')
    const name = eq < 0 ? pair : pair.slice(0, eq)
    let decoded = name
    try {
      decoded = decodeURIComponent(name)
    } catch {
      // A malformed name is kept as sent (its value is still checked below).
    }
    return eq >= 0 && SECRET_QUERY.test(decoded) ? `${name}=${CENSOR}` : pair
  })
  return `${url.slice(0, q)}?${parts.join('&')}`
}

const serializers = {
  req(req) {
    return {
      method: req.method,
      url: redactUrl(req.url),
      host: req.host,
      remoteAddress: req.ip,
    }
  },
  res(reply) {
    return { statusCode: reply.statusCode }
  },
  // Errors are logged by our error handler with their code only; a stray Error keeps its
  // message and stack (messages of linkvault errors never contain secrets).
}

/**
 * Fastify `logger` options from the server's `logger` option: `false` (silent), `true` or
 * undefined (info level to stdout), a level name, or pino options (merged over ours; our
 * redaction is always kept).
 */
function loggerOptions(logger) {
  if (logger === false) return false
  const base = {
    level: 'info',
    redact: { paths: REDACT_PATHS, censor: CENSOR },
    serializers,
  }
  if (logger === undefined || logger === true) return base
  if (typeof logger === 'string') return { ...base, level: logger }
  if (typeof logger === 'object') {
    const paths = [...REDACT_PATHS, ...((logger.redact && (logger.redact.paths ?? logger.redact)) || [])]
    return {
      ...base,
      ...logger,
      redact: { paths, censor: CENSOR },
      serializers: { ...serializers, ...(logger.serializers || {}) },
    }
  }
  throw new TypeError('logger must be a boolean, a level name or pino options')
}

module.exports = { loggerOptions, redactUrl, REDACT_PATHS }

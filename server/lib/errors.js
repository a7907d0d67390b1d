'use strict'
// Errors in each vendor's own shape. Route handlers throw linkvault errors (`code`, `status`,
// `field`) or `HttpError`s; the one error handler below picks the vendor from the route (or,
// for an unknown route, from the path) and answers in that vendor's shape, so clients written
// for the vendor parse our errors as theirs.
//
//   Cobalt: { status_code, http_error_type, error, message, request_id }
//   Auth0:  { statusCode, error, message, errorCode }   (POST /oauth/token: { error, error_description })
//   Fiskil: { id: 'err_…', name, message }

const crypto = require('node:crypto')

/** An error with an HTTP status and a vendor-level code chosen by the route. */
class HttpError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message)
    this.status = status
    this.code = code
    Object.assign(this, extra)
  }
}

const REASONS = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  410: 'Gone',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
}

const COBALT_TYPES = {
  400: 'BAD_REQUEST',
  401: 'UNAUTHORIZED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  409: 'CONFLICT',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  500: 'INTERNAL_SERVER_ERROR',
  503: 'SERVICE_UNAVAILABLE',
}

/** Which vendor's shape a request gets. */
function vendorOf(request) {
  const configured = request.routeOptions && request.routeOptions.config && request.routeOptions.config.vendor
  if (configured) return configured
  const url = request.url
  if (url.startsWith('/api/v2/public') || url.startsWith('/api/v3/')) return 'cobalt'
  if (url.startsWith('/oauth/token')) return 'auth0-oauth'
  if (url.startsWith('/api/v2/')) return 'auth0'
  if (url.startsWith('/v1/')) return 'fiskil'
  return 'plain'
}

/**
 * Status, vendor code and message for any error thrown while handling a request. Messages of
 * framework errors about the body are replaced: a JSON parser's message quotes the body, which
 * may hold a secret.
 */
function normalize(err) {
  if (err instanceof HttpError) {
    return { status: err.status, code: err.code, message: err.message, field: err.field, auth0Code: err.auth0Code }
  }
  if (err.validation) {
    const first = err.validation[0] || {}
    const where = err.validationContext || 'body'
    const path = (first.instancePath || '').replace(/^\//, '').replace(/\//g, '.')
    const missing = first.params && first.params.missingProperty
    const field = missing ? (path ? `${path}.${missing}` : missing) : path || undefined
    const message = field ? `${where}.${field} ${first.message}` : `${where} ${first.message}`
    return { status: 400, code: 'VALIDATION_ERROR', message, field }
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'PAYLOAD_TOO_LARGE', message: 'Request body is larger than 256 KiB' }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Unsupported Content-Type' }
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, code: 'INVALID_JSON', message: 'Request body is empty but Content-Type is application/json' }
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, code: 'INVALID_JSON', message: 'Request body does not match its Content-Length' }
    default:
  }
  if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return { status: 400, code: 'INVALID_JSON', message: 'Request body is not valid JSON' }
  }
  // linkvault errors carry code and status.
  if (typeof err.code === 'string' && Number.isInteger(err.status)) {
    return { status: err.status, code: err.code, message: err.message, field: err.field }
  }
  const status = Number.isInteger(err.statusCode) && err.statusCode >= 400 ? err.statusCode : 500
  if (status >= 500) return { status, code: 'SERVER_ERROR', message: 'Internal server error' }
  return { status, code: err.code || 'BAD_REQUEST', message: err.message }
}

const AUTH0_CODES = {
  VALIDATION_ERROR: 'invalid_body',
  INVALID_JSON: 'invalid_body',
  NOT_FOUND: 'inexistent_user',
  ALREADY_EXISTS: 'conflict',
  IDENTITY_ALREADY_LINKED: 'identity_conflict',
  INVALID_TOKEN: 'invalid_token',
  TOKEN_EXPIRED: 'invalid_token',
  TOKEN_REVOKED: 'invalid_token',
  PAYLOAD_TOO_LARGE: 'payload_too_large',
}

const FISKIL_NAMES = {
  VALIDATION_ERROR: 'bad_request',
  INVALID_JSON: 'bad_request',
  NOT_FOUND: 'not_found',
  ALREADY_EXISTS: 'already_exists',
  INVALID_TOKEN: 'unauthorized',
  TOKEN_EXPIRED: 'unauthorized',
  TOKEN_REVOKED: 'unauthorized',
  PAYLOAD_TOO_LARGE: 'payload_too_large',
}

/** The vendor-shaped body (and status) for an error. */
function render(vendor, err, requestId) {
  const e = normalize(err)
  const reason = REASONS[e.status] || (e.status >= 500 ? 'Internal Server Error' : 'Bad Request')
  switch (vendor) {
    case 'cobalt': {
      // Cobalt answers a duplicate create with 400, not 409.
      const status = e.code === 'ALREADY_EXISTS' ? 400 : e.status
      return {
        status,
        body: {
          status_code: status,
          http_error_type: COBALT_TYPES[status] || (status >= 500 ? 'INTERNAL_SERVER_ERROR' : 'BAD_REQUEST'),
          error: e.code,
          message: e.message,
          request_id: requestId,
        },
      }
    }
    case 'auth0':
      return {
        status: e.status,
        body: {
          statusCode: e.status,
          error: reason,
          message: e.message,
          errorCode: e.auth0Code || AUTH0_CODES[e.code] || String(e.code).toLowerCase(),
        },
      }
    case 'auth0-oauth':
      return {
        status: e.status,
        body: { error: e.code === 'VALIDATION_ERROR' || e.code === 'INVALID_JSON' ? 'invalid_request' : String(e.code).toLowerCase(), error_description: e.message },
      }
    case 'fiskil':
      return {
        status: e.status,
        body: {
          id: `err_${crypto.randomBytes(12).toString('hex')}`,
          name: FISKIL_NAMES[e.code] || String(e.code).toLowerCase(),
          message: e.message,
        },
      }
    default:
      return { status: e.status, body: { statusCode: e.status, error: reason, code: e.code, message: e.message } }
  }
}

/** Installs the error and not-found handlers on the root instance. */
function install(app) {
  app.setErrorHandler((err, request, reply) => {
    const vendor = vendorOf(request)
    const { status, body } = render(vendor, err, request.id)
    if (status >= 500) {
      request.log.error({ err }, 'request failed')
    } else {
      // Only the code: a framework's message may quote input.
      request.log.info({ statusCode: status, code: normalize(err).code }, 'request rejected')
    }
    reply.code(status).type('application/json; charset=utf-8').send(body)
  })
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0]
    const err = new HttpError(404, 'NOT_FOUND', `Route ${request.method}:${path} not found`, { auth0Code: 'invalid_uri' })
    const { status, body } = render(vendorOf(request), err, request.id)
    reply.code(status).type('application/json; charset=utf-8').send(body)
  })
}

module.exports = { HttpError, install, render, normalize, vendorOf }

'use strict'
// Request authentication, one preHandler per kind of credential. Each sets `request.lv`:
// `{ client, orgId, environment, keyId? , claims? }`, where `client` is the Client of the scope
// the credential opens. A credential of another kind is refused, so a session token never
// opens a management route and an API key never acts as an end user.

const { HttpError } = require('./errors')

/** Audiences of the access tokens each vendor's token endpoint issues. */
const AUDIENCE = { auth0: 'auth0:management-api-v2', fiskil: 'fiskil:data-api-v1' }

function bearer(request) {
  const header = request.headers.authorization
  if (typeof header !== 'string') return null
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header)
  return m ? m[1] : null
}

/**
 * Cobalt management routes: `x-api-key`. A callback hook: a key seen within the cache time
 * resolves without a promise (the hot path of every management request).
 */
function cobaltApiKey(app) {
  const { scopes } = app.linkvault
  return function apiKey(request, reply, done) {
    const key = request.headers['x-api-key']
    if (typeof key !== 'string' || key === '') return done(new HttpError(401, 'UNAUTHORIZED', 'Invalid Credentials'))
    const cached = scopes.cachedApiKey(key)
    if (cached) {
      request.lv = cached
      return done()
    }
    scopes.byApiKey(key).then((found) => {
      request.lv = found
      done()
    }, done)
  }
}

/** Cobalt end-user routes: `Authorization: Bearer <session token>`. */
function cobaltSession(app) {
  return async function sessionToken(request) {
    const token = bearer(request)
    if (!token) throw new HttpError(401, 'INVALID_TOKEN', 'Invalid token')
    const { client, claims } = await app.linkvault.scopes.bySessionToken(token)
    request.lv = { client, orgId: claims.org_id, environment: claims.environment, claims, token }
  }
}

/** Auth0 Management API and Fiskil routes: `Authorization: Bearer <access token>`. */
function accessToken(app, audience) {
  return async function access(request) {
    const token = bearer(request)
    if (!token) throw new HttpError(401, 'UNAUTHORIZED', 'Missing authentication', { auth0Code: 'invalid_token' })
    try {
      request.lv = await app.linkvault.scopes.byAccessToken(token, audience)
    } catch (e) {
      if (e instanceof HttpError && e.status === 401) {
        throw new HttpError(401, 'UNAUTHORIZED', 'Invalid token', { auth0Code: 'invalid_token' })
      }
      throw e
    }
  }
}

module.exports = { AUDIENCE, bearer, cobaltApiKey, cobaltSession, accessToken }

'use strict'
// Which (org, environment) a request acts in, and the Client bound to it.
//
// One database holds many scopes. The server opens one root Client and derives a Client per
// scope with `client.forScope()` (same store, same threads, its own scope and token verifier),
// created on first use and kept until the server closes. The credential a request carries
// decides the scope: an API key or an access token through the store's key table, a session
// token through its own (signed) claims.
//
// Key and access-token look-ups are cached for `cacheMs` (default 1 s): a request path then
// costs no database read for its credential, and a key revoked by `linkvault keys revoke` (any
// process) stops working within that time (an access token also at its expiry). Only
// successful look-ups are cached (at most 10,000, in memory only), so a guessed key costs a
// read every time and never fills memory.

const { HttpError } = require('./errors')

/** Most cached credentials (oldest dropped first). */
const MAX_CACHED = 10000

class TtlCache {
  constructor(ms) {
    this.ms = ms
    this.map = new Map()
  }
  get(key) {
    const hit = this.map.get(key)
    if (!hit) return undefined
    if (hit.until < Date.now()) {
      this.map.delete(key)
      return undefined
    }
    return hit.value
  }
  set(key, value, until = Date.now() + this.ms) {
    if (this.ms <= 0) return
    if (this.map.size >= MAX_CACHED) this.map.delete(this.map.keys().next().value)
    this.map.set(key, { value, until: Math.min(until, Date.now() + this.ms) })
  }
  clear() {
    this.map.clear()
  }
}

function unauthorized(message = 'Invalid Credentials') {
  return new HttpError(401, 'UNAUTHORIZED', message)
}

/** The unverified payload of a JWT, or null (verification happens in the scope's Client). */
function jwtPayload(token) {
  const parts = token.split('.')
  if (parts.length !== 3 || parts[1].length > 4096) return null
  try {
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'))
    return payload && typeof payload === 'object' ? payload : null
  } catch {
    return null
  }
}

class Scopes {
  /**
   * @param {import('linkvault').Client} root the server's own Client; every scoped Client
   *   shares its store.
   * @param {{ cacheMs?: number }} [options]
   */
  constructor(root, options = {}) {
    this.root = root
    this.clients = new Map()
    this.keys = new TtlCache(options.cacheMs ?? 1000)
    this.tokens = new TtlCache(options.cacheMs ?? 1000)
    this.closed = false
  }

  /**
   * The Client of (orgId, environment). `create: false` refuses a scope the database does not
   * hold yet (NOT_FOUND), so that unauthenticated input (a forged token's claims) cannot create
   * scopes.
   */
  client(orgId, environment, { create = true } = {}) {
    if (this.closed) return Promise.reject(new HttpError(503, 'CLIENT_CLOSED', 'server is shutting down'))
    if (orgId === this.root.orgId && environment === this.root.environment) return Promise.resolve(this.root)
    const key = `${environment}\u0000${orgId}`
    let entry = this.clients.get(key)
    if (!entry) {
      entry = this.root.forScope({ orgId, environment, create })
      this.clients.set(key, entry)
      // A failed open is forgotten so that a later request retries.
      entry.catch(() => this.clients.delete(key))
    }
    return entry
  }

  /** What `byApiKey` would answer from the cache alone, else undefined. */
  cachedApiKey(apiKey) {
    return this.keys.get(apiKey)
  }

  /** `{ client, keyId, orgId, environment }` for a Cobalt `x-api-key`, else a 401. */
  async byApiKey(apiKey) {
    if (typeof apiKey !== 'string' || apiKey.length === 0 || apiKey.length > 256) throw unauthorized()
    const cached = this.keys.get(apiKey)
    if (cached) return cached
    const key = await this.root.resolveApiKey(apiKey)
    if (!key) throw unauthorized()
    const found = { client: await this.client(key.org_id, key.environment), keyId: key.client_id, orgId: key.org_id, environment: key.environment }
    this.keys.set(apiKey, found)
    return found
  }

  /**
   * `{ client, keyId, orgId, environment }` for an access token issued for `audience`, else a
   * 401 (unknown, expired, another audience, or its key revoked).
   */
  async byAccessToken(token, audience) {
    if (typeof token !== 'string' || token.length === 0 || token.length > 512) throw unauthorized('Invalid token')
    const cacheKey = `${audience}\u0000${token}`
    const cached = this.tokens.get(cacheKey)
    if (cached) return cached
    const grant = await this.root.resolveAccessToken(token, audience)
    if (!grant) throw unauthorized('Invalid token')
    const found = { client: await this.client(grant.org_id, grant.environment), keyId: grant.client_id, orgId: grant.org_id, environment: grant.environment }
    this.tokens.set(cacheKey, found, grant.expires_at * 1000)
    return found
  }

  /**
   * `{ client, claims }` for a Cobalt session token: its claims name the scope, whose Client
   * verifies signature, expiry and revocation. Anything else is `INVALID_TOKEN` (401).
   */
  async bySessionToken(token) {
    const payload = typeof token === 'string' && token.length <= 8192 ? jwtPayload(token) : null
    const invalid = () => new HttpError(401, 'INVALID_TOKEN', 'Invalid token')
    if (!payload || typeof payload.org_id !== 'string' || typeof payload.environment !== 'string') throw invalid()
    if (payload.environment !== 'test' && payload.environment !== 'production') throw invalid()
    let client
    try {
      client = await this.client(payload.org_id, payload.environment, { create: false })
    } catch (e) {
      if (e && (e.code === 'NOT_FOUND' || e.code === 'VALIDATION_ERROR')) throw invalid()
      throw e
    }
    try {
      return { client, claims: client.verifySessionTokenSync(token) }
    } catch (e) {
      if (e && e.status === 401) throw new HttpError(401, 'INVALID_TOKEN', 'Invalid token')
      throw e
    }
  }

  /** Issues an access token for client credentials, or null when they are not valid. */
  issueAccessToken(clientId, clientSecret, audience, ttlSeconds) {
    return this.root.issueAccessToken({ client_id: clientId, client_secret: clientSecret, audience, ttl_seconds: ttlSeconds })
  }

  /** Closes every scoped Client (not the root). */
  async close() {
    this.closed = true
    const entries = [...this.clients.values()]
    this.clients.clear()
    this.keys.clear()
    this.tokens.clear()
    await Promise.all(
      entries.map((p) =>
        p.then(
          (c) => c.close(),
          () => {},
        ),
      ),
    )
  }
}

module.exports = { Scopes, jwtPayload }

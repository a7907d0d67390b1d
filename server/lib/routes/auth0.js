'use strict'
// Auth0: the client-credentials grant of the Authentication API (POST /oauth/token) and the
// Management API v2 users and identities routes that node-auth0 calls for account linking.
// Every answer is JSON (node-auth0 v4 parses every response body).

const { HttpError } = require('../errors')
const { AUDIENCE, accessToken } = require('../auth')
const S = require('../schemas')

/** Lifetime of a Management API token (Auth0's default: 24 h). */
const TOKEN_TTL = 86400
const SCOPE = 'read:users update:users'

const errorResponses = { 400: S.auth0Error, 401: S.auth0Error, 404: S.auth0Error, 409: S.auth0Error, 413: S.auth0Error }

function oauthError(status, error, description) {
  // Rendered by the error handler as { error, error_description } (vendor 'auth0-oauth').
  return new HttpError(status, error, description)
}

/** Auth0's `fields` / `include_fields` projection of a user object. */
function project(user, query) {
  if (typeof query.fields !== 'string' || query.fields === '') return user
  const fields = new Set(query.fields.split(',').map((f) => f.trim()).filter(Boolean))
  const include = query.include_fields !== false
  return Object.fromEntries(Object.entries(user).filter(([k]) => fields.has(k) === include))
}

const projection = {
  type: 'object',
  properties: {
    fields: { type: 'string', description: 'Comma-separated list of fields to include or exclude' },
    include_fields: { type: 'boolean', default: true, description: 'true: only `fields`; false: all but `fields`' },
  },
}

function userNotFound() {
  return new HttpError(404, 'NOT_FOUND', 'The user does not exist.', { auth0Code: 'inexistent_user' })
}

async function orUserNotFound(call) {
  try {
    return await call()
  } catch (e) {
    if (e && e.code === 'NOT_FOUND') throw userNotFound()
    throw e
  }
}

/** Whether an `audience` names this Management API (`https://{domain}/api/v2/`). */
function isManagementAudience(audience) {
  return audience === undefined || /^https?:\/\/[^/]+\/api\/v2\/?$/.test(audience)
}

module.exports = async function auth0Routes(app) {
  const access = accessToken(app, AUDIENCE.auth0)
  const tags = ['auth0']
  const security = [{ auth0AccessToken: [] }]
  const config = { vendor: 'auth0' }

  app.post(
    '/oauth/token',
    {
      config: { vendor: 'auth0-oauth' },
      schema: {
        tags,
        summary: 'Client-credentials grant: a Management API access token',
        description:
          'Form (`application/x-www-form-urlencoded`) or JSON body. `client_id` and `client_secret` come from `linkvault keys create`; `audience`, when sent, must be `https://{domain}/api/v2/`. Errors are OAuth 2.0 bodies `{ error, error_description }`, as Auth0\'s Authentication API answers.',
        body: {
          type: 'object',
          properties: {
            grant_type: { type: 'string', description: 'client_credentials' },
            client_id: { type: 'string' },
            client_secret: { type: 'string' },
            audience: { type: 'string' },
            scope: { type: 'string' },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: { access_token: { type: 'string' }, token_type: { type: 'string' }, expires_in: { type: 'integer' }, scope: { type: 'string' } },
          },
          400: { type: 'object', properties: { error: { type: 'string' }, error_description: { type: 'string' } } },
          401: { type: 'object', properties: { error: { type: 'string' }, error_description: { type: 'string' } } },
        },
      },
    },
    async (request) => {
      const body = request.body ?? {}
      if (body.grant_type !== 'client_credentials') {
        throw oauthError(400, 'unsupported_grant_type', 'Unsupported grant type: only client_credentials is supported')
      }
      if (typeof body.client_id !== 'string' || typeof body.client_secret !== 'string' || body.client_id === '' || body.client_secret === '') {
        throw oauthError(400, 'invalid_request', 'client_id and client_secret are required')
      }
      if (!isManagementAudience(body.audience)) {
        throw oauthError(403, 'access_denied', 'Service not found: only the Management API (https://{domain}/api/v2/) is served')
      }
      const issued = await app.linkvault.scopes.issueAccessToken(body.client_id, body.client_secret, AUDIENCE.auth0, TOKEN_TTL)
      if (!issued) throw oauthError(401, 'access_denied', 'Unauthorized')
      return { access_token: issued.access_token, token_type: 'Bearer', expires_in: issued.expires_in, scope: SCOPE }
    },
  )

  const idParam = { type: 'object', properties: { id: { type: 'string', description: 'user_id, e.g. auth0|123 (percent-encoded in the path)' } }, required: ['id'] }

  app.get(
    '/api/v2/users/:id',
    {
      config,
      preHandler: access,
      schema: { tags, summary: 'Get a user (node-auth0 users.get)', security, params: idParam, querystring: projection, response: { 200: S.auth0User, ...errorResponses } },
    },
    async (request) => {
      const user = await orUserNotFound(() => request.lv.client.getUser(request.params.id))
      return project(user, request.query)
    },
  )

  app.get(
    '/api/v2/users-by-email',
    {
      config,
      preHandler: access,
      schema: {
        tags,
        summary: 'Users by email (node-auth0 usersByEmail.getByEmail / users.listUsersByEmail)',
        description: 'Matched after trimming and case folding, consistently right after writes (Auth0 matches case-sensitively).',
        security,
        querystring: { type: 'object', properties: { ...projection.properties, email: { type: 'string' } }, required: ['email'] },
        response: { 200: { type: 'array', items: S.auth0User }, ...errorResponses },
      },
    },
    async (request) => {
      const users = await request.lv.client.getUsersByEmail(request.query.email)
      return users.map((u) => project(u, request.query))
    },
  )

  app.post(
    '/api/v2/users/:id/identities',
    {
      config,
      preHandler: access,
      schema: {
        tags,
        summary: 'Link an identity or user to a primary user (node-auth0 users.link / users.identities.link)',
        description:
          'Server mode only (`provider` + `user_id`, optional `connection_id`); `link_with` (an ID token) is refused. Linking the own identity of another user merges that user into the primary; unlinking restores it. Answers the primary\'s identities.',
        security,
        params: idParam,
        body: {
          type: 'object',
          properties: {
            provider: { type: 'string' },
            user_id: { type: ['string', 'number'] },
            connection_id: { type: 'string' },
            link_with: { type: 'string' },
          },
        },
        response: { 201: { type: 'array', items: S.identity }, ...errorResponses },
      },
    },
    async (request, reply) => {
      const body = request.body ?? {}
      if (body.link_with !== undefined) {
        throw new HttpError(400, 'VALIDATION_ERROR', 'link_with is not supported: send provider and user_id', { auth0Code: 'operation_not_supported', field: 'link_with' })
      }
      const { client } = request.lv
      const id = request.params.id
      const identity = { provider: body.provider, user_id: body.user_id }
      if (body.connection_id !== undefined) identity.connection_id = body.connection_id
      await orUserNotFound(() => client.linkIdentity(id, identity))
      const user = await orUserNotFound(() => client.getUser(id))
      reply.code(201)
      return user.identities
    },
  )

  app.delete(
    '/api/v2/users/:id/identities/:provider/:user_id',
    {
      config,
      preHandler: access,
      schema: {
        tags,
        summary: 'Unlink an identity (node-auth0 users.unlink / users.identities.delete)',
        description: 'The identity leaves as a standalone user, restored with its data when it came by a merge. Answers the remaining identities.',
        security,
        params: { type: 'object', properties: { id: { type: 'string' }, provider: { type: 'string' }, user_id: { type: 'string' } }, required: ['id', 'provider', 'user_id'] },
        response: { 200: { type: 'array', items: S.identity }, ...errorResponses },
      },
    },
    async (request) => {
      const { client } = request.lv
      const { id, provider, user_id: userId } = request.params
      try {
        await client.unlinkIdentity(id, provider, userId)
      } catch (e) {
        if (e && e.code === 'NOT_FOUND') {
          throw new HttpError(404, 'NOT_FOUND', 'The identity or user does not exist.', { auth0Code: 'inexistent_identity' })
        }
        throw e
      }
      const user = await orUserNotFound(() => client.getUser(id))
      return user.identities
    },
  )
}

'use strict'
// Fiskil Data API v1: the client-credentials token, end users, auth sessions and consents.
// End users are linked accounts (an end user's id is its linked_account_id).

const { HttpError } = require('../errors')
const { AUDIENCE, accessToken } = require('../auth')
const S = require('../schemas')

/** Fiskil's token lifetime: one hour, no refresh token. */
const TOKEN_TTL = 3600
/** Where a session's consent page is served (the sandbox consent page): `${CONSENT_PATH}<session_id>`. */
const CONSENT_PATH = '/link/session/'

const errorResponses = { 400: S.fiskilError, 401: S.fiskilError, 404: S.fiskilError, 413: S.fiskilError }

function endUserNotFound(id) {
  return new HttpError(404, 'end_user_not_found', `end user ${id} not found`)
}

async function orEndUserNotFound(id, call) {
  try {
    return await call()
  } catch (e) {
    if (e && e.code === 'NOT_FOUND') throw endUserNotFound(id)
    throw e
  }
}

/** The session's `auth_url`: the client's (authUrlBase) when absolute, else this server's consent page. */
function authUrl(app, request, session) {
  if (typeof session.auth_url === 'string' && /^https?:\/\//.test(session.auth_url)) return session.auth_url
  const base = app.linkvault.baseUrl(request)
  if (typeof session.auth_url === 'string' && session.auth_url.startsWith('/')) return `${base}${session.auth_url}`
  return `${base}${CONSENT_PATH}${encodeURIComponent(session.session_id)}`
}

const endUserBody = {
  type: 'object',
  properties: {
    email: { type: 'string' },
    name: { type: 'string' },
    phone: { type: 'string', description: 'E.164' },
    abn: { type: 'string', description: '11 digits with a valid ABN checksum' },
  },
}

module.exports = async function fiskilRoutes(app) {
  const access = accessToken(app, AUDIENCE.fiskil)
  const tags = ['fiskil']
  const security = [{ fiskilAccessToken: [] }]
  const config = { vendor: 'fiskil' }
  const idParam = { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] }

  app.post(
    '/v1/token',
    {
      config,
      schema: {
        tags,
        summary: 'An access token for client credentials (one hour, no refresh token)',
        body: { type: 'object', properties: { client_id: { type: 'string' }, client_secret: { type: 'string' } }, required: ['client_id', 'client_secret'] },
        response: {
          200: { type: 'object', properties: { access_token: { type: 'string' }, token_type: { type: 'string' }, expires_in: { type: 'integer' } } },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { client_id: id, client_secret: secret } = request.body
      const issued = await app.linkvault.scopes.issueAccessToken(id, secret, AUDIENCE.fiskil, TOKEN_TTL)
      if (!issued) throw new HttpError(401, 'unauthorized', 'invalid client credentials')
      return { access_token: issued.access_token, token_type: 'Bearer', expires_in: issued.expires_in }
    },
  )

  app.post(
    '/v1/end-users',
    {
      config,
      preHandler: access,
      schema: { tags, summary: 'Create an end user', security, body: endUserBody, response: { 200: { type: 'object', properties: { end_user_id: { type: 'string' } } }, ...errorResponses } },
    },
    async (request) => request.lv.client.createEndUser(request.body ?? {}),
  )

  app.get(
    '/v1/end-users',
    {
      config,
      preHandler: access,
      schema: {
        tags,
        summary: 'End users by email',
        description: 'Matched after trimming and case folding.',
        security,
        querystring: { type: 'object', properties: { email: { type: 'string' } }, required: ['email'] },
        response: { 200: { type: 'array', items: S.endUser }, ...errorResponses },
      },
    },
    async (request) => request.lv.client.getEndUsers({ email: request.query.email }),
  )

  app.get(
    '/v1/end-users/:id',
    { config, preHandler: access, schema: { tags, summary: 'Get an end user', security, params: idParam, response: { 200: S.endUser, ...errorResponses } } },
    async (request) => orEndUserNotFound(request.params.id, () => request.lv.client.getEndUser(request.params.id)),
  )

  app.post(
    '/v1/end-users/:id',
    {
      config,
      preHandler: access,
      schema: {
        tags,
        summary: 'Update an end user (204)',
        security,
        params: idParam,
        body: { ...endUserBody, properties: { ...endUserBody.properties, session_id: { type: 'string', description: 'accepted and ignored' } } },
        response: { 204: { type: 'null', description: 'Updated' }, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { session_id: _ignored, ...fields } = request.body ?? {}
      await orEndUserNotFound(request.params.id, () => request.lv.client.updateEndUser(request.params.id, fields))
      return reply.code(204).send()
    },
  )

  app.delete(
    '/v1/end-users/:id',
    {
      config,
      preHandler: access,
      schema: { tags, summary: 'Delete an end user (204), with everything its linked account holds', security, params: idParam, response: { 204: { type: 'null', description: 'Deleted' }, ...errorResponses } },
    },
    async (request, reply) => {
      await orEndUserNotFound(request.params.id, () => request.lv.client.deleteEndUser(request.params.id))
      return reply.code(204).send()
    },
  )

  app.post(
    '/v1/auth/session',
    {
      config,
      preHandler: access,
      schema: {
        tags,
        summary: 'Create an auth session for the consent flow',
        description: `\`redirect_uri\` and \`cancel_uri\` go together (the Link SDK flow sends neither). \`auth_url\` is the server's sandbox consent page (${CONSENT_PATH}) unless the store was opened with authUrlBase.`,
        security,
        body: {
          type: 'object',
          properties: {
            end_user_id: { type: 'string' },
            redirect_uri: { type: 'string' },
            cancel_uri: { type: 'string' },
            institution_id: { type: 'string' },
            permissions: { type: 'array', items: { type: 'string' } },
            arrangement_id: { type: 'string', description: 'renew this consent' },
          },
          required: ['end_user_id'],
        },
        response: {
          200: { type: 'object', properties: { id: { type: 'string' }, session_id: { type: 'string' }, auth_url: { type: 'string' }, expires_at: { type: 'integer' } } },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const body = request.body
      const session = await orEndUserNotFound(body.end_user_id, () => request.lv.client.createAuthSession(body))
      return { id: session.id, session_id: session.session_id, auth_url: authUrl(app, request, session), expires_at: session.expires_at }
    },
  )

  app.get(
    '/v1/consent',
    {
      config,
      preHandler: access,
      schema: {
        tags,
        summary: 'List consents',
        security,
        querystring: { type: 'object', properties: { end_user_id: { type: 'string' }, active: { type: 'boolean' } } },
        response: { 200: { type: 'array', items: S.consent }, ...errorResponses },
      },
    },
    async (request) => {
      const q = {}
      if (request.query.end_user_id !== undefined) q.end_user_id = request.query.end_user_id
      if (request.query.active !== undefined) q.active = request.query.active
      return orEndUserNotFound(q.end_user_id, () => request.lv.client.listConsents(q))
    },
  )

  app.delete(
    '/v1/consent/:arrangement_id',
    {
      config,
      preHandler: access,
      schema: {
        tags,
        summary: 'Revoke a consent (204)',
        security,
        params: { type: 'object', properties: { arrangement_id: { type: 'string' } }, required: ['arrangement_id'] },
        response: { 204: { type: 'null', description: 'Revoked (or already ended)' }, ...errorResponses },
      },
    },
    async (request, reply) => {
      try {
        await request.lv.client.revokeConsent(request.params.arrangement_id)
      } catch (e) {
        if (e && e.code === 'NOT_FOUND') throw new HttpError(404, 'consent_not_found', `consent ${request.params.arrangement_id} not found`)
        throw e
      }
      return reply.code(204).send()
    },
  )
}

module.exports.CONSENT_PATH = CONSENT_PATH

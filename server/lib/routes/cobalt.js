'use strict'
// Cobalt (Refold) public API: linked accounts and session tokens under /api/v2/public, and
// the org basics of /api/v3/org/basics that @cobaltio/cobalt-js's getAccountDetails() reads.
// Management routes take `x-api-key`; end-user routes take `Authorization: Bearer <session
// token>`; `PUT /linked-account` takes either (with a session token the account is the
// token's, as Cobalt v3 and newer browser SDKs' updateAccount do).

const { HttpError } = require('../errors')
const { cobaltApiKey, cobaltSession, bearer } = require('../auth')
const S = require('../schemas')

const PREFIX = '/api/v2/public'

const errorResponses = { 400: S.cobaltError, 401: S.cobaltError, 404: S.cobaltError, 413: S.cobaltError }

function notFound(id, lv) {
  return new HttpError(404, 'NOT_FOUND', `Linked Account with account id ${id} for org ${lv.orgId} in environment ${lv.environment} not found`)
}

/** `promise`, with the core's NOT_FOUND turned into Cobalt's message for account `id`. */
function forAccount(lv, id, promise) {
  return promise.catch((e) => {
    throw e && e.code === 'NOT_FOUND' ? notFound(id, lv) : e
  })
}

function sessionTokenBody(issued) {
  return {
    token: issued.token,
    refresh_token: issued.refresh_token,
    expires_in: issued.expires_in,
    refresh_expires_in: issued.refresh_expires_in,
  }
}

module.exports = async function cobaltRoutes(app) {
  const apiKey = cobaltApiKey(app)
  const session = cobaltSession(app)
  const config = { vendor: 'cobalt' }
  const tags = ['cobalt']
  const apiKeySecurity = [{ cobaltApiKey: [] }]
  const sessionSecurity = [{ cobaltSessionToken: [] }]

  app.post(
    `${PREFIX}/linked-account`,
    {
      config,
      preHandler: apiKey,
      schema: {
        tags,
        summary: 'Create a linked account (Node SDK createLinkedAccount)',
        security: apiKeySecurity,
        body: S.linkedAccountPayload,
        response: { 200: S.linkedAccount, ...errorResponses },
      },
    },
    (request) => request.lv.client.createLinkedAccount(request.body ?? {}),
  )

  app.put(
    `${PREFIX}/linked-account`,
    {
      config,
      // x-api-key: a management upsert. Otherwise a Bearer session token: the token's account.
      preHandler: (request, reply, done) => {
        if (request.headers['x-api-key'] !== undefined || !bearer(request)) return apiKey(request, reply, done)
        session(request).then(() => done(), done)
      },
      schema: {
        tags,
        summary: 'Create or update a linked account (Node SDK upsertLinkedAccount; with a session token: browser SDK updateAccount)',
        description:
          'With `x-api-key`, `linked_account_id` (or `account_id`) names the account. With a Bearer session token the account is the token\'s and any id in the body is ignored; `your_app` (credentials) can only be set with an API key.',
        security: [...apiKeySecurity, ...sessionSecurity],
        body: S.linkedAccountPayload,
        response: { 200: S.linkedAccount, ...errorResponses },
      },
    },
    async (request) => {
      const { client, claims } = request.lv
      const body = request.body ?? {}
      if (!claims) return client.upsertLinkedAccount(body)
      if (body.your_app !== undefined || (body.payload && body.payload.your_app !== undefined)) {
        throw new HttpError(400, 'VALIDATION_ERROR', 'your_app can only be set with an API key', { field: 'your_app' })
      }
      const { linked_account_id: _id, account_id: _alias, ...rest } = body
      return client.upsertLinkedAccount({ ...rest, linked_account_id: claims.linked_account_id })
    },
  )

  app.get(
    `${PREFIX}/linked-account`,
    {
      config,
      preHandler: apiKey,
      schema: {
        tags,
        summary: 'List linked accounts (Node SDK getAllLinkedAccounts)',
        security: apiKeySecurity,
        querystring: {
          type: 'object',
          properties: {
            page: { type: 'integer', minimum: 1, default: 1 },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 10 },
          },
        },
        response: {
          200: {
            type: 'object',
            description: 'mongoose-paginate envelope',
            properties: {
              docs: { type: 'array', items: S.linkedAccount },
              totalDocs: { type: 'integer' },
              limit: { type: 'integer' },
              totalPages: { type: 'integer' },
              page: { type: 'integer' },
              pagingCounter: { type: 'integer' },
              hasPrevPage: { type: 'boolean' },
              hasNextPage: { type: 'boolean' },
              prevPage: { type: 'integer', nullable: true },
              nextPage: { type: 'integer', nullable: true },
            },
          },
          ...errorResponses,
        },
      },
    },
    (request) => request.lv.client.getAllLinkedAccounts({ page: request.query.page, limit: request.query.limit }),
  )

  const idParams = { type: 'object', properties: { linked_account_id: { type: 'string' } }, required: ['linked_account_id'] }

  app.get(
    `${PREFIX}/linked-account/:linked_account_id`,
    {
      config,
      preHandler: apiKey,
      schema: {
        tags,
        summary: 'Get a linked account (Node SDK getLinkedAccountById)',
        security: apiKeySecurity,
        params: idParams,
        response: { 200: S.linkedAccount, ...errorResponses },
      },
    },
    (request) => {
      const id = request.params.linked_account_id
      return forAccount(request.lv, id, request.lv.client.getLinkedAccountById(id))
    },
  )

  app.delete(
    `${PREFIX}/linked-account/:linked_account_id`,
    {
      config,
      preHandler: apiKey,
      schema: {
        tags,
        summary: 'Delete a linked account and everything it holds (Node SDK deleteLinkedAccount)',
        security: apiKeySecurity,
        params: idParams,
        response: { 200: { type: 'object', properties: { message: { type: 'string' } } }, ...errorResponses },
      },
    },
    (request) => {
      const id = request.params.linked_account_id
      return forAccount(request.lv, id, request.lv.client.deleteLinkedAccount(id))
    },
  )

  app.post(
    `${PREFIX}/session-token`,
    {
      config,
      preHandler: apiKey,
      schema: {
        tags,
        summary: 'Issue a session token for a linked account (Node SDK getTokenForLinkedAccount)',
        description: 'An unexpired token for the account is returned again unless `force_refresh=true`. The SDK\'s `linked_account_id` header is accepted when the body has no id.',
        security: apiKeySecurity,
        querystring: { type: 'object', properties: { force_refresh: { type: 'boolean', default: false } } },
        body: { type: 'object', properties: { linked_account_id: { type: 'string' } } },
        response: {
          200: {
            type: 'object',
            properties: {
              token: { type: 'string' },
              refresh_token: { type: 'string' },
              expires_in: { type: 'integer' },
              refresh_expires_in: { type: 'integer' },
            },
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const body = request.body ?? {}
      const header = request.headers.linked_account_id
      const id = body.linked_account_id ?? (typeof header === 'string' ? header : undefined)
      try {
        const issued = await request.lv.client.getTokenForLinkedAccount({ linked_account_id: id, force_refresh: request.query.force_refresh === true })
        return sessionTokenBody(issued)
      } catch (e) {
        if (e && e.code === 'NOT_FOUND') {
          throw new HttpError(400, 'INVALID_LINKED_ACCOUNT_ID', `No linked account found for account id : ${id} in environment ${request.lv.environment}`)
        }
        throw e
      }
    },
  )

  app.post(
    `${PREFIX}/session-token/revoke`,
    {
      config,
      preHandler: session,
      schema: {
        tags,
        summary: 'Revoke the session token sent (and its refresh token)',
        security: sessionSecurity,
        response: { 200: { type: 'object', properties: { success: { type: 'boolean' }, revoked_count: { type: 'integer' } } }, ...errorResponses },
      },
    },
    async (request) => {
      const r = await request.lv.client.revokeSessionToken(request.lv.token)
      return { success: true, revoked_count: r.revoked_count }
    },
  )

  app.get(
    `${PREFIX}/session/active-linked-account`,
    {
      config,
      preHandler: session,
      schema: {
        tags,
        summary: 'The linked account of the session token sent',
        security: sessionSecurity,
        response: { 200: S.linkedAccount, ...errorResponses },
      },
    },
    (request) => {
      const id = request.lv.claims.linked_account_id
      return forAccount(request.lv, id, request.lv.client.getLinkedAccountById(id))
    },
  )

  app.get(
    '/api/v3/org/basics',
    {
      config,
      preHandler: session,
      schema: {
        tags,
        summary: "The org's basics (browser SDK getAccountDetails)",
        description: '`name` and `logo` are the server\'s appName and appLogo options (default: the org id and null).',
        security: sessionSecurity,
        response: { 200: { type: 'object', properties: { name: { type: 'string' }, logo: { type: 'string', nullable: true } } }, ...errorResponses },
      },
    },
    async (request) => ({ name: app.linkvault.appName ?? request.lv.orgId, logo: app.linkvault.appLogo ?? null }),
  )
}

'use strict'
// JSON schemas shared by the routes: they validate input (bodies without type coercion,
// query strings with it) and generate /openapi.json. Responses are described for the
// document only; they are serialized with JSON.stringify (see index.js), so a schema can never
// drop or coerce a field of an answer.

const cobaltError = {
  type: 'object',
  description: "Cobalt's error body",
  properties: {
    status_code: { type: 'integer' },
    http_error_type: { type: 'string', example: 'BAD_REQUEST' },
    error: { type: 'string' },
    message: { type: 'string' },
    request_id: { type: 'string' },
  },
}

const auth0Error = {
  type: 'object',
  description: "Auth0's Management API error body",
  properties: {
    statusCode: { type: 'integer' },
    error: { type: 'string' },
    message: { type: 'string' },
    errorCode: { type: 'string' },
  },
}

const fiskilError = {
  type: 'object',
  description: "Fiskil's error body",
  properties: { id: { type: 'string' }, name: { type: 'string' }, message: { type: 'string' } },
}

const anyObject = { type: 'object', additionalProperties: true }

const udfRow = {
  type: 'object',
  properties: {
    key_name: { type: 'string' },
    key_value: {},
    _id: { type: 'string' },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
  },
}

const linkedAccount = {
  type: 'object',
  description: "Cobalt's linked-account object",
  properties: {
    _id: { type: 'string' },
    associated_org: { type: 'string' },
    account_id: { type: 'string' },
    environment: { type: 'string', enum: ['test', 'production'] },
    name: { type: 'string', nullable: true },
    udf: { type: 'array', items: udfRow },
    your_app: { type: 'object', properties: { app_id: { type: 'string' } } },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
    __v: { type: 'integer' },
    new_account: { type: 'boolean' },
  },
}

const linkedAccountPayload = {
  type: 'object',
  description: "Cobalt's createLinkedAccountPayload",
  properties: {
    linked_account_id: { type: 'string' },
    account_id: { type: 'string', description: 'alias of linked_account_id (Cobalt v3)' },
    name: { type: ['string', 'null'] },
    udf: anyObject,
    your_app: {
      type: ['object', 'null'],
      properties: { app_id: { type: 'string' }, auth_credentials: anyObject },
    },
    payload: { type: 'object', description: 'v3 nesting of name, udf and your_app (wins over the flat fields)' },
  },
}

const identity = {
  type: 'object',
  description: "Auth0's identity object",
  properties: {
    connection: { type: 'string' },
    user_id: { type: 'string' },
    provider: { type: 'string' },
    isSocial: { type: 'boolean' },
    profileData: anyObject,
  },
}

const auth0User = {
  type: 'object',
  description: "Auth0's user object",
  additionalProperties: true,
  properties: {
    user_id: { type: 'string' },
    email: { type: 'string' },
    email_verified: { type: 'boolean' },
    name: { type: 'string' },
    created_at: { type: 'string' },
    updated_at: { type: 'string' },
    identities: { type: 'array', items: identity },
    app_metadata: anyObject,
    user_metadata: anyObject,
  },
}

const endUser = {
  type: 'object',
  description: "Fiskil's end user",
  properties: {
    id: { type: 'string' },
    email: { type: 'string' },
    name: { type: 'string' },
    phone: { type: 'string' },
    abn: { type: 'string' },
  },
}

const consent = {
  type: 'object',
  description: "Fiskil's consent object",
  additionalProperties: true,
  properties: {
    arrangement_id: { type: 'string' },
    active: { type: 'boolean' },
    app_name: { type: 'string', nullable: true },
    app_logo: { type: 'string', nullable: true },
    created_at: { type: 'string' },
    duration: { type: 'integer' },
    end_user_id: { type: 'string' },
    end_user_email: { type: 'string', nullable: true },
    expires_at: { type: 'string' },
    institution_id: { type: 'string' },
    institution_name: { type: 'string', nullable: true },
    institution_logo: { type: 'string', nullable: true },
    institution_type: { type: 'string', nullable: true },
    last_accessed: { type: 'string', nullable: true },
    last_consent: { type: 'string' },
    permissions: { type: 'array', items: { type: 'string' } },
    termination_reason: { type: 'string', nullable: true },
    account_ids: { type: 'array', items: { type: 'string' } },
  },
}

module.exports = {
  cobaltError,
  auth0Error,
  fiskilError,
  anyObject,
  linkedAccount,
  linkedAccountPayload,
  identity,
  auth0User,
  endUser,
  consent,
}

// Hostile input: every public method (read from index.d.ts, so a new method without a row here
// fails the suite) x hostile values in every argument position and in the fields of object
// arguments. Each call must end in a VALIDATION_ERROR naming a field of that method, a
// documented domain error (e.g. NOT_FOUND for an id that does not exist), or success with an
// exact round trip of what was stored — never a crash, a hang, an error without `code`, a
// STORAGE_ERROR, or a partial write (a rejected mutation appends no event).
const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')
const linkvault = require('..')
const { Client, tmpDir, openClient, storeOptions, KEY } = require('./helpers')

const BIG = 'a'.repeat(10 * 1024 * 1024)
function nest(depth, make) {
  let root = make()
  let cur = root
  for (let i = 0; i < depth; i++) {
    const next = make()
    if (Array.isArray(cur)) cur.push(next)
    else cur.a = next
    cur = next
  }
  return root
}

const HOSTILE = [
  ['undefined', undefined],
  ['null', null],
  ['0', 0],
  ['-1', -1],
  ['-0', -0],
  ['1.5', 1.5],
  ['2^53+2', 2 ** 53 + 2],
  ['Infinity', Infinity],
  ['NaN', NaN],
  ['true', true],
  ['false', false],
  ['[]', []],
  ['[1, "a", null]', [1, 'a', null]],
  ['10 MB string', BIG],
  ['object nested 10,000 deep', nest(10_000, () => ({}))],
  ['array nested 10,000 deep', nest(10_000, () => [])],
  ['__proto__ key', JSON.parse('{"__proto__": {"polluted": true}, "x": 1}')],
  ['constructor key', { constructor: { prototype: { polluted: true } } }],
  ['"__proto__"', '__proto__'],
  ['"constructor"', 'constructor'],
  ['lone high surrogate', 'a\uD800b'],
  ['lone low surrogate', '\uDFFF'],
  ['NUL bytes', 'a\u0000b\u0000'],
  ['SQL', "x'); DROP TABLE accounts; --"],
  ['SQL OR', "' OR '1'='1"],
  ['LIKE wildcards', '%_%'],
  ['emoji', '👩‍👩‍👧‍👦🔥 ok'],
  ['RTL', '\u202Eمرحبا עברית\u202C'],
  ['function', () => 1],
  ['symbol', Symbol('s')],
  ['bigint', 10n],
  ['throwing getter', Object.defineProperty({}, 'x', { enumerable: true, get: () => { throw new Error('boom') } })],
  ['Date', new Date(0)],
]

const CODES = new Set([
  'VALIDATION_ERROR', 'NOT_FOUND', 'ALREADY_EXISTS', 'VERSION_CONFLICT', 'CLIENT_CLOSED', 'DECRYPTION_FAILED',
  'STORAGE_ERROR', 'INVALID_TOKEN', 'TOKEN_EXPIRED', 'TOKEN_REVOKED', 'IDENTITY_ALREADY_LINKED',
  'AUTH_SESSION_ALREADY_USED', 'AUTH_SESSION_EXPIRED',
])
// Answers that are correct for some well-formed but hostile input (an id that does not exist…).
const DOMAIN = new Set([
  'NOT_FOUND', 'ALREADY_EXISTS', 'VERSION_CONFLICT', 'INVALID_TOKEN', 'IDENTITY_ALREADY_LINKED',
  'AUTH_SESSION_ALREADY_USED',
])

/** What JSON makes of a value: arguments are read as JSON.stringify would (a Date becomes its
 * ISO 8601 string, -0 becomes 0), and stored JSON comes back as JSON.parse makes it. */
const asJson = (v) => JSON.parse(JSON.stringify(v))
const isStr = (v) => typeof v === 'string'

let counter = 0
const uid = (p = 'h') => `${p}${++counter}`
const REDIRECT = { redirect_uri: 'https://app.test/done', cancel_uri: 'https://app.test/cancel' }

// --- the table -------------------------------------------------------------------------------
// args: one spec per parameter: { name, valid(ctx) → value, fields: [field specs] }.
// field spec: { name, inject(base, h) → value (default: { ...base, [name]: h }), names (error
// fields that count as naming it), check(ctx, h, result, args) for a round trip }.

const account = async (ctx, extra = {}) => {
  const id = uid('acc')
  await ctx.client.upsertLinkedAccount({ linked_account_id: id, ...extra })
  return id
}
const session = async (ctx) =>
  (await ctx.client.createAuthSession({ linked_account_id: 'base', ...REDIRECT, permissions: ['accounts', 'balances'] })).session_id

/** A fresh session token (or its refresh token) for the base account. */
/** A new webhook of the main scope; resolves with its id. */
const webhook = async (ctx) => (await ctx.client.createWebhook({ url: 'https://hooks.example/h' })).id
const mint = async (ctx, which) =>
  (await ctx.client.getTokenForLinkedAccount({ linked_account_id: 'base', force_refresh: true }))[which]

const payloadFields = [
  {
    name: 'linked_account_id',
    check: async (ctx, h) => expect((await ctx.client.getLinkedAccountById(h)).account_id).toBe(asJson(h)),
  },
  { name: 'account_id', inject: (b, h) => ({ account_id: h }), names: ['account_id', 'linked_account_id'] },
  {
    name: 'name',
    check: async (ctx, h, r, [p]) => {
      const got = await ctx.client.getLinkedAccountById(p.linked_account_id)
      if (h === null) expect(got.name).toBeUndefined()
      else if (h !== undefined) expect(got.name).toBe(asJson(h))
    },
  },
  { name: 'udf' },
  {
    name: 'udf value',
    inject: (b, h) => ({ ...b, udf: { k: h } }),
    names: ['udf'],
    check: async (ctx, h, r, [p]) => {
      const got = await ctx.client.getLinkedAccountById(p.linked_account_id)
      const row = got.udf.find((u) => u.key_name === 'k')
      if (h === null || h === undefined) expect(row).toBeUndefined()
      else expect(row.key_value).toEqual(asJson(h))
    },
  },
  {
    name: 'udf key',
    inject: (b, h) => ({ ...b, udf: isStr(h) ? { [h]: 1 } : h }),
    names: ['udf'],
    check: async (ctx, h, r, [p]) => {
      if (!isStr(h)) return
      const got = await ctx.client.getLinkedAccountById(p.linked_account_id)
      expect(got.udf.map((u) => u.key_name)).toEqual([h])
    },
  },
  { name: 'your_app' },
  {
    name: 'your_app.app_id',
    inject: (b, h) => ({ ...b, your_app: { app_id: h, auth_credentials: { t: 1 } } }),
    names: ['your_app', 'your_app.app_id'],
    check: async (ctx, h, r, [p]) => {
      const c = await ctx.client.getLinkedAccountCredentials(p.linked_account_id)
      if (isStr(h)) expect(c.app_id).toBe(h)
    },
  },
  {
    name: 'your_app.auth_credentials',
    inject: (b, h) => ({ ...b, your_app: { app_id: 'app', auth_credentials: h } }),
    names: ['your_app', 'your_app.auth_credentials'],
  },
  {
    name: 'credential value',
    inject: (b, h) => ({ ...b, your_app: { auth_credentials: { token: h } } }),
    names: ['your_app', 'your_app.auth_credentials'],
    check: async (ctx, h, r, [p]) => {
      const c = await ctx.client.getLinkedAccountCredentials(p.linked_account_id)
      expect(c.auth_credentials).toEqual(asJson({ token: h }))
    },
  },
  { name: 'payload', inject: (b, h) => ({ ...b, payload: h }), names: ['payload', 'name', 'udf', 'your_app'] },
]

const TABLE = {
  createLinkedAccount: {
    mutates: true,
    args: [{ name: 'payload', valid: () => ({ linked_account_id: uid('c') }), fields: payloadFields }],
  },
  upsertLinkedAccount: {
    mutates: true,
    args: [
      { name: 'payload', valid: () => ({ linked_account_id: uid('u') }), fields: payloadFields },
      { name: 'options', valid: () => undefined, fields: [{ name: 'ifVersion' }] },
    ],
  },
  getLinkedAccountById: { args: [{ name: 'linked_account_id', valid: () => 'base' }] },
  deleteLinkedAccount: { mutates: true, args: [{ name: 'linked_account_id', valid: (ctx) => account(ctx) }] },
  getAllLinkedAccounts: {
    args: [
      {
        name: 'options',
        valid: () => ({}),
        fields: [{ name: 'page' }, { name: 'limit' }, { name: 'udf' }, { name: 'udf value', inject: (b, h) => ({ udf: { k: h } }), names: ['udf'] }, { name: 'search' }],
      },
    ],
  },
  listLinkedAccounts: {
    args: [{ name: 'options', valid: () => ({}), fields: [{ name: 'after' }, { name: 'limit' }, { name: 'udf' }, { name: 'search' }] }],
  },
  getLinkedAccountCredentials: { args: [{ name: 'linked_account_id', valid: () => 'base' }] },
  open: {
    static: true,
    // The default path (no `path`) may already hold a file made with another key: refusing it
    // is the documented answer.
    domain: ['DECRYPTION_FAILED'],
    args: [
      {
        name: 'options',
        valid: (ctx) => ({ path: path.join(ctx.dir, `${uid('open')}.db`), orgId: 'org_h', encryptionKey: KEY }),
        fields: [
          {
            name: 'path',
            inject: (b, h) => ({ ...b, path: isStr(h) && h.length < 1000 && !h.includes('/') ? path.join(b.path, '..', `p-${h}`) : h }),
          },
          { name: 'orgId', check: (ctx, h, client) => h != null && expect(client.orgId).toBe(asJson(h)) },
          { name: 'environment' },
          { name: 'encryptionKey' },
          { name: 'durability' },
          { name: 'authUrlBase' },
          { name: 'publicUrl' },
          { name: 'appName' },
          { name: 'appLogo' },
          { name: 'previousEncryptionKeys' },
          { name: 'previous key', inject: (b, h) => ({ ...b, previousEncryptionKeys: [h] }), names: ['previousEncryptionKeys'] },
        ],
      },
    ],
  },
  close: { ownClient: true, args: [] },
  createAuthSession: {
    mutates: true,
    args: [
      {
        name: 'options',
        valid: () => ({ linked_account_id: 'base', ...REDIRECT }),
        fields: [
          { name: 'linked_account_id' },
          { name: 'end_user_id', inject: (b, h) => ({ ...REDIRECT, end_user_id: h }), names: ['end_user_id', 'linked_account_id'] },
          { name: 'redirect_uri' },
          { name: 'cancel_uri' },
          { name: 'institution_id', check: (ctx, h, r) => isStr(h) && expect(r.institution_id).toBe(h) },
          { name: 'permissions' },
          {
            name: 'permission',
            inject: (b, h) => ({ ...b, permissions: ['accounts', h] }),
            names: ['permissions'],
            check: async (ctx, h, r) => expect((await ctx.client.getAuthSession(r.session_id)).permissions).toEqual(['accounts', asJson(h)]),
          },
          { name: 'arrangement_id' },
          { name: 'ttl_seconds' },
        ],
      },
    ],
  },
  getAuthSession: { args: [{ name: 'session_id', valid: (ctx) => session(ctx) }] },
  completeAuthSession: {
    mutates: true,
    args: [
      { name: 'session_id', valid: (ctx) => session(ctx) },
      {
        name: 'result',
        valid: () => ({ institution_id: 'bank', account_ids: ['acc_1'], duration_seconds: 3600 }),
        fields: [
          { name: 'institution_id' },
          {
            name: 'institution_name',
            check: async (ctx, h, r) => isStr(h) && expect((await ctx.client.getConsent(r.arrangement_id)).institution_name).toBe(h),
          },
          { name: 'account_ids' },
          {
            name: 'account id',
            inject: (b, h) => ({ ...b, account_ids: [h] }),
            names: ['account_ids'],
            check: async (ctx, h, r) => expect((await ctx.client.getConsent(r.arrangement_id)).account_ids).toEqual([asJson(h)]),
          },
          { name: 'permissions' },
          { name: 'duration_seconds' },
          { name: 'institution_logo' },
          {
            name: 'institution_type',
            check: async (ctx, h, r) => isStr(h) && expect((await ctx.client.getConsent(r.arrangement_id)).institution_type).toBe(h),
          },
        ],
      },
    ],
  },
  cancelAuthSession: {
    mutates: true,
    args: [
      { name: 'session_id', valid: (ctx) => session(ctx) },
      { name: 'options', valid: () => undefined, fields: [{ name: 'error_type', inject: (b, h) => ({ error_type: h }) }] },
    ],
  },
  listConsents: {
    args: [{ name: 'options', valid: () => ({}), fields: [{ name: 'end_user_id' }, { name: 'linked_account_id' }, { name: 'active' }] }],
  },
  getConsent: { args: [{ name: 'arrangement_id', valid: (ctx) => ctx.consent }] },
  revokeConsent: { mutates: true, args: [{ name: 'arrangement_id', valid: (ctx) => ctx.consent }] },
  expireConsents: { mutates: true, args: [] },
  listEvents: {
    args: [{ name: 'options', valid: () => ({}), fields: [{ name: 'after' }, { name: 'limit' }, { name: 'types' }, { name: 'linked_account_id' }] }],
  },
  // On a client of another scope: pruning only touches its own scope's events.
  pruneEvents: { other: true, args: [{ name: 'options', valid: () => ({ before: 1 }), fields: [{ name: 'before' }] }] },
  onEvent: { sync: true, args: [{ name: 'callback', valid: () => () => {} }], after: (unsubscribe) => unsubscribe() },
  linkIdentity: {
    mutates: true,
    args: [
      { name: 'linked_account_id', valid: () => 'base' },
      {
        name: 'identity',
        valid: () => ({ provider: 'hp', user_id: uid('i') }),
        fields: [
          {
            name: 'provider',
            check: (ctx, h, r, [, i]) => expect(r.some((x) => x.provider === h && x.user_id === i.user_id)).toBe(true),
          },
          {
            name: 'user_id',
            check: (ctx, h, r) => expect(r.some((x) => x.provider === 'hp' && x.user_id === String(asJson(h)))).toBe(true),
          },
          { name: 'connection', check: (ctx, h, r, [, i]) => isStr(h) && expect(r.find((x) => x.user_id === i.user_id).connection).toBe(h) },
          { name: 'connection_id' },
          { name: 'isSocial' },
          { name: 'email', check: (ctx, h, r, [, i]) => isStr(h) && expect(r.find((x) => x.user_id === i.user_id).email).toBe(h) },
          { name: 'email_verified' },
          { name: 'profileData' },
          {
            name: 'profile value',
            inject: (b, h) => ({ ...b, profileData: { v: h } }),
            names: ['profileData'],
            check: (ctx, h, r, [, i]) => expect(r.find((x) => x.user_id === i.user_id).profileData).toEqual(asJson({ v: h })),
          },
        ],
      },
    ],
  },
  linkAccounts: {
    mutates: true,
    args: [
      { name: 'primary_id', valid: (ctx) => account(ctx) },
      {
        name: 'secondary_id',
        valid: (ctx) => account(ctx),
        fields: [{ name: 'link_with', inject: (b, h) => ({ link_with: h }) }],
      },
      { name: 'options', valid: () => undefined, fields: [{ name: 'udf', inject: (b, h) => ({ udf: h }) }] },
    ],
  },
  unlinkIdentity: {
    mutates: true,
    args: [
      { name: 'linked_account_id', valid: (ctx) => ctx.unlinkable() },
      { name: 'provider', valid: () => 'up' },
      { name: 'user_id', valid: (ctx) => ctx.lastUnlinkable },
    ],
  },
  getLinkedAccountsByEmail: { args: [{ name: 'email', valid: () => 'ann@example.com' }] },
  getLinkSuggestions: { args: [{ name: 'linked_account_id', valid: () => 'base' }] },
  checkIntegrity: {
    args: [{ name: 'options', valid: () => undefined, fields: [{ name: 'onProgress' }] }],
    after: (r) => expect(r).toEqual({ ok: true, details: [] }),
  },
  backup: {
    // Each accepted destination is a new file in the test's directory.
    args: [
      {
        name: 'destPath',
        valid: (ctx) => path.join(ctx.dir, `${uid('backup')}.db`),
      },
    ],
  },
  stats: { args: [] },
  listSigningKeys: { args: [] },
  getTokenForLinkedAccount: {
    mutates: true,
    args: [
      {
        name: 'options',
        valid: () => ({ linked_account_id: 'base' }),
        fields: [
          { name: 'linked_account_id' },
          { name: 'ttl_seconds' },
          { name: 'force_refresh' },
          { name: 'scopes' },
          {
            name: 'scope',
            inject: (b, h) => ({ ...b, scopes: [h] }),
            names: ['scopes'],
            check: (ctx, h, r) => expect(ctx.client.verifySessionTokenSync(r.token).scopes).toEqual([asJson(h)]),
          },
        ],
      },
    ],
  },
  verifySessionToken: { args: [{ name: 'token', valid: (ctx) => mint(ctx, 'token') }] },
  verifySessionTokenSync: { sync: true, args: [{ name: 'token', valid: (ctx) => mint(ctx, 'token') }] },
  refreshSessionToken: { mutates: true, args: [{ name: 'refresh_token', valid: (ctx) => mint(ctx, 'refresh_token') }] },
  revokeSessionToken: { mutates: true, args: [{ name: 'token', valid: (ctx) => mint(ctx, 'token') }] },
  revokeAllSessionTokens: { mutates: true, args: [{ name: 'linked_account_id', valid: (ctx) => account(ctx) }] },
  rotateSigningKey: { mutates: true, args: [{ name: 'options', valid: () => undefined, fields: [{ name: 'signingSecret' }] }] },
  retireSigningKey: {
    mutates: true,
    args: [
      {
        name: 'kid',
        // An older key that may be retired: rotate past it first.
        valid: async (ctx) => {
          const { kid } = await ctx.client.rotateSigningKey()
          await ctx.client.rotateSigningKey()
          return kid
        },
      },
    ],
  },
  rotateEncryptionKey: {
    mutates: true,
    args: [
      { name: 'newKey', valid: () => undefined },
      { name: 'options', valid: () => undefined, fields: [{ name: 'onProgress' }] },
      ],
    },
  // Fiskil end users (linked accounts with email, name, phone, abn).
  createEndUser: {
    mutates: true,
    args: [
      {
        name: 'end_user',
        valid: () => ({ email: 'eu@example.com' }),
        fields: [
          { name: 'email', check: async (ctx, h, r) => isStr(h) && expect((await ctx.client.getEndUser(r.end_user_id)).email).toBe(h.trim()) },
          { name: 'name', check: async (ctx, h, r) => isStr(h) && expect((await ctx.client.getEndUser(r.end_user_id)).name).toBe(h) },
          { name: 'phone', check: async (ctx, h, r) => isStr(h) && expect((await ctx.client.getEndUser(r.end_user_id)).phone).toBe(h) },
          { name: 'abn' },
        ],
      },
    ],
  },
  getEndUser: { args: [{ name: 'end_user_id', valid: () => 'base' }] },
  getEndUsers: { args: [{ name: 'query', valid: () => ({ email: 'eu@example.com' }), fields: [{ name: 'email' }] }] },
  updateEndUser: {
    mutates: true,
    args: [
      { name: 'end_user_id', valid: (ctx) => account(ctx) },
      {
        name: 'end_user',
        valid: () => ({ name: 'Eu' }),
        fields: [
          { name: 'email', check: async (ctx, h, r, [id]) => isStr(h) && expect((await ctx.client.getEndUser(id)).email).toBe(h.trim()) },
          { name: 'name', check: async (ctx, h, r, [id]) => isStr(h) && expect((await ctx.client.getEndUser(id)).name).toBe(h) },
          { name: 'phone' },
          { name: 'abn' },
        ],
      },
    ],
  },
  deleteEndUser: { mutates: true, args: [{ name: 'end_user_id', valid: (ctx) => account(ctx) }] },
  // Auth0 users.
  getUser: { args: [{ name: 'id', valid: () => 'base' }] },
  getUsersByEmail: { args: [{ name: 'email', valid: () => 'ann@example.com' }] },
  // Its own active consent each time (revokeConsent above ends ctx.consent).
  recordConsentAccess: {
    mutates: true,
    args: [
      {
        name: 'arrangement_id',
        valid: async (ctx) =>
          (await ctx.client.completeAuthSession(await session(ctx), { institution_id: 'bank', account_ids: ['a'], duration_seconds: 3600 }))
            .arrangement_id,
      },
    ],
  },
  // API keys and client credentials (the server's `linkvault keys`), and forScope.
  createApiKey: {
    mutates: true,
    args: [{ name: 'options', valid: () => ({ name: 'k' }), fields: [{ name: 'name', check: async (ctx, h, r) => isStr(h) && expect(r.name).toBe(h) }] }],
    check: async (ctx, args, r) => expect(await ctx.client.resolveApiKey(r.api_key)).toMatchObject({ client_id: r.client_id, org_id: 'org_h' }),
  },
  listApiKeys: {
    args: [{ name: 'options', valid: () => undefined, fields: [{ name: 'orgId' }, { name: 'environment' }, { name: 'limit' }] }],
    check: (ctx, args, keys) => expect(Array.isArray(keys)).toBe(true),
  },
  revokeApiKey: {
    mutates: true,
    args: [{ name: 'client_id', valid: async (ctx) => (await ctx.client.createApiKey()).client_id }],
    check: (ctx, [id], r) => expect(r).toMatchObject({ client_id: id, revoked_at: expect.any(String) }),
  },
  resolveApiKey: {
    args: [{ name: 'api_key', valid: async (ctx) => (await ctx.client.createApiKey()).api_key }],
    // A live key resolves to its scope; anything else (hostile values included) to null.
    check: (ctx, [key], r) => expect(r).toEqual(typeof key === 'string' && /^tk_[0-9a-f]{64}$/.test(key) ? expect.objectContaining({ org_id: 'org_h' }) : null),
  },
  issueAccessToken: {
    mutates: true,
    args: [
      {
        name: 'request',
        valid: async (ctx) => {
          const k = await ctx.client.createApiKey()
          return { client_id: k.client_id, client_secret: k.client_secret, audience: 'aud' }
        },
        fields: [{ name: 'client_id' }, { name: 'client_secret' }, { name: 'audience' }, { name: 'ttl_seconds' }],
      },
    ],
  },
  resolveAccessToken: {
    args: [
      {
        name: 'access_token',
        valid: async (ctx) => {
          const k = await ctx.client.createApiKey()
          return (await ctx.client.issueAccessToken({ client_id: k.client_id, client_secret: k.client_secret, audience: 'aud' })).access_token
        },
      },
      { name: 'audience', valid: () => 'aud' },
    ],
  },
  forScope: {
    args: [{ name: 'options', valid: () => ({ orgId: 'org_h_scoped' }), fields: [{ name: 'orgId' }, { name: 'environment' }, { name: 'create' }] }],
    after: (scoped) => scoped.close(),
  },
  createWebhook: {
    args: [
      {
        name: 'options',
        valid: () => ({ url: 'https://hooks.example/h', events: ['consent.received'] }),
        fields: [{ name: 'url' }, { name: 'events' }, { name: 'event type', inject: (b, h) => ({ ...b, events: ['consent.received', h] }), names: ['events'] }],
      },
    ],
  },
  listWebhooks: { args: [{ name: 'options', valid: () => ({}), fields: [{ name: 'orgId' }, { name: 'environment' }] }] },
  deleteWebhook: { args: [{ name: 'id', valid: (ctx) => webhook(ctx) }] },
  listWebhookDeliveries: {
    args: [
      { name: 'id', valid: (ctx) => webhook(ctx) },
      { name: 'options', valid: () => ({}), fields: [{ name: 'state' }, { name: 'before' }, { name: 'limit' }] },
    ],
  },
  claimWebhookDeliveries: { args: [{ name: 'options', valid: () => ({ limit: 1 }), fields: [{ name: 'limit' }, { name: 'lease_ms' }] }] },
  recordWebhookAttempt: {
    args: [
      { name: 'id', valid: () => 1 },
      { name: 'outcome', valid: () => ({ attempt: 1, status: 500 }), fields: [{ name: 'attempt' }, { name: 'status' }, { name: 'error' }, { name: 'retry_base_ms' }] },
    ],
  },
  locateAuthSession: { args: [{ name: 'session_id', valid: (ctx) => session(ctx) }] },
  signWebhook: {
    module: true,
    sync: true,
    args: [{ name: 'body', valid: () => 'body' }, { name: 'secret', valid: () => 'secret' }, { name: 'timestamp', valid: () => 1700000000 }],
    check: (ctx, [body, secret, t], sig) => {
      const ts = t ?? Number(sig.slice(2, sig.indexOf(',')))
      const mac = crypto.createHmac('sha256', isStr(secret) ? secret : Buffer.from(secret)).update(`${ts}.`).update(body).digest('hex')
      expect(sig).toBe(`t=${ts},v1=${mac}`)
    },
  },
  verifyWebhook: {
    module: true,
    sync: true,
    args: [
      { name: 'body', valid: () => 'body' },
      { name: 'header', valid: () => linkvault.signWebhook('body', 'secret') },
      { name: 'secret', valid: () => 'secret' },
      { name: 'toleranceSeconds', valid: () => undefined },
    ],
    check: (ctx, args, ok) => expect(typeof ok).toBe('boolean'),
  },
}

// --- the public API, from index.d.ts ---------------------------------------------------------

function splitParams(list) {
  const out = []
  let depth = 0
  let cur = ''
  for (const ch of list) {
    if ('([{<'.includes(ch)) depth++
    if (')]}>'.includes(ch)) depth--
    if (ch === ',' && depth === 0) {
      out.push(cur.trim())
      cur = ''
    } else cur += ch
  }
  if (cur.trim()) out.push(cur.trim())
  return out.map((p) => p.split(/\??:/)[0].trim())
}

function publicApi() {
  const dts = fs.readFileSync(path.join(__dirname, '..', 'binding.d.ts'), 'utf8')
  const cls = dts.slice(dts.indexOf('export declare class Client {'))
  const body = cls.slice(0, cls.indexOf('\n}\n'))
  const methods = {}
  for (const m of body.matchAll(/^ {2}(?:static )?(\w+)\((.*)\):/gm)) methods[m[1]] = splitParams(m[2])
  for (const m of dts.matchAll(/^export declare function (\w+)\((.*)\):/gm)) methods[m[1]] = splitParams(m[2])
  return methods
}

// --- running ---------------------------------------------------------------------------------

let ctx
let tried = 0
let roundTrips = 0
let validationErrors = 0
let domainErrors = 0

const cwd = process.cwd()

beforeAll(async () => {
  const dir = tmpDir()
  // Client.open without a path uses ./linkvault.db: keep those files in the temp directory.
  process.chdir(dir)
  const db = storeOptions({ dir, name: 'hostile.db' })
  const client = await openClient({ ...db, orgId: 'org_h' })
  const other = await openClient({ ...db, orgId: 'org_h_other' })
  await client.upsertLinkedAccount({ linked_account_id: 'base', udf: { plan: 'pro' }, your_app: { auth_credentials: { t: 1 } } })
  await other.upsertLinkedAccount({ linked_account_id: 'base' })
  const s = await session({ client })
  const consent = await client.completeAuthSession(s, { institution_id: 'bank', account_ids: ['a'], duration_seconds: 3600 })
  let cursor = 0
  ctx = {
    dir,
    client,
    other,
    consent: consent.arrangement_id,
    lastUnlinkable: null,
    async unlinkable() {
      const id = await account(ctx)
      ctx.lastUnlinkable = uid('uid')
      await client.linkIdentity(id, { provider: 'up', user_id: ctx.lastUnlinkable })
      return id
    },
    /** Id of the newest event of the main scope (drains the log from the last position). */
    async lastEvent() {
      for (;;) {
        const { events, next } = await client.listEvents({ after: cursor, limit: 1000 })
        if (events.length) cursor = events[events.length - 1].id
        if (next === null) return cursor
      }
    },
  }
}, 60_000)

afterAll(async () => {
  process.chdir(cwd)
  await ctx.client.close()
  await ctx.other.close()
  console.log(
    `hostile input: ${tried} inputs tried: ${validationErrors} VALIDATION_ERRORs naming a field, ${domainErrors} domain errors, ${roundTrips} accepted and read back`,
  )
})

function fieldNames(row) {
  const names = new Set()
  for (const a of row.args) {
    names.add(a.name)
    for (const f of a.fields ?? []) {
      names.add(f.name)
      for (const n of f.names ?? []) names.add(n)
    }
  }
  return names
}

function withTimeout(p, label) {
  let timer
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`hang: ${label}`), { hang: true })), 20_000)
    }),
  ]).finally(() => clearTimeout(timer))
}

async function attempt(method, row, args, h, label, check) {
  tried++
  const names = fieldNames(row)
  // A bad property of a hostile object (e.g. one nested 10,000 deep) is named by its own key.
  if (h !== null && typeof h === 'object') for (const k of Object.keys(h)) names.add(k)
  const target = row.module ? linkvault : row.static ? Client : row.ownClient ? await Client.open({ path: ':memory:' }) : row.other ? ctx.other : ctx.client
  const before = row.mutates ? await ctx.lastEvent() : null
  let value
  let error
  try {
    const r = target[method](...args)
    value = row.sync ? r : await withTimeout(r, label)
  } catch (e) {
    error = e
  }
  const where = `${label}: `
  if (error) {
    if (error.hang) throw error
    if (typeof error.code !== 'string' || !CODES.has(error.code)) throw new Error(`${where}an error without a known code: ${error?.stack ?? error}`)
    if (error.code === 'VALIDATION_ERROR') {
      validationErrors++
      const ok = typeof error.field === 'string' && [...names].some((n) => error.field === n || error.field.startsWith(`${n}.`) || error.field.startsWith(`${n}[`))
      if (!ok) throw new Error(`${where}VALIDATION_ERROR names field ${JSON.stringify(error.field)}, not one of ${[...names]}: ${error.message}`)
      expect(error.status).toBe(400)
    } else if (DOMAIN.has(error.code) || row.domain?.includes(error.code)) {
      domainErrors++
    } else {
      throw new Error(`${where}unexpected ${error.code}: ${error.message}`)
    }
    if (row.mutates) {
      const after = await ctx.lastEvent()
      if (after !== before) throw new Error(`${where}a rejected call appended events (partial write)`)
    }
  } else {
    try {
      if (check) await check(value)
      if (row.after) await row.after(value)
    } catch (e) {
      e.message = `${where}accepted, but the round trip failed: ${e.message}`
      throw e
    }
    roundTrips++
    if (row.static) await value.close()
  }
  if (row.ownClient) await target.close()
}

const api = publicApi()

test('every public method of index.d.ts has a row, with one spec per parameter', () => {
  expect(Object.keys(api).length).toBeGreaterThan(25)
  for (const [name, params] of Object.entries(api)) {
    expect([name, TABLE[name] ? 'has a row' : 'MISSING from the hostile-input table']).toEqual([name, 'has a row'])
    expect([name, TABLE[name].args.map((a) => a.name).length]).toEqual([name, params.length])
  }
  for (const name of Object.keys(TABLE)) expect([name, name in api]).toEqual([name, true])
})

describe.each(Object.keys(TABLE))('%s', (method) => {
  const row = TABLE[method]
  test('valid arguments work', async () => {
    const args = []
    for (const a of row.args) args.push(await a.valid(ctx))
    if (method === 'rotateEncryptionKey' || method === 'close') return // covered elsewhere
    await attempt(method, row, args, undefined, `${method}(valid)`, row.check && ((v) => row.check(ctx, args, v)))
  })

  test('hostile values in every position and field', async () => {
    const positions = row.args.length ? row.args.map((_, i) => i) : [0]
    for (const i of positions) {
      const spec = row.args[i]
      const injections = [{ name: spec?.name ?? '(extra argument)', inject: (b, h) => h }, ...(spec?.fields ?? [])]
      for (const inj of injections) {
        for (const [hl, h] of HOSTILE) {
          const args = []
          for (const a of row.args) args.push(await a.valid(ctx))
          const base = args[i]
          const inject = inj.inject ?? ((b, v) => ({ ...(b ?? {}), [inj.name]: v }))
          args[i] = inject(base, h)
          const check =
            (inj.check && ((v) => inj.check(ctx, h, v, args))) ?? (row.check && ((v) => row.check(ctx, args, v)))
          await attempt(method, row, args, h, `${method} arg ${i} ${inj.name} = ${hl}`, check)
        }
      }
    }
  }, 120_000)
})

test('no prototype was polluted and the file is intact', async () => {
  expect({}.polluted).toBeUndefined()
  expect(Object.prototype.polluted).toBeUndefined()
  expect(await ctx.client.checkIntegrity()).toEqual({ ok: true, details: [] })
})

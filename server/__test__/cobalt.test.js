'use strict'
// Cobalt's REST API on `linkvault serve` (a child process): the seeds' request bodies
// verbatim through fetch, @cobaltio/cobalt-js 8's getAccountDetails() with a session token,
// scope isolation between keys, the robustness items, and logs free of secrets.

const { Cobalt } = require('@cobaltio/cobalt-js')

const { newStore, createKey, startServer, call, run } = require('./helpers')

// docs.refold.ai "Set Up Linked Accounts" (seed 000): the cURL body, verbatim.
const SEED_CURL_BODY = `{
    "linked_account_id": "<string>",
    "name": "<string>",
    "your_app": {
      "auth_credentials":
          {
              "Authorization": "eyJvcmdfaWQiOiI2M2M5M2RhMGI0NmI3MjQzNzg1YTFlMTciLCJsaW5rZWRfYWNjb3VudF9pZCI6IjEyMzQ1Njc4IiwiZW52aXJvbm1lbnQiOiJ0ZXN0IiwiaWF0IjoxNjg2NjQzMDg5LCJleHAiOjE2ODY5MDIyODl9"
          }
    },
    "udf": {
      "phone": "1234567890",
      "address": "121, Queen Street"
    }
  }`
// The same page's Node SDK example payload (upsertLinkedAccount), verbatim.
const SEED_SDK_PAYLOAD = {
  linked_account_id: 'user@example.com',
  name: 'User2',
  udf: {
    phone: '1234567890',
    address: '121, Queen Street',
  },
  your_app: {
    auth_credentials: {
      Authorization:
        'eyJvcmdfaWQiOiI2M2M5M2RhMGI0NmI3MjQzNzg1YTFlMTciLCJsaW5rZWRfYWNjb3VudF9pZCI6IjEyMzQ1Njc4IiwiZW52aXJvbm1lbnQiOiJ0ZXN0IiwiaWF0IjoxNjg2NjQzMDg5LCJleHAiOjE2ODY5MDIyODl9',
    },
  },
}
// The older docs' form (seed 001): your_app with app_id.
const SEED_APP_ID_PAYLOAD = {
  linked_account_id: 'account:12345',
  name: '<string>',
  your_app: {
    app_id: '64da0b57c9ae95561bb0a2ea',
    auth_credentials: {
      Authorization:
        'eyJvcmdfaWQiOiI2M2M5M2RhMGI0NmI3MjQzNzg1YTFlMTciLCJsaW5rZWRfYWNjb3VudF9pZCI6IjEyMzQ1Njc4IiwiZW52aXJvbm1lbnQiOiJ0ZXN0IiwiaWF0IjoxNjg2NjQzMDg5LCJleHAiOjE2ODY5MDIyODl9',
    },
  },
  udf: {
    phone: '1234567890',
    address: '121, Queen Street',
  },
}
const CREDENTIAL = SEED_SDK_PAYLOAD.your_app.auth_credentials.Authorization

let store
let server
let keyA // org_a, test
let keyAProd // org_a, production
let keyB // org_b, test
const secrets = []

function cobaltErrorShape(body, status) {
  expect(body).toEqual({
    status_code: status,
    http_error_type: expect.any(String),
    error: expect.any(String),
    message: expect.any(String),
    request_id: expect.any(String),
  })
}

beforeAll(async () => {
  store = newStore()
  keyA = await createKey(store, 'org_a', 'test')
  keyAProd = await createKey(store, 'org_a', 'production')
  keyB = await createKey(store, 'org_b', 'test')
  for (const k of [keyA, keyAProd, keyB]) secrets.push(k.api_key, k.client_secret)
  secrets.push(CREDENTIAL)
  server = await startServer(store)
})

afterAll(async () => {
  if (server) await server.stop()
})

const url = (path) => `${server.url}${path}`
const withKey = (key, extra = {}) => ({ 'x-api-key': key.api_key, ...extra })

describe('linked accounts with x-api-key', () => {
  test('PUT /linked-account with the seed cURL body verbatim upserts and never returns credentials', async () => {
    const r = await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyA), json: SEED_CURL_BODY })
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({
      associated_org: 'org_a',
      account_id: '<string>',
      environment: 'test',
      name: '<string>',
      __v: 0,
      new_account: true,
    })
    expect(r.body.udf.map((u) => [u.key_name, u.key_value])).toEqual([
      ['phone', '1234567890'],
      ['address', '121, Queen Street'],
    ])
    expect(r.text).not.toContain(CREDENTIAL)
    // Same body again: an update that changes nothing.
    const again = await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyA), json: SEED_CURL_BODY })
    expect(again.status).toBe(200)
    expect(again.body).toMatchObject({ new_account: false, __v: 0 })
  })

  test('POST /linked-account with the Node SDK payload creates; a second create is 400 in Cobalt\'s shape', async () => {
    const r = await call(url('/api/v2/public/linked-account'), { method: 'POST', headers: withKey(keyA), json: SEED_SDK_PAYLOAD })
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ account_id: 'user@example.com', name: 'User2', new_account: true })
    const dup = await call(url('/api/v2/public/linked-account'), { method: 'POST', headers: withKey(keyA), json: SEED_SDK_PAYLOAD })
    expect(dup.status).toBe(400)
    cobaltErrorShape(dup.body, 400)
    expect(dup.body).toMatchObject({ http_error_type: 'BAD_REQUEST', error: 'ALREADY_EXISTS' })
    expect(dup.body.request_id).toBe(dup.headers.get('x-request-id'))
  })

  test('PUT with the older docs\' your_app.app_id form', async () => {
    const r = await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyA), json: SEED_APP_ID_PAYLOAD })
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ account_id: 'account:12345', your_app: { app_id: '64da0b57c9ae95561bb0a2ea' } })
    expect(r.text).not.toContain(CREDENTIAL)
  })

  test('GET /linked-account pages with Cobalt\'s envelope (page, limit)', async () => {
    const r = await call(url('/api/v2/public/linked-account?page=1&limit=2'), { headers: withKey(keyA) })
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ totalDocs: 3, limit: 2, totalPages: 2, page: 1, pagingCounter: 1, hasPrevPage: false, hasNextPage: true, prevPage: null, nextPage: 2 })
    expect(r.body.docs).toHaveLength(2)
    const bad = await call(url('/api/v2/public/linked-account?page=zero'), { headers: withKey(keyA) })
    expect(bad.status).toBe(400)
    cobaltErrorShape(bad.body, 400)
  })

  test('GET /linked-account/:id (percent-encoded id) and 404 in Cobalt\'s words', async () => {
    const r = await call(url(`/api/v2/public/linked-account/${encodeURIComponent('user@example.com')}`), { headers: withKey(keyA) })
    expect(r.status).toBe(200)
    expect(r.body.account_id).toBe('user@example.com')
    const missing = await call(url('/api/v2/public/linked-account/nobody'), { headers: withKey(keyA) })
    expect(missing.status).toBe(404)
    cobaltErrorShape(missing.body, 404)
    expect(missing.body.message).toBe('Linked Account with account id nobody for org org_a in environment test not found')
  })

  test('a missing id is a 400 naming linked_account_id', async () => {
    const r = await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyA), json: { name: 'no id' } })
    expect(r.status).toBe(400)
    cobaltErrorShape(r.body, 400)
    expect(r.body.message).toMatch(/linked_account_id/)
  })

  test('DELETE /linked-account/:id answers Cobalt\'s message, then 404', async () => {
    await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyA), json: { linked_account_id: 'to-delete' } })
    const r = await call(url('/api/v2/public/linked-account/to-delete'), { method: 'DELETE', headers: withKey(keyA) })
    expect(r.status).toBe(200)
    expect(r.body).toEqual({ message: 'User deleted successfully' })
    const again = await call(url('/api/v2/public/linked-account/to-delete'), { method: 'DELETE', headers: withKey(keyA) })
    expect(again.status).toBe(404)
    cobaltErrorShape(again.body, 404)
  })
})

describe('session tokens', () => {
  let issued

  test('POST /session-token with the docs\' body issues a token; force_refresh=true mints a new one', async () => {
    const r = await call(url('/api/v2/public/session-token'), { method: 'POST', headers: withKey(keyA), json: { linked_account_id: 'user@example.com' } })
    expect(r.status).toBe(200)
    expect(r.body).toEqual({ token: expect.any(String), refresh_token: expect.any(String), expires_in: expect.any(Number), refresh_expires_in: expect.any(Number) })
    issued = r.body
    secrets.push(issued.token, issued.refresh_token)
    const same = await call(url('/api/v2/public/session-token'), { method: 'POST', headers: withKey(keyA), json: { linked_account_id: 'user@example.com' } })
    expect(same.body.token).toBe(issued.token)
    const fresh = await call(url('/api/v2/public/session-token?force_refresh=true'), { method: 'POST', headers: withKey(keyA), json: { linked_account_id: 'user@example.com' } })
    expect(fresh.status).toBe(200)
    expect(fresh.body.token).not.toBe(issued.token)
    secrets.push(fresh.body.token, fresh.body.refresh_token)
  })

  test('the SDK\'s linked_account_id header names the account when the body does not', async () => {
    const r = await call(url('/api/v2/public/session-token'), { method: 'POST', headers: withKey(keyA, { linked_account_id: 'account:12345' }) })
    expect(r.status).toBe(200)
    secrets.push(r.body.token, r.body.refresh_token)
  })

  test('an unknown account is 400 INVALID_LINKED_ACCOUNT_ID (Cobalt v3)', async () => {
    const r = await call(url('/api/v2/public/session-token'), { method: 'POST', headers: withKey(keyA), json: { linked_account_id: 'ghost' } })
    expect(r.status).toBe(400)
    cobaltErrorShape(r.body, 400)
    expect(r.body).toMatchObject({ error: 'INVALID_LINKED_ACCOUNT_ID', message: 'No linked account found for account id : ghost in environment test' })
  })

  test('GET /session/active-linked-account answers the token\'s account', async () => {
    const r = await call(url('/api/v2/public/session/active-linked-account'), { headers: { authorization: `Bearer ${issued.token}` } })
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ account_id: 'user@example.com', associated_org: 'org_a' })
  })

  test('@cobaltio/cobalt-js 8 getAccountDetails() with a session token', async () => {
    const cobalt = new Cobalt({ baseUrl: server.url, token: issued.token })
    await expect(cobalt.getAccountDetails()).resolves.toEqual({ name: 'org_a', logo: null })
    const anonymous = new Cobalt({ baseUrl: server.url, token: 'not-a-token' })
    await expect(anonymous.getAccountDetails()).rejects.toThrow('Unauthorized')
  })

  test('PUT /linked-account with a Bearer session token updates the token\'s account only', async () => {
    const r = await call(url('/api/v2/public/linked-account'), {
      method: 'PUT',
      headers: { authorization: `Bearer ${issued.token}` },
      json: { linked_account_id: 'someone-else', name: 'Renamed by the user', udf: { plan: 'pro' } },
    })
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ account_id: 'user@example.com', name: 'Renamed by the user', new_account: false })
    const other = await call(url('/api/v2/public/linked-account/someone-else'), { headers: withKey(keyA) })
    expect(other.status).toBe(404)
    const creds = await call(url('/api/v2/public/linked-account'), {
      method: 'PUT',
      headers: { authorization: `Bearer ${issued.token}` },
      json: { your_app: { auth_credentials: { Authorization: 'Bearer x' } } },
    })
    expect(creds.status).toBe(400)
    cobaltErrorShape(creds.body, 400)
  })

  test('session tokens open only the session routes, API keys only the management routes', async () => {
    const bearer = { authorization: `Bearer ${issued.token}` }
    for (const [method, path] of [
      ['GET', '/api/v2/public/linked-account'],
      ['GET', '/api/v2/public/linked-account/user%40example.com'],
      ['DELETE', '/api/v2/public/linked-account/user%40example.com'],
      ['POST', '/api/v2/public/session-token'],
      ['POST', '/api/v2/public/linked-account'],
    ]) {
      const r = await call(url(path), { method, headers: bearer, json: method === 'POST' ? { linked_account_id: 'user@example.com' } : undefined })
      expect([method, path, r.status]).toEqual([method, path, 401])
      cobaltErrorShape(r.body, 401)
    }
    for (const path of ['/api/v2/public/session/active-linked-account', '/api/v3/org/basics']) {
      const r = await call(url(path), { headers: withKey(keyA) })
      expect(r.status).toBe(401)
      expect(r.body).toMatchObject({ error: 'INVALID_TOKEN' })
    }
    // An API key sent as a Bearer token is no session token either.
    const r = await call(url('/api/v2/public/session/active-linked-account'), { headers: { authorization: `Bearer ${keyA.api_key}` } })
    expect(r.status).toBe(401)
  })

  test('a session token is valid only in its scope and a forged one is refused', async () => {
    const [h, p, s] = issued.token.split('.')
    const claims = JSON.parse(Buffer.from(p, 'base64url'))
    for (const change of [{ org_id: 'org_b' }, { environment: 'production' }, { org_id: 'org_never_seen' }, { linked_account_id: 'account:12345' }]) {
      const forged = [h, Buffer.from(JSON.stringify({ ...claims, ...change })).toString('base64url'), s].join('.')
      const r = await call(url('/api/v2/public/session/active-linked-account'), { headers: { authorization: `Bearer ${forged}` } })
      expect(r.status).toBe(401)
      cobaltErrorShape(r.body, 401)
    }
  })

  test('POST /session-token/revoke revokes the token sent; it stops working at once', async () => {
    const r = await call(url('/api/v2/public/session-token/revoke'), { method: 'POST', headers: { authorization: `Bearer ${issued.token}` } })
    expect(r.status).toBe(200)
    expect(r.body).toEqual({ success: true, revoked_count: 1 })
    const after = await call(url('/api/v2/public/session/active-linked-account'), { headers: { authorization: `Bearer ${issued.token}` } })
    expect(after.status).toBe(401)
    expect(after.body).toMatchObject({ error: 'INVALID_TOKEN', message: 'Invalid token' })
  })
})

describe('keys and scopes', () => {
  test('a bad API key is 401 Invalid Credentials', async () => {
    for (const headers of [{}, { 'x-api-key': 'tk_nope' }, { 'x-api-key': keyA.api_key.replace(/.$/, (c) => (c === 'a' ? 'b' : 'a')) }, { 'x-api-key': keyA.client_secret }]) {
      const r = await call(url('/api/v2/public/linked-account'), { headers })
      expect(r.status).toBe(401)
      cobaltErrorShape(r.body, 401)
      expect(r.body).toMatchObject({ http_error_type: 'UNAUTHORIZED', message: 'Invalid Credentials' })
    }
  })

  test('a production key cannot see test data, nor one org another\'s', async () => {
    for (const key of [keyAProd, keyB]) {
      const r = await call(url(`/api/v2/public/linked-account/${encodeURIComponent('user@example.com')}`), { headers: withKey(key) })
      expect(r.status).toBe(404)
      const list = await call(url('/api/v2/public/linked-account'), { headers: withKey(key) })
      expect(list.body.totalDocs).toBe(0)
    }
    const mine = await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyAProd), json: { linked_account_id: 'user@example.com', name: 'Prod twin' } })
    expect(mine.body).toMatchObject({ environment: 'production', new_account: true })
    const test = await call(url(`/api/v2/public/linked-account/${encodeURIComponent('user@example.com')}`), { headers: withKey(keyA) })
    expect(test.body.name).toBe('Renamed by the user')
  })

  test('a revoked key stops working within a second or two (another process revokes it)', async () => {
    const doomed = await createKey(store, 'org_a', 'test')
    secrets.push(doomed.api_key, doomed.client_secret)
    const ok = await call(url('/api/v2/public/linked-account'), { headers: withKey(doomed) })
    expect(ok.status).toBe(200)
    const revoked = await run(['keys', 'revoke', doomed.client_id, ...store.args], { env: store.env })
    expect(revoked.code).toBe(0)
    let status = 200
    const deadline = Date.now() + 5000
    while (status === 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200))
      status = (await call(url('/api/v2/public/linked-account'), { headers: withKey(doomed) })).status
    }
    expect(status).toBe(401)
  })
})

describe('robustness', () => {
  test('malformed JSON is 400 in Cobalt\'s shape and does not echo the body', async () => {
    const r = await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyA), json: '{"linked_account_id": "x", "your_app": {"auth_credentials": {"k": "sekret-in-broken-json"' })
    expect(r.status).toBe(400)
    cobaltErrorShape(r.body, 400)
    expect(r.body.error).toBe('INVALID_JSON')
    expect(r.text).not.toContain('sekret')
    secrets.push('sekret-in-broken-json')
  })

  test('__proto__ and constructor keys in a body are refused (400)', async () => {
    for (const body of ['{"linked_account_id": "p", "__proto__": {"polluted": true}}', '{"linked_account_id": "p", "udf": {"constructor": {"prototype": {"polluted": true}}}}']) {
      const r = await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyA), json: body })
      expect(r.status).toBe(400)
      cobaltErrorShape(r.body, 400)
      expect(r.body.message).toMatch(/forbidden __proto__ or constructor key/)
    }
    expect((await call(url('/api/v2/public/linked-account/p'), { headers: withKey(keyA) })).status).toBe(404)
  })

  test('a body over 256 KiB is 413', async () => {
    const big = JSON.stringify({ linked_account_id: 'big', udf: { blob: 'x'.repeat(300 * 1024) } })
    const r = await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyA), json: big })
    expect(r.status).toBe(413)
    cobaltErrorShape(r.body, 413)
    const fits = JSON.stringify({ linked_account_id: 'fits', udf: { blob: 'x'.repeat(200 * 1024) } })
    expect((await call(url('/api/v2/public/linked-account'), { method: 'PUT', headers: withKey(keyA), json: fits })).status).toBe(200)
  })

  test('an unknown route is a JSON 404', async () => {
    const r = await call(url('/api/v2/public/nothing-here'), { headers: withKey(keyA) })
    expect(r.status).toBe(404)
    cobaltErrorShape(r.body, 404)
    const other = await call(url('/nothing'))
    expect(other.status).toBe(404)
    expect(other.headers.get('content-type')).toMatch(/^application\/json/)
    expect(other.body).toMatchObject({ statusCode: 404 })
  })

  test('/healthz, /readyz and /openapi.json with every Cobalt route', async () => {
    expect((await call(url('/healthz'))).body).toEqual({ status: 'ok' })
    expect((await call(url('/readyz'))).body).toEqual({ status: 'ok' })
    const doc = (await call(url('/openapi.json'))).body
    expect(doc.openapi).toMatch(/^3\./)
    const paths = Object.keys(doc.paths)
    for (const p of [
      '/api/v2/public/linked-account',
      '/api/v2/public/linked-account/{linked_account_id}',
      '/api/v2/public/session-token',
      '/api/v2/public/session-token/revoke',
      '/api/v2/public/session/active-linked-account',
      '/api/v3/org/basics',
    ]) {
      expect(paths).toContain(p)
    }
    expect(Object.keys(doc.paths['/api/v2/public/linked-account']).sort()).toEqual(['get', 'post', 'put'])
  })

  test('the logs never contain a key, secret, token or credential', async () => {
    // Requests that put secrets in the places a log could pick them up from.
    await call(url(`/api/v2/public/linked-account?api_key=${keyA.api_key}&token=${keyA.client_secret}`), { headers: withKey(keyA, { authorization: `Bearer ${keyA.client_secret}`, cookie: `s=${keyA.api_key}` }) })
    await call(url('/nothing?session_id=' + keyB.api_key), { headers: withKey(keyB) })
    // Stopping flushes the buffered log lines.
    expect(await server.stop()).toEqual({ code: 0, signal: null })
    const logs = server.out.stderr
    expect(logs.length).toBeGreaterThan(0)
    const lines = logs.trim().split('\n')
    for (const line of lines) expect(() => JSON.parse(line)).not.toThrow()
    expect(lines.some((l) => JSON.parse(l).reqId)).toBe(true)
    for (const s of secrets) expect(logs).not.toContain(s)
    expect(server.out.stdout).toMatch(/^listening on http:\/\/127\.0\.0\.1:\d+\n$/)
  })
})

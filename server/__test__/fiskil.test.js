'use strict'
// Fiskil's Data API on `linkvault serve` (a child process) through fetch, with the docs'
// request bodies verbatim: token, end users, auth sessions, consents, errors and isolation.

const { Client } = require('linkvault')
const { newStore, createKey, startServer, call } = require('./helpers')

let store
let server
let keyA
let keyB
let tokenA
let tokenB
let client // in-process Client on the same file: completes consent flows

const url = (path) => `${server.url}${path}`
const auth = (token) => ({ authorization: `Bearer ${token}` })

function fiskilErrorShape(body, name) {
  expect(body).toEqual({ id: expect.stringMatching(/^err_/), name: expect.any(String), message: expect.any(String) })
  if (name) expect(body.name).toBe(name)
}

async function fiskilToken(key) {
  const r = await call(url('/v1/token'), { method: 'POST', json: { client_id: key.client_id, client_secret: key.client_secret } })
  expect(r.status).toBe(200)
  return r.body
}

beforeAll(async () => {
  store = newStore()
  keyA = await createKey(store, 'org_a', 'test')
  keyB = await createKey(store, 'org_b', 'test')
  server = await startServer(store)
  tokenA = (await fiskilToken(keyA)).access_token
  tokenB = (await fiskilToken(keyB)).access_token
  client = await Client.open({ ...store.open, orgId: 'org_a', environment: 'test', encryptionKey: store.env.LINKVAULT_ENCRYPTION_KEY })
})

afterAll(async () => {
  if (client) await client.close()
  if (server) await server.stop()
})

describe('POST /v1/token', () => {
  test('answers { access_token, token_type, expires_in: 3600 }', async () => {
    expect(await fiskilToken(keyA)).toEqual({ access_token: expect.stringMatching(/^lva_/), token_type: 'Bearer', expires_in: 3600 })
  })

  test('wrong or missing credentials are 401/400 in Fiskil\'s shape', async () => {
    const wrong = await call(url('/v1/token'), { method: 'POST', json: { client_id: keyA.client_id, client_secret: keyB.client_secret } })
    expect(wrong.status).toBe(401)
    fiskilErrorShape(wrong.body, 'unauthorized')
    const missing = await call(url('/v1/token'), { method: 'POST', json: { client_id: keyA.client_id } })
    expect(missing.status).toBe(400)
    fiskilErrorShape(missing.body, 'bad_request')
  })

  test('data routes refuse no token, an API key, an Auth0 token and a session token', async () => {
    const auth0 = await call(url('/oauth/token'), { method: 'POST', json: { grant_type: 'client_credentials', client_id: keyA.client_id, client_secret: keyA.client_secret } })
    expect(auth0.status).toBe(200)
    await client.upsertLinkedAccount({ linked_account_id: 'someone' })
    const session = await client.getTokenForLinkedAccount({ linked_account_id: 'someone' })
    for (const headers of [{}, auth(keyA.api_key), { 'x-api-key': keyA.api_key }, auth(auth0.body.access_token), auth(session.token)]) {
      const r = await call(url('/v1/consent'), { headers })
      expect(r.status).toBe(401)
      fiskilErrorShape(r.body, 'unauthorized')
    }
  })
})

describe('end users', () => {
  let endUserId

  test('POST /v1/end-users with the docs\' body verbatim', async () => {
    const r = await call(url('/v1/end-users'), {
      method: 'POST',
      headers: auth(tokenA),
      json: `{
        "email": "user@example.com",
        "name": "John Doe"
      }`,
    })
    expect(r.status).toBe(200)
    expect(r.body).toEqual({ end_user_id: expect.any(String) })
    endUserId = r.body.end_user_id
  })

  test('GET /v1/end-users/:id and by email (trimmed, case-insensitive)', async () => {
    const r = await call(url(`/v1/end-users/${endUserId}`), { headers: auth(tokenA) })
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ id: endUserId, email: 'user@example.com', name: 'John Doe' })
    const byEmail = await call(url(`/v1/end-users?email=${encodeURIComponent('USER@example.com')}`), { headers: auth(tokenA) })
    expect(byEmail.status).toBe(200)
    expect(byEmail.body.map((u) => u.id)).toContain(endUserId)
  })

  test('POST /v1/end-users/:id updates (204); bad phone or ABN is 400', async () => {
    const r = await call(url(`/v1/end-users/${endUserId}`), { method: 'POST', headers: auth(tokenA), json: { abn: '51824753556', phone: '+61400000000' } })
    expect(r.status).toBe(204)
    expect(r.text).toBe('')
    const got = await call(url(`/v1/end-users/${endUserId}`), { headers: auth(tokenA) })
    expect(got.body).toMatchObject({ abn: '51824753556', phone: '+61400000000' })
    for (const body of [{ phone: '0400 000 000' }, { abn: '12345678901' }]) {
      const bad = await call(url(`/v1/end-users/${endUserId}`), { method: 'POST', headers: auth(tokenA), json: body })
      expect(bad.status).toBe(400)
      fiskilErrorShape(bad.body, 'bad_request')
    }
  })

  test('unknown end user is 404 end_user_not_found; another org does not see this one', async () => {
    for (const [token, id] of [[tokenA, 'nobody'], [tokenB, endUserId]]) {
      const r = await call(url(`/v1/end-users/${id}`), { headers: auth(token) })
      expect(r.status).toBe(404)
      fiskilErrorShape(r.body, 'end_user_not_found')
      const update = await call(url(`/v1/end-users/${id}`), { method: 'POST', headers: auth(token), json: { name: 'x' } })
      expect(update.status).toBe(404)
    }
  })

  test('auth session with the docs\' body, consent listed, revoked (204)', async () => {
    const r = await call(url('/v1/auth/session'), {
      method: 'POST',
      headers: auth(tokenA),
      json: `{
        "end_user_id": "${endUserId}"
      }`,
    })
    expect(r.status).toBe(200)
    expect(r.body).toEqual({ id: expect.any(String), session_id: expect.any(String), auth_url: expect.any(String), expires_at: expect.any(Number) })
    expect(r.body.auth_url.startsWith(server.url)).toBe(true)
    expect(Number.isInteger(r.body.expires_at)).toBe(true)
    // The end user consents (what the consent page does).
    const consent = await client.completeAuthSession(r.body.session_id, { institution_id: 'bank_1', institution_name: 'Bank One', account_ids: ['acc_1'], permissions: ['accounts'], duration_seconds: 7776000 })

    const listed = await call(url(`/v1/consent?end_user_id=${endUserId}&active=true`), { headers: auth(tokenA) })
    expect(listed.status).toBe(200)
    expect(listed.body).toEqual([expect.objectContaining({ arrangement_id: consent.arrangement_id, active: true, end_user_id: endUserId, account_ids: ['acc_1'], duration: 7776000 })])
    expect((await call(url(`/v1/consent?end_user_id=${endUserId}`), { headers: auth(tokenB) })).status).toBe(404)

    const revoked = await call(url(`/v1/consent/${consent.arrangement_id}`), { method: 'DELETE', headers: auth(tokenA) })
    expect(revoked.status).toBe(204)
    const ended = await call(url(`/v1/consent?end_user_id=${endUserId}&active=false`), { headers: auth(tokenA) })
    expect(ended.body).toEqual([expect.objectContaining({ arrangement_id: consent.arrangement_id, active: false })])
    expect((await call(url(`/v1/consent?end_user_id=${endUserId}&active=true`), { headers: auth(tokenA) })).body).toEqual([])
    const unknown = await call(url('/v1/consent/nope'), { method: 'DELETE', headers: auth(tokenA) })
    expect(unknown.status).toBe(404)
    fiskilErrorShape(unknown.body)
  })

  test('auth session for an unknown end user is 404; redirect_uri without cancel_uri is 400', async () => {
    const r = await call(url('/v1/auth/session'), { method: 'POST', headers: auth(tokenA), json: { end_user_id: 'nobody' } })
    expect(r.status).toBe(404)
    fiskilErrorShape(r.body)
    const half = await call(url('/v1/auth/session'), { method: 'POST', headers: auth(tokenA), json: { end_user_id: endUserId, redirect_uri: 'https://app.example.com/done' } })
    expect(half.status).toBe(400)
    fiskilErrorShape(half.body, 'bad_request')
  })

  test('with --public-url, auth_url is absolute under it', async () => {
    const other = await startServer(store, ['--public-url', 'https://vault.example.com/'])
    try {
      const token = (await call(`${other.url}/v1/token`, { method: 'POST', json: { client_id: keyA.client_id, client_secret: keyA.client_secret } })).body.access_token
      const r = await call(`${other.url}/v1/auth/session`, { method: 'POST', headers: auth(token), json: { end_user_id: endUserId } })
      expect(r.status).toBe(200)
      expect(r.body.auth_url).toBe(`https://vault.example.com/link/session/${r.body.session_id}`)
    } finally {
      await other.stop()
    }
  })

  test('DELETE /v1/end-users/:id (204), then 404', async () => {
    const r = await call(url(`/v1/end-users/${endUserId}`), { method: 'DELETE', headers: auth(tokenA) })
    expect(r.status).toBe(204)
    expect((await call(url(`/v1/end-users/${endUserId}`), { headers: auth(tokenA) })).status).toBe(404)
  })
})

describe('robustness', () => {
  test('malformed JSON (400), oversized body (413) and unknown routes (404) in Fiskil\'s shape', async () => {
    const bad = await call(url('/v1/end-users'), { method: 'POST', headers: auth(tokenA), json: '{"email": ' })
    expect(bad.status).toBe(400)
    fiskilErrorShape(bad.body, 'bad_request')
    const big = await call(url('/v1/end-users'), { method: 'POST', headers: auth(tokenA), json: JSON.stringify({ name: 'x'.repeat(300 * 1024) }) })
    expect(big.status).toBe(413)
    fiskilErrorShape(big.body)
    const none = await call(url('/v1/nothing'), { headers: auth(tokenA) })
    expect(none.status).toBe(404)
    fiskilErrorShape(none.body)
  })

  test('every Fiskil route is in /openapi.json', async () => {
    const doc = (await call(url('/openapi.json'))).body
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/v1/token', '/v1/end-users', '/v1/end-users/{id}', '/v1/auth/session', '/v1/consent', '/v1/consent/{arrangement_id}']),
    )
    expect(Object.keys(doc.paths['/v1/end-users/{id}']).sort()).toEqual(['delete', 'get', 'post'])
  })

  test('the logs hold no client secret or access token', async () => {
    await client.close()
    client = null
    await server.stop()
    expect(server.out.stderr).toMatch(/"reqId"/)
    for (const s of [keyA.client_secret, keyB.client_secret, tokenA, tokenB, keyA.api_key]) expect(server.out.stderr).not.toContain(s)
  })
})

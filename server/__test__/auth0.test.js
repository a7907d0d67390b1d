'use strict'
// Auth0's Management API on `linkvault serve` over HTTPS with a throwaway certificate, driven
// by node-auth0 v4 and v7 unchanged (a child process with NODE_EXTRA_CA_CERTS), plus the
// token endpoint and the error cases through fetch.

const { execFile } = require('node:child_process')
const path = require('node:path')
const https = require('node:https')
const fs = require('node:fs')

const { Client } = require('linkvault')
const { newStore, createKey, startServer, throwawayCert } = require('./helpers')

const SCRIPT = path.join(__dirname, 'fixtures', 'auth0-client.js')

let store
let server
let cert
let keyA
let keyB
let client // in-process Client on the same file, to set up accounts

/** Runs node-auth0 `version` through `steps` in a child process; resolves its results. */
function sdk(version, steps, key = keyA) {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [SCRIPT, version, JSON.stringify(steps)],
      {
        env: {
          ...process.env,
          NODE_EXTRA_CA_CERTS: cert.cert,
          AUTH0_DOMAIN: `127.0.0.1:${server.port}`,
          AUTH0_CLIENT_ID: key.client_id,
          AUTH0_CLIENT_SECRET: key.client_secret,
        },
        timeout: 60000,
      },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`node-auth0 ${version} failed: ${err.message}\n${stderr}`))
        resolve(JSON.parse(stdout.trim().split('\n').pop()))
      },
    )
  })
}

/** A request trusting the throwaway CA (fetch in this process does not). */
function request(method, urlPath, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: server.port, method, path: urlPath, headers, ca: fs.readFileSync(cert.cert) },
      (res) => {
        let text = ''
        res.on('data', (d) => (text += d))
        res.on('end', () => {
          let parsed
          try {
            parsed = JSON.parse(text)
          } catch {
            parsed = text
          }
          resolve({ status: res.statusCode, headers: res.headers, body: parsed, text })
        })
      },
    )
    req.on('error', reject)
    if (body !== undefined) req.write(body)
    req.end()
  })
}

async function managementToken(key = keyA) {
  const r = await request('POST', '/oauth/token', {
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ grant_type: 'client_credentials', client_id: key.client_id, client_secret: key.client_secret, audience: `https://127.0.0.1:${server.port}/api/v2/` }),
  })
  expect(r.status).toBe(200)
  return r.body.access_token
}

function auth0ErrorShape(body, status) {
  expect(body).toEqual({ statusCode: status, error: expect.any(String), message: expect.any(String), errorCode: expect.any(String) })
}

beforeAll(async () => {
  store = newStore()
  cert = throwawayCert()
  keyA = await createKey(store, 'org_a', 'test')
  keyB = await createKey(store, 'org_b', 'test')
  server = await startServer(store, ['--tls-cert', cert.cert, '--tls-key', cert.key])
  client = await Client.open({ ...store.open, orgId: 'org_a', environment: 'test', encryptionKey: store.env.LINKVAULT_ENCRYPTION_KEY })
})

afterAll(async () => {
  if (client) await client.close()
  if (server) await server.stop()
})

test('serve --tls-cert/--tls-key prints an https ready line', () => {
  expect(server.url).toBe(`https://127.0.0.1:${server.port}`)
})

describe('POST /oauth/token (client credentials)', () => {
  test('form body, as node-auth0 sends it, and JSON body', async () => {
    const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: keyA.client_id, client_secret: keyA.client_secret, audience: `https://127.0.0.1:${server.port}/api/v2/` })
    const r = await request('POST', '/oauth/token', { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() })
    expect(r.status).toBe(200)
    expect(r.body).toEqual({ access_token: expect.stringMatching(/^lva_/), token_type: 'Bearer', expires_in: 86400, scope: expect.any(String) })
    expect(await managementToken()).toMatch(/^lva_/)
  })

  test('wrong credentials, grant type or audience answer OAuth errors', async () => {
    const post = (body) => request('POST', '/oauth/token', { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const wrong = await post({ grant_type: 'client_credentials', client_id: keyA.client_id, client_secret: keyB.client_secret })
    expect(wrong.status).toBe(401)
    expect(wrong.body).toEqual({ error: 'access_denied', error_description: 'Unauthorized' })
    expect((await post({ grant_type: 'password', client_id: keyA.client_id, client_secret: keyA.client_secret })).body.error).toBe('unsupported_grant_type')
    expect((await post({ grant_type: 'client_credentials' })).status).toBe(400)
    const other = await post({ grant_type: 'client_credentials', client_id: keyA.client_id, client_secret: keyA.client_secret, audience: 'https://elsewhere.example/api' })
    expect(other.status).toBe(403)
    const broken = await request('POST', '/oauth/token', { headers: { 'content-type': 'application/json' }, body: '{"client_secret": "' })
    expect(broken.status).toBe(400)
    expect(broken.body).toEqual({ error: 'invalid_request', error_description: 'Request body is not valid JSON' })
  })
})

describe('Management API errors and credentials', () => {
  test('no token, an API key, a Fiskil token or a session token are refused with Auth0\'s 401', async () => {
    const fiskil = await request('POST', '/v1/token', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_id: keyA.client_id, client_secret: keyA.client_secret }) })
    expect(fiskil.status).toBe(200)
    await client.upsertLinkedAccount({ linked_account_id: 'auth0|someone' })
    const session = await client.getTokenForLinkedAccount({ linked_account_id: 'auth0|someone' })
    for (const headers of [{}, { authorization: `Bearer ${keyA.api_key}` }, { authorization: `Bearer ${fiskil.body.access_token}` }, { authorization: `Bearer ${session.token}` }, { 'x-api-key': keyA.api_key }]) {
      const r = await request('GET', '/api/v2/users/auth0%7Csomeone', { headers })
      expect(r.status).toBe(401)
      auth0ErrorShape(r.body, 401)
    }
  })

  test('unknown user is 404 with errorCode inexistent_user; unknown route is a JSON 404', async () => {
    const token = await managementToken()
    const r = await request('GET', '/api/v2/users/auth0%7Cnobody', { headers: { authorization: `Bearer ${token}` } })
    expect(r.status).toBe(404)
    expect(r.body).toEqual({ statusCode: 404, error: 'Not Found', message: 'The user does not exist.', errorCode: 'inexistent_user' })
    const route = await request('GET', '/api/v2/clients', { headers: { authorization: `Bearer ${token}` } })
    expect(route.status).toBe(404)
    auth0ErrorShape(route.body, 404)
  })

  test('malformed JSON and oversized bodies answer in Auth0\'s shape', async () => {
    const token = await managementToken()
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
    const bad = await request('POST', '/api/v2/users/auth0%7Csomeone/identities', { headers, body: '{"provider": ' })
    expect(bad.status).toBe(400)
    auth0ErrorShape(bad.body, 400)
    const big = await request('POST', '/api/v2/users/auth0%7Csomeone/identities', { headers, body: JSON.stringify({ provider: 'x', user_id: 'y'.repeat(300 * 1024) }) })
    expect(big.status).toBe(413)
    auth0ErrorShape(big.body, 413)
  })

  test('linking an identity another user holds is 409 identity_conflict; link_with is refused', async () => {
    const token = await managementToken()
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
    await client.upsertLinkedAccount({ linked_account_id: 'auth0|holder' })
    await client.upsertLinkedAccount({ linked_account_id: 'auth0|taker' })
    const body = JSON.stringify({ provider: 'twitter', user_id: 'held-1' })
    expect((await request('POST', '/api/v2/users/auth0%7Cholder/identities', { headers, body })).status).toBe(201)
    const conflict = await request('POST', '/api/v2/users/auth0%7Ctaker/identities', { headers, body })
    expect(conflict.status).toBe(409)
    expect(conflict.body).toMatchObject({ statusCode: 409, error: 'Conflict', errorCode: 'identity_conflict' })
    const linkWith = await request('POST', '/api/v2/users/auth0%7Ctaker/identities', { headers, body: JSON.stringify({ link_with: 'eyJ.x.y' }) })
    expect(linkWith.status).toBe(400)
    expect(linkWith.body).toMatchObject({ errorCode: 'operation_not_supported' })
    const unlinkMissing = await request('DELETE', '/api/v2/users/auth0%7Ctaker/identities/twitter/nope', { headers: { authorization: `Bearer ${token}` } })
    expect(unlinkMissing.status).toBe(404)
    auth0ErrorShape(unlinkMissing.body, 404)
  })

  test('another org\'s token does not see this org\'s users', async () => {
    const token = await managementToken(keyB)
    const r = await request('GET', '/api/v2/users/auth0%7Csomeone', { headers: { authorization: `Bearer ${token}` } })
    expect(r.status).toBe(404)
  })
})

describe.each(['v4', 'v7'])('node-auth0 %s, unchanged, over HTTPS', (version) => {
  const primary = `auth0|${version}primary`
  const secondary = `github|${version}12345`
  const email = `${version}.Ann@Example.com`
  const numericId = version === 'v4' ? 987 : 988

  beforeAll(async () => {
    await client.upsertLinkedAccount({ linked_account_id: primary, name: 'Ann' })
    await client.linkIdentity(primary, { provider: 'google-oauth2', user_id: `${version}g`, email, email_verified: true, connection: 'google-oauth2', isSocial: true })
    await client.upsertLinkedAccount({ linked_account_id: secondary, name: 'Ann on GitHub', udf: { plan: 'pro' } })
  })

  test('link, get (fields), users by email, unlink and restore, and 404s', async () => {
    const steps = [
      { op: 'link', id: primary, body: { provider: 'github', user_id: `${version}12345` } },
      { op: 'link', id: primary, body: { provider: 'facebook', user_id: numericId } },
      { op: 'get', id: primary, fields: 'user_id,identities', include_fields: true },
      { op: 'get', id: secondary },
      { op: 'getByEmail', email: email.toLowerCase() },
      { op: 'unlink', id: primary, provider: 'github', user_id: `${version}12345` },
      { op: 'get', id: secondary },
      { op: 'get', id: 'auth0|nobody' },
      { op: 'link', id: 'auth0|nobody', body: { provider: 'github', user_id: 'zzz' } },
    ]
    const [linked, linkedNumber, got, merged, byEmail, unlinked, restored, missing, linkMissing] = await sdk(version, steps)

    expect(linked.ok).toBe(true)
    expect(linked.data[0]).toMatchObject({ provider: 'auth0', user_id: `${version}primary`, connection: expect.any(String) })
    expect(linked.data).toEqual(expect.arrayContaining([expect.objectContaining({ provider: 'github', user_id: `${version}12345`, connection: expect.any(String) })]))
    expect(linkedNumber).toMatchObject({ ok: true })
    expect(linkedNumber.data).toEqual(expect.arrayContaining([expect.objectContaining({ provider: 'facebook', user_id: String(numericId) })]))

    expect(got.ok).toBe(true)
    expect(Object.keys(got.data).sort()).toEqual(['identities', 'user_id'])
    expect(got.data.user_id).toBe(primary)

    // The secondary was merged into the primary, as Auth0 does.
    expect(merged).toMatchObject({ ok: false, statusCode: 404 })

    expect(byEmail.ok).toBe(true)
    expect(byEmail.data.map((u) => u.user_id)).toEqual([primary])

    expect(unlinked.ok).toBe(true)
    expect(unlinked.data.some((i) => i.provider === 'github')).toBe(false)
    expect(unlinked.data[0]).toMatchObject({ provider: 'auth0', user_id: `${version}primary` })

    // Unlinking restored the secondary as it was.
    expect(restored.ok).toBe(true)
    expect(restored.data).toMatchObject({ user_id: secondary, app_metadata: { plan: 'pro' } })

    expect(missing).toMatchObject({ ok: false, statusCode: 404 })
    expect(linkMissing).toMatchObject({ ok: false, statusCode: 404 })
  })
})

// API keys, client credentials and forScope: the Client methods `linkvault keys` and
// `linkvault serve` are built on.
const fs = require('node:fs')
const path = require('node:path')

const { openClient, testSqlite, tmpDir } = require('./helpers')

describe('forScope', () => {
  test('a client bound to another scope on the same store sees only that scope', async () => {
    const root = await openClient({ orgId: 'org_root' })
    const a = await root.forScope({ orgId: 'org_a' })
    const aProd = await root.forScope({ orgId: 'org_a', environment: 'production' })
    expect([a.orgId, a.environment, aProd.environment]).toEqual(['org_a', 'test', 'production'])
    await a.upsertLinkedAccount({ linked_account_id: 'u1', name: 'A' })
    for (const other of [root, aProd]) {
      await expect(other.getLinkedAccountById('u1')).rejects.toMatchObject({ code: 'NOT_FOUND' })
    }
    const { token } = await a.getTokenForLinkedAccount({ linked_account_id: 'u1' })
    expect(a.verifySessionTokenSync(token)).toMatchObject({ org_id: 'org_a', linked_account_id: 'u1' })
    expect(() => aProd.verifySessionTokenSync(token)).toThrow(expect.objectContaining({ code: 'INVALID_TOKEN' }))
    // Closing a derived client leaves the store open for the others.
    await a.close()
    await expect(aProd.getAllLinkedAccounts()).resolves.toMatchObject({ totalDocs: 0 })
    await aProd.close()
    await root.close()
  })

  test('create: false refuses a scope the store does not hold; bad options are VALIDATION_ERRORs', async () => {
    const root = await openClient()
    await expect(root.forScope({ orgId: 'org_new', create: false })).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await root.forScope({ orgId: 'org_new' })
    await expect(root.forScope({ orgId: 'org_new', create: false })).resolves.toMatchObject({ orgId: 'org_new' })
    await expect(root.forScope({})).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'orgId' })
    await expect(root.forScope({ orgId: 'o', environment: 'staging' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'environment' })
    await expect(root.forScope({ orgId: 'o', create: 'yes' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'create' })
    await root.close()
  })
})

describe('API keys', () => {
  let dir
  let root
  let test_
  let prod

  beforeAll(async () => {
    dir = tmpDir()
    root = await openClient({ dir, orgId: 'org_a' })
    test_ = await root.createApiKey({ name: 'ci' })
    const prodClient = await root.forScope({ orgId: 'org_a', environment: 'production' })
    prod = await prodClient.createApiKey()
  })

  afterAll(() => root.close())

  test('createApiKey returns the secrets once, bound to the client\'s scope', () => {
    expect(test_).toEqual({
      api_key: expect.stringMatching(/^tk_[0-9a-f]{64}$/),
      client_id: expect.stringMatching(/^lvc_[0-9a-f]{32}$/),
      client_secret: expect.stringMatching(/^lvs_[0-9a-f]{64}$/),
      org_id: 'org_a',
      environment: 'test',
      name: 'ci',
      api_key_hint: `tk_…${test_.api_key.slice(-4)}`,
      created_at: expect.stringMatching(/Z$/),
    })
    expect(prod.api_key).toMatch(/^pk_/)
    expect(prod.name).toBeNull()
  })

  testSqlite('only digests are stored', 'scans the database files', () => {
    for (const file of fs.readdirSync(dir)) {
      const bytes = fs.readFileSync(path.join(dir, file))
      for (const s of [test_.api_key, test_.client_secret, prod.api_key, prod.client_secret]) expect(bytes.includes(Buffer.from(s))).toBe(false)
    }
  })

  test('resolveApiKey finds the key from any client; malformed, unknown and cross-prefix keys are null', async () => {
    const other = await root.forScope({ orgId: 'org_other' })
    await expect(other.resolveApiKey(test_.api_key)).resolves.toMatchObject({ client_id: test_.client_id, org_id: 'org_a', environment: 'test', revoked_at: null })
    await expect(root.resolveApiKey(prod.api_key)).resolves.toMatchObject({ environment: 'production' })
    for (const bad of ['', 'tk_', `tk_${'0'.repeat(64)}`, test_.api_key.toUpperCase(), `pk_${test_.api_key.slice(3)}`, test_.client_secret, 42, null]) {
      await expect(root.resolveApiKey(bad)).resolves.toBeNull()
    }
  })

  test('listApiKeys lists every scope\'s keys without secrets, with filters', async () => {
    const all = await root.listApiKeys()
    expect(all.map((k) => k.client_id)).toEqual([test_.client_id, prod.client_id])
    for (const k of all) expect(Object.keys(k).sort()).toEqual(['api_key_hint', 'client_id', 'created_at', 'environment', 'name', 'org_id', 'revoked_at'])
    await expect(root.listApiKeys({ environment: 'production' })).resolves.toHaveLength(1)
    await expect(root.listApiKeys({ orgId: 'org_none' })).resolves.toEqual([])
    await expect(root.listApiKeys({ limit: 1 })).resolves.toHaveLength(1)
    await expect(root.listApiKeys({ limit: 0 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'limit' })
    await expect(root.listApiKeys({ environment: 'dev' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'environment' })
  })

  test('issueAccessToken checks the secret; tokens resolve only for their audience until expiry', async () => {
    const req = { client_id: test_.client_id, client_secret: test_.client_secret, audience: 'aud-1' }
    const issued = await root.issueAccessToken(req)
    expect(issued).toEqual({ access_token: expect.stringMatching(/^lva_[0-9a-f]{64}$/), token_type: 'Bearer', expires_in: 3600, client_id: test_.client_id, org_id: 'org_a', environment: 'test', audience: 'aud-1' })
    const grant = await root.resolveAccessToken(issued.access_token, 'aud-1')
    expect(grant).toMatchObject({ client_id: test_.client_id, org_id: 'org_a', environment: 'test', audience: 'aud-1' })
    expect(grant.expires_at - Math.floor(Date.now() / 1000)).toBeGreaterThan(3590)
    await expect(root.resolveAccessToken(issued.access_token, 'aud-2')).resolves.toBeNull()
    await expect(root.resolveAccessToken(test_.api_key, 'aud-1')).resolves.toBeNull()
    await expect(root.issueAccessToken({ ...req, client_secret: prod.client_secret })).resolves.toBeNull()
    await expect(root.issueAccessToken({ ...req, client_id: 'lvc_unknown' })).resolves.toBeNull()
    await expect(root.issueAccessToken({ ...req, ttl_seconds: 60 })).resolves.toMatchObject({ expires_in: 60 })
    await expect(root.issueAccessToken({ ...req, ttl_seconds: 86401 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'ttl_seconds' })
    await expect(root.issueAccessToken({ client_id: test_.client_id, audience: 'a' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'client_secret' })
    await expect(root.issueAccessToken({ ...req, audience: '' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'audience' })
  })

  test('a short-lived token expires', async () => {
    const issued = await root.issueAccessToken({ client_id: test_.client_id, client_secret: test_.client_secret, audience: 'a', ttl_seconds: 1 })
    await expect(root.resolveAccessToken(issued.access_token, 'a')).resolves.not.toBeNull()
    await new Promise((r) => setTimeout(r, 2100))
    await expect(root.resolveAccessToken(issued.access_token, 'a')).resolves.toBeNull()
  })

  test('revokeApiKey ends the key, its secret and its tokens at once; unknown ids are NOT_FOUND', async () => {
    const key = await root.createApiKey()
    const { access_token: token } = await root.issueAccessToken({ client_id: key.client_id, client_secret: key.client_secret, audience: 'a' })
    const revoked = await root.revokeApiKey(key.client_id)
    expect(revoked).toMatchObject({ client_id: key.client_id, revoked_at: expect.any(String) })
    await expect(root.resolveApiKey(key.api_key)).resolves.toBeNull()
    await expect(root.resolveAccessToken(token, 'a')).resolves.toBeNull()
    await expect(root.issueAccessToken({ client_id: key.client_id, client_secret: key.client_secret, audience: 'a' })).resolves.toBeNull()
    await expect(root.revokeApiKey(key.client_id)).resolves.toEqual(revoked)
    await expect(root.revokeApiKey('lvc_nope')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(root.revokeApiKey('')).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'client_id' })
    await expect(root.createApiKey({ name: '' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'name' })
  })
})

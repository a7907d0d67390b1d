// Session tokens: mint, verify (sync and async), interop with jsonwebtoken, every rejection,
// expiry, refresh rotation and reuse detection, revocation across clients and processes,
// account deletion, key rotation and retirement, force_refresh.
const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { fork } = require('node:child_process')
const jwt = require('jsonwebtoken')

const { Client, tmpDir, openClient: openIn, storeOptions, isPostgres, seenByOthers, KEY } = require('./helpers')

const DIR = tmpDir()
/** Opens a client with the shared test key, without a new temporary directory per call. */
const openClient = (options) => openIn({ dir: DIR, ...options })

const SECRET = 'test-signing-secret-with-at-least-32-bytes'
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const b64 = (s) => Buffer.from(s).toString('base64url')
const nowSecs = () => Math.floor(Date.now() / 1000)

/** Runs `fn`, which must throw; returns the thrown error. */
function thrown(fn) {
  try {
    fn()
  } catch (e) {
    return e
  }
  throw new Error('expected a throw')
}

/** The sync and async verifications of `token` both fail with `code` (status 401), and the
 * message contains neither the token nor any of its parts. */
async function rejects(client, token, code) {
  const e = thrown(() => client.verifySessionTokenSync(token))
  expect(e).toMatchObject({ code, status: 401 })
  expect(typeof e.message).toBe('string')
  if (typeof token === 'string' && token.length > 0) {
    expect(e.message).not.toContain(token)
    for (const part of token.split('.')) {
      if (part.length >= 8) expect(e.message).not.toContain(part)
    }
  }
  expect(e.message).not.toContain(SECRET)
  await expect(client.verifySessionToken(token)).rejects.toMatchObject({ code, status: 401 })
}

function claimsFor(client, id, extra = {}) {
  const iat = nowSecs()
  return {
    org_id: client.orgId,
    linked_account_id: id,
    environment: client.environment,
    iat,
    exp: iat + 600,
    jti: crypto.randomUUID(),
    ...extra,
  }
}

const kidOf = (token) => jwt.decode(token, { complete: true }).header.kid

describe('session tokens', () => {
  let db
  let a // client A
  let b // client B on the same database

  beforeAll(async () => {
    db = storeOptions({ dir: DIR, name: 'tokens.db' })
    a = await openClient({ ...db, signingSecret: SECRET })
    b = await openClient({ ...db, signingSecret: SECRET })
    for (const id of ['u1', 'u2', 'u3', 'u4', 'u5', 'u6']) {
      await a.upsertLinkedAccount({ linked_account_id: id, name: id })
    }
  })

  afterAll(async () => {
    await a.close()
    await b.close()
  })

  test('mint → verify round trip, sync and async', async () => {
    const t = await a.getTokenForLinkedAccount({ linked_account_id: 'u1' })
    expect(Object.keys(t).sort()).toEqual(['expires_in', 'refresh_expires_in', 'refresh_token', 'token'])
    expect(t.expires_in).toBe(86400)
    expect(t.refresh_expires_in).toBe(30 * 86400)
    expect(t.refresh_token).toMatch(/^lvrt_[A-Za-z0-9_-]{43}$/)
    const header = jwt.decode(t.token, { complete: true }).header
    expect(header).toEqual({ alg: 'HS256', typ: 'JWT', kid: expect.any(String) })

    const claims = a.verifySessionTokenSync(t.token)
    expect(claims).toEqual({
      org_id: 'org_test',
      linked_account_id: 'u1',
      environment: 'test',
      iat: expect.any(Number),
      exp: claims.iat + 86400,
      jti: expect.any(String),
    })
    expect(Math.abs(claims.iat - nowSecs())).toBeLessThanOrEqual(2)
    expect(await a.verifySessionToken(t.token)).toEqual(claims)
    expect(b.verifySessionTokenSync(t.token)).toEqual(claims)
  })

  test('interop: jsonwebtoken verifies our tokens, and we verify its tokens', async () => {
    const t = await a.getTokenForLinkedAccount({ linked_account_id: 'u1', scopes: ['write', 'read'] })
    const theirs = jwt.verify(t.token, SECRET, { algorithms: ['HS256'] })
    const ours = a.verifySessionTokenSync(t.token)
    expect(theirs).toEqual(ours)
    expect(ours.scopes).toEqual(['read', 'write'])
    // Also with a KeyObject secret.
    expect(jwt.verify(t.token, crypto.createSecretKey(Buffer.from(SECRET)), { algorithms: ['HS256'] })).toEqual(ours)

    // A token jsonwebtoken signs with the secret, the same claims and our kid verifies here.
    const claims = claimsFor(a, 'u2')
    const signed = jwt.sign(claims, SECRET, { algorithm: 'HS256', keyid: kidOf(t.token) })
    expect(a.verifySessionTokenSync(signed)).toEqual(claims)
    expect(await b.verifySessionToken(signed)).toEqual(claims)
    const scoped = { ...claimsFor(a, 'u2'), scopes: ['x'] }
    expect(a.verifySessionTokenSync(jwt.sign(scoped, SECRET, { algorithm: 'HS256', keyid: kidOf(t.token) }))).toEqual(
      scoped,
    )
  })

  test('rejects malformed tokens, bad base64, bad JSON, non-strings: INVALID_TOKEN', async () => {
    const t = await a.getTokenForLinkedAccount({ linked_account_id: 'u1' })
    const [h, p, s] = t.token.split('.')
    const cases = [
      '',
      'abc',
      'a.b',
      'a.b.c.d',
      `${h}.${p}`,
      `${h}.${p}.`,
      `${h}..${s}`,
      `${h}.${p}.${s}.`,
      `${h}.${p}.${s}=`,
      ` ${t.token}`,
      `Bearer ${t.token}`,
      `!!!.${p}.${s}`,
      `${h}.${p}.***`,
      `${b64('not json')}.${p}.${s}`,
      `${b64('{"alg":"HS256","typ":"JWT","kid":"x"')}.${p}.${s}`,
      `${h}.${b64('not json')}.${s}`,
      `${h}.${p}.${s.slice(0, -2)}`,
      'x'.repeat(9000),
    ]
    for (const bad of cases) await rejects(a, bad, 'INVALID_TOKEN')
    for (const bad of [undefined, null, 42, {}, ['a'], Buffer.from(t.token)]) {
      await rejects(a, bad, 'INVALID_TOKEN')
    }
    expect(thrown(() => a.verifySessionTokenSync())).toMatchObject({ code: 'INVALID_TOKEN', status: 401 })
  })

  test('rejects a wrong signature, alg none, RS256/ES256/HS512 headers: INVALID_TOKEN', async () => {
    const kid = kidOf((await a.getTokenForLinkedAccount({ linked_account_id: 'u1' })).token)
    const claims = claimsFor(a, 'u1')
    // Wrong secret.
    await rejects(a, jwt.sign(claims, 'another-secret-that-is-32-bytes-long!!', { algorithm: 'HS256', keyid: kid }), 'INVALID_TOKEN')
    // alg none, with and without a signature part.
    const none = `${b64(JSON.stringify({ alg: 'none', typ: 'JWT', kid }))}.${b64(JSON.stringify(claims))}`
    await rejects(a, `${none}.`, 'INVALID_TOKEN')
    const good = jwt.sign(claims, SECRET, { algorithm: 'HS256', keyid: kid })
    await rejects(a, `${none}.${good.split('.')[2]}`, 'INVALID_TOKEN')
    // A valid HS256 MAC under an "alg": "none" or "HS512" header is still refused.
    const forge = (header) => {
      const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`
      const mac = crypto.createHmac('sha256', SECRET).update(input).digest('base64url')
      return `${input}.${mac}`
    }
    await rejects(a, forge({ alg: 'none', typ: 'JWT', kid }), 'INVALID_TOKEN')
    await rejects(a, forge({ alg: 'RS256', typ: 'JWT', kid }), 'INVALID_TOKEN')
    await rejects(a, forge({ alg: 'HS256', typ: 'JWT' }), 'INVALID_TOKEN')
    await rejects(a, forge({ alg: 'HS256', typ: 'JWT', kid, crit: ['exp'] }), 'INVALID_TOKEN')
    expect(a.verifySessionTokenSync(forge({ alg: 'HS256', typ: 'JWT', kid }))).toEqual(claims)
    // Real RS256 / ES256 tokens with our kid, and HS512 with the right secret.
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    await rejects(a, jwt.sign(claims, rsa.privateKey, { algorithm: 'RS256', keyid: kid }), 'INVALID_TOKEN')
    const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    await rejects(a, jwt.sign(claims, ec.privateKey, { algorithm: 'ES256', keyid: kid }), 'INVALID_TOKEN')
    await rejects(a, jwt.sign(claims, SECRET, { algorithm: 'HS512', keyid: kid }), 'INVALID_TOKEN')
    // Unknown kid.
    await rejects(a, jwt.sign(claims, SECRET, { algorithm: 'HS256', keyid: 'no-such-kid' }), 'INVALID_TOKEN')
    // Extra or missing claims, wrong types.
    await rejects(a, jwt.sign({ ...claims, admin: true }, SECRET, { algorithm: 'HS256', keyid: kid }), 'INVALID_TOKEN')
    const { jti: _j, ...noJti } = claims
    await rejects(a, jwt.sign(noJti, SECRET, { algorithm: 'HS256', keyid: kid }), 'INVALID_TOKEN')
    const stringIat = (() => {
      const input = `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid }))}.${b64(JSON.stringify({ ...claims, iat: String(claims.iat) }))}`
      return `${input}.${crypto.createHmac('sha256', SECRET).update(input).digest('base64url')}`
    })()
    await rejects(a, stringIat, 'INVALID_TOKEN')
  })

  test('rejects an iat in the future beyond the skew: INVALID_TOKEN', async () => {
    const kid = kidOf((await a.getTokenForLinkedAccount({ linked_account_id: 'u1' })).token)
    const now = nowSecs()
    const future = claimsFor(a, 'u1', { iat: now + 120, exp: now + 3600 })
    await rejects(a, jwt.sign(future, SECRET, { algorithm: 'HS256', keyid: kid }), 'INVALID_TOKEN')
    // Within the default 30 s skew: accepted.
    const near = claimsFor(a, 'u1', { iat: now + 10, exp: now + 3600 })
    expect(a.verifySessionTokenSync(jwt.sign(near, SECRET, { algorithm: 'HS256', keyid: kid }))).toEqual(near)
  })

  test('rejects tokens of another org or environment on the same database', async () => {
    const other = await openClient({ ...db, orgId: 'org_other', signingSecret: SECRET })
    const prod = await openClient({ ...db, environment: 'production', signingSecret: SECRET })
    try {
      await other.upsertLinkedAccount({ linked_account_id: 'u1' })
      const mine = await a.getTokenForLinkedAccount({ linked_account_id: 'u1' })
      const theirs = await other.getTokenForLinkedAccount({ linked_account_id: 'u1' })
      await rejects(other, mine.token, 'INVALID_TOKEN')
      await rejects(prod, mine.token, 'INVALID_TOKEN')
      await rejects(a, theirs.token, 'INVALID_TOKEN')
      // Same secret and a kid the other client knows, but A's org or environment in the claims.
      const kid = kidOf(theirs.token)
      expect(other.verifySessionTokenSync(jwt.sign(claimsFor(other, 'u1'), SECRET, { algorithm: 'HS256', keyid: kid }))).toBeTruthy()
      await rejects(other, jwt.sign(claimsFor(a, 'u1'), SECRET, { algorithm: 'HS256', keyid: kid }), 'INVALID_TOKEN')
      const wrongEnv = { ...claimsFor(other, 'u1'), environment: 'production' }
      await rejects(other, jwt.sign(wrongEnv, SECRET, { algorithm: 'HS256', keyid: kid }), 'INVALID_TOKEN')
    } finally {
      await other.close()
      await prod.close()
    }
  })

  test('a token with any payload byte flipped is rejected, never a crash', async () => {
    const t = await a.getTokenForLinkedAccount({ linked_account_id: 'u1', scopes: ['read'] })
    const [h, p, s] = t.token.split('.')
    // Every byte of the decoded payload, flipped once, re-encoded; signature kept.
    const payload = Buffer.from(p, 'base64url')
    for (let i = 0; i < payload.length; i++) {
      const m = Buffer.from(payload)
      m[i] ^= 0x01
      const e = thrown(() => a.verifySessionTokenSync(`${h}.${m.toString('base64url')}.${s}`))
      expect(e).toMatchObject({ code: 'INVALID_TOKEN', status: 401 })
    }
    // Every character of the token, changed once.
    for (let i = 0; i < t.token.length; i++) {
      const c = t.token[i]
      const r = c === 'A' ? 'B' : c === '.' ? 'A' : 'A'
      const m = t.token.slice(0, i) + r + t.token.slice(i + 1)
      const e = thrown(() => a.verifySessionTokenSync(m))
      expect(e.code).toBe('INVALID_TOKEN')
    }
    expect(a.verifySessionTokenSync(t.token).scopes).toEqual(['read'])
  })

  test('expiry with a small TTL: TOKEN_EXPIRED', async () => {
    const c = await openClient({ ...db, signingSecret: SECRET, clockSkewSeconds: 0 })
    try {
      const t = await c.getTokenForLinkedAccount({ linked_account_id: 'u3', ttl_seconds: 1, force_refresh: true })
      expect(t.expires_in).toBe(1)
      const { exp } = jwt.decode(t.token)
      while (Date.now() / 1000 < exp + 0.05) await sleep(100)
      await rejects(c, t.token, 'TOKEN_EXPIRED')
      expect(() => jwt.verify(t.token, SECRET, { algorithms: ['HS256'] })).toThrow(jwt.TokenExpiredError)
      // With the default 30 s skew client A still accepts it.
      expect(a.verifySessionTokenSync(t.token).exp).toBe(exp)
    } finally {
      await c.close()
    }
  })

  test('refresh rotates; reusing a refresh token revokes the whole family', async () => {
    const t1 = await a.getTokenForLinkedAccount({ linked_account_id: 'u4', force_refresh: true, scopes: ['s1'] })
    const t2 = await b.refreshSessionToken(t1.refresh_token)
    expect(t2.token).not.toBe(t1.token)
    expect(t2.refresh_token).not.toBe(t1.refresh_token)
    expect(t2.expires_in).toBe(86400)
    const c2 = a.verifySessionTokenSync(t2.token)
    expect(c2).toMatchObject({ linked_account_id: 'u4', scopes: ['s1'] })
    expect(c2.jti).not.toBe(a.verifySessionTokenSync(t1.token).jti)
    const t3 = await a.refreshSessionToken(t2.refresh_token)
    expect(a.verifySessionTokenSync(t3.token).linked_account_id).toBe('u4')

    // t1's refresh token again: reuse detected.
    await expect(a.refreshSessionToken(t1.refresh_token)).rejects.toMatchObject({ code: 'TOKEN_REVOKED', status: 401 })
    for (const t of [t1, t2, t3]) {
      await rejects(a, t.token, 'TOKEN_REVOKED')
      // a detected the reuse and revoked; b is another client (within the lag on PostgreSQL).
      await seenByOthers(() => rejects(b, t.token, 'TOKEN_REVOKED'))
    }
    await expect(b.refreshSessionToken(t3.refresh_token)).rejects.toMatchObject({ code: 'TOKEN_REVOKED' })
    // Unknown, malformed and missing refresh tokens.
    await expect(a.refreshSessionToken('lvrt_' + crypto.randomBytes(32).toString('base64url'))).rejects.toMatchObject({
      code: 'INVALID_TOKEN',
      status: 401,
    })
    await expect(a.refreshSessionToken(t1.token)).rejects.toMatchObject({ code: 'INVALID_TOKEN' })
    await expect(a.refreshSessionToken()).rejects.toMatchObject({ code: 'INVALID_TOKEN' })
    // The messages never echo refresh tokens.
    const e = await a.refreshSessionToken(t1.refresh_token).catch((x) => x)
    expect(e.message).not.toContain(t1.refresh_token)
  })

  test('revocation is seen by a second client on the same database (at once on SQLite, within the lag on PostgreSQL)', async () => {
    const t = await a.getTokenForLinkedAccount({ linked_account_id: 'u5', force_refresh: true })
    expect(b.verifySessionTokenSync(t.token).linked_account_id).toBe('u5')
    expect(await b.revokeSessionToken(t.token)).toEqual({ success: true, revoked_count: 1 })
    await seenByOthers(() => rejects(a, t.token, 'TOKEN_REVOKED'))
    await rejects(b, t.token, 'TOKEN_REVOKED')
    // Idempotent; its refresh token is dead; it is not handed out again.
    expect(await a.revokeSessionToken(t.token)).toEqual({ success: true, revoked_count: 0 })
    await expect(a.refreshSessionToken(t.refresh_token)).rejects.toMatchObject({ code: 'TOKEN_REVOKED' })
    const next = await a.getTokenForLinkedAccount({ linked_account_id: 'u5' })
    expect(next.token).not.toBe(t.token)
    // A token we cannot authenticate cannot be revoked.
    await expect(a.revokeSessionToken('abc')).rejects.toMatchObject({ code: 'INVALID_TOKEN' })
    // A client opened afterwards (durable revocation) rejects it too.
    const c = await openClient({ ...db })
    await rejects(c, t.token, 'TOKEN_REVOKED')
    expect(c.verifySessionTokenSync(next.token).linked_account_id).toBe('u5')
    await c.close()
  })

  test('revocation is seen by another process on the same database (at once on SQLite, within the lag on PostgreSQL)', async () => {
    const script = path.join(DIR, 'verifier-child.js')
    fs.writeFileSync(
      script,
      `const { Client } = require(${JSON.stringify(path.join(__dirname, '..'))})
let client
process.on('message', async (m) => {
  if (m.open) { client = await Client.open(m.open); process.send({ opened: true }) }
  else if (m.verify) {
    try { process.send({ claims: client.verifySessionTokenSync(m.verify) }) }
    catch (e) { process.send({ code: e.code }) }
  } else if (m.close) { await client.close(); process.exit(0) }
})
`,
    )
    const child = fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const ask = (msg) =>
      new Promise((resolve) => {
        child.once('message', resolve)
        child.send(msg)
      })
    try {
      await ask({ open: { ...db, orgId: 'org_test', encryptionKey: KEY } })
      const t = await a.getTokenForLinkedAccount({ linked_account_id: 'u6', force_refresh: true })
      expect((await ask({ verify: t.token })).claims.linked_account_id).toBe('u6')
      expect((await ask({ verify: t.token })).claims.linked_account_id).toBe('u6')
      await a.revokeSessionToken(t.token)
      await seenByOthers(async () => expect(await ask({ verify: t.token })).toEqual({ code: 'TOKEN_REVOKED' }))
      // And a revoke-all made here is seen there.
      const t2 = await a.getTokenForLinkedAccount({ linked_account_id: 'u6' })
      expect((await ask({ verify: t2.token })).claims).toBeTruthy()
      expect(await a.revokeAllSessionTokens('u6')).toEqual({ success: true, revoked_count: 1 })
      await seenByOthers(async () => expect(await ask({ verify: t2.token })).toEqual({ code: 'TOKEN_REVOKED' }))
    } finally {
      const exited = new Promise((r) => child.once('exit', r))
      child.send({ close: true })
      await exited
    }
  })

  test('revokeAllSessionTokens revokes every session of an account', async () => {
    await a.upsertLinkedAccount({ linked_account_id: 'ra' })
    const s1 = await a.getTokenForLinkedAccount({ linked_account_id: 'ra' })
    const s2 = await a.getTokenForLinkedAccount({ linked_account_id: 'ra', force_refresh: true })
    const s3 = await b.refreshSessionToken(s2.refresh_token)
    const other = await a.getTokenForLinkedAccount({ linked_account_id: 'u1', force_refresh: true })
    expect(await b.revokeAllSessionTokens('ra')).toEqual({ success: true, revoked_count: 2 })
    for (const t of [s1, s2, s3]) await seenByOthers(() => rejects(a, t.token, 'TOKEN_REVOKED'))
    await expect(a.refreshSessionToken(s3.refresh_token)).rejects.toMatchObject({ code: 'TOKEN_REVOKED' })
    expect(a.verifySessionTokenSync(other.token).linked_account_id).toBe('u1')
    expect(await b.revokeAllSessionTokens('ra')).toEqual({ success: true, revoked_count: 0 })
    const fresh = await a.getTokenForLinkedAccount({ linked_account_id: 'ra' })
    expect(b.verifySessionTokenSync(fresh.token).linked_account_id).toBe('ra')
    await expect(a.revokeAllSessionTokens('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    await expect(a.revokeAllSessionTokens()).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'linked_account_id' })
  })

  test('deleting the linked account revokes its tokens', async () => {
    await a.upsertLinkedAccount({ linked_account_id: 'del' })
    const t1 = await a.getTokenForLinkedAccount({ linked_account_id: 'del' })
    const t2 = await a.getTokenForLinkedAccount({ linked_account_id: 'del', force_refresh: true })
    expect(b.verifySessionTokenSync(t1.token).linked_account_id).toBe('del')
    await b.deleteLinkedAccount('del')
    for (const t of [t1, t2]) {
      await seenByOthers(() => rejects(a, t.token, 'TOKEN_REVOKED'))
      await rejects(b, t.token, 'TOKEN_REVOKED')
    }
    await expect(a.refreshSessionToken(t1.refresh_token)).rejects.toMatchObject({ status: 401 })
    await expect(a.getTokenForLinkedAccount({ linked_account_id: 'del' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      status: 404,
    })
    // Recreated with the same id: the old tokens stay revoked, new ones work.
    await a.upsertLinkedAccount({ linked_account_id: 'del' })
    await rejects(b, t1.token, 'TOKEN_REVOKED')
    const t3 = await a.getTokenForLinkedAccount({ linked_account_id: 'del' })
    expect(b.verifySessionTokenSync(t3.token).linked_account_id).toBe('del')
  })

  test('key rotation and retirement', async () => {
    const f = storeOptions({ dir: DIR, name: 'keys.db' })
    const k = await openClient({ ...f, signingSecret: SECRET })
    const k2client = await openClient({ ...f, signingSecret: SECRET })
    try {
      await k.upsertLinkedAccount({ linked_account_id: 'u1' })
      const t1 = await k.getTokenForLinkedAccount({ linked_account_id: 'u1' })
      const kid1 = kidOf(t1.token)
      const { kid: kid2 } = await k.rotateSigningKey()
      expect(kid2).not.toBe(kid1)
      const t2 = await k.getTokenForLinkedAccount({ linked_account_id: 'u1', force_refresh: true })
      expect(kidOf(t2.token)).toBe(kid2)
      // A random rotated secret is not the configured one.
      expect(() => jwt.verify(t2.token, SECRET, { algorithms: ['HS256'] })).toThrow()
      // Old tokens still verify until retired; the new key reaches the other client at once on
      // SQLite, within the revocation lag on PostgreSQL (docs/postgres.md) ...
      expect(k2client.verifySessionTokenSync(t1.token).linked_account_id).toBe('u1')
      await seenByOthers(() => expect(k2client.verifySessionTokenSync(t2.token).linked_account_id).toBe('u1'))
      expect(await k2client.retireSigningKey(kid1)).toEqual({ success: true })
      // ... then fail everywhere, and are not handed out again.
      await seenByOthers(() => rejects(k, t1.token, 'INVALID_TOKEN'))
      await rejects(k2client, t1.token, 'INVALID_TOKEN')
      await rejects(k, jwt.sign(claimsFor(k, 'u1'), SECRET, { algorithm: 'HS256', keyid: kid1 }), 'INVALID_TOKEN')
      expect(k.verifySessionTokenSync(t2.token).linked_account_id).toBe('u1')
      const t3 = await k.getTokenForLinkedAccount({ linked_account_id: 'u1' })
      expect(kidOf(t3.token)).toBe(kid2)
      // Retiring twice is fine; the only live key cannot be retired; unknown kid.
      expect(await k.retireSigningKey(kid1)).toEqual({ success: true })
      await expect(k.retireSigningKey(kid2)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'kid' })
      await expect(k.retireSigningKey('nope')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
      // Rotating to a chosen secret keeps external verifiers working.
      const NEXT = 'the-next-signing-secret-32-bytes-long'
      const { kid: kid3 } = await k.rotateSigningKey({ signingSecret: NEXT })
      const t4 = await k.getTokenForLinkedAccount({ linked_account_id: 'u1', force_refresh: true })
      expect(kidOf(t4.token)).toBe(kid3)
      expect(jwt.verify(t4.token, NEXT, { algorithms: ['HS256'] }).linked_account_id).toBe('u1')
      expect(k2client.verifySessionTokenSync(t4.token).linked_account_id).toBe('u1')
      await expect(k.rotateSigningKey({ signingSecret: 'short' })).rejects.toMatchObject({
        code: 'VALIDATION_ERROR',
        field: 'signingSecret',
      })
      await expect(k.rotateSigningKey({ signingSecret: NEXT })).rejects.toMatchObject({ code: 'VALIDATION_ERROR' })
    } finally {
      await k.close()
      await k2client.close()
    }
    // Opening with a retired signingSecret is refused.
    await expect(openClient({ ...f, signingSecret: SECRET })).rejects.toMatchObject({
      code: 'VALIDATION_ERROR',
      field: 'signingSecret',
    })
  })

  test('force_refresh, reuse and scopes', async () => {
    const t1 = await a.getTokenForLinkedAccount({ linked_account_id: 'u2', force_refresh: true })
    const t2 = await a.getTokenForLinkedAccount({ linked_account_id: 'u2' })
    expect(t2.token).toBe(t1.token)
    expect(t2.expires_in).toBeLessThanOrEqual(t1.expires_in)
    expect(t2.refresh_token).not.toBe(t1.refresh_token)
    const t3 = await b.getTokenForLinkedAccount({ linked_account_id: 'u2', force_refresh: true })
    expect(t3.token).not.toBe(t1.token)
    expect(a.verifySessionTokenSync(t1.token).jti).not.toBe(a.verifySessionTokenSync(t3.token).jti)
    // Scopes are a set: same set → same token; different set → another token.
    const s1 = await a.getTokenForLinkedAccount({ linked_account_id: 'u2', scopes: ['b', 'a'] })
    const s2 = await a.getTokenForLinkedAccount({ linked_account_id: 'u2', scopes: ['a', 'b', 'a'] })
    const s3 = await a.getTokenForLinkedAccount({ linked_account_id: 'u2', scopes: ['a'] })
    expect(s2.token).toBe(s1.token)
    expect(s3.token).not.toBe(s1.token)
    expect(s1.token).not.toBe(t3.token)
    // A shorter ttl than the existing token's remaining lifetime mints a new one.
    const short = await a.getTokenForLinkedAccount({ linked_account_id: 'u2', ttl_seconds: 60 })
    expect(short.token).not.toBe(t3.token)
    expect(short.expires_in).toBe(60)
    // Both refresh tokens handed out for one token work (once each).
    await a.refreshSessionToken(t1.refresh_token)
    await a.refreshSessionToken(t2.refresh_token)
  })

  test('input validation and unknown accounts', async () => {
    await expect(a.getTokenForLinkedAccount({ linked_account_id: 'ghost' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      status: 404,
    })
    const bad = [
      [undefined, 'options'],
      ['u1', 'options'],
      [{}, 'linked_account_id'],
      [{ linked_account_id: 5 }, 'linked_account_id'],
      [{ linked_account_id: 'u1', ttl_seconds: 0 }, 'ttl_seconds'],
      [{ linked_account_id: 'u1', ttl_seconds: 1.5 }, 'ttl_seconds'],
      [{ linked_account_id: 'u1', ttl_seconds: 400 * 86400 }, 'ttl_seconds'],
      [{ linked_account_id: 'u1', force_refresh: 'yes' }, 'force_refresh'],
      [{ linked_account_id: 'u1', scopes: 'read' }, 'scopes'],
      [{ linked_account_id: 'u1', scopes: ['has space'] }, 'scopes'],
      [{ linked_account_id: 'u1', scopes: [''] }, 'scopes'],
    ]
    for (const [input, field] of bad) {
      await expect(a.getTokenForLinkedAccount(input)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
    }
    await expect(a.retireSigningKey()).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'kid' })
  })

  test('client options: signingSecret length, TTLs, skew', async () => {
    const f = storeOptions({ dir: tmpDir(), name: 'opts.db' })
    for (const [opts, field] of [
      [{ signingSecret: 'too-short' }, 'signingSecret'],
      [{ signingSecret: 42 }, 'signingSecret'],
      [{ sessionTokenTtlSeconds: 0 }, 'sessionTokenTtlSeconds'],
      [{ refreshTokenTtlSeconds: -1 }, 'refreshTokenTtlSeconds'],
      [{ clockSkewSeconds: 601 }, 'clockSkewSeconds'],
    ]) {
      const e = await openClient({ ...f, ...opts }).catch((x) => x)
      expect(e).toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
      expect(e.message).not.toContain('too-short')
    }
    const c = await openClient({ ...f, sessionTokenTtlSeconds: 120, refreshTokenTtlSeconds: 600 })
    await c.upsertLinkedAccount({ linked_account_id: 'u1' })
    const t = await c.getTokenForLinkedAccount({ linked_account_id: 'u1' })
    expect(t.expires_in).toBe(120)
    expect(t.refresh_expires_in).toBe(600)
    await c.close()
    // Without signingSecret the generated key is kept (sealed) in the file: a new client
    // verifies the old token.
    const d = await openClient({ ...f })
    expect(d.verifySessionTokenSync(t.token).linked_account_id).toBe('u1')
    await d.close()
    // The key file and database never hold the secret or tokens in clear (SQLite: the files
    // themselves; PostgreSQL keeps no file).
    for (const name of f.path ? fs.readdirSync(path.dirname(f.path)) : []) {
      const bytes = fs.readFileSync(path.join(path.dirname(f.path), name))
      expect(bytes.includes(t.refresh_token)).toBe(false)
      expect(bytes.includes(t.token.split('.')[2])).toBe(false)
    }
  })

  test('an in-memory client (SQLite) works, and a closed client throws CLIENT_CLOSED', async () => {
    const m = isPostgres ? await openClient({ orgId: 'mem' }) : await Client.open({ path: ':memory:', orgId: 'mem' })
    await m.upsertLinkedAccount({ linked_account_id: 'u1' })
    const t = await m.getTokenForLinkedAccount({ linked_account_id: 'u1' })
    expect(m.verifySessionTokenSync(t.token).org_id).toBe('mem')
    expect(await m.revokeSessionToken(t.token)).toEqual({ success: true, revoked_count: 1 })
    await rejects(m, t.token, 'TOKEN_REVOKED')
    const t2 = await m.getTokenForLinkedAccount({ linked_account_id: 'u1' })
    await m.close()
    expect(thrown(() => m.verifySessionTokenSync(t2.token))).toMatchObject({ code: 'CLIENT_CLOSED', status: 400 })
    await expect(m.verifySessionToken(t2.token)).rejects.toMatchObject({ code: 'CLIENT_CLOSED' })
    await expect(m.getTokenForLinkedAccount({ linked_account_id: 'u1' })).rejects.toMatchObject({ code: 'CLIENT_CLOSED' })
  })
})

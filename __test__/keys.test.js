// Encryption keys: online rotation (rotateEncryptionKey) while other calls run, a rotation
// killed half-way (either key reads everything, resumable), previousEncryptionKeys, and
// checkIntegrity's view of sealed values.
const path = require('node:path')
const { spawn } = require('node:child_process')
const { openClient, storeOptions, testSqlite, tmpDir, newKey } = require('./helpers')

const FIX = path.join(__dirname, 'fixtures')

async function seed(db, key, n) {
  const client = await openClient({ ...db, orgId: 'org_k', encryptionKey: key })
  for (let start = 0; start < n; start += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, n - start) }, (_, j) =>
        client.upsertLinkedAccount({
          linked_account_id: `a${start + j}`,
          your_app: { app_id: 'app', auth_credentials: { token: `secret-${start + j}` } },
        }),
      ),
    )
  }
  // A merge record keeps the secondary's credentials (sealed too).
  await client.linkIdentity('a1', { provider: 'p', user_id: 'one' })
  await client.linkAccounts('a0', 'a1')
  return client
}

async function expectAllReadable(client, n, extra = {}) {
  const ids = Array.from({ length: n }, (_, i) => `a${i}`).filter((id) => id !== 'a1')
  const got = await Promise.all(ids.map((id) => client.getLinkedAccountCredentials(id)))
  got.forEach((c, i) => expect(c.auth_credentials).toEqual(extra[ids[i]] ?? { token: `secret-${ids[i].slice(1)}` }))
  return got.length
}

test('rotateEncryptionKey re-seals everything online; afterwards the old key opens nothing', async () => {
  const db = storeOptions()
  const [A, B] = [newKey(), newKey()]
  const n = 1500
  const client = await seed(db, A, n)
  // Writes and reads keep going while the rotation runs (batches of 500 rows interleave).
  const rotation = client.rotateEncryptionKey(B)
  const during = []
  for (let i = 0; i < 200; i++) {
    during.push(client.upsertLinkedAccount({ linked_account_id: `d${i}`, your_app: { auth_credentials: { d: i } } }))
    during.push(client.getLinkedAccountCredentials(`a${i + 2}`))
  }
  const [r] = await Promise.all([rotation, Promise.all(during)])
  expect(r).toMatchObject({ resumed: false, key_id: expect.stringMatching(/^[0-9a-f]{16}$/) })
  expect(r.resealed).toBeGreaterThanOrEqual(n) // n - 1 accounts + 1 merge record (+ any written under A)
  expect(r.batches).toBeGreaterThanOrEqual(3)
  expect(await client.checkIntegrity()).toEqual({ ok: true, details: [] })
  await client.close()

  await expect(openClient({ ...db, orgId: 'org_k', encryptionKey: A })).rejects.toMatchObject({ code: 'DECRYPTION_FAILED', status: 500 })
  const after = await openClient({ ...db, orgId: 'org_k', encryptionKey: B })
  expect(await expectAllReadable(after, n)).toBe(n - 1)
  for (let i = 0; i < 200; i += 37) expect((await after.getLinkedAccountCredentials(`d${i}`)).auth_credentials).toEqual({ d: i })
  // Unlinking restores the merged secondary with its credentials, kept in the merge record
  // (re-sealed under the new key by the rotation).
  await after.unlinkIdentity('a0', 'p', 'one')
  expect((await after.getLinkedAccountCredentials('a1')).auth_credentials).toEqual({ token: 'secret-1' })
  expect(await after.checkIntegrity()).toEqual({ ok: true, details: [] })
  // Rotating to the current key again does nothing.
  expect(await after.rotateEncryptionKey(B)).toMatchObject({ resealed: 0, batches: 0 })
  await after.close()
}, 60_000)

test('a rotation killed half-way: either key reads everything, and it resumes', async () => {
  const db = storeOptions()
  const [A, B] = [newKey(), newKey()]
  const n = 6000
  await (await seed(db, A, n)).close()
  const out = await new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(FIX, 'rotate-child.js'), JSON.stringify(db), A, B, '40'], { stdio: ['ignore', 'pipe', 'inherit'] })
    let text = ''
    child.stdout.on('data', (d) => (text += d))
    child.on('close', (code, signal) => resolve({ text, signal }))
  })
  expect(out.signal).toBe('SIGKILL')
  const finished = out.text.trim() !== ''
  // Whatever the progress, a client with either key alone reads every credential.
  for (const key of finished ? [B] : [A, B]) {
    const c = await openClient({ ...db, orgId: 'org_k', encryptionKey: key })
    expect(await expectAllReadable(c, n)).toBe(n - 1)
    const integrity = await c.checkIntegrity()
    expect(integrity.ok).toBe(true)
    if (!finished) expect(integrity.details).toEqual([expect.stringMatching(/^note: a key rotation is in progress/)])
    // A write meanwhile is sealed under the new key.
    await c.upsertLinkedAccount({ linked_account_id: 'a5', your_app: { auth_credentials: { token: 'secret-5' } } })
    await c.close()
  }
  // Resumed by a client that has only the old key.
  const c = await openClient({ ...db, orgId: 'org_k', encryptionKey: finished ? B : A })
  const r = await c.rotateEncryptionKey(B)
  expect(r.resumed).toBe(!finished)
  // n sealed credentials (n - 1 accounts + 1 merge record) and 1 signing key: a resumed
  // rotation re-seals only what the killed one had not.
  if (!finished) expect(r.resealed).toBeLessThan(n + 1)
  expect(await c.checkIntegrity()).toEqual({ ok: true, details: [] })
  await c.close()
  await expect(openClient({ ...db, orgId: 'org_k', encryptionKey: A })).rejects.toMatchObject({ code: 'DECRYPTION_FAILED' })
  const b = await openClient({ ...db, orgId: 'org_k', encryptionKey: B })
  expect(await expectAllReadable(b, n)).toBe(n - 1)
  await b.close()
  console.log(`key rotation killed ${finished ? 'after it finished' : 'half-way'}; resumed and completed`)
}, 120_000)

test('previousEncryptionKeys: deploy the new key first, rotate later', async () => {
  const db = storeOptions()
  const [A, B] = [newKey(), newKey()]
  await (await seed(db, A, 10)).close()
  // Without the old key, a new key is refused; with it as a previous key, all is readable.
  await expect(openClient({ ...db, orgId: 'org_k', encryptionKey: B })).rejects.toMatchObject({ code: 'DECRYPTION_FAILED' })
  const c = await openClient({ ...db, orgId: 'org_k', encryptionKey: B, previousEncryptionKeys: [A] })
  expect(await expectAllReadable(c, 10)).toBe(9)
  expect(await c.rotateEncryptionKey(B)).toMatchObject({ resumed: false, resealed: 11 }) // 10 credentials + the signing key
  await c.close()
  const b = await openClient({ ...db, orgId: 'org_k', encryptionKey: B })
  expect(await expectAllReadable(b, 10)).toBe(9)
  await b.close()
  await expect(openClient({ previousEncryptionKeys: ['short'] })).rejects.toMatchObject({
    code: 'VALIDATION_ERROR',
    field: 'previousEncryptionKeys',
  })
  await expect(openClient({ previousEncryptionKeys: 'x' })).rejects.toMatchObject({
    code: 'VALIDATION_ERROR',
    field: 'previousEncryptionKeys',
  })
})

test('rotateEncryptionKey refuses a malformed key, and a closed client', async () => {
  const client = await openClient()
  for (const bad of [undefined, null, 'short', 42, '00'.repeat(31)]) {
    await expect(client.rotateEncryptionKey(bad)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'newKey', status: 400 })
  }
  const r = await client.rotateEncryptionKey(newKey())
  expect(r.resumed).toBe(false)
  await client.close()
  await expect(client.rotateEncryptionKey(newKey())).rejects.toMatchObject({ code: 'CLIENT_CLOSED' })
})

testSqlite('bearer secrets are never stored in clear: session ids (hashed) and credentials (sealed)', 'scans the database file and its WAL', async () => {
  const fs = require('node:fs')
  const dir = tmpDir()
  const client = await openClient({ ...storeOptions({ dir }), orgId: 'org_k', encryptionKey: newKey() })
  await client.upsertLinkedAccount({ linked_account_id: 'u', your_app: { auth_credentials: { token: 'zz-credential-zz' } } })
  const s = await client.createAuthSession({ linked_account_id: 'u', redirect_uri: 'https://a.test/', cancel_uri: 'https://a.test/' })
  expect(s.session_id).toMatch(/^[0-9a-f-]{36}$/)
  const events = await client.listEvents({ limit: 1000 })
  expect(JSON.stringify(events)).not.toContain(s.session_id)
  // Before close (database and its WAL) and after (checkpointed into the database).
  const scan = () => {
    for (const name of fs.readdirSync(dir)) {
      if (name.endsWith('.key')) continue
      const bytes = fs.readFileSync(path.join(dir, name))
      expect([name, bytes.includes(Buffer.from(s.session_id))]).toEqual([name, false])
      expect([name, bytes.includes(Buffer.from('zz-credential-zz'))]).toEqual([name, false])
    }
  }
  scan()
  await client.close()
  scan()
})

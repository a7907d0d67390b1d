// rotateEncryptionKey on PostgreSQL while other processes keep sealing values: once it has
// finished, no value is sealed under the old key, whichever process wrote it.
const { spawn } = require('node:child_process')
const path = require('node:path')
const readline = require('node:readline')
const { Client, openClient, pgUrl, newSchema, newKey, KEY } = require('./helpers')

function churn(schema) {
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'pg-seal-churn.js'), pgUrl(), schema, KEY], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const lines = readline.createInterface({ input: child.stdout })
  const queue = []
  const waiters = []
  lines.on('line', (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)))
  const next = () => new Promise((resolve) => (queue.length ? resolve(queue.shift()) : waiters.push(resolve)))
  return { child, next }
}

test('a key rotation while two other processes keep sealing: nothing is left under the old key', async () => {
  const schema = newSchema()
  const a = await openClient({ store: 'postgres', schema, orgId: 'org_pg' })
  const writers = [churn(schema), churn(schema)]
  for (const w of writers) expect(await w.next()).toBe('ready')
  const NEW = newKey()
  const rotation = await a.rotateEncryptionKey(NEW)
  expect(rotation.resealed).toBeGreaterThan(0)
  // The writers go on a little after the rotation finished, then stop.
  await new Promise((r) => setTimeout(r, 300))
  for (const w of writers) w.child.stdin.end()
  const results = await Promise.all(writers.map((w) => w.next().then(JSON.parse)))
  for (const r of results) {
    expect(r.errors).toEqual([])
    expect(r.writes).toBeGreaterThan(1)
  }
  expect(await a.checkIntegrity()).toEqual({ ok: true, details: [] })
  await a.close()
  // The new key alone opens the schema; the old one alone no longer does.
  const b = await Client.open({ url: pgUrl(), schema, encryptionKey: NEW, orgId: 'org_pg' })
  const keys = await b.listSigningKeys()
  expect(keys.length).toBeGreaterThan(results[0].writes + results[1].writes)
  await b.close()
  await expect(Client.open({ url: pgUrl(), schema, encryptionKey: KEY, orgId: 'org_pg' })).rejects.toMatchObject({
    code: 'DECRYPTION_FAILED',
  })
})

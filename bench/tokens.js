// Session-token benchmark: verify and mint ops/s for linkvault's sync and async paths next to
// jsonwebtoken (KeyObject secret) and jose, in one run, on the same token and secret.
//
//   npm run build            # release addon (a debug build is several times slower)
//   node bench/tokens.js     # or: npm run bench:tokens
//
// Env: BENCH_SECONDS (per case, default 1), BENCH_INFLIGHT (async concurrency, default 64).
// Numbers are ops/s on this machine, single Node thread; noisy on shared VMs (±20–30 %).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const jwt = require('jsonwebtoken')

let jose = null
try {
  jose = require('jose') // jose@5 ships CJS
} catch {
  // optional
}

const { Client } = require('..')

const SECONDS = Number(process.env.BENCH_SECONDS || 1)
const INFLIGHT = Number(process.env.BENCH_INFLIGHT || 64)
const SECRET = 'bench-signing-secret-with-at-least-32-bytes'

const rows = []

function report(name, ops, seconds) {
  const perSec = ops / seconds
  rows.push({ name, perSec })
  console.log(`${name.padEnd(62)} ${Math.round(perSec).toLocaleString('en-US').padStart(11)} ops/s ${(1e6 / perSec).toFixed(2).padStart(9)} µs/op`)
}

function benchSync(name, fn) {
  const warmEnd = process.hrtime.bigint() + BigInt(Math.round(0.2e9))
  while (process.hrtime.bigint() < warmEnd) fn()
  let ops = 0
  const start = process.hrtime.bigint()
  const end = start + BigInt(Math.round(SECONDS * 1e9))
  let now = start
  while (now < end) {
    for (let i = 0; i < 100; i++) fn()
    ops += 100
    now = process.hrtime.bigint()
  }
  report(name, ops, Number(now - start) / 1e9)
}

async function benchAsync(name, fn, inflight = INFLIGHT) {
  const run = async (seconds) => {
    let ops = 0
    const start = process.hrtime.bigint()
    const end = start + BigInt(Math.round(seconds * 1e9))
    const worker = async () => {
      while (process.hrtime.bigint() < end) {
        await fn()
        ops++
      }
    }
    await Promise.all(Array.from({ length: inflight }, worker))
    return [ops, Number(process.hrtime.bigint() - start) / 1e9]
  }
  await run(0.2)
  const [ops, secs] = await run(SECONDS)
  report(name, ops, secs)
}

/** Time of single calls of `fn` made right after `prepare` changed the database. */
async function benchAfterChange(name, prepare, fn, n = 2000) {
  let total = 0n
  for (let i = 0; i < n; i++) {
    await prepare(i)
    const t0 = process.hrtime.bigint()
    fn()
    total += process.hrtime.bigint() - t0
  }
  report(name, n, Number(total) / 1e9)
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-bench-'))
  const file = path.join(dir, 'bench.db')
  const encryptionKey = crypto.randomBytes(32).toString('hex')
  const client = await Client.open({ path: file, orgId: 'bench', encryptionKey, signingSecret: SECRET })
  const other = await Client.open({ path: file, orgId: 'bench', encryptionKey, signingSecret: SECRET })
  try {
    await client.upsertLinkedAccount({ linked_account_id: 'bench-user' })
    const { token } = await client.getTokenForLinkedAccount({ linked_account_id: 'bench-user' })
    const key = crypto.createSecretKey(Buffer.from(SECRET))
    const decoded = jwt.decode(token, { complete: true })
    const { kid } = decoded.header
    const claims = decoded.payload
    const opts = { algorithms: ['HS256'] }
    // Every library must accept the token before it is timed.
    client.verifySessionTokenSync(token)
    jwt.verify(token, key, opts)
    if (jose) await jose.jwtVerify(token, key, opts)

    console.log(`node ${process.version}, ${os.cpus().length} cpus (${os.cpus()[0].model}), ${SECONDS}s per case, ${INFLIGHT} in flight for async cases`)
    console.log('\n# verify (HS256, same token)')
    benchSync('linkvault verifySessionTokenSync', () => client.verifySessionTokenSync(token))
    benchSync('jsonwebtoken verify (sync, KeyObject)', () => jwt.verify(token, key, opts))
    await benchAsync('linkvault verifySessionToken (async)', () => client.verifySessionToken(token))
    await benchAsync(
      'jsonwebtoken verify (callback, KeyObject)',
      () => new Promise((resolve, reject) => jwt.verify(token, key, opts, (e, v) => (e ? reject(e) : resolve(v)))),
    )
    if (jose) await benchAsync('jose jwtVerify (async, KeyObject)', () => jose.jwtVerify(token, key, opts))

    console.log('\n# verify right after the file changed (the uncommon path)')
    let n = 0
    await benchAfterChange(
      'verifySessionTokenSync after an unrelated write (data_version moved)',
      () => other.upsertLinkedAccount({ linked_account_id: 'bench-user', udf: { n: n++ } }),
      () => client.verifySessionTokenSync(token),
      1000,
    )
    await benchAfterChange(
      'verifySessionTokenSync after a revocation (epoch moved, 1 row read)',
      () => other.revokeSessionToken(jwt.sign({ ...claims, jti: crypto.randomUUID() }, key, { algorithm: 'HS256', keyid: kid })),
      () => client.verifySessionTokenSync(token),
      1000,
    )

    console.log('\n# mint')
    await benchAsync('linkvault getTokenForLinkedAccount (reuse: re-sign + 1 row)', () =>
      client.getTokenForLinkedAccount({ linked_account_id: 'bench-user' }),
    )
    await benchAsync('linkvault getTokenForLinkedAccount (force_refresh: new session)', () =>
      client.getTokenForLinkedAccount({ linked_account_id: 'bench-user', force_refresh: true }),
    )
    const fresh = () => ({ ...claims, jti: crypto.randomUUID() })
    benchSync('jsonwebtoken sign (sync, KeyObject)', () => jwt.sign(fresh(), key, { algorithm: 'HS256', keyid: kid }))
    await benchAsync(
      'jsonwebtoken sign (callback, KeyObject)',
      () =>
        new Promise((resolve, reject) =>
          jwt.sign(fresh(), key, { algorithm: 'HS256', keyid: kid }, (e, v) => (e ? reject(e) : resolve(v))),
        ),
    )
    if (jose) {
      await benchAsync('jose SignJWT (async, KeyObject)', () =>
        new jose.SignJWT(fresh()).setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid }).sign(key),
      )
    }
    if (!jose) console.log('(jose not installed: skipped)')
  } finally {
    await client.close()
    await other.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

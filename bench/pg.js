// `npm run bench:pg`: linkvault on PostgreSQL next to a JavaScript baseline of the same semantics
// written with node-postgres (bench/pg-baseline.js), in one process, interleaved in rounds;
// verifySessionToken on PostgreSQL next to SQLite; and the upserts/s of two processes on one
// database next to one. Each cell is the median of the rounds after a warm-up round (min–max).
// The server is a throwaway one (__test__/pg-keeper.js) unless LINKVAULT_BENCH_PG_URL names one;
// the script works in schemas of its own (bench_*_<random>) and drops them at the end.
// A linkvault row whose calls reject (a store without linked accounts, say) prints `n/a` with the
// error code instead of aborting the run. See bench/README.md.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const assert = require('node:assert')
const { fork } = require('node:child_process')
const jwt = require('jsonwebtoken')

const { Client } = require('..')
const { PgBaseline } = require('./pg-baseline')

const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const N = Number(process.env.BENCH_N ?? 1000)
const ACCOUNTS = Math.max(N, Number(process.env.BENCH_ACCOUNTS ?? 1000))
const PROC_MS = Number(process.env.BENCH_PROC_MS ?? 3000)
const PROC_RUNS = Number(process.env.BENCH_PROC_RUNS ?? 3)
const INFLIGHT = 64
const SECRET = 'bench-signing-secret-with-at-least-32-bytes'
const ORG = 'org_bench'

const payload = (id, stamp) => ({
  linked_account_id: id,
  name: `User ${id}`,
  udf: { plan: 'pro', seats: stamp, region: 'eu' },
  your_app: { app_id: 'app', auth_credentials: { Authorization: `Bearer token-${id}-${stamp}` } },
})

const codeOf = (e) => e?.code ?? e?.message ?? String(e)

/** n calls with `inflight` in flight; resolves to ops/s, or { error } if a call rejects. */
async function rate(n, inflight, fn) {
  let next = 0
  let error = null
  const start = process.hrtime.bigint()
  const worker = async () => {
    while (next < n && !error) {
      const i = next++
      try {
        await fn(i)
      } catch (e) {
        error = codeOf(e)
      }
    }
  }
  await Promise.all(Array.from({ length: inflight }, worker))
  return error ? { error } : n / (Number(process.hrtime.bigint() - start) / 1e9)
}

function summary(rates) {
  const s = [...rates].sort((a, b) => a - b)
  return { median: s[Math.floor(s.length / 2)], min: s[0], max: s[s.length - 1] }
}

/** Rounds of every (row, side); round 0 is a warm-up; sides alternate who goes first. */
async function interleaved(rows) {
  const results = rows.map(() => [{ rates: [] }, { rates: [] }])
  for (let round = 0; round <= RUNS; round++) {
    process.stderr.write(`round ${round}${round === 0 ? ' (warm-up)' : ''} of ${RUNS}\n`)
    for (const [r, row] of rows.entries()) {
      const order = round % 2 ? [1, 0] : [0, 1]
      for (const s of order) {
        const out = results[r][s]
        if (out.error) continue
        const got = await rate(row.n, row.inflight, (i) => row.sides[s].fn(i, round))
        if (got.error) out.error = got.error
        else if (round > 0) out.rates.push(got)
      }
    }
  }
  return rows.map((row, r) => ({ ...row, cells: results[r].map((c) => (c.error ? { error: c.error } : summary(c.rates))) }))
}

async function kidOf(client) {
  const { events } = await client.listEvents({ types: ['signing_key.added'] })
  return events.find((e) => e.data.reason === 'signingSecret').data.kid
}

function tokensFor(kid, n) {
  const now = Math.floor(Date.now() / 1000)
  return Array.from({ length: n }, (_, i) =>
    jwt.sign({ org_id: ORG, linked_account_id: `user-${i}`, environment: 'test', iat: now, exp: now + 3600, jti: `bench-${i}` }, SECRET, {
      algorithm: 'HS256',
      keyid: kid,
    }),
  )
}

/** Opens the implementation a process upserts with: 'linkvault' or 'baseline'. */
async function openImpl(impl, url, schema, keyHex) {
  if (impl === 'linkvault') {
    const c = await Client.open({ url, schema, encryptionKey: keyHex, orgId: ORG, environment: 'test', signingSecret: SECRET })
    return { upsert: (p) => c.upsertLinkedAccount(p), close: () => c.close() }
  }
  const b = new PgBaseline({ url, schema, key: Buffer.from(keyHex, 'hex'), orgId: ORG })
  return { upsert: (p) => b.upsertLinkedAccount(p), close: () => b.close() }
}

/** A child of `processes()`: opens, says ready, upserts distinct ids for the given time on "go". */
async function worker([impl, url, schema, keyHex, prefix]) {
  const target = await openImpl(impl, url, schema, keyHex)
  // Warm up (a pool opens its connections on first use); a failure shows in the timed run.
  await Promise.all(Array.from({ length: INFLIGHT }, (_, i) => target.upsert(payload(`${prefix}-warm-${i}`, 0)).catch(() => {})))
  process.on('message', async ({ ms }) => {
    let n = 0
    let error = null
    const end = Date.now() + ms
    const start = process.hrtime.bigint()
    const loop = async () => {
      while (Date.now() < end && !error) {
        try {
          await target.upsert(payload(`${prefix}-${n++}`, 1))
        } catch (e) {
          error = codeOf(e)
        }
      }
    }
    await Promise.all(Array.from({ length: INFLIGHT }, loop))
    const secs = Number(process.hrtime.bigint() - start) / 1e9
    await target.close()
    process.send({ n, secs, error }, () => process.exit(0))
  })
  process.send({ ready: true })
}

/** Upserts/s of `count` processes upserting at once on one database (their sum). */
async function processes(count, impl, url, schema, keyHex, round) {
  const children = []
  const ready = []
  for (let p = 0; p < count; p++) {
    const child = fork(__filename, ['--worker', impl, url, schema, keyHex, `proc-${count}-${round}-${p}`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    children.push(child)
    ready.push(
      new Promise((resolve, reject) => {
        child.once('message', resolve)
        child.once('exit', (code) => reject(new Error(`${impl} worker exited ${code} before it was ready`)))
      }),
    )
  }
  await Promise.all(ready)
  const done = children.map(
    (child) =>
      new Promise((resolve, reject) => {
        child.once('message', resolve)
        child.once('exit', (code) => reject(new Error(`${impl} worker exited ${code}`)))
      }),
  )
  for (const child of children) child.send({ ms: PROC_MS })
  const results = await Promise.all(done)
  const error = results.find((r) => r.error)?.error
  return error ? { error } : results.reduce((sum, r) => sum + r.n / r.secs, 0)
}

async function scaling(impl, url, schema, keyHex) {
  const rates = { 1: [], 2: [] }
  for (let round = 1; round <= PROC_RUNS; round++) {
    for (const count of round % 2 ? [1, 2] : [2, 1]) {
      process.stderr.write(`${impl}: ${count} process(es), round ${round} of ${PROC_RUNS}\n`)
      const got = await processes(count, impl, url, schema, keyHex, round)
      if (got.error) return { error: got.error }
      rates[count].push(got)
    }
  }
  return { one: summary(rates[1]), two: summary(rates[2]) }
}

/** Drops what legitimately differs between two implementations (random ids, clock). */
function comparable(a) {
  const { _id, createdAt, updatedAt, new_account, ...rest } = a
  return { ...rest, udf: a.udf.map(({ key_name, key_value }) => ({ key_name, key_value })), identities: a.identities.map(({ linkedAt, ...i }) => i) }
}

async function startServer() {
  if (process.env.LINKVAULT_BENCH_PG_URL) return { url: process.env.LINKVAULT_BENCH_PG_URL, close: async () => {} }
  const { startKeeper } = require('../__test__/pg-global')
  return startKeeper()
}

async function main() {
  const server = await startServer()
  const url = server.url
  const tag = crypto.randomBytes(4).toString('hex')
  const lvSchema = `bench_linkvault_${tag}`
  const baseSchema = `bench_baseline_${tag}`
  const key = crypto.randomBytes(32)
  const keyHex = key.toString('hex')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-bench-pg-'))
  const lv = await Client.open({ url, schema: lvSchema, encryptionKey: keyHex, orgId: ORG, environment: 'test', signingSecret: SECRET })
  const lite = await Client.open({ path: path.join(dir, 'linkvault.db'), encryptionKey: keyHex, orgId: ORG, environment: 'test', signingSecret: SECRET })
  const base = new PgBaseline({ url, schema: baseSchema, key, orgId: ORG })
  try {
    await base.init()
    process.stderr.write(`seeding ${ACCOUNTS} accounts\n`)
    const baseSeed = await rate(ACCOUNTS, INFLIGHT, (i) => base.upsertLinkedAccount(payload(`user-${i}`, 0)))
    if (baseSeed.error) throw new Error(`the pg baseline failed to seed: ${baseSeed.error}`)
    const lvSeed = await rate(ACCOUNTS, INFLIGHT, (i) => lv.upsertLinkedAccount(payload(`user-${i}`, 0)))

    // Mint needs linked accounts; verify does not, so its tokens are signed with signingSecret.
    const mint = await lv.getTokenForLinkedAccount({ linked_account_id: 'user-0' }).then(() => 'works', (e) => `n/a (${codeOf(e)})`)
    const pgTokens = tokensFor(await kidOf(lv), 100)
    const liteTokens = tokensFor(await kidOf(lite), 100)

    // Each (round, in-flight) pair updates every seeded account once with a value of its own,
    // so every update is a real change, and both sides get the same sequence.
    const stamp = (inflight, round) => 1 + round * 2 + (inflight === 1 ? 1 : 0)
    const rows = []
    for (const inflight of [INFLIGHT, 1]) {
      const pair = (name, lvFn, baseFn) => ({ name: `${name} x${inflight}`, n: N, inflight, sides: [{ fn: lvFn }, { fn: baseFn, label: 'pg baseline' }] })
      const fresh = (i, round) => payload(`new-${inflight}-${round}-${i}`, round)
      const update = (i, round) => payload(`user-${i}`, stamp(inflight, round))
      rows.push(
        pair('upsertLinkedAccount (insert)', (i, r) => lv.upsertLinkedAccount(fresh(i, r)), (i, r) => base.upsertLinkedAccount(fresh(i, r))),
        pair('upsertLinkedAccount (update)', (i, r) => lv.upsertLinkedAccount(update(i, r)), (i, r) => base.upsertLinkedAccount(update(i, r))),
        pair('getLinkedAccountById', (i) => lv.getLinkedAccountById(`user-${i % ACCOUNTS}`), (i) => base.getLinkedAccountById(`user-${i % ACCOUNTS}`)),
      )
    }
    rows.push({
      name: `verifySessionToken x${INFLIGHT}`,
      n: N * 20,
      inflight: INFLIGHT,
      sides: [{ fn: (i) => lv.verifySessionToken(pgTokens[i % 100]) }, { fn: (i) => lite.verifySessionToken(liteTokens[i % 100]), label: 'linkvault on SQLite' }],
    })
    const measured = await interleaved(rows)

    // Honesty check: where linkvault could write accounts, both hold the same data.
    let check = 'sample check skipped: linkvault wrote no accounts'
    if (!lvSeed.error) {
      for (const id of ['user-0', `user-${ACCOUNTS - 1}`, `new-${INFLIGHT}-1-7`]) {
        assert.deepStrictEqual(comparable(await lv.getLinkedAccountById(id)), comparable(await base.getLinkedAccountById(id)), `sample ${id} differs`)
      }
      assert.deepStrictEqual((await lv.getLinkedAccountCredentials('user-5')).auth_credentials, await base.credentials('user-5'))
      check = 'sample check: linkvault and the pg baseline hold the same data'
    }
    process.stderr.write(`${check}\n`)

    const scale = {}
    for (const impl of ['linkvault', 'baseline']) scale[impl] = await scaling(impl, url, impl === 'linkvault' ? lvSchema : baseSchema, keyHex)

    print(measured, scale, { mint, check })
  } finally {
    await lv.close()
    await lite.close()
    await base.pool.query(`DROP SCHEMA IF EXISTS ${lvSchema} CASCADE`).catch(() => {})
    await base.drop().catch(() => {})
    await base.close()
    await server.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const num = (x) => Math.round(x).toLocaleString('en-US')
const cell = (m) => (m.error ? `n/a (not on Postgres yet: ${m.error})` : `${num(m.median)} (${num(m.min)}–${num(m.max)})`)
const ratio = (a, b) => (a.error || b.error ? 'n/a' : `${(a.median / b.median).toFixed(2)}×`)

function table(header, body) {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)))
  const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`
  console.log(line(header))
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`)
  for (const b of body) console.log(line(b))
}

function print(rows, scale, notes) {
  table(
    ['operation (in flight)', 'linkvault on Postgres ops/s', 'compared with', 'its ops/s', 'lv / it'],
    rows.map((r) => [r.name, cell(r.cells[0]), r.sides[1].label, cell(r.cells[1]), ratio(r.cells[0], r.cells[1])]),
  )
  console.log('')
  table(
    [`upserts/s, ${INFLIGHT} in flight per process, ${PROC_MS / 1000} s`, '1 process', '2 processes, one database', '2 / 1'],
    Object.entries(scale).map(([impl, s]) => {
      const name = impl === 'linkvault' ? 'linkvault' : 'pg baseline'
      return s.error ? [name, cell(s), cell(s), 'n/a'] : [name, cell(s.one), cell(s.two), ratio(s.two, s.one)]
    }),
  )
  const load = os.loadavg().map((l) => l.toFixed(2)).join(', ')
  console.log(
    `\nmedian of ${RUNS} interleaved rounds after a warm-up (min–max), ${N} calls per cell (verify ${N * 20}); ` +
      `processes: median of ${PROC_RUNS} rounds; node ${process.version}, ${os.cpus().length} cores, load average ${load}`,
  )
  console.log(`getTokenForLinkedAccount on Postgres: ${notes.mint}; verify tokens are signed with signingSecret by jsonwebtoken`)
  console.log(notes.check)
}

if (process.argv[2] === '--worker') {
  worker(process.argv.slice(3)).catch((e) => {
    console.error(e)
    process.exit(1)
  })
} else {
  main().catch((e) => {
    console.error(e)
    process.exit(1)
  })
}

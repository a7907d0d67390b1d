// `node bench/ab.js A.node B.node`: an interleaved A/B of two builds of the native addon (say
// main's and a branch's release build) in one process, next to the better-sqlite3 baseline:
// one call at a time (x1) and 64 in flight (x64) of getLinkedAccountById and upsert (update),
// then the event-loop line of `npm run bench` (a 1 ms interval while 64 upserts are in flight)
// for each. Every round runs A, B and the baseline back to back, in a rotating order, so that
// load from other processes falls on all three alike; cells are medians over the rounds.
// BENCH_ROUNDS (default 7), BENCH_N (calls per run, default 4000), BENCH_ACCOUNTS (default 2000).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')

const { wrap } = require('../lib/errors')
const { Baseline } = require('./baseline')

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7)
const N = Number(process.env.BENCH_N ?? 4000)
const ACCOUNTS = Number(process.env.BENCH_ACCOUNTS ?? 2000)

const { payload, eventLoopLag } = require('./workload')

/** A native addon's Client with its methods wrapped as index.js wraps them (LinkvaultErrors). */
function load(file) {
  const m = { exports: {} }
  process.dlopen(m, path.resolve(file))
  const Native = m.exports.Client
  const methods = {}
  for (const name of ['upsertLinkedAccount', 'getLinkedAccountById', 'close']) methods[name] = wrap(Native.prototype[name])
  return { open: (o) => Native.open(o), methods }
}

/** ops/s, and CPU µs per op of the whole process (all threads: less sensitive to other load). */
async function rate(n, inflight, fn) {
  let next = 0
  const start = process.hrtime.bigint()
  const cpu = process.cpuUsage()
  const worker = async () => {
    while (next < n) await fn(next++)
  }
  await Promise.all(Array.from({ length: inflight }, worker))
  const used = process.cpuUsage(cpu)
  return { rate: n / (Number(process.hrtime.bigint() - start) / 1e9), cpu: (used.user + used.system) / n }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function main() {
  const [fileA, fileB] = process.argv.slice(2)
  if (!fileA || !fileB) throw new Error('usage: node bench/ab.js A.node B.node')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-ab-'))
  const key = crypto.randomBytes(32)
  const sides = {}
  for (const [name, file] of [
    ['A', fileA],
    ['B', fileB],
  ]) {
    const { open, methods } = load(file)
    const client = await open({ path: path.join(dir, `${name}.db`), orgId: 'org_bench', encryptionKey: key.toString('hex') })
    const call = (m, ...args) => methods[m].apply(client, args)
    for (let i = 0; i < ACCOUNTS; i++) await call('upsertLinkedAccount', payload(`user-${i}`, 0))
    sides[name] = {
      get: (i) => call('getLinkedAccountById', `user-${i % ACCOUNTS}`),
      upsert: (i, r) => call('upsertLinkedAccount', payload(`user-${i % ACCOUNTS}`, r)),
      lagUpsert: (p) => call('upsertLinkedAccount', p),
      close: () => call('close'),
    }
  }
  const base = new Baseline(path.join(dir, 'baseline.db'), key, { orgId: 'org_bench' })
  for (let i = 0; i < ACCOUNTS; i++) base.upsertLinkedAccount(payload(`user-${i}`, 0))
  sides.base = {
    get: async (i) => base.getLinkedAccountById(`user-${i % ACCOUNTS}`),
    upsert: async (i, r) => base.upsertLinkedAccount(payload(`user-${i % ACCOUNTS}`, r)),
  }

  const rows = [
    ['getLinkedAccountById x1', N, 1, 'get'],
    ['getLinkedAccountById x64', N, 64, 'get'],
    ['upsertLinkedAccount (update) x1', N / 2, 1, 'upsert'],
    ['upsertLinkedAccount (update) x64', N, 64, 'upsert'],
  ]
  const order = ['A', 'B', 'base']
  const results = new Map(rows.map(([name]) => [name, { A: [], B: [], base: [] }]))
  const cpus = new Map(rows.map(([name]) => [name, { A: [], B: [], base: [] }]))
  for (let r = 0; r <= ROUNDS; r++) {
    const turn = order.map((_, k) => order[(k + r) % order.length])
    for (const [name, n, inflight, op] of rows) {
      for (const side of turn) {
        const v = await rate(n, inflight, (i) => sides[side][op](i, r + 1))
        // Round 0 warms up.
        if (r > 0) {
          results.get(name)[side].push(v.rate)
          cpus.get(name)[side].push(v.cpu)
        }
      }
    }
    process.stderr.write(`round ${r}/${ROUNDS}\n`)
  }
  const lags = { A: [], B: [] }
  for (let r = 0; r < 3; r++) for (const side of r % 2 ? ['B', 'A'] : ['A', 'B']) lags[side].push(await eventLoopLag(sides[side].lagUpsert))
  await sides.A.close()
  await sides.B.close()
  base.close()
  fs.rmSync(dir, { recursive: true, force: true })

  const f = (x) => Math.round(x).toLocaleString('en-US')
  console.log(`A = ${fileA}\nB = ${fileB}\nmedian ops/s of ${ROUNDS} interleaved rounds; load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`)
  console.log('| operation | A ops/s | B ops/s | baseline ops/s | A / base | B / base | B / A | CPU µs/op A, B, base |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const [name] of rows) {
    const m = results.get(name)
    const c = cpus.get(name)
    const [a, b, base] = [median(m.A), median(m.B), median(m.base)]
    const us = [c.A, c.B, c.base].map((x) => median(x).toFixed(1)).join(', ')
    console.log(`| ${name} | ${f(a)} | ${f(b)} | ${f(base)} | ${(a / base).toFixed(2)}× | ${(b / base).toFixed(2)}× | ${(b / a).toFixed(2)}× | ${us} |`)
  }
  for (const side of ['A', 'B']) {
    const l = lags[side]
    console.log(`event loop ${side} (3 runs of 2 s, 64 upserts in flight): p99 ${l.map((x) => x.p99.toFixed(2)).join(' / ')} ms, max ${l.map((x) => x.max.toFixed(2)).join(' / ')} ms`)
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

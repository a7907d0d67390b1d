// `node bench/ab-checkouts.js DIR_A DIR_B`: an interleaved A/B of two linkvault checkouts in one
// process, through each one's own index.js. DIR_A and DIR_B hold a built addon (for example an
// old commit in a git worktree, and this one). Each round runs every row on A and on B, the two
// taking turns going first, so both see the same machine load; each cell is the median over
// rounds after a warm-up round, and B / A is the median of the rounds' ratios. See
// bench/README.md.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')

const [dirA, dirB] = process.argv.slice(2)
if (!dirA || !dirB) {
  console.error('usage: node bench/ab-checkouts.js DIR_A DIR_B')
  process.exit(2)
}
const ROUNDS = Number(process.env.BENCH_RUNS ?? 7)
const N = Number(process.env.BENCH_N ?? 2000)
const ACCOUNTS = Number(process.env.BENCH_ACCOUNTS ?? 2000)
// BENCH_ONLY=substring,substring keeps the rows whose name contains one of them.
const ONLY = process.env.BENCH_ONLY?.split(',')

const { payload, mixedOrder, mixPayload } = require('./workload')

const ORDER = mixedOrder()

async function rate(n, inflight, fn) {
  let next = 0
  const start = process.hrtime.bigint()
  const worker = async () => {
    while (next < n) await fn(next++)
  }
  await Promise.all(Array.from({ length: inflight }, worker))
  return n / (Number(process.hrtime.bigint() - start) / 1e9)
}

/** One side: a client of the build in `dir` on a new file, seeded with ACCOUNTS accounts. */
async function side(dir, name) {
  const { Client } = require(path.resolve(dir))
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `linkvault-ab-${name}-`))
  const lv = await Client.open({ path: path.join(tmp, 'ab.db'), orgId: 'org_bench', encryptionKey: crypto.randomBytes(32).toString('hex') })
  for (let i = 0; i < ACCOUNTS; i++) await lv.upsertLinkedAccount(payload(`user-${i}`, 0))
  const token = (await lv.getTokenForLinkedAccount({ linked_account_id: 'user-0' })).token
  let identities = 0
  const rows = [
    ['upsertLinkedAccount (insert)', 64, (i, r) => lv.upsertLinkedAccount(payload(`new-${r}-${i}`, r))],
    ['upsertLinkedAccount (insert)', 1, (i, r) => lv.upsertLinkedAccount(payload(`one-${r}-${i}`, r))],
    ['upsertLinkedAccount (update)', 64, (i, r) => lv.upsertLinkedAccount(payload(`user-${i % ACCOUNTS}`, 2 * r + 1))],
    ['upsertLinkedAccount (update)', 1, (i, r) => lv.upsertLinkedAccount(payload(`user-${i % ACCOUNTS}`, 2 * r + 2))],
    ['upsert, random order, mixed', 64, (i, r) => lv.upsertLinkedAccount(mixPayload(r, ORDER[i])), ORDER.length],
    ['getLinkedAccountById', 64, (i) => lv.getLinkedAccountById(`user-${i % ACCOUNTS}`)],
    ['getLinkedAccountById', 1, (i) => lv.getLinkedAccountById(`user-${i % ACCOUNTS}`)],
    ['getAllLinkedAccounts (page of 50)', 64, (i) => lv.getAllLinkedAccounts({ page: 1 + (i % 20), limit: 50 }), N / 10],
    ['getTokenForLinkedAccount (mint)', 64, (i) => lv.getTokenForLinkedAccount({ linked_account_id: `user-${i % ACCOUNTS}`, force_refresh: true })],
    ['getTokenForLinkedAccount (mint)', 1, (i) => lv.getTokenForLinkedAccount({ linked_account_id: `user-${i % ACCOUNTS}`, force_refresh: true })],
    ['verifySessionToken', 1, () => lv.verifySessionToken(token), N * 5],
    ['linkIdentity', 64, (i) => lv.linkIdentity(`user-${i % ACCOUNTS}`, { provider: 'github', user_id: `gh-${identities++}`, isSocial: true })],
  ]
  return { lv, rows: rows.filter(([n]) => !ONLY || ONLY.some((o) => n.includes(o))) }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function main() {
  const a = await side(dirA, 'a')
  const b = await side(dirB, 'b')
  const rates = a.rows.map(() => ({ a: [], b: [] }))
  for (let r = 0; r <= ROUNDS; r++) {
    const order = r % 2 ? [['b', b], ['a', a]] : [['a', a], ['b', b]]
    for (let k = 0; k < a.rows.length; k++) {
      for (const [name, s] of order) {
        const [, inflight, fn, n = N] = s.rows[k]
        const x = await rate(n, inflight, (i) => fn(i, r))
        if (r > 0) rates[k][name].push(x)
      }
    }
  }
  const fmt = (x) => Math.round(x).toLocaleString('en-US')
  console.log(`| operation (in flight) | A ops/s | B ops/s | B / A |`)
  console.log(`|---|---:|---:|---:|`)
  a.rows.forEach(([name, inflight], k) => {
    const ma = median(rates[k].a)
    const mb = median(rates[k].b)
    // The median of the per-round ratios: each round's pair ran under the same load.
    const ratio = median(rates[k].a.map((x, i) => rates[k].b[i] / x))
    console.log(`| ${name} x${inflight} | ${fmt(ma)} | ${fmt(mb)} | ${ratio.toFixed(2)} |`)
  })
  console.log(`A = ${path.resolve(dirA)}, B = ${path.resolve(dirB)}; median of ${ROUNDS} rounds after a warm-up; node ${process.version}, ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`)
  await a.lv.close()
  await b.lv.close()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

// `npm run bench:entry`: what index.js (LinkvaultError conversion, caller stack frames, the
// Client prototype) costs on the success path. Every operation of `npm run bench`'s table runs
// through the raw native binding (binding.js, what the package exported before) and through
// index.js, in the same process, on two clients of the same database file, alternating A and B
// run by run so that a noisy machine weighs on both alike. Prints the medians of ops/s and of CPU
// time per operation, with index.js / native for each (1.00× = no cost).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')

const native = require('../binding.js')
const { Client } = require('..')

const RUNS = Number(process.env.BENCH_RUNS ?? 7)
const N = Number(process.env.BENCH_N ?? 4000)
const ACCOUNTS = Number(process.env.BENCH_ACCOUNTS ?? 2000)

const { payload } = require('./workload')

/** `{ rate, cpu }`: ops per wall-clock second, and CPU microseconds per op (every thread of the
 * process: Node's and the storage threads'), which waiting for a busy machine's cores does not
 * inflate. */
async function once(n, inflight, fn) {
  let next = 0
  const cpu0 = process.cpuUsage()
  const start = process.hrtime.bigint()
  if (inflight === 0) {
    for (let i = 0; i < n; i++) fn(i)
  } else {
    const worker = async () => {
      while (next < n) await fn(next++)
    }
    await Promise.all(Array.from({ length: inflight }, worker))
  }
  const rate = n / (Number(process.hrtime.bigint() - start) / 1e9)
  const used = process.cpuUsage(cpu0)
  return { rate, cpu: (used.user + used.system) / n }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-bench-entry-'))
  const options = { path: path.join(dir, 'entry.db'), orgId: 'org_bench', encryptionKey: crypto.randomBytes(32).toString('hex') }
  const sides = { A: await native.Client.open(options), B: await Client.open(options) }
  if (sides.A instanceof Client || !(sides.B instanceof Client)) throw new Error('the two sides are not what they should be')
  for (let i = 0; i < ACCOUNTS; i++) await sides.A.upsertLinkedAccount(payload(`user-${i}`, 0))
  const pages = []
  let after = null
  do {
    const page = await sides.A.listLinkedAccounts({ limit: 50, ...(after && { after }) })
    pages.push(after)
    after = page.next
  } while (after)
  for (let i = 0; i < 200; i++) await sides.A.upsertLinkedAccount({ linked_account_id: `tok-${i}` })
  const tokens = []
  for (let i = 0; i < 200; i++) tokens.push((await sides.A.getTokenForLinkedAccount({ linked_account_id: `tok-${i}` })).token)
  let uniq = 0
  const rows = [
    ['upsertLinkedAccount (insert)', N / 2, (c, s, i) => c.upsertLinkedAccount(payload(`new-${s}-${uniq++}-${i}`, 0))],
    ['upsertLinkedAccount (update)', N / 2, (c, s, i) => c.upsertLinkedAccount(payload(`user-${i % ACCOUNTS}`, uniq++))],
    ['getLinkedAccountById', N, (c, s, i) => c.getLinkedAccountById(`user-${i % ACCOUNTS}`)],
    ['getAllLinkedAccounts (page of 50)', N / 40, (c, s, i) => c.getAllLinkedAccounts({ page: 1 + (i % 40), limit: 50 })],
    ['getTokenForLinkedAccount (mint)', N / 4, (c, s, i) => c.getTokenForLinkedAccount({ linked_account_id: `tok-${i % 200}`, force_refresh: true })],
    ['verifySessionToken (async)', N * 4, (c, s, i) => c.verifySessionToken(tokens[i % tokens.length])],
    ['listLinkedAccounts (keyset page of 50)', N / 40, (c, s, i) => c.listLinkedAccounts({ limit: 50, ...(pages[i % pages.length] && { after: pages[i % pages.length] }) })],
    ['linkIdentity', N / 4, (c, s, i) => c.linkIdentity(`user-${i % ACCOUNTS}`, { provider: 'github', user_id: `${s}-${uniq++}` })],
  ]
  const table = []
  for (const [name, n, fn] of rows) {
    for (const inflight of [1, 64]) {
      const runs = { A: [], B: [] }
      for (let r = 0; r <= RUNS; r++) {
        for (const side of r % 2 ? ['B', 'A'] : ['A', 'B']) {
          const result = await once(n, inflight, (i) => fn(sides[side], side, i))
          if (r > 0) runs[side].push(result) // run 0 warms up
        }
      }
      table.push([`${name} x${inflight}`, runs.A, runs.B])
      process.stderr.write('.')
    }
  }
  const sync = { A: [], B: [] }
  for (let r = 0; r <= RUNS; r++) {
    for (const side of r % 2 ? ['B', 'A'] : ['A', 'B']) {
      const c = sides[side]
      const result = await once(N * 4, 0, (i) => c.verifySessionTokenSync(tokens[i % tokens.length]))
      if (r > 0) sync[side].push(result)
    }
  }
  table.push(['verifySessionTokenSync sync', sync.A, sync.B])
  process.stderr.write('\n')
  await Promise.all([sides.A.close(), sides.B.close()])
  fs.rmSync(dir, { recursive: true, force: true })

  const fmt = (x) => Math.round(x).toLocaleString('en-US')
  const width = Math.max(...table.map(([n]) => n.length))
  console.log(`| ${'operation (in flight)'.padEnd(width)} | native ops/s | index.js ops/s | ratio | native CPU µs/op | index.js CPU µs/op | ratio |`)
  console.log(`|${'-'.repeat(width + 2)}|--------------|----------------|-------|------------------|--------------------|-------|`)
  for (const [name, a, b] of table) {
    const [ra, rb] = [median(a.map((x) => x.rate)), median(b.map((x) => x.rate))]
    const [ca, cb] = [median(a.map((x) => x.cpu)), median(b.map((x) => x.cpu))]
    console.log(
      `| ${name.padEnd(width)} | ${fmt(ra).padStart(12)} | ${fmt(rb).padStart(14)} | ${(rb / ra).toFixed(2)}× | ${ca.toFixed(2).padStart(16)} | ${cb.toFixed(2).padStart(18)} | ${(cb / ca).toFixed(2)}× |`,
    )
  }
  console.log(`median of ${RUNS} alternating runs after a warm-up; node ${process.version}, ${os.cpus().length} cores`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

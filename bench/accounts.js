// Throughput of the linked-account calls on a file database (WAL), sequential and 64 in flight.
// Prints ops/s as the median of 5 runs after a warm-up. `node bench/accounts.js`
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { Client } = require('..')

const RUNS = 5
const N = Number(process.env.BENCH_N ?? 5000)

async function measure(fn, inflight) {
  const times = []
  for (let r = 0; r <= RUNS; r++) {
    let next = 0
    const start = process.hrtime.bigint()
    const worker = async () => {
      while (next < N) await fn(next++, r)
    }
    await Promise.all(Array.from({ length: inflight }, worker))
    const secs = Number(process.hrtime.bigint() - start) / 1e9
    if (r > 0) times.push(N / secs) // run 0 is the warm-up
  }
  times.sort((a, b) => a - b)
  return { median: times[Math.floor(times.length / 2)], min: times[0], max: times[times.length - 1] }
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-bench-'))
  const client = await Client.open({ path: path.join(dir, 'bench.db'), encryptionKey: crypto.randomBytes(32).toString('hex') })
  const payload = (i, r) => ({
    linked_account_id: `user-${i}`,
    name: `User ${i}`,
    udf: { plan: 'pro', seats: r, region: 'eu' },
    your_app: { app_id: 'app', auth_credentials: { Authorization: `Bearer token-${i}-${r}` } },
  })
  const rows = []
  for (const inflight of [1, 64]) {
    rows.push([`upsertLinkedAccount (update) x${inflight}`, await measure((i, r) => client.upsertLinkedAccount(payload(i, r)), inflight)])
    rows.push([`getLinkedAccountById x${inflight}`, await measure((i) => client.getLinkedAccountById(`user-${i}`), inflight)])
  }
  await client.close()
  fs.rmSync(dir, { recursive: true, force: true })
  for (const [name, m] of rows) {
    console.log(`${name.padEnd(40)} ${Math.round(m.median).toString().padStart(8)} ops/s  (min ${Math.round(m.min)}, max ${Math.round(m.max)})`)
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

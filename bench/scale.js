// Scale benchmark (issue 6, "Scale" targets): how linkvault behaves as a file database grows
// from SCALE_BASE (10,000) to SCALE_ACCOUNTS (1,000,000) accounts.
//
//   npm run build              # release addon (a debug build is several times slower)
//   node bench/scale.js        # or: npm run bench:scale
//   SCALE_ACCOUNTS=100000 node bench/scale.js   # a CI-sized run
//
// What it does, in one process, on two file databases (WAL, durability 'normal'):
//   1. Loads SCALE_BASE accounts into small.db through the public API (upsertLinkedAccount,
//      SCALE_LOAD_INFLIGHT = 256 in flight), each with 3 UDF keys and credentials (the payload
//      of `npm run bench`). Account ids are hashed (`u_` + 20 hex) so they arrive in random
//      order, as real ids do.
//   2. Loads SCALE_ACCOUNTS accounts the same way into scale.db (the first SCALE_BASE are the
//      same accounts), sampling the process RSS after every 10 % of the upserts (the first
//      sample is the warm-up and is not counted in the spread) and the size of the -wal file
//      every 100 ms and after every 10,000 upserts.
//   3. Closes it (the writer checkpoints the WAL into the file, which removes it) and reports file
//      size / accounts, event log included; with the sqlite3 CLI installed, also bytes per
//      table and index (dbstat).
//   4. Reopens both and measures getLinkedAccountById (a uniformly random existing account)
//      and a keyset page (listLinkedAccounts, limit 50, after a uniformly random position),
//      1 and 64 in flight: ops/s is the median of SCALE_RUNS (5) runs after one warm-up run,
//      with min–max. The runs on the two databases alternate, so the noise of a shared
//      machine hits both alike. Slowdown = small / large (target ≤ 1.5×).
//   5. Runs SCALE_MIXED (100,000) updates of random accounts on the large database while
//      SCALE_MIXED_READERS (16) reads are in flight, and reports the largest -wal file: readers
//      must not keep the WAL from being checkpointed and reused.
//
// Env: SCALE_ACCOUNTS (default 1000000), SCALE_BASE (10000), SCALE_RUNS (5), SCALE_LOAD_INFLIGHT
// (256), SCALE_GETS (ops per get run, 20000), SCALE_PAGES (pages per keyset run, 2000),
// SCALE_MIXED (100000; 0 skips step 5), SCALE_MIXED_READERS (16),
// SCALE_DIR (where the databases go; default a new directory under the OS temp dir, removed
// at the end unless SCALE_KEEP=1), SCALE_REUSE=1 (with SCALE_DIR: reuse small.db and scale.db
// of an earlier run with the same sizes and only measure the reads, e.g. to profile them).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { execFileSync } = require('node:child_process')
const assert = require('node:assert')

const { Client } = require('..')

const ACCOUNTS = Number(process.env.SCALE_ACCOUNTS ?? 1_000_000)
const BASE = Math.min(Number(process.env.SCALE_BASE ?? 10_000), ACCOUNTS)
const RUNS = Number(process.env.SCALE_RUNS ?? 5)
const LOAD_INFLIGHT = Number(process.env.SCALE_LOAD_INFLIGHT ?? 256)
const GETS = Number(process.env.SCALE_GETS ?? 20_000)
const PAGES = Number(process.env.SCALE_PAGES ?? 2_000)
const MIXED = Number(process.env.SCALE_MIXED ?? 100_000)
const READERS = Number(process.env.SCALE_MIXED_READERS ?? 16)
const PAGE_LIMIT = 50
// A fixed key, so a kept database can be reopened (SCALE_REUSE).
const KEY = 'a1'.repeat(32)

const fmt = (n) => Math.round(n).toLocaleString('en-US')
const mb = (b) => `${(b / 1048576).toFixed(1)} MB`

/** The id of the i-th account: deterministic, random-looking. */
function accountId(i) {
  return 'u_' + crypto.createHash('sha256').update(String(i)).digest('hex').slice(0, 20)
}

function payload(i) {
  const id = accountId(i)
  return {
    linked_account_id: id,
    name: `User ${i}`,
    udf: { plan: 'pro', seats: i % 50, region: 'eu' },
    your_app: { app_id: 'app', auth_credentials: { Authorization: `Bearer token-${id}` } },
  }
}

/**
 * A keyset cursor after the account at insertion position `pos` (1-based). The cursor is
 * opaque to users; the bench builds it to start pages at random positions, and checks below
 * that it matches what listLinkedAccounts itself returns.
 */
const cursorAfter = (pos) => Buffer.from(`a1:${pos}`).toString('base64url')

// A small deterministic PRNG so both sizes read the same kind of random positions.
function rng(seed) {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Median ops/s of `fns[k]` (one per database), RUNS runs each after one warm-up run. Runs of
 * the databases alternate, so that the noise of a shared machine lands on both alike.
 */
async function measure(n, inflight, fns) {
  const rates = fns.map(() => [])
  for (let r = 0; r <= RUNS; r++) {
    for (let k = 0; k < fns.length; k++) {
      const fn = fns[k]
      let next = 0
      const start = process.hrtime.bigint()
      const worker = async () => {
        while (next < n) {
          next++
          await fn()
        }
      }
      await Promise.all(Array.from({ length: inflight }, worker))
      const secs = Number(process.hrtime.bigint() - start) / 1e9
      if (r > 0) rates[k].push(n / secs) // run 0 is the warm-up
    }
  }
  return rates.map((rs) => {
    rs.sort((a, b) => a - b)
    return { median: rs[Math.floor(rs.length / 2)], min: rs[0], max: rs[rs.length - 1] }
  })
}

/** The two read operations on a database of `count` accounts. */
async function readOps(client, count) {
  // Sanity: the cursor the bench builds is the one the API hands out, and reads see every account.
  const first = await client.listLinkedAccounts({ limit: PAGE_LIMIT })
  if (count > PAGE_LIMIT) assert.strictEqual(first.next, cursorAfter(PAGE_LIMIT))
  const last = await client.getLinkedAccountById(accountId(count - 1))
  assert.strictEqual(last.udf.length, 3)
  const random = rng(count)
  const get = () => client.getLinkedAccountById(accountId(Math.floor(random() * count)))
  const span = Math.max(1, count - PAGE_LIMIT)
  const page = async () => {
    const p = await client.listLinkedAccounts({ after: cursorAfter(Math.floor(random() * span)), limit: PAGE_LIMIT })
    if (p.docs.length !== Math.min(PAGE_LIMIT, count)) throw new Error(`short page: ${p.docs.length}`)
  }
  return { get, page }
}

/** Read throughput on each database ([client, count] pairs), interleaved. */
async function reads(dbs) {
  const ops = []
  for (const [client, count] of dbs) ops.push(await readOps(client, count))
  const out = []
  for (const inflight of [1, 64]) {
    out.push([`getLinkedAccountById x${inflight}`, await measure(inflight === 1 ? GETS / 4 : GETS, inflight, ops.map((o) => o.get))])
    out.push([`listLinkedAccounts (keyset, 50) x${inflight}`, await measure(inflight === 1 ? PAGES / 2 : PAGES, inflight, ops.map((o) => o.page))])
  }
  return out
}

/** RSS of this process, and its anonymous part (heap, not file pages) where /proc tells it. */
function memory() {
  const rss = process.memoryUsage().rss
  let anon = null
  try {
    const m = /RssAnon:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))
    if (m) anon = Number(m[1]) * 1024
  } catch {
    // not Linux
  }
  return { rss, anon }
}

function spread(values) {
  const lo = Math.min(...values)
  const hi = Math.max(...values)
  return { lo, hi, pct: ((hi - lo) / 2 / ((hi + lo) / 2)) * 100 }
}

function fileSize(f) {
  try {
    return fs.statSync(f).size
  } catch {
    return 0
  }
}

/** Upserts accounts [from, to) with LOAD_INFLIGHT in flight; calls onProgress(done) after each. */
async function load(client, from, to, onProgress) {
  let next = from
  let done = from
  const worker = async () => {
    while (next < to) {
      const i = next++
      await client.upsertLinkedAccount(payload(i))
      done++
      onProgress?.(done)
    }
  }
  await Promise.all(Array.from({ length: LOAD_INFLIGHT }, worker))
}

/** Bytes per table and index (sqlite3 CLI with dbstat), or null when unavailable. */
function tableSizes(file) {
  try {
    const out = execFileSync('sqlite3', ['-readonly', file, 'SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    })
    return out
      .trim()
      .split('\n')
      .map((l) => l.split('|'))
      .map(([name, bytes]) => [name, Number(bytes)])
  } catch {
    return null
  }
}

async function main() {
  const dir = process.env.SCALE_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-scale-'))
  fs.mkdirSync(dir, { recursive: true })
  const smallFile = path.join(dir, 'small.db')
  const file = path.join(dir, 'scale.db')
  const open = (f) => Client.open({ path: f, orgId: 'org_scale', encryptionKey: KEY })
  console.log(`linkvault scale: ${fmt(BASE)} vs ${fmt(ACCOUNTS)} accounts, ${RUNS} runs per median, load ${LOAD_INFLIGHT} in flight, ${dir}`)
  const reuse = process.env.SCALE_REUSE === '1' && fs.existsSync(smallFile) && fs.existsSync(file)
  if (!reuse) {
    for (const f of [smallFile, file]) for (const x of ['', '-wal', '-shm']) fs.rmSync(f + x, { force: true })

    // The small database: the first BASE accounts of the large one.
    let t0 = Date.now()
    let client = await open(smallFile)
    await load(client, 0, BASE)
    await client.close()
    console.log(`\nloaded ${fmt(BASE)} accounts into small.db in ${((Date.now() - t0) / 1000).toFixed(1)} s`)

    // The large database, sampling RSS and the WAL while it grows.
    client = await open(file)
    const step = Math.max(1, Math.floor(ACCOUNTS / 10))
    const rss = []
    let walMax = 0
    const sampleWal = () => {
      walMax = Math.max(walMax, fileSize(`${file}-wal`))
    }
    const timer = setInterval(sampleWal, 100)
    t0 = Date.now()
    let nextRss = step
    let lastLog = Date.now()
    await load(client, 0, ACCOUNTS, (done) => {
      if (done % 10_000 === 0) sampleWal()
      if (done >= nextRss) {
        rss.push([done, memory()])
        nextRss += step
        if (Date.now() - lastLog > 10_000) {
          lastLog = Date.now()
          console.error(`  … ${fmt(done)} accounts, ${fmt(done / ((Date.now() - t0) / 1000))} upserts/s`)
        }
      }
    })
    clearInterval(timer)
    sampleWal()
    const loadSecs = (Date.now() - t0) / 1000
    console.log(`loaded ${fmt(ACCOUNTS)} accounts into scale.db in ${loadSecs.toFixed(1)} s (${fmt(ACCOUNTS / loadSecs)} upserts/s, ${LOAD_INFLIGHT} in flight)`)

    // RSS: after every 10 % of the upserts; the first sample is the warm-up.
    console.log(`RSS of the Node process after every ${fmt(step)} upserts (anonymous part in brackets):`)
    console.log('  ' + rss.map(([n, m]) => `${fmt(n / 1000)}k ${mb(m.rss)}` + (m.anon == null ? '' : ` [${mb(m.anon)}]`)).join(', '))
    const counted = rss.length > 2 ? rss.slice(1) : rss
    if (counted.length) {
      const all = spread(counted.map(([, m]) => m.rss))
      console.log(`  after warm-up: min ${mb(all.lo)}, max ${mb(all.hi)}, spread ±${all.pct.toFixed(1)} % (target ±10 %) ${all.pct <= 10 ? 'MET' : 'MISSED'}`)
    }
    console.log(`WAL during the load: max ${mb(walMax)} (${fmt(walMax / 4096)} pages of 4 KiB; auto-checkpoint at 1,000 pages)`)

    // Size after a checkpoint: closing the last connection checkpoints and removes the WAL.
    await client.close()
    const size = fileSize(file)
    const perAccount = size / ACCOUNTS
    console.log(`\nDatabase after checkpoint: ${mb(size)}, ${fmt(perAccount)} bytes per account (target ≤ 1,536) ${perAccount <= 1536 ? 'MET' : 'MISSED'}`)
    const tables = tableSizes(file)
    if (tables) {
      for (const [name, bytes] of tables) {
        if (bytes / ACCOUNTS >= 1) console.log(`  ${name.padEnd(38)} ${fmt(bytes / ACCOUNTS).padStart(6)} bytes/account`)
      }
    }
  }

  // Reads on both databases, runs interleaved.
  const small = await open(smallFile)
  const large = await open(file)
  const results = await reads([
    [small, BASE],
    [large, ACCOUNTS],
  ])
  await small.close()
  const w = 36
  console.log(`\n${'ops/s (median, min–max)'.padEnd(w)} ${(fmt(BASE) + ' accounts').padStart(26)} ${(fmt(ACCOUNTS) + ' accounts').padStart(26)}  slowdown (target ≤ 1.5×)`)
  const cell = (m) => `${fmt(m.median)} (${fmt(m.min)}–${fmt(m.max)})`.padStart(26)
  for (const [name, [s, l]] of results) {
    const ratio = s.median / l.median
    console.log(`${name.padEnd(w)} ${cell(s)} ${cell(l)}  ${ratio.toFixed(2)}× ${ratio <= 1.5 ? 'MET' : 'MISSED'}`)
  }

  // The WAL while readers run: MIXED updates of random accounts with READERS reads in flight
  // (3 in 4 getLinkedAccountById, 1 in 4 keyset pages). A reader that kept its snapshot, or a
  // statement left un-reset, would stop checkpoints from restarting the WAL and it would grow.
  if (MIXED > 0) {
    const file = path.join(dir, 'scale.db')
    let walMax = 0
    const sampleWal = () => {
      walMax = Math.max(walMax, fileSize(`${file}-wal`))
    }
    const timer = setInterval(sampleWal, 50)
    const random = rng(7)
    let stop = false
    let readsDone = 0
    const readers = Array.from({ length: READERS }, async (_, k) => {
      while (!stop) {
        if (k % 4 === 3) await large.listLinkedAccounts({ after: cursorAfter(Math.floor(random() * Math.max(1, ACCOUNTS - PAGE_LIMIT))), limit: PAGE_LIMIT })
        else await large.getLinkedAccountById(accountId(Math.floor(random() * ACCOUNTS)))
        readsDone++
      }
    })
    const before = memory()
    const t0 = Date.now()
    let n = 0
    await Promise.all(
      Array.from({ length: LOAD_INFLIGHT }, async () => {
        while (n < MIXED) {
          n++
          const p = payload(Math.floor(random() * ACCOUNTS))
          p.udf.seats = n % 1000
          await large.upsertLinkedAccount(p)
        }
      }),
    )
    stop = true
    await Promise.all(readers)
    clearInterval(timer)
    sampleWal()
    const after = memory()
    const secs = (Date.now() - t0) / 1000
    console.log(
      `\n${fmt(MIXED)} updates of random accounts (${fmt(MIXED / secs)}/s) with ${READERS} reads in flight (${fmt(readsDone / secs)}/s):` +
        ` WAL max ${mb(walMax)} (${fmt(walMax / 4096)} pages); RSS ${mb(before.rss)} → ${mb(after.rss)}` +
        (after.anon == null ? '' : ` [anonymous ${mb(before.anon)} → ${mb(after.anon)}]`),
    )
  }
  await large.close()

  if (!process.env.SCALE_DIR && process.env.SCALE_KEEP !== '1') fs.rmSync(dir, { recursive: true, force: true })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

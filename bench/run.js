// `npm run bench`: ops/s of linkvault next to a JavaScript baseline (bench/baseline.js) and to
// linkvault's own Rust core with no Node in between (src/bin/bench_core.rs), in one run.
// Each cell is the median of RUNS runs after a warm-up run, with min–max. See bench/README.md.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { execFileSync } = require('node:child_process')
const assert = require('node:assert')

const { Client } = require('..')
const { Baseline } = require('./baseline')
const { MinimalBaseline } = require('./minimal-baseline')
const { payload, MIX_IDS, MIX_TIMES, mixedOrder, mixPayload, eventLoopLag } = require('./workload')
// BENCH_ONLY=mint,verify: only the rows whose names contain one of these (also in the Rust core).
const ONLY = (process.env.BENCH_ONLY ?? '').split(',').map((s) => s.trim()).filter(Boolean)
const selected = (name) => ONLY.length === 0 || ONLY.some((part) => name.includes(part))

const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const N = Number(process.env.BENCH_N ?? 4000)
const ACCOUNTS = Number(process.env.BENCH_ACCOUNTS ?? 2000)
function measureSync(n, fn) {
  const rates = []
  for (let r = 0; r <= RUNS; r++) {
    const start = process.hrtime.bigint()
    for (let i = 0; i < n; i++) fn(i, r)
    const secs = Number(process.hrtime.bigint() - start) / 1e9
    if (r > 0) rates.push(n / secs)
  }
  rates.sort((a, b) => a - b)
  return { median: rates[Math.floor(rates.length / 2)], min: rates[0], max: rates[rates.length - 1] }
}

async function measure(n, inflight, fn) {
  const rates = []
  for (let r = 0; r <= RUNS; r++) {
    let next = 0
    const start = process.hrtime.bigint()
    const worker = async () => {
      while (next < n) {
        const i = next++
        await fn(i, r)
      }
    }
    await Promise.all(Array.from({ length: inflight }, worker))
    const secs = Number(process.hrtime.bigint() - start) / 1e9
    if (r > 0) rates.push(n / secs)
  }
  rates.sort((a, b) => a - b)
  return { median: rates[Math.floor(rates.length / 2)], min: rates[0], max: rates[rates.length - 1] }
}


/** Drops what legitimately differs between two implementations (random ids, clock). */
function comparable(a) {
  const { _id, createdAt, updatedAt, new_account, ...rest } = a
  return {
    ...rest,
    udf: a.udf.map(({ key_name, key_value }) => ({ key_name, key_value })),
    identities: a.identities.map(({ linkedAt, ...i }) => i),
  }
}

function rustCore() {
  const root = path.join(__dirname, '..')
  // BENCH_NO_CORE=1 skips the Rust-core column (a quick check of the script itself).
  if (process.env.BENCH_NO_CORE) return new Map()
  try {
    execFileSync('cargo', ['build', '--release', '--locked', '--features', 'bench', '--bin', 'bench_core'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] })
    const out = execFileSync(path.join(root, 'target', 'release', 'bench_core'), [String(N), String(ACCOUNTS), String(RUNS)], { encoding: 'utf8' })
    return new Map(out.trim().split('\n').map((l) => JSON.parse(l)).map((r) => [r.name, r]))
  } catch (e) {
    console.error('Rust core benchmark unavailable:', e.message)
    return new Map()
  }
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-bench-'))
  const key = crypto.randomBytes(32)
  const lv = await Client.open({ path: path.join(dir, 'linkvault.db'), orgId: 'org_bench', encryptionKey: key.toString('hex') })
  const base = new Baseline(path.join(dir, 'baseline.db'), key, { orgId: 'org_bench' })
  const min = new MinimalBaseline(path.join(dir, 'minimal.db'), { orgId: 'org_bench' })

  // Seed all three with the same accounts.
  for (let i = 0; i < ACCOUNTS; i++) {
    await lv.upsertLinkedAccount(payload(`user-${i}`, 0))
    base.upsertLinkedAccount(payload(`user-${i}`, 0))
    min.upsertLinkedAccount(payload(`user-${i}`, 0))
  }
  const order = mixedOrder()
  // Keyset cursors for pages of 50, collected once.
  const lvCursors = [null]
  const baseCursors = [0]
  for (;;) {
    const a = await lv.listLinkedAccounts({ limit: 50, ...(lvCursors.at(-1) ? { after: lvCursors.at(-1) } : {}) })
    const b = base.listLinkedAccounts({ limit: 50, after: baseCursors.at(-1) })
    if (!a.next) break
    lvCursors.push(a.next)
    baseCursors.push(b.next)
  }

  // Session tokens: the baseline signs with the same secret, so both verify the same way.
  const lvTokens = []
  const baseTokens = []
  for (let i = 0; i < 100; i++) {
    lvTokens.push((await lv.getTokenForLinkedAccount({ linked_account_id: `user-${i}` })).token)
    baseTokens.push(base.getTokenForLinkedAccount({ linked_account_id: `user-${i}` }).token)
  }
  // Each side links the same sequence of new identities.
  const seq = { lv: 0, base: 0 }
  const identity = (side, i) => ({ provider: 'github', user_id: `gh-${seq[side]++}`, email: `U${i}@Example.com`, email_verified: true, isSocial: true })

  const ops = [
    { name: 'upsertLinkedAccount (insert)', n: N, lv: (i, r) => lv.upsertLinkedAccount(payload(`new-${r}-${i}`, r)), base: (i, r) => base.upsertLinkedAccount(payload(`new-${r}-${i}`, r)), min: (i, r) => min.upsertLinkedAccount(payload(`new-${r}-${i}`, r)) },
    { name: 'upsertLinkedAccount (update)', n: N, lv: (i, r) => lv.upsertLinkedAccount(payload(`user-${i % ACCOUNTS}`, r + 1)), base: (i, r) => base.upsertLinkedAccount(payload(`user-${i % ACCOUNTS}`, r + 1)), min: (i, r) => min.upsertLinkedAccount(payload(`user-${i % ACCOUNTS}`, r + 1)) },
    { name: 'upsert, random order, mixed', n: order.length, only64: true, lv: (i, r) => lv.upsertLinkedAccount(mixPayload(r, order[i])), base: (i, r) => base.upsertLinkedAccount(mixPayload(r, order[i])), min: (i, r) => min.upsertLinkedAccount(mixPayload(r, order[i])) },
    { name: 'getLinkedAccountById', n: N, lv: (i) => lv.getLinkedAccountById(`user-${i % ACCOUNTS}`), base: (i) => base.getLinkedAccountById(`user-${i % ACCOUNTS}`), min: (i) => min.getLinkedAccountById(`user-${i % ACCOUNTS}`) },
    { name: 'getAllLinkedAccounts (page of 50)', n: N / 10, lv: (i) => lv.getAllLinkedAccounts({ page: 1 + (i % 20), limit: 50 }), base: (i) => base.getAllLinkedAccounts({ page: 1 + (i % 20), limit: 50 }) },
    { name: 'getTokenForLinkedAccount (mint)', n: N, lv: (i) => lv.getTokenForLinkedAccount({ linked_account_id: `user-${i % ACCOUNTS}`, force_refresh: true }), base: (i) => base.getTokenForLinkedAccount({ linked_account_id: `user-${i % ACCOUNTS}` }) },
    { name: 'verifySessionToken (async; baseline jose)', n: N * 5, lv: (i) => lv.verifySessionToken(lvTokens[i % 100]), base: (i) => base.verifySessionTokenJose(baseTokens[i % 100]) },
    { name: 'verifySessionTokenSync (baseline jsonwebtoken)', n: N * 20, sync: true, lv: (i) => lv.verifySessionTokenSync(lvTokens[i % 100]), base: (i) => base.verifySessionToken(baseTokens[i % 100]) },
    { name: 'listLinkedAccounts (keyset page of 50)', n: N / 10, lv: (i) => { const c = lvCursors[i % lvCursors.length]; return lv.listLinkedAccounts({ limit: 50, ...(c ? { after: c } : {}) }) }, base: (i) => base.listLinkedAccounts({ limit: 50, after: baseCursors[i % baseCursors.length] }) },
    // Last: it adds identities to the accounts the other rows read.
    { name: 'linkIdentity', n: N, lv: (i) => lv.linkIdentity(`user-${i % ACCOUNTS}`, identity('lv', i)), base: (i) => base.linkIdentity(`user-${i % ACCOUNTS}`, identity('base', i)) },
  ]

  const rows = []
  for (const op of ops) {
    if (op.sync) {
      const name = `${op.name} sync`
      if (!selected(name)) continue
      process.stderr.write(`measuring ${name}\n`)
      rows.push({ name, lv: measureSync(op.n, op.lv), base: measureSync(op.n, op.base) })
      continue
    }
    for (const inflight of op.only64 ? [64] : [1, 64]) {
      const name = `${op.name} x${inflight}`
      if (!selected(name)) continue
      process.stderr.write(`measuring ${name}\n`)
      const a = await measure(op.n, inflight, op.lv)
      const b = await measure(op.n, inflight, async (i, r) => op.base(i, r))
      const m = op.min ? await measure(op.n, inflight, async (i, r) => op.min(i, r)) : null
      rows.push({ name, lv: a, base: b, min: m })
    }
  }

  // Honesty check: both implementations hold the same data and answer alike (it needs every row).
  if (ONLY.length === 0) await sampleCheck(lv, base, min, lvTokens, baseTokens)
  const lag = await eventLoopLag((p) => lv.upsertLinkedAccount(p))
  await lv.close()
  base.close()
  min.close()
  fs.rmSync(dir, { recursive: true, force: true })

  process.stderr.write('measuring the Rust core\n')
  const core = rustCore()
  print(rows, core)
  console.log(
    `event loop: a 1 ms interval while 64 upserts were in flight (${lag.upserts} upserts, ${lag.ticks} ticks): ` +
      `late by p50 ${lag.p50.toFixed(2)} ms, p99 ${lag.p99.toFixed(2)} ms, max ${lag.max.toFixed(2)} ms`,
  )
}

async function sampleCheck(lv, base, min, lvTokens, baseTokens) {
  for (const id of ['user-0', `user-${ACCOUNTS - 1}`, 'new-1-7']) {
    assert.deepStrictEqual(comparable(await lv.getLinkedAccountById(id)), comparable(base.getLinkedAccountById(id)), `sample ${id} differs`)
  }
  const pa = await lv.getAllLinkedAccounts({ page: 3, limit: 50 })
  const pb = base.getAllLinkedAccounts({ page: 3, limit: 50 })
  assert.deepStrictEqual({ ...pa, docs: pa.docs.map(comparable) }, { ...pb, docs: pb.docs.map(comparable) }, 'page 3 differs')
  const ca = await lv.getLinkedAccountCredentials('user-5')
  assert.deepStrictEqual(ca.auth_credentials, base.open(base.q.find.get(1, 'user-5').credentials, 'user-5'))
  const ia = await lv.getLinkedAccountById('user-3')
  const ib = base.getLinkedAccountById('user-3')
  assert.deepStrictEqual(
    ia.identities.map(({ linkedAt, ...rest }) => rest),
    ib.identities.map(({ linkedAt, ...rest }) => rest),
    'identities differ',
  )
  const strip = ({ iat, exp, jti, ...rest }) => rest
  assert.deepStrictEqual(strip(lv.verifySessionTokenSync(lvTokens[7])), strip(base.verifySessionToken(baseTokens[7])))
  // The mixed row's accounts: the same __v and UDF values in all three.
  for (const id of ['mix-1-0', `mix-1-${MIX_IDS - 1}`]) {
    const [a, b, m] = [await lv.getLinkedAccountById(id), base.getLinkedAccountById(id), min.getLinkedAccountById(id)]
    assert.strictEqual(a.__v, MIX_TIMES - 1, `${id}: __v`)
    assert.deepStrictEqual(comparable(a), comparable(b), `${id} differs from the baseline`)
    const core = (x) => ({ __v: x.__v, name: x.name, udf: comparable(x).udf })
    assert.deepStrictEqual(core(a), core(m), `${id} differs from the minimal baseline`)
  }
  process.stderr.write('sample check: linkvault and baseline results are equal\n')
}

function print(rows, core) {
  const f = (m) => (m ? `${Math.round(m.median).toLocaleString('en-US')} (${Math.round(m.min).toLocaleString('en-US')}–${Math.round(m.max).toLocaleString('en-US')})` : 'n/a')
  const ratio = (a, b) => (a && b ? `${(a.median / b.median).toFixed(2)}×` : 'n/a')
  const header = ['operation (in flight)', 'linkvault ops/s', 'baseline ops/s', 'minimal ops/s', 'rust core ops/s', 'lv / baseline', 'lv / minimal', 'lv / rust core']
  const body = rows.map((r) => [r.name, f(r.lv), f(r.base), f(r.min), f(core.get(r.name)), ratio(r.lv, r.base), ratio(r.lv, r.min), ratio(r.lv, core.get(r.name))])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)))
  const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`
  console.log(line(header))
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`)
  for (const b of body) console.log(line(b))
  console.log(`\nmedian of ${RUNS} runs after a warm-up (min–max); node ${process.version}, ${os.cpus().length} cores; file databases in WAL mode, synchronous=NORMAL`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

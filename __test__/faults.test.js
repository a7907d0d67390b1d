// Faults: crash safety under SIGKILL, many writers on one file, lifecycle (exit without close,
// close with calls in flight, worker threads that exit), disk full and read-only files.
//
// Budgets: the default run keeps this file well under a minute on 2 cores. LINKVAULT_LONG=1
// runs the long mode (200 kills, 4x the writers); LINKVAULT_SEED=<n> replays a run's random
// choices (the seed is printed).
const fs = require('node:fs')
const path = require('node:path')
const { spawn, execFile, spawnSync } = require('node:child_process')
const { promisify } = require('node:util')
const { Worker } = require('node:worker_threads')
const { Client, tmpDir, openClient, KEY } = require('./helpers')

const run = promisify(execFile)
const FIX = path.join(__dirname, 'fixtures')
const LONG = process.env.LINKVAULT_LONG === '1'
const SEED = Number(process.env.LINKVAULT_SEED ?? Date.now() % 1e9)
const KILLS = LONG ? 200 : 20

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function rng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Every account of the client's scope, with identities. */
async function allAccounts(client) {
  const out = new Map()
  let after = null
  do {
    const { docs, next } = await client.listLinkedAccounts({ limit: 1000, ...(after && { after }) })
    for (const d of docs) out.set(d.account_id, d)
    after = next
  } while (after)
  return out
}

/**
 * Runs the crash child once and SIGKILLs it `delayMs` after spawn, or after it printed READY
 * (its client is open) when `fromReady`; returns its complete stdout lines.
 */
function runAndKill(file, tag, delayMs, fromReady = false) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(FIX, 'crash-writer.js'), file, KEY, tag], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    let killed = false
    const kill = () => {
      killed = true
      child.kill('SIGKILL')
    }
    // From READY: a loaded machine may take longer than any fixed delay to start Node and open
    // the file; the 60 s bound only stops a child that never gets there.
    let timer = setTimeout(kill, fromReady ? 60_000 : delayMs)
    child.stdout.on('data', (d) => {
      out += d
      if (fromReady && out.startsWith('READY\n')) {
        fromReady = false
        clearTimeout(timer)
        timer = setTimeout(kill, delayMs)
      }
    })
    child.stderr.on('data', (d) => (err += d))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      if (!killed || signal !== 'SIGKILL') {
        reject(new Error(`crash child ended by itself (code ${code}, signal ${signal}): ${err}`))
        return
      }
      const lines = out.split('\n')
      lines.pop() // an incomplete last line (or the empty string after the last newline)
      resolve(lines.filter((l) => l && l !== 'READY'))
    })
  })
}

/** Milliseconds from spawn until the crash child has opened the file (its READY line). */
function startupTime(file) {
  return new Promise((resolve, reject) => {
    const start = Date.now()
    const child = spawn(process.execPath, [path.join(FIX, 'crash-writer.js'), file, KEY, 'calibrate'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let ready = null
    child.stdout.on('data', (d) => {
      if (ready === null && String(d).includes('READY')) {
        ready = Date.now() - start
        child.kill('SIGKILL')
      }
    })
    child.on('error', reject)
    child.on('close', () => (ready === null ? reject(new Error('the crash child never got ready')) : resolve(ready)))
  })
}

/** Checks every acknowledged write of one run against a fresh client; returns the number checked. */
async function verifyRun(client, acks, accounts, consents) {
  const minVersion = new Map()
  const identityOf = new Map() // identity user_id -> account it was linked to
  const merged = new Map() // secondary -> primary
  const primaryOf = new Map() // B -> A of the same unit
  const created = new Map() // arrangement_id -> account
  const revoked = new Set()
  for (const line of acks) {
    const [op, a, b] = line.split(' ')
    if (op === 'U') minVersion.set(a, Math.max(minVersion.get(a) ?? 0, Number(b)))
    else if (op === 'I') identityOf.set(b, a)
    else if (op === 'M') merged.set(b, a)
    else if (op === 'C') created.set(b, a)
    else if (op === 'R') revoked.add(b)
    else throw new Error(`unknown ack ${line}`)
    if (op === 'U' && a.includes('-b')) primaryOf.set(a, a.replace('-b', '-a'))
  }
  const holding = new Map() // crash identity -> accounts holding it
  for (const acc of accounts.values()) {
    for (const i of acc.identities) {
      if (i.provider === 'crash') holding.set(i.user_id, [...(holding.get(i.user_id) ?? []), acc])
    }
  }
  const holders = (uid) => holding.get(uid) ?? []
  for (const [id, v] of minVersion) {
    const acc = accounts.get(id)
    if (merged.has(id)) {
      // An acknowledged merge: the secondary is gone, its identity and UDF are on the primary.
      expect(acc).toBeUndefined()
      const primary = accounts.get(merged.get(id))
      expect(primary.udf.some((u) => u.key_name === 'kb')).toBe(true)
      continue
    }
    if (acc === undefined) {
      // Only a secondary may be missing: merged by a call that committed but was not acknowledged.
      expect(primaryOf.has(id)).toBe(true)
      const primary = accounts.get(primaryOf.get(id))
      expect(primary.udf.some((u) => u.key_name === 'kb')).toBe(true)
      continue
    }
    expect(acc.__v).toBeGreaterThanOrEqual(v)
    const creds = await client.getLinkedAccountCredentials(id)
    expect(creds.auth_credentials).toEqual({ token: `tok-${id}` })
  }
  for (const [uid, holder] of identityOf) {
    const h = holders(uid)
    expect(h).toHaveLength(1)
    const expected = merged.has(holder) ? merged.get(holder) : holder
    if (h[0].account_id !== expected) {
      // Linked to a secondary whose merge committed without an acknowledgement.
      expect(h[0].account_id).toBe(primaryOf.get(holder))
    }
  }
  for (const [arr, account] of created) {
    const c = consents.get(arr)
    expect(c).toBeDefined()
    expect(c.end_user_id).toBe(account)
    if (revoked.has(arr)) {
      expect(c.active).toBe(false)
      expect(c.termination_reason).toBe('revoked')
    }
  }
  return acks.length
}

describe('crash safety', () => {
  test(`${KILLS} SIGKILLs at random moments lose no acknowledged write and never corrupt the file (seed ${SEED})`, async () => {
    const random = rng(SEED)
    const dir = tmpDir()
    const file = path.join(dir, 'crash.db')
    let writesChecked = 0
    let kills = 0
    const allAcks = []
    // How long a child takes to start and open the file on this machine now (a loaded machine
    // can take most of a second), so that most kills land while it writes.
    const startup = await startupTime(path.join(dir, 'calibrate.db'))
    for (let round = 0; round < KILLS; round++) {
      // Even rounds: 30 ms to 870 ms past the startup time after spawn, so some kills land while
      // the child is still opening the file. Odd rounds: 0–500 ms after it is open, so kills land
      // among acknowledged writes however slow the machine is.
      const fromReady = round % 2 === 1
      const delay = fromReady ? Math.floor(random() * 500) : 30 + Math.floor(random() * (870 + startup))
      const acks = await runAndKill(file, `r${round}`, delay, fromReady)
      kills++
      allAcks.push(...acks)
      const client = await Client.open({ path: file, orgId: 'org_crash', encryptionKey: KEY })
      const integrity = await client.checkIntegrity()
      expect(integrity).toEqual({ ok: true, details: [] })
      const accounts = await allAccounts(client)
      const consents = new Map((await client.listConsents()).map((c) => [c.arrangement_id, c]))
      writesChecked += await verifyRun(client, acks, accounts, consents)
      // No identity is on two accounts (through the API, across every run so far).
      const seen = new Set()
      for (const acc of accounts.values()) {
        for (const i of acc.identities) {
          const k = `${i.provider}|${i.user_id}`
          expect(seen.has(k)).toBe(false)
          seen.add(k)
        }
      }
      await client.close()
    }
    // Once more at the end: every acknowledged write of every run, in the final file.
    const client = await Client.open({ path: file, orgId: 'org_crash', encryptionKey: KEY })
    const accounts = await allAccounts(client)
    const consents = new Map((await client.listConsents()).map((c) => [c.arrangement_id, c]))
    writesChecked += await verifyRun(client, allAcks, accounts, consents)
    await client.close()
    console.log(`crash safety: ${kills} kills survived, ${writesChecked} acknowledged writes checked (${allAcks.length} distinct), ${accounts.size} accounts, seed ${SEED}`)
    expect(allAcks.length).toBeGreaterThan(KILLS)
  }, LONG ? 1_800_000 : 120_000)
})

describe('many writers on one file', () => {
  test('4 processes x 2,000 upserts plus 4 worker threads: no lost update, no SQLITE_BUSY', async () => {
    const dir = tmpDir()
    const file = path.join(dir, 'many.db')
    const per = LONG ? 8000 : 2000
    const perWorker = LONG ? 2000 : 500
    const procs = ['p1', 'p2', 'p3', 'p4'].map((tag) =>
      run(process.execPath, [path.join(FIX, 'many-writer.js'), file, KEY, tag, String(per)], { maxBuffer: 1 << 20 }),
    )
    const workers = ['w1', 'w2', 'w3', 'w4'].map(
      (tag) =>
        new Promise((resolve, reject) => {
          const w = new Worker(path.join(FIX, 'many-writer.js'), { workerData: { file, key: KEY, tag, count: perWorker } })
          let result = null
          w.once('message', (m) => (result = m))
          w.once('error', reject)
          w.once('exit', () => resolve(result))
        }),
    )
    const results = [...(await Promise.all(procs)).map((o) => JSON.parse(o.stdout)), ...(await Promise.all(workers))]
    for (const r of results) expect([r.failed, r.codes, r.ok]).toEqual([0, {}, expect.any(Number)])
    const client = await Client.open({ path: file, orgId: 'org_many', encryptionKey: KEY })
    const hotCalls = 4 * Math.ceil(per / 2) + 4 * Math.ceil(perWorker / 2)
    const ownCalls = 4 * Math.floor(per / 2) + 4 * Math.floor(perWorker / 2)
    const hot = await client.getLinkedAccountById('hot')
    expect(hot.__v).toBe(hotCalls - 1)
    expect(hot.udf.map((u) => u.key_name).sort()).toEqual(['p1', 'p2', 'p3', 'p4', 'w1', 'w2', 'w3', 'w4'])
    const page = await client.getAllLinkedAccounts({ limit: 1 })
    expect(page.totalDocs).toBe(ownCalls + 1)
    const events = await client.listEvents({ types: 'linked_account.created', limit: 1000 })
    expect(events.events.length).toBeGreaterThan(0)
    expect(await client.checkIntegrity()).toEqual({ ok: true, details: [] })
    await client.close()
    console.log(`many writers: ${hotCalls + ownCalls} upserts from 4 processes and 4 worker threads, none failed`)
  }, LONG ? 600_000 : 90_000)
})

describe('lifecycle', () => {
  test('a process that opens clients and never closes them exits by itself', async () => {
    const dir = tmpDir()
    const { stdout } = await run(process.execPath, [path.join(FIX, 'lifecycle.js'), 'never-close', dir, KEY], { timeout: 30_000 })
    expect(JSON.parse(stdout)).toEqual({ seen: 200 })
  })

  test('close() with calls in flight settles every promise (resolved or CLIENT_CLOSED) and never hangs', async () => {
    for (const where of ['file', 'memory']) {
      const client = where === 'file' ? await openClient() : await Client.open({ path: ':memory:' })
      await client.upsertLinkedAccount({ linked_account_id: 'seed', your_app: { auth_credentials: { t: 1 } } })
      const calls = []
      for (let i = 0; i < 1500; i++) {
        calls.push(client.upsertLinkedAccount({ linked_account_id: `c${i % 100}`, udf: { i } }))
        if (i % 5 === 0) calls.push(client.getAllLinkedAccounts({ limit: 10 }))
        if (i % 7 === 0) calls.push(client.getLinkedAccountCredentials('seed'))
        if (i % 50 === 0) calls.push(client.checkIntegrity())
      }
      const closing = client.close()
      // Calls made after close() began.
      for (let i = 0; i < 100; i++) calls.push(client.upsertLinkedAccount({ linked_account_id: `late${i}` }))
      calls.push(client.listEvents(), client.rotateEncryptionKey('22'.repeat(32)), client.close())
      let timer
      const settled = await Promise.race([
        Promise.allSettled([closing, ...calls]),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('hang: promises did not settle')), 30_000)
        }),
      ]).finally(() => clearTimeout(timer))
      const codes = new Set(settled.filter((s) => s.status === 'rejected').map((s) => s.reason.code))
      expect([...codes].filter((c) => c !== 'CLIENT_CLOSED')).toEqual([])
      // Everything queued before close() ran; everything after was refused.
      expect(settled.slice(1, -103).every((s) => s.status === 'fulfilled')).toBe(true)
      expect(settled.slice(-103, -1).every((s) => s.status === 'rejected')).toBe(true)
      expect(settled[settled.length - 1].status).toBe('fulfilled') // closing twice is harmless
    }
  })

  test('worker threads that exit or are terminated with calls in flight do not crash the process', async () => {
    const dir = tmpDir()
    const { stdout } = await run(process.execPath, [path.join(FIX, 'lifecycle.js'), 'workers', dir, KEY], { timeout: 60_000 })
    const out = JSON.parse(stdout)
    expect(out.main).toBe('main-after')
    expect(out.integrity).toEqual({ ok: true, details: [] })
    expect(out.exits.map((e) => e.mode)).toEqual(['exit', 'terminate', 'finish', 'exit', 'terminate', 'finish', 'terminate', 'exit'])
    for (const e of out.exits) expect(e.code).toBe(e.mode === 'terminate' ? 1 : 0)
  })
})

describe('disk full and read-only files', () => {
  async function seed(file) {
    const client = await Client.open({ path: file, orgId: 'org_s', encryptionKey: KEY })
    await client.upsertLinkedAccount({
      linked_account_id: 'before',
      name: 'Before',
      your_app: { app_id: 'app', auth_credentials: { token: 'secret-before' } },
    })
    await client.close()
  }

  test('disk full (file-size limit): writes fail with STORAGE_ERROR, earlier data stays readable', async () => {
    const dir = tmpDir()
    const file = path.join(dir, 'full.db')
    await seed(file)
    const sizeKb = Math.ceil(fs.statSync(file).size / 1024)
    // RLIMIT_FSIZE (in KiB for bash's ulimit -f): room for a few 200 KB writes in the WAL.
    const limitKb = sizeKb + 700
    const script = `trap '' XFSZ; ulimit -f ${limitKb}; exec "$0" "$@"`
    const { stdout } = await run('bash', ['-c', script, process.execPath, path.join(FIX, 'storage-limits.js'), 'disk-full', file, KEY], {
      timeout: 60_000,
      maxBuffer: 1 << 20,
    })
    const out = JSON.parse(stdout)
    expect(out.failure).toMatchObject({ code: 'STORAGE_ERROR', status: 500 })
    expect(out.failure.message).toMatch(/disk is full|file-size limit|I\/O error/)
    expect(out.failure.message).toMatch(/not saved/)
    expect(out.acked.length).toBeGreaterThan(0)
    expect(out.smallCodes.filter((c) => c !== 'STORAGE_ERROR')).toEqual([])
    expect(out.reads).toEqual({
      before: true,
      credentials: { token: 'secret-before' },
      acked: true,
      list: expect.any(Number),
    })
    // Without the limit, a fresh client finds an intact file with every acknowledged write.
    const client = await Client.open({ path: file, orgId: 'org_s', encryptionKey: KEY })
    expect(await client.checkIntegrity()).toEqual({ ok: true, details: [] })
    for (const id of out.acked) await expect(client.getLinkedAccountById(id)).resolves.toMatchObject({ account_id: id })
    await client.upsertLinkedAccount({ linked_account_id: 'after-limit' })
    await client.close()
  })

  // As root, file modes do not stop writes: the child runs without CAP_DAC_OVERRIDE (setpriv).
  const isRoot = process.getuid?.() === 0
  const setpriv = isRoot && spawnSync('setpriv', ['--help']).status === 0
  const caps = '-dac_override,-dac_read_search,-fowner'
  const asUnprivileged = (args) => (isRoot ? ['setpriv', [`--inh-caps=${caps}`, `--bounding-set=${caps}`, ...args]] : [args[0], args.slice(1)])
  const testRO = !isRoot || setpriv ? test : test.skip

  for (const variant of ['file', 'file and directory']) {
    testRO(`read-only ${variant}: opens read-only, reads work, every write fails with STORAGE_ERROR`, async () => {
      const dir = tmpDir()
      const file = path.join(dir, 'ro.db')
      await seed(file)
      fs.chmodSync(file, 0o444)
      if (variant !== 'file') fs.chmodSync(dir, 0o555)
      try {
        const [cmd, args] = asUnprivileged([process.execPath, path.join(FIX, 'storage-limits.js'), 'read-only', file, KEY])
        const { stdout } = await run(cmd, args, { timeout: 30_000 })
        const out = JSON.parse(stdout)
        expect(out.open).toBeUndefined()
        expect(out.read).toBe('Before')
        expect(out.credentials).toEqual({ token: 'secret-before' })
        expect(out.list).toEqual(['before'])
        expect(out.integrity).toEqual({ ok: true, details: [] })
        for (const [name, r] of Object.entries(out.writes)) {
          expect([name, r]).toEqual([name, expect.objectContaining({ code: 'STORAGE_ERROR', status: 500 })])
          expect(r.message).toMatch(/read-only/)
        }
        expect(out.after).toBe('Before')
      } finally {
        fs.chmodSync(dir, 0o755)
        fs.chmodSync(file, 0o644)
      }
    })
  }
})

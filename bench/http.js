'use strict'
// npm run bench:http — `linkvault serve` under load (autocannon, 64 connections) beside a bare
// fastify route answering a constant JSON: the framework's ceiling on this machine, measured
// in the same run.
//
// Each server runs in its own child process (the load generator needs a core of its own);
// rounds alternate between them and the medians are reported. Rows:
//   bare     GET /bare                                    constant JSON, no store
//   GET      GET /api/v2/public/linked-account/:id        x-api-key, random id of 1,000
//   GET      the same, LINKVAULT_LOG_LEVEL=warn            no per-request access-log line
//   PUT      PUT /api/v2/public/linked-account            x-api-key, upserts a changing UDF
// Target: GET >= 0.5x bare requests/s; the ratio reported is the median of each round's ratio
// (a round's runs are a minute apart, so they share the machine's load). Options:
// BENCH_SECONDS (default 8 per run), BENCH_ROUNDS (default 5), BENCH_CONNECTIONS (default 64), LINKVAULT_LOG_LEVEL for the server
// (default info, as `linkvault serve` runs; logs go to /dev/null). The last column, the server
// process's CPU time per request (all threads, from /proc), is steadier than req/s on a busy
// machine.

const { spawn } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const autocannon = require('autocannon')
const { Client } = require('..')

const SECONDS = Number(process.env.BENCH_SECONDS || 8)
const ROUNDS = Number(process.env.BENCH_ROUNDS || 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS || 64)
const ACCOUNTS = 1000
const BIN = path.join(__dirname, '..', 'server', 'bin.js')

const BARE = `
const fastify = require('fastify')({ logger: false })
fastify.get('/bare', async () => ({ hello: 'world', n: 1 }))
fastify.listen({ host: '127.0.0.1', port: 0 }).then(() => {
  process.stdout.write('listening on http://127.0.0.1:' + fastify.server.address().port + '\\n')
})
process.on('SIGTERM', () => fastify.close().then(() => process.exit(0)))
`

function start(args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'ignore'], cwd: path.join(__dirname, '..', 'server') })
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      const m = /listening on (\S+)/.exec(out)
      if (m) resolve({ url: m[1], pid: child.pid, stop: () => new Promise((r) => { child.on('close', r); child.kill('SIGTERM') }) })
    })
    child.on('close', (code) => reject(new Error(`server exited with ${code} before it was ready`)))
  })
}

/** CPU time (user + system, ms) a process has used, from /proc (Linux; else NaN). */
function cpuMs(pid) {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return NaN
  }
}

/** One autocannon run against `server`; adds the server's CPU µs per request (all its threads). */
function load(server, opts) {
  const before = cpuMs(server.pid)
  return new Promise((resolve, reject) => {
    autocannon({ connections: CONNECTIONS, pipelining: 1, duration: SECONDS, ...opts }, (err, result) => {
      if (err) return reject(err)
      result.cpuPerRequestUs = ((cpuMs(server.pid) - before) * 1000) / Math.max(1, result.requests.total)
      resolve(result)
    })
  })
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-bench-http-'))
  const db = path.join(dir, 'bench.db')
  const env = { ...process.env, LINKVAULT_ENCRYPTION_KEY: crypto.randomBytes(32).toString('hex'), LINKVAULT_LOG_LEVEL: process.env.LINKVAULT_LOG_LEVEL || 'info' }
  const setup = await Client.open({ path: db, orgId: 'org_bench', encryptionKey: env.LINKVAULT_ENCRYPTION_KEY })
  const key = await setup.createApiKey({ name: 'bench' })
  const ids = []
  for (let i = 0; i < ACCOUNTS; i++) ids.push(`user-${i}@example.com`)
  for (let i = 0; i < ACCOUNTS; i += 100) {
    await Promise.all(ids.slice(i, i + 100).map((id) => setup.upsertLinkedAccount({ linked_account_id: id, name: 'Bench User', udf: { plan: 'pro', seats: 3 } })))
  }
  await setup.close()

  const headers = { 'x-api-key': key.api_key }
  let counter = 0
  const rows = { bare: [], GET: [], GETquiet: [], PUT: [] }
  const record = (name, r) => {
    if (r.non2xx > 0 || r.errors > 0) throw new Error(`${name}: ${r.non2xx} non-2xx answers, ${r.errors} errors`)
    rows[name].push({ rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, cpu: r.cpuPerRequestUs })
  }
  const getRun = (server) => ({
    url: server.url,
    requests: [{ method: 'GET', headers, setupRequest: (req) => ({ ...req, path: `/api/v2/public/linked-account/${encodeURIComponent(ids[(counter++ * 7919) % ACCOUNTS])}` }) }],
  })

  console.log(`bench:http — ${CONNECTIONS} connections, ${SECONDS} s per run, ${ROUNDS} rounds, ${os.cpus().length} CPUs, node ${process.version}, server log level ${env.LINKVAULT_LOG_LEVEL}`)
  for (let round = 1; round <= ROUNDS; round++) {
    const bare = await start(['-e', BARE], process.env)
    try {
      await load(bare, { url: `${bare.url}/bare`, duration: 2 })
      record('bare', await load(bare, { url: `${bare.url}/bare` }))
    } finally {
      await bare.stop()
    }
    const server = await start([BIN, 'serve', '--db', db, '--port', '0'], env)
    try {
      await load(server, { ...getRun(server), duration: 2 })
      record('GET', await load(server, getRun(server)))
      record(
        'PUT',
        await load(server, {
          url: server.url,
          requests: [
            {
              method: 'PUT',
              headers: { ...headers, 'content-type': 'application/json' },
              setupRequest: (req) => ({ ...req, path: '/api/v2/public/linked-account', body: JSON.stringify({ linked_account_id: ids[counter % ACCOUNTS], name: 'Bench User', udf: { plan: 'pro', seats: counter++ } }) }),
            },
          ],
        }),
      )
    } finally {
      await server.stop()
    }
    // The same GET without the per-request access-log line (what logging costs).
    const quiet = await start([BIN, 'serve', '--db', db, '--port', '0'], { ...env, LINKVAULT_LOG_LEVEL: 'warn' })
    try {
      await load(quiet, { ...getRun(quiet), duration: 2 })
      record('GETquiet', await load(quiet, getRun(quiet)))
    } finally {
      await quiet.stop()
    }
    console.log(`round ${round}: bare ${rows.bare.at(-1).rps.toFixed(0)} req/s, GET ${rows.GET.at(-1).rps.toFixed(0)}, GET (warn) ${rows.GETquiet.at(-1).rps.toFixed(0)}, PUT ${rows.PUT.at(-1).rps.toFixed(0)}`)
  }

  // × bare: the median over rounds of (route req/s ÷ bare req/s of the same round).
  const times = (name) => median(rows[name].map((r, i) => r.rps / rows.bare[i].rps))
  console.log('\n| route | req/s (median) | × bare (median of rounds) | p50 ms | p99 ms | server CPU µs/request |')
  console.log('|---|---:|---:|---:|---:|---:|')
  const label = {
    bare: 'bare fastify `GET /bare` (constant JSON, no logging)',
    GET: `\`GET /api/v2/public/linked-account/:id\` (log level ${env.LINKVAULT_LOG_LEVEL})`,
    GETquiet: '`GET /api/v2/public/linked-account/:id` (log level warn: no access line)',
    PUT: `\`PUT /api/v2/public/linked-account\` (log level ${env.LINKVAULT_LOG_LEVEL})`,
  }
  for (const name of ['bare', 'GET', 'GETquiet', 'PUT']) {
    const rps = median(rows[name].map((r) => r.rps))
    console.log(`| ${label[name]} | ${rps.toFixed(0)} | ${times(name).toFixed(2)} | ${median(rows[name].map((r) => r.p50))} | ${median(rows[name].map((r) => r.p99))} | ${median(rows[name].map((r) => r.cpu)).toFixed(0)} |`)
  }
  const ratio = times('GET')
  const quietRatio = times('GETquiet')
  console.log(`\nGET / bare = ${ratio.toFixed(2)} with the access log, ${quietRatio.toFixed(2)} without (target ≥ 0.50)`)
  fs.rmSync(dir, { recursive: true, force: true })
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})

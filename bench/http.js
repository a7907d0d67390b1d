'use strict'
// npm run bench:http — `linkvault serve` under load (autocannon, 64 connections) beside a bare
// fastify route answering a constant JSON: the framework's ceiling on this machine, measured
// in the same run.
//
// Each server runs in its own child process (the load generator needs a core of its own);
// rounds alternate between them and the medians are reported. Rows:
//   bare     GET /bare                                    constant JSON, no store
//   GET      GET /api/v2/public/linked-account/:id        x-api-key, random id of 1,000
//   PUT      PUT /api/v2/public/linked-account            x-api-key, upserts a changing UDF
// Target: GET >= 0.5x bare requests/s. Options: BENCH_SECONDS (default 10 per round),
// BENCH_ROUNDS (default 3), BENCH_CONNECTIONS (default 64), LINKVAULT_LOG_LEVEL for the server
// (default info, as `linkvault serve` runs; logs go to /dev/null).

const { spawn } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const autocannon = require('autocannon')
const { Client } = require('..')

const SECONDS = Number(process.env.BENCH_SECONDS || 10)
const ROUNDS = Number(process.env.BENCH_ROUNDS || 3)
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
      if (m) resolve({ url: m[1], stop: () => new Promise((r) => { child.on('close', r); child.kill('SIGTERM') }) })
    })
    child.on('close', (code) => reject(new Error(`server exited with ${code} before it was ready`)))
  })
}

function load(opts) {
  return new Promise((resolve, reject) => {
    autocannon({ connections: CONNECTIONS, pipelining: 1, duration: SECONDS, ...opts }, (err, result) => (err ? reject(err) : resolve(result)))
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
  const rows = { bare: [], GET: [], PUT: [] }
  const record = (name, r) => {
    if (r.non2xx > 0 || r.errors > 0) throw new Error(`${name}: ${r.non2xx} non-2xx answers, ${r.errors} errors`)
    rows[name].push({ rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99 })
  }

  console.log(`bench:http — ${CONNECTIONS} connections, ${SECONDS} s per run, ${ROUNDS} rounds, ${os.cpus().length} CPUs, node ${process.version}, server log level ${env.LINKVAULT_LOG_LEVEL}`)
  for (let round = 1; round <= ROUNDS; round++) {
    const bare = await start(['-e', BARE], process.env)
    try {
      await load({ url: `${bare.url}/bare`, duration: 2 })
      record('bare', await load({ url: `${bare.url}/bare` }))
    } finally {
      await bare.stop()
    }
    const server = await start([BIN, 'serve', '--db', db, '--port', '0'], env)
    try {
      const get = {
        url: server.url,
        requests: [{ method: 'GET', headers, setupRequest: (req) => ({ ...req, path: `/api/v2/public/linked-account/${encodeURIComponent(ids[(counter++ * 7919) % ACCOUNTS])}` }) }],
      }
      await load({ ...get, duration: 2 })
      record('GET', await load(get))
      record(
        'PUT',
        await load({
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
    console.log(`round ${round}: bare ${rows.bare.at(-1).rps.toFixed(0)} req/s, GET ${rows.GET.at(-1).rps.toFixed(0)} req/s, PUT ${rows.PUT.at(-1).rps.toFixed(0)} req/s`)
  }

  const bareRps = median(rows.bare.map((r) => r.rps))
  console.log('\n| route | req/s (median) | × bare | p50 ms | p99 ms |')
  console.log('|---|---:|---:|---:|---:|')
  const label = { bare: 'bare fastify GET /bare (constant JSON)', GET: 'GET /api/v2/public/linked-account/:id', PUT: 'PUT /api/v2/public/linked-account' }
  for (const name of ['bare', 'GET', 'PUT']) {
    const rps = median(rows[name].map((r) => r.rps))
    console.log(`| ${label[name]} | ${rps.toFixed(0)} | ${(rps / bareRps).toFixed(2)} | ${median(rows[name].map((r) => r.p50))} | ${median(rows[name].map((r) => r.p99))} |`)
  }
  const ratio = median(rows.GET.map((r) => r.rps)) / bareRps
  console.log(`\nGET / bare = ${ratio.toFixed(2)} (target ≥ 0.50: ${ratio >= 0.5 ? 'met' : 'missed'})`)
  fs.rmSync(dir, { recursive: true, force: true })
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})

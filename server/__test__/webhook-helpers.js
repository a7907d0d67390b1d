'use strict'
// Helpers of the webhook suites: a `linkvault serve` child process, a webhook receiver whose
// answers a test decides, and waiting for a condition.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')

const BIN = path.join(__dirname, '..', 'bin.js')

function tempDir(prefix = 'lv-webhooks-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

/**
 * Starts `linkvault serve --db PATH | --url URL --schema NAME --port 0` on the database of
 * Client.open options `where` (storeOptions() of __test__/helpers.js) with fast webhook
 * settings; resolves once it prints its address. `stderr` collects its (JSON) logs.
 */
function startServer(where, env = {}) {
  const { storeArgs } = require('./helpers')
  const child = spawn(process.execPath, [BIN, 'serve', ...storeArgs(where), '--port', '0'], {
    env: {
      ...process.env,
      LINKVAULT_WEBHOOK_RETRY_BASE_MS: '100',
      LINKVAULT_WEBHOOK_TIMEOUT_MS: '1000',
      LINKVAULT_WEBHOOK_POLL_MS: '50',
      LINKVAULT_LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const server = { child, stderr: '', stdout: '', url: null, exited: null }
  child.stderr.on('data', (d) => (server.stderr += d))
  server.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  server.ready = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      server.stdout += d
      const m = /listening on (http:\/\/\S+)/.exec(server.stdout)
      if (m && !server.url) {
        server.url = m[1]
        resolve(server)
      }
    })
    server.exited.then(({ code, signal }) => reject(new Error(`linkvault serve exited (${code ?? signal}) before listening:\n${server.stderr}`)))
  })
  return server
}

/** Stops a server with SIGTERM and waits for it. */
async function stopServer(server) {
  if (!server || server.child.exitCode !== null || server.child.signalCode !== null) return
  server.child.kill('SIGTERM')
  await server.exited
}

/**
 * A webhook receiver. `respond(receipt, receipts)` returns a status code, or `'hang'` to keep
 * the request open. Every request is recorded as `{ body, headers, message_id, data, at }`.
 */
async function startReceiver(respond) {
  const receipts = []
  const sockets = new Set()
  const hung = []
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      let parsed = null
      try {
        parsed = JSON.parse(body)
      } catch {}
      const receipt = { body, headers: req.headers, message_id: parsed && parsed.message_id, data: parsed && parsed.data, at: Date.now(), status: null }
      receipts.push(receipt)
      const status = respond(receipt, receipts)
      if (status === 'hang') {
        hung.push(res)
        return
      }
      receipt.status = status
      res.writeHead(status, { 'content-type': 'text/plain' })
      res.end(status < 300 ? 'ok' : 'nope')
    })
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    receipts,
    hung,
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

/** Polls `check` until it returns a truthy value (returned) or `ms` pass (throws `what`). */
async function waitFor(what, check, ms = 20000) {
  const until = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** Runs a `linkvault` server command in this process; resolves `{ code, stdout, stderr }`. */
async function cli(name, argv) {
  const out = { stdout: '', stderr: '' }
  const io = {
    stdout: { write: (s) => ((out.stdout += s), true) },
    stderr: { write: (s) => ((out.stderr += s), true) },
  }
  const code = await require('../cli')[name].run(argv, io)
  return { code, ...out }
}

module.exports = { BIN, tempDir, startServer, stopServer, startReceiver, waitFor, cli }

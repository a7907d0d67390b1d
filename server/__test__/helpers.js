'use strict'
// Test helpers: a server started as a child process (`node server/bin.js serve`) on a fresh
// database, keys made with `keys create`, a throwaway TLS certificate, and the server's
// captured output (to check that logs never hold a secret).
//
// The database is on the run's store (__test__/helpers.js: a SQLite file, or a schema of the
// test PostgreSQL server): suites pass `store.args` to commands and `store.open` to Client.open.

const { spawn, execFileSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { storeOptions } = require('../../__test__/helpers')

const BIN = path.join(__dirname, '..', 'bin.js')
const made = []
process.on('exit', () => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true })
})

function tmpDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-server-'))
  made.push(dir)
  return dir
}

/** The command-line flags naming the database of Client.open options `{ path }` / `{ url, schema }`. */
function storeArgs(open) {
  return open.path !== undefined ? ['--db', open.path] : ['--url', open.url, '--schema', open.schema]
}

/**
 * A fresh database with its own encryption key in the environment of every command:
 * `{ dir, open, args, env, db? }` where `open` is its Client.open options (`{ path }` or
 * `{ url, schema }`), `args` the matching command-line flags (`--db PATH` or
 * `--url URL --schema NAME`), and `db` the SQLite path (SQLite only).
 */
function newStore() {
  const dir = tmpDir()
  const open = storeOptions({ dir, name: 'vault.db' })
  return { dir, db: open.path, open, args: storeArgs(open), env: { ...process.env, LINKVAULT_ENCRYPTION_KEY: crypto.randomBytes(32).toString('hex') } }
}

/** Runs `node server/bin.js ...args` to completion: { code, stdout, stderr }. */
function run(args, { env = process.env, timeoutMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`linkvault ${args.join(' ')} timed out\n${stderr}`))
    }, timeoutMs)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** `keys create` for org/environment: { api_key, client_id, client_secret }. */
async function createKey(store, org, environment = 'test') {
  const r = await run(['keys', 'create', ...store.args, '--org', org, '--environment', environment], { env: store.env })
  if (r.code !== 0) throw new Error(`keys create failed (${r.code}): ${r.stderr}`)
  const last = r.stdout.trim().split('\n').pop()
  return JSON.parse(last)
}

/**
 * Starts `serve` on a free port and resolves once it printed its ready line. Fails loudly if
 * it exits or stays silent.
 */
function startServer(store, extraArgs = [], { env = store.env, readyMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'serve', ...store.args, '--port', '0', ...extraArgs], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    const out = { stdout: '', stderr: '' }
    let ready = false
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`server did not get ready within ${readyMs} ms\n${out.stderr}`))
    }, readyMs)
    child.stdout.on('data', (d) => {
      out.stdout += d
      const m = /^listening on (https?:\/\/\S+)$/m.exec(out.stdout)
      if (m && !ready) {
        ready = true
        clearTimeout(timer)
        const exited = new Promise((res) => child.on('close', (code, signal) => res({ code, signal })))
        resolve({
          url: m[1],
          port: Number(new URL(m[1]).port),
          child,
          out,
          exited,
          /** SIGTERM and wait: { code, signal }. */
          async stop(signal = 'SIGTERM') {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal)
            return exited
          },
        })
      }
    })
    child.stderr.on('data', (d) => (out.stderr += d))
    child.on('close', (code) => {
      if (!ready) {
        clearTimeout(timer)
        reject(new Error(`server exited with ${code} before it was ready\n${out.stderr}`))
      }
    })
  })
}

/** A self-signed certificate for 127.0.0.1 and localhost: { cert, key } file paths. */
function throwawayCert() {
  const dir = tmpDir()
  const cert = path.join(dir, 'cert.pem')
  const key = path.join(dir, 'key.pem')
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: 'ignore' })
  return { cert, key }
}

/** fetch with a JSON body; resolves { status, body, headers }. */
async function call(url, { method = 'GET', headers = {}, json, body } = {}) {
  const init = { method, headers: { ...headers } }
  if (json !== undefined) {
    init.body = typeof json === 'string' ? json : JSON.stringify(json)
    init.headers['content-type'] = 'application/json'
  } else if (body !== undefined) {
    init.body = body
  }
  const res = await fetch(url, init)
  const text = await res.text()
  let parsed = text
  try {
    parsed = text === '' ? undefined : JSON.parse(text)
  } catch {
    // Not JSON: kept as text (a test asserts JSON where it matters).
  }
  return { status: res.status, body: parsed, text, headers: res.headers }
}

module.exports = { BIN, tmpDir, newStore, storeArgs, run, createKey, startServer, throwawayCert, call }

// Shared test helpers: a fresh temporary directory per test file and a client opener.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')

const { Client } = require('..')

const made = []
process.on('exit', () => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true })
})

/** A new empty directory under the OS temp dir, removed at process exit. */
function tmpDir(prefix = 'linkvault-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  made.push(dir)
  return dir
}

/** A random 32-byte key as 64 hex characters. */
function newKey() {
  return crypto.randomBytes(32).toString('hex')
}

/** The test PostgreSQL server (started by jest's global setup, see pg-global.js). */
function pgUrl() {
  const url = process.env.LINKVAULT_TEST_PG_URL
  if (!url) throw new Error('LINKVAULT_TEST_PG_URL is not set: run the suites with jest (its global setup starts PostgreSQL)')
  return url
}

/** A new schema name, so that each test has a database of its own on the shared server. */
function newSchema() {
  return `t_${crypto.randomBytes(6).toString('hex')}`
}

/**
 * Opens a client with a fixed test key: `store: 'sqlite'` (default) on a new file in `dir` (or
 * the given path), `store: 'postgres'` on a new schema (or the given one) of the test server.
 */
async function openClient(options = {}) {
  const { dir: d, store = 'sqlite', ...rest } = options
  if (store === 'postgres') {
    return Client.open({ orgId: 'org_test', encryptionKey: KEY, poolSize: 4, ...rest, url: pgUrl(), schema: rest.schema ?? newSchema() })
  }
  const dir = d ?? tmpDir()
  const file = options.path ?? path.join(dir, 'test.db')
  return Client.open({ orgId: 'org_test', encryptionKey: KEY, ...rest, path: file })
}

const KEY = newKey()

module.exports = { Client, tmpDir, newKey, openClient, pgUrl, newSchema, KEY }

// Shared test helpers: temporary directories, keys, and the store every suite runs on.
//
// Jest runs the suites in two projects (jest.config.js): `sqlite` and `postgres`. The project's
// setup file (store-sqlite.js / store-postgres.js) sets LINKVAULT_TEST_STORE, and every suite
// opens its databases through `storeOptions()` / `openClient()` here, never by building a
// `path` itself, so one suite runs on either store. Cases that only make sense on SQLite (file
// faults, `:memory:`, the key file, backup, durability, WAL) use `describeSqlite` /
// `testSqlite`, which on PostgreSQL report them as skipped with the reason in their name.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')

const { Client } = require('..')

const made = []
process.on('exit', () => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true })
})

/** The store of this run: 'sqlite' (default) or 'postgres'. */
const STORE = process.env.LINKVAULT_TEST_STORE || 'sqlite'
if (STORE !== 'sqlite' && STORE !== 'postgres') throw new Error(`LINKVAULT_TEST_STORE must be sqlite or postgres, got '${STORE}'`)
const isPostgres = STORE === 'postgres'

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
 * `Client.open` options naming a new, empty database on the run's store: `{ path }` of a new
 * file (in `dir`, or a new directory) on SQLite, `{ url, schema }` of a new schema of the test
 * server on PostgreSQL. Spread it into `openClient` (or `Client.open`) to open several
 * clients, or a child process, on the same database.
 */
function storeOptions({ store = STORE, dir, name = 'test.db' } = {}) {
  if (store === 'postgres') return { url: pgUrl(), schema: newSchema() }
  return { path: path.join(dir ?? tmpDir(), name) }
}

/** What names a database in client options (`path`, or `url` with `schema`). */
function hasDatabase(options) {
  return options.path !== undefined || options.url !== undefined
}

/**
 * Opens a client with the run's test key and orgId 'org_test': on the database that `options`
 * names (`...storeOptions()`), else on a new one (in `dir` on SQLite). `store` overrides the
 * run's store (e.g. `store: 'postgres'` in the PostgreSQL-only suites).
 */
async function openClient(options = {}) {
  const { dir, store = STORE, ...rest } = options
  const where = hasDatabase(rest) ? {} : storeOptions({ store, dir })
  const pool = (where.url ?? rest.url) !== undefined ? { poolSize: 4 } : {}
  return Client.open({ orgId: 'org_test', encryptionKey: KEY, ...pool, ...where, ...rest })
}

function skipped(name, why) {
  return `${name} [SQLite only: ${why}]`
}

/** `describe` on SQLite; on PostgreSQL a skipped block whose name says why. */
function describeSqlite(name, why, fn) {
  if (!why || typeof why !== 'string') throw new Error('describeSqlite(name, why, fn): say why it is SQLite-only')
  return isPostgres ? describe.skip(skipped(name, why), fn) : describe(name, fn)
}

/** `test` on SQLite; on PostgreSQL a skipped test whose name says why. */
function testSqlite(name, why, fn, timeout) {
  if (!why || typeof why !== 'string') throw new Error('testSqlite(name, why, fn): say why it is SQLite-only')
  return isPostgres ? test.skip(skipped(name, why), fn) : test(name, fn, timeout)
}

/**
 * How long another client may take to honour a revocation (or a retired key): at once on
 * SQLite (every client reads the same file), within the documented bound on PostgreSQL
 * (LISTEN/NOTIFY plus an epoch check; docs/postgres.md).
 */
const REVOCATION_LAG_MS = isPostgres ? 1000 : 0

/**
 * Runs the assertion `check` (sync or async) until it passes or `ms` have passed, then throws
 * its last failure. With `ms` 0 it runs once: "at once".
 */
async function seenByOthers(check, ms = REVOCATION_LAG_MS) {
  const until = Date.now() + ms
  for (;;) {
    try {
      return await check()
    } catch (e) {
      if (Date.now() >= until) throw e
      await new Promise((r) => setTimeout(r, 20))
    }
  }
}

const KEY = newKey()

module.exports = {
  Client,
  STORE,
  isPostgres,
  tmpDir,
  newKey,
  openClient,
  storeOptions,
  pgUrl,
  newSchema,
  describeSqlite,
  testSqlite,
  REVOCATION_LAG_MS,
  seenByOthers,
  KEY,
}

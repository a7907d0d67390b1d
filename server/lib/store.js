'use strict'
// Opening the store for the server and its commands.

const { Client } = require('linkvault')

/**
 * Whether Client.open understands `url` (the PostgreSQL store). A build without it ignores the
 * option and would open a SQLite file instead; one with it refuses `url` together with `path`.
 */
async function supportsUrl() {
  try {
    const probe = await Client.open({ path: ':memory:', url: 'postgres://linkvault-probe.invalid/db', encryptionKey: '0'.repeat(64) })
    await probe.close()
    return false
  } catch (e) {
    return e.field === 'url'
  }
}

/**
 * `Client.open({ ...options, ...where })` where `where` is `{ path }` or `{ url }`; a `url`
 * this build cannot open is a VALIDATION_ERROR rather than a silently opened SQLite file.
 */
async function openStore(where, options = {}) {
  if (where.url !== undefined && !(await supportsUrl())) {
    throw Object.assign(new Error('this build of linkvault has no PostgreSQL store: use --db (a SQLite file)'), { code: 'VALIDATION_ERROR', field: 'url' })
  }
  return Client.open({ ...options, ...where })
}

module.exports = { openStore, supportsUrl }

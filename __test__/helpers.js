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

/** Opens a client on a new file in `dir` (or the given path) with a fixed test key. */
async function openClient(options = {}) {
  const dir = options.dir ?? tmpDir()
  const file = options.path ?? path.join(dir, 'test.db')
  const { dir: _d, ...rest } = options
  return Client.open({ orgId: 'org_test', encryptionKey: KEY, ...rest, path: file })
}

const KEY = newKey()

module.exports = { Client, tmpDir, newKey, openClient, KEY }

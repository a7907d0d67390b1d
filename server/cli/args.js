'use strict'
// Shared command-line plumbing: strict parsing with one-line errors (exit code 2), the
// --db/--url store options, and opening a Client from them.

const { parseArgs } = require('node:util')

/** A usage error: printed as one line, exit code 2. */
class UsageError extends Error {}

/** `--db PATH | --url URL [--schema NAME]` of every command that opens a store. */
const STORE_OPTIONS = {
  db: { type: 'string' },
  url: { type: 'string' },
  schema: { type: 'string' },
}

/**
 * Parses argv strictly. Unknown flags, missing values and stray positionals become a
 * UsageError whose message is one line.
 */
function parse(argv, options, { positionals = 0 } = {}) {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' }, ...options }, strict: true, allowPositionals: positionals > 0 })
  } catch (e) {
    throw new UsageError(String(e.message).split('\n')[0])
  }
  if (parsed.positionals.length > positionals) {
    throw new UsageError(`unexpected argument '${parsed.positionals[positionals]}'`)
  }
  return parsed
}

/**
 * `Client.open` options for --db / --url and its --schema (the key comes from
 * LINKVAULT_ENCRYPTION_KEY or <db>.key).
 */
function storeOptions(values) {
  if (values.db !== undefined && values.url !== undefined) throw new UsageError('give either --db or --url, not both')
  if (values.schema !== undefined && values.url === undefined) throw new UsageError('--schema names a PostgreSQL schema: it needs --url')
  // Read here, not only by the core, so that a key set on `process.env` by an embedding program
  // (or a test) counts as well.
  const key = process.env.LINKVAULT_ENCRYPTION_KEY ? { encryptionKey: process.env.LINKVAULT_ENCRYPTION_KEY } : {}
  if (values.url !== undefined) {
    if (!/^postgres(ql)?:\/\//.test(values.url)) throw new UsageError(`--url must be a postgres:// or postgresql:// URL`)
    return { url: values.url, ...(values.schema !== undefined ? { schema: values.schema } : {}), ...key }
  }
  if (values.db === '') throw new UsageError('--db must not be empty')
  return { path: values.db ?? 'linkvault.db', ...key }
}

/**
 * Runs a command body: a UsageError prints `linkvault <cmd>: message` and returns 2; a
 * linkvault error prints its code and message and returns 1.
 */
async function runCommand(name, body, io = process) {
  try {
    return (await body()) ?? 0
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`linkvault ${name}: ${e.message} (see linkvault ${name} --help)\n`)
      return 2
    }
    const code = e && typeof e.code === 'string' ? `${e.code}: ` : ''
    io.stderr.write(`linkvault ${name}: ${code}${e && e.message ? e.message : String(e)}\n`)
    return 1
  }
}

module.exports = { UsageError, STORE_OPTIONS, parse, storeOptions, runCommand }

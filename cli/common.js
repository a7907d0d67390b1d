'use strict'
// What every admin command shares: argument parsing with node:util's parseArgs (strict), the
// options that choose the database and the scope, opening a client with its encryption key,
// and output helpers. Exported as `linkvault/cli` so that other packages' commands (the server's
// `serve`, `keys`, `webhooks`) parse and open the same way.

const fs = require('node:fs')
const path = require('node:path')
const { parseArgs } = require('node:util')

/** A mistake in the command line: one line on stderr, exit code 2. */
class UsageError extends Error {
  constructor(message) {
    super(message)
    this.name = 'UsageError'
    this.exitCode = 2
  }
}

/** A failure that is not a usage error: one line on stderr, exit code 1. */
class CommandError extends Error {
  constructor(message) {
    super(message)
    this.name = 'CommandError'
    this.exitCode = 1
  }
}

/** Where the data is, for every command: a SQLite file (`--db`) or a PostgreSQL schema (`--url`). */
const storeOptions = {
  db: { type: 'string', description: 'PATH', help: 'SQLite database file (default ./linkvault.db)' },
  url: { type: 'string', description: 'URL', help: 'PostgreSQL connection URL (postgres://…) instead of --db; its key: LINKVAULT_ENCRYPTION_KEY or --key-file' },
  schema: { type: 'string', description: 'NAME', help: "with --url: the PostgreSQL schema of linkvault's tables (default linkvault)" },
}

/** Which (organization, environment) the client works in. */
const scopeOptions = {
  org: { type: 'string', description: 'ORG', help: "organization id (default: the file's default organization)" },
  environment: { type: 'string', description: 'ENV', help: "'test' (default) or 'production'" },
}

/** How the encryption key is found when LINKVAULT_ENCRYPTION_KEY is not set. */
const keyOptions = {
  'key-file': { type: 'string', description: 'FILE', help: 'file holding the encryption key (default: LINKVAULT_ENCRYPTION_KEY, else <db>.key if it exists)' },
}

const helpOption = { help: { type: 'boolean', short: 'h', help: 'show this help' } }

/**
 * Parses `argv` strictly against `options` (each `{ type, short?, description?, help }`);
 * `positionals` names the positional arguments expected (`['DEST']`). Unknown flags, missing or
 * extra arguments are UsageErrors. Returns null after printing `usage` when --help is given.
 */
function parse(argv, { options, positionals = [], usage }) {
  const all = { ...options, ...helpOption }
  const config = {}
  for (const [name, o] of Object.entries(all)) config[name] = { type: o.type, ...(o.short && { short: o.short }) }
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: config, allowPositionals: true, strict: true })
  } catch (e) {
    throw new UsageError(e.message.split('\n')[0].replace(/\. To specify a positional argument.*$/, ''))
  }
  if (parsed.values.help) {
    process.stdout.write(usage)
    return null
  }
  const required = positionals.filter((p) => !p.endsWith('?'))
  if (parsed.positionals.length < required.length) {
    throw new UsageError(`missing ${required.slice(parsed.positionals.length).join(' ')}`)
  }
  if (parsed.positionals.length > positionals.length) {
    throw new UsageError(`unexpected argument '${parsed.positionals[positionals.length]}'`)
  }
  return parsed
}

/** The lines of a usage text for `options`. */
function describeOptions(options) {
  const rows = Object.entries({ ...options, ...helpOption }).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : ''}--${name}${o.type === 'string' ? ` ${o.description ?? 'VALUE'}` : ''}`
    return [flag, o.help ?? '']
  })
  const width = Math.max(...rows.map(([f]) => f.length))
  return rows.map(([f, h]) => `  ${f.padEnd(width)}  ${h}`).join('\n')
}

/** A command's usage text. */
function usageText(synopsis, description, options) {
  return `Usage: linkvault ${synopsis}\n\n${description}\n\nOptions:\n${describeOptions(options)}\n`
}

/** The database path of `--db` (default ./linkvault.db); null with `--url` (PostgreSQL). */
function databasePath(values, { mustExist = true } = {}) {
  if (values.db !== undefined && values.url !== undefined) throw new UsageError('give either --db or --url, not both')
  if (values.schema !== undefined && values.url === undefined) throw new UsageError('--schema names a PostgreSQL schema: it needs --url')
  if (values.url !== undefined) {
    if (!/^postgres(ql)?:\/\//.test(values.url)) throw new UsageError('--url must be a postgres:// or postgresql:// URL')
    return null
  }
  const file = path.resolve(values.db ?? 'linkvault.db')
  if (mustExist && !fs.existsSync(file)) throw new CommandError(`no database at ${file} (use --db PATH)`)
  return file
}

/**
 * Where the key of `file` is: LINKVAULT_ENCRYPTION_KEY (`{ env: true }`), else the file of
 * --key-file, else an existing <file>.key (`{ file }`; not for a PostgreSQL store, `file` null);
 * null when there is none.
 */
function keySource(values, file) {
  if (process.env.LINKVAULT_ENCRYPTION_KEY?.trim()) return { env: true }
  const keyFile = values['key-file'] ?? (file !== null && fs.existsSync(`${file}.key`) ? `${file}.key` : undefined)
  return keyFile === undefined ? null : { file: path.resolve(keyFile) }
}

/** The key for `file` (see `keySource`). */
function encryptionKey(values, file) {
  const source = keySource(values, file)
  if (source === null) {
    throw new CommandError(`no encryption key for ${file ?? 'the PostgreSQL store'}: set LINKVAULT_ENCRYPTION_KEY or pass --key-file FILE`)
  }
  if (source.env) return process.env.LINKVAULT_ENCRYPTION_KEY.trim()
  try {
    return fs.readFileSync(source.file, 'utf8').trim()
  } catch (e) {
    throw new CommandError(`cannot read the key file ${source.file}: ${e.code ?? e.message}`)
  }
}

/**
 * Opens a client on `--db` or `--url` (with `--schema`) in the scope of `--org`/`--environment`,
 * with the key from LINKVAULT_ENCRYPTION_KEY, --key-file or <db>.key. A key is never generated
 * here.
 */
async function openClient(values, { mustExist = true } = {}) {
  const { Client } = require('..')
  const environment = values.environment ?? 'test'
  if (environment !== 'test' && environment !== 'production') {
    throw new UsageError(`--environment must be 'test' or 'production', not '${environment}'`)
  }
  const file = databasePath(values, { mustExist })
  if (file === null) {
    return Client.open({
      url: values.url,
      ...(values.schema !== undefined && { schema: values.schema }),
      environment,
      encryptionKey: encryptionKey(values, null),
      ...(values.org !== undefined && { orgId: values.org }),
    })
  }
  // A new test database gets its <db>.key from Client.open, as in code.
  const creating = !mustExist && !fs.existsSync(file) && environment === 'test'
  const key = creating && !process.env.LINKVAULT_ENCRYPTION_KEY?.trim() && values['key-file'] === undefined ? undefined : encryptionKey(values, file)
  return Client.open({
    path: file,
    environment,
    ...(key !== undefined && { encryptionKey: key }),
    ...(values.org !== undefined && { orgId: values.org }),
  })
}

/** Writes one line to stdout. */
function print(line) {
  process.stdout.write(`${line}\n`)
}

/**
 * A progress bar on stderr when it is a terminal (nothing otherwise): `update({ done, total })`,
 * then `end()`.
 */
function progressBar(label) {
  const tty = process.stderr.isTTY
  let drawn = false
  return {
    update({ done, total }) {
      if (!tty) return
      const width = 30
      const ratio = total > 0 ? done / total : 1
      const filled = Math.round(ratio * width)
      process.stderr.write(`\r${label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.floor(ratio * 100)).padStart(3)}% ${done}/${total}`)
      drawn = true
    },
    end() {
      if (drawn) process.stderr.write('\n')
    },
  }
}

module.exports = {
  UsageError,
  CommandError,
  storeOptions,
  scopeOptions,
  keyOptions,
  parse,
  usageText,
  databasePath,
  keySource,
  openClient,
  print,
  progressBar,
}

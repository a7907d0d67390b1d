'use strict'
// The `linkvault` command line: a dispatcher over one module per command. Each module exports
// `{ summary, usage, run(argv) }`: `run` gets the arguments after the command name and returns
// (a promise of) the exit code. A thrown error is printed as one line on stderr; its
// `exitCode` (2 for usage errors, see `UsageError` in ./common) is the exit code, else 1.
// The server's commands come from the workspace package linkvault-server, whose
// `linkvault-server/cli` exports a map of command modules of the same shape.

const pkg = require('../package.json')

const COMMANDS = {
  backup: require('./backup'),
  check: require('./check'),
  'rotate-key': require('./rotate-key'),
  stats: require('./stats'),
  export: require('./export'),
  import: require('./import'),
}

/** Commands that live in linkvault-server, with their summaries for --help when it is absent. */
const SERVER_COMMANDS = {
  serve: 'serve the Cobalt, Auth0 and Fiskil REST APIs over HTTP',
  keys: 'create, list and revoke API keys of the server',
  webhooks: 'manage webhook endpoints and see their deliveries',
}
const SERVER_PACKAGE = 'linkvault-server'

/** linkvault-server's command modules, or null when it is not installed. */
function serverCommands() {
  try {
    return require(`${SERVER_PACKAGE}/cli`)
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes(SERVER_PACKAGE)) return null
    throw e
  }
}

function helpText() {
  const server = serverCommands()
  const rows = [
    ...Object.entries(COMMANDS).map(([name, c]) => [name, c.summary]),
    ...Object.entries(SERVER_COMMANDS).map(([name, summary]) => [
      name,
      server?.[name]?.summary ?? `${summary} (needs ${SERVER_PACKAGE})`,
    ]),
  ]
  const width = Math.max(...rows.map(([n]) => n.length))
  return `Usage: linkvault <command> [options]

linkvault ${pkg.version}: operations on a linkvault database.

Commands:
${rows.map(([n, s]) => `  ${n.padEnd(width)}  ${s}`).join('\n')}

Every command takes --db PATH (default ./linkvault.db), or --url POSTGRES_URL [--schema NAME]
for a PostgreSQL store, and --help. The encryption key comes from LINKVAULT_ENCRYPTION_KEY,
--key-file FILE, or <db>.key when it exists; never from the command line. Errors print one line on stderr and exit non-zero (2 for a usage error).
`
}

/** The module of command `name`; throws a one-line error when it is unknown or not installed. */
function resolve(name) {
  if (Object.hasOwn(COMMANDS, name)) return COMMANDS[name]
  if (Object.hasOwn(SERVER_COMMANDS, name)) {
    const server = serverCommands()
    if (!server) {
      const e = new Error(
        `'${name}' is part of the ${SERVER_PACKAGE} package, which is not installed: npm install ${SERVER_PACKAGE} ` +
          '(in a checkout of linkvault, `npm ci` at the repository root installs it)',
      )
      e.exitCode = 1
      throw e
    }
    if (!server[name]) throw Object.assign(new Error(`${SERVER_PACKAGE} has no '${name}' command`), { exitCode: 1 })
    return server[name]
  }
  throw Object.assign(new Error(`unknown command '${name}' (see linkvault --help)`), { exitCode: 2 })
}

/** Runs the command line `argv` (without node and the script); resolves to the exit code. */
async function main(argv) {
  const [name, ...rest] = argv
  try {
    if (name === undefined) {
      process.stderr.write(helpText())
      return 2
    }
    if (name === '--help' || name === '-h' || name === 'help') {
      if (name === 'help' && rest[0] !== undefined) {
        process.stdout.write(resolve(rest[0]).usage)
        return 0
      }
      process.stdout.write(helpText())
      return 0
    }
    if (name === '--version' || name === '-v') {
      process.stdout.write(`${pkg.version}\n`)
      return 0
    }
    const command = resolve(name)
    const code = await command.run(rest)
    return typeof code === 'number' ? code : 0
  } catch (e) {
    const where = name && !String(name).startsWith('-') ? `linkvault ${name}` : 'linkvault'
    const detail = e && e.code && /^[A-Z_]+$/.test(e.code) ? `${e.code}: ${e.message}` : (e?.message ?? String(e))
    process.stderr.write(`${where}: ${detail.split('\n')[0]}\n`)
    if (e && typeof e.exitCode === 'number') return e.exitCode
    if (e && typeof e.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) return 2
    return 1
  }
}

module.exports = { main, COMMANDS, SERVER_COMMANDS }

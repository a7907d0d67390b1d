'use strict'
const { storeOptions, scopeOptions, keyOptions, parse, usageText, openClient, print, UsageError } = require('./common')

const options = {
  ...storeOptions,
  ...keyOptions,
  ...scopeOptions,
  json: { type: 'boolean', help: 'print the result as JSON' },
}

const summary = 'copy the database to a new file while it is in use (SQLite online backup)'
const usage = usageText(
  'backup DEST [--db PATH] [--json]',
  `Writes a consistent copy of the whole database (every organization and environment) to DEST,
which must not exist, while other processes go on reading and writing. The copy is one
self-contained SQLite file. It holds credentials sealed under the encryption key: store the key
elsewhere than the backups. A PostgreSQL store (--url) is backed up with pg_dump instead.`,
  options,
)

async function run(argv) {
  const args = parse(argv, { options, positionals: ['DEST'], usage })
  if (!args) return 0
  if (args.values.url !== undefined) throw new UsageError('backup copies a SQLite file; back up a PostgreSQL store with pg_dump')
  const client = await openClient(args.values)
  try {
    const result = await client.backup(args.positionals[0])
    if (args.values.json) print(JSON.stringify(result))
    else print(`backup written: ${result.path} (${result.bytes} bytes, ${result.pages} pages, ${result.duration_ms} ms)`)
  } finally {
    await client.close()
  }
  return 0
}

module.exports = { summary, usage, run }

'use strict'
const { storeOptions, scopeOptions, keyOptions, parse, usageText, openClient, print } = require('./common')

const options = {
  ...storeOptions,
  ...keyOptions,
  ...scopeOptions,
  json: { type: 'boolean', help: 'print the report as JSON' },
}

const summary = 'check the database file (integrity, foreign keys, sealed values)'
const usage = usageText(
  'check [--db PATH | --url URL [--schema NAME]] [--json]',
  `Runs checkIntegrity(): SQLite's integrity_check and foreign_key_check, and that every sealed
value is under the file's encryption key. Prints "ok", or one line per problem found and exits
with code 1.`,
  options,
)

async function run(argv) {
  const args = parse(argv, { options, usage })
  if (!args) return 0
  const client = await openClient(args.values)
  let report
  try {
    report = await client.checkIntegrity()
  } finally {
    await client.close()
  }
  if (args.values.json) print(JSON.stringify(report))
  else if (report.details.length === 0) print('ok')
  else for (const line of report.details) print(line)
  return report.ok ? 0 : 1
}

module.exports = { summary, usage, run }

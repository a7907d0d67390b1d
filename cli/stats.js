'use strict'
const { storeOptions, scopeOptions, keyOptions, parse, usageText, openClient, print } = require('./common')

const options = {
  ...storeOptions,
  ...keyOptions,
  ...scopeOptions,
  json: { type: 'boolean', help: 'print the result as JSON' },
}

const summary = 'count accounts, identities, consents, tokens and events; database and WAL size'
const usage = usageText(
  'stats [--db PATH | --url URL [--schema NAME]] [--org ORG] [--environment ENV] [--json]',
  `Runs stats() for one organization and environment: linked accounts, identities, consents
(all and active), live session tokens and events, the database and WAL sizes in bytes and the
write-queue depth.`,
  options,
)

async function run(argv) {
  const args = parse(argv, { options, usage })
  if (!args) return 0
  const client = await openClient(args.values)
  let stats
  try {
    stats = await client.stats()
  } finally {
    await client.close()
  }
  if (args.values.json) print(JSON.stringify(stats))
  else {
    const width = Math.max(...Object.keys(stats).map((k) => k.length))
    for (const [k, v] of Object.entries(stats)) print(`${k.padEnd(width)}  ${v}`)
  }
  return 0
}

module.exports = { summary, usage, run }

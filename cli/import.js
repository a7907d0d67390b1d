'use strict'
const fs = require('node:fs')
const readline = require('node:readline')
const { storeOptions, scopeOptions, keyOptions, parse, usageText, openClient, print, CommandError } = require('./common')

const options = {
  ...storeOptions,
  ...keyOptions,
  ...scopeOptions,
}

const summary = 'read linked accounts from JSON lines (the export format) into one scope'
const usage = usageText(
  'import [FILE] [--db PATH | --url URL [--schema NAME]] [--org ORG] [--environment ENV]',
  `Reads the JSON lines \`linkvault export\` writes, from FILE or stdin ('-' or no FILE), and
upserts each linked account (name, udf, your_app) into the scope of --org/--environment, then
links its identities. Credentials are imported when the line has them; a line without them never
removes credentials an existing account has, and a new account created from such a line gets no
your_app (Cobalt's your_app always carries auth_credentials). Running it twice changes nothing more. The
database is created if it does not exist. Stops at the first failing line, naming it; lines
before it stay imported.`,
  options,
)

/** The upsert payload of an exported account. */
function payload(account, credentials) {
  const p = { linked_account_id: account.account_id }
  if (account.name !== undefined) p.name = account.name
  if (Array.isArray(account.udf) && account.udf.length) {
    p.udf = Object.fromEntries(account.udf.map((u) => [u.key_name, u.key_value]))
  }
  if (credentials) {
    p.your_app = { ...(credentials.app_id !== undefined && { app_id: credentials.app_id }), auth_credentials: credentials.auth_credentials }
  }
  return p
}

function identityInput(i) {
  const out = { provider: i.provider, user_id: i.user_id }
  for (const k of ['connection', 'isSocial', 'email', 'email_verified', 'profileData']) if (i[k] !== undefined) out[k] = i[k]
  return out
}

async function importAccount(client, account, credentials) {
  const p = payload(account, credentials)
  // Without credentials the payload has no your_app (it requires auth_credentials), so the
  // upsert keeps an existing account's credentials.
  const { new_account: created } = await client.upsertLinkedAccount(p)
  for (const identity of account.identities ?? []) await client.linkIdentity(account.account_id, identityInput(identity))
  return { created, identities: (account.identities ?? []).length }
}

async function run(argv) {
  const args = parse(argv, { options, positionals: ['FILE?'], usage })
  if (!args) return 0
  const file = args.positionals[0]
  const input = file === undefined || file === '-' ? process.stdin : fs.createReadStream(file)
  const opened = new Promise((resolve, reject) => {
    if (input === process.stdin) resolve()
    else input.once('open', resolve).once('error', (e) => reject(new CommandError(`cannot read ${file}: ${e.code ?? e.message}`)))
  })
  await opened
  const client = await openClient(args.values, { mustExist: false })
  let lineNo = 0
  let accounts = 0
  let created = 0
  let identities = 0
  try {
    for await (const text of readline.createInterface({ input, crlfDelay: Infinity })) {
      lineNo++
      if (!text.trim()) continue
      let line
      try {
        line = JSON.parse(text)
      } catch {
        throw new CommandError(`line ${lineNo}: not JSON`)
      }
      if (line.type === 'linkvault.export') {
        if (line.version !== 1) throw new CommandError(`line ${lineNo}: export format version ${line.version} is not supported (1 is)`)
        continue
      }
      if (line.type !== 'linked_account' || typeof line.account?.account_id !== 'string') {
        throw new CommandError(`line ${lineNo}: expected a linked_account line`)
      }
      try {
        const r = await importAccount(client, line.account, line.credentials)
        accounts++
        if (r.created) created++
        identities += r.identities
      } catch (e) {
        throw new CommandError(`line ${lineNo} (${line.account.account_id}): ${e.code ? `${e.code}: ` : ''}${e.message}`)
      }
    }
  } finally {
    await client.close()
  }
  print(`imported ${accounts} linked accounts (${created} new) and ${identities} identities into ${client.orgId}/${client.environment}`)
  return 0
}

module.exports = { summary, usage, run }

'use strict'
const fs = require('node:fs')
const { once } = require('node:events')
const { storeOptions, scopeOptions, keyOptions, parse, usageText, openClient } = require('./common')

const options = {
  ...storeOptions,
  ...keyOptions,
  ...scopeOptions,
  out: { type: 'string', description: 'FILE', help: 'write to FILE (created with mode 0600) instead of stdout' },
  'with-credentials': { type: 'boolean', help: "include each account's decrypted your_app credentials" },
}

const summary = 'write the linked accounts of one scope as JSON lines'
const usage = usageText(
  'export [--db PATH | --url URL [--schema NAME]] [--org ORG] [--environment ENV] [--with-credentials] [--out FILE]',
  `Writes one JSON object per line: first a header
  {"type":"linkvault.export","version":1,"org_id":…,"environment":…,"exported_at":…}
then one line per linked account, in creation order:
  {"type":"linked_account","account":{…as getLinkedAccountById returns it, identities included…}}
Credentials are left out unless --with-credentials is given; then each line also has
"credentials":{"app_id","auth_credentials"} in clear text: protect the output. \`linkvault import\`
reads this format.`,
  options,
)

async function write(stream, line) {
  if (!stream.write(`${line}\n`)) await once(stream, 'drain')
}

async function run(argv) {
  const args = parse(argv, { options, usage })
  if (!args) return 0
  const { values } = args
  const client = await openClient(values)
  const out = values.out !== undefined ? fs.createWriteStream(values.out, { flags: 'wx', mode: 0o600 }) : process.stdout
  try {
    await write(out, JSON.stringify({ type: 'linkvault.export', version: 1, org_id: client.orgId, environment: client.environment, exported_at: new Date().toISOString() }))
    let after
    do {
      const page = await client.listLinkedAccounts({ limit: 1000, ...(after && { after }) })
      for (const account of page.docs) {
        const line = { type: 'linked_account', account }
        if (values['with-credentials']) {
          const credentials = await client.getLinkedAccountCredentials(account.account_id)
          if (credentials) line.credentials = credentials
        }
        await write(out, JSON.stringify(line))
      }
      after = page.next
    } while (after)
  } finally {
    await client.close()
    if (out !== process.stdout) {
      out.end()
      await once(out, 'close')
    }
  }
  return 0
}

module.exports = { summary, usage, run }

// Quickstart: open a client on an embedded SQLite file, upsert the documented example linked
// account, read it back, list accounts, and read its credentials.
//   npm run quickstart
const path = require('node:path')
const { Client } = require('linkvault')

async function main() {
  const file = process.argv[2] ?? path.join(__dirname, 'quickstart.db')
  // No encryptionKey given: linkvault uses LINKVAULT_ENCRYPTION_KEY, else creates `<file>.key` (0600).
  const client = await Client.open({ path: file, orgId: 'org_quickstart', environment: 'test' })
  try {
    // The example from Cobalt's docs (seed 000): `your_app` with credentials and no app_id.
    const account = await client.upsertLinkedAccount({
      linked_account_id: 'jane@example.com',
      name: 'Jane Doe',
      udf: { company: 'Acme', plan: 'pro' },
      your_app: { auth_credentials: { Authorization: 'Bearer your-api-key-for-jane' } },
    })
    console.log('upserted (new_account=%s, __v=%d):', account.new_account, account.__v)
    console.log(JSON.stringify(account, null, 2))

    const again = await client.getLinkedAccountById('jane@example.com')
    console.log('read back:', again.account_id, again.name, again.udf.map((u) => `${u.key_name}=${u.key_value}`).join(', '))

    const page = await client.getAllLinkedAccounts({ page: 1, limit: 10 })
    console.log('accounts: %d in total, page %d of %d:', page.totalDocs, page.page, page.totalPages)
    for (const doc of page.docs) console.log(' -', doc.account_id, doc.name ?? '')

    const creds = await client.getLinkedAccountCredentials('jane@example.com')
    console.log('credential headers stored (values sealed at rest):', Object.keys(creds.auth_credentials).join(', '))

    const missing = await client.getLinkedAccountById('nobody@example.com').catch((e) => e)
    console.log('unknown id rejects with code=%s status=%d', missing.code, missing.status)
  } finally {
    await client.close()
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

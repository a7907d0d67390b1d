// Link and merge throughput. Build the release addon first (`npm run build`), then:
//   node bench/identities.js [N]
// Prints ops/s for linkIdentity, linkAccounts and unlinkIdentity, each with all calls in flight
// at once (group commit) and one at a time (await each), plus list-page latency with identities.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')

const { Client } = require('..')

const N = Number(process.argv[2] || 2000)

async function timed(label, n, fn) {
  const t = process.hrtime.bigint()
  await fn()
  const s = Number(process.hrtime.bigint() - t) / 1e9
  console.log(`${label.padEnd(52)} ${String(Math.round(n / s)).padStart(7)} ops/s  (${n} in ${s.toFixed(2)} s)`)
}

async function inChunks(items, size, fn) {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn))
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linkvault-bench-'))
  const client = await Client.open({
    path: path.join(dir, 'bench.db'),
    orgId: 'bench',
    encryptionKey: crypto.randomBytes(32).toString('hex'),
  })
  try {
    const ids = (p, n) => Array.from({ length: n }, (_, i) => `${p}${i}`)
    const A = ids('a', N)
    const B = ids('b', N)
    await inChunks([...A, ...B], 1000, (id) =>
      client.upsertLinkedAccount({
        linked_account_id: id,
        name: id,
        udf: { plan: 'pro', [`only_${id[0]}`]: 1 },
        your_app: { app_id: 'app', auth_credentials: { Authorization: `Bearer ${id}` } },
      }),
    )

    const pages = 200
    const listPages = (label) =>
      timed(label, pages, async () => {
        for (let p = 0; p < pages; p++) await client.getAllLinkedAccounts({ page: (p % 10) + 1, limit: 100 })
      })
    await listPages('getAllLinkedAccounts limit 100, no identities yet')

    await timed('linkIdentity, concurrent (chunks of 1000)', N, () =>
      inChunks(A, 1000, (id) =>
        client.linkIdentity(id, { provider: 'github', user_id: id, email: `${id}@x.io`, email_verified: true }),
      ),
    )
    await timed('linkIdentity, sequential', N, async () => {
      for (const id of B) await client.linkIdentity(id, { provider: 'google-oauth2', user_id: id, email: `${id}@y.io` })
    })
    await timed('linkIdentity, relink unchanged (no change), concurrent', N, () =>
      inChunks(A, 1000, (id) => client.linkIdentity(id, { provider: 'github', user_id: id })),
    )
    await inChunks(B, 1000, (id) => client.linkIdentity(id, { provider: 'auth0', user_id: id }))

    const half = Math.floor(N / 2)
    await timed('linkAccounts (2 identities, udf, creds), concurrent', half, () =>
      inChunks(A.slice(0, half), 500, (id) => client.linkAccounts(id, B[Number(id.slice(1))])),
    )
    await timed('linkAccounts, sequential', N - half, async () => {
      for (let i = half; i < N; i++) await client.linkAccounts(A[i], B[i])
    })

    await timed('unlinkIdentity (restores the secondary), concurrent', half, () =>
      inChunks(A.slice(0, half), 500, (id) => client.unlinkIdentity(id, 'google-oauth2', `b${id.slice(1)}`)),
    )
    await timed('unlinkIdentity, sequential', N - half, async () => {
      for (let i = half; i < N; i++) await client.unlinkIdentity(A[i], 'google-oauth2', B[i])
    })

    await listPages('getAllLinkedAccounts limit 100, 1-2 identities each')
    await timed('getLinkedAccountsByEmail', 1000, async () => {
      for (let i = 0; i < 1000; i++) await client.getLinkedAccountsByEmail(`A${i % N}@X.io`)
    })
  } finally {
    await client.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

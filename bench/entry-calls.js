// K calls of verifySessionToken(Sync) through the raw binding or index.js, after a warm-up, for
// counting instructions with callgrind (deterministic on a busy machine; see bench/README.md):
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null node bench/entry-calls.js native async 5000
// argv: native|index sync|async K
const path = require('node:path')

const [side, kind, K] = [process.argv[2], process.argv[3], Number(process.argv[4])]
const { Client } = require(path.join(__dirname, '..', side === 'native' ? 'binding.js' : 'index.js'))

async function main() {
  const c = await Client.open({ path: ':memory:', encryptionKey: 'a'.repeat(64) })
  await c.upsertLinkedAccount({ linked_account_id: 'u1' })
  const { token } = await c.getTokenForLinkedAccount({ linked_account_id: 'u1' })
  // The same warm-up on both sides, so that both run optimized code.
  for (let i = 0; i < 20000 + K; i++) kind === 'sync' ? c.verifySessionTokenSync(token) : await c.verifySessionToken(token)
  await c.close()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

'use strict'
const fs = require('node:fs')
const { storeOptions, scopeOptions, keyOptions, parse, usageText, databasePath, keySource, openClient, print, progressBar, CommandError } = require('./common')

const options = {
  ...storeOptions,
  ...keyOptions,
  'new-key-file': { type: 'string', description: 'FILE', help: 'file holding the new key (default: LINKVAULT_NEW_ENCRYPTION_KEY)' },
  ...scopeOptions,
  json: { type: 'boolean', help: 'print the result as JSON' },
}

const summary = 're-encrypt every stored secret under a new encryption key, online'
const usage = usageText(
  'rotate-key [--db PATH | --url URL [--schema NAME]] [--new-key-file FILE] [--json]',
  `Runs rotateEncryptionKey(newKey) with a progress bar on stderr (when it is a terminal). The
current key comes from LINKVAULT_ENCRYPTION_KEY, --key-file or <db>.key (with --url: the first two); the new one (32 bytes as
64 hex characters or base64) from LINKVAULT_NEW_ENCRYPTION_KEY or --new-key-file, never from the
command line. Other processes keep working meanwhile, and a client holding either key reads
everything until the rotation ends; an interrupted rotation resumes when run again with the same
new key. A key read from a file (--key-file, <db>.key) is replaced in that file when the rotation
ends; until then the new key waits beside it in <file>.next. A key from LINKVAULT_ENCRYPTION_KEY
must be changed there by you before your processes next open the database.`,
  options,
)

function newKey(values) {
  if (values['new-key-file'] !== undefined) {
    try {
      return fs.readFileSync(values['new-key-file'], 'utf8').trim()
    } catch (e) {
      throw new CommandError(`cannot read the key file ${values['new-key-file']}: ${e.code ?? e.message}`)
    }
  }
  const key = process.env.LINKVAULT_NEW_ENCRYPTION_KEY?.trim()
  if (!key) throw new CommandError('no new key: set LINKVAULT_NEW_ENCRYPTION_KEY or pass --new-key-file FILE')
  return key
}

/** Writes `text` to `file` with mode 0600, durably, replacing it atomically. */
function writeKeyFile(file, text) {
  const tmp = `${file}.tmp-${process.pid}`
  fs.writeFileSync(tmp, `${text}\n`, { mode: 0o600 })
  const fd = fs.openSync(tmp, 'r')
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  fs.renameSync(tmp, file)
}

async function run(argv) {
  const args = parse(argv, { options, usage })
  if (!args) return 0
  const key = newKey(args.values)
  const source = keySource(args.values, databasePath(args.values))
  const client = await openClient(args.values)
  // The new key is kept before the rotation starts, so that whatever happens it is not lost.
  const next = source?.file && `${source.file}.next`
  if (next) writeKeyFile(next, key)
  const bar = progressBar('re-encrypting')
  let result
  try {
    result = await client.rotateEncryptionKey(key, { onProgress: (p) => bar.update(p) })
  } finally {
    bar.end()
    await client.close()
  }
  if (next) fs.renameSync(next, source.file)
  if (args.values.json) print(JSON.stringify(result))
  else {
    print(
      `${result.resumed ? 'resumed and finished' : 'finished'}: ${result.resealed} sealed values re-encrypted in ${result.batches} batches; new key id ${result.key_id}`,
    )
    if (source?.env) print('LINKVAULT_ENCRYPTION_KEY still holds the old key: set it to the new one before the next open')
  }
  return 0
}

module.exports = { summary, usage, run }

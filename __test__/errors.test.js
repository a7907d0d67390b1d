// LinkvaultError: every throw and rejection of the package is one, in Jest's own vm realm too
// (the native addon lives in Node's main realm), with `code`, `status`, `field`, and a stack that
// shows the caller.
const fs = require('node:fs')
const path = require('node:path')
const { Client, LinkvaultError, signWebhook, verifyWebhook } = require('..')
const { openClient, storeOptions, isPostgres, KEY } = require('./helpers')

let client
beforeAll(async () => {
  client = await openClient({ orgId: 'org_e' })
})
afterAll(() => client.close())

/** The rejection or throw of `f()`. */
async function failure(f) {
  try {
    await f()
  } catch (e) {
    return e
  }
  throw new Error('expected a failure')
}

test('a rejection is a LinkvaultError and an Error of this realm, with code, status and field', async () => {
  const e = await failure(() => client.getLinkedAccountById('nobody'))
  expect(e).toBeInstanceOf(LinkvaultError)
  expect(e).toBeInstanceOf(Error)
  expect(e).toMatchObject({ name: 'LinkvaultError', code: 'NOT_FOUND', status: 404 })
  expect(e.field).toBeUndefined()
  expect(Object.prototype.toString.call(e)).toBe('[object Error]')

  const v = await failure(() => client.upsertLinkedAccount({ linked_account_id: '' }))
  expect(v).toBeInstanceOf(LinkvaultError)
  expect(v).toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field: 'linked_account_id' })
})

test("a rejection's stack shows the frame that awaited the call", async () => {
  async function lookUpTheMissingAccount() {
    return await client.getLinkedAccountById('nobody')
  }
  const e = await failure(lookUpTheMissingAccount)
  expect(e.stack).toMatch(/^LinkvaultError: /)
  // (Jest's source-map support prints async frames without the `async` keyword.)
  expect(e.stack).toMatch(/at (async )?lookUpTheMissingAccount \(.*errors\.test\.js:\d+:\d+\)/)
  // The binding's own frames are left out.
  expect(e.stack).not.toContain(path.join(__dirname, '..', 'lib'))

  async function openBadly() {
    await Client.open({ path: 42 })
  }
  const o = await failure(openBadly)
  expect(o).toBeInstanceOf(LinkvaultError)
  expect(o).toMatchObject({ code: 'VALIDATION_ERROR', field: 'path' })
  expect(o.stack).toMatch(/at (async )?openBadly \(.*errors\.test\.js/)
})

test('in plain Node the stack names the awaiting functions (V8 async stack traces)', () => {
  const script = `
    const { Client } = require(${JSON.stringify(path.join(__dirname, '..'))})
    async function findAccount(c) { return await c.getLinkedAccountById('nobody') }
    async function handleRequest(c) { return await findAccount(c) }
    Client.open({ path: ':memory:', encryptionKey: '${KEY}' }).then(async (c) => {
      try { await handleRequest(c) } catch (e) { console.log(e.stack) } finally { await c.close() }
    })`
  const out = require('node:child_process').execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })
  const lines = out.trim().split('\n')
  expect(lines[0]).toMatch(/^LinkvaultError: Linked Account with account id nobody/)
  expect(lines[1]).toMatch(/^ {4}at async findAccount \(\[eval\]:3:/)
  expect(lines[2]).toMatch(/^ {4}at async handleRequest \(\[eval\]:4:/)
})

test('synchronous throws are LinkvaultErrors whose stack starts at the caller', () => {
  function verifyGarbage() {
    return client.verifySessionTokenSync('garbage')
  }
  let e
  try {
    verifyGarbage()
  } catch (err) {
    e = err
  }
  expect(e).toBeInstanceOf(LinkvaultError)
  expect(e).toMatchObject({ code: 'INVALID_TOKEN', status: 401 })
  // The first frame is the call in verifyGarbage (Jest's source maps name it after the callee).
  expect(e.stack.split('\n')[1]).toMatch(/errors\.test\.js:\d+:\d+\)$/)
  expect(e.stack).not.toContain(path.join(__dirname, '..', 'index.js'))
  expect(e.stack).not.toContain(path.join(__dirname, '..', 'lib'))

  expect(() => signWebhook('body', '')).toThrow(LinkvaultError)
  expect(() => verifyWebhook('body', 't=1,v1=00', 'secret', -1)).toThrow(LinkvaultError)
  expect(() => client.onEvent('not a function')).toThrow(expect.objectContaining({ code: 'VALIDATION_ERROR', field: 'callback' }))
})

test('new Client() throws a LinkvaultError pointing at Client.open', () => {
  expect(() => new Client()).toThrow(LinkvaultError)
  expect(() => new Client()).toThrow(/Client\.open/)
})

test('misuse seen by V8 (a method called on something else) is a VALIDATION_ERROR too', () => {
  const e = (() => {
    try {
      Client.prototype.verifySessionTokenSync.call({}, 'x')
    } catch (err) {
      return err
    }
  })()
  expect(e).toBeInstanceOf(LinkvaultError)
  expect(e.code).toBe('VALIDATION_ERROR')
  expect(e.cause.message).toMatch(/Illegal invocation/)
})

test('a closed client rejects with CLIENT_CLOSED as a LinkvaultError', async () => {
  const c = await openClient()
  await c.close()
  const e = await failure(() => c.stats())
  expect(e).toBeInstanceOf(LinkvaultError)
  expect(e.code).toBe('CLIENT_CLOSED')
})

test('clients are instances of Client and close with await using (Symbol.asyncDispose)', async () => {
  expect(typeof Symbol.asyncDispose).toBe('symbol')
  const c = await openClient()
  expect(c).toBeInstanceOf(Client)
  expect(typeof c[Symbol.asyncDispose]).toBe('function')
  await c[Symbol.asyncDispose]()
  await expect(c.getLinkedAccountById('x')).rejects.toMatchObject({ code: 'CLIENT_CLOSED' })
  await c[Symbol.asyncDispose]() // harmless twice, as close()
})

test('`await using` closes the client at the end of the block (TypeScript 5.2+ emits it)', async () => {
  // Node 20 does not parse `await using`; this is what TypeScript compiles it to, in short.
  const db = storeOptions()
  let used
  {
    const c = await openClient(db)
    try {
      used = c
      await c.upsertLinkedAccount({ linked_account_id: 'u' })
    } finally {
      await c[Symbol.asyncDispose]()
    }
  }
  await expect(used.getLinkedAccountById('u')).rejects.toMatchObject({ code: 'CLIENT_CLOSED' })
  // SQLite: closed, the WAL was folded in and removed.
  if (!isPostgres) expect(fs.existsSync(`${db.path}-wal`)).toBe(false)
})

test('LinkvaultError can be constructed (for tests and mocks)', () => {
  const e = new LinkvaultError('gone', { code: 'NOT_FOUND', status: 404 })
  expect(e).toBeInstanceOf(Error)
  expect(e).toMatchObject({ message: 'gone', code: 'NOT_FOUND', status: 404, name: 'LinkvaultError' })
})

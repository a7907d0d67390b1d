const path = require('node:path')
const { execFile, execFileSync } = require('node:child_process')
const { promisify } = require('node:util')
const { openClient, storeOptions, isPostgres, KEY } = require('./helpers')

const run = promisify(execFile)
const WRITER = path.join(__dirname, 'fixtures', 'writer.js')

test('500 concurrent upserts on one id from one client: __v = 499, no error, no lost UDF', async () => {
  const client = await openClient()
  const results = await Promise.all(
    Array.from({ length: 500 }, (_, i) => client.upsertLinkedAccount({ linked_account_id: 'hot', udf: { value: i } })),
  )
  expect(results.filter((r) => r.new_account)).toHaveLength(1)
  const final = await client.getLinkedAccountById('hot')
  expect(final.__v).toBe(499)
  // Each call saw the one committed before it: every __v once. On SQLite (one writer) calls also
  // commit in the order they were made; a PostgreSQL pool commits them in any order.
  const versions = results.map((r) => r.__v)
  if (isPostgres) versions.sort((x, y) => x - y)
  expect(versions).toEqual(Array.from({ length: 500 }, (_, i) => i))
  // The stored value is the last committed call's.
  const last = results.findIndex((r) => r.__v === 499)
  expect(final.udf.map((u) => [u.key_name, u.key_value])).toEqual([['value', last]])
  if (!isPostgres) expect(last).toBe(499)
  await client.close()
}, 60000)

test('two clients and two processes on one database never lose an update', async () => {
  const db = storeOptions()
  const a = await openClient({ ...db, orgId: 'org_mp' })
  const b = await openClient({ ...db, orgId: 'org_mp' })
  const per = 150
  const where = JSON.stringify(db)
  const children = [run(process.execPath, [WRITER, where, KEY, 'p1', String(per)]), run(process.execPath, [WRITER, where, KEY, 'p2', String(per)])]
  const local = []
  for (let i = 0; i < per; i++) {
    local.push(a.upsertLinkedAccount({ linked_account_id: 'shared', udf: { a: i } }))
    local.push(b.upsertLinkedAccount({ linked_account_id: 'shared', udf: { b: i } }))
  }
  const done = await Promise.all(local)
  const outs = await Promise.all(children)
  for (const o of outs) expect(JSON.parse(o.stdout)).toEqual({ ok: per, failed: 0 })
  const final = await a.getLinkedAccountById('shared')
  expect(final.__v).toBe(4 * per - 1)
  const values = Object.fromEntries(final.udf.map((u) => [u.key_name, u.key_value]))
  if (isPostgres) {
    // A pool commits one client's calls in any order: each key holds the value of its writer's
    // last committed call (the highest __v among them, for the two local clients).
    const writes = { a: done.filter((_, j) => j % 2 === 0), b: done.filter((_, j) => j % 2 === 1) }
    for (const key of ['a', 'b']) {
      const last = writes[key].reduce((x, y) => (y.__v > x.__v ? y : x))
      expect(values[key]).toBe(last.udf.find((u) => u.key_name === key).key_value)
    }
    for (const key of ['p1', 'p2']) expect(values[key]).toBeGreaterThanOrEqual(0)
    expect(Object.keys(values).sort()).toEqual(['a', 'b', 'p1', 'p2'])
  } else {
    expect(values).toEqual({ a: per - 1, b: per - 1, p1: per - 1, p2: per - 1 })
  }
  await Promise.all([a.close(), b.close()])
}, 120000)

test('a process that never closes its client exits by itself', () => {
  const start = Date.now()
  const out = execFileSync(process.execPath, [WRITER, JSON.stringify(storeOptions()), KEY, 'x', '50', 'noClose'], { timeout: 20000 })
  expect(JSON.parse(out)).toEqual({ ok: 50, failed: 0 })
  expect(Date.now() - start).toBeLessThan(20000)
})

test('require and ESM import both work', () => {
  const out = execFileSync(process.execPath, [path.join(__dirname, 'fixtures', 'esm.mjs')], { cwd: path.join(__dirname, '..') })
  expect(JSON.parse(out)).toEqual({ id: 'esm', sameClass: true })
  expect(typeof require('linkvault').Client.open).toBe('function')
})

test('calls return promises at once and resolve later (work is off the event loop)', async () => {
  const client = await openClient()
  const { inspect, types } = require('node:util')
  const p = client.upsertLinkedAccount({ linked_account_id: 'async' })
  expect(types.isPromise(p)).toBe(true)
  // Still pending when the call returns: the write was handed to the storage thread, not done
  // on this one. (A count of timer ticks during the batch proved the same until a loaded machine
  // finished all 2,000 writes while this thread was still queueing them: then they all settle
  // in one turn of the loop, which is no sign of blocking.)
  expect(inspect(p)).toContain('<pending>')
  const many = Array.from({ length: 2000 }, (_, i) => client.upsertLinkedAccount({ linked_account_id: `a${i % 50}`, udf: { i } }))
  expect(many.every((q) => inspect(q).includes('<pending>'))).toBe(true)
  await Promise.all([p, ...many])
  expect((await client.getLinkedAccountById('a0')).__v).toBe(39)
  await client.close()
})

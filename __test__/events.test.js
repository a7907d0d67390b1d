// The event log: listEvents, onEvent, pruneEvents, and the webhook helpers.
const path = require('node:path')
const crypto = require('node:crypto')
const { spawn, spawnSync } = require('node:child_process')

const { openClient, storeOptions, isPostgres, KEY } = require('./helpers')
const { signWebhook, verifyWebhook } = require('..')

const URIS = { redirect_uri: 'https://app.example/ok', cancel_uri: 'https://app.example/no' }
const GRANT = { institution_id: 'bank', account_ids: ['a1'], permissions: ['accounts'], duration_seconds: 3600 }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Polls until `check()` is truthy (bounded, not a timing assertion). */
async function until(check, what) {
  for (let i = 0; i < 2000; i++) {
    if (check()) return
    await sleep(5)
  }
  throw new Error(`gave up waiting for ${what}`)
}

/** Every event after `after`, paging with `limit`. */
async function readAll(client, { after = 0, limit = 1000, ...filter } = {}) {
  const out = []
  for (;;) {
    const page = await client.listEvents({ ...filter, after, limit })
    out.push(...page.events)
    if (page.events.length) after = page.events[page.events.length - 1].id
    if (page.next === null) return out
    expect(page.next).toBe(after)
  }
}

function runChild(script, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', script), ...args], {
      env: { ...process.env, LINKVAULT_ENCRYPTION_KEY: KEY },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('error', reject)
    child.on('exit', (code, signal) => resolve({ code, signal, out, err }))
  })
}

describe('listEvents', () => {
  let client
  let db
  beforeAll(async () => {
    db = storeOptions()
    client = await openClient(db)
  })
  afterAll(() => client.close())

  test('events come in commit order with strictly increasing ids and the documented shape', async () => {
    const start = (await readAll(client)).length
    await client.upsertLinkedAccount({ linked_account_id: 'order-1' })
    await client.upsertLinkedAccount({ linked_account_id: 'order-1', name: 'Renamed' })
    const s = await client.createAuthSession({ linked_account_id: 'order-1', ...URIS })
    const c = await client.completeAuthSession(s.session_id, GRANT)
    await client.revokeConsent(c.arrangement_id)
    await client.deleteLinkedAccount('order-1')
    const all = await readAll(client)
    const evs = all.slice(start)
    expect(evs.map((e) => e.type)).toEqual([
      'linked_account.created',
      'linked_account.updated',
      'auth_session.created',
      'auth_session.completed',
      'consent.received',
      'consent.revoked',
      'linked_account.deleted',
    ])
    for (let i = 1; i < all.length; i++) expect(all[i].id).toBeGreaterThan(all[i - 1].id)
    for (const e of evs) {
      expect(Object.keys(e).sort()).toEqual(['created_at', 'data', 'id', 'linked_account_id', 'type'])
      expect(Number.isInteger(e.id)).toBe(true)
      expect(e.linked_account_id).toBe('order-1')
      expect(typeof e.data).toBe('object')
      expect(e.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    }
    // The session id (a bearer secret) is never in the log.
    expect(JSON.stringify(evs)).not.toContain(s.session_id)
    expect(evs[2].data.id).toBe(s.id)
    expect(evs[4].data).toMatchObject({ consent_id: c.arrangement_id, end_user_id: 'order-1', account_ids: ['a1'] })
  })

  test('pages with limit/next, filters by types and linked_account_id', async () => {
    for (let i = 0; i < 5; i++) await client.upsertLinkedAccount({ linked_account_id: `page-${i}` })
    await client.upsertLinkedAccount({ linked_account_id: 'page-0', name: 'x' })
    const all = await readAll(client)
    const paged = await readAll(client, { limit: 2 })
    expect(paged.map((e) => e.id)).toEqual(all.map((e) => e.id))
    const first = await client.listEvents({ limit: 2 })
    expect(first.events).toHaveLength(2)
    expect(first.next).toBe(first.events[1].id)
    const last = await client.listEvents({ after: all[all.length - 2].id })
    expect(last.events).toHaveLength(1)
    expect(last.next).toBeNull()
    expect(await client.listEvents({ after: all[all.length - 1].id })).toEqual({ events: [], next: null })
    // `after` as a numeric string is accepted too.
    expect((await client.listEvents({ after: String(all[all.length - 2].id) })).events).toHaveLength(1)

    const mine = await readAll(client, { linked_account_id: 'page-0' })
    expect(mine.map((e) => e.type)).toEqual(['linked_account.created', 'linked_account.updated'])
    expect((await readAll(client, { end_user_id: 'page-0' })).length).toBe(2)
    const updates = await readAll(client, { types: ['linked_account.updated'] })
    expect(updates.length).toBeGreaterThan(0)
    expect(new Set(updates.map((e) => e.type))).toEqual(new Set(['linked_account.updated']))
    const two = await readAll(client, { types: ['linked_account.updated', 'linked_account.deleted'], limit: 1 })
    expect(two.map((e) => e.id)).toEqual(
      all.filter((e) => ['linked_account.updated', 'linked_account.deleted'].includes(e.type)).map((e) => e.id),
    )
    expect((await client.listEvents({ types: 'linked_account.updated' })).events).toEqual(updates.slice(0, 100))
  })

  test('invalid queries are VALIDATION_ERRORs naming the field', async () => {
    for (const [q, field] of [
      [{ limit: 0 }, 'limit'],
      [{ limit: 1001 }, 'limit'],
      [{ after: -1 }, 'after'],
      [{ after: 'abc' }, 'after'],
      [{ after: 1.5 }, 'after'],
      [{ types: [1] }, 'types'],
      [{ types: [''] }, 'types'],
      [{ linked_account_id: 5 }, 'linked_account_id'],
    ]) {
      await expect(client.listEvents(q)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
    }
    await expect(client.listEvents('x')).rejects.toMatchObject({ code: 'VALIDATION_ERROR' })
  })

  test('resumes across close/reopen: nothing lost or repeated, ids keep increasing', async () => {
    const seen = await readAll(client)
    const cursor = seen[seen.length - 1].id
    await client.upsertLinkedAccount({ linked_account_id: 'reopen-1' })
    await client.close()
    await expect(client.listEvents()).rejects.toMatchObject({ code: 'CLIENT_CLOSED' })
    client = await openClient(db)
    await client.upsertLinkedAccount({ linked_account_id: 'reopen-2' })
    const resumed = await readAll(client, { after: cursor })
    expect(resumed.map((e) => e.linked_account_id)).toEqual(['reopen-1', 'reopen-2'])
    expect(resumed[0].id).toBeGreaterThan(cursor)
    expect(resumed[1].id).toBeGreaterThan(resumed[0].id)
  })

  test('across two processes: a consumer sees every event once, in id order', async () => {
    const before = await readAll(client)
    const cursor = before[before.length - 1].id
    const child = runChild('write-accounts.js', [JSON.stringify(db), 'child-', '40'])
    // Meanwhile this process writes too and a consumer tails the log with small pages.
    const consumed = []
    let after = cursor
    for (let i = 0; i < 40; i++) {
      await client.upsertLinkedAccount({ linked_account_id: `parent-${i}` })
      const page = await client.listEvents({ after, limit: 7 })
      consumed.push(...page.events)
      if (page.events.length) after = page.events[page.events.length - 1].id
    }
    const result = await child
    expect(result.err).toBe('')
    expect(result.code).toBe(0)
    consumed.push(...(await readAll(client, { after, limit: 7 })))
    const ids = consumed.map((e) => e.id)
    for (let i = 1; i < ids.length; i++) expect(ids[i]).toBeGreaterThan(ids[i - 1])
    const names = consumed.map((e) => e.linked_account_id)
    for (let i = 0; i < 40; i++) {
      expect(names.filter((n) => n === `child-${i}`)).toHaveLength(1)
      expect(names.filter((n) => n === `parent-${i}`)).toHaveLength(1)
    }
    expect(consumed).toHaveLength(80)
    // The same consumer restarted from the same cursor replays exactly the same events.
    expect((await readAll(client, { after: cursor })).map((e) => e.id)).toEqual(ids)
  })
})

describe('onEvent', () => {
  let client
  let db
  beforeAll(async () => {
    db = storeOptions()
    client = await openClient(db)
  })
  afterAll(() => client.close())

  test('delivers this client’s committed events in order, the same as listEvents', async () => {
    const start = (await readAll(client)).map((e) => e.id).pop() ?? 0
    const got = []
    const off = client.onEvent((e) => got.push(e))
    expect(typeof off).toBe('function')
    // Concurrent mutations (group-committed together) and sequential ones.
    await Promise.all(Array.from({ length: 20 }, (_, i) => client.upsertLinkedAccount({ linked_account_id: `live-${i}` })))
    const s = await client.createAuthSession({ linked_account_id: 'live-0', ...URIS })
    await client.completeAuthSession(s.session_id, GRANT)
    const logged = await readAll(client, { after: start })
    await until(() => got.length >= logged.length, 'events')
    if (isPostgres) {
      // Commit order: the pool's concurrent transactions may commit out of their ids' order,
      // but every event arrives once, and each account's events in id order.
      const byId = (a, b) => a.id - b.id
      expect([...got].sort(byId)).toEqual(logged)
      const ofAccount = (events, id) => events.filter((e) => e.linked_account_id === id)
      for (const id of new Set(logged.map((e) => e.linked_account_id))) {
        expect(ofAccount(got, id)).toEqual(ofAccount(logged, id))
      }
    } else {
      expect(got).toEqual(logged)
    }
    off()
  })

  test('failed mutations deliver nothing; unsubscribe stops delivery at once; several subscribers', async () => {
    const a = []
    const b = []
    const offA = client.onEvent((e) => a.push(e.id))
    const offB = client.onEvent((e) => b.push(e.id))
    await expect(client.createLinkedAccount({ linked_account_id: '' })).rejects.toMatchObject({ code: 'VALIDATION_ERROR' })
    await expect(client.createAuthSession({ linked_account_id: 'ghost', ...URIS })).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await client.upsertLinkedAccount({ linked_account_id: 'multi-1' })
    await until(() => a.length === 1 && b.length === 1, 'first event')
    // Queue writes, then unsubscribe A before their callbacks can run on this thread.
    const writes = Promise.all([
      client.upsertLinkedAccount({ linked_account_id: 'multi-2' }),
      client.upsertLinkedAccount({ linked_account_id: 'multi-3' }),
    ])
    offA()
    offA() // harmless twice
    await writes
    await until(() => b.length === 3, 'events for B')
    await sleep(50)
    expect(a).toHaveLength(1)
    expect(b[0]).toBe(a[0])
    offB()
  })

  test('another client’s writes are not delivered (read them with listEvents)', async () => {
    const other = await openClient(db)
    const mine = []
    const theirs = []
    const off1 = client.onEvent((e) => mine.push(e.linked_account_id))
    const off2 = other.onEvent((e) => theirs.push(e.linked_account_id))
    await other.upsertLinkedAccount({ linked_account_id: 'from-other' })
    await client.upsertLinkedAccount({ linked_account_id: 'from-me' })
    await until(() => mine.length === 1 && theirs.length === 1, 'events')
    expect(mine).toEqual(['from-me'])
    expect(theirs).toEqual(['from-other'])
    off1()
    off2()
    await other.close()
    expect(() => other.onEvent(() => {})).toThrow(expect.objectContaining({ code: 'CLIENT_CLOSED' }))
  })

  test('a non-function callback is a VALIDATION_ERROR', () => {
    for (const bad of [undefined, null, 5, 'fn', {}]) {
      let err
      try {
        client.onEvent(bad)
      } catch (e) {
        err = e
      }
      expect(err).toMatchObject({ code: 'VALIDATION_ERROR', field: 'callback' })
    }
  })

  test('a forgotten subscription does not keep the process alive', () => {
    const r = spawnSync(process.execPath, [path.join(__dirname, 'fixtures', 'forgotten-subscription.js'), JSON.stringify(storeOptions())], {
      env: { ...process.env, LINKVAULT_ENCRYPTION_KEY: KEY },
      encoding: 'utf8',
      timeout: 30000, // a hang guard, not a timing assertion
    })
    expect(r.error).toBeUndefined()
    expect(r.signal).toBeNull()
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({ type: 'linked_account.created' })
  })
})

describe('pruneEvents', () => {
  let client
  beforeAll(async () => {
    client = await openClient()
    for (let i = 0; i < 6; i++) await client.upsertLinkedAccount({ linked_account_id: `prune-${i}` })
  })
  afterAll(() => client.close())

  test('by id, by Date and by ISO string; ids are never reused', async () => {
    // Opening the file generated its signing key: that event comes first.
    const all = await readAll(client)
    expect(all.map((e) => e.type)).toEqual(['signing_key.added', ...Array(6).fill('linked_account.created')])
    expect(await client.pruneEvents({ before: all[2].id })).toEqual({ deleted: 2 })
    expect((await readAll(client)).map((e) => e.id)).toEqual(all.slice(2).map((e) => e.id))
    expect(await client.pruneEvents({ before: new Date(Date.parse(all[0].created_at) - 60000) })).toEqual({ deleted: 0 })
    expect(await client.pruneEvents({ before: new Date(Date.parse(all[2].created_at) + 1) })).toMatchObject({
      deleted: expect.any(Number),
    })
    const future = new Date(Date.now() + 60000).toISOString()
    await client.pruneEvents({ before: future })
    expect(await readAll(client)).toEqual([])
    await client.upsertLinkedAccount({ linked_account_id: 'after-prune' })
    const [fresh] = await readAll(client)
    expect(fresh.id).toBeGreaterThan(all[all.length - 1].id)
    expect(await client.pruneEvents({ before: '2000-01-01' })).toEqual({ deleted: 0 })
  })

  test('invalid `before` is a VALIDATION_ERROR', async () => {
    for (const options of [{}, { before: 'soon' }, { before: -1 }, { before: true }, { before: new Date(NaN) }, undefined]) {
      await expect(client.pruneEvents(options)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', field: 'before' })
    }
  })
})

describe('webhook helpers', () => {
  const body = JSON.stringify({ id: 12, type: 'consent.received', data: { consent_id: 'c-1' } })
  const secret = 'whsec_test_123'
  const hmac = (t, b, s = secret) => crypto.createHmac('sha256', s).update(`${t}.${b}`).digest('hex')

  test('signWebhook matches a hand-computed HMAC-SHA256 of "t.body"', () => {
    const t = 1700000000
    expect(signWebhook(body, secret, t)).toBe(`t=${t},v1=${hmac(t, body)}`)
    expect(signWebhook(Buffer.from(body), Buffer.from(secret), t)).toBe(`t=${t},v1=${hmac(t, body)}`)
    const now = Math.floor(Date.now() / 1000)
    const header = signWebhook(body, secret)
    const stamped = Number(/^t=(\d+),/.exec(header)[1])
    expect(Math.abs(stamped - now)).toBeLessThanOrEqual(5)
    expect(header).toBe(`t=${stamped},v1=${hmac(stamped, body)}`)
  })

  test('verifyWebhook accepts fresh valid signatures and rejects everything else', () => {
    const now = Math.floor(Date.now() / 1000)
    const header = `t=${now},v1=${hmac(now, body)}`
    expect(verifyWebhook(body, header, secret)).toBe(true)
    expect(verifyWebhook(Buffer.from(body), header, secret)).toBe(true)
    expect(verifyWebhook(body, signWebhook(body, secret), secret, 300)).toBe(true)
    // Tampered body, wrong secret.
    expect(verifyWebhook(body + ' ', header, secret)).toBe(false)
    expect(verifyWebhook(body, header, 'other-secret')).toBe(false)
    // Stale and future timestamps (default tolerance 300 s), and a custom tolerance.
    const old = now - 1000
    expect(verifyWebhook(body, `t=${old},v1=${hmac(old, body)}`, secret)).toBe(false)
    expect(verifyWebhook(body, `t=${old},v1=${hmac(old, body)}`, secret, 2000)).toBe(true)
    const ahead = now + 1000
    expect(verifyWebhook(body, `t=${ahead},v1=${hmac(ahead, body)}`, secret)).toBe(false)
    // A signature made for another timestamp does not verify with a swapped t.
    expect(verifyWebhook(body, `t=${now},v1=${hmac(now - 1, body)}`, secret)).toBe(false)
    // Rotation: several v1 entries, one valid.
    expect(verifyWebhook(body, `t=${now},v1=${hmac(now, body, 'old')},v1=${hmac(now, body)}`, secret)).toBe(true)
    // Malformed headers are just invalid.
    for (const bad of ['', 'nonsense', `v1=${hmac(now, body)}`, `t=${now}`, `t=abc,v1=${hmac(now, body)}`, `t=${now},v1=zz`]) {
      expect(verifyWebhook(body, bad, secret)).toBe(false)
    }
  })

  test('misuse throws VALIDATION_ERROR naming the argument', () => {
    const cases = [
      [() => signWebhook(body, ''), 'secret'],
      [() => signWebhook(42, secret), 'body'],
      [() => signWebhook(body, secret, Date.now()), 'timestamp'],
      [() => signWebhook(body, secret, 1.5), 'timestamp'],
      [() => verifyWebhook(body, 'x', ''), 'secret'],
      [() => verifyWebhook(body, 5, secret), 'header'],
      [() => verifyWebhook(body, 'x', secret, -1), 'toleranceSeconds'],
      [() => verifyWebhook(null, 'x', secret), 'body'],
    ]
    for (const [fn, field] of cases) {
      let err
      try {
        fn()
      } catch (e) {
        err = e
      }
      expect(err).toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field })
    }
  })
})

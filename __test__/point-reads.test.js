// Point reads by key (getLinkedAccountById, getLinkedAccountCredentials, getEndUser, getUser,
// resolveApiKey, getAuthSession, getConsent). On a SQLite file they are served on the calling
// thread when a read connection is free at once (store::read_point), and their promise is
// already settled when the method returns; lists and pages stay on the reader threads, and
// PostgreSQL serves every read on its pool. Whichever path a read takes, its result, its error
// and what it sees of earlier writes must be the same: that is what these tests check.
const { Client, LinkvaultError } = require('..')
const { openClient, storeOptions, isPostgres, testSqlite } = require('./helpers')

const URIS = { redirect_uri: 'https://app.example.com/done', cancel_uri: 'https://app.example.com/cancel' }

/**
 * `p`'s outcome, and whether it settled before any macrotask could run (a result computed on
 * this thread; one from a storage thread needs a turn of the event loop to arrive).
 */
async function settleOf(p) {
  let early = false
  let outcome
  p.then(
    (value) => {
      outcome = { value }
    },
    (error) => {
      outcome = { error }
    },
  )
  for (let i = 0; i < 10; i++) await null
  early = outcome !== undefined
  await p.catch(() => {})
  return { early, ...outcome }
}

/**
 * Whether a point read must settle at once: on SQLite. (Elsewhere, and for pages and lists,
 * a storage thread may still have answered before the method returned, and then the promise is
 * settled at once too: not asserted either way.)
 */
const expectEarly = (r) => {
  if (!isPostgres) expect(r.early).toBe(true)
}

const EXAMPLE = {
  linked_account_id: 'pr-1',
  name: 'Ann',
  udf: { plan: 'pro', seats: 3, tags: ['a', 'b'] },
  your_app: { app_id: 'app', auth_credentials: { Authorization: 'Bearer secret-1' } },
}

describe('point reads', () => {
  let client
  let db
  beforeAll(async () => {
    db = storeOptions()
    client = await openClient(db)
    await client.upsertLinkedAccount(EXAMPLE)
    await client.linkIdentity(EXAMPLE.linked_account_id, { provider: 'github', user_id: '7', email: 'ann@example.com', email_verified: true })
  })
  afterAll(() => client.close())

  test('getLinkedAccountById answers the same account as upsert, pages and lists; only it settles at once', async () => {
    const written = await client.upsertLinkedAccount({ linked_account_id: EXAMPLE.linked_account_id, udf: { seats: 4 } })
    const p = client.getLinkedAccountById(EXAMPLE.linked_account_id)
    expect(Object.prototype.toString.call(p)).toBe('[object Promise]')
    const got = await settleOf(p)
    expectEarly(got)
    const { new_account, ...account } = written
    expect(new_account).toBe(false)
    expect(got.value).toEqual(account)
    expect(got.value.udf.map((u) => [u.key_name, u.key_value])).toEqual([
      ['plan', 'pro'],
      ['seats', 4],
      ['tags', ['a', 'b']],
    ])
    expect(got.value.identities).toHaveLength(1)
    // Pages and lists (on the reader threads) render the account alike.
    const page = await client.getAllLinkedAccounts({ search: EXAMPLE.linked_account_id })
    expect(page.docs).toEqual([got.value])
    const list = await client.listLinkedAccounts({ search: EXAMPLE.linked_account_id })
    expect(list.docs).toEqual([got.value])
  })

  test('errors are the same LinkvaultErrors, as rejections, never throws', async () => {
    const missing = await settleOf(client.getLinkedAccountById('nobody'))
    expectEarly(missing)
    expect(missing.error).toBeInstanceOf(LinkvaultError)
    expect(missing.error).toMatchObject({ code: 'NOT_FOUND', status: 404 })
    expect(missing.error.message).toContain('nobody')
    // The stack shows the awaiting caller (index.js converts the rejection).
    const awaited = await client.getLinkedAccountById('nobody').catch((e) => e)
    expect(awaited.stack).toContain('point-reads.test.js')
    for (const bad of ['', 42, null, 'x'.repeat(257)]) {
      let p
      expect(() => {
        p = client.getLinkedAccountById(bad)
      }).not.toThrow()
      const r = await settleOf(p)
      // Refused input never reaches storage: it settles at once on every store.
      expect(r.early).toBe(true)
      expect(r.error).toBeInstanceOf(LinkvaultError)
      expect(r.error).toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field: 'linked_account_id' })
    }
    await expect(client.getLinkedAccountCredentials('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
  })

  test('the other point reads answer at once too, with their own results and errors', async () => {
    const id = EXAMPLE.linked_account_id
    const creds = await settleOf(client.getLinkedAccountCredentials(id))
    expectEarly(creds)
    expect(creds).toMatchObject({ value: { app_id: 'app', auth_credentials: { Authorization: 'Bearer secret-1' } } })
    const endUser = await settleOf(client.getEndUser(id))
    expectEarly(endUser)
    expect(endUser.value).toMatchObject({ id, name: 'Ann' })
    await expect(client.getEndUser('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    const user = await settleOf(client.getUser(id))
    expectEarly(user)
    expect(user.value.identities.map((i) => i.provider)).toContain('github')
    await expect(client.getUser('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })

    const key = await client.createApiKey({ name: 'pr' })
    const resolved = await settleOf(client.resolveApiKey(key.api_key))
    expectEarly(resolved)
    expect(resolved).toMatchObject({ value: { client_id: key.client_id, revoked_at: null } })
    const unknown = await settleOf(client.resolveApiKey(`${key.api_key.slice(0, -4)}zzzz`))
    expect(unknown.value).toBeNull()

    const session = await client.createAuthSession({ linked_account_id: id, ...URIS })
    const s = await settleOf(client.getAuthSession(session.session_id))
    expectEarly(s)
    expect(s.value).toEqual(session)
    await expect(client.getAuthSession('no-such-session')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
    const consent = await client.completeAuthSession(session.session_id, {
      institution_id: 'bank-au',
      account_ids: ['acc-1'],
      permissions: ['accounts'],
      duration_seconds: 3600,
    })
    const c = await settleOf(client.getConsent(consent.arrangement_id))
    expectEarly(c)
    expect(c.value.arrangement_id).toBe(consent.arrangement_id)
    await expect(client.getConsent('00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
  })

  test('a read after an awaited write sees it, from this client and from another on the same database', async () => {
    const other = await openClient({ ...db })
    try {
      for (let i = 0; i < 200; i++) {
        const w = await client.upsertLinkedAccount({ linked_account_id: 'ryw', udf: { n: i } })
        const r = await client.getLinkedAccountById('ryw')
        expect([r.__v, r.udf[0].key_value]).toEqual([w.__v, i])
        const o = await other.upsertLinkedAccount({ linked_account_id: 'ryw', udf: { n: -(i + 1) } })
        const seen = await client.getLinkedAccountById('ryw')
        expect([seen.__v, seen.udf[0].key_value]).toEqual([o.__v, -(i + 1)])
      }
    } finally {
      await other.close()
    }
  }, 60000)

  test('with 64 writes in flight, every read sees at least every write that had resolved when it was made', async () => {
    await client.upsertLinkedAccount({ linked_account_id: 'busy', udf: { n: 0 } })
    let resolved = -1
    const writes = []
    const reads = []
    for (let i = 0; i < 1000; i++) {
      writes.push(
        client.upsertLinkedAccount({ linked_account_id: 'busy', udf: { n: i + 1 } }).then((w) => {
          resolved = Math.max(resolved, w.__v)
        }),
      )
      if (writes.length - reads.length >= 64 || i % 7 === 0) {
        const floor = resolved
        reads.push(client.getLinkedAccountById('busy').then((r) => ({ floor, v: r.__v })))
        await writes[writes.length - 64]
      }
    }
    await Promise.all(writes)
    const seen = await Promise.all(reads)
    expect(seen.length).toBeGreaterThan(100)
    for (const { floor, v } of seen) expect(v).toBeGreaterThanOrEqual(floor)
    expect((await client.getLinkedAccountById('busy')).__v).toBe(1000)
  }, 60000)
})

test('after close, point reads reject with CLIENT_CLOSED, even before close settles', async () => {
  const db = storeOptions()
  const a = await openClient(db)
  await a.upsertLinkedAccount(EXAMPLE)
  await expect(a.getLinkedAccountById(EXAMPLE.linked_account_id)).resolves.toMatchObject({ account_id: EXAMPLE.linked_account_id })
  const closing = a.close()
  const r = await settleOf(a.getLinkedAccountById(EXAMPLE.linked_account_id))
  expect(r.error).toBeInstanceOf(LinkvaultError)
  expect(r.error).toMatchObject({ code: 'CLIENT_CLOSED', status: 400 })
  await closing
  for (const call of [() => a.getLinkedAccountById('x'), () => a.getLinkedAccountCredentials('x'), () => a.getUser('x'), () => a.getEndUser('x'), () => a.getAuthSession('ses_x'), () => a.getConsent('arr_x')]) {
    await expect(call()).rejects.toMatchObject({ code: 'CLIENT_CLOSED', status: 400 })
  }
  // The data is intact for the next client.
  const b = await openClient(db)
  await expect(b.getLinkedAccountById(EXAMPLE.linked_account_id)).resolves.toMatchObject({ name: 'Ann' })
  await b.close()
})

testSqlite('an in-memory database (no read connection of its own: its reads queue behind the writer) answers point reads alike', 'a private in-memory database', async () => {
  const m = await Client.open({ path: ':memory:' })
  const w = await m.upsertLinkedAccount({ linked_account_id: 'm1', udf: { a: 1 } })
  const { new_account, ...account } = w
  await expect(m.getLinkedAccountById('m1')).resolves.toEqual(account)
  await expect(m.getLinkedAccountById('m2')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
  await m.close()
  await expect(m.getLinkedAccountById('m1')).rejects.toMatchObject({ code: 'CLIENT_CLOSED', status: 400 })
})

// Point writes (upsertLinkedAccount, createLinkedAccount, getTokenForLinkedAccount): on a
// SQLite file with durability 'normal' they run on the calling thread while the writer has
// nothing queued (store::write_point). Same results, errors and visibility on either path.
describe('point writes', () => {
  let client
  beforeAll(async () => {
    client = await openClient(storeOptions())
  })
  afterAll(() => client.close())

  test('an awaited upsert settles at once with the same account a read and a page return', async () => {
    const w = await settleOf(client.upsertLinkedAccount({ ...EXAMPLE, linked_account_id: 'pw-1' }))
    expectEarly(w)
    expect(w.value.new_account).toBe(true)
    const { new_account, ...account } = w.value
    await expect(client.getLinkedAccountById('pw-1')).resolves.toEqual(account)
    const page = await client.getAllLinkedAccounts({ search: 'pw-1' })
    expect(page.docs).toEqual([account])
    const again = await settleOf(client.upsertLinkedAccount({ linked_account_id: 'pw-1', udf: { seats: 9 } }))
    expectEarly(again)
    expect(again.value).toMatchObject({ new_account: false, __v: account.__v + 1 })
  })

  test('a refused point write rejects with its LinkvaultError and changes nothing', async () => {
    const before = await client.upsertLinkedAccount({ linked_account_id: 'pw-2', udf: { n: 1 } })
    const conflict = await settleOf(client.upsertLinkedAccount({ linked_account_id: 'pw-2', udf: { n: 2 } }, { ifVersion: before.__v + 5 }))
    expectEarly(conflict)
    expect(conflict.error).toBeInstanceOf(LinkvaultError)
    expect(conflict.error).toMatchObject({ code: 'VERSION_CONFLICT', status: 409 })
    const dup = await settleOf(client.createLinkedAccount({ linked_account_id: 'pw-2' }))
    expectEarly(dup)
    expect(dup.error).toBeInstanceOf(LinkvaultError)
    const after = await client.getLinkedAccountById('pw-2')
    expect([after.__v, after.udf[0].key_value]).toEqual([before.__v, 1])
    const ghost = await settleOf(client.getTokenForLinkedAccount({ linked_account_id: 'pw-ghost' }))
    expectEarly(ghost)
    expect(ghost.error).toMatchObject({ code: 'NOT_FOUND', status: 404 })
  })

  test('a minted token settles at once and verifies at once; revoking it holds at once', async () => {
    await client.upsertLinkedAccount({ linked_account_id: 'pw-3' })
    const t = await settleOf(client.getTokenForLinkedAccount({ linked_account_id: 'pw-3', force_refresh: true }))
    expectEarly(t)
    expect(client.verifySessionTokenSync(t.value.token)).toMatchObject({ linked_account_id: 'pw-3' })
    const refreshed = await client.refreshSessionToken(t.value.refresh_token)
    expect(client.verifySessionTokenSync(refreshed.token)).toMatchObject({ linked_account_id: 'pw-3' })
    await client.revokeSessionToken(refreshed.token)
    expect(() => client.verifySessionTokenSync(refreshed.token)).toThrow(expect.objectContaining({ code: 'TOKEN_REVOKED' }))
  })

  test('a loop of awaited writes still lets timers run, and every write lands in order', async () => {
    let ticks = 0
    const timer = setInterval(() => ticks++, 0)
    try {
      for (let i = 0; i < 400; i++) await client.upsertLinkedAccount({ linked_account_id: 'pw-loop', udf: { n: i } })
    } finally {
      clearInterval(timer)
    }
    expect(ticks).toBeGreaterThan(0)
    const r = await client.getLinkedAccountById('pw-loop')
    expect(r.udf[0].key_value).toBe(399)
    expect(r.__v).toBe(399)
  })
})

testSqlite("with durability 'full' writes wait for the writer thread's commit (an fsync each), never on this thread", 'durability is a SQLite option', async () => {
  const full = await openClient({ ...storeOptions(), durability: 'full' })
  try {
    const w = await settleOf(full.upsertLinkedAccount({ linked_account_id: 'pw-full' }))
    expect(w.early).toBe(false)
    expect(w.value.new_account).toBe(true)
  } finally {
    await full.close()
  }
})

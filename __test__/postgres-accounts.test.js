// Linked accounts and end users on the PostgreSQL store: the Cobalt-shape round trip, and the
// guarantees of issue 11 with several clients and two processes writing one schema at once
// (no lost update, `__v` = N-1 after N upserts, one winner of a create race, keyset walks that
// never skip a row that existed when they began, conflicts retried inside linkvault).
const { execFile } = require('node:child_process')
const path = require('node:path')
const { openClient, pgUrl, newSchema, KEY } = require('./helpers')

const EXAMPLE = {
  linked_account_id: 'user@example.com',
  name: 'Example User',
  udf: { plan: 'pro', seats: 3 },
  your_app: { app_id: 'app_1', auth_credentials: { Authorization: 'Bearer sk_live_pg_abcdef' } },
}

function child(args) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(__dirname, 'fixtures', 'pg-upserter.js'), ...args], (err, stdout, stderr) => {
      if (err) reject(new Error(`pg-upserter failed: ${stderr || err.message}`))
      else resolve(JSON.parse(stdout.trim()))
    })
  })
}

const udfOf = (a) => Object.fromEntries(a.udf.map((u) => [u.key_name, u.key_value]))

describe('linked accounts on PostgreSQL', () => {
  test('Cobalt round trip: create, upsert with UDF changes, get, credentials, pages, delete', async () => {
    const c = await openClient({ store: 'postgres', orgId: 'org_pg' })
    try {
      const created = await c.createLinkedAccount(EXAMPLE)
      expect(created).toMatchObject({
        new_account: true,
        account_id: EXAMPLE.linked_account_id,
        associated_org: 'org_pg',
        environment: 'test',
        name: 'Example User',
        __v: 0,
        your_app: { app_id: 'app_1' },
      })
      expect(created._id).toMatch(/^[0-9a-f]{24}$/)
      expect(JSON.stringify(created)).not.toContain('sk_live')
      await expect(c.createLinkedAccount(EXAMPLE)).rejects.toMatchObject({ code: 'ALREADY_EXISTS', status: 409 })

      // Same payload: nothing changes, __v stays.
      const same = await c.upsertLinkedAccount(EXAMPLE)
      expect(same).toMatchObject({ new_account: false, __v: 0, updatedAt: created.updatedAt })

      // UDF: a changed value keeps its _id and createdAt, null removes, a new key is appended.
      const plan = created.udf.find((u) => u.key_name === 'plan')
      const changed = await c.upsertLinkedAccount({ linked_account_id: EXAMPLE.linked_account_id, udf: { plan: 'team', seats: null, region: 'eu' } })
      expect(changed.__v).toBe(1)
      expect(changed.name).toBe('Example User')
      expect(changed.udf.map((u) => [u.key_name, u.key_value])).toEqual([
        ['plan', 'team'],
        ['region', 'eu'],
      ])
      const plan2 = changed.udf.find((u) => u.key_name === 'plan')
      expect([plan2._id, plan2.createdAt]).toEqual([plan._id, plan.createdAt])
      await expect(c.upsertLinkedAccount({ linked_account_id: EXAMPLE.linked_account_id, name: 'X' }, { ifVersion: 0 })).rejects.toMatchObject({
        code: 'VERSION_CONFLICT',
      })
      const cas = await c.upsertLinkedAccount({ linked_account_id: EXAMPLE.linked_account_id, name: 'Renamed' }, { ifVersion: 1 })
      expect(cas.__v).toBe(2)

      const got = await c.getLinkedAccountById(EXAMPLE.linked_account_id)
      expect(got).toEqual({ ...cas, new_account: undefined })
      expect(await c.getLinkedAccountCredentials(EXAMPLE.linked_account_id)).toEqual({
        app_id: 'app_1',
        auth_credentials: { Authorization: 'Bearer sk_live_pg_abcdef' },
      })
      // New credentials are sealed again; your_app: null clears them.
      await c.upsertLinkedAccount({ linked_account_id: EXAMPLE.linked_account_id, your_app: { auth_credentials: { 'x-api-key': 'k2' } } })
      expect(await c.getLinkedAccountCredentials(EXAMPLE.linked_account_id)).toEqual({ auth_credentials: { 'x-api-key': 'k2' } })
      const cleared = await c.upsertLinkedAccount({ linked_account_id: EXAMPLE.linked_account_id, your_app: null })
      expect(cleared.your_app).toBeUndefined()
      expect(await c.getLinkedAccountCredentials(EXAMPLE.linked_account_id)).toBeNull()

      // Pages, filters and search (Unicode-aware, as on SQLite).
      for (let i = 0; i < 12; i++) {
        await c.upsertLinkedAccount({
          linked_account_id: `acct-${String(i).padStart(2, '0')}`,
          name: i % 2 ? `Ödön ${i}` : `Ann ${i}`,
          udf: { tier: i % 3 === 0 ? 'gold' : 'basic' },
        })
      }
      const p1 = await c.getAllLinkedAccounts({ limit: 5 })
      expect(p1).toMatchObject({ totalDocs: 13, totalPages: 3, page: 1, hasNextPage: true, nextPage: 2 })
      expect(p1.docs.map((d) => d.account_id)).toEqual([EXAMPLE.linked_account_id, 'acct-00', 'acct-01', 'acct-02', 'acct-03'])
      const p3 = await c.getAllLinkedAccounts({ page: 3, limit: 5 })
      expect(p3.docs.map((d) => d.account_id)).toEqual(['acct-09', 'acct-10', 'acct-11'])
      expect((await c.getAllLinkedAccounts({ udf: { tier: 'gold' } })).docs.map((d) => d.account_id)).toEqual([
        'acct-00',
        'acct-03',
        'acct-06',
        'acct-09',
      ])
      expect((await c.getAllLinkedAccounts({ search: 'ÖDÖN 1' })).docs.map((d) => d.name)).toEqual(['Ödön 1', 'Ödön 11'])
      expect((await c.getAllLinkedAccounts({ search: 'ACCT-1' })).totalDocs).toBe(2)
      expect((await c.getAllLinkedAccounts({ search: "'; DROP TABLE accounts; --" })).totalDocs).toBe(0)
      const seen = []
      let after
      do {
        const page = await c.listLinkedAccounts({ limit: 4, ...(after ? { after } : {}) })
        seen.push(...page.docs.map((d) => d.account_id))
        after = page.next
      } while (after)
      expect(seen).toHaveLength(13)
      expect(new Set(seen).size).toBe(13)
      const gold = await c.listLinkedAccounts({ udf: { tier: 'gold' }, search: 'ann', limit: 1 })
      expect(gold.docs.map((d) => d.account_id)).toEqual(['acct-00'])
      const gold2 = await c.listLinkedAccounts({ udf: { tier: 'gold' }, search: 'ann', limit: 1, after: gold.next })
      expect(gold2.docs.map((d) => d.account_id)).toEqual(['acct-06'])
      expect(gold2.next).toBeNull()

      // Delete: gone, its tokens revoked, events in order.
      const { token } = await c.getTokenForLinkedAccount({ linked_account_id: 'acct-00' })
      await c.deleteLinkedAccount('acct-00')
      await expect(c.getLinkedAccountById('acct-00')).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 })
      await expect(c.deleteLinkedAccount('acct-00')).rejects.toMatchObject({ code: 'NOT_FOUND' })
      await expect(c.getLinkedAccountCredentials('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND' })
      expect(() => c.verifySessionTokenSync(token)).toThrow(expect.objectContaining({ code: 'TOKEN_REVOKED' }))
      const { events } = await c.listEvents({ linked_account_id: EXAMPLE.linked_account_id })
      expect(events.map((e) => [e.type, e.data.__v])).toEqual([
        ['linked_account.created', 0],
        ['linked_account.updated', 1],
        ['linked_account.updated', 2],
        ['linked_account.updated', 3],
        ['linked_account.updated', 4],
      ])
      expect(JSON.stringify(events)).not.toContain('sk_live')
      const deleted = await c.listEvents({ linked_account_id: 'acct-00', types: ['linked_account.deleted'] })
      expect(deleted.events).toHaveLength(1)
    } finally {
      await c.close()
    }
  })

  test('N concurrent upserts of one id from several clients end at __v = N-1 with every change kept', async () => {
    const schema = newSchema()
    const clients = await Promise.all([0, 1, 2].map(() => openClient({ store: 'postgres', schema, orgId: 'org_pg' })))
    try {
      const perClient = 15
      const n = clients.length * perClient
      const results = await Promise.all(
        clients.flatMap((c, ci) =>
          Array.from({ length: perClient }, (_, i) => c.upsertLinkedAccount({ linked_account_id: 'hot', udf: { [`c${ci}_${i}`]: i } })),
        ),
      )
      // Each call saw its own version: 0 (the creation) up to N-1, each once.
      expect(results.map((r) => r.__v).sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i))
      expect(results.filter((r) => r.new_account)).toHaveLength(1)
      const final = await clients[0].getLinkedAccountById('hot')
      expect(final.__v).toBe(n - 1)
      expect(Object.keys(udfOf(final)).sort()).toEqual(results.map((_, k) => `c${Math.floor(k / perClient)}_${k % perClient}`).sort())
      const { events } = await clients[1].listEvents({ linked_account_id: 'hot', limit: 1000 })
      expect(events.map((e) => e.data.__v)).toEqual(Array.from({ length: n }, (_, i) => i))
    } finally {
      await Promise.all(clients.map((c) => c.close()))
    }
  })

  test('a create race has one winner; the others get ALREADY_EXISTS, never a storage error', async () => {
    const schema = newSchema()
    const clients = await Promise.all([0, 1].map(() => openClient({ store: 'postgres', schema, orgId: 'org_pg' })))
    try {
      for (const id of ['race-1', 'race-2', 'race-3']) {
        const outcomes = await Promise.allSettled(
          Array.from({ length: 12 }, (_, i) => clients[i % 2].createLinkedAccount({ linked_account_id: id, name: `n${i}` })),
        )
        expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1)
        for (const o of outcomes.filter((o) => o.status === 'rejected')) {
          expect(o.reason).toMatchObject({ code: 'ALREADY_EXISTS', status: 409 })
        }
        const winner = outcomes.find((o) => o.status === 'fulfilled').value
        expect((await clients[1].getLinkedAccountById(id)).name).toBe(winner.name)
      }
    } finally {
      await Promise.all(clients.map((c) => c.close()))
    }
  })

  test('two processes upserting one id: no lost update, __v = N-1', async () => {
    const schema = newSchema()
    const c = await openClient({ store: 'postgres', schema, orgId: 'org_pg' })
    try {
      const [a, b] = await Promise.all([
        child([pgUrl(), schema, KEY, 'shared', 'p1_', '20']),
        child([pgUrl(), schema, KEY, 'shared', 'p2_', '20']),
      ])
      const all = [...a.versions, ...b.versions].sort((x, y) => x - y)
      expect(all).toEqual(Array.from({ length: 40 }, (_, i) => i))
      const final = await c.getLinkedAccountById('shared')
      expect(final.__v).toBe(39)
      expect(Object.keys(udfOf(final))).toHaveLength(40)
    } finally {
      await c.close()
    }
  })

  test('keyset walks never skip a row that existed when they began, while others insert, update and delete', async () => {
    const schema = newSchema()
    const [walker, writer] = await Promise.all([0, 1].map(() => openClient({ store: 'postgres', schema, orgId: 'org_pg' })))
    try {
      const existing = Array.from({ length: 120 }, (_, i) => `k${String(i).padStart(3, '0')}`)
      await Promise.all(existing.map((id) => writer.upsertLinkedAccount({ linked_account_id: id })))
      const victims = new Set(existing.filter((_, i) => i % 10 === 5))
      const seen = []
      let after
      let round = 0
      const writes = []
      do {
        const page = await walker.listLinkedAccounts({ limit: 7, ...(after ? { after } : {}) })
        seen.push(...page.docs.map((d) => d.account_id))
        // Between pages: new rows, updates of rows ahead and behind, deletions.
        writes.push(
          writer.upsertLinkedAccount({ linked_account_id: `new${round}` }),
          writer.upsertLinkedAccount({ linked_account_id: existing[(round * 13) % existing.length], udf: { r: round } }),
        )
        const victim = [...victims][round]
        if (victim) writes.push(writer.deleteLinkedAccount(victim))
        after = page.next
        round++
      } while (after)
      await Promise.all(writes)
      expect(new Set(seen).size).toBe(seen.length)
      const seenSet = new Set(seen)
      const missed = existing.filter((id) => !seenSet.has(id) && !victims.has(id))
      expect(missed).toEqual([])
    } finally {
      await Promise.all([walker.close(), writer.close()])
    }
  })
})

describe('end users on PostgreSQL', () => {
  test('create, get, find by email, update (with __v and field names only in events), delete', async () => {
    const c = await openClient({ store: 'postgres', orgId: 'org_pg' })
    try {
      const { end_user_id: id } = await c.createEndUser({ email: 'Ann@Example.com', name: 'Ann', phone: '+61412345678' })
      const { end_user_id: other } = await c.createEndUser({ email: 'ann@example.com ' })
      expect(await c.getEndUser(id)).toEqual({ id, email: 'Ann@Example.com', name: 'Ann', phone: '+61412345678' })
      expect((await c.getEndUsers({ email: 'ANN@example.COM' })).map((u) => u.id)).toEqual([id, other])
      await c.updateEndUser(id, { email: 'bob@example.com', phone: null, abn: '51 824 753 556' })
      expect(await c.getEndUser(id)).toEqual({ id, email: 'bob@example.com', name: 'Ann', abn: '51824753556' })
      expect((await c.getEndUsers({ email: 'ann@example.com' })).map((u) => u.id)).toEqual([other])
      expect((await c.getLinkedAccountById(id)).__v).toBe(1)
      await c.updateEndUser(id, { name: 'Ann' }) // no change: no new version
      expect((await c.getLinkedAccountById(id)).__v).toBe(1)
      const { events } = await c.listEvents({ linked_account_id: id })
      expect(events.map((e) => e.type)).toEqual(['linked_account.created', 'linked_account.updated'])
      expect(events[1].data).toEqual({ __v: 1, changed: ['email', 'phone', 'abn'] })
      expect(JSON.stringify(events)).not.toContain('bob@')
      await expect(c.updateEndUser('nobody', { name: 'x' })).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('end_user_not_found') })
      await c.deleteEndUser(id)
      await expect(c.getEndUser(id)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    } finally {
      await c.close()
    }
  })
})

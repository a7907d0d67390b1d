'use strict'
// Webhook delivery by `linkvault serve` (a child process) from the event log: signed Fiskil
// envelopes, retries with the same message_id, failure after 5 attempts, order per end user,
// and nothing lost when the server is killed with SIGKILL mid-delivery.

const { Client, verifyWebhook } = require('linkvault')
const { tempDir, startServer, stopServer, startReceiver, waitFor, cli } = require('./webhook-helpers')
const { storeArgs } = require('./helpers')
const { storeOptions, KEY } = require('../../__test__/helpers')

// One key for this process's clients, the in-process commands and the servers they spawn (a
// PostgreSQL store has no key file).
const savedKey = process.env.LINKVAULT_ENCRYPTION_KEY
beforeAll(() => {
  process.env.LINKVAULT_ENCRYPTION_KEY = KEY
})
afterAll(() => {
  if (savedKey === undefined) delete process.env.LINKVAULT_ENCRYPTION_KEY
  else process.env.LINKVAULT_ENCRYPTION_KEY = savedKey
})

const ORG = 'org_hooks'

function userOf(receipt) {
  return receipt.data && receipt.data.end_user_id
}

/** Acknowledged receipts of one end user, in arrival order. */
function acked(receiver, user) {
  return receiver.receipts.filter((r) => userOf(r) === user && r.status >= 200 && r.status < 300)
}

/**
 * For every end user: no event arrives while an older event of that user is unacknowledged.
 * `ids` maps each user to its event ids (from listEvents), oldest first.
 */
function assertOrderPerUser(receipts, ids) {
  for (const [user, list] of Object.entries(ids)) {
    const ackedIds = new Set()
    for (const r of receipts.filter((x) => userOf(x) === user)) {
      const id = Number(r.message_id)
      for (const older of list.filter((x) => x < id)) {
        expect({ user, arrived: id, olderUnacked: ackedIds.has(older) ? null : older }).toEqual({ user, arrived: id, olderUnacked: null })
      }
      if (r.status >= 200 && r.status < 300) ackedIds.add(id)
    }
  }
}

async function eventIdsByUser(client, users) {
  const out = {}
  for (const u of users) {
    const page = await client.listEvents({ linked_account_id: u, limit: 1000 })
    out[u] = page.events.map((e) => e.id)
  }
  return out
}

describe('webhooks delivered by linkvault serve', () => {
  let dir, db, client, receiver, server, hook, policy

  beforeAll(async () => {
    dir = tempDir()
    db = storeOptions({ dir, name: 'hooks.db' })
    client = await Client.open({ ...db, orgId: ORG, environment: 'test', encryptionKey: KEY })
    policy = () => 200
    receiver = await startReceiver((r, all) => policy(r, all))
    const created = await cli('webhooks', ['create', ...storeArgs(db), '--org', ORG, '--url', receiver.url])
    expect(created.code).toBe(0)
    hook = JSON.parse(created.stdout.trim().split('\n').pop())
    expect(Object.keys(hook).sort()).toEqual(['id', 'secret'])
    server = await startServer(db).ready
  })

  afterAll(async () => {
    await stopServer(server)
    if (receiver) await receiver.close()
    if (client) await client.close()
  })

  test('a receiver that fails three times then succeeds: retried with the same message_id, every signature verifies', async () => {
    policy = (r, all) => (userOf(r) === 'flaky' && all.filter((x) => x.message_id === r.message_id).length <= 3 ? 500 : 200)
    await client.upsertLinkedAccount({ linked_account_id: 'flaky', name: 'Flo' })
    const got = await waitFor('four attempts, the last acknowledged', () => {
      const mine = receiver.receipts.filter((r) => userOf(r) === 'flaky')
      return mine.length >= 4 && mine[3].status === 200 && mine
    })
    expect(got).toHaveLength(4)
    expect(got.map((r) => r.status)).toEqual([500, 500, 500, 200])
    const [first] = got
    expect(first.data).toMatchObject({ event: 'linked_account.created', end_user_id: 'flaky', linked_account_id: 'flaky' })
    expect(first.message_id).toMatch(/^\d+$/)
    expect(new Date(JSON.parse(first.body).publish_time).toISOString()).toBe(JSON.parse(first.body).publish_time)
    for (const r of got) {
      expect(r.message_id).toBe(first.message_id)
      expect(r.body).toBe(first.body)
      expect(r.headers['x-linkvault-message-id']).toBe(first.message_id)
      expect(r.headers['content-type']).toBe('application/json')
      expect(verifyWebhook(r.body, r.headers['x-linkvault-signature'], hook.secret)).toBe(true)
      // Another secret, or another body, does not verify.
      expect(verifyWebhook(r.body, r.headers['x-linkvault-signature'], 'whsec_wrong')).toBe(false)
      expect(verifyWebhook(r.body.replace('flaky', 'flakx'), r.headers['x-linkvault-signature'], hook.secret)).toBe(false)
    }
    // Exponential backoff: each wait at least doubles the base (100 ms, 200 ms, 400 ms).
    expect(got[1].at - got[0].at).toBeGreaterThanOrEqual(90)
    expect(got[2].at - got[1].at).toBeGreaterThanOrEqual(190)
    expect(got[3].at - got[2].at).toBeGreaterThanOrEqual(390)
    const shown = await waitFor('the delivered record', async () => {
      const out = await cli('webhooks', ['deliveries', hook.id, ...storeArgs(db), '--json'])
      const d = JSON.parse(out.stdout).find((x) => x.message_id === first.message_id)
      return d && d.state === 'delivered' && d
    })
    expect(shown).toMatchObject({ attempts: 4, last_status: 200, event: 'linked_account.created', end_user_id: 'flaky', next_attempt_at: null })
  })

  test('five failed attempts are recorded as failed, shown by `webhooks deliveries`, and the end user\'s next event goes ahead', async () => {
    policy = (r) => (userOf(r) === 'stuck' && r.data.event === 'linked_account.created' ? 503 : 200)
    await client.upsertLinkedAccount({ linked_account_id: 'stuck' })
    await client.upsertLinkedAccount({ linked_account_id: 'stuck', name: 'Stu' })
    await waitFor('the update after the failed creation', () => acked(receiver, 'stuck').length === 1)
    const mine = receiver.receipts.filter((r) => userOf(r) === 'stuck')
    expect(mine.map((r) => [r.data.event, r.status])).toEqual([
      ['linked_account.created', 503],
      ['linked_account.created', 503],
      ['linked_account.created', 503],
      ['linked_account.created', 503],
      ['linked_account.created', 503],
      ['linked_account.updated', 200],
    ])
    const out = await cli('webhooks', ['deliveries', hook.id, ...storeArgs(db), '--state', 'failed'])
    expect(out.code).toBe(0)
    const lines = out.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^message_id\s+event\s+end_user_id\s+state\s+attempts\s+last_status/)
    expect(lines).toHaveLength(2)
    expect(lines[1]).toMatch(new RegExp(`^${mine[0].message_id}\\s+linked_account.created\\s+stuck\\s+failed\\s+5\\s+503`))
    const listed = JSON.parse((await cli('webhooks', ['list', ...storeArgs(db), '--json'])).stdout)
    expect(listed).toEqual([expect.objectContaining({ id: hook.id, org_id: ORG, environment: 'test', url: receiver.url, events: null, failed: 1 })])
    expect(JSON.stringify(listed)).not.toContain(hook.secret)
  })

  test('in order per end user while some attempts fail', async () => {
    const users = ['o1', 'o2', 'o3']
    let n = 0
    // Every third delivery's first attempt fails (deterministic, never twice in a row).
    policy = (r, all) => {
      if (!users.includes(userOf(r))) return 200
      const seen = all.filter((x) => x.message_id === r.message_id).length
      return seen === 1 && n++ % 3 === 0 ? 500 : 200
    }
    for (let i = 0; i < 8; i++) {
      for (const u of users) await client.upsertLinkedAccount({ linked_account_id: u, name: `${u}-${i}` })
    }
    const ids = await eventIdsByUser(client, users)
    await waitFor('every event acknowledged', () => users.every((u) => acked(receiver, u).length === ids[u].length))
    for (const u of users) {
      expect(acked(receiver, u).map((r) => Number(r.message_id))).toEqual(ids[u])
    }
    assertOrderPerUser(receiver.receipts, ids)
    expect(receiver.receipts.some((r) => users.includes(userOf(r)) && r.status === 500)).toBe(true)
  })

  test('logs never contain the secret or a signature', () => {
    expect(server.stderr).toContain('webhook delivered')
    expect(server.stderr).not.toContain(hook.secret)
    expect(server.stderr).not.toContain('v1=')
  })
})

describe('a server killed with SIGKILL mid-delivery', () => {
  let dir, db, client, receiver, server

  afterAll(async () => {
    await stopServer(server)
    if (receiver) await receiver.close()
    if (client) await client.close()
  })

  test('loses nothing: after a restart the unanswered delivery repeats with the same message_id, then the rest follow in order', async () => {
    dir = tempDir()
    db = storeOptions({ dir, name: 'crash.db' })
    client = await Client.open({ ...db, orgId: ORG, environment: 'test', encryptionKey: KEY })
    let hang = true
    receiver = await startReceiver(() => (hang ? 'hang' : 200))
    const created = await cli('webhooks', ['create', ...storeArgs(db), '--org', ORG, '--url', receiver.url, '--events', 'linked_account.created,linked_account.updated'])
    const hook = JSON.parse(created.stdout.trim().split('\n').pop())
    // A request timeout longer than the test needs to kill the server mid-request.
    server = await startServer(db, { LINKVAULT_WEBHOOK_TIMEOUT_MS: '2000' }).ready

    await client.upsertLinkedAccount({ linked_account_id: 'k1', name: 'a' })
    await client.upsertLinkedAccount({ linked_account_id: 'k2', name: 'a' })
    // Both first deliveries are in flight (one per end user), unanswered.
    await waitFor('two requests in flight', () => receiver.hung.length === 2)
    const inFlight = receiver.receipts.slice(0, 2)
    server.child.kill('SIGKILL')
    expect(await server.exited).toEqual({ code: null, signal: 'SIGKILL' })

    // While the server is down, more events are appended (by this process).
    await client.upsertLinkedAccount({ linked_account_id: 'k1', name: 'b' })
    await client.upsertLinkedAccount({ linked_account_id: 'k2', name: 'b' })
    await client.upsertLinkedAccount({ linked_account_id: 'k3' })
    await client.deleteLinkedAccount('k3') // filtered out by --events
    hang = false
    const restartedAt = Date.now()
    server = await startServer(db).ready

    const users = ['k1', 'k2', 'k3']
    const all = await eventIdsByUser(client, users)
    const ids = {}
    for (const u of users) {
      const page = await client.listEvents({ linked_account_id: u, types: ['linked_account.created', 'linked_account.updated'] })
      ids[u] = page.events.map((e) => e.id)
    }
    expect(all.k3.length).toBe(2)
    expect(ids).toEqual({ k1: [expect.any(Number), expect.any(Number)], k2: [expect.any(Number), expect.any(Number)], k3: [expect.any(Number)] })
    await waitFor('every event acknowledged after the restart', () => users.every((u) => acked(receiver, u).length === ids[u].length))
    for (const u of users) expect(acked(receiver, u).map((r) => Number(r.message_id))).toEqual(ids[u])
    // The unanswered deliveries came again, the same message and bytes, once their lease ran out.
    for (const lost of inFlight) {
      const again = receiver.receipts.filter((r) => r.message_id === lost.message_id && r.status === 200)
      expect(again).toHaveLength(1)
      expect(again[0].body).toBe(lost.body)
      expect(again[0].at).toBeGreaterThanOrEqual(restartedAt)
      expect(verifyWebhook(again[0].body, again[0].headers['x-linkvault-signature'], hook.secret)).toBe(true)
    }
    // Nothing else was sent twice, nothing filtered out was sent.
    const ackedIds = receiver.receipts.filter((r) => r.status === 200).map((r) => r.message_id)
    expect(new Set(ackedIds).size).toBe(ackedIds.length)
    expect(receiver.receipts.some((r) => r.data.event === 'linked_account.deleted')).toBe(false)
    assertOrderPerUser(receiver.receipts, ids)
    // The last answers may still be being recorded.
    const page = await waitFor('every delivery recorded as delivered', async () => {
      const p = await client.listWebhookDeliveries(hook.id)
      return p.deliveries.every((d) => d.state === 'delivered') && p
    })
    expect(page.deliveries).toHaveLength(5)
    // The repeat counted as a second attempt.
    expect(page.deliveries.filter((d) => d.attempts === 2).map((d) => d.message_id).sort()).toEqual(inFlight.map((r) => r.message_id).sort())

    // SIGTERM: a clean stop.
    server.child.kill('SIGTERM')
    expect(await server.exited).toEqual({ code: 0, signal: null })
  })
})

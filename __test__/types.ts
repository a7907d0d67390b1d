// Compiled with `tsc --noEmit` by `npm test`: the published typings must describe the API as
// users call it. Never executed.
import { Client, type LinkedAccount, type LinkedAccountPage, type LinkedAccountPayload } from 'linkvault'

async function main(): Promise<void> {
  const client: Client = await Client.open({
    path: './linkvault.db',
    orgId: 'org_123',
    environment: 'test',
    encryptionKey: '00'.repeat(32),
    durability: 'normal',
  })
  const payload: LinkedAccountPayload = {
    linked_account_id: 'user@example.com',
    name: 'Example',
    udf: { plan: 'pro', seats: 3 },
    your_app: { app_id: 'app_1', auth_credentials: { Authorization: 'Bearer x' } },
  }
  const created = await client.upsertLinkedAccount(payload, { ifVersion: 0 })
  const isNew: boolean = created.new_account
  const v: number = created.__v
  const org: string = created.associated_org
  const first = created.udf[0]
  const key: string = first.key_name
  const value: unknown = first.key_value
  const appId: string | undefined = created.your_app?.app_id
  const made = await client.createLinkedAccount({ account_id: 'alias-id' })
  const alwaysNew: true = made.new_account
  const got: LinkedAccount = await client.getLinkedAccountById('user@example.com')
  const page: LinkedAccountPage = await client.getAllLinkedAccounts({ page: 1, limit: 10, udf: { plan: 'pro' }, search: 'ex' })
  const next: number | null = page.nextPage
  const list = await client.listLinkedAccounts({ limit: 50 })
  const cursor: string | null = list.next
  if (cursor) await client.listLinkedAccounts({ after: cursor })
  const creds = await client.getLinkedAccountCredentials('user@example.com')
  const headers: Record<string, unknown> | undefined = creds?.auth_credentials
  const { message } = await client.deleteLinkedAccount('user@example.com')
  const m: 'User deleted successfully' = message
  const env: 'test' | 'production' = client.environment
  const orgId: string = client.orgId
  await client.close()
  void [isNew, v, org, key, value, appId, alwaysNew, got, next, headers, m, env, orgId]
}

// Reliability: integrity checks and key rotation.
async function reliability(): Promise<void> {
  const client = await Client.open({ path: ':memory:', encryptionKey: 'a'.repeat(64), previousEncryptionKeys: ['b'.repeat(64)] })
  const report = await client.checkIntegrity()
  const ok: boolean = report.ok
  const details: string[] = report.details
  const r = await client.rotateEncryptionKey('c'.repeat(64))
  const resealed: number = r.resealed
  const batches: number = r.batches
  const resumed: boolean = r.resumed
  const keyId: string = r.key_id
  await client.close()
  void [ok, details, resealed, batches, resumed, keyId]
}
void reliability
// @ts-expect-error previous keys are an array of strings
void Client.open({ previousEncryptionKeys: 'k' })

// @ts-expect-error environment is a closed set
void Client.open({ environment: 'staging' })
// @ts-expect-error payload fields are typed
void ({ linked_account_id: 5 } satisfies LinkedAccountPayload)

void main

// Webhooks: subscriptions, deliveries and the dispatcher's calls.
async function webhooks(): Promise<void> {
  const client = await Client.open({ path: ':memory:' })
  const made = await client.createWebhook({ url: 'https://h.example/hook', events: ['consent.received'] })
  const id: string = made.id
  const secret: string = made.secret
  const list = await client.listWebhooks({ orgId: 'o', environment: 'test' })
  const pending: number = list[0].pending
  const events: string[] | null = list[0].events
  const page = await client.listWebhookDeliveries(id, { state: 'failed', limit: 10 })
  const state: 'pending' | 'delivered' | 'failed' = page.deliveries[0].state
  const lastStatus: number | null = page.deliveries[0].last_status
  const claimed = await client.claimWebhookDeliveries({ limit: 5, lease_ms: 15000 })
  const after = await client.recordWebhookAttempt(claimed[0].id, { attempt: claimed[0].attempt, status: 204 })
  const body: string = claimed[0].body
  const where = await client.locateAuthSession('s')
  const org: string | undefined = where?.org_id
  await client.deleteWebhook(id)
  await client.close()
  void [secret, pending, events, state, lastStatus, after, body, org]
}
void webhooks
// @ts-expect-error delivery states are a closed set
void ({ state: 'done' } satisfies import('../index').WebhookDeliveryQuery)

// Compiled with `tsc --noEmit` by `npm test`: the published typings must describe the API as
// users call it. Never executed.
import { Client, LinkvaultError, type ErrorCode, type LinkedAccount, type LinkedAccountPage, type LinkedAccountPayload } from 'linkvault'

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

// Vendor compatibility: Fiskil end users and consent fields, Auth0 users.
async function compat(): Promise<void> {
  const client = await Client.open({ path: ':memory:', publicUrl: 'https://lv.example.com', appName: 'App', appLogo: 'https://a.example/l.png' })
  const { end_user_id } = await client.createEndUser({ email: 'user@example.com', name: 'John Doe', phone: '+61412345678', abn: '51824753556' })
  const eu = await client.getEndUser(end_user_id)
  const email: string | undefined = eu.email
  const many: Array<{ id: string }> = await client.getEndUsers({ email: 'user@example.com' })
  const updated: void = await client.updateEndUser(end_user_id, { phone: null })
  const deleted: void = await client.deleteEndUser(end_user_id)
  const session = await client.createAuthSession({ end_user_id })
  const authUrl: string = session.auth_url
  const redirect: string | null = session.redirect_uri
  const consent = await client.completeAuthSession(session.session_id, { account_ids: ['a'], institution_type: 'energy' })
  const type: 'banking' | 'energy' = consent.institution_type
  const accessed: string | null = (await client.recordConsentAccess(consent.arrangement_id)).last_accessed
  const appName: string | null = consent.app_name
  const user = await client.getUser('google-oauth2|1034')
  const own: string = user.identities[0].connection
  const meta: Record<string, unknown> = user.app_metadata
  const userEmail: string | null = user.email
  const byEmail = await client.getUsersByEmail('user@example.com')
  await client.linkIdentity('auth0|root', { provider: 'google-oauth2', user_id: 1034, connection_id: 'con_0123456789abcdef' })
  void [email, many, updated, deleted, authUrl, redirect, type, accessed, appName, own, meta, userEmail, byEmail]
}
void compat
// @ts-expect-error institution_type is a closed set
void ({ account_ids: ['a'], institution_type: 'telco' } satisfies import('linkvault').AuthSessionResult)
// @ts-expect-error previous keys are an array of strings
void Client.open({ previousEncryptionKeys: 'k' })

// @ts-expect-error environment is a closed set
void Client.open({ environment: 'staging' })
// @ts-expect-error payload fields are typed
void ({ linked_account_id: 5 } satisfies LinkedAccountPayload)

void main

// Operations, errors, events and the Client's construction.
async function operations(): Promise<void> {
  const client = await Client.open({ path: ':memory:' })
  const b = await client.backup('/tmp/copy.db')
  const bytes: number = b.bytes
  const s = await client.stats()
  const counts: number[] = [s.accounts, s.identities, s.consents, s.active_consents, s.tokens, s.events, s.database_bytes, s.wal_bytes, s.write_queue]
  const envName: 'test' | 'production' = s.environment
  const keys = await client.listSigningKeys()
  const retired: string | null = keys[0].retired_at
  const current: boolean = keys[0].current
  await client.checkIntegrity({ onProgress: ({ done, total }) => void [done satisfies number, total satisfies number] })
  await client.rotateEncryptionKey('d'.repeat(64), { onProgress: (p) => void p.done })
  // @ts-expect-error onProgress is a function
  await client.checkIntegrity({ onProgress: 1 })
  // @ts-expect-error pruneEvents needs `before`
  await client.pruneEvents({})
  await client.pruneEvents({ before: new Date() })
  client.onEvent((e) => {
    if (e.type === 'signing_key.added') {
      const reason: 'generated' | 'signingSecret' | 'rotated' = e.data.reason
      void reason
    }
    // @ts-expect-error not an event type
    if (e.type === 'linked_account.exploded') void e
  })
  const dispose: () => Promise<void> = client[Symbol.asyncDispose]
  try {
    await client.getLinkedAccountById('x')
  } catch (err) {
    if (err instanceof LinkvaultError) {
      const code: ErrorCode = err.code
      const status: number = err.status
      const field: string | undefined = err.field
      void [code, status, field]
    }
  }
  // @ts-expect-error not an error code
  void ('NOPE' satisfies ErrorCode)
  // @ts-expect-error Client has no public constructor
  void new Client()
  void [bytes, counts, envName, retired, current, dispose]
}
void operations
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

// Cobalt compatibility (issue 12): `your_app` is validated as Cobalt validates it. Payloads are the
// seeds' own (../shared/seeds/000_* and 001_*: Cobalt/Refold's "Set Up Linked Accounts"), verbatim.
const { openClient } = require('./helpers')

// Seed 000, the NodeJS SDK example.
const SEED_000_SDK = {
  linked_account_id: "user@example.com",
  name: "User2",
  udf: {
    "phone": "1234567890",
    "address": "121, Queen Street"
  },
  your_app: {
    auth_credentials:{
      "Authorization": "eyJvcmdfaWQiOiI2M2M5M2RhMGI0NmI3MjQzNzg1YTFlMTciLCJsaW5rZWRfYWNjb3VudF9pZCI6IjEyMzQ1Njc4IiwiZW52aXJvbm1lbnQiOiJ0ZXN0IiwiaWF0IjoxNjg2NjQzMDg5LCJleHAiOjE2ODY5MDIyODl9"
    }
  }
}
// Seed 000, the cURL body.
const SEED_000_CURL = {
  "linked_account_id": "<string>",
  "name": "<string>",
  "your_app": {
    "auth_credentials":
        {
            "Authorization": "eyJvcmdfaWQiOiI2M2M5M2RhMGI0NmI3MjQzNzg1YTFlMTciLCJsaW5rZWRfYWNjb3VudF9pZCI6IjEyMzQ1Njc4IiwiZW52aXJvbm1lbnQiOiJ0ZXN0IiwiaWF0IjoxNjg2NjQzMDg5LCJleHAiOjE2ODY5MDIyODl9"
        }
  },
  "udf": {
    "phone": "1234567890",
    "address": "121, Queen Street"
  }
}
// Seed 001, the older cURL body as the page prints it: `Authorization` sits directly in
// `your_app`, next to `app_id` (the page lost its `auth_credentials` wrapper and closing braces).
const SEED_001_CURL = {
  "linked_account_id": "<string>",
  "name": "<string>",
  "your_app": {
    "app_id": "64da0b57c9ae95561bb0a2ea",
            "Authorization": "eyJvcmdfaWQiOiI2M2M5M2RhMGI0NmI3MjQzNzg1YTFlMTciLCJsaW5rZWRfYWNjb3VudF9pZCI6IjEyMzQ1Njc4IiwiZW52aXJvbm1lbnQiOiJ0ZXN0IiwiaWF0IjoxNjg2NjQzMDg5LCJleHAiOjE2ODY5MDIyODl9"
  },
  "udf": {
    "phone": "1234567890",
    "address": "121, Queen Street"
  }
}
const TOKEN = SEED_000_SDK.your_app.auth_credentials.Authorization

let client
beforeAll(async () => {
  client = await openClient()
})
afterAll(() => client.close())

async function eventCount() {
  let after = 0
  let count = 0
  for (;;) {
    const page = await client.listEvents({ after, limit: 1000 })
    count += page.events.length
    if (page.events.length) after = page.events[page.events.length - 1].id
    if (page.next === null) return count
  }
}

test("seed 000's SDK and cURL payloads are accepted and their credentials sealed", async () => {
  const a = await client.upsertLinkedAccount(SEED_000_SDK)
  expect(a).toMatchObject({ account_id: 'user@example.com', name: 'User2', your_app: {}, new_account: true })
  expect(await client.getLinkedAccountCredentials('user@example.com')).toEqual({ auth_credentials: { Authorization: TOKEN } })
  const b = await client.upsertLinkedAccount(SEED_000_CURL)
  expect(b.account_id).toBe('<string>')
  expect(JSON.stringify(b)).not.toContain(TOKEN)
})

test("seed 001's payload (a header directly in your_app) → VALIDATION_ERROR naming it; nothing is lost silently", async () => {
  const before = await eventCount()
  for (const call of [() => client.upsertLinkedAccount(SEED_001_CURL), () => client.createLinkedAccount(SEED_001_CURL)]) {
    const err = await call().catch((e) => e)
    expect(err).toMatchObject({ code: 'VALIDATION_ERROR', status: 400, field: 'your_app.Authorization' })
    expect(err.message).toContain('auth_credentials')
    // The message names the key, never its value.
    expect(err.message).not.toContain(TOKEN)
  }
  expect(await eventCount()).toBe(before)
  // The same payload with the header where Cobalt reads it is accepted, app_id included.
  const { Authorization, ...rest } = SEED_001_CURL.your_app
  const ok = await client.upsertLinkedAccount({ ...SEED_001_CURL, linked_account_id: 'seed-001', your_app: { ...rest, auth_credentials: { Authorization } } })
  expect(ok.your_app).toEqual({ app_id: '64da0b57c9ae95561bb0a2ea' })
})

test.each([
  ['your_app with app_id only', { app_id: '64da0b57c9ae95561bb0a2ea' }, 'your_app.auth_credentials'],
  ['an empty your_app', {}, 'your_app.auth_credentials'],
  ['auth_credentials null', { app_id: 'a', auth_credentials: null }, 'your_app.auth_credentials'],
  ['auth_credentials a string', { auth_credentials: 'Bearer x' }, 'your_app.auth_credentials'],
  ['an unknown key', { auth_credentials: {}, 'x-api-key': 'k' }, 'your_app.x-api-key'],
  ['a typo of auth_credentials', { authCredentials: { Authorization: 'Bearer x' } }, 'your_app.authCredentials'],
])('%s → VALIDATION_ERROR (%#)', async (_label, yourApp, field) => {
  await expect(client.upsertLinkedAccount({ linked_account_id: 'v', your_app: yourApp })).rejects.toMatchObject({
    code: 'VALIDATION_ERROR',
    field,
  })
  // Also nested under the v3 `payload`.
  await expect(client.upsertLinkedAccount({ linked_account_id: 'v', payload: { your_app: yourApp } })).rejects.toMatchObject({
    code: 'VALIDATION_ERROR',
    field,
  })
  await expect(client.getLinkedAccountById('v')).rejects.toMatchObject({ code: 'NOT_FOUND' })
})

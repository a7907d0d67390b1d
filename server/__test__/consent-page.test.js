'use strict'
// The sandbox consent page at an auth session's auth_url, driven in a real headless Chromium
// (Debian's `chromium`, through playwright-core). `.ci/run` installs Chromium; without it this
// suite fails (it never skips).

const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { Writable } = require('node:stream')

const pino = require('pino')
const { chromium } = require('playwright-core')

const { Client } = require('linkvault')
const { buildServer } = require('..')
const { loggerOptions } = require('../lib/logger')
const { tempDir } = require('./webhook-helpers')
const { storeOptions } = require('../../__test__/helpers')

const CHROMIUM = '/usr/bin/chromium'
const ORG = 'org_consent'

/** A relying party: where redirect_uri and cancel_uri lead (answers a tiny page). */
async function startApp() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' })
    res.end(`<!doctype html><title>app</title><p id="landed">${req.url.replace(/[<>&]/g, '')}</p>`)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) }
}

describe('sandbox consent page in headless Chromium', () => {
  let db, client, prod, app, base, rp, context, logs, encryptionKey
  const pages = []

  beforeAll(async () => {
    db = storeOptions({ dir: tempDir('lv-consent-'), name: 'consent.db' })
    // One explicit key: production scopes get no key file.
    encryptionKey = require('node:crypto').randomBytes(32).toString('hex')
    client = await Client.open({ ...db, orgId: ORG, environment: 'test', encryptionKey })
    prod = await Client.open({ ...db, orgId: ORG, environment: 'production', encryptionKey })
    logs = ''
    const sink = new Writable({
      write(chunk, _enc, cb) {
        logs += chunk
        cb()
      },
    })
    // Sessions of end users named sdk_* are shown to the page without redirect_uri/cancel_uri,
    // as Fiskil's Link SDK flow creates them (the core under this branch still requires the
    // URIs at creation; everything else is the real client).
    const linkSdkView = new Proxy(client, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target)
        if (prop === 'getAuthSession') {
          return async (id) => {
            const s = await target.getAuthSession(id)
            return s.end_user_id.startsWith('sdk_') ? { ...s, redirect_uri: null, cancel_uri: null } : s
          }
        }
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
    app = await buildServer({ client: linkSdkView, webhooks: false, loggerInstance: pino(loggerOptions('info'), sink) })
    await app.listen({ host: '127.0.0.1', port: 0 })
    base = `http://127.0.0.1:${app.server.address().port}`
    rp = await startApp()
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)`)
    // A fresh profile per run; launch failures fail the suite.
    context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'lv-chromium-')), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    })
  })

  afterAll(async () => {
    if (context) await context.close()
    if (app) await app.close()
    if (rp) await rp.close()
    if (prod) await prod.close()
    if (client) await client.close()
  })

  async function newPage() {
    const page = await context.newPage()
    pages.push(page)
    return page
  }

  async function session(endUser, extra = {}) {
    await client.upsertLinkedAccount({ linked_account_id: endUser })
    const s = await client.createAuthSession({ end_user_id: endUser, redirect_uri: `${rp.url}/done?state=xyz`, cancel_uri: `${rp.url}/cancelled`, ...extra })
    return { ...s, page_url: `${base}/link/session/${encodeURIComponent(s.session_id)}` }
  }

  test('an end user picks an institution, accounts and permissions and consents: 303 to redirect_uri with the consent id', async () => {
    const s = await session('eu_consent')
    const page = await newPage()
    const first = await page.goto(s.page_url)
    expect(first.status()).toBe(200)
    expect(first.headers()['content-type']).toMatch(/^text\/html/)
    expect(first.headers()['cache-control']).toBe('no-store')
    await expect(page.title()).resolves.toBe('Connect your accounts')
    await page.getByLabel('Sandbox Credit Union').check()
    await Promise.all([page.waitForURL(/institution_id=sandbox-credit-union/), page.getByRole('button', { name: 'Continue' }).click()])
    await expect(page.locator('h1').textContent()).resolves.toBe('Share data from Sandbox Credit Union')
    await page.getByLabel('Home Loan Offset').uncheck()
    await page.getByLabel('payees').uncheck()
    await page.getByLabel('Share for').selectOption('180')
    await Promise.all([page.waitForURL(`${rp.url}/done?**`), page.getByRole('button', { name: 'Consent', exact: true }).click()])
    const landed = new URL(page.url())
    expect(landed.pathname).toBe('/done')
    expect(landed.searchParams.get('state')).toBe('xyz')
    const consentId = landed.searchParams.get('consent_id')
    expect(consentId).toBeTruthy()
    const [consent] = await client.listConsents({ end_user_id: 'eu_consent' })
    expect(consent).toMatchObject({
      arrangement_id: consentId,
      active: true,
      institution_id: 'sandbox-credit-union',
      institution_name: 'Sandbox Credit Union',
      permissions: ['accounts', 'balances', 'transactions'],
      duration: 180 * 86400,
    })
    expect(consent.account_ids).toHaveLength(1)
    expect(consent.account_ids[0]).toMatch(/^acc_[0-9a-f]{20}$/)
    await expect(client.getAuthSession(s.session_id)).resolves.toMatchObject({ status: 'completed', consent_id: consentId })
    // Single use: the link now says so.
    const again = await page.goto(s.page_url)
    expect(again.status()).toBe(409)
    await expect(page.locator('h1').textContent()).resolves.toBe('Already completed')
  })

  test('a renewal session shows the consent\'s institution and accounts; consenting renews the same consent', async () => {
    const [before] = await client.listConsents({ end_user_id: 'eu_consent' })
    const s = await client.createAuthSession({ end_user_id: 'eu_consent', redirect_uri: `${rp.url}/done`, cancel_uri: `${rp.url}/cancelled`, arrangement_id: before.arrangement_id })
    const page = await newPage()
    await page.goto(`${base}/link/session/${s.session_id}`)
    await expect(page.locator('h1').textContent()).resolves.toBe('Renew your consent with Sandbox Credit Union')
    const checked = await page.locator('input[name=account_ids]:checked').evaluateAll((els) => els.map((e) => e.value))
    expect(checked).toEqual(before.account_ids)
    expect(await page.locator('input[name=permissions]').evaluateAll((els) => els.map((e) => e.value))).toEqual(before.permissions)
    await Promise.all([page.waitForURL(`${rp.url}/done?**`), page.getByRole('button', { name: 'Consent', exact: true }).click()])
    expect(new URL(page.url()).searchParams.get('consent_id')).toBe(before.arrangement_id)
    const after = await client.listConsents({ end_user_id: 'eu_consent' })
    expect(after).toHaveLength(1)
    expect(after[0]).toMatchObject({ arrangement_id: before.arrangement_id, active: true, account_ids: before.account_ids, duration: 90 * 86400 })
  })

  test('cancelling: 303 to cancel_uri with Fiskil\'s error and error_type', async () => {
    const s = await session('eu_cancel')
    const page = await newPage()
    await page.goto(s.page_url)
    await Promise.all([page.waitForURL(`${rp.url}/cancelled?**`), page.getByRole('button', { name: 'Cancel' }).click()])
    const q = new URL(page.url()).searchParams
    expect(q.get('error')).toBe('access_denied')
    expect(q.get('error_type')).toBe('AUTH_SESSION_CANCELLED')
    expect(q.get('error_id')).toMatch(/^err_[0-9a-f]{24}$/)
    expect(q.get('error_description')).toBeTruthy()
    await expect(client.getAuthSession(s.session_id)).resolves.toMatchObject({ status: 'cancelled', error_type: 'AUTH_SESSION_CANCELLED' })
    await expect(client.listConsents({ end_user_id: 'eu_cancel' })).resolves.toEqual([])
  })

  test('a simulated failure from the consent step carries its error type', async () => {
    const s = await session('eu_denied', { institution_id: 'sandbox-energy', permissions: ['accounts', 'usage'] })
    const page = await newPage()
    await page.goto(s.page_url)
    // The session locks the institution: straight to the consent step, with its permissions.
    await expect(page.locator('h1').textContent()).resolves.toBe('Share data from Sandbox Energy')
    expect(await page.getByLabel('usage').isChecked()).toBe(true)
    expect(await page.locator('input[name=permissions]').count()).toBe(2)
    await page.locator('summary').click()
    await page.getByLabel('Error type').selectOption('CONSENT_UPSTREAM_PROCESSING_ERROR')
    await Promise.all([page.waitForURL(`${rp.url}/cancelled?**`), page.getByRole('button', { name: 'Fail the consent' }).click()])
    const q = new URL(page.url()).searchParams
    expect(q.get('error')).toBe('server_error')
    expect(q.get('error_type')).toBe('CONSENT_UPSTREAM_PROCESSING_ERROR')
    await expect(client.getAuthSession(s.session_id)).resolves.toMatchObject({ status: 'cancelled', error_type: 'CONSENT_UPSTREAM_PROCESSING_ERROR' })
  })

  test('consenting with nothing chosen shows the step again with a message; a locked institution is kept', async () => {
    const s = await session('eu_empty', { institution_id: 'sandbox-bank' })
    const page = await newPage()
    await page.goto(s.page_url)
    for (const box of await page.locator('input[name=account_ids]').all()) await box.uncheck()
    const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.getByRole('button', { name: 'Consent', exact: true }).click()])
    expect(res.status()).toBe(400)
    await expect(page.getByRole('alert').textContent()).resolves.toBe('Choose at least one account to share.')
    // A forged institution in the form does not get past the lock.
    const form = await fetch(`${base}/link/session/${s.session_id}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ action: 'consent', institution_id: 'sandbox-energy', account_ids: 'acc_x', permissions: 'accounts', duration_days: '90' }),
      redirect: 'manual',
    })
    expect(form.status).toBe(400)
    await expect(client.getAuthSession(s.session_id)).resolves.toMatchObject({ status: 'pending' })
  })

  test('without redirect_uri (the Link SDK flow) consenting ends on a done page with the consent id', async () => {
    const s = await session('sdk_user', { institution_id: 'sandbox-bank' })
    const page = await newPage()
    await page.goto(s.page_url)
    const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.getByRole('button', { name: 'Consent', exact: true }).click()])
    expect(res.status()).toBe(200)
    await expect(page.locator('h1').textContent()).resolves.toBe('Consent complete')
    const consentId = await page.locator('#consent-id').textContent()
    await expect(client.listConsents({ end_user_id: 'sdk_user' })).resolves.toEqual([expect.objectContaining({ arrangement_id: consentId, institution_id: 'sandbox-bank', duration: 90 * 86400 })])
    expect(page.url()).toBe(s.page_url)
    // And cancelling another one ends on a page too.
    const c = await session('sdk_cancel')
    await page.goto(c.page_url)
    await page.getByRole('button', { name: 'Cancel' }).click()
    await expect(page.locator('h1').textContent()).resolves.toBe('Consent cancelled')
    await expect(page.locator('#error-type').textContent()).resolves.toBe('AUTH_SESSION_CANCELLED')
  })

  test('a session of another org on the same store: the page acts in that org', async () => {
    const other = await Client.open({ ...db, orgId: 'org_other', environment: 'test', encryptionKey })
    try {
      await other.upsertLinkedAccount({ linked_account_id: 'eu_other' })
      const s = await other.createAuthSession({ end_user_id: 'eu_other', redirect_uri: `${rp.url}/done`, cancel_uri: `${rp.url}/cancelled`, institution_id: 'sandbox-bank' })
      const page = await newPage()
      await page.goto(`${base}/link/session/${s.session_id}`)
      await Promise.all([page.waitForURL(`${rp.url}/done?**`), page.getByRole('button', { name: 'Consent', exact: true }).click()])
      const consentId = new URL(page.url()).searchParams.get('consent_id')
      await expect(other.listConsents({ end_user_id: 'eu_other' })).resolves.toEqual([expect.objectContaining({ arrangement_id: consentId })])
      await expect(client.listConsents({ end_user_id: 'eu_other' })).rejects.toMatchObject({ code: 'NOT_FOUND' })
    } finally {
      await other.close()
    }
  })

  test('the older /v1/sandbox/consent?session_id= address leads to the page', async () => {
    const s = await session('eu_alias')
    const res = await fetch(`${base}/v1/sandbox/consent?session_id=${encodeURIComponent(s.session_id)}`, { redirect: 'manual' })
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe(`/link/session/${encodeURIComponent(s.session_id)}`)
    const missing = await fetch(`${base}/v1/sandbox/consent`, { redirect: 'manual' })
    expect(missing.status).toBe(400)
  })

  test('the page is in the OpenAPI document', async () => {
    const doc = await (await fetch(`${base}/openapi.json`)).json()
    expect(Object.keys(doc.paths['/link/session/{session_id}']).sort()).toEqual(['get', 'post'])
  })

  test('unknown sessions and production sessions get a 404 page; expired ones a 410', async () => {
    const unknown = await fetch(`${base}/link/session/not-a-session`)
    expect(unknown.status).toBe(404)
    expect(unknown.headers.get('content-type')).toMatch(/^text\/html/)
    await prod.upsertLinkedAccount({ linked_account_id: 'eu_prod' })
    const p = await prod.createAuthSession({ end_user_id: 'eu_prod', redirect_uri: `${rp.url}/done`, cancel_uri: `${rp.url}/cancelled` })
    const res = await fetch(`${base}/link/session/${p.session_id}`)
    expect(res.status).toBe(404)
    const post = await fetch(`${base}/link/session/${p.session_id}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'action=cancel', redirect: 'manual' })
    expect(post.status).toBe(404)
    await expect(prod.getAuthSession(p.session_id)).resolves.toMatchObject({ status: 'pending' })
    await client.upsertLinkedAccount({ linked_account_id: 'eu_late' })
    const late = await client.createAuthSession({ end_user_id: 'eu_late', redirect_uri: `${rp.url}/done`, cancel_uri: `${rp.url}/cancelled`, ttl_seconds: 1 })
    await new Promise((r) => setTimeout(r, 2100)) // expires_at is whole seconds
    const gone = await fetch(`${base}/link/session/${late.session_id}`)
    expect(gone.status).toBe(410)
  })

  test('the page uses no script and no external asset, and logs never carry the session id', async () => {
    const s = await session('eu_assets')
    const page = await newPage()
    const requested = []
    page.on('request', (r) => requested.push(r.url()))
    await page.goto(s.page_url)
    expect(requested.every((u) => u.startsWith(base))).toBe(true)
    expect(await page.locator('script').count()).toBe(0)
    expect(await page.locator('link[rel=stylesheet], img[src^=http]').count()).toBe(0)
    expect(logs).toContain('/link/session/[REDACTED]')
    expect(logs).not.toContain(s.session_id)
  })
})

'use strict'
// The sandbox consent page at each auth session's `auth_url`: `/link/session/:session_id`
// (test environment only). An end user picks an institution, then accounts, permissions and a
// duration, and consents or cancels:
//
// - consent: the session completes through `completeAuthSession` (a consent is created, or
//   renewed for a renewal session), then 303 to `redirect_uri?consent_id=…`, or, without a
//   redirect_uri (Fiskil's Link SDK flow), a page saying it is done;
// - cancel (or a simulated failure): `cancelAuthSession` with Fiskil's error type, then 303 to
//   `cancel_uri?error=…&error_type=…&error_id=…&error_description=…`, or a page saying so.
//
// Server-rendered HTML with no script and no external asset. The session id in the path is the
// bearer secret (single use, as Fiskil's): whoever holds it may act on the session, as with
// Fiskil's own auth_url. The institutions and accounts are made up (a sandbox).

const crypto = require('node:crypto')

const PATH = '/link/session/:session_id'

/** Sandbox institutions: `[key, name]` accounts each. */
const INSTITUTIONS = [
  {
    id: 'sandbox-bank',
    name: 'Sandbox Bank',
    type: 'banking',
    accounts: [
      ['everyday', 'Everyday Account'],
      ['savings', 'Savings Account'],
      ['credit-card', 'Credit Card'],
    ],
  },
  {
    id: 'sandbox-credit-union',
    name: 'Sandbox Credit Union',
    type: 'banking',
    accounts: [
      ['everyday', 'Everyday Account'],
      ['offset', 'Home Loan Offset'],
    ],
  },
  {
    id: 'sandbox-energy',
    name: 'Sandbox Energy',
    type: 'energy',
    accounts: [
      ['electricity', 'Electricity (NMI 6102…)'],
      ['gas', 'Gas (MIRN 5321…)'],
    ],
  },
]

/** Permissions offered when the session names none (Fiskil's banking and energy data sets). */
const PERMISSIONS = {
  banking: ['accounts', 'balances', 'transactions', 'payees'],
  energy: ['accounts', 'billing', 'usage'],
}

const DURATIONS_DAYS = [30, 90, 180, 365]
const DEFAULT_DURATION_DAYS = 90

/** Failures a tester can simulate, with Fiskil's `error` for each error type. */
const FAILURES = {
  AUTH_SESSION_CANCELLED: { error: 'access_denied', description: 'The end user cancelled the consent flow.' },
  CONSENT_ENDUSER_DENIED: { error: 'access_denied', description: 'The end user denied consent at the institution.' },
  CONSENT_OTP_FAILURE: { error: 'access_denied', description: 'The end user could not complete the one-time password step.' },
  CONSENT_ENDUSER_INELIGIBLE: { error: 'access_denied', description: 'The end user is not eligible to share data from this institution.' },
  CONSENT_TIMEOUT: { error: 'server_error', description: 'The consent flow timed out.' },
  CONSENT_UPSTREAM_PROCESSING_ERROR: { error: 'server_error', description: 'The institution failed to process the consent.' },
  CONSUMERDATA_PROCESSING_ERROR: { error: 'server_error', description: 'The consumer data could not be processed.' },
}

function escape(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
}

/** An institution by id: a sandbox one, or the one a session locks (unknown ones as banking). */
function institution(id) {
  return INSTITUTIONS.find((i) => i.id === id) || { id, name: id, type: 'banking', accounts: INSTITUTIONS[0].accounts }
}

/** Account ids stable per end user and institution (a returning user sees the same ones). */
function accountsOf(inst, endUserId) {
  return inst.accounts.map(([key, name]) => ({
    id: `acc_${crypto.createHash('sha256').update(`${endUserId}\u0000${inst.id}\u0000${key}`).digest('hex').slice(0, 20)}`,
    name,
  }))
}

function list(value) {
  if (value === undefined || value === null || value === '') return []
  return (Array.isArray(value) ? value : [value]).map(String)
}

const STYLE = `
body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f3f4f6;color:#111827}
main{max-width:32rem;margin:2rem auto;background:#fff;border-radius:12px;padding:1.5rem 1.75rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.3rem;margin:0 0 .25rem}p.sub{color:#6b7280;margin:0 0 1.25rem}
fieldset{border:1px solid #e5e7eb;border-radius:8px;margin:0 0 1rem;padding:.75rem 1rem}
legend{font-weight:600;padding:0 .25rem}label{display:block;margin:.3rem 0;cursor:pointer}
.row{display:flex;gap:.75rem;flex-wrap:wrap;margin-top:1rem}
button{font:inherit;border-radius:8px;border:1px solid #d1d5db;background:#fff;padding:.55rem 1.1rem;cursor:pointer}
button.primary{background:#111827;color:#fff;border-color:#111827}
.banner{background:#fef3c7;color:#92400e;font-size:.85rem;border-radius:6px;padding:.35rem .6rem;margin-bottom:1rem}
.error{background:#fee2e2;color:#991b1b;border-radius:6px;padding:.5rem .75rem;margin-bottom:1rem}
code{background:#f3f4f6;padding:.1rem .3rem;border-radius:4px;word-break:break-all}
details{margin-top:1.25rem;color:#374151}select{font:inherit;padding:.3rem}
`

function page(title, body) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex"><title>${escape(title)}</title><style>${STYLE}</style></head>
<body><main><div class="banner">Sandbox: no real institution is contacted.</div>
${body}
</main></body></html>
`
}

function messagePage(title, text, extra = '') {
  return page(title, `<h1>${escape(title)}</h1><p class="sub" id="message">${escape(text)}</p>${extra}`)
}

function cancelForm(action) {
  const options = Object.keys(FAILURES)
    .filter((t) => t !== 'AUTH_SESSION_CANCELLED')
    .map((t) => `<option value="${t}">${t}</option>`)
    .join('')
  return `<details><summary>Simulate a failure</summary>
<form method="post" action="${escape(action)}">
<input type="hidden" name="action" value="cancel">
<label>Error type <select name="error_type">${options}</select></label>
<div class="row"><button type="submit">Fail the consent</button></div></form></details>`
}

function institutionStep(action, session, error) {
  const choices = INSTITUTIONS.map(
    (i, n) => `<label><input type="radio" name="institution_id" value="${escape(i.id)}"${n === 0 ? ' checked' : ''}> ${escape(i.name)} <small>(${i.type})</small></label>`,
  ).join('\n')
  return page(
    'Connect your accounts',
    `<h1>Connect your accounts</h1><p class="sub">Choose your institution.</p>
${error ? `<div class="error" role="alert">${escape(error)}</div>` : ''}
<form method="get" action="${escape(action)}">
<fieldset><legend>Institution</legend>${choices}</fieldset>
<div class="row"><button class="primary" type="submit">Continue</button></div></form>
<form method="post" action="${escape(action)}"><input type="hidden" name="action" value="cancel">
<div class="row"><button type="submit" name="error_type" value="AUTH_SESSION_CANCELLED">Cancel</button></div></form>
${cancelForm(action)}`,
  )
}

function consentStep(action, session, inst, permissions, renewal, error) {
  const accounts = accountsOf(inst, session.end_user_id)
  const selected = new Set(renewal ? renewal.account_ids : accounts.map((a) => a.id))
  const accountBoxes = accounts
    .map((a) => `<label><input type="checkbox" name="account_ids" value="${escape(a.id)}"${selected.has(a.id) ? ' checked' : ''}> ${escape(a.name)}</label>`)
    .join('\n')
  const permissionBoxes = permissions.map((p) => `<label><input type="checkbox" name="permissions" value="${escape(p)}" checked> ${escape(p)}</label>`).join('\n')
  const durations = DURATIONS_DAYS.map((d) => `<option value="${d}"${d === DEFAULT_DURATION_DAYS ? ' selected' : ''}>${d} days</option>`).join('')
  const title = renewal ? `Renew your consent with ${inst.name}` : `Share data from ${inst.name}`
  return page(
    title,
    `<h1>${escape(title)}</h1><p class="sub">Choose what to share, and for how long.</p>
${error ? `<div class="error" role="alert">${escape(error)}</div>` : ''}
<form method="post" action="${escape(action)}">
<input type="hidden" name="institution_id" value="${escape(inst.id)}">
<fieldset><legend>Accounts</legend>${accountBoxes}</fieldset>
<fieldset><legend>Permissions</legend>${permissionBoxes}</fieldset>
<fieldset><legend>Duration</legend><label>Share for <select name="duration_days">${durations}</select></label></fieldset>
<div class="row"><button class="primary" type="submit" name="action" value="consent">Consent</button>
<button type="submit" name="action" value="cancel" formnovalidate>Cancel</button></div></form>
${cancelForm(action)}`,
  )
}

function withQuery(uri, params) {
  const url = new URL(uri)
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v)
  return url.href
}

function send(reply, status, html) {
  return reply.code(status).type('text/html; charset=utf-8').send(html)
}

const STATUS_PAGES = {
  completed: [409, 'Already completed', 'This consent link has already been used.'],
  cancelled: [409, 'Already cancelled', 'This consent link was cancelled.'],
  expired: [410, 'Link expired', 'This consent link has expired. Ask for a new one.'],
}

const NOT_FOUND = [404, 'Link not found', 'This consent link is not valid.']

async function consentPage(app) {
  const { client: root, scopes } = app.linkvault

  /** `{ client, session }` for a test-environment session, else null. */
  async function load(sessionId) {
    let found
    try {
      found = await root.locateAuthSession(sessionId)
    } catch (e) {
      if (e && e.code === 'VALIDATION_ERROR') return null
      throw e
    }
    // Sandbox only: production sessions are completed by your own consent flow.
    if (!found || found.environment !== 'test') return null
    const client = await scopes.client(found.org_id, found.environment, { create: false })
    const session = await client.getAuthSession(sessionId)
    return { client, session }
  }

  /** What the consent step offers: the institution, permissions, and the consent renewed. */
  async function offer(client, session, requestedInstitution) {
    let renewal = null
    if (session.arrangement_id) {
      renewal = await client.getConsent(session.arrangement_id)
    }
    const institutionId = (renewal && renewal.institution_id) || session.institution_id || requestedInstitution
    if (!institutionId) return null
    const inst = institution(institutionId)
    const permissions = session.permissions || (renewal && renewal.permissions) || PERMISSIONS[inst.type]
    return { inst, permissions, renewal }
  }

  function headers(reply) {
    reply.header('cache-control', 'no-store')
    reply.header('referrer-policy', 'no-referrer')
    reply.header('x-content-type-options', 'nosniff')
    reply.header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'")
  }

  const schema = {
    tags: ['consent page'],
    params: { type: 'object', properties: { session_id: { type: 'string', description: "The auth session's session_id" } }, required: ['session_id'] },
  }

  // The address older auth_urls used (`/v1/sandbox/consent?session_id=…`): sent on to the page.
  app.get(
    '/v1/sandbox/consent',
    {
      schema: {
        tags: ['consent page'],
        summary: 'Redirects (303) to the consent page /link/session/:session_id',
        querystring: { type: 'object', properties: { session_id: { type: 'string' } }, required: ['session_id'] },
      },
      config: { vendor: 'fiskil' },
    },
    async (request, reply) => {
      headers(reply)
      return reply.redirect(`/link/session/${encodeURIComponent(request.query.session_id)}`, 303)
    },
  )

  app.get(
    PATH,
    {
      schema: {
        ...schema,
        summary: 'Sandbox consent page (test environment): choose an institution, then accounts and permissions',
        description: 'HTML. Without `institution_id` (and when the session does not lock one), the institution step; with it, the consent step.',
        querystring: { type: 'object', properties: { institution_id: { type: 'string' } } },
        produces: ['text/html'],
      },
      attachValidation: true,
    },
    async (request, reply) => {
      headers(reply)
      const loaded = request.validationError ? null : await load(request.params.session_id)
      if (!loaded) return send(reply, NOT_FOUND[0], messagePage(NOT_FOUND[1], NOT_FOUND[2]))
      const { client, session } = loaded
      const done = STATUS_PAGES[session.status]
      if (done) return send(reply, done[0], messagePage(done[1], done[2]))
      const action = request.url.split('?')[0]
      const requested = typeof request.query.institution_id === 'string' ? request.query.institution_id : undefined
      if (requested !== undefined && !INSTITUTIONS.some((i) => i.id === requested) && requested !== session.institution_id) {
        return send(reply, 400, institutionStep(action, session, 'Choose one of the institutions listed.'))
      }
      const o = await offer(client, session, requested)
      if (!o) return send(reply, 200, institutionStep(action, session))
      return send(reply, 200, consentStep(action, session, o.inst, o.permissions, o.renewal))
    },
  )

  app.post(
    PATH,
    {
      schema: {
        ...schema,
        summary: 'Consent (303 to redirect_uri with consent_id) or cancel (303 to cancel_uri with error, error_type)',
        consumes: ['application/x-www-form-urlencoded'],
        body: {
          type: 'object',
          properties: {
            action: { type: 'string', enum: ['consent', 'cancel'] },
            institution_id: { type: 'string' },
            // A form sends one value as a string, several as an array.
            account_ids: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }] },
            permissions: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }] },
            duration_days: { type: 'string' },
            error_type: { type: 'string', enum: Object.keys(FAILURES) },
          },
          required: ['action'],
        },
      },
      attachValidation: true,
    },
    async (request, reply) => {
      headers(reply)
      const body = request.body && typeof request.body === 'object' ? request.body : {}
      const loaded = await load(request.params.session_id)
      if (!loaded) return send(reply, NOT_FOUND[0], messagePage(NOT_FOUND[1], NOT_FOUND[2]))
      const { client, session } = loaded
      const done = STATUS_PAGES[session.status]
      if (done) return send(reply, done[0], messagePage(done[1], done[2]))
      const action = request.url.split('?')[0]
      if (request.validationError) {
        return send(reply, 400, institutionStep(action, session, 'The form was not filled in as expected; please try again.'))
      }

      if (body.action === 'cancel') {
        const errorType = body.error_type || 'AUTH_SESSION_CANCELLED'
        const failure = FAILURES[errorType]
        try {
          await client.cancelAuthSession(session.session_id, { error_type: errorType })
        } catch (e) {
          return finishError(reply, e)
        }
        request.log.info({ auth_session: session.id, error_type: errorType }, 'consent page: session cancelled')
        if (!session.cancel_uri) {
          return send(reply, 200, messagePage('Consent cancelled', 'You can close this window.', `<p>Error type: <code id="error-type">${escape(errorType)}</code></p>`))
        }
        return reply.redirect(
          withQuery(session.cancel_uri, {
            error: failure.error,
            error_type: errorType,
            error_id: `err_${crypto.randomBytes(12).toString('hex')}`,
            error_description: failure.description,
          }),
          303,
        )
      }

      const o = await offer(client, session, typeof body.institution_id === 'string' ? body.institution_id : undefined)
      if (!o) return send(reply, 400, institutionStep(action, session, 'Choose an institution first.'))
      const offered = new Set(accountsOf(o.inst, session.end_user_id).map((a) => a.id))
      const accountIds = list(body.account_ids).filter((a) => offered.has(a))
      const permissions = list(body.permissions).filter((p) => o.permissions.includes(p))
      const days = Number(body.duration_days)
      const retry = (message) => send(reply, 400, consentStep(action, session, o.inst, o.permissions, o.renewal, message))
      if (accountIds.length === 0) return retry('Choose at least one account to share.')
      if (permissions.length === 0) return retry('Choose at least one permission.')
      if (!DURATIONS_DAYS.includes(days)) return retry('Choose how long to share for.')
      let consent
      try {
        consent = await client.completeAuthSession(session.session_id, {
          institution_id: o.inst.id,
          institution_name: o.inst.name,
          // Fiskil's institution_type (a renewal keeps its consent's).
          ...(o.renewal ? {} : { institution_type: o.inst.type }),
          account_ids: accountIds,
          permissions,
          duration_seconds: days * 86400,
        })
      } catch (e) {
        if (e && e.code === 'VALIDATION_ERROR') return retry(e.message)
        return finishError(reply, e)
      }
      request.log.info({ auth_session: session.id, consent: consent.arrangement_id }, 'consent page: session completed')
      if (!session.redirect_uri) {
        return send(
          reply,
          200,
          messagePage('Consent complete', 'You can close this window.', `<p>Consent id: <code id="consent-id">${escape(consent.arrangement_id)}</code></p>`),
        )
      }
      return reply.redirect(withQuery(session.redirect_uri, { consent_id: consent.arrangement_id }), 303)
    },
  )
}

/** A session that was finished or expired between loading and acting (e.g. a double submit). */
function finishError(reply, e) {
  if (e && e.code === 'AUTH_SESSION_ALREADY_USED') return send(reply, 409, messagePage(...STATUS_PAGES.completed.slice(1)))
  if (e && e.code === 'AUTH_SESSION_EXPIRED') return send(reply, 410, messagePage(...STATUS_PAGES.expired.slice(1)))
  throw e
}

module.exports = consentPage
module.exports.INSTITUTIONS = INSTITUTIONS
module.exports.PATH = PATH
module.exports.accountsOf = accountsOf

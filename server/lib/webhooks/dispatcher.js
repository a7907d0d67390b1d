'use strict'
// Delivers webhooks from the event log: claims due deliveries from the core
// (`claimWebhookDeliveries`: new events become delivery records, at most one in flight per
// webhook and end user, each signed), POSTs each, and reports the outcome
// (`recordWebhookAttempt`: 2xx delivers; anything else is retried with exponential backoff,
// then recorded as failed). The core keeps every position and record, so a restart, or a
// kill -9 mid-request, loses nothing: an unanswered delivery goes out again, with the same
// message_id and body, once its lease has passed.

/** Defaults; each can be set by an option or an environment variable. */
const DEFAULTS = {
  /** Delay before the 2nd attempt (ms); each later one doubles: 40 s, 80 s, 160 s, 320 s. */
  retryBaseMs: 40000,
  /** Request timeout (ms); no answer by then counts as a failed attempt. */
  timeoutMs: 10000,
  /** How often to look for new events when idle (ms). */
  pollMs: 500,
  /** Requests in flight at most. */
  concurrency: 16,
}

const ENV = {
  retryBaseMs: 'LINKVAULT_WEBHOOK_RETRY_BASE_MS',
  timeoutMs: 'LINKVAULT_WEBHOOK_TIMEOUT_MS',
  pollMs: 'LINKVAULT_WEBHOOK_POLL_MS',
  concurrency: 'LINKVAULT_WEBHOOK_CONCURRENCY',
}

const LIMITS = {
  retryBaseMs: [1, 3600000],
  timeoutMs: [1, 600000],
  pollMs: [1, 60000],
  concurrency: [1, 1000],
}

/** The request header carrying the signature (`verifyWebhook(rawBody, header, secret)`). */
const SIGNATURE_HEADER = 'x-linkvault-signature'

/**
 * Resolves the dispatcher's settings: option, else environment variable, else default. A bad
 * value throws (a VALIDATION_ERROR naming it) instead of being ignored.
 */
function settings(options = {}, env = process.env) {
  const out = {}
  for (const [name, fallback] of Object.entries(DEFAULTS)) {
    let value = options[name]
    let from = name
    if (value === undefined && env[ENV[name]] !== undefined && env[ENV[name]] !== '') {
      from = ENV[name]
      value = /^\d+$/.test(env[ENV[name]]) ? Number(env[ENV[name]]) : NaN
    }
    if (value === undefined) value = fallback
    const [min, max] = LIMITS[name]
    if (!Number.isInteger(value) || value < min || value > max) {
      throw Object.assign(new Error(`${from} must be an integer from ${min} to ${max}`), { code: 'VALIDATION_ERROR', field: from })
    }
    out[name] = value
  }
  // A claimed delivery stays leased past the request timeout, so it is never sent twice at once.
  out.leaseMs = out.timeoutMs + Math.min(5000, out.timeoutMs)
  return out
}

/** A short, secret-free description of a failed request. */
function describe(error) {
  if (error && error.name === 'TimeoutError') return 'timeout: no answer in time'
  const cause = error && error.cause
  const code = (cause && cause.code) || (error && error.code)
  const message = (cause && cause.message) || (error && error.message) || String(error)
  return (code ? `${code}: ${message}` : message).slice(0, 500)
}

class WebhookDispatcher {
  /**
   * @param {import('linkvault').Client} client any client of the store (claims reach every scope)
   * @param {object} [options] see DEFAULTS; `log` a pino-like logger; `fetch` for tests
   */
  constructor(client, options = {}) {
    this.client = client
    this.config = settings(options, options.env || process.env)
    this.log = options.log || { info() {}, warn() {}, debug() {}, error() {} }
    this.fetch = options.fetch || globalThis.fetch
    this.inflight = new Set()
    this.running = false
    this.stopped = true
    this.timer = null
    this.loop = null
    this.wake = null
  }

  start() {
    if (!this.stopped) return
    this.stopped = false
    this.loop = this.run()
  }

  /** Stops claiming, then waits for the requests in flight and their records. */
  async stop() {
    this.stopped = true
    if (this.wake) this.wake()
    await this.loop
    await Promise.allSettled([...this.inflight])
  }

  async run() {
    while (!this.stopped) {
      const free = this.config.concurrency - this.inflight.size
      let claimed = []
      if (free > 0) {
        try {
          claimed = await this.client.claimWebhookDeliveries({ limit: free, lease_ms: this.config.leaseMs })
        } catch (e) {
          if (e && e.code === 'CLIENT_CLOSED') return
          this.log.warn({ code: e && e.code, err: e && e.message }, 'webhook claim failed')
        }
      }
      for (const delivery of claimed) {
        const p = this.send(delivery).finally(() => {
          this.inflight.delete(p)
          if (this.wake) this.wake()
        })
        this.inflight.add(p)
      }
      // Full batch: there may be more at once. Else wait for a poll interval or a finished
      // request (which may have let its end user's next delivery through).
      if (claimed.length > 0 && claimed.length === free) continue
      await new Promise((resolve) => {
        const t = setTimeout(resolve, this.config.pollMs)
        this.wake = () => {
          clearTimeout(t)
          this.wake = null
          resolve()
        }
      })
    }
  }

  async send(d) {
    const started = Date.now()
    const outcome = { attempt: d.attempt, retry_base_ms: this.config.retryBaseMs }
    try {
      const res = await this.fetch(d.url, {
        method: 'POST',
        body: d.body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.config.timeoutMs),
        headers: {
          'content-type': 'application/json',
          'user-agent': 'linkvault-webhooks/1',
          [SIGNATURE_HEADER]: d.signature,
          'x-linkvault-message-id': d.message_id,
        },
      })
      outcome.status = res.status
      // The answer's body is not read; release the connection.
      if (res.body) await res.body.cancel().catch(() => {})
    } catch (e) {
      outcome.error = describe(e)
    }
    const ms = Date.now() - started
    try {
      const after = await this.client.recordWebhookAttempt(d.id, outcome)
      const fields = { webhook_id: d.webhook_id, message_id: d.message_id, attempt: d.attempt, status: outcome.status, error: outcome.error, ms, state: after.state }
      if (after.state === 'delivered') this.log.info(fields, 'webhook delivered')
      else if (after.state === 'failed') this.log.warn(fields, 'webhook failed after its last attempt')
      else this.log.info({ ...fields, next_attempt_at: after.next_attempt_at }, 'webhook attempt failed; will retry')
    } catch (e) {
      // NOT_FOUND: the webhook was deleted meanwhile. CLIENT_CLOSED: shutting down; the
      // delivery stays pending and goes out again after a restart.
      if (e && (e.code === 'NOT_FOUND' || e.code === 'CLIENT_CLOSED')) return
      this.log.error({ code: e && e.code, err: e && e.message, webhook_id: d.webhook_id, message_id: d.message_id }, 'recording a webhook attempt failed')
    }
  }
}

module.exports = { WebhookDispatcher, settings, DEFAULTS, ENV, SIGNATURE_HEADER, describe }

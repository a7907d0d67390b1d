//! Webhooks on `Client`: subscriptions (`createWebhook`, `listWebhooks`, `deleteWebhook`),
//! their delivery records (`listWebhookDeliveries`), the dispatcher's two calls
//! (`claimWebhookDeliveries`, `recordWebhookAttempt`) that `linkvault serve` runs, and
//! `locateAuthSession` for its consent page.

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;

use super::client::Client;
use super::js::{json_arg, promise, with_json};
use crate::clock::iso8601;
use crate::domain::webhooks::{
  Claimed, CreatedWebhook, Delivery, DeliveryPage, DeliveryState, Webhook,
};
use crate::store::Pending;

/// Input of `createWebhook`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct WebhookInput {
  /// Where deliveries are POSTed: an absolute http(s) URL (https in production).
  pub url: String,
  /// Only these event types (e.g. `['consent.received', 'consent.revoked']`); default: every
  /// type. Unknown types are refused.
  #[napi(ts_type = "string[] | string")]
  pub events: Option<Vec<String>>,
}

/// Filters of `listWebhooks`.
// Type-only: see above.
#[allow(dead_code)]
#[napi(object)]
pub struct WebhookQuery {
  /// Only webhooks of this org.
  pub org_id: Option<String>,
  /// Only webhooks of this environment.
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: Option<String>,
}

/// Options of `listWebhookDeliveries`.
// Type-only: see above.
#[allow(dead_code)]
#[napi(object)]
pub struct WebhookDeliveryQuery {
  /// Only deliveries in this state.
  #[napi(ts_type = "'pending' | 'delivered' | 'failed'")]
  pub state: Option<String>,
  /// Only deliveries older than this one (a page's `next`).
  pub before: Option<i64>,
  /// Page size, 1–1000 (default 100).
  pub limit: Option<u32>,
}

/// Options of `claimWebhookDeliveries`.
// Type-only: see above.
#[allow(dead_code)]
#[napi(object)]
pub struct WebhookClaimOptions {
  /// At most this many deliveries, 1–1000 (default 16).
  pub limit: Option<u32>,
  /// How long (ms) a claimed delivery is not handed out again (default 15000): make it longer
  /// than your request timeout. A dispatcher that dies leaves the delivery to be claimed again
  /// once this has passed.
  #[napi(js_name = "lease_ms")]
  pub lease_ms: Option<u32>,
}

/// How a delivery attempt ended (input of `recordWebhookAttempt`): `status` when an HTTP answer
/// came (2xx acknowledges), else `error`.
// Type-only: see above.
#[allow(dead_code)]
#[napi(object)]
pub struct WebhookAttemptOutcome {
  /// The claimed delivery's `attempt`.
  pub attempt: i64,
  /// The HTTP status answered.
  pub status: Option<u32>,
  /// Why no answer came (network error, timeout); at most 500 characters are kept.
  pub error: Option<String>,
  /// Delay before the second attempt in ms (default 40000); each later one doubles it.
  #[napi(js_name = "retry_base_ms")]
  pub retry_base_ms: Option<u32>,
}

/// A webhook as listed (never its secret). Times are ISO-8601 UTC.
#[napi(object, use_nullable = true)]
pub struct WebhookInfo {
  /// `wh_…`
  pub id: String,
  #[napi(js_name = "org_id")]
  pub org_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
  pub url: String,
  /// The event types it receives; null: every type.
  pub events: Option<Vec<String>>,
  /// The last event id (`listEvents`) turned into deliveries: events up to it may be pruned.
  pub cursor: i64,
  /// Deliveries not yet acknowledged (being retried or waiting their turn).
  pub pending: i64,
  /// Deliveries that failed every attempt.
  pub failed: i64,
  #[napi(js_name = "created_at")]
  pub created_at: String,
}

/// A new webhook: `secret` is shown this once (stored sealed); verify deliveries with
/// `verifyWebhook(rawBody, req.headers['x-linkvault-signature'], secret)`.
#[napi(object, use_nullable = true)]
pub struct NewWebhook {
  pub id: String,
  /// `whsec_…`
  pub secret: String,
  #[napi(js_name = "org_id")]
  pub org_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
  pub url: String,
  pub events: Option<Vec<String>>,
  pub cursor: i64,
  #[napi(js_name = "created_at")]
  pub created_at: String,
}

/// One event's delivery to one webhook. Times are ISO-8601 UTC.
#[napi(object, use_nullable = true)]
pub struct WebhookDelivery {
  /// Internal id (what `recordWebhookAttempt` names).
  pub id: i64,
  #[napi(js_name = "webhook_id")]
  pub webhook_id: String,
  /// The envelope's `message_id`: the event's id, the same on every attempt.
  #[napi(js_name = "message_id")]
  pub message_id: String,
  #[napi(js_name = "event_id")]
  pub event_id: i64,
  /// The event type.
  pub event: String,
  #[napi(js_name = "end_user_id")]
  pub end_user_id: Option<String>,
  #[napi(ts_type = "'pending' | 'delivered' | 'failed'")]
  pub state: String,
  pub attempts: i64,
  /// When the next attempt may start (null unless pending).
  #[napi(js_name = "next_attempt_at")]
  pub next_attempt_at: Option<String>,
  #[napi(js_name = "last_attempt_at")]
  pub last_attempt_at: Option<String>,
  /// The last HTTP status answered, if any.
  #[napi(js_name = "last_status")]
  pub last_status: Option<i64>,
  /// Why the last attempt got no answer, if so.
  #[napi(js_name = "last_error")]
  pub last_error: Option<String>,
  /// When it was delivered or recorded as failed.
  #[napi(js_name = "finished_at")]
  pub finished_at: Option<String>,
  #[napi(js_name = "created_at")]
  pub created_at: String,
}

/// A page of `listWebhookDeliveries`, newest first.
#[napi(object, use_nullable = true)]
pub struct WebhookDeliveryList {
  pub deliveries: Vec<WebhookDelivery>,
  /// Pass as `before` for older deliveries; null when there are none.
  pub next: Option<i64>,
}

/// A delivery handed to a dispatcher: POST `body` to `url` with the header
/// `x-linkvault-signature: <signature>`, then call `recordWebhookAttempt(id, { attempt, ... })`.
#[napi(object)]
pub struct ClaimedWebhookDelivery {
  pub id: i64,
  #[napi(js_name = "webhook_id")]
  pub webhook_id: String,
  pub url: String,
  #[napi(js_name = "message_id")]
  pub message_id: String,
  /// 1 for the first attempt.
  pub attempt: i64,
  /// The JSON envelope, exactly the bytes to send.
  pub body: String,
  /// `t=<unix seconds>,v1=<hex HMAC-SHA256>`, as `signWebhook` makes it.
  pub signature: String,
}

/// The scope an auth session belongs to.
#[napi(object)]
pub struct AuthSessionScope {
  #[napi(js_name = "org_id")]
  pub org_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
}

fn info(w: Webhook) -> WebhookInfo {
  WebhookInfo {
    id: w.id,
    org_id: w.org_id,
    environment: w.environment,
    url: w.url,
    events: w.events,
    cursor: w.cursor,
    pending: w.pending,
    failed: w.failed,
    created_at: iso8601(w.created_at),
  }
}

fn created(c: CreatedWebhook) -> NewWebhook {
  let w = c.webhook;
  NewWebhook {
    id: w.id,
    secret: c.secret.as_str().to_string(),
    org_id: w.org_id,
    environment: w.environment,
    url: w.url,
    events: w.events,
    cursor: w.cursor,
    created_at: iso8601(w.created_at),
  }
}

fn delivery(d: Delivery) -> WebhookDelivery {
  WebhookDelivery {
    id: d.id,
    webhook_id: d.webhook_id,
    message_id: d.message_id,
    event_id: d.event_id,
    event: d.event,
    end_user_id: d.end_user_id,
    state: d.state.as_str().to_string(),
    attempts: d.attempts,
    next_attempt_at: (d.state == DeliveryState::Pending).then(|| iso8601(d.next_attempt_at)),
    last_attempt_at: d.last_attempt_at.map(iso8601),
    last_status: d.last_status,
    last_error: d.last_error,
    finished_at: d.finished_at.map(iso8601),
    created_at: iso8601(d.created_at),
  }
}

fn page(p: DeliveryPage) -> WebhookDeliveryList {
  WebhookDeliveryList {
    deliveries: p.deliveries.into_iter().map(delivery).collect(),
    next: p.next,
  }
}

fn claimed(c: Claimed) -> ClaimedWebhookDelivery {
  ClaimedWebhookDelivery {
    id: c.id,
    webhook_id: c.webhook_id,
    url: c.url,
    message_id: c.message_id,
    attempt: c.attempt,
    body: c.body,
    signature: c.signature,
  }
}

#[napi]
impl Client {
  /// Creates a webhook for this client's scope: from now on, the scope's events (of the
  /// `events` types, default all) are POSTed to `url` as `{ message_id, publish_time, data:
  /// { event, end_user_id, ... } }`, signed in `x-linkvault-signature`, once a dispatcher
  /// (`linkvault serve`) runs. The secret is returned this once.
  #[napi(
    ts_args_type = "options: WebhookInput",
    ts_return_type = "Promise<NewWebhook>"
  )]
  pub fn create_webhook<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, NewWebhook>> {
    let p = with_json(options, "options", |v| self.vault.create_webhook(v));
    promise(env, p, created)
  }

  /// Lists the webhooks of every scope of the store (as API keys are, webhooks are
  /// administered store-wide), optionally of one org and/or environment, oldest first.
  #[napi(
    ts_args_type = "options?: WebhookQuery",
    ts_return_type = "Promise<WebhookInfo[]>"
  )]
  pub fn list_webhooks<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Vec<WebhookInfo>>> {
    let p = with_json(options, "options", |v| self.vault.list_webhooks(Some(v)));
    promise(env, p, |list| list.into_iter().map(info).collect())
  }

  /// Deletes a webhook (in any scope of the store) and its delivery records; nothing more is
  /// sent to it. Resolves with the webhook as it was; `NOT_FOUND` if unknown.
  #[napi(ts_args_type = "id: string", ts_return_type = "Promise<WebhookInfo>")]
  pub fn delete_webhook<'e>(
    &self,
    env: &'e Env,
    id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, WebhookInfo>> {
    let p = with_json(id, "id", |v| self.vault.delete_webhook(v));
    promise(env, p, info)
  }

  /// A webhook's deliveries, newest first: pending ones (with their next attempt), delivered
  /// ones (kept 7 days) and failed ones (kept 30 days). `NOT_FOUND` for an unknown webhook.
  #[napi(
    ts_args_type = "id: string, options?: WebhookDeliveryQuery",
    ts_return_type = "Promise<WebhookDeliveryList>"
  )]
  pub fn list_webhook_deliveries<'e>(
    &self,
    env: &'e Env,
    id: Option<Unknown<'_>>,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, WebhookDeliveryList>> {
    let p = match (json_arg(id, "id"), json_arg(options, "options")) {
      (Ok(id), Ok(o)) => self.vault.list_webhook_deliveries(&id, Some(&o)),
      (Err(e), _) | (_, Err(e)) => Pending::ready(Err(e)),
    };
    promise(env, p, page)
  }

  /// For a dispatcher (`linkvault serve` runs one): turns new events of every scope into
  /// deliveries, then leases and returns the ones due, at most one per (webhook, end user) at
  /// a time, so each end user's events go out in order. Each comes signed, to be POSTed as is
  /// and reported with `recordWebhookAttempt`. An idle call only reads.
  #[napi(
    ts_args_type = "options?: WebhookClaimOptions",
    ts_return_type = "Promise<ClaimedWebhookDelivery[]>"
  )]
  pub fn claim_webhook_deliveries<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Vec<ClaimedWebhookDelivery>>> {
    let p = with_json(options, "options", |v| {
      self.vault.claim_webhook_deliveries(Some(v))
    });
    promise(env, p, |list| list.into_iter().map(claimed).collect())
  }

  /// Records how a claimed attempt ended: a 2xx `status` delivers it; anything else schedules
  /// the next attempt after `retry_base_ms` × 2^(attempt−1), and the fifth failure records it
  /// as failed. An outcome for an attempt that is no longer current changes nothing. Resolves
  /// with the delivery; `NOT_FOUND` if its webhook was deleted meanwhile.
  #[napi(
    ts_args_type = "id: number, outcome: WebhookAttemptOutcome",
    ts_return_type = "Promise<WebhookDelivery>"
  )]
  pub fn record_webhook_attempt<'e>(
    &self,
    env: &'e Env,
    id: Option<Unknown<'_>>,
    outcome: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, WebhookDelivery>> {
    let p = match (json_arg(id, "id"), json_arg(outcome, "outcome")) {
      (Ok(id), Ok(o)) => self.vault.record_webhook_attempt(&id, &o),
      (Err(e), _) | (_, Err(e)) => Pending::ready(Err(e)),
    };
    promise(env, p, delivery)
  }

  /// The org and environment of the auth session whose `session_id` this is, in any scope of
  /// the store, or null: how a consent page finds the scope to act in.
  #[napi(
    ts_args_type = "session_id: string",
    ts_return_type = "Promise<AuthSessionScope | null>"
  )]
  pub fn locate_auth_session<'e>(
    &self,
    env: &'e Env,
    session_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Option<AuthSessionScope>>> {
    let p = with_json(session_id, "session_id", |v| {
      self.vault.locate_auth_session(v)
    });
    promise(env, p, |found| {
      found.map(|(org_id, environment)| AuthSessionScope {
        org_id,
        environment,
      })
    })
  }
}

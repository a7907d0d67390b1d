//! Webhook subscriptions and their deliveries from the event log: the rules, over the row trait
//! [`WebhookRows`] each engine implements (signatures are in [`crate::domain::webhook`]).
//!
//! A webhook belongs to one scope (org, environment) and receives that scope's events appended
//! after it was created, optionally only some types. Delivery is *at least once* and *in order
//! per end user*:
//!
//! - **Materialization**: a claim first turns the events after each webhook's cursor into
//!   delivery records and advances the cursor, in one transaction, so an event is either still
//!   after the cursor or has its record: a crash loses nothing. The envelope body is fixed then
//!   (a repeat sends the same bytes, with the same `message_id`).
//! - **Order**: of the pending deliveries of one webhook and one end user (`linked_account_id`;
//!   events without one form their own line), only the oldest is ever handed out. The next one
//!   waits until it is delivered or has failed for good.
//! - **Leases**: a claimed delivery is not handed out again until its lease ends; a dispatcher
//!   that dies mid-request (kill -9) leaves it pending, and it goes out again, counted as the
//!   next attempt, once the lease has passed.
//! - **Retries**: a non-2xx answer or a network error schedules the next attempt after an
//!   exponential delay (`retry_delay_ms`); after [`MAX_ATTEMPTS`] attempts the delivery is
//!   recorded as failed and the end user's next delivery goes ahead.
//!
//! The secret signs every request (header [`SIGNATURE_HEADER`], the scheme of
//! `crate::domain::webhook::sign`); it is stored sealed and leaves the core only once, at creation.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::events::{types, Event, EventLog, EventQuery};
use super::keys::{self, webhook_secret_aad, MetaRows};
use super::Scope;
use crate::clock::iso8601;
use crate::crypto::{self, b64url, random_bytes, Sealer};
use crate::error::{Error, Result};
use crate::input::{self, Fields};

/// Attempts per delivery before it is recorded as failed.
pub const MAX_ATTEMPTS: i64 = 5;
/// Delay before the second attempt; each later one doubles it: 40 s, 80 s, 160 s, 320 s (the
/// five attempts span 10 minutes).
pub const DEFAULT_RETRY_BASE_MS: i64 = 40_000;
/// Longest base delay accepted (1 hour).
pub const MAX_RETRY_BASE_MS: i64 = 3_600_000;
/// Default lease of a claimed delivery: longer than the dispatcher's request timeout.
pub const DEFAULT_LEASE_MS: i64 = 15_000;
pub const MAX_LEASE_MS: i64 = 3_600_000;
pub const DEFAULT_CLAIM_LIMIT: i64 = 16;
pub const MAX_CLAIM_LIMIT: i64 = 1000;
/// Events turned into delivery records per webhook and claim (the rest wait for the next).
pub const MATERIALIZE_BATCH: i64 = 500;
/// Delivered records are kept this long (for `webhooks deliveries`), failed ones longer.
pub const KEEP_DELIVERED_MS: i64 = 7 * 24 * 3600 * 1000;
pub const KEEP_FAILED_MS: i64 = 30 * 24 * 3600 * 1000;
/// Finished records pruned per claim at most (bounded work per write job).
pub const PRUNE_BATCH: i64 = 500;
/// The request header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-linkvault-signature";
/// Longest error text kept for an attempt.
pub const MAX_ERROR_CHARS: usize = 500;
pub const MAX_EVENT_FILTERS: usize = 100;
pub const MAX_URL_CHARS: usize = 2048;
pub const DEFAULT_DELIVERY_PAGE: i64 = 100;
pub const MAX_DELIVERY_PAGE: i64 = 1000;

/// Every event type the log holds, for validating `events` filters (a typo would otherwise
/// never match anything).
pub const EVENT_TYPES: &[&str] = &[
  types::ACCOUNT_CREATED,
  types::ACCOUNT_UPDATED,
  types::ACCOUNT_DELETED,
  types::AUTH_SESSION_CREATED,
  types::AUTH_SESSION_COMPLETED,
  types::AUTH_SESSION_CANCELLED,
  types::CONSENT_RECEIVED,
  types::CONSENT_UPDATED,
  types::CONSENT_REVOKED,
  types::IDENTITY_LINKED,
  types::IDENTITY_UNLINKED,
  types::ACCOUNTS_MERGED,
  types::SESSION_TOKENS_REVOKED,
  types::SIGNING_KEY_ADDED,
  types::SIGNING_KEY_RETIRED,
];

/// A webhook's signing secret: `whsec_` and 43 base64url characters; its UTF-8 bytes are the
/// HMAC key (as `verifyWebhook(body, header, secret)` uses a string secret). Wiped on drop and
/// never printed.
pub struct WebhookSecret(Zeroizing<String>);

impl WebhookSecret {
  pub fn generate() -> Result<Self> {
    let bytes = Zeroizing::new(random_bytes::<32>()?);
    Ok(WebhookSecret(Zeroizing::new(format!(
      "whsec_{}",
      b64url(&bytes[..])
    ))))
  }

  pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
    let bytes = Zeroizing::new(bytes);
    std::str::from_utf8(&bytes)
      .map(|s| WebhookSecret(Zeroizing::new(s.to_string())))
      .map_err(|_| Error::storage("a stored webhook secret is not text"))
  }

  pub fn as_str(&self) -> &str {
    &self.0
  }
}

impl fmt::Debug for WebhookSecret {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("WebhookSecret(<hidden>)")
  }
}

/// A validated `createWebhook` input.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookInput {
  pub url: String,
  /// None: every event type.
  pub events: Option<Vec<String>>,
}

/// A webhook as listed (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
  pub id: String,
  pub org_id: String,
  pub environment: String,
  pub url: String,
  pub events: Option<Vec<String>>,
  /// The last event id turned into deliveries (events up to it may be pruned once delivered).
  pub cursor: i64,
  pub pending: i64,
  pub failed: i64,
  pub created_at: i64,
}

/// A new webhook with its secret, shown this once.
#[derive(Debug)]
pub struct CreatedWebhook {
  pub webhook: Webhook,
  pub secret: WebhookSecret,
}

/// Filters of `listWebhooks`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookFilter {
  pub org_id: Option<String>,
  pub environment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
  Pending,
  Delivered,
  Failed,
}

impl DeliveryState {
  pub fn as_str(self) -> &'static str {
    match self {
      DeliveryState::Pending => "pending",
      DeliveryState::Delivered => "delivered",
      DeliveryState::Failed => "failed",
    }
  }

  pub fn parse(s: &str) -> Option<Self> {
    match s {
      "pending" => Some(DeliveryState::Pending),
      "delivered" => Some(DeliveryState::Delivered),
      "failed" => Some(DeliveryState::Failed),
      _ => None,
    }
  }
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
  /// Internal id (what `recordWebhookAttempt` names).
  pub id: i64,
  pub webhook_id: String,
  pub message_id: String,
  pub event_id: i64,
  pub event: String,
  pub end_user_id: Option<String>,
  pub state: DeliveryState,
  pub attempts: i64,
  /// When the next attempt may start (ms); meaningful while pending.
  pub next_attempt_at: i64,
  pub last_attempt_at: Option<i64>,
  pub last_status: Option<i64>,
  pub last_error: Option<String>,
  pub finished_at: Option<i64>,
  pub created_at: i64,
}

/// A page of deliveries, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPage {
  pub deliveries: Vec<Delivery>,
  /// Pass as `before` for older ones; None when there are no more.
  pub next: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryQuery {
  pub state: Option<DeliveryState>,
  pub before: Option<i64>,
  pub limit: i64,
}

/// A delivery handed to a dispatcher: what to POST where.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
  pub id: i64,
  pub webhook_id: String,
  pub url: String,
  pub message_id: String,
  /// 1 for the first attempt.
  pub attempt: i64,
  /// The exact bytes to send (JSON).
  pub body: String,
  /// Value of the [`SIGNATURE_HEADER`] header (signed at claim time).
  pub signature: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClaimOptions {
  pub limit: i64,
  pub lease_ms: i64,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
  pub attempt: i64,
  /// The HTTP status, if an answer came.
  pub status: Option<i64>,
  /// Why it failed without an answer (network error, timeout), or a note.
  pub error: Option<String>,
  pub retry_base_ms: i64,
}

impl AttemptOutcome {
  pub fn succeeded(&self) -> bool {
    matches!(self.status, Some(200..=299))
  }
}

/// Delay before attempt `attempts + 1`, after `attempts` failed ones: `base * 2^(attempts-1)`.
pub fn retry_delay_ms(attempts: i64, base_ms: i64) -> i64 {
  let doublings = (attempts - 1).clamp(0, 20) as u32;
  base_ms.saturating_mul(1_i64 << doublings)
}

/// How a delivery stands after an attempt ended with `outcome` at `now` (ms): its state, and
/// when it may be tried next.
pub fn after_attempt(attempts: i64, outcome: &AttemptOutcome, now: i64) -> (DeliveryState, i64) {
  if outcome.succeeded() {
    (DeliveryState::Delivered, now)
  } else if attempts >= MAX_ATTEMPTS {
    (DeliveryState::Failed, now)
  } else {
    (
      DeliveryState::Pending,
      now.saturating_add(retry_delay_ms(attempts, outcome.retry_base_ms)),
    )
  }
}

/// The `message_id` of an event's deliveries: the event's id in the log, the same for every
/// webhook that receives it (receivers deduplicate on it).
pub fn message_id(event_id: i64) -> String {
  event_id.to_string()
}

/// The JSON body sent for an event: `{ message_id, publish_time, data: { event, end_user_id,
/// linked_account_id, ...event data } }` (Fiskil's envelope; `end_user_id` is Fiskil's name of
/// the linked account).
pub fn envelope(e: &Event) -> String {
  let mut data = Map::new();
  data.insert("event".into(), Value::String(e.kind.clone()));
  if let Some(id) = &e.linked_account_id {
    data.insert("end_user_id".into(), Value::String(id.clone()));
    data.insert("linked_account_id".into(), Value::String(id.clone()));
  }
  if let Value::Object(fields) = &e.data {
    for (k, v) in fields {
      if k != "event" {
        data.insert(k.clone(), v.clone());
      }
    }
  }
  let mut body = Map::new();
  body.insert("message_id".into(), Value::String(message_id(e.id)));
  body.insert("publish_time".into(), Value::String(iso8601(e.created_at)));
  body.insert("data".into(), Value::Object(data));
  Value::Object(body).to_string()
}

/// Whether a webhook with `filter` receives events of type `kind`.
pub fn wants(filter: Option<&[String]>, kind: &str) -> bool {
  filter.is_none_or(|f| f.iter().any(|t| t == kind))
}

/// Refuses keys an input object does not know (a misspelt option would otherwise be ignored).
fn known_keys(v: Option<&Value>, allowed: &[&str]) -> Result<()> {
  if let Some(Value::Object(m)) = v {
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
      return Err(Error::validation(
        k.clone(),
        format!("unknown option '{k}' (known: {})", allowed.join(", ")),
      ));
    }
  }
  Ok(())
}

/// `createWebhook({ url, events? })` in an environment (production endpoints must be https, as
/// Fiskil requires).
pub fn parse_input(v: &Value, environment: &str) -> Result<WebhookInput> {
  if !v.is_object() {
    return Err(Error::validation("options", "options must be an object"));
  }
  known_keys(Some(v), &["url", "events"])?;
  let f = Fields::new(Some(v), "options")?;
  let url = f
    .str("url")?
    .ok_or_else(|| Error::validation("url", "url is required"))?;
  crate::consents::validate_http_url("url", url)?;
  if environment == "production" && !url.to_ascii_lowercase().starts_with("https://") {
    return Err(Error::validation(
      "url",
      "url must use https in the production environment",
    ));
  }
  let events = match f.get("events") {
    None => None,
    Some(Value::String(s)) => Some(vec![s.clone()]),
    Some(_) => f.strings("events")?,
  };
  let events = match events {
    None => None,
    Some(list) => Some(parse_event_types(list)?),
  };
  Ok(WebhookInput {
    url: url.to_string(),
    events,
  })
}

fn parse_event_types(list: Vec<String>) -> Result<Vec<String>> {
  if list.is_empty() {
    return Err(Error::validation(
      "events",
      "events must name at least one event type (omit it for every type)",
    ));
  }
  if list.len() > MAX_EVENT_FILTERS {
    return Err(Error::validation(
      "events",
      format!("events must have at most {MAX_EVENT_FILTERS} entries"),
    ));
  }
  let mut out: Vec<String> = Vec::with_capacity(list.len());
  for t in list {
    if !EVENT_TYPES.contains(&t.as_str()) {
      return Err(Error::validation(
        "events",
        format!(
          "unknown event type '{t}' (known: {})",
          EVENT_TYPES.join(", ")
        ),
      ));
    }
    if !out.contains(&t) {
      out.push(t);
    }
  }
  Ok(out)
}

/// `listWebhooks({ orgId?, environment? })`.
pub fn parse_filter(v: Option<&Value>) -> Result<WebhookFilter> {
  known_keys(v, &["orgId", "environment"])?;
  let f = Fields::new(v, "options")?;
  let org_id = match f.get("orgId") {
    None => None,
    some => Some(input::id(some, "orgId", 256)?),
  };
  let environment = match f.str("environment")? {
    None => None,
    Some(e @ ("test" | "production")) => Some(e.to_string()),
    Some(_) => {
      return Err(Error::validation(
        "environment",
        "environment must be 'test' or 'production'",
      ))
    }
  };
  Ok(WebhookFilter {
    org_id,
    environment,
  })
}

pub fn parse_id(v: &Value) -> Result<String> {
  input::id(Some(v), "id", 64)
}

/// `listWebhookDeliveries(id, { state?, before?, limit? })`.
pub fn parse_delivery_query(v: Option<&Value>) -> Result<DeliveryQuery> {
  known_keys(v, &["state", "before", "limit"])?;
  let f = Fields::new(v, "options")?;
  let state = match f.str("state")? {
    None => None,
    Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
      Error::validation("state", "state must be 'pending', 'delivered' or 'failed'")
    })?),
  };
  Ok(DeliveryQuery {
    state,
    before: f.int("before", 1, i64::MAX)?,
    limit: f
      .int("limit", 1, MAX_DELIVERY_PAGE)?
      .unwrap_or(DEFAULT_DELIVERY_PAGE),
  })
}

/// `claimWebhookDeliveries({ limit?, lease_ms? })`.
pub fn parse_claim(v: Option<&Value>) -> Result<ClaimOptions> {
  known_keys(v, &["limit", "lease_ms"])?;
  let f = Fields::new(v, "options")?;
  Ok(ClaimOptions {
    limit: f
      .int("limit", 1, MAX_CLAIM_LIMIT)?
      .unwrap_or(DEFAULT_CLAIM_LIMIT),
    lease_ms: f
      .int("lease_ms", 1, MAX_LEASE_MS)?
      .unwrap_or(DEFAULT_LEASE_MS),
  })
}

/// `recordWebhookAttempt(id, { attempt, status?, error?, retry_base_ms? })`: exactly one of
/// `status` and `error` tells what happened.
pub fn parse_outcome(v: &Value) -> Result<AttemptOutcome> {
  if !v.is_object() {
    return Err(Error::validation("outcome", "outcome must be an object"));
  }
  known_keys(Some(v), &["attempt", "status", "error", "retry_base_ms"])?;
  let f = Fields::new(Some(v), "outcome")?;
  let attempt = f
    .int("attempt", 1, i64::MAX)?
    .ok_or_else(|| Error::validation("attempt", "attempt is required"))?;
  let status = f.int("status", 100, 599)?;
  let error = f.str("error")?.map(|e| {
    let mut e: String = e.chars().take(MAX_ERROR_CHARS).collect();
    e.retain(|c| !c.is_control());
    e
  });
  if status.is_none() && error.is_none() {
    return Err(Error::validation(
      "status",
      "status (the HTTP answer) or error (why none came) is required",
    ));
  }
  let retry_base_ms = f
    .int("retry_base_ms", 1, MAX_RETRY_BASE_MS)?
    .unwrap_or(DEFAULT_RETRY_BASE_MS);
  Ok(AttemptOutcome {
    attempt,
    status,
    error,
    retry_base_ms,
  })
}

/// Public webhook ids: `wh_` and 24 hex characters.
pub fn new_webhook_id(now_ms: i64) -> Result<String> {
  Ok(format!("wh_{}", crate::crypto::object_id(now_ms)?))
}

/// A webhook as the delivery rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
  /// Internal key.
  pub pk: i64,
  pub scope_id: i64,
  pub events: Option<Vec<String>>,
  pub cursor: i64,
}

/// The head of a line, due for an attempt, with what signing it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DueHead {
  pub delivery: i64,
  pub event_id: i64,
  pub body: String,
  pub attempts: i64,
  pub webhook_pk: i64,
  pub webhook_id: String,
  pub url: String,
  pub scope_id: i64,
  /// The webhook's secret, sealed.
  pub sealed: Vec<u8>,
}

/// How an attempt leaves a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryUpdate {
  pub state: DeliveryState,
  pub next_attempt_at: i64,
  pub last_status: Option<i64>,
  pub last_error: Option<String>,
  pub finished_at: Option<i64>,
}

/// The webhook tables. Webhooks are administered store-wide (like API keys): list, delete,
/// deliveries and claims reach every scope; a webhook is created in one scope and receives
/// only that scope's events.
pub trait WebhookRows {
  /// The id of the newest event of a scope (0 if none): where a new webhook starts.
  fn newest_event_id(&mut self, scope_id: i64) -> Result<i64>;
  #[allow(clippy::too_many_arguments)]
  fn insert_webhook(
    &mut self,
    scope_id: i64,
    id: &str,
    url: &str,
    events: Option<&str>,
    sealed: &[u8],
    cursor: i64,
    now_ms: i64,
  ) -> Result<()>;
  /// A webhook by id, with its pending and failed counts.
  fn webhook(&mut self, id: &str) -> Result<Option<Webhook>>;
  fn list_webhooks(&mut self, filter: &WebhookFilter) -> Result<Vec<Webhook>>;
  /// Deletes a webhook and (by cascade) its deliveries.
  fn delete_webhook(&mut self, id: &str) -> Result<()>;
  fn webhook_pk(&mut self, id: &str) -> Result<Option<i64>>;
  /// Up to `limit` deliveries of a webhook, newest first, per `q`'s state and `before`.
  fn deliveries(&mut self, webhook_pk: i64, q: &DeliveryQuery, limit: i64)
    -> Result<Vec<Delivery>>;
  /// Whether a claim has anything to do: a webhook with events after its cursor, a due
  /// pending delivery, or a finished one past its retention.
  fn has_webhook_work(
    &mut self,
    now_ms: i64,
    delivered_before: i64,
    failed_before: i64,
  ) -> Result<bool>;
  /// Every webhook, by pk.
  fn subscriptions(&mut self) -> Result<Vec<Subscription>>;
  /// Adds a delivery of an event unless the webhook has one for it.
  fn insert_delivery(
    &mut self,
    webhook_pk: i64,
    event: &Event,
    body: &str,
    now_ms: i64,
  ) -> Result<()>;
  fn set_cursor(&mut self, webhook_pk: i64, cursor: i64) -> Result<()>;
  /// Deletes up to `batch` finished deliveries past their retention.
  fn prune_deliveries(
    &mut self,
    delivered_before: i64,
    failed_before: i64,
    batch: i64,
  ) -> Result<()>;
  /// The due heads of lines (the oldest pending delivery of each webhook and end user, not
  /// leased), soonest first.
  fn due_heads(&mut self, now_ms: i64, limit: i64) -> Result<Vec<DueHead>>;
  /// Counts an attempt and leases the delivery until `lease_until`.
  fn lease_delivery(&mut self, delivery: i64, lease_until: i64, now_ms: i64) -> Result<()>;
  fn delivery(&mut self, delivery: i64) -> Result<Option<Delivery>>;
  /// Records an attempt's outcome and ends its lease.
  fn update_delivery(&mut self, delivery: i64, update: &DeliveryUpdate) -> Result<()>;
  /// The (org, environment) of the scope of the auth session whose `session_id` has this
  /// digest (the consent page's look-up; kept here until consents move onto row traits).
  fn auth_session_scope(&mut self, session_hash: &[u8; 32]) -> Result<Option<(String, String)>>;
}

/// What the webhook operations need from their transaction.
pub trait WebhookTx: WebhookRows + EventLog + MetaRows {}
impl<T: WebhookRows + EventLog + MetaRows + ?Sized> WebhookTx for T {}

/// `createWebhook`: generates the secret (sealed under the database's key), starting after
/// the newest event of the scope (events already in the log are not this webhook's).
pub fn create(
  tx: &mut (impl WebhookTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  input: &WebhookInput,
  now_ms: i64,
) -> Result<CreatedWebhook> {
  keys::sync(tx, sealer)?;
  let id = new_webhook_id(now_ms)?;
  let secret = WebhookSecret::generate()?;
  let sealed = sealer.seal(
    secret.as_str().as_bytes(),
    &webhook_secret_aad(scope.id, &id),
  )?;
  let events = input
    .events
    .as_ref()
    .map(|e| Value::from(e.clone()).to_string());
  let cursor = tx.newest_event_id(scope.id)?;
  tx.insert_webhook(
    scope.id,
    &id,
    &input.url,
    events.as_deref(),
    &sealed,
    cursor,
    now_ms,
  )?;
  Ok(CreatedWebhook {
    webhook: Webhook {
      id,
      org_id: scope.org_id.clone(),
      environment: scope.environment.clone(),
      url: input.url.clone(),
      events: input.events.clone(),
      cursor,
      pending: 0,
      failed: 0,
      created_at: now_ms,
    },
    secret,
  })
}

fn no_webhook(id: &str) -> Error {
  Error::not_found(format!("No webhook with id {id}"))
}

/// `deleteWebhook`: the webhook as it was; `NOT_FOUND` if unknown.
pub fn delete(tx: &mut (impl WebhookRows + ?Sized), id: &str) -> Result<Webhook> {
  let w = tx.webhook(id)?.ok_or_else(|| no_webhook(id))?;
  tx.delete_webhook(id)?;
  Ok(w)
}

/// `listWebhookDeliveries`: newest first; `NOT_FOUND` for an unknown webhook.
pub fn deliveries(
  tx: &mut (impl WebhookRows + ?Sized),
  webhook_id: &str,
  q: &DeliveryQuery,
) -> Result<DeliveryPage> {
  let pk = tx
    .webhook_pk(webhook_id)?
    .ok_or_else(|| no_webhook(webhook_id))?;
  let mut rows = tx.deliveries(pk, q, q.limit + 1)?;
  let more = rows.len() as i64 > q.limit;
  rows.truncate(q.limit as usize);
  let next = if more {
    rows.last().map(|d| d.id)
  } else {
    None
  };
  Ok(DeliveryPage {
    deliveries: rows,
    next,
  })
}

/// Whether a claim at `now_ms` has anything to do (a read, so that an idle dispatcher polling
/// costs no write transaction).
pub fn has_work(tx: &mut (impl WebhookRows + ?Sized), now_ms: i64) -> Result<bool> {
  tx.has_webhook_work(now_ms, now_ms - KEEP_DELIVERED_MS, now_ms - KEEP_FAILED_MS)
}

/// Turns the events after each webhook's cursor into delivery records and moves the cursor,
/// at most [`MATERIALIZE_BATCH`] events per webhook. Events are read with the event log's own
/// gap-free read (`EventLog::read_events`, as `listEvents`): an engine whose ids do not follow
/// commit order returns only events no later commit can precede, so the cursor never passes an
/// event that commits late.
fn materialize(tx: &mut (impl WebhookTx + ?Sized), now_ms: i64) -> Result<()> {
  for sub in tx.subscriptions()? {
    let q = EventQuery {
      after: sub.cursor,
      limit: MATERIALIZE_BATCH,
      types: Vec::new(),
      linked_account_id: None,
    };
    let events = tx.read_events(sub.scope_id, &q, MATERIALIZE_BATCH)?;
    let Some(last) = events.last().map(|e| e.id) else {
      continue;
    };
    for e in events
      .iter()
      .filter(|e| wants(sub.events.as_deref(), &e.kind))
    {
      tx.insert_delivery(sub.pk, e, &envelope(e), now_ms)?;
    }
    tx.set_cursor(sub.pk, last)?;
  }
  Ok(())
}

/// `claimWebhookDeliveries`: materializes new events, prunes old records, then leases the due
/// heads of their lines (one per webhook and end user) and signs each body at `now_ms`.
pub fn claim(
  tx: &mut (impl WebhookTx + ?Sized),
  sealer: &Sealer,
  options: ClaimOptions,
  now_ms: i64,
) -> Result<Vec<Claimed>> {
  keys::learn(tx, sealer)?;
  materialize(tx, now_ms)?;
  tx.prune_deliveries(
    now_ms - KEEP_DELIVERED_MS,
    now_ms - KEEP_FAILED_MS,
    PRUNE_BATCH,
  )?;
  let heads = tx.due_heads(now_ms, options.limit)?;
  let mut secrets: HashMap<i64, WebhookSecret> = HashMap::new();
  let mut out = Vec::with_capacity(heads.len());
  for h in heads {
    let secret = match secrets.entry(h.webhook_pk) {
      Entry::Occupied(e) => e.into_mut(),
      Entry::Vacant(e) => {
        let plain = sealer.open(&h.sealed, &webhook_secret_aad(h.scope_id, &h.webhook_id))?;
        e.insert(WebhookSecret::from_bytes(plain)?)
      }
    };
    let signature = super::webhook::sign(
      h.body.as_bytes(),
      secret.as_str().as_bytes(),
      now_ms.div_euclid(1000),
    )?;
    tx.lease_delivery(h.delivery, now_ms.saturating_add(options.lease_ms), now_ms)?;
    out.push(Claimed {
      id: h.delivery,
      webhook_id: h.webhook_id,
      url: h.url,
      message_id: message_id(h.event_id),
      attempt: h.attempts + 1,
      body: h.body,
      signature,
    });
  }
  Ok(out)
}

fn no_delivery(pk: i64) -> Error {
  Error::not_found(format!(
    "No webhook delivery {pk} (its webhook may be deleted)"
  ))
}

/// `recordWebhookAttempt`: an outcome for an attempt that is no longer the current one (its
/// lease ran out and the delivery was handed out again) changes nothing.
pub fn record(
  tx: &mut (impl WebhookRows + ?Sized),
  delivery: i64,
  outcome: &AttemptOutcome,
  now_ms: i64,
) -> Result<Delivery> {
  let current = tx
    .delivery(delivery)?
    .ok_or_else(|| no_delivery(delivery))?;
  if current.state != DeliveryState::Pending || current.attempts != outcome.attempt {
    return Ok(current);
  }
  let (state, next) = after_attempt(current.attempts, outcome, now_ms);
  let update = DeliveryUpdate {
    state,
    next_attempt_at: next,
    last_status: outcome.status,
    last_error: outcome.error.clone(),
    finished_at: (state != DeliveryState::Pending).then_some(now_ms),
  };
  tx.update_delivery(delivery, &update)?;
  tx.delivery(delivery)?.ok_or_else(|| no_delivery(delivery))
}

/// The (org, environment) an auth session belongs to, by its `session_id`.
pub fn locate_auth_session(
  tx: &mut (impl WebhookRows + ?Sized),
  session_id: &str,
) -> Result<Option<(String, String)>> {
  tx.auth_session_scope(&crypto::sha256(session_id.as_bytes()))
}

/// The stored form of a webhook's `events` filter (a JSON array), read back.
pub fn events_list(text: Option<String>) -> Option<Vec<String>> {
  text.and_then(|t| serde_json::from_str(&t).ok())
}
#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  #[test]
  fn retry_schedule_spans_ten_minutes() {
    let delays: Vec<i64> = (1..MAX_ATTEMPTS)
      .map(|a| retry_delay_ms(a, DEFAULT_RETRY_BASE_MS))
      .collect();
    assert_eq!(delays, vec![40_000, 80_000, 160_000, 320_000]);
    assert_eq!(delays.iter().sum::<i64>(), 600_000);
    assert_eq!(retry_delay_ms(1, 10), 10);
    // No overflow for absurd inputs.
    assert!(retry_delay_ms(i64::MAX, MAX_RETRY_BASE_MS) > 0);
  }

  #[test]
  fn outcome_decides_the_state() {
    let o = |status: Option<i64>| AttemptOutcome {
      attempt: 1,
      status,
      error: None,
      retry_base_ms: 1000,
    };
    assert_eq!(
      after_attempt(1, &o(Some(204)), 5),
      (DeliveryState::Delivered, 5)
    );
    assert_eq!(
      after_attempt(1, &o(Some(500)), 5),
      (DeliveryState::Pending, 1005)
    );
    assert_eq!(
      after_attempt(3, &o(Some(302)), 5),
      (DeliveryState::Pending, 4005)
    );
    assert_eq!(
      after_attempt(4, &o(None), 0),
      (DeliveryState::Pending, 8000)
    );
    assert_eq!(
      after_attempt(5, &o(Some(410)), 7),
      (DeliveryState::Failed, 7)
    );
  }

  #[test]
  fn envelope_is_fiskils_shape() {
    let e = Event {
      id: 42,
      kind: "consent.received".into(),
      linked_account_id: Some("u1".into()),
      data: json!({"consent_id": "c1", "account_ids": ["a"], "event": "spoofed"}),
      created_at: 1_700_000_000_123,
    };
    let v: Value = serde_json::from_str(&envelope(&e)).unwrap();
    assert_eq!(
      v,
      json!({"message_id": "42", "publish_time": "2023-11-14T22:13:20.123Z",
             "data": {"event": "consent.received", "end_user_id": "u1", "linked_account_id": "u1",
                      "consent_id": "c1", "account_ids": ["a"]}})
    );
    let bare = Event {
      linked_account_id: None,
      data: Value::Null,
      ..e
    };
    let v: Value = serde_json::from_str(&envelope(&bare)).unwrap();
    assert_eq!(v["data"], json!({"event": "consent.received"}));
  }

  #[test]
  fn inputs_are_checked() {
    let i = parse_input(
      &json!({"url": "https://h.example/hook", "events": ["consent.received", "consent.received"]}),
      "production",
    )
    .unwrap();
    assert_eq!(i.events, Some(vec!["consent.received".to_string()]));
    assert_eq!(
      parse_input(
        &json!({"url": "http://h.example/x", "events": "consent.revoked"}),
        "test"
      )
      .unwrap()
      .events,
      Some(vec!["consent.revoked".to_string()])
    );
    for (v, env, field) in [
      (json!({}), "test", "url"),
      (json!({"url": "ftp://h.example"}), "test", "url"),
      (json!({"url": "http://h.example"}), "production", "url"),
      (
        json!({"url": "https://h.example", "events": []}),
        "test",
        "events",
      ),
      (
        json!({"url": "https://h.example", "events": ["consent.recieved"]}),
        "test",
        "events",
      ),
      (
        json!({"url": "https://h.example", "events": [1]}),
        "test",
        "events",
      ),
      (
        json!({"url": "https://h.example", "secret": "x"}),
        "test",
        "secret",
      ),
      (json!("https://h.example"), "test", "options"),
    ] {
      assert_eq!(
        parse_input(&v, env).unwrap_err().field.as_deref(),
        Some(field),
        "{v}"
      );
    }
    assert_eq!(
      parse_outcome(&json!({"attempt": 1}))
        .unwrap_err()
        .field
        .as_deref(),
      Some("status")
    );
    assert_eq!(
      parse_outcome(&json!({"status": 200}))
        .unwrap_err()
        .field
        .as_deref(),
      Some("attempt")
    );
    let o =
      parse_outcome(&json!({"attempt": 2, "error": "boom\nline", "retry_base_ms": 10})).unwrap();
    assert_eq!(o.error.as_deref(), Some("boomline"));
    assert_eq!(
      parse_delivery_query(Some(&json!({"state": "done"})))
        .unwrap_err()
        .field
        .as_deref(),
      Some("state")
    );
    assert_eq!(
      parse_claim(Some(&json!({"limit": 0})))
        .unwrap_err()
        .field
        .as_deref(),
      Some("limit")
    );
  }

  #[test]
  fn secrets_stay_hidden() {
    let s = WebhookSecret::generate().unwrap();
    assert!(s.as_str().starts_with("whsec_"));
    assert_eq!(s.as_str().len(), 6 + 43);
    assert_eq!(format!("{s:?}"), "WebhookSecret(<hidden>)");
    assert_ne!(s.as_str(), WebhookSecret::generate().unwrap().as_str());
  }
}

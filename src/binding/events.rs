//! The event log on `Client` (`listEvents`, `onEvent`, `pruneEvents`) and the module-level
//! webhook helpers (`signWebhook`, `verifyWebhook`).
//!
//! `onEvent` delivery: the writer thread hands each committed job's events to a listener that
//! queues them, one call per event, on a *weak* threadsafe function, so a forgotten
//! subscription never keeps Node's event loop alive. The threadsafe function targets a small
//! native dispatcher that calls the user's callback only while the subscription is active, so
//! nothing is delivered after `unsubscribe()` returns, not even events already queued.

// The module-level `#[napi]` functions are only reachable through Node-API registration, which
// unit-test builds do not use.
#![cfg_attr(test, allow(dead_code))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use napi::bindgen_prelude::{BufferSlice, FromNapiValue, Function, Object, PromiseRaw, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{Env, JsValue, ValueType};
use napi_derive::napi;
use serde_json::Value;

use super::client::Client;
use super::js::{js_error, json_arg, promise, with_json, Json};
use crate::client::Vault;
use crate::clock::{iso8601, now_ms};
use crate::domain::events::{Event as CoreEvent, EventPage};
use crate::domain::webhook;
use crate::error::Error;
use crate::store::{Listener, Pending};

/// Options of `listEvents`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct EventQuery {
  /// Only events with a greater id: the last id you processed, or a page's `next`.
  pub after: Option<i64>,
  /// Page size, 1–1000 (default 100).
  pub limit: Option<u32>,
  /// Only these event types (an array, or one type).
  #[napi(ts_type = "LinkvaultEventType[] | LinkvaultEventType")]
  pub types: Option<Vec<String>>,
  /// Only events of this linked account (`end_user_id` is accepted as an alias).
  #[napi(js_name = "linked_account_id")]
  pub linked_account_id: Option<String>,
}

/// Options of `pruneEvents`.
// Type-only: see above.
#[allow(dead_code)]
#[napi(object)]
pub struct PruneEventsInput {
  /// A number deletes events with a lower id (the slowest consumer's last processed id + 1
  /// drops everything already processed); a `Date` or ISO-8601 string deletes events created
  /// before that instant.
  #[napi(ts_type = "number | Date | string")]
  pub before: Value,
}

/// One event of the log, as JavaScript receives it (JSON text, parsed on Node's thread). Its
/// TypeScript type is the union `LinkvaultEvent` written by hand in `index.d.ts` (one member per
/// event type, with its `data`), so none is generated here.
#[derive(serde::Serialize)]
pub struct JsEvent {
  id: i64,
  #[serde(rename = "type")]
  kind: String,
  linked_account_id: Option<String>,
  data: Value,
  /// ISO-8601 UTC with milliseconds.
  created_at: String,
}

/// A page of `listEvents`.
// Type-only: documents the result in index.d.ts; the page itself crosses as JSON (`JsPage`).
#[allow(dead_code)]
#[napi(object, use_nullable = true)]
pub struct EventList {
  #[napi(ts_type = "Array<LinkvaultEvent>")]
  pub events: Vec<Value>,
  /// Pass as `after` for the next page; null when nothing more matched (then resume from the
  /// last event's id).
  pub next: Option<i64>,
}

#[derive(serde::Serialize)]
struct JsPage {
  events: Vec<JsEvent>,
  next: Option<i64>,
}

/// What `pruneEvents` deleted.
#[napi(object)]
pub struct PruneResult {
  pub deleted: i64,
}

pub(crate) fn to_js_event(e: CoreEvent) -> JsEvent {
  JsEvent {
    id: e.id,
    kind: e.kind,
    linked_account_id: e.linked_account_id,
    data: e.data,
    created_at: iso8601(e.created_at),
  }
}

fn to_js_page(p: EventPage) -> Json {
  Json::of(&JsPage {
    events: p.events.into_iter().map(to_js_event).collect(),
    next: p.next,
  })
}

/// `pruneEvents`' options as JSON, with a JS `Date` in `before` turned into its ISO string.
fn prune_options(options: Option<Unknown<'_>>) -> Result<Value, Error> {
  let mut date_ms: Option<f64> = None;
  if let Some(o) = &options {
    if o.get_type().ok() == Some(ValueType::Object) {
      // SAFETY: the type was just checked to be an object.
      let obj = unsafe { Object::from_napi_value(o.value().env, o.raw()) }
        .map_err(|e| Error::validation("options", e.reason.clone()))?;
      let before: Option<Unknown<'_>> = obj
        .get("before")
        .map_err(|e| Error::validation("before", e.reason.clone()))?;
      if let Some(b) = before.filter(|b| b.is_date().unwrap_or(false)) {
        let n = b
          .coerce_to_number()
          .and_then(|n| n.get_double())
          .map_err(|e| Error::validation("before", e.reason.clone()))?;
        if !n.is_finite() {
          return Err(Error::validation("before", "before is an invalid Date"));
        }
        date_ms = Some(n);
      }
    }
  }
  let mut v = json_arg(options, "options")?;
  if let (Some(ms), Value::Object(m)) = (date_ms, &mut v) {
    m.insert("before".into(), Value::String(iso8601(ms as i64)));
  }
  Ok(v)
}

/// Unsubscribes when called; harmless to call more than once.
fn unsubscriber(vault: Weak<Vault>, id: u64, active: Arc<AtomicBool>) -> impl Fn() {
  move || {
    active.store(false, Ordering::SeqCst);
    if let Some(v) = vault.upgrade() {
      v.unsubscribe(id);
    }
  }
}

#[napi]
impl Client {
  /// Reads the event log in id order, after `after` (exclusive). Consumers store the last id
  /// they processed and resume from it (at-least-once, across restarts and processes).
  #[napi(
    ts_args_type = "options?: EventQuery",
    ts_return_type = "Promise<EventList>"
  )]
  pub fn list_events<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = with_json(options, "options", |v| self.vault.list_events(Some(v)));
    promise(env, p, to_js_page)
  }

  /// Deletes old events of this scope (retention). `before`: an event id (events with a lower
  /// id go) or a `Date`/ISO-8601 string (events created before it go).
  #[napi(
    ts_args_type = "options: PruneEventsInput",
    ts_return_type = "Promise<PruneResult>"
  )]
  pub fn prune_events<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, PruneResult>> {
    let p = match prune_options(options) {
      Ok(v) => self.vault.prune_events(Some(&v)),
      Err(e) => Pending::ready(Err(e)),
    };
    promise(env, p, |deleted| PruneResult { deleted })
  }

  /// Calls `callback(event)` for each event committed by this client (its own writes, not other
  /// processes': use `listEvents` for those), in commit order, shortly after each commit (not
  /// necessarily before the mutation's promise resolves). On SQLite commit order is id order; on
  /// PostgreSQL this client's concurrent transactions may commit out of their ids' order, while
  /// each account's events always arrive in id order. Returns a function that unsubscribes;
  /// nothing is delivered after it returns. A subscription does not keep the process alive, and
  /// `close()` ends it after delivering the events of writes queued before. An exception thrown
  /// by `callback` is an uncaught exception, as with an `EventEmitter` listener.
  #[napi(
    ts_args_type = "callback: (event: LinkvaultEvent) => void",
    ts_return_type = "() => void"
  )]
  pub fn on_event<'e>(
    &self,
    env: &'e Env,
    callback: Option<Unknown<'_>>,
  ) -> napi::Result<Function<'e, (), ()>> {
    let callback = match callback {
      Some(c) if c.get_type().ok() == Some(ValueType::Function) => c,
      _ => {
        return Err(js_error(
          env,
          &Error::validation("callback", "callback must be a function"),
        ))
      }
    };
    // SAFETY: the type was just checked to be a function.
    let user: Function<'_, Unknown<'_>, Unknown<'_>> =
      unsafe { Function::from_napi_value(callback.value().env, callback.raw()) }?;
    let user = user.create_ref()?;
    let active = Arc::new(AtomicBool::new(true));
    let gate = active.clone();
    let dispatch =
      env.create_function_from_closure::<Json, (), _>("linkvaultOnEvent", move |ctx| {
        if gate.load(Ordering::SeqCst) {
          let f = user.borrow_back(ctx.env)?;
          let event: Unknown<'_> = ctx.get(0)?;
          f.call(event)?;
        }
        Ok(())
      })?;
    let tsfn = Arc::new(
      dispatch
        .build_threadsafe_function::<CoreEvent>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(|ctx| Ok(Json::of(&to_js_event(ctx.value))))?,
    );
    let listener: Listener = Arc::new(move |events: &[CoreEvent]| {
      for e in events {
        tsfn.call(e.clone(), ThreadsafeFunctionCallMode::NonBlocking);
      }
    });
    let id = self
      .vault
      .subscribe(listener)
      .map_err(|e| js_error(env, &e))?;
    let unsubscribe = unsubscriber(Arc::downgrade(&self.vault), id, active);
    env.create_function_from_closure::<(), (), _>("unsubscribe", move |_| {
      unsubscribe();
      Ok(())
    })
  }
}

/// A string (UTF-8) or a Buffer/Uint8Array, as bytes.
fn bytes_arg(v: Option<Unknown<'_>>, field: &str) -> Result<Vec<u8>, Error> {
  let wrong = || Error::validation(field, format!("{field} must be a string or a Buffer"));
  let Some(v) = v else { return Err(wrong()) };
  match v.get_type().map_err(|_| wrong())? {
    // SAFETY: the type was checked just before each conversion.
    ValueType::String => unsafe { String::from_napi_value(v.value().env, v.raw()) }
      .map(String::into_bytes)
      .map_err(|_| wrong()),
    ValueType::Object if v.is_buffer().unwrap_or(false) || v.is_typedarray().unwrap_or(false) => {
      unsafe { BufferSlice::from_napi_value(v.value().env, v.raw()) }
        .map(|b| b.to_vec())
        .or_else(|_| {
          unsafe { <&[u8]>::from_napi_value(v.value().env, v.raw()) }.map(<[u8]>::to_vec)
        })
        .map_err(|_| wrong())
    }
    _ => Err(wrong()),
  }
}

fn int_arg(v: Option<Unknown<'_>>, field: &str) -> Result<Option<i64>, Error> {
  let Some(v) = v else { return Ok(None) };
  match v.get_type() {
    Ok(ValueType::Undefined | ValueType::Null) => Ok(None),
    Ok(ValueType::Number) => {
      // SAFETY: the type was just checked to be a number.
      let n = unsafe { f64::from_napi_value(v.value().env, v.raw()) }
        .map_err(|e| Error::validation(field, e.reason.clone()))?;
      if n.is_finite() && n.fract() == 0.0 && n.abs() < 9e15 {
        Ok(Some(n as i64))
      } else {
        Err(Error::validation(
          field,
          format!("{field} must be an integer"),
        ))
      }
    }
    _ => Err(Error::validation(
      field,
      format!("{field} must be a number"),
    )),
  }
}

fn str_arg(v: Option<Unknown<'_>>, field: &str) -> Result<String, Error> {
  let wrong = || Error::validation(field, format!("{field} must be a string"));
  match v {
    // SAFETY: the type was just checked to be a string.
    Some(v) if v.get_type().ok() == Some(ValueType::String) => {
      unsafe { String::from_napi_value(v.value().env, v.raw()) }.map_err(|_| wrong())
    }
    _ => Err(wrong()),
  }
}

/// Signs a webhook body: returns the header value `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>" keyed with secret>`. `timestamp` (unix seconds) defaults to now. Throws a
/// `VALIDATION_ERROR` for an empty secret or a timestamp in milliseconds.
#[napi(
  ts_args_type = "body: string | Buffer, secret: string | Buffer, timestamp?: number",
  ts_return_type = "string"
)]
pub fn sign_webhook(
  env: &Env,
  body: Option<Unknown<'_>>,
  secret: Option<Unknown<'_>>,
  timestamp: Option<Unknown<'_>>,
) -> napi::Result<String> {
  (|| {
    let body = bytes_arg(body, "body")?;
    // The signing secret's copy is wiped when dropped (reliability: keys zeroized).
    let secret = zeroize::Zeroizing::new(bytes_arg(secret, "secret")?);
    let t = int_arg(timestamp, "timestamp")?.unwrap_or_else(|| now_ms().div_euclid(1000));
    webhook::sign(&body, &secret, t)
  })()
  .map_err(|e| js_error(env, &e))
}

/// Verifies a webhook signature header made by `signWebhook` (or the same scheme), in constant
/// time. False for a wrong signature, a malformed header, or a timestamp more than
/// `toleranceSeconds` (default 300) away from now. Several `v1=` entries are accepted (secret
/// rotation). Throws a `VALIDATION_ERROR` only for misuse (empty secret, negative tolerance).
#[napi(
  ts_args_type = "body: string | Buffer, header: string, secret: string | Buffer, toleranceSeconds?: number",
  ts_return_type = "boolean"
)]
pub fn verify_webhook(
  env: &Env,
  body: Option<Unknown<'_>>,
  header: Option<Unknown<'_>>,
  secret: Option<Unknown<'_>>,
  tolerance_seconds: Option<Unknown<'_>>,
) -> napi::Result<bool> {
  (|| {
    let body = bytes_arg(body, "body")?;
    let header = str_arg(header, "header")?;
    let secret = zeroize::Zeroizing::new(bytes_arg(secret, "secret")?);
    let tolerance =
      int_arg(tolerance_seconds, "toleranceSeconds")?.unwrap_or(webhook::DEFAULT_TOLERANCE_SECS);
    webhook::verify(
      &body,
      &header,
      &secret,
      tolerance,
      now_ms().div_euclid(1000),
    )
  })()
  .map_err(|e| js_error(env, &e))
}

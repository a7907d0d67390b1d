//! Webhook subscriptions and delivery records in SQLite (rules in `crate::webhooks`).
//!
//! # Tables (migration 8)
//! - `webhooks`: one row per subscription of a scope; `secret` sealed with the client's
//!   encryption key (AAD binds scope and id); `cursor` is the last event id of the scope turned
//!   into delivery records.
//! - `webhook_deliveries`: one row per (webhook, event), with the envelope body fixed when the
//!   row is made, the attempt count, the lease of an attempt in flight and the last outcome.
//!   `ordering_key` is the event's end user ('' for events without one): only the oldest
//!   pending row of a (webhook, ordering_key) line is ever handed out.

use std::collections::hash_map::{Entry, HashMap};

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::sqlite::{SqliteStore, SqliteTx};
use super::{Pending, Scope};
use crate::clock::now_ms;
use crate::crypto::{self, Sealer};
use crate::domain::events::Event;
use crate::error::{Error, Result};
use crate::webhooks::{
  self, AttemptOutcome, ClaimOptions, Claimed, CreatedWebhook, Delivery, DeliveryPage,
  DeliveryQuery, DeliveryState, Webhook, WebhookFilter, WebhookInput, WebhookSecret,
};

/// Webhooks and their deliveries. Webhooks are administered store-wide (like API keys): list,
/// delete, deliveries and claims reach every scope; a webhook is created in one scope and
/// receives only that scope's events.
pub trait WebhookStore: Send + Sync {
  fn create_webhook(&self, scope: &Scope, input: WebhookInput) -> Pending<CreatedWebhook>;
  fn list_webhooks(&self, filter: WebhookFilter) -> Pending<Vec<Webhook>>;
  /// Deletes a webhook and its delivery records; `NOT_FOUND` if unknown.
  fn delete_webhook(&self, id: String) -> Pending<Webhook>;
  /// Newest first; `NOT_FOUND` for an unknown webhook.
  fn list_deliveries(&self, webhook_id: String, query: DeliveryQuery) -> Pending<DeliveryPage>;
  /// Turns new events into delivery records, then leases the due heads of their lines.
  fn claim_deliveries(&self, options: ClaimOptions) -> Pending<Vec<Claimed>>;
  /// Records how an attempt ended. An outcome for an attempt that is no longer the current
  /// one (its lease ran out and the delivery was handed out again) changes nothing.
  fn record_attempt(&self, delivery_id: i64, outcome: AttemptOutcome) -> Pending<Delivery>;
  /// The (org, environment) of an auth session's scope, by its session id.
  fn locate_auth_session(&self, session_id: String) -> Pending<Option<(String, String)>>;
}

pub(crate) use crate::domain::keys::webhook_secret_aad as secret_aad;

fn events_list(text: Option<String>) -> Option<Vec<String>> {
  text.and_then(|t| serde_json::from_str(&t).ok())
}

const WEBHOOK_COLUMNS: &str = "w.id, s.org_id, s.environment, w.url, w.events, w.cursor,
  (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_pk = w.pk AND d.state = 'pending'),
  (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_pk = w.pk AND d.state = 'failed'),
  w.created_at";

fn webhook_row(r: &Row<'_>) -> rusqlite::Result<Webhook> {
  Ok(Webhook {
    id: r.get(0)?,
    org_id: r.get(1)?,
    environment: r.get(2)?,
    url: r.get(3)?,
    events: events_list(r.get(4)?),
    cursor: r.get(5)?,
    pending: r.get(6)?,
    failed: r.get(7)?,
    created_at: r.get(8)?,
  })
}

fn get_webhook(conn: &Connection, id: &str) -> Result<Webhook> {
  conn
    .prepare_cached(&format!(
      "SELECT {WEBHOOK_COLUMNS} FROM webhooks w JOIN scopes s ON s.id = w.scope_id WHERE w.id = ?1"
    ))?
    .query_row([id], webhook_row)
    .optional()?
    .ok_or_else(|| Error::not_found(format!("No webhook with id {id}")))
}

pub fn create(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  input: WebhookInput,
  now: i64,
) -> Result<CreatedWebhook> {
  crate::domain::keys::sync(&mut SqliteTx::new(conn), sealer)?;
  let id = webhooks::new_webhook_id(now)?;
  let secret = WebhookSecret::generate()?;
  let sealed = sealer.seal(secret.as_str().as_bytes(), &secret_aad(scope.id, &id))?;
  let events = input
    .events
    .as_ref()
    .map(|e| serde_json::Value::from(e.clone()).to_string());
  // Events already in the log are not this webhook's: it starts after the newest.
  let cursor: i64 = conn
    .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM events WHERE scope_id = ?1")?
    .query_row([scope.id], |r| r.get(0))?;
  conn
    .prepare_cached(
      "INSERT INTO webhooks (scope_id, id, url, events, secret, cursor, created_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
      scope.id, id, input.url, events, sealed, cursor, now
    ])?;
  Ok(CreatedWebhook {
    webhook: Webhook {
      id,
      org_id: scope.org_id.clone(),
      environment: scope.environment.clone(),
      url: input.url,
      events: input.events,
      cursor,
      pending: 0,
      failed: 0,
      created_at: now,
    },
    secret,
  })
}

pub fn list(conn: &Connection, filter: &WebhookFilter) -> Result<Vec<Webhook>> {
  let rows = conn
    .prepare_cached(&format!(
      "SELECT {WEBHOOK_COLUMNS} FROM webhooks w JOIN scopes s ON s.id = w.scope_id
       WHERE (?1 IS NULL OR s.org_id = ?1) AND (?2 IS NULL OR s.environment = ?2)
       ORDER BY w.pk"
    ))?
    .query_map(params![filter.org_id, filter.environment], webhook_row)?
    .collect::<rusqlite::Result<Vec<_>>>()?;
  Ok(rows)
}

pub fn delete(conn: &Connection, id: &str) -> Result<Webhook> {
  let w = get_webhook(conn, id)?;
  conn
    .prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
    .execute([id])?;
  Ok(w)
}

const DELIVERY_COLUMNS: &str = "d.pk, w.id, d.event_id, d.event_type, d.end_user_id, d.state,
  d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.finished_at,
  d.created_at";

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
  let state: String = r.get(5)?;
  let event_id: i64 = r.get(2)?;
  Ok(Delivery {
    id: r.get(0)?,
    webhook_id: r.get(1)?,
    message_id: webhooks::message_id(event_id),
    event_id,
    event: r.get(3)?,
    end_user_id: r.get(4)?,
    state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending),
    attempts: r.get(6)?,
    next_attempt_at: r.get(7)?,
    last_attempt_at: r.get(8)?,
    last_status: r.get(9)?,
    last_error: r.get(10)?,
    finished_at: r.get(11)?,
    created_at: r.get(12)?,
  })
}

pub fn deliveries(conn: &Connection, webhook_id: &str, q: &DeliveryQuery) -> Result<DeliveryPage> {
  let pk: i64 = conn
    .prepare_cached("SELECT pk FROM webhooks WHERE id = ?1")?
    .query_row([webhook_id], |r| r.get(0))
    .optional()?
    .ok_or_else(|| Error::not_found(format!("No webhook with id {webhook_id}")))?;
  let mut rows = conn
    .prepare_cached(&format!(
      "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.pk = d.webhook_pk
       WHERE d.webhook_pk = ?1 AND (?2 IS NULL OR d.state = ?2) AND (?3 IS NULL OR d.pk < ?3)
       ORDER BY d.pk DESC LIMIT ?4"
    ))?
    .query_map(
      params![
        pk,
        q.state.map(DeliveryState::as_str),
        q.before,
        q.limit + 1
      ],
      delivery_row,
    )?
    .collect::<rusqlite::Result<Vec<_>>>()?;
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

/// Whether a claim has anything to do (a read, so an idle dispatcher writes nothing).
fn has_work(conn: &Connection, now: i64) -> Result<bool> {
  let sql = "SELECT EXISTS (SELECT 1 FROM webhooks w WHERE EXISTS
       (SELECT 1 FROM events e WHERE e.scope_id = w.scope_id AND e.id > w.cursor))
     OR EXISTS (SELECT 1 FROM webhook_deliveries
       WHERE state = 'pending' AND next_attempt_at <= ?1 AND lease_until <= ?1)
     OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE state <> 'pending' AND finished_at < ?2
       AND (state = 'delivered' OR finished_at < ?3))";
  let (delivered_before, failed_before) = (
    now - webhooks::KEEP_DELIVERED_MS,
    now - webhooks::KEEP_FAILED_MS,
  );
  Ok(
    conn
      .prepare_cached(sql)?
      .query_row(params![now, delivered_before, failed_before], |r| r.get(0))?,
  )
}

/// Turns the events after each webhook's cursor into delivery records and moves the cursor,
/// at most `MATERIALIZE_BATCH` events per webhook.
fn materialize(conn: &Connection, now: i64) -> Result<()> {
  let subs: Vec<(i64, i64, Option<Vec<String>>, i64)> = conn
    .prepare_cached("SELECT pk, scope_id, events, cursor FROM webhooks ORDER BY pk")?
    .query_map([], |r| {
      Ok((r.get(0)?, r.get(1)?, events_list(r.get(2)?), r.get(3)?))
    })?
    .collect::<rusqlite::Result<_>>()?;
  for (pk, scope_id, filter, cursor) in subs {
    let events: Vec<Event> = conn
      .prepare_cached(
        "SELECT id, type, linked_account_id, data, created_at FROM events
         WHERE scope_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
      )?
      .query_map(
        params![scope_id, cursor, webhooks::MATERIALIZE_BATCH],
        |r| {
          let data: String = r.get(3)?;
          Ok(Event {
            id: r.get(0)?,
            kind: r.get(1)?,
            linked_account_id: r.get(2)?,
            data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
            created_at: r.get(4)?,
          })
        },
      )?
      .collect::<rusqlite::Result<_>>()?;
    let Some(last) = events.last().map(|e| e.id) else {
      continue;
    };
    let mut insert = conn.prepare_cached(
      "INSERT OR IGNORE INTO webhook_deliveries
         (webhook_pk, event_id, event_type, end_user_id, ordering_key, body, next_attempt_at, created_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?;
    for e in events
      .iter()
      .filter(|e| webhooks::wants(filter.as_deref(), &e.kind))
    {
      insert.execute(params![
        pk,
        e.id,
        e.kind,
        e.linked_account_id,
        e.linked_account_id.as_deref().unwrap_or(""),
        webhooks::envelope(e),
        now
      ])?;
    }
    conn
      .prepare_cached("UPDATE webhooks SET cursor = ?2 WHERE pk = ?1")?
      .execute(params![pk, last])?;
  }
  Ok(())
}

/// Drops finished records past their retention (a bounded batch per claim).
fn prune(conn: &Connection, now: i64) -> Result<()> {
  conn
    .prepare_cached(
      "DELETE FROM webhook_deliveries WHERE pk IN (
         SELECT pk FROM webhook_deliveries
         WHERE state <> 'pending' AND finished_at < ?1
           AND (state = 'delivered' OR finished_at < ?2)
         LIMIT ?3)",
    )?
    .execute(params![
      now - webhooks::KEEP_DELIVERED_MS,
      now - webhooks::KEEP_FAILED_MS,
      webhooks::PRUNE_BATCH
    ])?;
  Ok(())
}

pub fn claim(
  conn: &Connection,
  sealer: &Sealer,
  options: ClaimOptions,
  now: i64,
) -> Result<Vec<Claimed>> {
  crate::domain::keys::learn(&mut SqliteTx::new(conn), sealer)?;
  materialize(conn, now)?;
  prune(conn, now)?;
  type Head = (i64, i64, String, i64, i64, String, String, i64, Vec<u8>);
  let heads: Vec<Head> = conn
    .prepare_cached(
      "SELECT d.pk, d.event_id, d.body, d.attempts, w.pk, w.id, w.url, w.scope_id, w.secret
       FROM webhook_deliveries d JOIN webhooks w ON w.pk = d.webhook_pk
       WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 AND d.lease_until <= ?1
         AND d.event_id = (SELECT MIN(h.event_id) FROM webhook_deliveries h
                           WHERE h.webhook_pk = d.webhook_pk AND h.ordering_key = d.ordering_key
                             AND h.state = 'pending')
       ORDER BY d.next_attempt_at, d.pk LIMIT ?2",
    )?
    .query_map(params![now, options.limit], |r| {
      Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
      ))
    })?
    .collect::<rusqlite::Result<_>>()?;
  let mut secrets: HashMap<i64, WebhookSecret> = HashMap::new();
  let mut out = Vec::with_capacity(heads.len());
  let mut lease = conn.prepare_cached(
    "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = ?2, last_attempt_at = ?3
     WHERE pk = ?1",
  )?;
  for (pk, event_id, body, attempts, webhook_pk, webhook_id, url, scope_id, sealed) in heads {
    let secret = match secrets.entry(webhook_pk) {
      Entry::Occupied(e) => e.into_mut(),
      Entry::Vacant(e) => {
        let plain = sealer.open(&sealed, &secret_aad(scope_id, &webhook_id))?;
        e.insert(WebhookSecret::from_bytes(plain)?)
      }
    };
    let signature = crate::domain::webhook::sign(
      body.as_bytes(),
      secret.as_str().as_bytes(),
      now.div_euclid(1000),
    )?;
    lease.execute(params![pk, now.saturating_add(options.lease_ms), now])?;
    out.push(Claimed {
      id: pk,
      webhook_id,
      url,
      message_id: webhooks::message_id(event_id),
      attempt: attempts + 1,
      body,
      signature,
    });
  }
  Ok(out)
}

fn get_delivery(conn: &Connection, pk: i64) -> Result<Delivery> {
  conn
    .prepare_cached(&format!(
      "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.pk = d.webhook_pk
       WHERE d.pk = ?1"
    ))?
    .query_row([pk], delivery_row)
    .optional()?
    .ok_or_else(|| {
      Error::not_found(format!(
        "No webhook delivery {pk} (its webhook may be deleted)"
      ))
    })
}

pub fn record(conn: &Connection, pk: i64, outcome: &AttemptOutcome, now: i64) -> Result<Delivery> {
  let current = get_delivery(conn, pk)?;
  if current.state != DeliveryState::Pending || current.attempts != outcome.attempt {
    return Ok(current);
  }
  let (state, next) = webhooks::after_attempt(current.attempts, outcome, now);
  let finished = (state != DeliveryState::Pending).then_some(now);
  conn
    .prepare_cached(
      "UPDATE webhook_deliveries SET state = ?2, next_attempt_at = ?3, lease_until = 0,
         last_status = ?4, last_error = ?5, finished_at = ?6
       WHERE pk = ?1",
    )?
    .execute(params![
      pk,
      state.as_str(),
      next,
      outcome.status,
      outcome.error,
      finished
    ])?;
  get_delivery(conn, pk)
}

pub fn locate_session(conn: &Connection, session_id: &str) -> Result<Option<(String, String)>> {
  Ok(
    conn
      .prepare_cached(
        "SELECT s.org_id, s.environment FROM auth_sessions a JOIN scopes s ON s.id = a.scope_id
         WHERE a.session_hash = ?1",
      )?
      .query_row([&crypto::sha256(session_id.as_bytes())[..]], |r| {
        Ok((r.get(0)?, r.get(1)?))
      })
      .optional()?,
  )
}

impl WebhookStore for SqliteStore {
  fn create_webhook(&self, scope: &Scope, input: WebhookInput) -> Pending<CreatedWebhook> {
    let (scope, sealer) = (scope.clone(), self.sealer());
    self.write(move |conn| create(conn, &sealer, &scope, input, now_ms()))
  }

  fn list_webhooks(&self, filter: WebhookFilter) -> Pending<Vec<Webhook>> {
    self.read(move |conn| list(conn, &filter))
  }

  fn delete_webhook(&self, id: String) -> Pending<Webhook> {
    self.write(move |conn| delete(conn, &id))
  }

  fn list_deliveries(&self, webhook_id: String, query: DeliveryQuery) -> Pending<DeliveryPage> {
    self.read(move |conn| deliveries(conn, &webhook_id, &query))
  }

  fn claim_deliveries(&self, options: ClaimOptions) -> Pending<Vec<Claimed>> {
    let (engine, sealer) = (self.engine(), self.sealer());
    let (answer, result) = Pending::channel();
    // Look first with a read: an idle dispatcher polling costs no write transaction.
    self
      .read(move |conn| has_work(conn, now_ms()))
      .on_ready(move |work| match work {
        Ok(true) => engine
          .write(move |conn| claim(conn, &sealer, options, now_ms()))
          .on_ready(move |r| {
            let _ = answer.send(r);
          }),
        Ok(false) => {
          let _ = answer.send(Ok(Vec::new()));
        }
        Err(e) => {
          let _ = answer.send(Err(e));
        }
      });
    result
  }

  fn record_attempt(&self, delivery_id: i64, outcome: AttemptOutcome) -> Pending<Delivery> {
    self.write(move |conn| record(conn, delivery_id, &outcome, now_ms()))
  }

  fn locate_auth_session(&self, session_id: String) -> Pending<Option<(String, String)>> {
    self.read(move |conn| locate_session(conn, &session_id))
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::client::{OpenOptions, Vault};
  use crate::crypto::Key;
  use serde_json::{json, Value};

  fn open(path: &str, env: &str) -> Vault {
    let mut o = OpenOptions::parse(Some(
      &json!({"path": path, "environment": env, "orgId": "org_1"}),
    ))
    .unwrap();
    o.encryption_key = Some(Key::from_bytes([7; 32]));
    Vault::open(o).wait().unwrap()
  }

  fn account(v: &Vault, id: &str) {
    v.upsert_linked_account(&json!({"linked_account_id": id}), None)
      .wait()
      .unwrap();
  }

  fn claim(v: &Vault) -> Vec<Claimed> {
    v.claim_webhook_deliveries(Some(&json!({"limit": 100, "lease_ms": 60_000})))
      .wait()
      .unwrap()
  }

  fn answer(v: &Vault, c: &Claimed, status: i64) -> Delivery {
    v.record_webhook_attempt(
      &json!(c.id),
      &json!({"attempt": c.attempt, "status": status, "retry_base_ms": 1}),
    )
    .wait()
    .unwrap()
  }

  fn user_of(c: &Claimed) -> String {
    let body: Value = serde_json::from_str(&c.body).unwrap();
    body["data"]["end_user_id"]
      .as_str()
      .unwrap_or("")
      .to_string()
  }

  #[test]
  fn delivers_in_order_per_end_user_and_retries() {
    let v = open(":memory:", "test");
    account(&v, "before");
    let created = v
      .create_webhook(&json!({"url": "https://h.example/hook"}))
      .wait()
      .unwrap();
    assert!(created.secret.as_str().starts_with("whsec_"));
    assert!(!format!("{created:?}").contains(created.secret.as_str()));
    // Events before the webhook existed are not its.
    assert!(claim(&v).is_empty());
    for i in 0..3 {
      account(&v, &format!("u{i}"));
    }
    // Second event for u0.
    v.upsert_linked_account(&json!({"linked_account_id": "u0", "name": "Ann"}), None)
      .wait()
      .unwrap();
    let first = claim(&v);
    // One head per end user: u0's update waits for its creation.
    let mut users: Vec<String> = first.iter().map(user_of).collect();
    users.sort();
    assert_eq!(users, vec!["u0", "u1", "u2"]);
    for c in &first {
      assert_eq!(c.attempt, 1);
      assert_eq!(
        c.message_id,
        serde_json::from_str::<Value>(&c.body).unwrap()["message_id"]
      );
      let t = c
        .signature
        .split(['=', ','])
        .nth(1)
        .unwrap()
        .parse::<i64>()
        .unwrap();
      assert!(crate::domain::webhook::verify(
        c.body.as_bytes(),
        &c.signature,
        created.secret.as_str().as_bytes(),
        0,
        t
      )
      .unwrap());
    }
    // Leased: nothing more is handed out while they are in flight.
    assert!(claim(&v).is_empty());
    let u0 = first.iter().find(|c| user_of(c) == "u0").unwrap();
    let d = answer(&v, u0, 500);
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.last_status, Some(500));
    // u0 failed: its retry (same message) comes before its second event.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let again = claim(&v);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, u0.message_id);
    assert_eq!(again[0].body, u0.body);
    assert_eq!(again[0].attempt, 2);
    // A stale outcome (attempt 1) changes nothing.
    assert_eq!(answer(&v, u0, 200).attempts, 2);
    assert_eq!(answer(&v, &again[0], 204).state, DeliveryState::Delivered);
    let next = claim(&v);
    assert_eq!(next.len(), 1);
    assert_eq!(user_of(&next[0]), "u0");
    assert!(next[0].message_id.parse::<i64>().unwrap() > u0.message_id.parse::<i64>().unwrap());
    let list = v.list_webhooks(None).wait().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].pending, 3);
    let page = v
      .list_webhook_deliveries(
        &json!(created.webhook.id),
        Some(&json!({"state": "delivered"})),
      )
      .wait()
      .unwrap();
    assert_eq!(page.deliveries.len(), 1);
    assert_eq!(page.deliveries[0].attempts, 2);
  }

  #[test]
  fn fails_after_five_attempts_then_the_line_moves_on() {
    let v = open(":memory:", "test");
    let w = v
      .create_webhook(&json!({"url": "http://h.example/x", "events": ["linked_account.created", "linked_account.updated"]}))
      .wait()
      .unwrap();
    account(&v, "u1");
    v.upsert_linked_account(&json!({"linked_account_id": "u1", "name": "B"}), None)
      .wait()
      .unwrap();
    v.delete_linked_account(&json!("u1")).wait().unwrap();
    let mut last = None;
    for attempt in 1..=5 {
      std::thread::sleep(std::time::Duration::from_millis(20));
      let c = claim(&v);
      assert_eq!(c.len(), 1, "attempt {attempt}");
      assert_eq!(c[0].attempt, attempt);
      last = Some(
        v.record_webhook_attempt(
          &json!(c[0].id),
          &json!({"attempt": attempt, "error": "connect ECONNREFUSED", "retry_base_ms": 1}),
        )
        .wait()
        .unwrap(),
      );
    }
    let last = last.unwrap();
    assert_eq!(last.state, DeliveryState::Failed);
    assert_eq!(last.last_error.as_deref(), Some("connect ECONNREFUSED"));
    // The line moves on to the update; the deletion is filtered out.
    let c = claim(&v);
    assert_eq!(c.len(), 1);
    let body: Value = serde_json::from_str(&c[0].body).unwrap();
    assert_eq!(body["data"]["event"], "linked_account.updated");
    answer(&v, &c[0], 200);
    assert!(claim(&v).is_empty());
    let all = v
      .list_webhook_deliveries(&json!(w.webhook.id), None)
      .wait()
      .unwrap();
    assert_eq!(all.deliveries.len(), 2);
    assert_eq!(v.list_webhooks(None).wait().unwrap()[0].failed, 1);
    // Deleting drops the records; later outcomes of its deliveries are NOT_FOUND.
    v.delete_webhook(&json!(w.webhook.id)).wait().unwrap();
    assert_eq!(
      v.record_webhook_attempt(&json!(c[0].id), &json!({"attempt": 1, "status": 200}))
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    assert_eq!(
      v.delete_webhook(&json!(w.webhook.id))
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
  }

  #[test]
  fn position_and_sealed_secret_survive_a_crash_and_a_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db").to_string_lossy().to_string();
    let v = open(&path, "test");
    let w = v
      .create_webhook(&json!({"url": "https://h.example/hook"}))
      .wait()
      .unwrap();
    let secret = w.secret.as_str().to_string();
    account(&v, "a");
    let c = claim(&v);
    assert_eq!(c.len(), 1);
    // Crash mid-delivery: the process goes away without recording anything.
    v.close().wait().unwrap();
    let v = open(&path, "test");
    // The lease has not run out: not handed out twice at once.
    assert!(claim(&v).is_empty());
    v.close().wait().unwrap();
    // On disk the secret is sealed.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
      let bytes = std::fs::read(entry.unwrap().path()).unwrap();
      assert!(!bytes.windows(secret.len()).any(|x| x == secret.as_bytes()));
    }
    let v = open(&path, "test");
    let store_again = v
      .claim_webhook_deliveries(Some(&json!({"lease_ms": 1})))
      .wait()
      .unwrap();
    assert!(store_again.is_empty(), "lease still running");
    // Other scopes see the webhook in lists (store-wide) but not its events.
    let prod = open(&path, "production");
    account(&prod, "p");
    assert_eq!(prod.list_webhooks(None).wait().unwrap().len(), 1);
    assert_eq!(
      prod
        .list_webhooks(Some(&json!({"environment": "production"})))
        .wait()
        .unwrap()
        .len(),
      0
    );
    assert_eq!(
      prod
        .create_webhook(&json!({"url": "http://h.example"}))
        .wait()
        .unwrap_err()
        .field
        .as_deref(),
      Some("url")
    );
    prod.close().wait().unwrap();
    // A key rotation reseals the secret: a client holding only the new key signs with it.
    let r = v.rotate_encryption_key(&json!(hex_key(9))).wait().unwrap();
    assert!(r.resealed >= 1);
    assert!(v.check_integrity().wait().unwrap().ok);
    v.close().wait().unwrap();
    let mut o = OpenOptions::parse(Some(&json!({"path": path, "orgId": "org_1"}))).unwrap();
    o.encryption_key = Some(Key::from_bytes([9; 32]));
    let v = Vault::open(o).wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1));
    account(&v, "b");
    let c = v
      .claim_webhook_deliveries(Some(&json!({"limit": 10})))
      .wait()
      .unwrap();
    let b = c.iter().find(|c| user_of(c) == "b").unwrap();
    let t = b
      .signature
      .split(['=', ','])
      .nth(1)
      .unwrap()
      .parse::<i64>()
      .unwrap();
    assert!(crate::domain::webhook::verify(
      b.body.as_bytes(),
      &b.signature,
      secret.as_bytes(),
      0,
      t
    )
    .unwrap());
    v.close().wait().unwrap();
  }

  #[test]
  fn idle_claims_only_read_and_retention_is_kept() {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    super::super::sqlite::schema::migrate(&mut conn).unwrap();
    conn
      .execute_batch(
        "INSERT INTO scopes (id, org_id, environment) VALUES (1, 'o', 'test');
         INSERT INTO webhooks (pk, scope_id, id, url, secret, cursor, created_at)
           VALUES (1, 1, 'wh_1', 'https://h.example', x'00', 0, 0);",
      )
      .unwrap();
    let day = 24 * 3600 * 1000;
    let now = 100 * day;
    assert!(!has_work(&conn, now).unwrap());
    let row = |event: i64, state: &str, finished: i64| {
      conn
        .execute(
          "INSERT INTO webhook_deliveries (webhook_pk, event_id, event_type, ordering_key, body,
             state, next_attempt_at, finished_at, created_at) VALUES (1, ?1, 't', '', '{}', ?2, 0, ?3, 0)",
          params![event, state, finished],
        )
        .unwrap();
    };
    let count = || -> i64 {
      conn
        .query_row("SELECT count(*) FROM webhook_deliveries", [], |r| r.get(0))
        .unwrap()
    };
    // Finished, but within their retention: nothing to do, nothing pruned.
    row(1, "delivered", now - 6 * day);
    row(2, "failed", now - 20 * day);
    assert!(!has_work(&conn, now).unwrap());
    prune(&conn, now).unwrap();
    assert_eq!(count(), 2);
    // Past it: the claim has work, and prunes exactly those.
    row(3, "delivered", now - 8 * day);
    row(4, "failed", now - 31 * day);
    assert!(has_work(&conn, now).unwrap());
    prune(&conn, now).unwrap();
    assert_eq!(count(), 2);
    assert!(!has_work(&conn, now).unwrap());
    // A new event in the webhook's scope is work.
    conn
      .execute(
        "INSERT INTO events (scope_id, type, data, created_at) VALUES (1, 't', '{}', 0)",
        [],
      )
      .unwrap();
    assert!(has_work(&conn, now).unwrap());
  }

  fn hex_key(byte: u8) -> String {
    crate::crypto::hex_encode(&[byte; 32])
  }
}

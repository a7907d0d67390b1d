//! Webhook subscriptions and delivery records on SQLite. Rows only (rules:
//! `domain::webhooks`).
//!
//! # Tables (migration 8)
//! - `webhooks`: one row per subscription of a scope; `secret` sealed with the client's
//!   encryption key (AAD binds scope and id); `cursor` is the last event id of the scope turned
//!   into delivery records.
//! - `webhook_deliveries`: one row per (webhook, event), with the envelope body fixed when the
//!   row is made, the attempt count, the lease of an attempt in flight and the last outcome.
//!   `ordering_key` is the event's end user ('' for events without one): only the oldest
//!   pending row of a (webhook, ordering_key) line is ever handed out.

use rusqlite::{params, OptionalExtension, Row};

use super::SqliteTx;
use crate::domain::events::Event;
use crate::domain::webhooks::{
  events_list, message_id, Delivery, DeliveryQuery, DeliveryState, DeliveryUpdate, DueHead,
  Subscription, Webhook, WebhookFilter, WebhookRows,
};
use crate::error::Result;

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

const DELIVERY_COLUMNS: &str = "d.pk, w.id, d.event_id, d.event_type, d.end_user_id, d.state,
  d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.finished_at,
  d.created_at";

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
  let state: String = r.get(5)?;
  let event_id: i64 = r.get(2)?;
  Ok(Delivery {
    id: r.get(0)?,
    webhook_id: r.get(1)?,
    message_id: message_id(event_id),
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

impl WebhookRows for SqliteTx<'_> {
  fn newest_event_id(&mut self, scope_id: i64) -> Result<i64> {
    Ok(
      self
        .conn
        .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM events WHERE scope_id = ?1")?
        .query_row([scope_id], |r| r.get(0))?,
    )
  }

  fn insert_webhook(
    &mut self,
    scope_id: i64,
    id: &str,
    url: &str,
    events: Option<&str>,
    sealed: &[u8],
    cursor: i64,
    now_ms: i64,
  ) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO webhooks (scope_id, id, url, events, secret, cursor, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      )?
      .execute(params![scope_id, id, url, events, sealed, cursor, now_ms])?;
    Ok(())
  }

  fn webhook(&mut self, id: &str) -> Result<Option<Webhook>> {
    Ok(
      self
        .conn
        .prepare_cached(&format!(
          "SELECT {WEBHOOK_COLUMNS} FROM webhooks w JOIN scopes s ON s.id = w.scope_id WHERE w.id = ?1"
        ))?
        .query_row([id], webhook_row)
        .optional()?,
    )
  }

  fn list_webhooks(&mut self, filter: &WebhookFilter) -> Result<Vec<Webhook>> {
    let rows = self
      .conn
      .prepare_cached(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks w JOIN scopes s ON s.id = w.scope_id
         WHERE (?1 IS NULL OR s.org_id = ?1) AND (?2 IS NULL OR s.environment = ?2)
         ORDER BY w.pk"
      ))?
      .query_map(params![filter.org_id, filter.environment], webhook_row)?
      .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
  }

  fn delete_webhook(&mut self, id: &str) -> Result<()> {
    self
      .conn
      .prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
      .execute([id])?;
    Ok(())
  }

  fn webhook_pk(&mut self, id: &str) -> Result<Option<i64>> {
    Ok(
      self
        .conn
        .prepare_cached("SELECT pk FROM webhooks WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?,
    )
  }

  fn deliveries(
    &mut self,
    webhook_pk: i64,
    q: &DeliveryQuery,
    limit: i64,
  ) -> Result<Vec<Delivery>> {
    let rows = self
      .conn
      .prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.pk = d.webhook_pk
         WHERE d.webhook_pk = ?1 AND (?2 IS NULL OR d.state = ?2) AND (?3 IS NULL OR d.pk < ?3)
         ORDER BY d.pk DESC LIMIT ?4"
      ))?
      .query_map(
        params![
          webhook_pk,
          q.state.map(DeliveryState::as_str),
          q.before,
          limit
        ],
        delivery_row,
      )?
      .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
  }

  fn has_webhook_work(
    &mut self,
    now_ms: i64,
    delivered_before: i64,
    failed_before: i64,
  ) -> Result<bool> {
    let sql = "SELECT EXISTS (SELECT 1 FROM webhooks w WHERE EXISTS
         (SELECT 1 FROM events e WHERE e.scope_id = w.scope_id AND e.id > w.cursor))
       OR EXISTS (SELECT 1 FROM webhook_deliveries
         WHERE state = 'pending' AND next_attempt_at <= ?1 AND lease_until <= ?1)
       OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE state <> 'pending' AND finished_at < ?2
         AND (state = 'delivered' OR finished_at < ?3))";
    Ok(
      self
        .conn
        .prepare_cached(sql)?
        .query_row(params![now_ms, delivered_before, failed_before], |r| {
          r.get(0)
        })?,
    )
  }

  fn subscriptions(&mut self) -> Result<Vec<Subscription>> {
    Ok(
      self
        .conn
        .prepare_cached("SELECT pk, scope_id, events, cursor FROM webhooks ORDER BY pk")?
        .query_map([], |r| {
          Ok(Subscription {
            pk: r.get(0)?,
            scope_id: r.get(1)?,
            events: events_list(r.get(2)?),
            cursor: r.get(3)?,
          })
        })?
        .collect::<rusqlite::Result<_>>()?,
    )
  }

  fn insert_delivery(&mut self, webhook_pk: i64, e: &Event, body: &str, now_ms: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT OR IGNORE INTO webhook_deliveries
           (webhook_pk, event_id, event_type, end_user_id, ordering_key, body, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
      )?
      .execute(params![
        webhook_pk,
        e.id,
        e.kind,
        e.linked_account_id,
        e.linked_account_id.as_deref().unwrap_or(""),
        body,
        now_ms
      ])?;
    Ok(())
  }

  fn set_cursor(&mut self, webhook_pk: i64, cursor: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("UPDATE webhooks SET cursor = ?2 WHERE pk = ?1")?
      .execute(params![webhook_pk, cursor])?;
    Ok(())
  }

  fn prune_deliveries(
    &mut self,
    delivered_before: i64,
    failed_before: i64,
    batch: i64,
  ) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "DELETE FROM webhook_deliveries WHERE pk IN (
           SELECT pk FROM webhook_deliveries
           WHERE state <> 'pending' AND finished_at < ?1
             AND (state = 'delivered' OR finished_at < ?2)
           LIMIT ?3)",
      )?
      .execute(params![delivered_before, failed_before, batch])?;
    Ok(())
  }

  fn due_heads(&mut self, now_ms: i64, limit: i64) -> Result<Vec<DueHead>> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT d.pk, d.event_id, d.body, d.attempts, w.pk, w.id, w.url, w.scope_id, w.secret
           FROM webhook_deliveries d JOIN webhooks w ON w.pk = d.webhook_pk
           WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 AND d.lease_until <= ?1
             AND d.event_id = (SELECT MIN(h.event_id) FROM webhook_deliveries h
                               WHERE h.webhook_pk = d.webhook_pk AND h.ordering_key = d.ordering_key
                                 AND h.state = 'pending')
           ORDER BY d.next_attempt_at, d.pk LIMIT ?2",
        )?
        .query_map(params![now_ms, limit], |r| {
          Ok(DueHead {
            delivery: r.get(0)?,
            event_id: r.get(1)?,
            body: r.get(2)?,
            attempts: r.get(3)?,
            webhook_pk: r.get(4)?,
            webhook_id: r.get(5)?,
            url: r.get(6)?,
            scope_id: r.get(7)?,
            sealed: r.get(8)?,
          })
        })?
        .collect::<rusqlite::Result<_>>()?,
    )
  }

  fn lease_delivery(&mut self, delivery: i64, lease_until: i64, now_ms: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = ?2, last_attempt_at = ?3
         WHERE pk = ?1",
      )?
      .execute(params![delivery, lease_until, now_ms])?;
    Ok(())
  }

  fn delivery(&mut self, delivery: i64) -> Result<Option<Delivery>> {
    Ok(
      self
        .conn
        .prepare_cached(&format!(
          "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.pk = d.webhook_pk
           WHERE d.pk = ?1"
        ))?
        .query_row([delivery], delivery_row)
        .optional()?,
    )
  }

  fn update_delivery(&mut self, delivery: i64, u: &DeliveryUpdate) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE webhook_deliveries SET state = ?2, next_attempt_at = ?3, lease_until = 0,
           last_status = ?4, last_error = ?5, finished_at = ?6
         WHERE pk = ?1",
      )?
      .execute(params![
        delivery,
        u.state.as_str(),
        u.next_attempt_at,
        u.last_status,
        u.last_error,
        u.finished_at
      ])?;
    Ok(())
  }

  fn auth_session_scope(&mut self, session_hash: &[u8; 32]) -> Result<Option<(String, String)>> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT s.org_id, s.environment FROM auth_sessions a JOIN scopes s ON s.id = a.scope_id
           WHERE a.session_hash = ?1",
        )?
        .query_row([&session_hash[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?,
    )
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::domain::webhooks::{has_work, KEEP_DELIVERED_MS, KEEP_FAILED_MS, PRUNE_BATCH};
  use rusqlite::Connection;

  #[test]
  fn idle_claims_only_read_and_retention_is_kept() {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    super::super::schema::migrate(&mut conn).unwrap();
    conn
      .execute_batch(
        "INSERT INTO scopes (id, org_id, environment) VALUES (1, 'o', 'test');
         INSERT INTO webhooks (pk, scope_id, id, url, secret, cursor, created_at)
           VALUES (1, 1, 'wh_1', 'https://h.example', x'00', 0, 0);",
      )
      .unwrap();
    let day = 24 * 3600 * 1000;
    let now = 100 * day;
    let work = |c: &Connection| has_work(&mut SqliteTx::new(c), now).unwrap();
    let prune = |c: &Connection| {
      SqliteTx::new(c)
        .prune_deliveries(now - KEEP_DELIVERED_MS, now - KEEP_FAILED_MS, PRUNE_BATCH)
        .unwrap()
    };
    assert!(!work(&conn));
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
    assert!(!work(&conn));
    prune(&conn);
    assert_eq!(count(), 2);
    // Past it: the claim has work, and prunes exactly those.
    row(3, "delivered", now - 8 * day);
    row(4, "failed", now - 31 * day);
    assert!(work(&conn));
    prune(&conn);
    assert_eq!(count(), 2);
    assert!(!work(&conn));
    // A new event in the webhook's scope is work.
    conn
      .execute(
        "INSERT INTO events (scope_id, type, data, created_at) VALUES (1, 't', '{}', 0)",
        [],
      )
      .unwrap();
    assert!(work(&conn));
  }
}

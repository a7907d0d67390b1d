//! Webhook subscriptions and delivery records on PostgreSQL. Rows only (rules:
//! `domain::webhooks`). Deliveries are made from events read with the event log's gap-free
//! read (`events`), so a webhook's cursor never passes an event that commits late.

use tokio_postgres::Row;

use super::conn::PgTx;
use super::events::HORIZON;
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

fn webhook_row(r: &Row) -> Webhook {
  Webhook {
    id: r.get(0),
    org_id: r.get(1),
    environment: r.get(2),
    url: r.get(3),
    events: events_list(r.get(4)),
    cursor: r.get(5),
    pending: r.get(6),
    failed: r.get(7),
    created_at: r.get(8),
  }
}

const DELIVERY_COLUMNS: &str = "d.pk, w.id, d.event_id, d.event_type, d.end_user_id, d.state,
  d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.finished_at,
  d.created_at";

fn delivery_row(r: &Row) -> Delivery {
  let state: String = r.get(5);
  let event_id: i64 = r.get(2);
  Delivery {
    id: r.get(0),
    webhook_id: r.get(1),
    message_id: message_id(event_id),
    event_id,
    event: r.get(3),
    end_user_id: r.get(4),
    state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending),
    attempts: r.get(6),
    next_attempt_at: r.get(7),
    last_attempt_at: r.get(8),
    last_status: r.get(9),
    last_error: r.get(10),
    finished_at: r.get(11),
    created_at: r.get(12),
  }
}

impl WebhookRows for PgTx<'_> {
  fn newest_event_id(&mut self, scope_id: i64) -> Result<i64> {
    Ok(
      self
        .query_opt(
          "SELECT COALESCE(MAX(id), 0)::bigint FROM events WHERE scope_id = $1",
          &[&scope_id],
        )?
        .map(|r| r.get(0))
        .unwrap_or(0),
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
    self.defer(
      "INSERT INTO webhooks (scope_id, id, url, events, secret, cursor, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)",
      vec![
        Box::new(scope_id),
        Box::new(id.to_string()),
        Box::new(url.to_string()),
        Box::new(events.map(str::to_string)),
        Box::new(sealed.to_vec()),
        Box::new(cursor),
        Box::new(now_ms),
      ],
    );
    Ok(())
  }

  fn webhook(&mut self, id: &str) -> Result<Option<Webhook>> {
    Ok(
      self
        .query_opt(
          &format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks w JOIN scopes s ON s.id = w.scope_id WHERE w.id = $1"
          ),
          &[&id],
        )?
        .map(|r| webhook_row(&r)),
    )
  }

  fn list_webhooks(&mut self, filter: &WebhookFilter) -> Result<Vec<Webhook>> {
    Ok(
      self
        .query(
          &format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks w JOIN scopes s ON s.id = w.scope_id
             WHERE ($1::text IS NULL OR s.org_id = $1) AND ($2::text IS NULL OR s.environment = $2)
             ORDER BY w.pk"
          ),
          &[&filter.org_id, &filter.environment],
        )?
        .iter()
        .map(webhook_row)
        .collect(),
    )
  }

  fn delete_webhook(&mut self, id: &str) -> Result<()> {
    self.defer(
      "DELETE FROM webhooks WHERE id = $1",
      vec![Box::new(id.to_string())],
    );
    Ok(())
  }

  fn webhook_pk(&mut self, id: &str) -> Result<Option<i64>> {
    Ok(
      self
        .query_opt("SELECT pk FROM webhooks WHERE id = $1", &[&id])?
        .map(|r| r.get(0)),
    )
  }

  fn deliveries(
    &mut self,
    webhook_pk: i64,
    q: &DeliveryQuery,
    limit: i64,
  ) -> Result<Vec<Delivery>> {
    let state = q.state.map(DeliveryState::as_str);
    Ok(
      self
        .query(
          &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.pk = d.webhook_pk
             WHERE d.webhook_pk = $1 AND ($2::text IS NULL OR d.state = $2)
               AND ($3::bigint IS NULL OR d.pk < $3)
             ORDER BY d.pk DESC LIMIT $4"
          ),
          &[&webhook_pk, &state, &q.before, &limit],
        )?
        .iter()
        .map(delivery_row)
        .collect(),
    )
  }

  /// Events count as work only below the event log's horizon (those a claim can take now).
  /// When the only new events lie past it (an older transaction is still running), the engine
  /// reads again in a moment, as `listEvents` does, rather than answering "nothing to do".
  fn has_webhook_work(
    &mut self,
    now_ms: i64,
    delivered_before: i64,
    failed_before: i64,
  ) -> Result<bool> {
    let sql = format!(
      "WITH h AS (SELECT {HORIZON} AS horizon)
       SELECT EXISTS (SELECT 1 FROM webhooks w, h WHERE EXISTS
           (SELECT 1 FROM events e WHERE e.scope_id = w.scope_id AND e.id > w.cursor
              AND e.id < h.horizon))
         OR EXISTS (SELECT 1 FROM webhook_deliveries
           WHERE state = 'pending' AND next_attempt_at <= $1 AND lease_until <= $1)
         OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE state <> 'pending' AND finished_at < $2
           AND (state = 'delivered' OR finished_at < $3)),
         EXISTS (SELECT 1 FROM webhooks w, h WHERE EXISTS
           (SELECT 1 FROM events e WHERE e.scope_id = w.scope_id AND e.id > w.cursor
              AND e.id >= h.horizon))"
    );
    let (work, hidden) = self
      .query_opt(&sql, &[&now_ms, &delivered_before, &failed_before])?
      .map(|r| (r.get(0), r.get(1)))
      .unwrap_or((false, false));
    if !work && hidden {
      self.horizon_wait = true;
    }
    Ok(work)
  }

  fn subscriptions(&mut self) -> Result<Vec<Subscription>> {
    Ok(
      self
        .query(
          "SELECT pk, scope_id, events, cursor FROM webhooks ORDER BY pk",
          &[],
        )?
        .iter()
        .map(|r| Subscription {
          pk: r.get(0),
          scope_id: r.get(1),
          events: events_list(r.get(2)),
          cursor: r.get(3),
        })
        .collect(),
    )
  }

  fn insert_delivery(&mut self, webhook_pk: i64, e: &Event, body: &str, now_ms: i64) -> Result<()> {
    self.defer(
      "INSERT INTO webhook_deliveries
         (webhook_pk, event_id, event_type, end_user_id, ordering_key, body, next_attempt_at, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
       ON CONFLICT (webhook_pk, event_id) DO NOTHING",
      vec![
        Box::new(webhook_pk),
        Box::new(e.id),
        Box::new(e.kind.clone()),
        Box::new(e.linked_account_id.clone()),
        Box::new(e.linked_account_id.clone().unwrap_or_default()),
        Box::new(body.to_string()),
        Box::new(now_ms),
      ],
    );
    Ok(())
  }

  fn set_cursor(&mut self, webhook_pk: i64, cursor: i64) -> Result<()> {
    self.defer(
      "UPDATE webhooks SET cursor = $2 WHERE pk = $1",
      vec![Box::new(webhook_pk), Box::new(cursor)],
    );
    Ok(())
  }

  fn prune_deliveries(
    &mut self,
    delivered_before: i64,
    failed_before: i64,
    batch: i64,
  ) -> Result<()> {
    self.defer(
      "DELETE FROM webhook_deliveries WHERE pk IN (
         SELECT pk FROM webhook_deliveries
         WHERE state <> 'pending' AND finished_at < $1
           AND (state = 'delivered' OR finished_at < $2)
         LIMIT $3)",
      vec![
        Box::new(delivered_before),
        Box::new(failed_before),
        Box::new(batch),
      ],
    );
    Ok(())
  }

  fn due_heads(&mut self, now_ms: i64, limit: i64) -> Result<Vec<DueHead>> {
    Ok(
      self
        .query(
          "SELECT d.pk, d.event_id, d.body, d.attempts, w.pk, w.id, w.url, w.scope_id, w.secret
           FROM webhook_deliveries d JOIN webhooks w ON w.pk = d.webhook_pk
           WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND d.lease_until <= $1
             AND d.event_id = (SELECT MIN(h.event_id) FROM webhook_deliveries h
                               WHERE h.webhook_pk = d.webhook_pk AND h.ordering_key = d.ordering_key
                                 AND h.state = 'pending')
           ORDER BY d.next_attempt_at, d.pk LIMIT $2",
          &[&now_ms, &limit],
        )?
        .iter()
        .map(|r| DueHead {
          delivery: r.get(0),
          event_id: r.get(1),
          body: r.get(2),
          attempts: r.get(3),
          webhook_pk: r.get(4),
          webhook_id: r.get(5),
          url: r.get(6),
          scope_id: r.get(7),
          sealed: r.get(8),
        })
        .collect(),
    )
  }

  fn lease_delivery(&mut self, delivery: i64, lease_until: i64, now_ms: i64) -> Result<()> {
    self.defer(
      "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = $2, last_attempt_at = $3
       WHERE pk = $1",
      vec![Box::new(delivery), Box::new(lease_until), Box::new(now_ms)],
    );
    Ok(())
  }

  fn delivery(&mut self, delivery: i64) -> Result<Option<Delivery>> {
    Ok(
      self
        .query_opt(
          &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.pk = d.webhook_pk
             WHERE d.pk = $1"
          ),
          &[&delivery],
        )?
        .map(|r| delivery_row(&r)),
    )
  }

  fn update_delivery(&mut self, delivery: i64, u: &DeliveryUpdate) -> Result<()> {
    self.defer(
      "UPDATE webhook_deliveries SET state = $2, next_attempt_at = $3, lease_until = 0,
         last_status = $4, last_error = $5, finished_at = $6
       WHERE pk = $1",
      vec![
        Box::new(delivery),
        Box::new(u.state.as_str().to_string()),
        Box::new(u.next_attempt_at),
        Box::new(u.last_status),
        Box::new(u.last_error.clone()),
        Box::new(u.finished_at),
      ],
    );
    Ok(())
  }

  fn auth_session_scope(&mut self, session_hash: &[u8; 32]) -> Result<Option<(String, String)>> {
    Ok(
      self
        .query_opt(
          "SELECT s.org_id, s.environment FROM auth_sessions a JOIN scopes s ON s.id = a.scope_id
           WHERE a.session_hash = $1",
          &[&session_hash.as_slice()],
        )?
        .map(|r| (r.get(0), r.get(1))),
    )
  }
}

#[cfg(test)]
mod tests {
  use serde_json::json;

  use super::super::conn::PgConn;
  use super::super::{Target, XID_ID};
  use crate::client::testing::{event, fresh, open, On};
  use crate::domain::events::types::ACCOUNT_CREATED;

  /// An event whose transaction began first (smaller id) but commits after a later one was
  /// claimable: the cursor must not pass it.
  #[test]
  fn an_event_committed_late_is_still_delivered_in_order() {
    let at = fresh(On::Postgres);
    let v = open(&at, json!({"orgId": "org_1"}), 7);
    let created = v
      .create_webhook(&json!({"url": "https://h.example/hook"}))
      .wait()
      .unwrap();
    let target =
      Target::parse(at["url"].as_str().unwrap(), at["schema"].as_str().unwrap()).unwrap();
    let mut slow = PgConn::connect(&target).unwrap();
    slow.batch("BEGIN").unwrap();
    slow
      .batch(&format!(
        "INSERT INTO events (id, scope_id, type, linked_account_id, data, created_at)
         VALUES ({XID_ID} + 1, {}, '{ACCOUNT_CREATED}', 'late', '{{}}', 0)",
        v.scope().id
      ))
      .unwrap();
    event(&v, ACCOUNT_CREATED, Some("early"));
    let claim = || {
      v.claim_webhook_deliveries(Some(&json!({"limit": 10})))
        .wait()
        .unwrap()
    };
    // "early" committed, but an older transaction is still running: nothing is claimable yet.
    assert!(claim().is_empty());
    slow.batch("COMMIT").unwrap();
    let got = claim();
    let ids: Vec<(String, i64)> = got
      .iter()
      .map(|c| {
        let body: serde_json::Value = serde_json::from_str(&c.body).unwrap();
        (
          body["data"]["end_user_id"].as_str().unwrap().to_string(),
          c.message_id.parse().unwrap(),
        )
      })
      .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let late = ids.iter().find(|(u, _)| u == "late").unwrap().1;
    let early = ids.iter().find(|(u, _)| u == "early").unwrap().1;
    assert!(late < early);
    let w = v.list_webhooks(None).wait().unwrap();
    assert_eq!(w[0].id, created.webhook.id);
    assert_eq!(w[0].cursor, early);
    v.close().wait().unwrap();
  }
}

//! The events table on PostgreSQL. Rows only.
//!
//! An event's id is the writing transaction's id (`xid8`) times 65536 plus a serial within the
//! transaction. Ids therefore grow with transaction ids, not with commit order, and a reader
//! returns only events of transactions older than every transaction still running
//! (`pg_snapshot_xmin`): all of those have ended, so no event can appear later below an id it
//! returned. A consumer resuming after the last id it saw never misses one. When that hides
//! committed events from a page that is not full, the engine reads again a few milliseconds
//! later (running transactions are short), for at most [`super::HORIZON_WAIT`].

use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::conn::PgTx;
use super::XID_ID;
use crate::domain::events::{Event, EventLog, EventQuery, PruneBefore};
use crate::error::Result;

pub(super) const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint * 65536";

impl EventLog for PgTx<'_> {
  fn append_event(
    &mut self,
    scope_id: i64,
    kind: &str,
    account_id: Option<&str>,
    data: &Value,
    now_ms: i64,
  ) -> Result<()> {
    let serial = self.next_serial()?;
    let index = self.events.len();
    self.events.push((
      scope_id,
      Event {
        id: 0,
        kind: kind.to_string(),
        linked_account_id: account_id.map(str::to_string),
        data: data.clone(),
        created_at: now_ms,
      },
    ));
    self.defer_event(
      &format!(
        "INSERT INTO events (id, scope_id, type, linked_account_id, data, created_at)
         VALUES ({XID_ID} + $1, $2, $3, $4, $5, $6) RETURNING id"
      ),
      vec![
        Box::new(serial),
        Box::new(scope_id),
        Box::new(kind.to_string()),
        Box::new(account_id.map(str::to_string)),
        Box::new(data.to_string()),
        Box::new(now_ms),
      ],
      index,
    );
    Ok(())
  }

  fn read_events(&mut self, scope_id: i64, q: &EventQuery, limit: i64) -> Result<Vec<Event>> {
    // The page, and whether matching committed events lie past the horizon.
    let mut sql = format!(
      "WITH m AS (SELECT id, type, linked_account_id, data, created_at, id < {HORIZON} AS safe
                    FROM events WHERE scope_id = $1 AND id > $2"
    );
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(scope_id), Box::new(q.after)];
    if let Some(a) = &q.linked_account_id {
      params.push(Box::new(a.clone()));
      sql.push_str(&format!(" AND linked_account_id = ${}", params.len()));
    }
    if !q.types.is_empty() {
      params.push(Box::new(q.types.clone()));
      sql.push_str(&format!(" AND type = ANY(${}::text[])", params.len()));
    }
    params.push(Box::new(limit));
    sql.push_str(&format!(
      " ORDER BY id LIMIT ${}::bigint + 1)
       SELECT id, type, linked_account_id, data, created_at, safe FROM m ORDER BY id",
      params.len()
    ));
    let refs: Vec<&(dyn ToSql + Sync)> = params
      .iter()
      .map(|p| p.as_ref() as &(dyn ToSql + Sync))
      .collect();
    let rows = self.query(&sql, &refs)?;
    let mut events = Vec::new();
    let mut hidden = false;
    for r in rows {
      if !r.get::<_, bool>(5) {
        hidden = true;
        break;
      }
      if events.len() as i64 == limit {
        break;
      }
      let data: String = r.get(3);
      events.push(Event {
        id: r.get(0),
        kind: r.get(1),
        linked_account_id: r.get(2),
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        created_at: r.get(4),
      });
    }
    if hidden && (events.len() as i64) < limit {
      self.horizon_wait = true;
    }
    Ok(events)
  }

  fn delete_events(&mut self, scope_id: i64, before: PruneBefore) -> Result<i64> {
    let n = match before {
      PruneBefore::Id(id) => self.execute(
        "DELETE FROM events WHERE scope_id = $1 AND id < $2",
        &[&scope_id, &id],
      )?,
      PruneBefore::Time(ms) => self.execute(
        "DELETE FROM events WHERE scope_id = $1 AND created_at < $2",
        &[&scope_id, &ms],
      )?,
    };
    Ok(n as i64)
  }
}

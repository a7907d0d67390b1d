//! The events table on SQLite, and the collector that hands a write's events to live
//! subscribers after its commit.
//!
//! Ids come from an `AUTOINCREMENT` key: strictly increasing, never reused, and with one writer
//! at a time a reader never sees id N+1 before N.

use std::cell::RefCell;

use rusqlite::{params, params_from_iter, types::Value as Sql, Connection};
use serde_json::Value;

use super::SqliteTx;
use crate::domain::events::{Event, EventLog, EventQuery, PruneBefore};
use crate::error::Result;

thread_local! {
  /// Events appended by the write job running on this thread, when a collector is active.
  static COLLECTOR: RefCell<Option<Vec<(i64, Event)>>> = const { RefCell::new(None) };
}

/// Appends an event inside the caller's transaction.
pub fn append(
  conn: &Connection,
  scope_id: i64,
  kind: &str,
  account_id: Option<&str>,
  data: &Value,
  now: i64,
) -> Result<i64> {
  conn
    .prepare_cached(
      "INSERT INTO events (scope_id, type, linked_account_id, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![scope_id, kind, account_id, data.to_string(), now])?;
  let id = conn.last_insert_rowid();
  COLLECTOR.with(|c| {
    if let Some(events) = c.borrow_mut().as_mut() {
      events.push((
        scope_id,
        Event {
          id,
          kind: kind.to_string(),
          linked_account_id: account_id.map(str::to_string),
          data: data.clone(),
          created_at: now,
        },
      ));
    }
  });
  Ok(id)
}

/// Runs `f` (one write job) and returns what it returned with the `(scope_id, event)` pairs it
/// appended on this thread. The collector is reset even if `f` panics.
pub fn collect<T>(f: impl FnOnce() -> T) -> (T, Vec<(i64, Event)>) {
  struct Reset;
  impl Drop for Reset {
    fn drop(&mut self) {
      COLLECTOR.with(|c| *c.borrow_mut() = None);
    }
  }
  COLLECTOR.with(|c| *c.borrow_mut() = Some(Vec::new()));
  let guard = Reset;
  let out = f();
  let events = COLLECTOR
    .with(|c| c.borrow_mut().take())
    .unwrap_or_default();
  drop(guard);
  (out, events)
}

impl EventLog for SqliteTx<'_> {
  fn append_event(
    &mut self,
    scope_id: i64,
    kind: &str,
    account_id: Option<&str>,
    data: &Value,
    now_ms: i64,
  ) -> Result<()> {
    append(self.conn, scope_id, kind, account_id, data, now_ms).map(|_| ())
  }

  fn read_events(&mut self, scope_id: i64, q: &EventQuery, limit: i64) -> Result<Vec<Event>> {
    let mut sql = String::from(
      "SELECT id, type, linked_account_id, data, created_at FROM events WHERE scope_id = ? AND id > ?",
    );
    let mut args: Vec<Sql> = vec![Sql::Integer(scope_id), Sql::Integer(q.after)];
    if let Some(a) = &q.linked_account_id {
      sql.push_str(" AND linked_account_id = ?");
      args.push(Sql::Text(a.clone()));
    }
    if !q.types.is_empty() {
      sql.push_str(" AND type IN (");
      sql.push_str(&vec!["?"; q.types.len()].join(", "));
      sql.push(')');
      args.extend(q.types.iter().cloned().map(Sql::Text));
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    args.push(Sql::Integer(limit));
    Ok(
      self
        .conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(args), |r| {
          let data: String = r.get(3)?;
          Ok(Event {
            id: r.get(0)?,
            kind: r.get(1)?,
            linked_account_id: r.get(2)?,
            data: serde_json::from_str(&data).unwrap_or(Value::Null),
            created_at: r.get(4)?,
          })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?,
    )
  }

  fn delete_events(&mut self, scope_id: i64, before: PruneBefore) -> Result<i64> {
    let n = match before {
      PruneBefore::Id(id) => self
        .conn
        .prepare_cached("DELETE FROM events WHERE scope_id = ?1 AND id < ?2")?
        .execute([scope_id, id])?,
      PruneBefore::Time(ms) => self
        .conn
        .prepare_cached("DELETE FROM events WHERE scope_id = ?1 AND created_at < ?2")?
        .execute([scope_id, ms])?,
    };
    Ok(n as i64)
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  #[test]
  fn collector_sees_only_its_job_and_resets() {
    let conn = Connection::open_in_memory().unwrap();
    conn
      .execute_batch(
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, scope_id INTEGER, type TEXT, linked_account_id TEXT, data TEXT, created_at INTEGER)",
      )
      .unwrap();
    append(&conn, 1, "x.before", None, &json!({}), 1).unwrap();
    let (id, got) =
      collect(|| append(&conn, 1, "x.during", Some("a"), &json!({"k": 1}), 2).unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.id, id);
    assert_eq!(got[0].1.kind, "x.during");
    append(&conn, 1, "x.after", None, &json!({}), 3).unwrap();
    let r = std::panic::catch_unwind(|| {
      collect(|| -> () { panic!("job panicked") });
    });
    assert!(r.is_err());
    let ((), none) = collect(|| ());
    assert!(none.is_empty());
  }
}

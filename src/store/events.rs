//! SQL for reading and pruning the event log, and live subscriptions.

use rusqlite::{params_from_iter, types::Value as Sql, Connection};

use super::{Pending, Scope, SqliteStore};
use crate::error::Result;
use crate::events::{Event, EventPage, EventQuery, Listener, PruneBefore};

/// The event log.
pub trait EventStore: Send + Sync {
  /// Events after `query.after`, oldest first.
  fn list_events(&self, scope: &Scope, query: EventQuery) -> Pending<EventPage>;
  /// Deletes old events of the scope; returns how many.
  fn prune_events(&self, scope: &Scope, before: PruneBefore) -> Pending<i64>;
  /// Calls `listener` with the events of this store's writes once they are committed;
  /// `CLIENT_CLOSED` once the store is closed.
  fn subscribe(&self, scope: &Scope, listener: Listener) -> Result<u64>;
  /// Stops a subscription; false if it had already stopped.
  fn unsubscribe(&self, id: u64) -> bool;
}

pub fn list(conn: &Connection, scope: &Scope, q: &EventQuery) -> Result<EventPage> {
  let mut sql = String::from(
    "SELECT id, type, linked_account_id, data, created_at FROM events WHERE scope_id = ? AND id > ?",
  );
  let mut args: Vec<Sql> = vec![Sql::Integer(scope.id), Sql::Integer(q.after)];
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
  args.push(Sql::Integer(q.limit + 1));
  let mut events = conn
    .prepare_cached(&sql)?
    .query_map(params_from_iter(args), |r| {
      let data: String = r.get(3)?;
      Ok(Event {
        id: r.get(0)?,
        kind: r.get(1)?,
        linked_account_id: r.get(2)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        created_at: r.get(4)?,
      })
    })?
    .collect::<rusqlite::Result<Vec<_>>>()?;
  let more = events.len() as i64 > q.limit;
  events.truncate(q.limit as usize);
  let next = if more {
    events.last().map(|e| e.id)
  } else {
    None
  };
  Ok(EventPage { events, next })
}

pub fn prune(conn: &Connection, scope: &Scope, before: PruneBefore) -> Result<i64> {
  let n = match before {
    PruneBefore::Id(id) => conn
      .prepare_cached("DELETE FROM events WHERE scope_id = ?1 AND id < ?2")?
      .execute([scope.id, id])?,
    PruneBefore::Time(ms) => conn
      .prepare_cached("DELETE FROM events WHERE scope_id = ?1 AND created_at < ?2")?
      .execute([scope.id, ms])?,
  };
  Ok(n as i64)
}

impl EventStore for SqliteStore {
  fn list_events(&self, scope: &Scope, query: EventQuery) -> Pending<EventPage> {
    let scope = scope.clone();
    self.read(move |conn| list(conn, &scope, &query))
  }

  fn prune_events(&self, scope: &Scope, before: PruneBefore) -> Pending<i64> {
    let scope = scope.clone();
    self.write(move |conn| prune(conn, &scope, before))
  }

  fn subscribe(&self, scope: &Scope, listener: Listener) -> Result<u64> {
    let engine = self.engine();
    if engine.is_closed() {
      return Err(crate::error::Error::closed());
    }
    Ok(engine.listeners().add(scope.id, listener))
  }

  fn unsubscribe(&self, id: u64) -> bool {
    self.engine().listeners().remove(id)
  }
}

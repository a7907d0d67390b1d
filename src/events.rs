//! The durable event log (a transactional outbox): every mutation appends its event in the same
//! transaction as the change, so a committed change always has its event and a failed one none.
//!
//! Consumers read the log with [`EventQuery`] pages (`listEvents`), resuming after the last id they
//! processed; ids come from an `AUTOINCREMENT` key, so they are strictly increasing and never
//! reused, and since SQLite has one writer at a time a reader never sees id N+1 before N.
//!
//! Live delivery (`onEvent`): while a job runs on the writer thread, [`append`] also records each
//! event in a per-thread collector; the engine hands the job's events to the [`Listeners`] after
//! the transaction committed (never for a job that rolled back), in commit order.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::input::Fields;
use crate::store::Pending;
use crate::vault::Vault;

/// Event types, as stored and returned.
pub mod types {
  pub const ACCOUNT_CREATED: &str = "linked_account.created";
  pub const ACCOUNT_UPDATED: &str = "linked_account.updated";
  pub const ACCOUNT_DELETED: &str = "linked_account.deleted";

  // Auth sessions and consents (Fiskil-style account linking).
  pub const AUTH_SESSION_CREATED: &str = "auth_session.created";
  pub const AUTH_SESSION_COMPLETED: &str = "auth_session.completed";
  pub const AUTH_SESSION_CANCELLED: &str = "auth_session.cancelled";
  pub const CONSENT_RECEIVED: &str = "consent.received";
  pub const CONSENT_UPDATED: &str = "consent.updated";
  /// A consent ended: revoked, expired or its account deleted (`data.termination_reason`).
  pub const CONSENT_REVOKED: &str = "consent.revoked";
  /// Data was accessed under a consent (`recordConsentAccess`); data `{ consent_id,
  /// arrangement_id, end_user_id, last_accessed }`.
  pub const CONSENT_ACCESSED: &str = "consent.accessed";

  /// An identity was attached to an account, or its profile fields changed.
  pub const IDENTITY_LINKED: &str = "identity.linked";
  /// An identity left an account and became (or restored) a standalone account.
  pub const IDENTITY_UNLINKED: &str = "identity.unlinked";
  /// A secondary account was merged into a primary and no longer exists.
  pub const ACCOUNTS_MERGED: &str = "linked_accounts.merged";

  /// Session tokens were revoked; data `{ revoked_count, reason }` with reason `revoked`,
  /// `revoke_all`, `account_deleted` or `refresh_token_reuse`.
  pub const SESSION_TOKENS_REVOKED: &str = "session_tokens.revoked";
  /// A signing key was added (generated at open, `signingSecret`, or `rotateSigningKey`);
  /// data `{ kid, reason }`.
  pub const SIGNING_KEY_ADDED: &str = "signing_key.added";
  /// A signing key was retired; data `{ kid }`.
  pub const SIGNING_KEY_RETIRED: &str = "signing_key.retired";
}

/// One event as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
  pub id: i64,
  pub kind: String,
  pub linked_account_id: Option<String>,
  pub data: Value,
  /// Milliseconds since the Unix epoch.
  pub created_at: i64,
}

thread_local! {
  /// Events appended by the write job running on this thread, when a collector is active.
  static COLLECTOR: RefCell<Option<Vec<(i64, Event)>>> = const { RefCell::new(None) };
}

/// Appends an event inside the caller's transaction and returns its id.
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

/// A live subscriber: called on the writer thread with the events of one committed job.
/// It must not block (the binding only queues them for Node's thread).
pub type Listener = Arc<dyn Fn(&[Event]) + Send + Sync>;

/// The subscribers of one engine, each for one scope.
#[derive(Default)]
pub struct Listeners {
  next_id: AtomicU64,
  count: AtomicUsize,
  list: Mutex<Vec<(u64, i64, Listener)>>,
}

impl Listeners {
  /// Whether anyone listens (jobs skip collecting events when no one does).
  pub fn is_empty(&self) -> bool {
    self.count.load(Ordering::Acquire) == 0
  }

  pub fn add(&self, scope_id: i64, listener: Listener) -> u64 {
    let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    if let Ok(mut list) = self.list.lock() {
      list.push((id, scope_id, listener));
      self.count.store(list.len(), Ordering::Release);
    }
    id
  }

  /// Removes a subscriber; false if it was not there (already removed).
  pub fn remove(&self, id: u64) -> bool {
    let Ok(mut list) = self.list.lock() else {
      return false;
    };
    let before = list.len();
    list.retain(|(i, _, _)| *i != id);
    self.count.store(list.len(), Ordering::Release);
    list.len() != before
  }

  pub fn clear(&self) {
    if let Ok(mut list) = self.list.lock() {
      list.clear();
      self.count.store(0, Ordering::Release);
    }
  }

  /// Hands committed events to every subscriber of their scope, in order.
  pub fn deliver(&self, events: &[(i64, Event)]) {
    if events.is_empty() || self.is_empty() {
      return;
    }
    let subscribers: Vec<(i64, Listener)> = match self.list.lock() {
      Ok(list) => list.iter().map(|(_, s, l)| (*s, l.clone())).collect(),
      Err(_) => return,
    };
    for (scope_id, listener) in subscribers {
      let mine: Vec<Event> = events
        .iter()
        .filter(|(s, _)| *s == scope_id)
        .map(|(_, e)| e.clone())
        .collect();
      if !mine.is_empty() {
        listener(&mine);
      }
    }
  }
}

pub const DEFAULT_PAGE_LIMIT: i64 = 100;
pub const MAX_PAGE_LIMIT: i64 = 1000;
pub const MAX_TYPE_FILTERS: usize = 100;

/// A validated `listEvents` query.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventQuery {
  /// Only events with a greater id (exclusive).
  pub after: i64,
  pub limit: i64,
  /// Only these types (empty: all).
  pub types: Vec<String>,
  pub linked_account_id: Option<String>,
}

/// A page of events.
#[derive(Clone, Debug, PartialEq)]
pub struct EventPage {
  pub events: Vec<Event>,
  /// The id to pass as `after` for the next page; `None` when nothing more matched.
  pub next: Option<i64>,
}

/// Parses `{ after?, limit?, types?, linked_account_id? }`.
pub fn parse_query(q: Option<&Value>) -> Result<EventQuery> {
  let f = Fields::new(q, "options")?;
  let after = match f.get("after") {
    None => 0,
    Some(Value::String(s)) => s
      .trim()
      .parse::<i64>()
      .ok()
      .filter(|n| *n >= 0)
      .ok_or_else(|| Error::validation("after", "after must be an event id (a number)"))?,
    Some(_) => f
      .int("after", 0, i64::MAX)?
      .ok_or_else(|| Error::validation("after", "after must be an event id (a number)"))?,
  };
  let limit = f
    .int("limit", 1, MAX_PAGE_LIMIT)?
    .unwrap_or(DEFAULT_PAGE_LIMIT);
  let types = match f.get("types") {
    Some(Value::String(s)) => vec![s.clone()],
    _ => f.strings("types")?.unwrap_or_default(),
  };
  if types.len() > MAX_TYPE_FILTERS || types.iter().any(|t| t.is_empty() || t.len() > 128) {
    return Err(Error::validation(
      "types",
      format!("types must be at most {MAX_TYPE_FILTERS} non-empty event types"),
    ));
  }
  let linked_account_id = match f.get("linked_account_id").or_else(|| f.get("end_user_id")) {
    None => None,
    some => Some(crate::input::id(
      some,
      "linked_account_id",
      crate::accounts::MAX_ID_CHARS,
    )?),
  };
  Ok(EventQuery {
    after,
    limit,
    types,
    linked_account_id,
  })
}

/// What `pruneEvents({ before })` deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneBefore {
  /// Events with an id lower than this (a number: an event id, e.g. the last one processed + 1).
  Id(i64),
  /// Events created before this instant (milliseconds since the epoch).
  Time(i64),
}

/// Parses `{ before }`: a number is an event id, a string an ISO-8601 date or date-time
/// (the binding turns a JS `Date` into its ISO string).
pub fn parse_prune(options: Option<&Value>) -> Result<PruneBefore> {
  let f = Fields::new(options, "options")?;
  match f.get("before") {
    None => Err(Error::validation(
      "before",
      "before is required: an event id (number) or a date (Date or ISO-8601 string)",
    )),
    Some(Value::String(s)) => parse_iso8601(s).map(PruneBefore::Time).ok_or_else(|| {
      Error::validation(
        "before",
        "before must be an ISO-8601 date such as 2024-01-31 or 2024-01-31T12:00:00Z",
      )
    }),
    Some(_) => f
      .int("before", 0, i64::MAX)?
      .map(PruneBefore::Id)
      .ok_or_else(|| Error::validation("before", "before must be an event id or a date")),
  }
}

/// Parses `YYYY-MM-DD` (UTC midnight) or `YYYY-MM-DDTHH:MM[:SS[.fff]](Z|±HH:MM)` into
/// milliseconds since the epoch.
pub fn parse_iso8601(text: &str) -> Option<i64> {
  let s = text.trim();
  let b = s.as_bytes();
  let num = |from: usize, len: usize| -> Option<i64> {
    let part = s.get(from..from + len)?;
    if part.bytes().all(|c| c.is_ascii_digit()) {
      part.parse().ok()
    } else {
      None
    }
  };
  if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
    return None;
  }
  let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
  if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
    return None;
  }
  let days = days_from_civil(y, m, d);
  if b.len() == 10 {
    return Some(days * 86_400_000);
  }
  if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 || b[13] != b':' {
    return None;
  }
  let (hh, mi) = (num(11, 2)?, num(14, 2)?);
  let mut pos = 16;
  let mut ss = 0;
  let mut ms = 0;
  if b.get(pos) == Some(&b':') {
    ss = num(pos + 1, 2)?;
    pos += 3;
    if b.get(pos) == Some(&b'.') {
      let start = pos + 1;
      let mut end = start;
      while end < b.len() && b[end].is_ascii_digit() {
        end += 1;
      }
      if end == start {
        return None;
      }
      let frac = &s[start..end.min(start + 3)];
      ms = frac.parse::<i64>().ok()? * 10_i64.pow(3 - frac.len() as u32);
      pos = end;
    }
  }
  if hh > 23 || mi > 59 || ss > 60 {
    return None;
  }
  let offset_min = match s.get(pos..)? {
    "Z" | "z" => 0,
    rest if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
      let oh = num(pos + 1, 2)?;
      let om = num(pos + 4, 2)?;
      let sign = if rest.starts_with('-') { -1 } else { 1 };
      sign * (oh * 60 + om)
    }
    _ => return None,
  };
  Some(((days * 86_400 + hh * 3600 + mi * 60 + ss) - offset_min * 60) * 1000 + ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
  match m {
    2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
    2 => 28,
    4 | 6 | 9 | 11 => 30,
    _ => 31,
  }
}

// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
  let y = if m <= 2 { y - 1 } else { y };
  let era = y.div_euclid(400);
  let yoe = y - era * 400;
  let mp = (m + 9) % 12;
  let doy = (153 * mp + 2) / 5 + d - 1;
  let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  era * 146_097 + doe - 719_468
}

fn pending<T>(r: Result<Pending<T>>) -> Pending<T> {
  r.unwrap_or_else(|e| Pending::ready(Err(e)))
}

/// Event-log calls of a client.
impl Vault {
  /// `listEvents({ after?, limit?, types?, linked_account_id? })`.
  pub fn list_events(&self, query: Option<&Value>) -> Pending<EventPage> {
    pending(parse_query(query).map(|q| self.store.list_events(&self.scope, q)))
  }

  /// `pruneEvents({ before })`: returns how many events were deleted.
  pub fn prune_events(&self, options: Option<&Value>) -> Pending<i64> {
    pending(parse_prune(options).map(|b| self.store.prune_events(&self.scope, b)))
  }

  /// `onEvent`: `listener` gets the events of this client's writes after they commit.
  pub fn subscribe(&self, listener: Listener) -> Result<u64> {
    self.store.subscribe(&self.scope, listener)
  }

  pub fn unsubscribe(&self, id: u64) -> bool {
    self.store.unsubscribe(id)
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::clock::iso8601;
  use serde_json::json;

  #[test]
  fn parses_iso_dates_both_ways() {
    for ms in [0, 951_782_400_123, 1_700_000_000_000, 1_709_251_199_999] {
      assert_eq!(parse_iso8601(&iso8601(ms)), Some(ms));
    }
    assert_eq!(parse_iso8601("2023-11-14"), Some(1_699_920_000_000));
    assert_eq!(
      parse_iso8601("2023-11-14T22:13:20+01:00"),
      Some(1_700_000_000_000 - 3_600_000)
    );
    assert_eq!(parse_iso8601("2023-11-14T22:13Z"), Some(1_699_999_980_000));
    assert_eq!(
      parse_iso8601("2023-11-14T22:13:20.5Z"),
      Some(1_700_000_000_500)
    );
    for bad in [
      "",
      "2023-13-01",
      "2023-02-30",
      "2023-11-14T22:13:20",
      "yesterday",
      "2023-11-14T25:00Z",
    ] {
      assert_eq!(parse_iso8601(bad), None, "{bad}");
    }
  }

  #[test]
  fn parses_queries_and_prune_options() {
    let q = parse_query(Some(
      &json!({"after": 5, "limit": 2, "types": ["a", "b"], "linked_account_id": "u"}),
    ))
    .unwrap();
    assert_eq!(q.after, 5);
    assert_eq!(q.limit, 2);
    assert_eq!(q.types, vec!["a", "b"]);
    assert_eq!(q.linked_account_id.as_deref(), Some("u"));
    assert_eq!(parse_query(Some(&json!({"after": "7"}))).unwrap().after, 7);
    assert_eq!(parse_query(None).unwrap().limit, DEFAULT_PAGE_LIMIT);
    for (bad, field) in [
      (json!({"after": -1}), "after"),
      (json!({"after": "x"}), "after"),
      (json!({"limit": 0}), "limit"),
      (json!({"limit": 1001}), "limit"),
      (json!({"types": [1]}), "types"),
      (json!({"types": [""]}), "types"),
      (json!({"linked_account_id": ""}), "linked_account_id"),
    ] {
      let e = parse_query(Some(&bad)).unwrap_err();
      assert_eq!(e.code(), "VALIDATION_ERROR");
      assert_eq!(e.field.as_deref(), Some(field), "{bad}");
    }
    assert_eq!(
      parse_prune(Some(&json!({"before": 10}))).unwrap(),
      PruneBefore::Id(10)
    );
    assert_eq!(
      parse_prune(Some(&json!({"before": "1970-01-02"}))).unwrap(),
      PruneBefore::Time(86_400_000)
    );
    for bad in [
      json!({}),
      json!({"before": "soon"}),
      json!({"before": -3}),
      json!({"before": true}),
    ] {
      assert_eq!(
        parse_prune(Some(&bad)).unwrap_err().field.as_deref(),
        Some("before")
      );
    }
  }

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

  #[test]
  fn listeners_filter_by_scope_and_unsubscribe() {
    let l = Listeners::default();
    assert!(l.is_empty());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let id = l.add(
      1,
      Arc::new(move |evs: &[Event]| s2.lock().unwrap().extend(evs.iter().map(|e| e.id))),
    );
    let ev = |id, scope| {
      (
        scope,
        Event {
          id,
          kind: "t".into(),
          linked_account_id: None,
          data: json!({}),
          created_at: 0,
        },
      )
    };
    l.deliver(&[ev(1, 1), ev(2, 2), ev(3, 1)]);
    assert_eq!(*seen.lock().unwrap(), vec![1, 3]);
    assert!(l.remove(id));
    assert!(!l.remove(id));
    assert!(l.is_empty());
    l.deliver(&[ev(4, 1)]);
    assert_eq!(*seen.lock().unwrap(), vec![1, 3]);
  }
}

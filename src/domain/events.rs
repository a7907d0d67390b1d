//! The durable event log (a transactional outbox): every mutation appends its event in the same
//! transaction as the change, so a committed change always has its event and a failed one none.
//!
//! Consumers read the log with [`EventQuery`] pages (`listEvents`), resuming after the last id they
//! processed. Ids are strictly increasing in the order a consumer can see them: each engine makes
//! sure that no event with a smaller id can become visible after a larger one was returned
//! (SQLite has one writer at a time; see `store::postgres` for the server database).
//!
//! Live delivery (`onEvent`) is the engine's: it hands each committed transaction's events to
//! the subscribers (`store::Listeners`).

use serde_json::Value;

use super::Scope;
use crate::error::{Error, Result};
use crate::input::Fields;

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

/// The events table.
pub trait EventLog {
  /// Appends an event inside the current transaction.
  fn append_event(
    &mut self,
    scope_id: i64,
    kind: &str,
    account_id: Option<&str>,
    data: &Value,
    now_ms: i64,
  ) -> Result<()>;
  /// Up to `limit` events of the scope matching `q` with an id above `q.after`, by id.
  fn read_events(&mut self, scope_id: i64, q: &EventQuery, limit: i64) -> Result<Vec<Event>>;
  /// Deletes the scope's events before `before`; returns how many.
  fn delete_events(&mut self, scope_id: i64, before: PruneBefore) -> Result<i64>;
}

/// `listEvents`: a page, and the cursor of the next one when more matched.
pub fn list(tx: &mut (impl EventLog + ?Sized), scope: &Scope, q: &EventQuery) -> Result<EventPage> {
  let mut events = tx.read_events(scope.id, q, q.limit + 1)?;
  let more = events.len() as i64 > q.limit;
  events.truncate(q.limit as usize);
  let next = if more {
    events.last().map(|e| e.id)
  } else {
    None
  };
  Ok(EventPage { events, next })
}

/// `pruneEvents`: deletes the scope's events before `before`; returns how many.
pub fn prune(tx: &mut (impl EventLog + ?Sized), scope: &Scope, before: PruneBefore) -> Result<i64> {
  tx.delete_events(scope.id, before)
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
      super::MAX_ACCOUNT_ID_CHARS,
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
}

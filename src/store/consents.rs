//! SQL for auth sessions and consents. Each function runs inside the transaction the engine
//! gives it; every state change is a conditional `UPDATE ... WHERE state/active` checked with
//! its row count, and appends its event in the same transaction, so a transition happens (and is
//! announced) exactly once even when several clients or processes race on one file.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{json, Value};

use super::sqlite::events;
use super::{accounts, Pending, Scope, SqliteStore};
use crate::clock::{now_ms, rfc3339_secs};
use crate::consents::{
  self, check_finishable, consent_expiry, event_data, renewable, resolve_completion,
  session_status, termination, AuthSession, Completion, Consent, ConsentFilter, Ending, Grant,
  InstitutionType, SessionInput, SessionState, Termination,
};
use crate::crypto;
use crate::domain::events::types;
use crate::error::{Error, ErrorKind, Result};

/// Auth sessions and consents.
pub trait ConsentStore: Send + Sync {
  fn create_auth_session(&self, scope: &Scope, input: SessionInput) -> Pending<AuthSession>;
  fn get_auth_session(&self, scope: &Scope, session_id: String) -> Pending<AuthSession>;
  fn complete_auth_session(
    &self,
    scope: &Scope,
    session_id: String,
    result: Completion,
  ) -> Pending<Consent>;
  fn cancel_auth_session(
    &self,
    scope: &Scope,
    session_id: String,
    error_type: String,
  ) -> Pending<AuthSession>;
  fn list_consents(&self, scope: &Scope, filter: ConsentFilter) -> Pending<Vec<Consent>>;
  fn get_consent(&self, scope: &Scope, arrangement_id: String) -> Pending<Consent>;
  fn revoke_consent(&self, scope: &Scope, arrangement_id: String) -> Pending<Consent>;
  /// Records every lapsed consent of the scope; returns their arrangement ids.
  fn expire_consents(&self, scope: &Scope) -> Pending<Vec<String>>;
  /// Stamps `last_accessed` on an active consent; returns it.
  fn record_consent_access(&self, scope: &Scope, arrangement_id: String) -> Pending<Consent>;
}

// ---------------------------------------------------------------------------------------------
// Auth sessions

fn session_hash(session_id: &str) -> [u8; 32] {
  crypto::sha256(session_id.as_bytes())
}

fn json_list(text: Option<String>) -> Option<Vec<String>> {
  text.and_then(|t| serde_json::from_str(&t).ok())
}

fn to_json_text(list: &[String]) -> String {
  Value::from(list.to_vec()).to_string()
}

struct SessionRow {
  pk: i64,
  account_pk: i64,
  session: AuthSession,
}

const SESSION_COLUMNS: &str = "s.pk, s.account_pk, s.oid, a.account_id, s.redirect_uri, s.cancel_uri, s.institution_id,
   s.permissions, s.arrangement_id, s.state, s.error_type, s.consent_id, s.created_at, s.expires_at, s.finished_at";

fn read_session(r: &Row<'_>, session_id: &str, now: i64) -> rusqlite::Result<SessionRow> {
  let state_text: String = r.get(9)?;
  let state = SessionState::parse(&state_text).unwrap_or(SessionState::Cancelled);
  let expires_at: i64 = r.get(13)?;
  Ok(SessionRow {
    pk: r.get(0)?,
    account_pk: r.get(1)?,
    session: AuthSession {
      id: r.get(2)?,
      session_id: session_id.to_string(),
      linked_account_id: r.get(3)?,
      redirect_uri: r.get(4)?,
      cancel_uri: r.get(5)?,
      institution_id: r.get(6)?,
      permissions: json_list(r.get(7)?),
      arrangement_id: r.get(8)?,
      state,
      status: session_status(state, expires_at, now),
      error_type: r.get(10)?,
      consent_id: r.get(11)?,
      created_at: r.get(12)?,
      expires_at,
      finished_at: r.get(14)?,
    },
  })
}

fn find_session(
  conn: &Connection,
  scope: &Scope,
  session_id: &str,
  now: i64,
) -> Result<SessionRow> {
  let sql = format!(
    "SELECT {SESSION_COLUMNS} FROM auth_sessions s JOIN accounts a ON a.pk = s.account_pk
     WHERE s.session_hash = ?1 AND s.scope_id = ?2"
  );
  conn
    .prepare_cached(&sql)?
    .query_row(params![&session_hash(session_id)[..], scope.id], |r| {
      read_session(r, session_id, now)
    })
    .optional()?
    .ok_or_else(|| Error::not_found("auth session not found"))
}

pub fn create_session(
  conn: &Connection,
  scope: &Scope,
  input: SessionInput,
  now: i64,
) -> Result<AuthSession> {
  let account_pk = accounts::pk_of(conn, scope, &input.linked_account_id)?;
  let mut institution_id = input.institution_id;
  if let Some(arrangement_id) = &input.arrangement_id {
    // A renewal session: the consent must exist, belong to this end user and still be active.
    let (row_account, c) = find_consent(conn, scope, arrangement_id)?;
    if row_account != Some(account_pk) {
      return Err(Error::validation(
        "arrangement_id",
        format!(
          "consent {arrangement_id} does not belong to linked account {}",
          input.linked_account_id
        ),
      ));
    }
    if !renewable(&c, now) {
      return Err(Error::validation(
        "arrangement_id",
        format!(
          "consent {arrangement_id} is no longer active ({}); start a new consent instead",
          c.seen_at(now)
            .termination_reason
            .map_or("inactive", Termination::as_str)
        ),
      ));
    }
    match &institution_id {
      Some(i) if *i != c.institution_id => {
        return Err(Error::validation(
          "institution_id",
          "a renewal session is for the institution of the consent it renews",
        ))
      }
      Some(_) => {}
      None => institution_id = Some(c.institution_id.clone()),
    }
  }
  let session_id = consents::new_uuid()?;
  let oid = crypto::object_id(now)?;
  let expires_at = consents::ceil_to_second(now + input.ttl_seconds * 1000);
  conn
    .prepare_cached(
      "INSERT INTO auth_sessions (scope_id, oid, session_hash, account_pk, redirect_uri, cancel_uri,
         institution_id, permissions, arrangement_id, state, created_at, expires_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11)",
    )?
    .execute(params![
      scope.id,
      oid,
      &session_hash(&session_id)[..],
      account_pk,
      input.redirect_uri,
      input.cancel_uri,
      institution_id,
      input.permissions.as_deref().map(to_json_text),
      input.arrangement_id,
      now,
      expires_at
    ])?;
  // The event never carries the session id (a bearer secret), only the record id.
  events::append(
    conn,
    scope.id,
    types::AUTH_SESSION_CREATED,
    Some(&input.linked_account_id),
    &json!({
      "id": oid,
      "institution_id": institution_id,
      "permissions": input.permissions,
      "arrangement_id": input.arrangement_id,
      "expires_at": expires_at / 1000,
    }),
    now,
  )?;
  Ok(AuthSession {
    id: oid,
    session_id,
    linked_account_id: input.linked_account_id,
    redirect_uri: input.redirect_uri,
    cancel_uri: input.cancel_uri,
    institution_id,
    permissions: input.permissions,
    arrangement_id: input.arrangement_id,
    state: SessionState::Pending,
    status: session_status(SessionState::Pending, expires_at, now),
    error_type: None,
    consent_id: None,
    created_at: now,
    expires_at,
    finished_at: None,
  })
}

pub fn get_session(
  conn: &Connection,
  scope: &Scope,
  session_id: &str,
  now: i64,
) -> Result<AuthSession> {
  find_session(conn, scope, session_id, now).map(|r| r.session)
}

/// Moves a pending session to `to` (completed or cancelled) if, and only if, it is still
/// pending: the single-use guarantee under concurrency.
fn finish_session(
  conn: &Connection,
  row: &SessionRow,
  to: SessionState,
  error_type: Option<&str>,
  consent_id: Option<&str>,
  now: i64,
) -> Result<()> {
  let changed = conn
    .prepare_cached(
      "UPDATE auth_sessions SET state = ?2, error_type = ?3, consent_id = ?4, finished_at = ?5
       WHERE pk = ?1 AND state = 'pending'",
    )?
    .execute(params![row.pk, to.as_str(), error_type, consent_id, now])?;
  if changed != 1 {
    return Err(Error::new(
      ErrorKind::AuthSessionAlreadyUsed,
      "auth session was already used; a session is single use",
    ));
  }
  Ok(())
}

pub fn complete_session(
  conn: &Connection,
  scope: &Scope,
  session_id: &str,
  result: Completion,
  now: i64,
) -> Result<Consent> {
  let row = find_session(conn, scope, session_id, now)?;
  check_finishable(row.session.state, row.session.expires_at, now)?;
  let end_user_id = row.session.linked_account_id.clone();

  // A renewal updates its consent while that is still active (and still this end user's);
  // if it ended meanwhile, the completion creates a new consent with the same defaults.
  let mut renewed: Option<Consent> = None;
  let mut in_place: Option<i64> = None;
  if let Some(arrangement_id) = &row.session.arrangement_id {
    if let Ok((Some(owner), c)) = find_consent(conn, scope, arrangement_id) {
      if owner == row.account_pk {
        if renewable(&c, now) {
          in_place = Some(consent_pk(conn, scope, arrangement_id)?);
        }
        renewed = Some(c);
      }
    }
  }
  let grant = resolve_completion(&row.session, renewed.as_ref(), result)?;
  if let Some(old) = renewed.as_ref().filter(|c| c.lapsed(now)) {
    end_consent(conn, scope, &old.arrangement_id, Ending::Sweep, now)?;
  }

  let (consent, kind) = match (in_place, renewed) {
    (Some(pk), Some(old)) => (renew(conn, pk, old, grant, now)?, types::CONSENT_UPDATED),
    _ => (
      insert_consent(conn, scope, row.account_pk, &end_user_id, grant, now)?,
      types::CONSENT_RECEIVED,
    ),
  };
  let renewal_of = row.session.arrangement_id.clone();
  finish_session(
    conn,
    &row,
    SessionState::Completed,
    None,
    Some(&consent.arrangement_id),
    now,
  )?;
  events::append(
    conn,
    scope.id,
    types::AUTH_SESSION_COMPLETED,
    Some(&end_user_id),
    &json!({
      "id": row.session.id,
      "consent_id": consent.arrangement_id,
      "arrangement_id": consent.arrangement_id,
      "renewal": kind == types::CONSENT_UPDATED,
    }),
    now,
  )?;
  let mut data = event_data(&consent);
  if kind == types::CONSENT_UPDATED {
    data["reason"] = json!("renewed");
  } else if let Some(of) = renewal_of {
    data["renewal_of"] = json!(of);
  }
  events::append(conn, scope.id, kind, Some(&end_user_id), &data, now)?;
  Ok(consent)
}

pub fn cancel_session(
  conn: &Connection,
  scope: &Scope,
  session_id: &str,
  error_type: &str,
  now: i64,
) -> Result<AuthSession> {
  let row = find_session(conn, scope, session_id, now)?;
  check_finishable(row.session.state, row.session.expires_at, now)?;
  finish_session(
    conn,
    &row,
    SessionState::Cancelled,
    Some(error_type),
    None,
    now,
  )?;
  events::append(
    conn,
    scope.id,
    types::AUTH_SESSION_CANCELLED,
    Some(&row.session.linked_account_id),
    &json!({ "id": row.session.id, "error_type": error_type }),
    now,
  )?;
  let mut s = row.session;
  s.state = SessionState::Cancelled;
  s.status = consents::SessionStatus::Cancelled;
  s.error_type = Some(error_type.to_string());
  s.finished_at = Some(now);
  Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Consents

const CONSENT_COLUMNS: &str =
  "c.account_pk, c.arrangement_id, c.end_user_id, c.institution_id, c.institution_name,
   c.account_ids, c.permissions, c.duration, c.created_at, c.last_consent, c.expires_at, c.active,
   c.termination_reason, c.institution_logo, c.institution_type, c.last_accessed,
   (SELECT e.email FROM accounts e WHERE e.pk = c.account_pk)";

/// (account_pk, consent as stored).
fn read_consent(r: &Row<'_>) -> rusqlite::Result<(Option<i64>, Consent)> {
  let reason: Option<String> = r.get(12)?;
  Ok((
    r.get(0)?,
    Consent {
      arrangement_id: r.get(1)?,
      end_user_id: r.get(2)?,
      institution_id: r.get(3)?,
      institution_name: r.get(4)?,
      account_ids: json_list(r.get(5)?).unwrap_or_default(),
      permissions: json_list(r.get(6)?).unwrap_or_default(),
      duration: r.get(7)?,
      created_at: r.get(8)?,
      last_consent: r.get(9)?,
      expires_at: r.get(10)?,
      active: r.get(11)?,
      termination_reason: reason.as_deref().and_then(Termination::parse),
      institution_logo: r.get(13)?,
      institution_type: r
        .get::<_, String>(14)
        .ok()
        .as_deref()
        .and_then(InstitutionType::parse)
        .unwrap_or_default(),
      last_accessed: r.get(15)?,
      end_user_email: r.get(16)?,
    },
  ))
}

fn consent_not_found(arrangement_id: &str) -> Error {
  Error::not_found(format!("consent {arrangement_id} not found"))
}

/// The stored consent (not adjusted for lapse) and its account pk.
fn find_consent(
  conn: &Connection,
  scope: &Scope,
  arrangement_id: &str,
) -> Result<(Option<i64>, Consent)> {
  let sql = format!(
    "SELECT {CONSENT_COLUMNS} FROM consents c WHERE c.scope_id = ?1 AND c.arrangement_id = ?2"
  );
  conn
    .prepare_cached(&sql)?
    .query_row(params![scope.id, arrangement_id], read_consent)
    .optional()?
    .ok_or_else(|| consent_not_found(arrangement_id))
}

fn consent_pk(conn: &Connection, scope: &Scope, arrangement_id: &str) -> Result<i64> {
  conn
    .prepare_cached("SELECT pk FROM consents WHERE scope_id = ?1 AND arrangement_id = ?2")?
    .query_row(params![scope.id, arrangement_id], |r| r.get(0))
    .optional()?
    .ok_or_else(|| consent_not_found(arrangement_id))
}

fn insert_consent(
  conn: &Connection,
  scope: &Scope,
  account_pk: i64,
  end_user_id: &str,
  g: Grant,
  now: i64,
) -> Result<Consent> {
  let arrangement_id = consents::new_uuid()?;
  let expires_at = consent_expiry(now, g.duration);
  conn
    .prepare_cached(
      "INSERT INTO consents (scope_id, arrangement_id, account_pk, end_user_id, institution_id,
         institution_name, account_ids, permissions, duration, created_at, last_consent, expires_at,
         active, updated_at, institution_logo, institution_type)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, 1, ?10, ?12, ?13)",
    )?
    .execute(params![
      scope.id,
      arrangement_id,
      account_pk,
      end_user_id,
      g.institution_id,
      g.institution_name,
      to_json_text(&g.account_ids),
      to_json_text(&g.permissions),
      g.duration,
      now,
      expires_at,
      g.institution_logo,
      g.institution_type.as_str(),
    ])?;
  let end_user_email: Option<String> = conn
    .prepare_cached("SELECT email FROM accounts WHERE pk = ?1")?
    .query_row([account_pk], |r| r.get(0))
    .optional()?
    .flatten();
  Ok(Consent {
    arrangement_id,
    end_user_id: end_user_id.to_string(),
    institution_id: g.institution_id,
    institution_name: g.institution_name,
    account_ids: g.account_ids,
    permissions: g.permissions,
    duration: g.duration,
    created_at: now,
    last_consent: now,
    expires_at,
    active: true,
    termination_reason: None,
    institution_logo: g.institution_logo,
    institution_type: g.institution_type,
    last_accessed: None,
    end_user_email,
  })
}

fn renew(conn: &Connection, pk: i64, old: Consent, g: Grant, now: i64) -> Result<Consent> {
  let expires_at = consent_expiry(now, g.duration);
  let changed = conn
    .prepare_cached(
      "UPDATE consents SET institution_name = ?2, account_ids = ?3, permissions = ?4, duration = ?5,
         last_consent = ?6, expires_at = ?7, updated_at = ?6, institution_logo = ?8,
         institution_type = ?9
       WHERE pk = ?1 AND active = 1",
    )?
    .execute(params![
      pk,
      g.institution_name,
      to_json_text(&g.account_ids),
      to_json_text(&g.permissions),
      g.duration,
      now,
      expires_at,
      g.institution_logo,
      g.institution_type.as_str(),
    ])?;
  if changed != 1 {
    return Err(Error::storage("consent changed while it was being renewed"));
  }
  Ok(Consent {
    institution_name: g.institution_name,
    institution_logo: g.institution_logo,
    institution_type: g.institution_type,
    account_ids: g.account_ids,
    permissions: g.permissions,
    duration: g.duration,
    last_consent: now,
    expires_at,
    ..old
  })
}

/// Applies an ending to one consent: records the termination (if any is due) with a
/// conditional update and, only when this call changed the row, its `consent.revoked` event.
/// Returns the consent as it now is.
fn end_consent(
  conn: &Connection,
  scope: &Scope,
  arrangement_id: &str,
  ending: Ending,
  now: i64,
) -> Result<Consent> {
  let (_, mut c) = find_consent(conn, scope, arrangement_id)?;
  let Some(reason) = termination(c.active, c.expires_at, ending, now) else {
    return Ok(c);
  };
  // An expiry is dated when it happened, not when it was noticed.
  let ended_at = if reason == Termination::Expired {
    c.expires_at
  } else {
    now
  };
  let changed = conn
    .prepare_cached(
      "UPDATE consents SET active = 0, termination_reason = ?3, terminated_at = ?4, updated_at = ?5
       WHERE scope_id = ?1 AND arrangement_id = ?2 AND active = 1",
    )?
    .execute(params![
      scope.id,
      arrangement_id,
      reason.as_str(),
      ended_at,
      now
    ])?;
  c.active = false;
  c.termination_reason = Some(reason);
  if changed == 1 {
    let mut data = event_data(&c);
    data["ended_at"] = json!(rfc3339_secs(ended_at.div_euclid(1000)));
    events::append(
      conn,
      scope.id,
      types::CONSENT_REVOKED,
      Some(&c.end_user_id),
      &data,
      now,
    )?;
  }
  Ok(c)
}

/// Records every lapsed consent of the scope (or of one account), each exactly once.
pub fn expire_due(
  conn: &Connection,
  scope: &Scope,
  account_pk: Option<i64>,
  now: i64,
) -> Result<Vec<String>> {
  let ids: Vec<String> = conn
    .prepare_cached(
      "SELECT arrangement_id FROM consents
       WHERE scope_id = ?1 AND active = 1 AND expires_at <= ?2 AND (?3 IS NULL OR account_pk = ?3)
       ORDER BY expires_at, pk",
    )?
    .query_map(params![scope.id, now, account_pk], |r| r.get(0))?
    .collect::<rusqlite::Result<_>>()?;
  let mut recorded = Vec::with_capacity(ids.len());
  for id in ids {
    let c = end_consent(conn, scope, &id, Ending::Sweep, now)?;
    if c.termination_reason == Some(Termination::Expired) {
      recorded.push(id);
    }
  }
  Ok(recorded)
}

pub fn revoke(conn: &Connection, scope: &Scope, arrangement_id: &str, now: i64) -> Result<Consent> {
  end_consent(conn, scope, arrangement_id, Ending::Revoke, now)
}

/// Consents as seen at `now`, and whether any of them lapsed without being recorded yet.
pub fn list(
  conn: &Connection,
  scope: &Scope,
  filter: &ConsentFilter,
  now: i64,
) -> Result<(Vec<Consent>, bool)> {
  let account_pk = match &filter.end_user_id {
    Some(id) => Some(accounts::pk_of(conn, scope, id)?),
    None => None,
  };
  let active = filter.active.map(i64::from);
  let sql = format!(
    "SELECT {CONSENT_COLUMNS} FROM consents c
     WHERE c.scope_id = ?1 AND (?2 IS NULL OR c.account_pk = ?2)
       AND (?3 IS NULL
            OR (?3 = 1 AND c.active = 1 AND c.expires_at > ?4)
            OR (?3 = 0 AND (c.active = 0 OR c.expires_at <= ?4)))
     ORDER BY c.pk"
  );
  let rows = conn
    .prepare_cached(&sql)?
    .query_map(params![scope.id, account_pk, active, now], read_consent)?
    .collect::<rusqlite::Result<Vec<_>>>()?;
  let noticed = rows.iter().any(|(_, c)| c.lapsed(now));
  Ok((
    rows.into_iter().map(|(_, c)| c.seen_at(now)).collect(),
    noticed,
  ))
}

/// One consent as seen at `now`, and whether it lapsed without being recorded yet.
pub fn get(
  conn: &Connection,
  scope: &Scope,
  arrangement_id: &str,
  now: i64,
) -> Result<(Consent, bool)> {
  let (_, c) = find_consent(conn, scope, arrangement_id)?;
  let noticed = c.lapsed(now);
  Ok((c.seen_at(now), noticed))
}

/// Called by `store::accounts::delete` inside its transaction, before the account row goes:
/// ends the account's active consents (`account_deleted`, or `expired` for those that had
/// already lapsed), each with its `consent.revoked` event. The consents are kept; their
/// `account_pk` becomes NULL with the account. Pending auth sessions go with the account.
pub fn on_account_deleted(
  conn: &Connection,
  scope: &Scope,
  account_pk: i64,
  now: i64,
) -> Result<usize> {
  let ids: Vec<String> = conn
    .prepare_cached(
      "SELECT arrangement_id FROM consents WHERE scope_id = ?1 AND account_pk = ?2 AND active = 1
       ORDER BY pk",
    )?
    .query_map(params![scope.id, account_pk], |r| r.get(0))?
    .collect::<rusqlite::Result<_>>()?;
  for id in &ids {
    end_consent(conn, scope, id, Ending::AccountDeleted, now)?;
  }
  Ok(ids.len())
}

/// For identity linking (merging accounts): moves every consent of the secondary account
/// `from_pk` to the primary `to_pk` inside the caller's transaction, and re-points the
/// secondary's auth sessions too (so a pending session completes onto the primary).
///
/// Lapsed consents of the secondary are first recorded as expired (`consent.revoked`). Each
/// moved consent then gets a `consent.updated` event on the primary with
/// `data.reason = "account_merged"` and `data.previous_end_user_id`. Both pks must be accounts
/// of `scope` (else `NOT_FOUND`); moving an account onto itself moves nothing. Returns the
/// number of consents moved.
pub fn move_consents(
  conn: &Connection,
  scope: &Scope,
  from_pk: i64,
  to_pk: i64,
  now: i64,
) -> Result<usize> {
  let account_id = |pk: i64| -> Result<String> {
    conn
      .prepare_cached("SELECT account_id FROM accounts WHERE pk = ?1 AND scope_id = ?2")?
      .query_row(params![pk, scope.id], |r| r.get(0))
      .optional()?
      .ok_or_else(|| Error::not_found(format!("linked account #{pk} not found")))
  };
  let from_id = account_id(from_pk)?;
  let to_id = account_id(to_pk)?;
  if from_pk == to_pk {
    return Ok(0);
  }
  expire_due(conn, scope, Some(from_pk), now)?;
  let ids: Vec<String> = conn
    .prepare_cached(
      "SELECT arrangement_id FROM consents WHERE scope_id = ?1 AND account_pk = ?2 ORDER BY pk",
    )?
    .query_map(params![scope.id, from_pk], |r| r.get(0))?
    .collect::<rusqlite::Result<_>>()?;
  conn
    .prepare_cached(
      "UPDATE consents SET account_pk = ?3, end_user_id = ?4, updated_at = ?5
       WHERE scope_id = ?1 AND account_pk = ?2",
    )?
    .execute(params![scope.id, from_pk, to_pk, to_id, now])?;
  conn
    .prepare_cached(
      "UPDATE auth_sessions SET account_pk = ?3 WHERE scope_id = ?1 AND account_pk = ?2",
    )?
    .execute(params![scope.id, from_pk, to_pk])?;
  for id in &ids {
    let (_, c) = find_consent(conn, scope, id)?;
    let mut data = event_data(&c);
    data["reason"] = json!("account_merged");
    data["previous_end_user_id"] = json!(from_id);
    events::append(
      conn,
      scope.id,
      types::CONSENT_UPDATED,
      Some(&to_id),
      &data,
      now,
    )?;
  }
  Ok(ids.len())
}

/// `recordConsentAccess`: stamps `last_accessed` (Fiskil's field) with `now`. Data may only be
/// accessed under an active consent, so an ended one (revoked, expired, account deleted) is
/// refused with `VALIDATION_ERROR` (`arrangement_id`) and nothing changes. Appends
/// `consent.accessed`.
pub fn record_access(
  conn: &Connection,
  scope: &Scope,
  arrangement_id: &str,
  now: i64,
) -> Result<Consent> {
  let (_, c) = find_consent(conn, scope, arrangement_id)?;
  let mut c = c.seen_at(now);
  consents::check_accessible(&c)?;
  conn
    .prepare_cached(
      "UPDATE consents SET last_accessed = ?3 WHERE scope_id = ?1 AND arrangement_id = ?2",
    )?
    .execute(params![scope.id, arrangement_id, now])?;
  c.last_accessed = Some(now);
  events::append(
    conn,
    scope.id,
    types::CONSENT_ACCESSED,
    Some(&c.end_user_id),
    &json!({
      "consent_id": c.arrangement_id,
      "arrangement_id": c.arrangement_id,
      "end_user_id": c.end_user_id,
      "last_accessed": rfc3339_secs(now.div_euclid(1000)),
    }),
    now,
  )?;
  Ok(c)
}

/// For unlinking (restoring a merged account): moves the listed consents that `from_pk` still
/// holds to `to_pk`, each with a `consent.updated` event (`data.reason`, and
/// `data.previous_end_user_id`). Returns how many moved.
pub fn move_listed_consents(
  conn: &Connection,
  scope: &Scope,
  arrangement_ids: &[String],
  from_pk: i64,
  to_pk: i64,
  reason: &str,
  now: i64,
) -> Result<usize> {
  let account_id = |pk: i64| -> Result<String> {
    conn
      .prepare_cached("SELECT account_id FROM accounts WHERE pk = ?1 AND scope_id = ?2")?
      .query_row(params![pk, scope.id], |r| r.get(0))
      .optional()?
      .ok_or_else(|| Error::not_found(format!("linked account #{pk} not found")))
  };
  let (from_id, to_id) = (account_id(from_pk)?, account_id(to_pk)?);
  let mut moved = 0;
  for id in arrangement_ids {
    let changed = conn
      .prepare_cached(
        "UPDATE consents SET account_pk = ?4, end_user_id = ?5, updated_at = ?6
         WHERE scope_id = ?1 AND arrangement_id = ?2 AND account_pk = ?3",
      )?
      .execute(params![scope.id, id, from_pk, to_pk, to_id, now])?;
    if changed == 1 {
      let (_, c) = find_consent(conn, scope, id)?;
      let mut data = event_data(&c);
      data["reason"] = json!(reason);
      data["previous_end_user_id"] = json!(from_id);
      events::append(
        conn,
        scope.id,
        types::CONSENT_UPDATED,
        Some(&to_id),
        &data,
        now,
      )?;
      moved += 1;
    }
  }
  Ok(moved)
}

// ---------------------------------------------------------------------------------------------
// The SQLite implementation

impl SqliteStore {
  /// Queues (without waiting) the write that records lapsed consents a read noticed.
  fn record_lapsed_later(engine: &super::sqlite::Db, scope: Scope) {
    drop(engine.write(move |conn| expire_due(conn, &scope, None, now_ms()).map(|_| ())));
  }
}

impl ConsentStore for SqliteStore {
  fn create_auth_session(&self, scope: &Scope, input: SessionInput) -> Pending<AuthSession> {
    let scope = scope.clone();
    self.write(move |conn| create_session(conn, &scope, input, now_ms()))
  }

  fn get_auth_session(&self, scope: &Scope, session_id: String) -> Pending<AuthSession> {
    let scope = scope.clone();
    self.read(move |conn| get_session(conn, &scope, &session_id, now_ms()))
  }

  fn complete_auth_session(
    &self,
    scope: &Scope,
    session_id: String,
    result: Completion,
  ) -> Pending<Consent> {
    let scope = scope.clone();
    self.write(move |conn| complete_session(conn, &scope, &session_id, result, now_ms()))
  }

  fn cancel_auth_session(
    &self,
    scope: &Scope,
    session_id: String,
    error_type: String,
  ) -> Pending<AuthSession> {
    let scope = scope.clone();
    self.write(move |conn| cancel_session(conn, &scope, &session_id, &error_type, now_ms()))
  }

  fn list_consents(&self, scope: &Scope, filter: ConsentFilter) -> Pending<Vec<Consent>> {
    let (scope, engine) = (scope.clone(), self.engine());
    self.read(move |conn| {
      let (consents, noticed) = list(conn, &scope, &filter, now_ms())?;
      if noticed {
        SqliteStore::record_lapsed_later(&engine, scope);
      }
      Ok(consents)
    })
  }

  fn get_consent(&self, scope: &Scope, arrangement_id: String) -> Pending<Consent> {
    let (scope, engine) = (scope.clone(), self.engine());
    self.read(move |conn| {
      let (consent, noticed) = get(conn, &scope, &arrangement_id, now_ms())?;
      if noticed {
        SqliteStore::record_lapsed_later(&engine, scope);
      }
      Ok(consent)
    })
  }

  fn revoke_consent(&self, scope: &Scope, arrangement_id: String) -> Pending<Consent> {
    let scope = scope.clone();
    self.write(move |conn| revoke(conn, &scope, &arrangement_id, now_ms()))
  }

  fn expire_consents(&self, scope: &Scope) -> Pending<Vec<String>> {
    let scope = scope.clone();
    self.write(move |conn| expire_due(conn, &scope, None, now_ms()))
  }

  fn record_consent_access(&self, scope: &Scope, arrangement_id: String) -> Pending<Consent> {
    let scope = scope.clone();
    self.write(move |conn| record_access(conn, &scope, &arrangement_id, now_ms()))
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::consents::{parse_completion, parse_session_input, SessionStatus};
  use serde_json::json;

  const T0: i64 = 1_700_000_000_000;

  fn db() -> (Connection, Scope) {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    super::super::sqlite::schema::migrate(&mut conn).unwrap();
    conn
      .execute(
        "INSERT INTO scopes (org_id, environment) VALUES ('org', 'test')",
        [],
      )
      .unwrap();
    let scope = Scope {
      id: 1,
      org_id: "org".into(),
      environment: "test".into(),
    };
    for id in ["u1", "u2"] {
      conn
        .execute(
          "INSERT INTO accounts (scope_id, account_id, oid, created_at, updated_at) VALUES (1, ?1, 'x', 0, 0)",
          [id],
        )
        .unwrap();
    }
    (conn, scope)
  }

  fn session(conn: &Connection, scope: &Scope, extra: Value, now: i64) -> Result<AuthSession> {
    let mut v = json!({"linked_account_id": "u1", "redirect_uri": "https://a.example/ok", "cancel_uri": "https://a.example/no"});
    for (k, x) in extra.as_object().unwrap() {
      v[k] = x.clone();
    }
    create_session(conn, scope, parse_session_input(&v).unwrap(), now)
  }

  fn grant(duration: i64) -> Completion {
    parse_completion(&json!({
      "institution_id": "bank", "account_ids": ["acc1"], "permissions": ["accounts"],
      "duration_seconds": duration
    }))
    .unwrap()
  }

  fn event_types(conn: &Connection) -> Vec<String> {
    conn
      .prepare("SELECT type FROM events ORDER BY id")
      .unwrap()
      .query_map([], |r| r.get(0))
      .unwrap()
      .collect::<rusqlite::Result<_>>()
      .unwrap()
  }

  fn in_savepoint<T>(conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT job").unwrap();
    let r = f();
    if r.is_err() {
      conn.execute_batch("ROLLBACK TO job").unwrap();
    }
    conn.execute_batch("RELEASE job").unwrap();
    r
  }

  #[test]
  fn session_state_machine() {
    let (conn, scope) = db();
    let s = session(&conn, &scope, json!({"ttl_seconds": 60}), T0).unwrap();
    assert_eq!(s.status, SessionStatus::Pending);
    assert_eq!(s.expires_at, T0 + 60_000);
    // Unknown session / account.
    assert_eq!(
      get_session(&conn, &scope, "nope", T0).unwrap_err().code(),
      "NOT_FOUND"
    );
    assert_eq!(
      session(&conn, &scope, json!({"linked_account_id": "ghost"}), T0)
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    // pending → completed, then single use.
    let c = complete_session(&conn, &scope, &s.session_id, grant(90), T0 + 1).unwrap();
    assert!(c.active);
    assert_eq!(c.expires_at, T0 + 90_000);
    let got = get_session(&conn, &scope, &s.session_id, T0 + 2).unwrap();
    assert_eq!(got.status, SessionStatus::Completed);
    assert_eq!(got.consent_id.as_deref(), Some(c.arrangement_id.as_str()));
    for e in [
      complete_session(&conn, &scope, &s.session_id, grant(90), T0 + 2).unwrap_err(),
      cancel_session(&conn, &scope, &s.session_id, "CONSENT_TIMEOUT", T0 + 2).unwrap_err(),
    ] {
      assert_eq!(e.code(), "AUTH_SESSION_ALREADY_USED");
    }
    // Still completed (not expired) after its lifetime.
    assert_eq!(
      get_session(&conn, &scope, &s.session_id, T0 + 120_000)
        .unwrap()
        .status,
      SessionStatus::Completed
    );
    // pending → cancelled.
    let s2 = session(&conn, &scope, json!({}), T0).unwrap();
    let cancelled = cancel_session(
      &conn,
      &scope,
      &s2.session_id,
      "CONSENT_ENDUSER_DENIED",
      T0 + 5,
    )
    .unwrap();
    assert_eq!(cancelled.status, SessionStatus::Cancelled);
    assert_eq!(
      cancelled.error_type.as_deref(),
      Some("CONSENT_ENDUSER_DENIED")
    );
    assert_eq!(
      complete_session(&conn, &scope, &s2.session_id, grant(90), T0 + 6)
        .unwrap_err()
        .code(),
      "AUTH_SESSION_ALREADY_USED"
    );
    // pending → expired (read-only), refused.
    let s3 = session(&conn, &scope, json!({"ttl_seconds": 1}), T0).unwrap();
    assert_eq!(
      get_session(&conn, &scope, &s3.session_id, T0 + 1000)
        .unwrap()
        .status,
      SessionStatus::Expired
    );
    for e in [
      complete_session(&conn, &scope, &s3.session_id, grant(90), T0 + 1000).unwrap_err(),
      cancel_session(&conn, &scope, &s3.session_id, "CONSENT_TIMEOUT", T0 + 1000).unwrap_err(),
    ] {
      assert_eq!(e.code(), "AUTH_SESSION_EXPIRED");
    }
    assert_eq!(
      event_types(&conn),
      vec![
        "auth_session.created",
        "auth_session.completed",
        "consent.received",
        "auth_session.created",
        "auth_session.cancelled",
        "auth_session.created",
      ]
    );
  }

  #[test]
  fn consent_lifecycle_revoke_expire_renew() {
    let (conn, scope) = db();
    let s = session(&conn, &scope, json!({}), T0).unwrap();
    let c = complete_session(&conn, &scope, &s.session_id, grant(100), T0).unwrap();
    let id = c.arrangement_id.clone();
    // Renewal updates the same consent.
    let r = session(&conn, &scope, json!({"arrangement_id": id}), T0 + 50_000).unwrap();
    assert_eq!(r.institution_id.as_deref(), Some("bank"));
    let renewed = complete_session(
      &conn,
      &scope,
      &r.session_id,
      parse_completion(&json!({"account_ids": ["acc1", "acc2"]})).unwrap(),
      T0 + 50_000,
    )
    .unwrap();
    assert_eq!(renewed.arrangement_id, id);
    assert_eq!(renewed.created_at, T0);
    assert_eq!(renewed.last_consent, T0 + 50_000);
    assert_eq!(renewed.expires_at, T0 + 150_000);
    assert_eq!(renewed.permissions, vec!["accounts"]);
    assert_eq!(renewed.account_ids, vec!["acc1", "acc2"]);
    // Renewal sessions are checked: other user's consent, unknown consent.
    assert_eq!(
      session(
        &conn,
        &scope,
        json!({"linked_account_id": "u2", "arrangement_id": id}),
        T0
      )
      .unwrap_err()
      .field
      .as_deref(),
      Some("arrangement_id")
    );
    assert_eq!(
      session(&conn, &scope, json!({"arrangement_id": "nope"}), T0)
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    // Reads see the lapse at once, before anything is recorded.
    let (seen, noticed) = get(&conn, &scope, &id, T0 + 150_000).unwrap();
    assert!(noticed);
    assert!(!seen.active);
    assert_eq!(seen.termination_reason, Some(Termination::Expired));
    let (active, _) = list(
      &conn,
      &scope,
      &ConsentFilter {
        end_user_id: None,
        active: Some(true),
      },
      T0 + 150_000,
    )
    .unwrap();
    assert!(active.is_empty());
    // Sweeping records it exactly once.
    assert_eq!(
      expire_due(&conn, &scope, None, T0 + 150_000).unwrap(),
      vec![id.clone()]
    );
    assert!(expire_due(&conn, &scope, None, T0 + 160_000)
      .unwrap()
      .is_empty());
    // Revoking an ended consent is a no-op returning it.
    let again = revoke(&conn, &scope, &id, T0 + 170_000).unwrap();
    assert_eq!(again.termination_reason, Some(Termination::Expired));
    // A renewal of an ended consent is refused.
    assert_eq!(
      session(&conn, &scope, json!({"arrangement_id": id}), T0 + 170_000)
        .unwrap_err()
        .field
        .as_deref(),
      Some("arrangement_id")
    );
    // Revoke an active one, twice.
    let s = session(&conn, &scope, json!({}), T0).unwrap();
    let c2 = complete_session(&conn, &scope, &s.session_id, grant(1000), T0).unwrap();
    let r1 = revoke(&conn, &scope, &c2.arrangement_id, T0 + 1).unwrap();
    let r2 = revoke(&conn, &scope, &c2.arrangement_id, T0 + 2).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(r1.termination_reason, Some(Termination::Revoked));
    let revoked = event_types(&conn)
      .iter()
      .filter(|t| *t == "consent.revoked")
      .count();
    assert_eq!(revoked, 2);
    assert!(event_types(&conn).contains(&"consent.updated".to_string()));
  }

  #[test]
  fn renewal_of_a_consent_that_ended_meanwhile_creates_a_new_one() {
    let (conn, scope) = db();
    let s = session(&conn, &scope, json!({}), T0).unwrap();
    let c = complete_session(&conn, &scope, &s.session_id, grant(100), T0).unwrap();
    let r = session(
      &conn,
      &scope,
      json!({"arrangement_id": c.arrangement_id}),
      T0,
    )
    .unwrap();
    revoke(&conn, &scope, &c.arrangement_id, T0 + 1).unwrap();
    let fresh = complete_session(
      &conn,
      &scope,
      &r.session_id,
      parse_completion(&json!({"account_ids": ["acc1"]})).unwrap(),
      T0 + 2,
    )
    .unwrap();
    assert_ne!(fresh.arrangement_id, c.arrangement_id);
    assert!(fresh.active);
    assert_eq!(fresh.institution_id, "bank");
    let data: String = conn
      .query_row(
        "SELECT data FROM events WHERE type = 'consent.received' ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
      )
      .unwrap();
    assert!(data.contains(&c.arrangement_id));
  }

  #[test]
  fn failed_jobs_leave_no_event() {
    let (conn, scope) = db();
    let s = session(&conn, &scope, json!({"institution_id": "bank"}), T0).unwrap();
    let before = event_types(&conn).len();
    // Fails after the session row was read: wrong institution.
    let bad = parse_completion(&json!({"institution_id": "other", "account_ids": ["a"], "permissions": ["p"], "duration_seconds": 5})).unwrap();
    let e = in_savepoint(&conn, || {
      complete_session(&conn, &scope, &s.session_id, bad, T0)
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("institution_id"));
    // Fails after appending: the savepoint rolls the event back.
    let e = in_savepoint(&conn, || -> Result<()> {
      events::append(&conn, scope.id, "test.ghost", None, &json!({}), T0)?;
      Err(Error::validation("x", "late failure"))
    })
    .unwrap_err();
    assert_eq!(e.code(), "VALIDATION_ERROR");
    assert_eq!(event_types(&conn).len(), before);
    assert_eq!(
      get_session(&conn, &scope, &s.session_id, T0)
        .unwrap()
        .status,
      SessionStatus::Pending
    );
  }

  #[test]
  fn account_deletion_and_merge() {
    let (conn, scope) = db();
    let s = session(&conn, &scope, json!({"linked_account_id": "u2"}), T0).unwrap();
    let c = complete_session(&conn, &scope, &s.session_id, grant(100), T0).unwrap();
    let s = session(&conn, &scope, json!({"linked_account_id": "u2"}), T0).unwrap();
    let lapsing = complete_session(&conn, &scope, &s.session_id, grant(1), T0).unwrap();
    let pending = session(&conn, &scope, json!({"linked_account_id": "u2"}), T0).unwrap();
    let u1 = accounts::pk_of(&conn, &scope, "u1").unwrap();
    let u2 = accounts::pk_of(&conn, &scope, "u2").unwrap();
    assert_eq!(move_consents(&conn, &scope, u2, u2, T0).unwrap(), 0);
    assert_eq!(
      move_consents(&conn, &scope, u2, 999, T0)
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    assert_eq!(move_consents(&conn, &scope, u2, u1, T0 + 5_000).unwrap(), 2);
    let (moved, _) = get(&conn, &scope, &c.arrangement_id, T0 + 5_000).unwrap();
    assert_eq!(moved.end_user_id, "u1");
    assert!(moved.active);
    // The lapsed one was recorded as expired first.
    let (l, noticed) = get(&conn, &scope, &lapsing.arrangement_id, T0 + 5_000).unwrap();
    assert!(!noticed);
    assert_eq!(l.termination_reason, Some(Termination::Expired));
    // The pending session now completes onto the primary.
    assert_eq!(
      get_session(&conn, &scope, &pending.session_id, T0)
        .unwrap()
        .linked_account_id,
      "u1"
    );
    // Deleting the primary ends its active consent, keeps the record.
    on_account_deleted(&conn, &scope, u1, T0 + 6_000).unwrap();
    conn
      .execute("DELETE FROM accounts WHERE pk = ?1", [u1])
      .unwrap();
    let (gone, _) = get(&conn, &scope, &c.arrangement_id, T0 + 6_000).unwrap();
    assert!(!gone.active);
    assert_eq!(gone.termination_reason, Some(Termination::AccountDeleted));
    assert_eq!(
      get_session(&conn, &scope, &pending.session_id, T0)
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    let types = event_types(&conn);
    assert_eq!(types.iter().filter(|t| *t == "consent.updated").count(), 2);
    assert_eq!(types.iter().filter(|t| *t == "consent.revoked").count(), 2);
  }
}

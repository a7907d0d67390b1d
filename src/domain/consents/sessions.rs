//! Auth sessions: `createAuthSession` (including renewal sessions), `getAuthSession`,
//! `completeAuthSession` (single use; creates or renews a consent) and `cancelAuthSession`.

use serde_json::json;

use super::lifecycle::{end, find_consent, insert_consent, renew};
use super::rules::{
  ceil_to_second, check_finishable, event_data, renewable, resolve_completion, session_status,
  Ending,
};
use super::{ConsentRow, ConsentTx, SessionRow};
use crate::consents::{
  self, AuthSession, Completion, Consent, SessionInput, SessionState, SessionStatus, Termination,
};
use crate::crypto;
use crate::domain::accounts;
use crate::domain::events::types;
use crate::domain::Scope;
use crate::error::{Error, ErrorKind, Result};

/// What identifies a session in storage: the session id is a bearer secret, stored hashed.
fn session_hash(session_id: &str) -> [u8; 32] {
  crypto::sha256(session_id.as_bytes())
}

/// The session as returned, seen at `now`.
fn to_session(row: SessionRow, session_id: &str, now: i64) -> AuthSession {
  AuthSession {
    id: row.oid,
    session_id: session_id.to_string(),
    linked_account_id: row.linked_account_id,
    redirect_uri: row.redirect_uri,
    cancel_uri: row.cancel_uri,
    institution_id: row.institution_id,
    permissions: row.permissions,
    arrangement_id: row.arrangement_id,
    state: row.state,
    status: session_status(row.state, row.expires_at, now),
    error_type: row.error_type,
    consent_id: row.consent_id,
    created_at: row.created_at,
    expires_at: row.expires_at,
    finished_at: row.finished_at,
  }
}

fn find(tx: &mut (impl ConsentTx + ?Sized), scope: &Scope, session_id: &str) -> Result<SessionRow> {
  tx.find_session(scope.id, &session_hash(session_id))?
    .ok_or_else(|| Error::not_found("auth session not found"))
}

/// `createAuthSession`: a pending session for an existing account. A renewal session (with
/// `arrangement_id`) must name an active consent of the same end user, and is for its
/// institution.
pub fn create(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  input: SessionInput,
  now: i64,
) -> Result<AuthSession> {
  let account_pk = accounts::find(tx, scope, &input.linked_account_id)?.pk;
  let mut institution_id = input.institution_id;
  if let Some(arrangement_id) = &input.arrangement_id {
    let ConsentRow {
      account_pk: owner,
      consent: c,
      ..
    } = find_consent(tx, scope, arrangement_id)?;
    if owner != Some(account_pk) {
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
  let row = SessionRow {
    pk: 0,
    account_pk,
    oid: crypto::object_id(now)?,
    linked_account_id: input.linked_account_id,
    redirect_uri: input.redirect_uri,
    cancel_uri: input.cancel_uri,
    institution_id,
    permissions: input.permissions,
    arrangement_id: input.arrangement_id,
    state: SessionState::Pending,
    error_type: None,
    consent_id: None,
    created_at: now,
    expires_at: ceil_to_second(now + input.ttl_seconds * 1000),
    finished_at: None,
  };
  tx.insert_session(scope.id, &session_hash(&session_id), &row)?;
  // The event never carries the session id (a bearer secret), only the record id.
  tx.append_event(
    scope.id,
    types::AUTH_SESSION_CREATED,
    Some(&row.linked_account_id),
    &json!({
      "id": row.oid,
      "institution_id": row.institution_id,
      "permissions": row.permissions,
      "arrangement_id": row.arrangement_id,
      "expires_at": row.expires_at / 1000,
    }),
    now,
  )?;
  Ok(to_session(row, &session_id, now))
}

/// `getAuthSession`.
pub fn get(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  session_id: &str,
  now: i64,
) -> Result<AuthSession> {
  find(tx, scope, session_id).map(|row| to_session(row, session_id, now))
}

/// Moves a pending session to `to` (completed or cancelled) if, and only if, it is still
/// pending: the single-use guarantee under concurrency.
fn finish(
  tx: &mut (impl ConsentTx + ?Sized),
  row: &SessionRow,
  to: SessionState,
  error_type: Option<&str>,
  consent_id: Option<&str>,
  now: i64,
) -> Result<()> {
  if !tx.finish_session(row.pk, to, error_type, consent_id, now)? {
    return Err(Error::new(
      ErrorKind::AuthSessionAlreadyUsed,
      "auth session was already used; a session is single use",
    ));
  }
  Ok(())
}

/// `completeAuthSession`: the consent the end user gave. A renewal updates its consent while
/// that is still active (and still this end user's); if it ended meanwhile, the completion
/// creates a new consent with the same defaults.
pub fn complete(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  session_id: &str,
  result: Completion,
  now: i64,
) -> Result<Consent> {
  let row = find(tx, scope, session_id)?;
  check_finishable(row.state, row.expires_at, now)?;
  let end_user_id = row.linked_account_id.clone();

  let mut renewed: Option<Consent> = None;
  let mut in_place: Option<i64> = None;
  if let Some(arrangement_id) = &row.arrangement_id {
    if let Some(found) = tx.find_consent(scope.id, arrangement_id)? {
      if found.account_pk == Some(row.account_pk) {
        if renewable(&found.consent, now) {
          in_place = Some(found.pk);
        }
        renewed = Some(found.consent);
      }
    }
  }
  let session = to_session(row.clone(), session_id, now);
  let grant = resolve_completion(&session, renewed.as_ref(), result)?;
  if let Some(old) = renewed.as_ref().filter(|c| c.lapsed(now)) {
    end(tx, scope, &old.arrangement_id, Ending::Sweep, now)?;
  }

  let (consent, kind) = match (in_place, renewed) {
    (Some(pk), Some(old)) => (renew(tx, pk, old, grant, now)?, types::CONSENT_UPDATED),
    _ => (
      insert_consent(tx, scope, row.account_pk, &end_user_id, grant, now)?,
      types::CONSENT_RECEIVED,
    ),
  };
  finish(
    tx,
    &row,
    SessionState::Completed,
    None,
    Some(&consent.arrangement_id),
    now,
  )?;
  tx.append_event(
    scope.id,
    types::AUTH_SESSION_COMPLETED,
    Some(&end_user_id),
    &json!({
      "id": row.oid,
      "consent_id": consent.arrangement_id,
      "arrangement_id": consent.arrangement_id,
      "renewal": kind == types::CONSENT_UPDATED,
    }),
    now,
  )?;
  let mut data = event_data(&consent);
  if kind == types::CONSENT_UPDATED {
    data["reason"] = json!("renewed");
  } else if let Some(of) = &row.arrangement_id {
    data["renewal_of"] = json!(of);
  }
  tx.append_event(scope.id, kind, Some(&end_user_id), &data, now)?;
  Ok(consent)
}

/// `cancelAuthSession`: the end user did not consent (`error_type` says why).
pub fn cancel(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  session_id: &str,
  error_type: &str,
  now: i64,
) -> Result<AuthSession> {
  let row = find(tx, scope, session_id)?;
  check_finishable(row.state, row.expires_at, now)?;
  finish(
    tx,
    &row,
    SessionState::Cancelled,
    Some(error_type),
    None,
    now,
  )?;
  tx.append_event(
    scope.id,
    types::AUTH_SESSION_CANCELLED,
    Some(&row.linked_account_id),
    &json!({ "id": row.oid, "error_type": error_type }),
    now,
  )?;
  let mut s = to_session(row, session_id, now);
  s.state = SessionState::Cancelled;
  s.status = SessionStatus::Cancelled;
  s.error_type = Some(error_type.to_string());
  s.finished_at = Some(now);
  Ok(s)
}

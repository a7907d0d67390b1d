//! Consents after their creation: reads (a lapsed consent reads as expired at once), revocation
//! (idempotent), expiry recorded exactly once, access stamps, and what account deletion and
//! merges do to them.

use serde_json::json;

use super::rules::{check_accessible, consent_expiry, event_data, termination, Ending, Grant};
use super::{ConsentRow, ConsentTx};
use crate::clock::rfc3339_secs;
use crate::consents::{self, Consent, ConsentFilter, Termination};
use crate::domain::accounts;
use crate::domain::events::types;
use crate::domain::Scope;
use crate::error::{Error, Result};

fn consent_not_found(arrangement_id: &str) -> Error {
  Error::not_found(format!("consent {arrangement_id} not found"))
}

/// The stored consent (not adjusted for lapse), or `NOT_FOUND`.
pub(super) fn find_consent(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  arrangement_id: &str,
) -> Result<ConsentRow> {
  tx.find_consent(scope.id, arrangement_id)?
    .ok_or_else(|| consent_not_found(arrangement_id))
}

/// The account `pk` of the scope's id, or `NOT_FOUND`.
fn account_id_of(tx: &mut (impl ConsentTx + ?Sized), scope: &Scope, pk: i64) -> Result<String> {
  tx.account_by_pk(scope.id, pk)?
    .map(|a| a.account_id)
    .ok_or_else(|| Error::not_found(format!("linked account #{pk} not found")))
}

/// A new active consent for account `account_pk` from a checked grant.
pub(super) fn insert_consent(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  account_pk: i64,
  end_user_id: &str,
  g: Grant,
  now: i64,
) -> Result<Consent> {
  let expires_at = consent_expiry(now, g.duration);
  let mut c = Consent {
    arrangement_id: consents::new_uuid()?,
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
    end_user_email: None,
  };
  tx.insert_consent(scope.id, account_pk, &c)?;
  c.end_user_email = tx
    .account_by_pk(scope.id, account_pk)?
    .and_then(|a| a.end_user.email);
  Ok(c)
}

/// Renews the active consent `pk` (`old`) with a grant: new `last_consent` and `expires_at`.
pub(super) fn renew(
  tx: &mut (impl ConsentTx + ?Sized),
  pk: i64,
  old: Consent,
  g: Grant,
  now: i64,
) -> Result<Consent> {
  let c = Consent {
    institution_name: g.institution_name,
    institution_logo: g.institution_logo,
    institution_type: g.institution_type,
    account_ids: g.account_ids,
    permissions: g.permissions,
    duration: g.duration,
    last_consent: now,
    expires_at: consent_expiry(now, g.duration),
    ..old
  };
  if !tx.renew_consent(pk, &c, now)? {
    return Err(Error::storage("consent changed while it was being renewed"));
  }
  Ok(c)
}

/// Applies an ending to one consent: records the termination (if any is due) with a
/// conditional update and, only when this call changed the row, its `consent.revoked` event.
/// Returns the consent as it now is.
pub(super) fn end(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  arrangement_id: &str,
  ending: Ending,
  now: i64,
) -> Result<Consent> {
  let mut c = find_consent(tx, scope, arrangement_id)?.consent;
  let Some(reason) = termination(c.active, c.expires_at, ending, now) else {
    return Ok(c);
  };
  // An expiry is dated when it happened, not when it was noticed.
  let ended_at = if reason == Termination::Expired {
    c.expires_at
  } else {
    now
  };
  let changed = tx.end_consent(scope.id, arrangement_id, reason.as_str(), ended_at, now)?;
  c.active = false;
  c.termination_reason = Some(reason);
  if changed {
    let mut data = event_data(&c);
    data["ended_at"] = json!(rfc3339_secs(ended_at.div_euclid(1000)));
    tx.append_event(
      scope.id,
      types::CONSENT_REVOKED,
      Some(&c.end_user_id),
      &data,
      now,
    )?;
  }
  Ok(c)
}

/// `expireConsents()` (and the write a read that noticed a lapse queues): records every lapsed
/// consent of the scope (or of one account), each exactly once; returns their arrangement ids.
pub fn expire_due(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  account_pk: Option<i64>,
  now: i64,
) -> Result<Vec<String>> {
  let ids = tx.due_consents(scope.id, account_pk, now)?;
  let mut recorded = Vec::with_capacity(ids.len());
  for id in ids {
    let c = end(tx, scope, &id, Ending::Sweep, now)?;
    if c.termination_reason == Some(Termination::Expired) {
      recorded.push(id);
    }
  }
  Ok(recorded)
}

/// `revokeConsent`: idempotent; an ended consent is returned as it is.
pub fn revoke(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  arrangement_id: &str,
  now: i64,
) -> Result<Consent> {
  end(tx, scope, arrangement_id, Ending::Revoke, now)
}

/// `listConsents`: consents as seen at `now`, and whether any of them lapsed without being
/// recorded yet (the caller then queues [`expire_due`]).
pub fn list(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  filter: &ConsentFilter,
  now: i64,
) -> Result<(Vec<Consent>, bool)> {
  let account_pk = match &filter.end_user_id {
    Some(id) => Some(accounts::find(tx, scope, id)?.pk),
    None => None,
  };
  let rows = tx.list_consents(scope.id, account_pk, filter.active, now)?;
  let noticed = rows.iter().any(|r| r.consent.lapsed(now));
  Ok((
    rows.into_iter().map(|r| r.consent.seen_at(now)).collect(),
    noticed,
  ))
}

/// `getConsent`: one consent as seen at `now`, and whether it lapsed without being recorded yet.
pub fn get(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  arrangement_id: &str,
  now: i64,
) -> Result<(Consent, bool)> {
  let c = find_consent(tx, scope, arrangement_id)?.consent;
  let noticed = c.lapsed(now);
  Ok((c.seen_at(now), noticed))
}

/// Account deletion, inside its transaction, before the account row goes: ends the account's
/// active consents (`account_deleted`, or `expired` for those that had already lapsed), each
/// with its `consent.revoked` event. The consents are kept; their account becomes none with
/// the row. Pending auth sessions go with the account.
pub fn on_account_deleted(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  account_pk: i64,
  now: i64,
) -> Result<usize> {
  let ids = tx.consents_of(scope.id, account_pk, true)?;
  for id in &ids {
    end(tx, scope, id, Ending::AccountDeleted, now)?;
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
/// moved consents' arrangement ids, in insertion order.
pub fn move_consents(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  from_pk: i64,
  to_pk: i64,
  now: i64,
) -> Result<Vec<String>> {
  let from_id = account_id_of(tx, scope, from_pk)?;
  let to_id = account_id_of(tx, scope, to_pk)?;
  if from_pk == to_pk {
    return Ok(Vec::new());
  }
  expire_due(tx, scope, Some(from_pk), now)?;
  let ids = tx.consents_of(scope.id, from_pk, false)?;
  tx.move_all_consents(scope.id, from_pk, to_pk, &to_id, now)?;
  for id in &ids {
    let c = find_consent(tx, scope, id)?.consent;
    let mut data = event_data(&c);
    data["reason"] = json!("account_merged");
    data["previous_end_user_id"] = json!(from_id);
    tx.append_event(scope.id, types::CONSENT_UPDATED, Some(&to_id), &data, now)?;
  }
  Ok(ids)
}

/// For unlinking (restoring a merged account): moves the listed consents that `from_pk` still
/// holds to `to_pk`, each with a `consent.updated` event (`data.reason`, and
/// `data.previous_end_user_id`). Returns how many moved.
pub fn move_listed_consents(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  arrangement_ids: &[String],
  from_pk: i64,
  to_pk: i64,
  reason: &str,
  now: i64,
) -> Result<usize> {
  let (from_id, to_id) = (
    account_id_of(tx, scope, from_pk)?,
    account_id_of(tx, scope, to_pk)?,
  );
  let mut moved = 0;
  for id in arrangement_ids {
    if tx.move_consent(scope.id, id, from_pk, to_pk, &to_id, now)? {
      let c = find_consent(tx, scope, id)?.consent;
      let mut data = event_data(&c);
      data["reason"] = json!(reason);
      data["previous_end_user_id"] = json!(from_id);
      tx.append_event(scope.id, types::CONSENT_UPDATED, Some(&to_id), &data, now)?;
      moved += 1;
    }
  }
  Ok(moved)
}

/// `recordConsentAccess`: stamps `last_accessed` (Fiskil's field) with `now`. Data may only be
/// accessed under an active consent, so an ended one (revoked, expired, account deleted) is
/// refused with `VALIDATION_ERROR` (`arrangement_id`) and nothing changes. Appends
/// `consent.accessed`.
pub fn record_access(
  tx: &mut (impl ConsentTx + ?Sized),
  scope: &Scope,
  arrangement_id: &str,
  now: i64,
) -> Result<Consent> {
  let mut c = find_consent(tx, scope, arrangement_id)?
    .consent
    .seen_at(now);
  check_accessible(&c)?;
  tx.set_last_accessed(scope.id, arrangement_id, now)?;
  c.last_accessed = Some(now);
  tx.append_event(
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

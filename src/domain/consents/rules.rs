//! The state machines of auth sessions and consents, as pure functions: a session's status and
//! whether it may still finish; what ends a consent and as what; renewal; expiry arithmetic; and
//! how a completion is checked against its session. No storage here: the operations in
//! `sessions` and `lifecycle` apply these inside their transaction.
//!
//! Session: `pending` → `completed` | `cancelled` (single use), and reads as `expired` once
//! `expires_at` has passed while pending. Consent: `active` → inactive with a
//! `termination_reason` of `revoked`, `expired` or `account_deleted`; renewal keeps it active
//! (new `last_consent` and `expires_at`). A consent past `expires_at` reads as expired at once.

use serde_json::{json, Value};

use crate::clock::rfc3339_secs;
use crate::consents::{
  AuthSession, Completion, Consent, InstitutionType, SessionState, SessionStatus, Termination,
};
use crate::error::{Error, ErrorKind, Result};

/// The status of a session in `state` that expires at `expires_at` (ms), seen at `now` (ms).
pub fn session_status(state: SessionState, expires_at: i64, now: i64) -> SessionStatus {
  match state {
    SessionState::Completed => SessionStatus::Completed,
    SessionState::Cancelled => SessionStatus::Cancelled,
    SessionState::Pending if now >= expires_at => SessionStatus::Expired,
    SessionState::Pending => SessionStatus::Pending,
  }
}

/// Whether a session may be completed or cancelled now: single use first
/// (`AUTH_SESSION_ALREADY_USED`), then lifetime (`AUTH_SESSION_EXPIRED`).
pub fn check_finishable(state: SessionState, expires_at: i64, now: i64) -> Result<()> {
  match session_status(state, expires_at, now) {
    SessionStatus::Pending => Ok(()),
    SessionStatus::Completed | SessionStatus::Cancelled => Err(Error::new(
      ErrorKind::AuthSessionAlreadyUsed,
      format!(
        "auth session was already {}; a session is single use",
        state.as_str()
      ),
    )),
    SessionStatus::Expired => Err(Error::new(
      ErrorKind::AuthSessionExpired,
      format!(
        "auth session expired at {}",
        rfc3339_secs(expires_at.div_euclid(1000))
      ),
    )),
  }
}

/// Something that may end a consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
  /// `revokeConsent`.
  Revoke,
  /// `expireConsents()` or a read that noticed.
  Sweep,
  /// The linked account is deleted.
  AccountDeleted,
}

/// The state machine of a consent's end: what `ending` does to a consent with stored
/// `active`/`expires_at` at `now`. `None`: nothing to record (already ended, or not due).
/// A consent that lapsed before the ending is recorded as `expired`, whatever the ending.
pub fn termination(active: bool, expires_at: i64, ending: Ending, now: i64) -> Option<Termination> {
  if !active {
    return None;
  }
  if now >= expires_at {
    return Some(Termination::Expired);
  }
  match ending {
    Ending::Revoke => Some(Termination::Revoked),
    Ending::Sweep => None,
    Ending::AccountDeleted => Some(Termination::AccountDeleted),
  }
}

/// Data may be accessed (`recordConsentAccess`) only under an active consent: `c` as seen now.
pub fn check_accessible(c: &Consent) -> Result<()> {
  match c.termination_reason.filter(|_| !c.active) {
    None => Ok(()),
    Some(reason) => Err(Error::validation(
      "arrangement_id",
      format!(
        "consent {} is not active ({}): no data may be accessed under it",
        c.arrangement_id,
        reason.as_str()
      ),
    )),
  }
}

/// A renewal updates the same consent only while it is active; otherwise completing the renewal
/// session creates a new consent.
pub fn renewable(c: &Consent, now: i64) -> bool {
  c.active && now < c.expires_at
}

/// `ms` rounded up to a whole second, so that the unix-second `expires_at` of a session is exact
/// and never earlier than asked.
pub fn ceil_to_second(ms: i64) -> i64 {
  ms.div_euclid(1000) * 1000 + if ms.rem_euclid(1000) == 0 { 0 } else { 1000 }
}

/// The expiry of a consent granted at `now` for `duration` seconds: counted from the whole
/// second of the grant, so that `expires_at - last_consent == duration` in the RFC 3339 fields.
pub fn consent_expiry(now: i64, duration: i64) -> i64 {
  now
    .div_euclid(1000)
    .saturating_add(duration)
    .saturating_mul(1000)
}

/// What consent events carry (`data`), Fiskil's webhook fields plus the state.
pub fn event_data(c: &Consent) -> Value {
  json!({
    "consent_id": c.arrangement_id,
    "arrangement_id": c.arrangement_id,
    "end_user_id": c.end_user_id,
    "institution_id": c.institution_id,
    "account_ids": c.account_ids,
    "permissions": c.permissions,
    "active": c.active,
    "expires_at": rfc3339_secs(c.expires_at.div_euclid(1000)),
    "termination_reason": c.termination_reason.map(Termination::as_str),
  })
}

/// What a completion writes, once checked against its session (and the consent it renews).
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
  pub institution_id: String,
  pub institution_name: Option<String>,
  pub institution_logo: Option<String>,
  pub institution_type: InstitutionType,
  pub account_ids: Vec<String>,
  pub permissions: Vec<String>,
  pub duration: i64,
}

/// Applies the session's constraints to a completion: a session's `institution_id` locks the
/// institution; its `permissions` bound what may be granted; a renewal defaults to the renewed
/// consent's institution, permissions and duration.
pub fn resolve_completion(
  session: &AuthSession,
  renewing: Option<&Consent>,
  c: Completion,
) -> Result<Grant> {
  let locked = session
    .institution_id
    .as_ref()
    .or(renewing.map(|r| &r.institution_id));
  let institution_id = match (locked, c.institution_id) {
    (Some(l), Some(i)) if *l != i => {
      return Err(Error::validation(
        "institution_id",
        "institution_id differs from the institution this session is for",
      ))
    }
    (_, Some(i)) => i,
    (Some(l), None) => l.clone(),
    (None, None) => {
      return Err(Error::validation(
        "institution_id",
        "institution_id is required",
      ))
    }
  };
  let permissions = match (c.permissions, &session.permissions) {
    (Some(p), Some(allowed)) => {
      if let Some(extra) = p.iter().find(|x| !allowed.contains(x)) {
        return Err(Error::validation(
          "permissions",
          format!("permission {extra} was not requested by this session"),
        ));
      }
      p
    }
    (Some(p), None) => p,
    (None, Some(allowed)) => allowed.clone(),
    (None, None) => match renewing {
      Some(r) => r.permissions.clone(),
      None => {
        return Err(Error::validation(
          "permissions",
          "permissions is required (the session requested none)",
        ))
      }
    },
  };
  let duration = match (c.duration_seconds, renewing) {
    (Some(d), _) => d,
    (None, Some(r)) => r.duration,
    (None, None) => {
      return Err(Error::validation(
        "duration_seconds",
        "duration_seconds is required",
      ))
    }
  };
  let institution_name = c
    .institution_name
    .or_else(|| renewing.and_then(|r| r.institution_name.clone()));
  let institution_logo = c
    .institution_logo
    .or_else(|| renewing.and_then(|r| r.institution_logo.clone()));
  let institution_type = c
    .institution_type
    .or(renewing.map(|r| r.institution_type))
    .unwrap_or_default();
  Ok(Grant {
    institution_id,
    institution_name,
    institution_logo,
    institution_type,
    account_ids: c.account_ids,
    permissions,
    duration,
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  fn session(state: SessionState, expires_at: i64) -> AuthSession {
    AuthSession {
      id: "s".into(),
      session_id: "secret-session".into(),
      linked_account_id: "u1".into(),
      redirect_uri: Some("https://app.example/ok".into()),
      cancel_uri: Some("https://app.example/cancel".into()),
      institution_id: None,
      permissions: None,
      arrangement_id: None,
      state,
      status: session_status(state, expires_at, 0),
      error_type: None,
      consent_id: None,
      created_at: 0,
      expires_at,
      finished_at: None,
    }
  }

  fn consent(active: bool, expires_at: i64) -> Consent {
    Consent {
      arrangement_id: "a".into(),
      end_user_id: "u1".into(),
      institution_id: "bank".into(),
      institution_name: Some("Bank".into()),
      account_ids: vec!["acc".into()],
      permissions: vec!["accounts".into(), "balances".into()],
      duration: 90,
      created_at: 0,
      last_consent: 0,
      expires_at,
      active,
      termination_reason: None,
      institution_logo: Some("https://bank.example/logo.png".into()),
      institution_type: InstitutionType::Energy,
      last_accessed: None,
      end_user_email: None,
    }
  }

  #[test]
  fn session_transitions_and_refusals() {
    use SessionState::*;
    assert_eq!(session_status(Pending, 1000, 999), SessionStatus::Pending);
    assert_eq!(session_status(Pending, 1000, 1000), SessionStatus::Expired);
    assert_eq!(
      session_status(Completed, 1000, 5000),
      SessionStatus::Completed
    );
    assert_eq!(
      session_status(Cancelled, 1000, 5000),
      SessionStatus::Cancelled
    );
    assert!(check_finishable(Pending, 1000, 999).is_ok());
    assert_eq!(
      check_finishable(Pending, 1000, 1000).unwrap_err().code(),
      "AUTH_SESSION_EXPIRED"
    );
    for used in [Completed, Cancelled] {
      // Single use wins over expiry.
      for now in [0, 5000] {
        let e = check_finishable(used, 1000, now).unwrap_err();
        assert_eq!(e.code(), "AUTH_SESSION_ALREADY_USED");
        assert_eq!(e.status(), 409);
      }
    }
    assert_eq!(check_finishable(Pending, 0, 1).unwrap_err().status(), 410);
    for s in [Pending, Completed, Cancelled] {
      assert_eq!(SessionState::parse(s.as_str()), Some(s));
    }
  }

  #[test]
  fn consent_endings() {
    use Ending::*;
    // Active, not due.
    assert_eq!(
      termination(true, 100, Revoke, 50),
      Some(Termination::Revoked)
    );
    assert_eq!(termination(true, 100, Sweep, 50), None);
    assert_eq!(
      termination(true, 100, AccountDeleted, 50),
      Some(Termination::AccountDeleted)
    );
    // Lapsed: whatever ends it, it is recorded as expired.
    for e in [Revoke, Sweep, AccountDeleted] {
      assert_eq!(termination(true, 100, e, 100), Some(Termination::Expired));
      // Already ended: nothing to record (idempotent).
      assert_eq!(termination(false, 100, e, 50), None);
      assert_eq!(termination(false, 100, e, 500), None);
    }
    let c = consent(true, 100);
    assert!(!c.lapsed(99));
    assert!(c.lapsed(100));
    let seen = c.clone().seen_at(100);
    assert!(!seen.active);
    assert_eq!(seen.termination_reason, Some(Termination::Expired));
    assert_eq!(c.clone().seen_at(99), c);
    assert!(renewable(&c, 99));
    assert!(!renewable(&c, 100));
    assert!(!renewable(&consent(false, 100), 0));
    for t in [
      Termination::Revoked,
      Termination::Expired,
      Termination::AccountDeleted,
    ] {
      assert_eq!(Termination::parse(t.as_str()), Some(t));
    }
  }

  #[test]
  fn expiry_rounds_up_to_seconds() {
    assert_eq!(ceil_to_second(1000), 1000);
    assert_eq!(ceil_to_second(1001), 2000);
    assert_eq!(ceil_to_second(0), 0);
    assert_eq!(consent_expiry(1_500, 1), 2_000);
    assert_eq!(consent_expiry(2_000, 1), 3_000);
  }

  #[test]
  fn completion_respects_session_and_renewal() {
    let mut s = session(SessionState::Pending, 10);
    let c = |inst: Option<&str>, perms: Option<Vec<&str>>, d: Option<i64>| Completion {
      institution_id: inst.map(String::from),
      institution_name: None,
      institution_logo: None,
      institution_type: None,
      account_ids: vec!["acc".into()],
      permissions: perms.map(|p| p.into_iter().map(String::from).collect()),
      duration_seconds: d,
    };
    // A new consent needs everything.
    let e = resolve_completion(&s, None, c(None, Some(vec!["x"]), Some(1))).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("institution_id"));
    let e = resolve_completion(&s, None, c(Some("b"), None, Some(1))).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("permissions"));
    let e = resolve_completion(&s, None, c(Some("b"), Some(vec!["x"]), None)).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("duration_seconds"));
    // The session locks the institution and bounds permissions.
    s.institution_id = Some("bank".into());
    s.permissions = Some(vec!["accounts".into(), "balances".into()]);
    let g = resolve_completion(&s, None, c(None, None, Some(5))).unwrap();
    assert_eq!(g.institution_id, "bank");
    assert_eq!(g.permissions, vec!["accounts", "balances"]);
    let e = resolve_completion(&s, None, c(Some("other"), None, Some(5))).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("institution_id"));
    let e = resolve_completion(&s, None, c(None, Some(vec!["transactions"]), Some(5))).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("permissions"));
    // A renewal keeps the consent's institution, permissions and duration by default.
    let s = session(SessionState::Pending, 10);
    let r = consent(true, 100);
    let g = resolve_completion(&s, Some(&r), c(None, None, None)).unwrap();
    assert_eq!(g.institution_id, "bank");
    assert_eq!(g.permissions, r.permissions);
    assert_eq!(g.duration, 90);
    assert_eq!(g.institution_name.as_deref(), Some("Bank"));
    // ... and its logo and type.
    assert_eq!(
      g.institution_logo.as_deref(),
      Some("https://bank.example/logo.png")
    );
    assert_eq!(g.institution_type, InstitutionType::Energy);
    let e = resolve_completion(&s, Some(&r), c(Some("other"), None, None)).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("institution_id"));
  }
}

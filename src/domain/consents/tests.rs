//! The consent rules run on every engine: each function here is a test body, called by the
//! SQLite engine's tests (`store::sqlite::consents`) and the PostgreSQL engine's
//! (`store::postgres::consents`) inside one transaction that is never committed.

use serde_json::{json, Value};

use super::{lifecycle, sessions};
use crate::accounts::EndUserFields;
use crate::consents::{
  parse_completion, parse_session_input, AuthSession, Completion, ConsentFilter, SessionStatus,
  Termination,
};
use crate::domain::accounts::{self, AccountRow};
use crate::domain::Scope;
use crate::error::Result;
use crate::store::Tx;

const T0: i64 = 1_700_000_000_000;

/// One open transaction of an engine, and the events it appended.
pub trait Harness {
  fn tx(&mut self) -> &mut dyn Tx;
  /// Every event of the database (type, data), by id.
  fn events(&mut self) -> Vec<(String, Value)>;
}

fn event_types(h: &mut dyn Harness) -> Vec<String> {
  h.events().into_iter().map(|(t, _)| t).collect()
}

/// Scope `org`/`test` with accounts u1 and u2.
fn setup(h: &mut dyn Harness) -> Scope {
  let tx = h.tx();
  tx.insert_scope("org", "test").unwrap();
  let id = tx.scope_id("org", "test").unwrap().unwrap();
  for account_id in ["u1", "u2"] {
    let row = AccountRow {
      pk: 0,
      oid: "x".into(),
      name: None,
      has_app: false,
      app_id: None,
      credentials: None,
      created_at: 0,
      updated_at: 0,
      version: 0,
      account_id: account_id.into(),
      end_user: EndUserFields::default(),
    };
    tx.insert_account(id, &row).unwrap();
  }
  Scope {
    id,
    org_id: "org".into(),
    environment: "test".into(),
  }
}

fn session(h: &mut dyn Harness, scope: &Scope, extra: Value, now: i64) -> Result<AuthSession> {
  let mut v = json!({"linked_account_id": "u1", "redirect_uri": "https://a.example/ok", "cancel_uri": "https://a.example/no"});
  for (k, x) in extra.as_object().unwrap() {
    v[k] = x.clone();
  }
  sessions::create(h.tx(), scope, parse_session_input(&v).unwrap(), now)
}

fn grant(duration: i64) -> Completion {
  parse_completion(&json!({
    "institution_id": "bank", "account_ids": ["acc1"], "permissions": ["accounts"],
    "duration_seconds": duration
  }))
  .unwrap()
}

/// A completion refused after the session was read changes nothing and appends nothing.
pub fn a_refused_completion_changes_nothing(h: &mut dyn Harness) {
  let scope = setup(h);
  let s = session(h, &scope, json!({"institution_id": "bank"}), T0).unwrap();
  let before = event_types(h).len();
  let bad = parse_completion(&json!({"institution_id": "other", "account_ids": ["a"], "permissions": ["p"], "duration_seconds": 5})).unwrap();
  let e = sessions::complete(h.tx(), &scope, &s.session_id, bad, T0).unwrap_err();
  assert_eq!(e.field.as_deref(), Some("institution_id"));
  assert_eq!(event_types(h).len(), before);
  let (all, _) = lifecycle::list(h.tx(), &scope, &ConsentFilter::default(), T0).unwrap();
  assert!(all.is_empty());
  assert_eq!(
    sessions::get(h.tx(), &scope, &s.session_id, T0)
      .unwrap()
      .status,
    SessionStatus::Pending
  );
}

pub fn session_state_machine(h: &mut dyn Harness) {
  let scope = setup(h);
  let s = session(h, &scope, json!({"ttl_seconds": 60}), T0).unwrap();
  assert_eq!(s.status, SessionStatus::Pending);
  assert_eq!(s.expires_at, T0 + 60_000);
  // Unknown session / account.
  assert_eq!(
    sessions::get(h.tx(), &scope, "nope", T0)
      .unwrap_err()
      .code(),
    "NOT_FOUND"
  );
  assert_eq!(
    session(h, &scope, json!({"linked_account_id": "ghost"}), T0)
      .unwrap_err()
      .code(),
    "NOT_FOUND"
  );
  // pending → completed, then single use.
  let c = sessions::complete(h.tx(), &scope, &s.session_id, grant(90), T0 + 1).unwrap();
  assert!(c.active);
  assert_eq!(c.expires_at, T0 + 90_000);
  let got = sessions::get(h.tx(), &scope, &s.session_id, T0 + 2).unwrap();
  assert_eq!(got.status, SessionStatus::Completed);
  assert_eq!(got.consent_id.as_deref(), Some(c.arrangement_id.as_str()));
  for e in [
    sessions::complete(h.tx(), &scope, &s.session_id, grant(90), T0 + 2).unwrap_err(),
    sessions::cancel(h.tx(), &scope, &s.session_id, "CONSENT_TIMEOUT", T0 + 2).unwrap_err(),
  ] {
    assert_eq!(e.code(), "AUTH_SESSION_ALREADY_USED");
  }
  // Still completed (not expired) after its lifetime.
  assert_eq!(
    sessions::get(h.tx(), &scope, &s.session_id, T0 + 120_000)
      .unwrap()
      .status,
    SessionStatus::Completed
  );
  // pending → cancelled.
  let s2 = session(h, &scope, json!({}), T0).unwrap();
  let cancelled = sessions::cancel(
    h.tx(),
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
    sessions::complete(h.tx(), &scope, &s2.session_id, grant(90), T0 + 6)
      .unwrap_err()
      .code(),
    "AUTH_SESSION_ALREADY_USED"
  );
  // pending → expired (read-only), refused.
  let s3 = session(h, &scope, json!({"ttl_seconds": 1}), T0).unwrap();
  assert_eq!(
    sessions::get(h.tx(), &scope, &s3.session_id, T0 + 1000)
      .unwrap()
      .status,
    SessionStatus::Expired
  );
  for e in [
    sessions::complete(h.tx(), &scope, &s3.session_id, grant(90), T0 + 1000).unwrap_err(),
    sessions::cancel(h.tx(), &scope, &s3.session_id, "CONSENT_TIMEOUT", T0 + 1000).unwrap_err(),
  ] {
    assert_eq!(e.code(), "AUTH_SESSION_EXPIRED");
  }
  assert_eq!(
    event_types(h),
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

pub fn consent_lifecycle_revoke_expire_renew(h: &mut dyn Harness) {
  let scope = setup(h);
  let s = session(h, &scope, json!({}), T0).unwrap();
  let c = sessions::complete(h.tx(), &scope, &s.session_id, grant(100), T0).unwrap();
  let id = c.arrangement_id.clone();
  // Renewal updates the same consent.
  let r = session(h, &scope, json!({"arrangement_id": id}), T0 + 50_000).unwrap();
  assert_eq!(r.institution_id.as_deref(), Some("bank"));
  let renewed = sessions::complete(
    h.tx(),
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
      h,
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
    session(h, &scope, json!({"arrangement_id": "nope"}), T0)
      .unwrap_err()
      .code(),
    "NOT_FOUND"
  );
  // Reads see the lapse at once, before anything is recorded.
  let (seen, noticed) = lifecycle::get(h.tx(), &scope, &id, T0 + 150_000).unwrap();
  assert!(noticed);
  assert!(!seen.active);
  assert_eq!(seen.termination_reason, Some(Termination::Expired));
  let (active, _) = lifecycle::list(
    h.tx(),
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
    lifecycle::expire_due(h.tx(), &scope, None, T0 + 150_000).unwrap(),
    vec![id.clone()]
  );
  assert!(lifecycle::expire_due(h.tx(), &scope, None, T0 + 160_000)
    .unwrap()
    .is_empty());
  // Revoking an ended consent is a no-op returning it.
  let again = lifecycle::revoke(h.tx(), &scope, &id, T0 + 170_000).unwrap();
  assert_eq!(again.termination_reason, Some(Termination::Expired));
  // A renewal of an ended consent is refused.
  assert_eq!(
    session(h, &scope, json!({"arrangement_id": id}), T0 + 170_000)
      .unwrap_err()
      .field
      .as_deref(),
    Some("arrangement_id")
  );
  // Revoke an active one, twice.
  let s = session(h, &scope, json!({}), T0).unwrap();
  let c2 = sessions::complete(h.tx(), &scope, &s.session_id, grant(1000), T0).unwrap();
  let r1 = lifecycle::revoke(h.tx(), &scope, &c2.arrangement_id, T0 + 1).unwrap();
  let r2 = lifecycle::revoke(h.tx(), &scope, &c2.arrangement_id, T0 + 2).unwrap();
  assert_eq!(r1, r2);
  assert_eq!(r1.termination_reason, Some(Termination::Revoked));
  let revoked = event_types(h)
    .iter()
    .filter(|t| *t == "consent.revoked")
    .count();
  assert_eq!(revoked, 2);
  assert!(event_types(h).contains(&"consent.updated".to_string()));
}

pub fn renewal_of_a_consent_that_ended_meanwhile_creates_a_new_one(h: &mut dyn Harness) {
  let scope = setup(h);
  let s = session(h, &scope, json!({}), T0).unwrap();
  let c = sessions::complete(h.tx(), &scope, &s.session_id, grant(100), T0).unwrap();
  let r = session(h, &scope, json!({"arrangement_id": c.arrangement_id}), T0).unwrap();
  lifecycle::revoke(h.tx(), &scope, &c.arrangement_id, T0 + 1).unwrap();
  let fresh = sessions::complete(
    h.tx(),
    &scope,
    &r.session_id,
    parse_completion(&json!({"account_ids": ["acc1"]})).unwrap(),
    T0 + 2,
  )
  .unwrap();
  assert_ne!(fresh.arrangement_id, c.arrangement_id);
  assert!(fresh.active);
  assert_eq!(fresh.institution_id, "bank");
  let data = h
    .events()
    .into_iter()
    .rfind(|(t, _)| t == "consent.received")
    .unwrap()
    .1;
  assert_eq!(data["renewal_of"], json!(c.arrangement_id));
}

pub fn account_deletion_and_merge(h: &mut dyn Harness) {
  let scope = setup(h);
  let s = session(h, &scope, json!({"linked_account_id": "u2"}), T0).unwrap();
  let c = sessions::complete(h.tx(), &scope, &s.session_id, grant(100), T0).unwrap();
  let s = session(h, &scope, json!({"linked_account_id": "u2"}), T0).unwrap();
  let lapsing = sessions::complete(h.tx(), &scope, &s.session_id, grant(1), T0).unwrap();
  let pending = session(h, &scope, json!({"linked_account_id": "u2"}), T0).unwrap();
  let u1 = accounts::find(h.tx(), &scope, "u1").unwrap().pk;
  let u2 = accounts::find(h.tx(), &scope, "u2").unwrap().pk;
  assert_eq!(
    lifecycle::move_consents(h.tx(), &scope, u2, u2, T0)
      .unwrap()
      .len(),
    0
  );
  assert_eq!(
    lifecycle::move_consents(h.tx(), &scope, u2, 999, T0)
      .unwrap_err()
      .code(),
    "NOT_FOUND"
  );
  assert_eq!(
    lifecycle::move_consents(h.tx(), &scope, u2, u1, T0 + 5_000)
      .unwrap()
      .len(),
    2
  );
  let (moved, _) = lifecycle::get(h.tx(), &scope, &c.arrangement_id, T0 + 5_000).unwrap();
  assert_eq!(moved.end_user_id, "u1");
  assert!(moved.active);
  // The lapsed one was recorded as expired first.
  let (l, noticed) = lifecycle::get(h.tx(), &scope, &lapsing.arrangement_id, T0 + 5_000).unwrap();
  assert!(!noticed);
  assert_eq!(l.termination_reason, Some(Termination::Expired));
  // The pending session now completes onto the primary.
  assert_eq!(
    sessions::get(h.tx(), &scope, &pending.session_id, T0)
      .unwrap()
      .linked_account_id,
    "u1"
  );
  // Deleting the primary ends its active consent, keeps the record.
  lifecycle::on_account_deleted(h.tx(), &scope, u1, T0 + 6_000).unwrap();
  h.tx().delete_account(u1).unwrap();
  let (gone, _) = lifecycle::get(h.tx(), &scope, &c.arrangement_id, T0 + 6_000).unwrap();
  assert!(!gone.active);
  assert_eq!(gone.termination_reason, Some(Termination::AccountDeleted));
  assert_eq!(
    sessions::get(h.tx(), &scope, &pending.session_id, T0)
      .unwrap_err()
      .code(),
    "NOT_FOUND"
  );
  let types = event_types(h);
  assert_eq!(types.iter().filter(|t| *t == "consent.updated").count(), 2);
  assert_eq!(types.iter().filter(|t| *t == "consent.revoked").count(), 2);
}

//! Auth sessions and consents (Fiskil): the session state machine and single use, consent
//! creation, renewal and ending, expiry (read-through and recorded once), access stamps, and
//! what account deletion and merges do to consents. The pure state machines are in [`rules`];
//! the operations in [`sessions`] and [`lifecycle`] run them inside one transaction over
//! [`ConsentRows`]. Types and input parsing are in `crate::consents`.
//!
//! Every change of state is a conditional row update (`... WHERE state = 'pending'`,
//! `... WHERE active`) whose answer says whether this transaction made it; only then is its
//! event appended. So a transition happens, and is announced, exactly once even when several
//! clients race (SQLite runs writes one at a time; PostgreSQL's SERIALIZABLE retry makes the
//! loser run again and see the winner's row).

pub mod lifecycle;
pub mod rules;
pub mod sessions;
#[cfg(test)]
pub(crate) mod tests;

pub use lifecycle::{move_consents, move_listed_consents};

use super::accounts::{AccountCascade, AccountRows};
use super::events::EventLog;
use super::Scope;
use crate::consents::{Consent, SessionState};
use crate::error::Result;

/// A stored auth session (the session id itself is never stored, only its hash).
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRow {
  pub pk: i64,
  pub account_pk: i64,
  /// Public record id.
  pub oid: String,
  /// The account's id (read through `account_pk`; ignored on insert).
  pub linked_account_id: String,
  pub redirect_uri: Option<String>,
  pub cancel_uri: Option<String>,
  pub institution_id: Option<String>,
  pub permissions: Option<Vec<String>>,
  pub arrangement_id: Option<String>,
  pub state: SessionState,
  pub error_type: Option<String>,
  pub consent_id: Option<String>,
  pub created_at: i64,
  pub expires_at: i64,
  pub finished_at: Option<i64>,
}

/// A stored consent, as recorded (not adjusted for a lapse: see `Consent::seen_at`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConsentRow {
  pub pk: i64,
  /// `None` once the account was deleted (the consent is kept for audit).
  pub account_pk: Option<i64>,
  pub consent: Consent,
}

/// The auth_sessions and consents tables. Rows in, rows out: no rule here. Booleans answer
/// whether a conditional update changed its row.
pub trait ConsentRows {
  /// The session of the scope whose id hashes to `session_hash`.
  fn find_session(&mut self, scope_id: i64, session_hash: &[u8]) -> Result<Option<SessionRow>>;
  /// Adds a pending session (its `pk` and `linked_account_id` are ignored).
  fn insert_session(&mut self, scope_id: i64, session_hash: &[u8], row: &SessionRow) -> Result<()>;
  /// Moves session `pk` to `to` with the given fields, only if it is still pending.
  fn finish_session(
    &mut self,
    pk: i64,
    to: SessionState,
    error_type: Option<&str>,
    consent_id: Option<&str>,
    now: i64,
  ) -> Result<bool>;
  /// The consent `arrangement_id` of the scope, with the account's current email.
  fn find_consent(&mut self, scope_id: i64, arrangement_id: &str) -> Result<Option<ConsentRow>>;
  /// Adds an active consent for `account_pk` (its `end_user_email`, `last_accessed` and
  /// `termination_reason` are ignored).
  fn insert_consent(&mut self, scope_id: i64, account_pk: i64, c: &Consent) -> Result<()>;
  /// Writes the grant fields (institution name/logo/type, account ids, permissions, duration,
  /// `last_consent`, `expires_at`) of consent `pk`, only if it is still active.
  fn renew_consent(&mut self, pk: i64, c: &Consent, now: i64) -> Result<bool>;
  /// Records the end of an active consent (`active` off, the reason, `terminated_at`), only if
  /// it is still active.
  fn end_consent(
    &mut self,
    scope_id: i64,
    arrangement_id: &str,
    reason: &str,
    ended_at: i64,
    now: i64,
  ) -> Result<bool>;
  /// Active consents of the scope (or of one account) whose `expires_at` is at or before `now`,
  /// by expiry then insertion.
  fn due_consents(
    &mut self,
    scope_id: i64,
    account_pk: Option<i64>,
    now: i64,
  ) -> Result<Vec<String>>;
  /// Consents of the scope (or of one account), in insertion order; with `active`, only those
  /// that are (`Some(true)`: recorded active and `expires_at` after `now`) or are not.
  fn list_consents(
    &mut self,
    scope_id: i64,
    account_pk: Option<i64>,
    active: Option<bool>,
    now: i64,
  ) -> Result<Vec<ConsentRow>>;
  /// The account's consents (only the recorded-active ones with `active_only`), in insertion
  /// order.
  fn consents_of(
    &mut self,
    scope_id: i64,
    account_pk: i64,
    active_only: bool,
  ) -> Result<Vec<String>>;
  /// Gives every consent and auth session of account `from_pk` to `to_pk` (`end_user_id`
  /// becomes `to_id`).
  fn move_all_consents(
    &mut self,
    scope_id: i64,
    from_pk: i64,
    to_pk: i64,
    to_id: &str,
    now: i64,
  ) -> Result<()>;
  /// Gives consent `arrangement_id` to `to_pk` if `from_pk` holds it.
  fn move_consent(
    &mut self,
    scope_id: i64,
    arrangement_id: &str,
    from_pk: i64,
    to_pk: i64,
    to_id: &str,
    now: i64,
  ) -> Result<bool>;
  /// Stamps `last_accessed`.
  fn set_last_accessed(&mut self, scope_id: i64, arrangement_id: &str, now: i64) -> Result<()>;
}

/// What the consent operations need from their transaction.
pub trait ConsentTx: ConsentRows + AccountRows + EventLog {}

impl<T: ConsentRows + AccountRows + EventLog + ?Sized> ConsentTx for T {}

/// Consents' part of deleting or merging an account (`domain::accounts::delete`,
/// `domain::identities`), for every transaction that has consent rows.
impl<T: ConsentTx + ?Sized> AccountCascade for T {
  fn end_consents_of_deleted_account(
    &mut self,
    scope: &Scope,
    account_pk: i64,
    now_ms: i64,
  ) -> Result<()> {
    lifecycle::on_account_deleted(self, scope, account_pk, now_ms).map(|_| ())
  }

  fn move_consents_of_merged_account(
    &mut self,
    scope: &Scope,
    from_pk: i64,
    to_pk: i64,
    now_ms: i64,
  ) -> Result<Vec<String>> {
    lifecycle::move_consents(self, scope, from_pk, to_pk, now_ms)
  }

  fn move_listed_consents(
    &mut self,
    scope: &Scope,
    arrangement_ids: &[String],
    from_pk: i64,
    to_pk: i64,
    reason: &str,
    now_ms: i64,
  ) -> Result<()> {
    lifecycle::move_listed_consents(self, scope, arrangement_ids, from_pk, to_pk, reason, now_ms)
      .map(|_| ())
  }
}

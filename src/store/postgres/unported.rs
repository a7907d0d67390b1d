//! The store traits whose rules still sit in SQLite-only modules (`store::{identities,
//! consents}`): on PostgreSQL they answer
//! `STORAGE_ERROR` until they move onto the row traits.

use super::PgStore;
use crate::accounts::Account;
use crate::consents::{AuthSession, Completion, Consent, ConsentFilter, SessionInput};
use crate::error::Error;
use crate::identities::{Identity, IdentityInput, LinkSuggestion, LinkTarget, UdfPolicy};
use crate::store::{ConsentStore, IdentityStore, Pending, Scope};

fn not_yet<T>() -> Pending<T> {
  Pending::ready(Err(Error::storage(
    "storage error: this call is not available on PostgreSQL in this build yet",
  )))
}

impl IdentityStore for PgStore {
  fn link_identity(&self, _: &Scope, _: String, _: IdentityInput) -> Pending<Vec<Identity>> {
    not_yet()
  }
  fn link_accounts(
    &self,
    _: &Scope,
    _: String,
    _: LinkTarget,
    _: UdfPolicy,
    _: i64,
  ) -> Pending<Account> {
    not_yet()
  }
  fn unlink_identity(&self, _: &Scope, _: String, _: String, _: String) -> Pending<Vec<Identity>> {
    not_yet()
  }
  fn accounts_by_email(&self, _: &Scope, _: String) -> Pending<Vec<Account>> {
    not_yet()
  }
  fn link_suggestions(&self, _: &Scope, _: String) -> Pending<Vec<LinkSuggestion>> {
    not_yet()
  }
}

impl ConsentStore for PgStore {
  fn create_auth_session(&self, _: &Scope, _: SessionInput) -> Pending<AuthSession> {
    not_yet()
  }
  fn get_auth_session(&self, _: &Scope, _: String) -> Pending<AuthSession> {
    not_yet()
  }
  fn complete_auth_session(&self, _: &Scope, _: String, _: Completion) -> Pending<Consent> {
    not_yet()
  }
  fn cancel_auth_session(&self, _: &Scope, _: String, _: String) -> Pending<AuthSession> {
    not_yet()
  }
  fn list_consents(&self, _: &Scope, _: ConsentFilter) -> Pending<Vec<Consent>> {
    not_yet()
  }
  fn get_consent(&self, _: &Scope, _: String) -> Pending<Consent> {
    not_yet()
  }
  fn revoke_consent(&self, _: &Scope, _: String) -> Pending<Consent> {
    not_yet()
  }
  fn expire_consents(&self, _: &Scope) -> Pending<Vec<String>> {
    not_yet()
  }
  fn record_consent_access(&self, _: &Scope, _: String) -> Pending<Consent> {
    not_yet()
  }
}

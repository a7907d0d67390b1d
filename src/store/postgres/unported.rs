//! The store trait whose rules still sit in a SQLite-only module (`store::consents`): on
//! PostgreSQL it answers
//! `STORAGE_ERROR` until they move onto the row traits.

use super::PgStore;
use crate::consents::{AuthSession, Completion, Consent, ConsentFilter, SessionInput};
use crate::error::Error;
use crate::store::{ConsentStore, Pending, Scope};

fn not_yet<T>() -> Pending<T> {
  Pending::ready(Err(Error::storage(
    "storage error: this call is not available on PostgreSQL in this build yet",
  )))
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

//! The store traits whose rules still sit in SQLite-only modules (`store::{accounts,
//! identities, consents, end_users}`): on PostgreSQL they answer
//! `STORAGE_ERROR` until they move onto the row traits.

use super::PgStore;
use crate::accounts::{
  Account, AccountInput, Credentials, KeysetPage, ListFilter, OffsetPage, UpsertOutcome, WriteMode,
};
use crate::consents::{AuthSession, Completion, Consent, ConsentFilter, SessionInput};
use crate::end_users::EndUserPatch;
use crate::error::Error;
use crate::identities::{Identity, IdentityInput, LinkSuggestion, LinkTarget, UdfPolicy};
use crate::store::{AccountStore, ConsentStore, EndUserStore, IdentityStore, Pending, Scope};

fn not_yet<T>() -> Pending<T> {
  Pending::ready(Err(Error::storage(
    "storage error: this call is not available on PostgreSQL in this build yet",
  )))
}

impl AccountStore for PgStore {
  fn write_account(&self, _: &Scope, _: AccountInput, _: WriteMode) -> Pending<UpsertOutcome> {
    not_yet()
  }
  fn get_account(&self, _: &Scope, _: String) -> Pending<Account> {
    not_yet()
  }
  fn delete_account(&self, _: &Scope, _: String) -> Pending<()> {
    not_yet()
  }
  fn page_accounts(&self, _: &Scope, _: ListFilter, _: i64, _: i64) -> Pending<OffsetPage> {
    not_yet()
  }
  fn list_accounts(&self, _: &Scope, _: ListFilter, _: Option<i64>, _: i64) -> Pending<KeysetPage> {
    not_yet()
  }
  fn get_credentials(&self, _: &Scope, _: String) -> Pending<Option<Credentials>> {
    not_yet()
  }
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

impl EndUserStore for PgStore {
  fn create_end_user(&self, _: &Scope, _: String, _: EndUserPatch) -> Pending<Account> {
    not_yet()
  }
  fn update_end_user(&self, _: &Scope, _: String, _: EndUserPatch) -> Pending<()> {
    not_yet()
  }
  fn end_users_by_email(&self, _: &Scope, _: String) -> Pending<Vec<Account>> {
    not_yet()
  }
}

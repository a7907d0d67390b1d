//! The store traits whose rules still sit in SQLite-only modules (`store::{identities,
//! apikeys, webhooks, admin}`): on PostgreSQL they answer
//! `STORAGE_ERROR` until they move onto the row traits.

use std::path::PathBuf;

use super::PgStore;
use crate::accounts::Account;
use crate::apikeys::{AccessGrant, ApiKeyInfo, KeyFilter, NewApiKey};
use crate::error::Error;
use crate::identities::{Identity, IdentityInput, LinkSuggestion, LinkTarget, UdfPolicy};
use crate::store::{
  AdminStore, ApiKeyStore, BackupInfo, IdentityStore, Pending, Scope, SigningKeyInfo, Stats,
  WebhookStore,
};
use crate::webhooks::{
  AttemptOutcome, ClaimOptions, Claimed, CreatedWebhook, Delivery, DeliveryPage, DeliveryQuery,
  Webhook, WebhookFilter, WebhookInput,
};

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

impl AdminStore for PgStore {
  fn backup(&self, _: PathBuf) -> Pending<BackupInfo> {
    Pending::ready(Err(Error::validation(
      "destPath",
      "backup() copies a SQLite file; back up a PostgreSQL store with pg_dump",
    )))
  }
  fn stats(&self, _: &Scope) -> Pending<Stats> {
    not_yet()
  }
  fn signing_keys(&self, _: &Scope) -> Pending<Vec<SigningKeyInfo>> {
    not_yet()
  }
}

impl ApiKeyStore for PgStore {
  fn insert_api_key(&self, _: &Scope, _: NewApiKey) -> Pending<ApiKeyInfo> {
    not_yet()
  }
  fn list_api_keys(&self, _: KeyFilter) -> Pending<Vec<ApiKeyInfo>> {
    not_yet()
  }
  fn revoke_api_key(&self, _: String, _: i64) -> Pending<ApiKeyInfo> {
    not_yet()
  }
  fn find_api_key(&self, _: [u8; 32]) -> Pending<Option<ApiKeyInfo>> {
    not_yet()
  }
  fn api_key_secret(&self, _: String) -> Pending<Option<(ApiKeyInfo, Vec<u8>)>> {
    not_yet()
  }
  fn insert_access_token(&self, _: [u8; 32], _: AccessGrant, _: i64) -> Pending<bool> {
    not_yet()
  }
  fn find_access_token(&self, _: [u8; 32], _: String, _: i64) -> Pending<Option<AccessGrant>> {
    not_yet()
  }
  fn find_scope(&self, _: String, _: String) -> Pending<Option<Scope>> {
    not_yet()
  }
}

impl WebhookStore for PgStore {
  fn create_webhook(&self, _: &Scope, _: WebhookInput) -> Pending<CreatedWebhook> {
    not_yet()
  }
  fn list_webhooks(&self, _: WebhookFilter) -> Pending<Vec<Webhook>> {
    not_yet()
  }
  fn delete_webhook(&self, _: String) -> Pending<Webhook> {
    not_yet()
  }
  fn list_deliveries(&self, _: String, _: DeliveryQuery) -> Pending<DeliveryPage> {
    not_yet()
  }
  fn claim_deliveries(&self, _: ClaimOptions) -> Pending<Vec<Claimed>> {
    not_yet()
  }
  fn record_attempt(&self, _: i64, _: AttemptOutcome) -> Pending<Delivery> {
    not_yet()
  }
  fn locate_auth_session(&self, _: String) -> Pending<Option<(String, String)>> {
    not_yet()
  }
}

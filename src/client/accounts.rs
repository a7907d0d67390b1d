//! Linked-account calls of a client (Cobalt's `createLinkedAccount`, `upsertLinkedAccount`,
//! `getLinkedAccountById`, ...): input parsing, then one job per call on the store with the
//! rules of `domain::accounts`.

use serde_json::Value;

use super::Vault;
use crate::accounts::{
  self, Account, Credentials, KeysetPage, OffsetPage, UpsertOutcome, WriteMode,
};
use crate::clock::now_ms;
use crate::domain::accounts as rules;
use crate::error::Result;
use crate::input::{self, Fields};
use crate::store::{self, Pending};

fn account_id(v: &Value) -> Result<String> {
  input::id(Some(v), "linked_account_id", accounts::MAX_ID_CHARS)
}

impl Vault {
  /// `createLinkedAccount(payload)`.
  pub fn create_linked_account(&self, payload: &Value) -> Pending<UpsertOutcome> {
    Pending::flatten(
      accounts::parse_payload(payload).map(|input| self.write_account(input, WriteMode::Create)),
    )
  }

  /// `upsertLinkedAccount(payload, { ifVersion })`.
  pub fn upsert_linked_account(
    &self,
    payload: &Value,
    options: Option<&Value>,
  ) -> Pending<UpsertOutcome> {
    Pending::flatten((|| {
      let input = accounts::parse_payload(payload)?;
      let if_version = Fields::new(options, "options")?.int("ifVersion", 0, i64::MAX)?;
      Ok(self.write_account(input, WriteMode::Upsert { if_version }))
    })())
  }

  fn write_account(
    &self,
    input: accounts::AccountInput,
    mode: WriteMode,
  ) -> Pending<UpsertOutcome> {
    let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
    store::write_point(&*self.store, move |tx| {
      rules::write(tx, &sealer, &scope, input.clone(), mode, now_ms())
    })
  }

  pub fn get_linked_account_by_id(&self, id: &Value) -> Pending<Account> {
    Pending::flatten(account_id(id).map(|id| self.get_account(id)))
  }

  /// The account `id` of this client's scope (`NOT_FOUND` if none).
  pub(crate) fn get_account(&self, id: String) -> Pending<Account> {
    let scope = self.scope.clone();
    store::read_point(&*self.store, move |tx| rules::get(tx, &scope, &id))
  }

  pub fn delete_linked_account(&self, id: &Value) -> Pending<()> {
    Pending::flatten(account_id(id).map(|id| self.delete_account(id)))
  }

  /// Deletes the account `id` of this client's scope, with its cascade.
  pub(crate) fn delete_account(&self, id: String) -> Pending<()> {
    let scope = self.scope.clone();
    store::write(&*self.store, move |tx| {
      rules::delete(tx, &scope, &id, now_ms())
    })
  }

  pub fn get_all_linked_accounts(&self, query: Option<&Value>) -> Pending<OffsetPage> {
    Pending::flatten(
      accounts::parse_page_query(query).map(|(filter, page, limit)| {
        let scope = self.scope.clone();
        store::read(&*self.store, move |tx| {
          rules::page(tx, &scope, &filter, page, limit)
        })
      }),
    )
  }

  pub fn list_linked_accounts(&self, query: Option<&Value>) -> Pending<KeysetPage> {
    Pending::flatten(
      accounts::parse_keyset_query(query).map(|(filter, after, limit)| {
        let scope = self.scope.clone();
        store::read(&*self.store, move |tx| {
          rules::list(tx, &scope, &filter, after, limit)
        })
      }),
    )
  }

  pub fn get_linked_account_credentials(&self, id: &Value) -> Pending<Option<Credentials>> {
    Pending::flatten(account_id(id).map(|id| {
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      store::read_point(&*self.store, move |tx| {
        rules::credentials(tx, &sealer, &scope, &id)
      })
    }))
  }
}

//! Auth0's identity-linking calls of a client (`linkIdentity`, `linkAccounts`,
//! `unlinkIdentity`, `getLinkedAccountsByEmail`, `getLinkSuggestions`): input parsing, then one
//! job per call on the store with the rules of `domain::identities`.

use serde_json::Value;

use super::Vault;
use crate::accounts::{self, Account};
use crate::clock::now_ms;
use crate::domain::identities as rules;
use crate::error::{Error, Result};
use crate::identities::{
  normalize_email, parse_email, parse_identity, parse_link_options, parse_link_target,
  parse_provider, parse_user_id, Identity, LinkSuggestion, LinkTarget,
};
use crate::input;
use crate::store::{self, Pending};

fn account_id(v: &Value) -> Result<String> {
  input::id(Some(v), "linked_account_id", accounts::MAX_ID_CHARS)
}

impl Vault {
  /// `linkIdentity(linked_account_id, identity)` → the account's identities.
  pub fn link_identity(&self, id: &Value, identity: &Value) -> Pending<Vec<Identity>> {
    Pending::flatten((|| {
      let id = account_id(id)?;
      let input = parse_identity(identity)?;
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      Ok(store::write(&*self.store, move |tx| {
        rules::link(tx, &sealer, &scope, &id, input.clone(), now_ms())
      }))
    })())
  }

  /// `linkAccounts(primary_id, secondary_id | { link_with }, { udf })` → the merged primary.
  pub fn link_accounts(
    &self,
    primary: &Value,
    secondary: &Value,
    options: Option<&Value>,
  ) -> Pending<Account> {
    Pending::flatten((|| {
      let primary = input::id(Some(primary), "primary_id", accounts::MAX_ID_CHARS)?;
      let target = parse_link_target(secondary)?;
      let policy = parse_link_options(options)?;
      if target == LinkTarget::Account(primary.clone()) {
        return Err(Error::validation(
          "secondary_id",
          "an account cannot be linked to itself",
        ));
      }
      let (sealer, scope, skew) = (
        self.sealer.clone(),
        self.scope.clone(),
        self.tokens.policy.skew,
      );
      Ok(store::write(&*self.store, move |tx| {
        rules::link_accounts(
          tx,
          &sealer,
          &scope,
          &primary,
          &target,
          policy,
          skew,
          now_ms(),
        )
      }))
    })())
  }

  /// `unlinkIdentity(linked_account_id, provider, user_id)` → the remaining identities.
  pub fn unlink_identity(
    &self,
    id: &Value,
    provider: &Value,
    user_id: &Value,
  ) -> Pending<Vec<Identity>> {
    Pending::flatten((|| {
      let id = account_id(id)?;
      let provider = parse_provider(Some(provider))?;
      let user_id = parse_user_id(Some(user_id))?;
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      Ok(store::write(&*self.store, move |tx| {
        rules::unlink(tx, &sealer, &scope, &id, &provider, &user_id, now_ms())
      }))
    })())
  }

  /// `getLinkedAccountsByEmail(email)`: accounts with an identity of that email, compared after
  /// trimming and Unicode lowercasing.
  pub fn get_linked_accounts_by_email(&self, email: &Value) -> Pending<Vec<Account>> {
    Pending::flatten((|| {
      if email.is_null() {
        return Err(Error::validation("email", "email is required"));
      }
      let email = parse_email(email, "email")?;
      Ok(self.accounts_by_email(normalize_email(&email)))
    })())
  }

  /// Accounts whose end-user email or an identity's email is `email_norm` (normalized).
  pub(crate) fn accounts_by_email(&self, email_norm: String) -> Pending<Vec<Account>> {
    let scope = self.scope.clone();
    store::read(&*self.store, move |tx| {
      rules::by_email(tx, &scope, &email_norm)
    })
  }

  /// `getLinkSuggestions(linked_account_id)`: other accounts sharing an email verified on both
  /// sides.
  pub fn get_link_suggestions(&self, id: &Value) -> Pending<Vec<LinkSuggestion>> {
    Pending::flatten(account_id(id).map(|id| {
      let scope = self.scope.clone();
      store::read(&*self.store, move |tx| rules::suggestions(tx, &scope, &id))
    }))
  }
}

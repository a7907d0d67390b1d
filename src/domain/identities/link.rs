//! `linkIdentity`: attach an identity, refresh it, or merge the account whose own identity it is.

use serde_json::json;

use super::{already_linked, exists, holder, insert, merge, update, Holder, IdentityTx};
use crate::crypto::Sealer;
use crate::domain::accounts;
use crate::domain::events::types;
use crate::domain::keys;
use crate::domain::Scope;
use crate::error::{Error, Result};
use crate::identities::{Identity, IdentityInput, UdfPolicy};
use crate::users;

/// What `linkIdentity(account_id, { provider, user_id })` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkAction {
  /// Attach it to the account.
  Insert,
  /// It is already on the account: refresh its profile fields.
  Refresh,
  /// It is the own identity of this other existing account: merge that account in, as Auth0
  /// does when linking an existing user.
  Merge(String),
}

/// Decides a link (Auth0 semantics on own identities, `crate::users`). `owner_exists` says
/// whether the account this identity is the own identity of (`users::account_of_identity`)
/// exists.
pub fn link_action(
  account_id: &str,
  provider: &str,
  user_id: &str,
  holder: Holder,
  owner_exists: bool,
) -> Result<LinkAction> {
  match holder {
    Holder::ThisAccount => return Ok(LinkAction::Refresh),
    Holder::Another => return Err(already_linked(provider, user_id)),
    Holder::Nobody => {}
  }
  let owner = users::account_of_identity(provider, user_id);
  if !users::is_own(&owner, provider, user_id) {
    return Ok(LinkAction::Insert);
  }
  if owner == account_id {
    return Err(Error::validation(
      "user_id",
      "this is the account's own identity: an account cannot be linked to itself",
    ));
  }
  Ok(if owner_exists {
    LinkAction::Merge(owner)
  } else {
    LinkAction::Insert
  })
}

/// `linkIdentity`: attaches the identity, refreshes it when the account holds it already, or,
/// when it is the own identity of another existing account, merges that account in (Auth0's
/// link of an existing user; [`link_action`] decides). Returns the account's identities.
pub fn link(
  tx: &mut (impl IdentityTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  account_id: &str,
  input: IdentityInput,
  now: i64,
) -> Result<Vec<Identity>> {
  // A link may merge an account, whose credentials are re-sealed under the database's key.
  keys::sync(tx, sealer)?;
  let account = accounts::find(tx, scope, account_id)?;
  let found = tx.find_identity(scope.id, &input.provider, &input.user_id)?;
  let owner = users::account_of_identity(&input.provider, &input.user_id);
  let owner_exists = owner != account_id && exists(tx, scope.id, &owner)?;
  let action = link_action(
    account_id,
    &input.provider,
    &input.user_id,
    holder(&found, account.pk),
    owner_exists,
  )?;
  let changed = match (action, found) {
    (LinkAction::Merge(secondary_id), _) => {
      let secondary = accounts::find(tx, scope, &secondary_id)?;
      merge::merge_rows(
        tx,
        sealer,
        scope,
        &account,
        &secondary,
        UdfPolicy::default(),
        Some(&input),
        now,
      )?;
      return tx.identities_of(account.pk);
    }
    (LinkAction::Refresh, Some(found)) => {
      let updated = input.apply(Some(&found.identity), now);
      let changed = updated != found.identity;
      if changed {
        update(tx, found.pk, &updated)?;
      }
      changed
    }
    _ => {
      insert(tx, scope.id, account.pk, &input.apply(None, now), None)?;
      true
    }
  };
  if changed {
    tx.touch_account(account.pk, now)?;
    tx.append_event(
      scope.id,
      types::IDENTITY_LINKED,
      Some(account_id),
      &json!({ "provider": input.provider, "user_id": input.user_id }),
      now,
    )?;
  }
  tx.identities_of(account.pk)
}

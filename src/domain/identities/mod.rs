//! Identity linking (Auth0's `identities[]` model): linking an identity to an account
//! ([`link`]), merging one account into another with a restorable merge record ([`merge`]),
//! unlinking an identity into a standalone or restored account ([`unlink`]), and the look-ups
//! by email and link suggestions ([`queries`]). Input parsing and the identity types are in
//! `crate::identities`; rows come and go through [`IdentityRows`] (and the account rows through
//! `domain::accounts::AccountRows`).
//!
//! `(provider, user_id)` is unique within a scope: the engines enforce it with a unique index,
//! and an insert that loses a race reports it (`IdentityRows::insert_identity` returns `false`)
//! instead of failing with a storage error, so the loser gets `IDENTITY_ALREADY_LINKED`.

pub mod link;
pub mod merge;
pub mod queries;
#[cfg(test)]
mod tests;
pub mod unlink;

pub use link::{link, link_action, LinkAction};
pub use merge::{link_accounts, merge_udf_by_policy, own_identity_plan, OwnIdentityPlan};
pub use queries::{by_email, suggestions};
pub use unlink::{restore_plan, standalone_id, taken, unlink, OwnRow, RestorePlan};

use super::accounts::{AccountRow, AccountTx};
use crate::error::{Error, ErrorKind, Result};
use crate::identities::{normalize_email, Identity, LinkSuggestion};

/// A stored identity, as found by `(provider, user_id)`.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityRow {
  pub pk: i64,
  pub account_pk: i64,
  /// The merge that brought it to its account, if any.
  pub merge_pk: Option<i64>,
  pub identity: Identity,
}

/// A merge record to store (see `merge`): the secondary's pre-merge state as JSON text, its
/// credentials sealed to the record (`domain::keys::merge_aad`).
pub struct NewMerge<'a> {
  pub primary_pk: i64,
  pub oid: &'a str,
  pub secondary_id: &'a str,
  pub state: &'a str,
  pub credentials: Option<&'a [u8]>,
  pub policy: &'a str,
  pub merged_at: i64,
}

/// A merge record not restored yet.
pub struct MergeRecord {
  pub pk: i64,
  pub oid: String,
  pub state: String,
  pub credentials: Option<Vec<u8>>,
}

/// The identities and account_merges tables. Rows in, rows out: no rule here.
pub trait IdentityRows {
  /// The identity `(provider, user_id)` of the scope.
  fn find_identity(
    &mut self,
    scope_id: i64,
    provider: &str,
    user_id: &str,
  ) -> Result<Option<IdentityRow>>;
  /// Adds an identity to an account (`email_norm`: its email normalized, for look-ups).
  /// `false` when the scope already holds `(provider, user_id)` (a concurrent link won): nothing
  /// was written and the transaction goes on.
  fn insert_identity(
    &mut self,
    scope_id: i64,
    account_pk: i64,
    identity: &Identity,
    email_norm: Option<&str>,
    merge_pk: Option<i64>,
  ) -> Result<bool>;
  /// Rewrites the profile fields of identity `pk` (connection, is_social, email, email_norm,
  /// email_verified, profile_data, connection_id).
  fn update_identity(
    &mut self,
    pk: i64,
    identity: &Identity,
    email_norm: Option<&str>,
  ) -> Result<()>;
  fn delete_identity(&mut self, pk: i64) -> Result<()>;
  /// Moves identity `pk` to account `to_pk` as a directly linked identity (no merge).
  fn move_identity(&mut self, pk: i64, to_pk: i64, linked_at: i64) -> Result<()>;
  /// Moves identity `pk` to account `to_pk`, keeping the merge that brought it.
  fn move_merged_identity(&mut self, pk: i64, to_pk: i64, linked_at: i64) -> Result<()>;
  /// Moves every identity of account `from_pk` to `to_pk`.
  fn move_identities(&mut self, from_pk: i64, to_pk: i64, linked_at: i64) -> Result<()>;
  /// Records merge `merge_pk` on the identities of `account_pk` that came by no merge.
  fn stamp_merge(&mut self, account_pk: i64, merge_pk: i64) -> Result<()>;
  /// The identities `(pk, provider, user_id)` of account `account_pk` brought by `merge_pk`.
  fn identities_of_merge(
    &mut self,
    account_pk: i64,
    merge_pk: i64,
  ) -> Result<Vec<(i64, String, String)>>;
  /// Bumps the account's `__v` and `updated_at` (its identities are part of every read).
  fn touch_account(&mut self, pk: i64, now: i64) -> Result<()>;
  /// The pks of the merge records held by account `primary_pk`, in order.
  fn merges_of(&mut self, primary_pk: i64) -> Result<Vec<i64>>;
  /// Stores a merge record; returns its pk.
  fn insert_merge(&mut self, scope_id: i64, merge: &NewMerge<'_>) -> Result<i64>;
  /// Hands every merge record of `from_pk` to `to_pk`.
  fn move_merges(&mut self, from_pk: i64, to_pk: i64) -> Result<()>;
  /// Hands record `merge_pk` from `from_pk` to `to_pk` if it is unrestored and held by
  /// `from_pk`; whether it moved.
  fn move_held_merge(&mut self, merge_pk: i64, from_pk: i64, to_pk: i64) -> Result<bool>;
  /// Record `merge_pk` if it is not restored yet.
  fn unrestored_merge(&mut self, merge_pk: i64) -> Result<Option<MergeRecord>>;
  fn mark_restored(&mut self, merge_pk: i64, now: i64, restored_as: &str) -> Result<()>;
  /// Accounts of the scope with the end-user email or an identity email `email_norm`, by pk.
  fn accounts_with_email(&mut self, scope_id: i64, email_norm: &str) -> Result<Vec<AccountRow>>;
  /// Other accounts sharing an email verified on both sides with account `pk`, by account pk
  /// then email.
  fn link_suggestions(&mut self, pk: i64) -> Result<Vec<LinkSuggestion>>;
}

/// What the identity operations need from their transaction.
pub trait IdentityTx: AccountTx + IdentityRows {}

impl<T: AccountTx + IdentityRows + ?Sized> IdentityTx for T {}

/// Which account holds an identity now, as seen from the account being linked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
  Nobody,
  ThisAccount,
  Another,
}

/// Who holds `found`, seen from the account `pk`.
fn holder(found: &Option<IdentityRow>, pk: i64) -> Holder {
  match found {
    None => Holder::Nobody,
    Some(f) if f.account_pk == pk => Holder::ThisAccount,
    Some(_) => Holder::Another,
  }
}

fn already_linked(provider: &str, user_id: &str) -> Error {
  Error::new(
    ErrorKind::IdentityAlreadyLinked,
    format!("identity {provider}|{user_id} is already linked to another account"),
  )
}

fn email_norm(identity: &Identity) -> Option<String> {
  identity.email.as_deref().map(normalize_email)
}

/// Adds `identity` to account `account_pk`; `IDENTITY_ALREADY_LINKED` if a concurrent link
/// took it first.
fn insert(
  tx: &mut (impl IdentityTx + ?Sized),
  scope_id: i64,
  account_pk: i64,
  identity: &Identity,
  merge_pk: Option<i64>,
) -> Result<()> {
  let norm = email_norm(identity);
  if tx.insert_identity(scope_id, account_pk, identity, norm.as_deref(), merge_pk)? {
    Ok(())
  } else {
    Err(already_linked(&identity.provider, &identity.user_id))
  }
}

fn update(tx: &mut (impl IdentityTx + ?Sized), pk: i64, identity: &Identity) -> Result<()> {
  let norm = email_norm(identity);
  tx.update_identity(pk, identity, norm.as_deref())
}

/// Whether account `id` exists in the scope.
fn exists(tx: &mut (impl IdentityTx + ?Sized), scope_id: i64, id: &str) -> Result<bool> {
  Ok(tx.find_account(scope_id, id)?.is_some())
}

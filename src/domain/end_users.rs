//! Fiskil's end users are linked accounts with `email`, `phone` and `abn`: creating one,
//! patching its fields (`__v` and an event naming the changed fields, never their values), and
//! finding them by email. Parsing and validation are in `crate::end_users`.

use serde_json::json;

use super::accounts::{self, AccountRows, AccountTx};
use super::events::types;
use super::Scope;
use crate::accounts::{Account, AccountInput, Patch};
use crate::crypto::Sealer;
use crate::end_users::{EndUserPatch, Stored};
use crate::error::Result;
use crate::identities::normalize_email;

/// `createEndUser`: a new account `id` holding the fields. It is created as any other (with its
/// `linked_account.created` event); its end-user fields are part of the creation. Nothing is
/// sealed (no `your_app`), so no key sync.
pub fn create(
  tx: &mut (impl AccountTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  id: String,
  patch: &EndUserPatch,
  now: i64,
) -> Result<Account> {
  let (fields, _) = patch.apply(&Stored::default());
  let input = AccountInput {
    id,
    name: fields.name.clone().map_or(Patch::Keep, Patch::Set),
    udf: Vec::new(),
    your_app: Patch::Keep,
  };
  let (mut account, pk) = accounts::create_row(tx, sealer, scope, input, now)?;
  let email_norm = fields.fields.email.as_deref().map(normalize_email);
  tx.set_end_user_fields(pk, &fields.fields, email_norm.as_deref())?;
  account.end_user = fields.fields;
  Ok(account)
}

/// `updateEndUser`: applies the patch to account `id` (`NOT_FOUND` otherwise); a patch that
/// changes nothing writes nothing.
pub fn update(
  tx: &mut (impl AccountTx + ?Sized),
  scope: &Scope,
  id: &str,
  patch: &EndUserPatch,
  now: i64,
) -> Result<()> {
  let mut row = accounts::find(tx, scope, id)?;
  let old = Stored {
    name: row.name.clone(),
    fields: row.end_user.clone(),
  };
  let (new, changed) = patch.apply(&old);
  if changed.is_empty() {
    return Ok(());
  }
  row.version += 1;
  row.updated_at = now;
  row.name = new.name;
  tx.update_account(&row)?;
  let email_norm = new.fields.email.as_deref().map(normalize_email);
  tx.set_end_user_fields(row.pk, &new.fields, email_norm.as_deref())?;
  // Field names only: emails and phone numbers are never put in events.
  tx.append_event(
    scope.id,
    types::ACCOUNT_UPDATED,
    Some(id),
    &json!({ "__v": row.version, "changed": changed }),
    now,
  )?;
  Ok(())
}

/// `getEndUsers({ email })`: accounts whose end-user email, normalized, is `email_norm`, in
/// creation order.
pub fn by_email(
  tx: &mut (impl AccountRows + ?Sized),
  scope: &Scope,
  email_norm: &str,
) -> Result<Vec<Account>> {
  let rows = tx.accounts_by_end_user_email(scope.id, email_norm)?;
  accounts::complete(tx, scope, rows)
}

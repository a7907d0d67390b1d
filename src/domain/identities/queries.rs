//! Look-ups: accounts by email (`getLinkedAccountsByEmail`, `getUsersByEmail`) and link
//! suggestions (`getLinkSuggestions`).

use super::IdentityTx;
use crate::accounts::Account;
use crate::domain::accounts;
use crate::domain::Scope;
use crate::error::Result;
use crate::identities::LinkSuggestion;

/// Accounts whose end-user email or one of whose identities' emails is `email_norm` (already
/// normalized), complete, in creation order.
pub fn by_email(
  tx: &mut (impl IdentityTx + ?Sized),
  scope: &Scope,
  email_norm: &str,
) -> Result<Vec<Account>> {
  let rows = tx.accounts_with_email(scope.id, email_norm)?;
  accounts::complete(tx, scope, rows)
}

/// Other accounts sharing an email verified on both sides. Nothing is ever linked
/// automatically.
pub fn suggestions(
  tx: &mut (impl IdentityTx + ?Sized),
  scope: &Scope,
  account_id: &str,
) -> Result<Vec<LinkSuggestion>> {
  let pk = accounts::find(tx, scope, account_id)?.pk;
  tx.link_suggestions(pk)
}

//! SQL for Fiskil's end users (linked accounts with `email`, `phone`, `abn`). The rules are in
//! `crate::end_users`; these functions only persist, inside the engine's transaction.

use rusqlite::{params, Connection};
use serde_json::json;

use super::accounts::{self, ROW_COLUMNS};
use super::sqlite::events;
use super::{Pending, Scope, SqliteStore};
use crate::accounts::{Account, AccountInput, EndUserFields, Patch, WriteMode};
use crate::clock::now_ms;
use crate::crypto::Sealer;
use crate::domain::events::types;
use crate::end_users::{EndUserPatch, Stored};
use crate::error::Result;
use crate::identities::normalize_email;

/// Fiskil's end users.
pub trait EndUserStore: Send + Sync {
  /// Creates a linked account `id` holding the end-user fields; returns it.
  fn create_end_user(&self, scope: &Scope, id: String, fields: EndUserPatch) -> Pending<Account>;
  /// Applies the patch to an existing account (`NOT_FOUND` otherwise).
  fn update_end_user(&self, scope: &Scope, id: String, fields: EndUserPatch) -> Pending<()>;
  /// Accounts whose end-user email, normalized, is `email_norm`, in creation order.
  fn end_users_by_email(&self, scope: &Scope, email_norm: String) -> Pending<Vec<Account>>;
}

fn set_fields(conn: &Connection, pk: i64, f: &EndUserFields) -> Result<()> {
  conn
    .prepare_cached(
      "UPDATE accounts SET email = ?2, email_norm = ?3, phone = ?4, abn = ?5 WHERE pk = ?1",
    )?
    .execute(params![
      pk,
      f.email,
      f.email.as_deref().map(normalize_email),
      f.phone,
      f.abn
    ])?;
  Ok(())
}

pub fn create(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  id: String,
  patch: EndUserPatch,
  now: i64,
) -> Result<Account> {
  let (fields, _) = patch.apply(&Stored::default());
  let input = AccountInput {
    id,
    name: fields.name.clone().map_or(Patch::Keep, Patch::Set),
    udf: Vec::new(),
    your_app: Patch::Keep,
  };
  // The account is created as any other (with its `linked_account.created` event); its end-user
  // fields are part of the creation, not a later update.
  let mut account = accounts::write(conn, sealer, scope, input, WriteMode::Create, now)?.account;
  let pk = accounts::pk_of(conn, scope, &account.account_id)?;
  set_fields(conn, pk, &fields.fields)?;
  account.end_user = fields.fields;
  Ok(account)
}

pub fn update(
  conn: &Connection,
  scope: &Scope,
  id: &str,
  patch: EndUserPatch,
  now: i64,
) -> Result<()> {
  let row = accounts::find_row(conn, scope, id)?.ok_or_else(|| accounts::not_found(scope, id))?;
  let old = Stored {
    name: row.name.clone(),
    fields: row.end_user.clone(),
  };
  let (new, changed) = patch.apply(&old);
  if changed.is_empty() {
    return Ok(());
  }
  let version = row.version + 1;
  conn
    .prepare_cached("UPDATE accounts SET name = ?2, version = ?3, updated_at = ?4 WHERE pk = ?1")?
    .execute(params![row.pk, new.name, version, now])?;
  set_fields(conn, row.pk, &new.fields)?;
  // Field names only: emails and phone numbers are never put in events.
  events::append(
    conn,
    scope.id,
    types::ACCOUNT_UPDATED,
    Some(id),
    &json!({ "__v": version, "changed": changed }),
    now,
  )?;
  Ok(())
}

pub fn by_email(conn: &Connection, scope: &Scope, email_norm: &str) -> Result<Vec<Account>> {
  let sql = format!(
    "SELECT {ROW_COLUMNS} FROM accounts a WHERE a.scope_id = ? AND a.email_norm = ? ORDER BY a.pk"
  );
  accounts::load_accounts(conn, scope, &sql, &[json!(scope.id), json!(email_norm)])
}

impl EndUserStore for SqliteStore {
  fn create_end_user(&self, scope: &Scope, id: String, fields: EndUserPatch) -> Pending<Account> {
    let (scope, sealer) = (scope.clone(), self.sealer());
    self.write(move |conn| create(conn, &sealer, &scope, id, fields, now_ms()))
  }

  fn update_end_user(&self, scope: &Scope, id: String, fields: EndUserPatch) -> Pending<()> {
    let scope = scope.clone();
    self.write(move |conn| update(conn, &scope, &id, fields, now_ms()))
  }

  fn end_users_by_email(&self, scope: &Scope, email_norm: String) -> Pending<Vec<Account>> {
    let scope = scope.clone();
    self.read(move |conn| by_email(conn, &scope, &email_norm))
  }
}

//! Linked accounts: the upsert diff (what a create or upsert changes, `__v`, the events it
//! appends), reads with UDF rows and identities attached, offset and keyset pages, deletion and
//! its cascade, and the sealed `your_app` credentials. Payload parsing and the account types are
//! in `crate::accounts`; rows come and go through [`AccountRows`].

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::events::{types, EventLog};
use super::keys::{self, MetaRows};
use super::scope::account_not_found;
use super::tokens::TokenTx;
use super::Scope;
use crate::accounts::{
  merge_udf, Account, AccountInput, Credentials, EndUserFields, KeysetPage, ListFilter, OffsetPage,
  Patch, UdfRow, UpsertOutcome, WriteMode,
};
use crate::crypto::{self, Sealer};
use crate::error::{Error, ErrorKind, Result};
use crate::identities::Identity;

/// A stored account row, before its UDF rows and identities are attached.
#[derive(Clone, PartialEq)]
pub struct AccountRow {
  pub pk: i64,
  pub oid: String,
  pub name: Option<String>,
  pub has_app: bool,
  pub app_id: Option<String>,
  /// `your_app.auth_credentials` sealed to (scope, account id): see [`credentials_aad`].
  pub credentials: Option<Vec<u8>>,
  pub created_at: i64,
  pub updated_at: i64,
  pub version: i64,
  pub account_id: String,
  pub end_user: EndUserFields,
}

impl std::fmt::Debug for AccountRow {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("AccountRow")
      .field("pk", &self.pk)
      .field("account_id", &self.account_id)
      .field("version", &self.version)
      .field(
        "credentials",
        &self.credentials.as_ref().map(|_| "<sealed>"),
      )
      .finish_non_exhaustive()
  }
}

/// An account row with what a read returns beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountPieces {
  pub row: AccountRow,
  /// In their order.
  pub udf: Vec<UdfRow>,
  /// In the order they joined the account.
  pub identities: Vec<Identity>,
}

/// The accounts and udf tables (and, read-only, the identities attached to accounts). Rows in,
/// rows out: no rule here.
pub trait AccountRows {
  /// The account `account_id` of the scope.
  fn find_account(&mut self, scope_id: i64, account_id: &str) -> Result<Option<AccountRow>>;
  /// The account `account_id` of the scope with its UDF rows and identities, exactly as
  /// [`AccountRows::find_account`], [`AccountRows::load_udf`] and [`AccountRows::identities_of`]
  /// return them. An engine whose statements are each a snapshot reads them in one statement
  /// (a get then needs no transaction and an upsert one round trip less).
  fn find_account_pieces(
    &mut self,
    scope_id: i64,
    account_id: &str,
  ) -> Result<Option<AccountPieces>> {
    let Some(row) = self.find_account(scope_id, account_id)? else {
      return Ok(None);
    };
    let udf = self.load_udf(row.pk)?;
    let identities = self.identities_of(row.pk)?;
    Ok(Some(AccountPieces {
      row,
      udf,
      identities,
    }))
  }
  /// The account of the scope whose row is `pk`.
  fn account_by_pk(&mut self, scope_id: i64, pk: i64) -> Result<Option<AccountRow>>;
  /// Adds an account row (its `pk` is ignored: the engine assigns a new one, greater than every
  /// pk ever used, so keyset cursors never meet a reused position); returns its pk.
  fn insert_account(&mut self, scope_id: i64, row: &AccountRow) -> Result<i64>;
  /// Writes `name`, `has_app`, `app_id`, `credentials`, `updated_at` and `version` of row `pk`.
  fn update_account(&mut self, row: &AccountRow) -> Result<()>;
  /// Writes the end-user fields of row `pk` and `email_norm`, the normalized email looked up by
  /// `accounts_by_end_user_email`.
  fn set_end_user_fields(
    &mut self,
    pk: i64,
    fields: &EndUserFields,
    email_norm: Option<&str>,
  ) -> Result<()>;
  /// Deletes the row; its UDF rows, identities and token rows go with it.
  fn delete_account(&mut self, pk: i64) -> Result<()>;
  /// The account's UDF rows in their order.
  fn load_udf(&mut self, pk: i64) -> Result<Vec<UdfRow>>;
  /// The UDF rows of many accounts (an account without any may be absent).
  fn load_udf_of(&mut self, pks: &[i64]) -> Result<HashMap<i64, Vec<UdfRow>>>;
  fn insert_udf(&mut self, pk: i64, pos: i64, row: &UdfRow) -> Result<()>;
  /// Writes the value (`json`) and `updated_at` of the account's UDF row `row.key`.
  fn update_udf(&mut self, pk: i64, row: &UdfRow) -> Result<()>;
  fn delete_udf(&mut self, pk: i64, key: &str) -> Result<()>;
  /// Deletes every UDF row of the account.
  fn delete_all_udf(&mut self, pk: i64) -> Result<()>;
  /// The position after the account's last UDF row.
  fn next_udf_pos(&mut self, pk: i64) -> Result<i64>;
  /// Adds `rows`, in order, after the account's last UDF row. An engine may do it without
  /// reading the last position first.
  fn append_udf(&mut self, pk: i64, rows: &[&UdfRow]) -> Result<()> {
    let next = self.next_udf_pos(pk)?;
    for (i, u) in rows.iter().enumerate() {
      self.insert_udf(pk, next + i as i64, u)?;
    }
    Ok(())
  }
  /// How many accounts of the scope match `filter`.
  fn count_accounts(&mut self, scope_id: i64, filter: &ListFilter) -> Result<i64>;
  /// Accounts of the scope matching `filter`, by pk, skipping `offset`.
  fn accounts_page(
    &mut self,
    scope_id: i64,
    filter: &ListFilter,
    offset: i64,
    limit: i64,
  ) -> Result<Vec<AccountRow>>;
  /// Accounts of the scope matching `filter` with a pk above `after`, by pk.
  fn accounts_after(
    &mut self,
    scope_id: i64,
    filter: &ListFilter,
    after: i64,
    limit: i64,
  ) -> Result<Vec<AccountRow>>;
  /// Accounts of the scope whose end-user `email_norm` is `email_norm`, by pk.
  fn accounts_by_end_user_email(
    &mut self,
    scope_id: i64,
    email_norm: &str,
  ) -> Result<Vec<AccountRow>>;
  /// The identities linked to the account, in the order they joined it.
  fn identities_of(&mut self, pk: i64) -> Result<Vec<Identity>>;
  /// The identities of many accounts (an account without any may be absent).
  fn identities_of_many(&mut self, pks: &[i64]) -> Result<HashMap<i64, Vec<Identity>>>;
}

/// What else ends with an account, or moves with it: the account's consents and auth sessions.
/// Implemented once, in `domain::consents`, for every transaction with consent rows.
pub trait AccountCascade {
  /// Runs inside the deleting transaction, before the row goes: the account's active consents
  /// end (`account_deleted`) with their events.
  fn end_consents_of_deleted_account(
    &mut self,
    scope: &Scope,
    account_pk: i64,
    now_ms: i64,
  ) -> Result<()>;
  /// Runs inside a merge (`domain::identities`), while both accounts exist: every consent and
  /// auth session of the merged secondary `from_pk` moves to the primary `to_pk`, with their
  /// events (`account_merged`). Returns the moved consents' arrangement ids, in order.
  fn move_consents_of_merged_account(
    &mut self,
    scope: &Scope,
    from_pk: i64,
    to_pk: i64,
    now_ms: i64,
  ) -> Result<Vec<String>>;
  /// Runs inside an unlink that restores a merged account: the listed consents still on
  /// `from_pk` move to `to_pk`, with their events (`reason`).
  fn move_listed_consents(
    &mut self,
    scope: &Scope,
    arrangement_ids: &[String],
    from_pk: i64,
    to_pk: i64,
    reason: &str,
    now_ms: i64,
  ) -> Result<()>;
}

/// What the account operations need from their transaction.
pub trait AccountTx: AccountRows + AccountCascade + EventLog + MetaRows + TokenTx {}

impl<T: AccountRows + AccountCascade + EventLog + MetaRows + TokenTx + ?Sized> AccountTx for T {}

/// Binds sealed credentials to their scope and account, so they cannot be moved to another row.
pub fn credentials_aad(scope: &Scope, account_id: &str) -> Vec<u8> {
  keys::credentials_aad(scope.id, account_id)
}

/// The row's credentials, opened.
pub fn open_credentials(
  sealer: &Sealer,
  scope: &Scope,
  row: &AccountRow,
) -> Result<Option<Map<String, Value>>> {
  let Some(sealed) = &row.credentials else {
    return Ok(None);
  };
  let plain = sealer.open(sealed, &credentials_aad(scope, &row.account_id))?;
  match serde_json::from_slice(&plain) {
    Ok(Value::Object(m)) => Ok(Some(m)),
    _ => Err(Error::decryption()),
  }
}

/// Credentials sealed for account `id` of the scope.
pub fn seal_credentials(
  sealer: &Sealer,
  scope: &Scope,
  id: &str,
  creds: &Map<String, Value>,
) -> Result<Vec<u8>> {
  let plain = serde_json::to_vec(creds)
    .map_err(|e| Error::storage(format!("cannot encode credentials: {e}")))?;
  sealer.seal(&plain, &credentials_aad(scope, id))
}

/// An account as returned, from its row, UDF rows and identities.
pub fn to_account(
  scope: &Scope,
  row: AccountRow,
  udf: Vec<UdfRow>,
  identities: Vec<Identity>,
) -> Account {
  Account {
    oid: row.oid,
    org_id: scope.org_id.clone(),
    account_id: row.account_id,
    environment: scope.environment.clone(),
    name: row.name,
    udf,
    your_app: row.has_app.then_some(row.app_id),
    created_at: row.created_at,
    updated_at: row.updated_at,
    version: row.version,
    identities,
    end_user: row.end_user,
  }
}

/// The account row `id` of the scope, or `NOT_FOUND`.
pub fn find(tx: &mut (impl AccountRows + ?Sized), scope: &Scope, id: &str) -> Result<AccountRow> {
  tx.find_account(scope.id, id)?
    .ok_or_else(|| account_not_found(scope, id))
}

/// `createLinkedAccount` / `upsertLinkedAccount`. Seals under the database's key.
pub fn write(
  tx: &mut (impl AccountTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  input: AccountInput,
  mode: WriteMode,
  now: i64,
) -> Result<UpsertOutcome> {
  keys::sync(tx, sealer)?;
  write_row(tx, sealer, scope, input, mode, now).map(|(outcome, _)| outcome)
}

/// [`write`] without the key sync; also returns the account's pk.
fn write_row(
  tx: &mut (impl AccountTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  input: AccountInput,
  mode: WriteMode,
  now: i64,
) -> Result<(UpsertOutcome, i64)> {
  let existing = tx.find_account_pieces(scope.id, &input.id)?;
  if let WriteMode::Upsert {
    if_version: Some(expected),
  } = mode
  {
    match existing.as_ref().map(|p| &p.row) {
      Some(row) if row.version == expected => {}
      Some(row) => {
        return Err(Error::new(
          ErrorKind::VersionConflict,
          format!(
            "linked account {} is at __v {}, not {expected}",
            input.id, row.version
          ),
        ))
      }
      None => {
        return Err(Error::new(
          ErrorKind::VersionConflict,
          format!(
            "linked account {} does not exist (expected __v {expected})",
            input.id
          ),
        ))
      }
    }
  }
  match existing {
    None => insert(tx, sealer, scope, input, now),
    Some(_) if mode == WriteMode::Create => Err(Error::new(
      ErrorKind::AlreadyExists,
      format!(
        "Linked account with id {} already exists in the {} environment",
        input.id, scope.environment
      ),
    )),
    Some(pieces) => {
      let pk = pieces.row.pk;
      update(tx, sealer, scope, pieces, input, now).map(|o| (o, pk))
    }
  }
}

fn insert(
  tx: &mut (impl AccountTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  input: AccountInput,
  now: i64,
) -> Result<(UpsertOutcome, i64)> {
  let oid = crypto::object_id(now)?;
  let name = match input.name {
    Patch::Set(n) => Some(n),
    _ => None,
  };
  let (has_app, app_id, sealed) = match &input.your_app {
    Patch::Set(app) => {
      let sealed = app
        .auth_credentials
        .as_ref()
        .map(|c| seal_credentials(sealer, scope, &input.id, c))
        .transpose()?;
      (true, app.app_id.clone(), sealed)
    }
    _ => (false, None, None),
  };
  let row = AccountRow {
    pk: 0,
    oid,
    name,
    has_app,
    app_id,
    credentials: sealed,
    created_at: now,
    updated_at: now,
    version: 0,
    account_id: input.id,
    end_user: EndUserFields::default(),
  };
  let pk = tx.insert_account(scope.id, &row)?;
  let mut udf = Vec::new();
  merge_udf(&mut udf, input.udf, now)?;
  for (pos, u) in udf.iter().enumerate() {
    tx.insert_udf(pk, pos as i64, u)?;
  }
  tx.append_event(
    scope.id,
    types::ACCOUNT_CREATED,
    Some(&row.account_id),
    &json!({ "__v": 0 }),
    now,
  )?;
  Ok((
    UpsertOutcome {
      account: to_account(scope, row, udf, Vec::new()),
      new_account: true,
      changed: true,
    },
    pk,
  ))
}

fn update(
  tx: &mut (impl AccountTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  pieces: AccountPieces,
  input: AccountInput,
  now: i64,
) -> Result<UpsertOutcome> {
  let AccountPieces {
    mut row,
    mut udf,
    identities,
  } = pieces;
  let mut changed_fields: Vec<&str> = Vec::new();
  match input.name {
    Patch::Keep => {}
    Patch::Clear if row.name.is_some() => {
      row.name = None;
      changed_fields.push("name");
    }
    Patch::Set(n) if row.name.as_deref() != Some(n.as_str()) => {
      row.name = Some(n);
      changed_fields.push("name");
    }
    _ => {}
  }
  match &input.your_app {
    Patch::Keep => {}
    Patch::Clear => {
      if row.has_app {
        row.has_app = false;
        row.app_id = None;
        row.credentials = None;
        changed_fields.push("your_app");
      }
    }
    Patch::Set(app) => {
      let old = open_credentials(sealer, scope, &row)?;
      if !row.has_app || row.app_id != app.app_id || old != app.auth_credentials {
        row.has_app = true;
        row.app_id = app.app_id.clone();
        row.credentials = app
          .auth_credentials
          .as_ref()
          .map(|c| seal_credentials(sealer, scope, &row.account_id, c))
          .transpose()?;
        changed_fields.push("your_app");
      }
    }
  }
  let udf_changes = merge_udf(&mut udf, input.udf, now)?;
  if udf_changes.any() {
    changed_fields.push("udf");
  }
  if changed_fields.is_empty() {
    return Ok(UpsertOutcome {
      account: to_account(scope, row, udf, identities),
      new_account: false,
      changed: false,
    });
  }
  row.version += 1;
  row.updated_at = now;
  tx.update_account(&row)?;
  for key in &udf_changes.removed {
    tx.delete_udf(row.pk, key)?;
  }
  for key in &udf_changes.updated {
    if let Some(u) = udf.iter().find(|u| &u.key == key) {
      tx.update_udf(row.pk, u)?;
    }
  }
  if !udf_changes.inserted.is_empty() {
    let added: Vec<&UdfRow> = udf_changes
      .inserted
      .iter()
      .filter_map(|key| udf.iter().find(|u| &u.key == key))
      .collect();
    tx.append_udf(row.pk, &added)?;
  }
  let data = json!({ "__v": row.version, "changed": changed_fields });
  tx.append_event(
    scope.id,
    types::ACCOUNT_UPDATED,
    Some(&row.account_id),
    &data,
    now,
  )?;
  Ok(UpsertOutcome {
    account: to_account(scope, row, udf, identities),
    new_account: false,
    changed: true,
  })
}

/// Creates account `input.id` (`ALREADY_EXISTS` if it exists) without the key sync (the caller
/// syncs); returns it and its pk. For callers that add to the new row (end users).
pub fn create_row(
  tx: &mut (impl AccountTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  input: AccountInput,
  now: i64,
) -> Result<(Account, i64)> {
  write_row(tx, sealer, scope, input, WriteMode::Create, now).map(|(o, pk)| (o.account, pk))
}

/// `getLinkedAccountById`: the account with its UDF rows and identities.
/// One call of the engine (one statement on PostgreSQL).
pub fn get(tx: &mut (impl AccountRows + ?Sized), scope: &Scope, id: &str) -> Result<Account> {
  let p = tx
    .find_account_pieces(scope.id, id)?
    .ok_or_else(|| account_not_found(scope, id))?;
  Ok(to_account(scope, p.row, p.udf, p.identities))
}

/// `deleteLinkedAccount`: its consents end, its session tokens are revoked (revocations outlive
/// the token rows), then the row and everything hanging from it go.
pub fn delete(tx: &mut (impl AccountTx + ?Sized), scope: &Scope, id: &str, now: i64) -> Result<()> {
  let pk = find(tx, scope, id)?.pk;
  tx.end_consents_of_deleted_account(scope, pk, now)?;
  super::tokens::revocation::revoke_account(tx, scope, pk, id, "account_deleted", now)?;
  tx.delete_account(pk)?;
  tx.append_event(scope.id, types::ACCOUNT_DELETED, Some(id), &json!({}), now)?;
  Ok(())
}

/// `getLinkedAccountCredentials`: `None` when the account has no `your_app`.
pub fn credentials(
  tx: &mut (impl AccountTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  id: &str,
) -> Result<Option<Credentials>> {
  // Know the database's key even if it was rotated since this client opened.
  keys::learn(tx, sealer)?;
  let row = find(tx, scope, id)?;
  if !row.has_app {
    return Ok(None);
  }
  let creds = open_credentials(sealer, scope, &row)?;
  Ok(Some(Credentials {
    app_id: row.app_id,
    auth_credentials: creds.unwrap_or_default(),
  }))
}

/// Attaches UDF rows and identities to account rows (each kind for the whole list at once).
pub fn complete(
  tx: &mut (impl AccountRows + ?Sized),
  scope: &Scope,
  rows: Vec<AccountRow>,
) -> Result<Vec<Account>> {
  let pks: Vec<i64> = rows.iter().map(|r| r.pk).collect();
  let mut identities = tx.identities_of_many(&pks)?;
  let mut udf = tx.load_udf_of(&pks)?;
  Ok(
    rows
      .into_iter()
      .map(|row| {
        let u = udf.remove(&row.pk).unwrap_or_default();
        let ids = identities.remove(&row.pk).unwrap_or_default();
        to_account(scope, row, u, ids)
      })
      .collect(),
  )
}

/// `getAllLinkedAccounts`: offset pages (from 1) with the total, in one snapshot.
pub fn page(
  tx: &mut (impl AccountRows + ?Sized),
  scope: &Scope,
  filter: &ListFilter,
  page: i64,
  limit: i64,
) -> Result<OffsetPage> {
  let total = tx.count_accounts(scope.id, filter)?;
  let offset = (page - 1).saturating_mul(limit);
  let rows = tx.accounts_page(scope.id, filter, offset, limit)?;
  let docs = complete(tx, scope, rows)?;
  Ok(OffsetPage {
    docs,
    total,
    page,
    limit,
  })
}

/// `listLinkedAccounts`: keyset pages in insertion order. A walk sees every account that
/// existed when it began and was not deleted since: positions only grow, never reused.
pub fn list(
  tx: &mut (impl AccountRows + ?Sized),
  scope: &Scope,
  filter: &ListFilter,
  after: Option<i64>,
  limit: i64,
) -> Result<KeysetPage> {
  let mut rows = tx.accounts_after(scope.id, filter, after.unwrap_or(0), limit + 1)?;
  let more = rows.len() as i64 > limit;
  rows.truncate(limit as usize);
  let next = if more {
    rows.last().map(|r| r.pk)
  } else {
    None
  };
  let docs = complete(tx, scope, rows)?;
  Ok(KeysetPage { docs, next })
}

#[cfg(test)]
mod tests {
  use serde_json::json;

  use crate::client::{OpenOptions, Vault};
  use crate::crypto::{hex_encode, Key};
  use crate::store::postgres::tests::{server_url, unique_schema};

  fn sqlite() -> Vault {
    let mut o = OpenOptions::parse(Some(&json!({"path": ":memory:", "orgId": "org_1"}))).unwrap();
    o.encryption_key = Some(Key::from_bytes([4; 32]));
    Vault::open(o).wait().unwrap()
  }

  fn postgres() -> Vault {
    let o = OpenOptions::parse(Some(&json!({
      "url": server_url(), "schema": unique_schema(), "orgId": "org_1", "poolSize": 2,
      "encryptionKey": hex_encode(&[4; 32]),
    })))
    .unwrap();
    Vault::open(o).wait().unwrap()
  }

  /// The upsert diff, `__v`, UDF order and ids, credentials and deletion, on one engine.
  fn rules_hold(v: &Vault) {
    let up = |p: serde_json::Value| v.upsert_linked_account(&p, None).wait();
    let a = up(
      json!({"linked_account_id": "u1", "name": "Ann", "udf": {"a": 1, "b": 2, "c": 3},
      "your_app": {"auth_credentials": {"k": "s3cr3t"}}}),
    )
    .unwrap();
    assert!(a.new_account && a.changed);
    assert_eq!(a.account.version, 0);
    // Removing one key and adding another: the new key goes last, the others keep their ids.
    let b = up(json!({"linked_account_id": "u1", "udf": {"b": null, "d": 4, "a": 1}})).unwrap();
    assert_eq!(b.account.version, 1);
    let keys: Vec<&str> = b.account.udf.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, ["a", "c", "d"]);
    assert_eq!(b.account.udf[0].oid, a.account.udf[0].oid);
    let again = up(json!({"linked_account_id": "u1", "udf": {"d": 4},
      "your_app": {"auth_credentials": {"k": "s3cr3t"}}}))
    .unwrap();
    assert!(!again.changed);
    assert_eq!(again.account.version, 1);
    let got = v.get_linked_account_by_id(&json!("u1")).wait().unwrap();
    assert_eq!(got, b.account);
    let creds = v
      .get_linked_account_credentials(&json!("u1"))
      .wait()
      .unwrap()
      .unwrap();
    assert_eq!(creds.auth_credentials["k"], "s3cr3t");
    let e = v
      .upsert_linked_account(
        &json!({"linked_account_id": "u2"}),
        Some(&json!({"ifVersion": 0})),
      )
      .wait()
      .unwrap_err();
    assert_eq!(e.code(), "VERSION_CONFLICT");
    let e = v
      .create_linked_account(&json!({"linked_account_id": "u1"}))
      .wait()
      .unwrap_err();
    assert_eq!(e.code(), "ALREADY_EXISTS");
    v.delete_linked_account(&json!("u1")).wait().unwrap();
    let e = v.get_linked_account_by_id(&json!("u1")).wait().unwrap_err();
    assert_eq!(e.code(), "NOT_FOUND");
    v.close().wait().unwrap();
  }

  #[test]
  fn rules_hold_on_sqlite() {
    rules_hold(&sqlite());
  }

  #[test]
  fn rules_hold_on_postgres() {
    rules_hold(&postgres());
  }
}

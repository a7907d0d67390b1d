//! SQL for linked accounts. Each function runs inside a transaction given by the engine.

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::{json, Map, Value};

use super::sqlite::{events, SqliteTx};
use super::Scope;
use crate::accounts::{
  self, Account, AccountInput, Credentials, EndUserFields, KeysetPage, ListFilter, OffsetPage,
  Patch, UdfRow, UpsertOutcome, WriteMode,
};
use crate::crypto::{self, Sealer};
use crate::domain::events::types;
use crate::error::{Error, ErrorKind, Result};
use crate::identities::Identity;

/// A stored account row, before its UDF rows and identities are attached.
pub(super) struct AccountRow {
  pub(super) pk: i64,
  pub(super) oid: String,
  pub(super) name: Option<String>,
  pub(super) has_app: bool,
  pub(super) app_id: Option<String>,
  pub(super) credentials: Option<Vec<u8>>,
  pub(super) created_at: i64,
  pub(super) updated_at: i64,
  pub(super) version: i64,
  pub(super) account_id: String,
  pub(super) end_user: EndUserFields,
}

pub(super) const ROW_COLUMNS: &str =
  "a.pk, a.oid, a.name, a.has_app, a.app_id, a.credentials, a.created_at, a.updated_at, a.version, a.account_id,
   a.email, a.phone, a.abn";

pub(super) fn read_row(r: &Row<'_>) -> rusqlite::Result<AccountRow> {
  Ok(AccountRow {
    pk: r.get(0)?,
    oid: r.get(1)?,
    name: r.get(2)?,
    has_app: r.get(3)?,
    app_id: r.get(4)?,
    credentials: r.get(5)?,
    created_at: r.get(6)?,
    updated_at: r.get(7)?,
    version: r.get(8)?,
    account_id: r.get(9)?,
    end_user: EndUserFields {
      email: r.get(10)?,
      phone: r.get(11)?,
      abn: r.get(12)?,
    },
  })
}

pub(super) fn find_row(conn: &Connection, scope: &Scope, id: &str) -> Result<Option<AccountRow>> {
  let sql =
    format!("SELECT {ROW_COLUMNS} FROM accounts a WHERE a.scope_id = ?1 AND a.account_id = ?2");
  Ok(
    conn
      .prepare_cached(&sql)?
      .query_row(params![scope.id, id], read_row)
      .optional()?,
  )
}

pub(super) fn load_udf(conn: &Connection, pk: i64) -> Result<Vec<UdfRow>> {
  let mut stmt = conn.prepare_cached(
    "SELECT key, value, oid, created_at, updated_at FROM udf WHERE account_pk = ?1 ORDER BY pos",
  )?;
  let rows = stmt.query_map([pk], |r| {
    let json: String = r.get(1)?;
    Ok(UdfRow {
      key: r.get(0)?,
      value: serde_json::from_str(&json).unwrap_or(Value::Null),
      json,
      oid: r.get(2)?,
      created_at: r.get(3)?,
      updated_at: r.get(4)?,
    })
  })?;
  Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn to_account(
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

/// Binds sealed credentials to their scope and account, so they cannot be moved to another row.
pub(super) fn credentials_aad(scope: &Scope, account_id: &str) -> Vec<u8> {
  crate::domain::keys::credentials_aad(scope.id, account_id)
}

pub(super) fn open_credentials(
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

pub(super) fn seal_credentials(
  sealer: &Sealer,
  scope: &Scope,
  id: &str,
  creds: &Map<String, Value>,
) -> Result<Vec<u8>> {
  let plain = serde_json::to_vec(creds)
    .map_err(|e| Error::storage(format!("cannot encode credentials: {e}")))?;
  sealer.seal(&plain, &credentials_aad(scope, id))
}

pub fn write(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  input: AccountInput,
  mode: WriteMode,
  now: i64,
) -> Result<UpsertOutcome> {
  let existing = find_row(conn, scope, &input.id)?;
  if let WriteMode::Upsert {
    if_version: Some(expected),
  } = mode
  {
    match &existing {
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
    None => insert(conn, sealer, scope, input, now),
    Some(_) if mode == WriteMode::Create => Err(Error::new(
      ErrorKind::AlreadyExists,
      format!(
        "Linked account with id {} already exists in the {} environment",
        input.id, scope.environment
      ),
    )),
    Some(row) => update(conn, sealer, scope, row, input, now),
  }
}

fn insert(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  input: AccountInput,
  now: i64,
) -> Result<UpsertOutcome> {
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
  conn
    .prepare_cached(
      "INSERT INTO accounts (scope_id, account_id, oid, name, has_app, app_id, credentials, created_at, updated_at, version)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 0)",
    )?
    .execute(params![scope.id, input.id, oid, name, has_app, app_id, sealed, now])?;
  let pk = conn.last_insert_rowid();
  let mut udf = Vec::new();
  accounts::merge_udf(&mut udf, input.udf, now)?;
  for (pos, row) in udf.iter().enumerate() {
    insert_udf(conn, pk, pos as i64, row)?;
  }
  let account = Account {
    oid,
    org_id: scope.org_id.clone(),
    account_id: input.id,
    environment: scope.environment.clone(),
    name,
    udf,
    your_app: has_app.then_some(app_id),
    created_at: now,
    updated_at: now,
    version: 0,
    identities: Vec::new(),
    end_user: EndUserFields::default(),
  };
  events::append(
    conn,
    scope.id,
    types::ACCOUNT_CREATED,
    Some(&account.account_id),
    &json!({ "__v": 0 }),
    now,
  )?;
  Ok(UpsertOutcome {
    account,
    new_account: true,
    changed: true,
  })
}

pub(super) fn insert_udf(conn: &Connection, pk: i64, pos: i64, row: &UdfRow) -> Result<()> {
  conn
    .prepare_cached(
      "INSERT INTO udf (account_pk, key, pos, value, oid, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![pk, row.key, pos, row.json, row.oid, row.created_at, row.updated_at])?;
  Ok(())
}

fn update(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  mut row: AccountRow,
  input: AccountInput,
  now: i64,
) -> Result<UpsertOutcome> {
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
      let old = if row.credentials.is_some() {
        open_credentials(sealer, scope, &row)?
      } else {
        None
      };
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
  let mut udf = load_udf(conn, row.pk)?;
  let udf_changes = accounts::merge_udf(&mut udf, input.udf, now)?;
  if udf_changes.any() {
    changed_fields.push("udf");
  }
  let identities = super::identities::load(conn, row.pk)?;
  if changed_fields.is_empty() {
    return Ok(UpsertOutcome {
      account: to_account(scope, row, udf, identities),
      new_account: false,
      changed: false,
    });
  }
  row.version += 1;
  row.updated_at = now;
  conn
    .prepare_cached(
      "UPDATE accounts SET name = ?2, has_app = ?3, app_id = ?4, credentials = ?5, updated_at = ?6, version = ?7
       WHERE pk = ?1",
    )?
    .execute(params![row.pk, row.name, row.has_app, row.app_id, row.credentials, now, row.version])?;
  for key in &udf_changes.removed {
    conn
      .prepare_cached("DELETE FROM udf WHERE account_pk = ?1 AND key = ?2")?
      .execute(params![row.pk, key])?;
  }
  for key in &udf_changes.updated {
    if let Some(u) = udf.iter().find(|u| &u.key == key) {
      conn
        .prepare_cached(
          "UPDATE udf SET value = ?3, updated_at = ?4 WHERE account_pk = ?1 AND key = ?2",
        )?
        .execute(params![row.pk, key, u.json, now])?;
    }
  }
  if !udf_changes.inserted.is_empty() {
    let next: i64 = conn
      .prepare_cached("SELECT coalesce(max(pos) + 1, 0) FROM udf WHERE account_pk = ?1")?
      .query_row([row.pk], |r| r.get(0))?;
    for (i, key) in udf_changes.inserted.iter().enumerate() {
      if let Some(u) = udf.iter().find(|u| &u.key == key) {
        insert_udf(conn, row.pk, next + i as i64, u)?;
      }
    }
  }
  let data = json!({ "__v": row.version, "changed": changed_fields });
  events::append(
    conn,
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

pub(super) fn not_found(scope: &Scope, id: &str) -> Error {
  Error::not_found(format!(
    "Linked Account with account id {id} for org {} in environment {} not found",
    scope.org_id, scope.environment
  ))
}

pub fn get(conn: &Connection, scope: &Scope, id: &str) -> Result<Account> {
  let row = find_row(conn, scope, id)?.ok_or_else(|| not_found(scope, id))?;
  let udf = load_udf(conn, row.pk)?;
  let identities = super::identities::load(conn, row.pk)?;
  Ok(to_account(scope, row, udf, identities))
}

/// The account's stored primary key, or `NOT_FOUND`.
pub fn pk_of(conn: &Connection, scope: &Scope, id: &str) -> Result<i64> {
  find_row(conn, scope, id)?
    .map(|r| r.pk)
    .ok_or_else(|| not_found(scope, id))
}

pub fn delete(conn: &Connection, scope: &Scope, id: &str, now: i64) -> Result<()> {
  let pk = pk_of(conn, scope, id)?;
  // Ends the account's active consents (with their events) before the row goes.
  super::consents::on_account_deleted(conn, scope, pk, now)?;
  // Its session tokens die with it (revocations outlive the cascade-deleted token rows).
  let mut tx = SqliteTx::new(conn);
  crate::domain::tokens::revocation::revoke_account(
    &mut tx,
    scope,
    pk,
    id,
    "account_deleted",
    now,
  )?;
  conn
    .prepare_cached("DELETE FROM accounts WHERE pk = ?1")?
    .execute([pk])?;
  events::append(
    conn,
    scope.id,
    types::ACCOUNT_DELETED,
    Some(id),
    &json!({}),
    now,
  )?;
  Ok(())
}

pub fn credentials(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  id: &str,
) -> Result<Option<Credentials>> {
  let row = find_row(conn, scope, id)?.ok_or_else(|| not_found(scope, id))?;
  if !row.has_app {
    return Ok(None);
  }
  let creds = open_credentials(sealer, scope, &row)?;
  Ok(Some(Credentials {
    app_id: row.app_id,
    auth_credentials: creds.unwrap_or_default(),
  }))
}

/// `WHERE` clause and parameters for a list filter.
fn filter_sql(scope: &Scope, filter: &ListFilter) -> (String, Vec<Value>) {
  let mut sql = String::from("a.scope_id = ?");
  let mut args = vec![json!(scope.id)];
  if let Some(needle) = &filter.search {
    sql.push_str(" AND (lv_icontains(a.account_id, ?) OR lv_icontains(a.name, ?))");
    args.push(json!(needle));
    args.push(json!(needle));
  }
  for (key, value) in &filter.udf {
    sql.push_str(
      " AND EXISTS (SELECT 1 FROM udf u WHERE u.account_pk = a.pk AND u.key = ? AND u.value = ?)",
    );
    args.push(json!(key));
    args.push(json!(value));
  }
  (sql, args)
}

fn sql_args(args: &[Value]) -> Vec<rusqlite::types::Value> {
  args
    .iter()
    .map(|v| match v {
      Value::Number(n) => rusqlite::types::Value::Integer(n.as_i64().unwrap_or(0)),
      Value::String(s) => rusqlite::types::Value::Text(s.clone()),
      other => rusqlite::types::Value::Text(other.to_string()),
    })
    .collect()
}

pub(super) fn load_accounts(
  conn: &Connection,
  scope: &Scope,
  sql: &str,
  args: &[Value],
) -> Result<Vec<Account>> {
  let mut stmt = conn.prepare_cached(sql)?;
  let rows = stmt
    .query_map(params_from_iter(sql_args(args)), read_row)?
    .collect::<rusqlite::Result<Vec<_>>>()?;
  complete(conn, scope, rows)
}

/// Attaches UDF rows and identities to account rows (identities of the whole page in one query).
pub(super) fn complete(
  conn: &Connection,
  scope: &Scope,
  rows: Vec<AccountRow>,
) -> Result<Vec<Account>> {
  let pks: Vec<i64> = rows.iter().map(|r| r.pk).collect();
  let mut identities = super::identities::load_many(conn, &pks)?;
  rows
    .into_iter()
    .map(|row| {
      let udf = load_udf(conn, row.pk)?;
      let ids = identities.remove(&row.pk).unwrap_or_default();
      Ok(to_account(scope, row, udf, ids))
    })
    .collect()
}

pub fn page(
  conn: &Connection,
  scope: &Scope,
  filter: &ListFilter,
  page: i64,
  limit: i64,
) -> Result<OffsetPage> {
  let (cond, mut args) = filter_sql(scope, filter);
  let total: i64 = conn
    .prepare_cached(&format!("SELECT count(*) FROM accounts a WHERE {cond}"))?
    .query_row(params_from_iter(sql_args(&args)), |r| r.get(0))?;
  args.push(json!(limit));
  args.push(json!((page - 1).saturating_mul(limit)));
  let sql =
    format!("SELECT {ROW_COLUMNS} FROM accounts a WHERE {cond} ORDER BY a.pk LIMIT ? OFFSET ?");
  let docs = load_accounts(conn, scope, &sql, &args)?;
  Ok(OffsetPage {
    docs,
    total,
    page,
    limit,
  })
}

pub fn list(
  conn: &Connection,
  scope: &Scope,
  filter: &ListFilter,
  after: Option<i64>,
  limit: i64,
) -> Result<KeysetPage> {
  let (cond, mut args) = filter_sql(scope, filter);
  args.push(json!(after.unwrap_or(0)));
  args.push(json!(limit + 1));
  let sql =
    format!("SELECT {ROW_COLUMNS} FROM accounts a WHERE {cond} AND a.pk > ? ORDER BY a.pk LIMIT ?");
  let mut stmt = conn.prepare_cached(&sql)?;
  let mut rows = stmt
    .query_map(params_from_iter(sql_args(&args)), read_row)?
    .collect::<rusqlite::Result<Vec<_>>>()?;
  let more = rows.len() as i64 > limit;
  rows.truncate(limit as usize);
  let next = if more {
    rows.last().map(|r| r.pk)
  } else {
    None
  };
  let docs = complete(conn, scope, rows)?;
  Ok(KeysetPage { docs, next })
}

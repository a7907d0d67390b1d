//! Account helpers over a SQLite connection, for the modules that still hold their own SQL
//! (`identities`, `consents`). The rules are in `domain::accounts`, the rows in
//! `sqlite::accounts`; these only adapt a `&Connection` to them. They go once those modules
//! run on the row traits.

use rusqlite::Connection;
use serde_json::Value;

use super::sqlite::{accounts as rows, SqliteTx};
use super::Scope;
use crate::accounts::{Account, UdfRow};
use crate::domain::accounts::{self as domain, AccountRows};
use crate::error::{Error, Result};
use crate::identities::Identity;

pub(super) use crate::domain::accounts::AccountRow;
pub(super) use rows::ROW_COLUMNS;

pub(super) fn find_row(conn: &Connection, scope: &Scope, id: &str) -> Result<Option<AccountRow>> {
  SqliteTx::new(conn).find_account(scope.id, id)
}

pub(super) fn load_udf(conn: &Connection, pk: i64) -> Result<Vec<UdfRow>> {
  rows::load_udf(conn, pk)
}

pub(super) fn insert_udf(conn: &Connection, pk: i64, pos: i64, row: &UdfRow) -> Result<()> {
  SqliteTx::new(conn).insert_udf(pk, pos, row)
}

#[allow(dead_code)] // kept for the identities and consents modules' SQLite code
pub(super) fn to_account(
  scope: &Scope,
  row: AccountRow,
  udf: Vec<UdfRow>,
  identities: Vec<Identity>,
) -> Account {
  domain::to_account(scope, row, udf, identities)
}

pub(super) fn credentials_aad(scope: &Scope, account_id: &str) -> Vec<u8> {
  domain::credentials_aad(scope, account_id)
}

pub(super) fn not_found(scope: &Scope, id: &str) -> Error {
  crate::domain::scope::account_not_found(scope, id)
}

pub fn get(conn: &Connection, scope: &Scope, id: &str) -> Result<Account> {
  domain::get(&mut SqliteTx::new(conn), scope, id)
}

/// The accounts `sql` (selecting `ROW_COLUMNS` from `accounts a`) returns, complete.
pub(super) fn load_accounts(
  conn: &Connection,
  scope: &Scope,
  sql: &str,
  args: &[Value],
) -> Result<Vec<Account>> {
  let args: Vec<rusqlite::types::Value> = args
    .iter()
    .map(|v| match v {
      Value::Number(n) => rusqlite::types::Value::Integer(n.as_i64().unwrap_or(0)),
      Value::String(s) => rusqlite::types::Value::Text(s.clone()),
      other => rusqlite::types::Value::Text(other.to_string()),
    })
    .collect();
  let found = rows::query_rows(conn, sql, rusqlite::params_from_iter(args))?;
  domain::complete(&mut SqliteTx::new(conn), scope, found)
}

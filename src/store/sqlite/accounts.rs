//! The accounts and udf tables on SQLite (schema: migrations 1, 5 and 6). Rows only; the rules
//! are in `domain::accounts` and `domain::end_users`.

use std::collections::HashMap;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::SqliteTx;
use crate::accounts::{EndUserFields, ListFilter, UdfRow};
use crate::domain::accounts::{AccountRow, AccountRows};
use crate::error::Result;
use crate::identities::Identity;

/// The columns [`read_row`] reads, from `accounts a`.
pub(crate) const ROW_COLUMNS: &str =
  "a.pk, a.oid, a.name, a.has_app, a.app_id, a.credentials, a.created_at, a.updated_at, a.version, a.account_id,
   a.email, a.phone, a.abn";

pub(crate) fn read_row(r: &Row<'_>) -> rusqlite::Result<AccountRow> {
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

/// A bound value of a list query.
enum Arg<'a> {
  Int(i64),
  Text(&'a str),
}

impl rusqlite::ToSql for Arg<'_> {
  fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
    match self {
      Arg::Int(i) => i.to_sql(),
      Arg::Text(s) => s.to_sql(),
    }
  }
}

/// `WHERE` clause and arguments for a list filter.
fn filter_sql<'a>(scope_id: i64, filter: &'a ListFilter) -> (String, Vec<Arg<'a>>) {
  let mut sql = String::from("a.scope_id = ?");
  let mut args = vec![Arg::Int(scope_id)];
  if let Some(needle) = &filter.search {
    sql.push_str(" AND (lv_icontains(a.account_id, ?) OR lv_icontains(a.name, ?))");
    args.push(Arg::Text(needle));
    args.push(Arg::Text(needle));
  }
  for (key, value) in &filter.udf {
    sql.push_str(
      " AND EXISTS (SELECT 1 FROM udf u WHERE u.account_pk = a.pk AND u.key = ? AND u.value = ?)",
    );
    args.push(Arg::Text(key));
    args.push(Arg::Text(value));
  }
  (sql, args)
}

/// The account rows `sql` (selecting [`ROW_COLUMNS`]) returns.
pub(crate) fn query_rows(
  conn: &Connection,
  sql: &str,
  args: impl rusqlite::Params,
) -> Result<Vec<AccountRow>> {
  let mut stmt = conn.prepare_cached(sql)?;
  let rows = stmt
    .query_map(args, read_row)?
    .collect::<rusqlite::Result<Vec<_>>>()?;
  Ok(rows)
}

pub(crate) fn load_udf(conn: &Connection, pk: i64) -> Result<Vec<UdfRow>> {
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

impl AccountRows for SqliteTx<'_> {
  fn find_account(&mut self, scope_id: i64, account_id: &str) -> Result<Option<AccountRow>> {
    let sql =
      format!("SELECT {ROW_COLUMNS} FROM accounts a WHERE a.scope_id = ?1 AND a.account_id = ?2");
    Ok(
      self
        .conn
        .prepare_cached(&sql)?
        .query_row(params![scope_id, account_id], read_row)
        .optional()?,
    )
  }

  fn account_by_pk(&mut self, scope_id: i64, pk: i64) -> Result<Option<AccountRow>> {
    let sql = format!("SELECT {ROW_COLUMNS} FROM accounts a WHERE a.pk = ?1 AND a.scope_id = ?2");
    Ok(
      self
        .conn
        .prepare_cached(&sql)?
        .query_row(params![pk, scope_id], read_row)
        .optional()?,
    )
  }

  fn insert_account(&mut self, scope_id: i64, row: &AccountRow) -> Result<i64> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO accounts (scope_id, account_id, oid, name, has_app, app_id, credentials, created_at, updated_at, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
      )?
      .execute(params![
        scope_id,
        row.account_id,
        row.oid,
        row.name,
        row.has_app,
        row.app_id,
        row.credentials,
        row.created_at,
        row.updated_at,
        row.version
      ])?;
    Ok(self.conn.last_insert_rowid())
  }

  fn update_account(&mut self, row: &AccountRow) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE accounts SET name = ?2, has_app = ?3, app_id = ?4, credentials = ?5, updated_at = ?6, version = ?7
         WHERE pk = ?1",
      )?
      .execute(params![
        row.pk,
        row.name,
        row.has_app,
        row.app_id,
        row.credentials,
        row.updated_at,
        row.version
      ])?;
    Ok(())
  }

  fn set_end_user_fields(
    &mut self,
    pk: i64,
    f: &EndUserFields,
    email_norm: Option<&str>,
  ) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE accounts SET email = ?2, email_norm = ?3, phone = ?4, abn = ?5 WHERE pk = ?1",
      )?
      .execute(params![pk, f.email, email_norm, f.phone, f.abn])?;
    Ok(())
  }

  fn delete_account(&mut self, pk: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("DELETE FROM accounts WHERE pk = ?1")?
      .execute([pk])?;
    Ok(())
  }

  fn load_udf(&mut self, pk: i64) -> Result<Vec<UdfRow>> {
    load_udf(self.conn, pk)
  }

  fn load_udf_of(&mut self, pks: &[i64]) -> Result<HashMap<i64, Vec<UdfRow>>> {
    // One cached statement per account: an indexed read in process costs less than building a
    // query over the whole list.
    pks
      .iter()
      .map(|pk| Ok((*pk, load_udf(self.conn, *pk)?)))
      .collect()
  }

  fn insert_udf(&mut self, pk: i64, pos: i64, row: &UdfRow) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO udf (account_pk, key, pos, value, oid, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      )?
      .execute(params![pk, row.key, pos, row.json, row.oid, row.created_at, row.updated_at])?;
    Ok(())
  }

  fn update_udf(&mut self, pk: i64, row: &UdfRow) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE udf SET value = ?3, updated_at = ?4 WHERE account_pk = ?1 AND key = ?2",
      )?
      .execute(params![pk, row.key, row.json, row.updated_at])?;
    Ok(())
  }

  fn delete_udf(&mut self, pk: i64, key: &str) -> Result<()> {
    self
      .conn
      .prepare_cached("DELETE FROM udf WHERE account_pk = ?1 AND key = ?2")?
      .execute(params![pk, key])?;
    Ok(())
  }

  fn delete_all_udf(&mut self, pk: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("DELETE FROM udf WHERE account_pk = ?1")?
      .execute([pk])?;
    Ok(())
  }

  fn next_udf_pos(&mut self, pk: i64) -> Result<i64> {
    Ok(
      self
        .conn
        .prepare_cached("SELECT coalesce(max(pos) + 1, 0) FROM udf WHERE account_pk = ?1")?
        .query_row([pk], |r| r.get(0))?,
    )
  }

  fn count_accounts(&mut self, scope_id: i64, filter: &ListFilter) -> Result<i64> {
    let (cond, args) = filter_sql(scope_id, filter);
    Ok(
      self
        .conn
        .prepare_cached(&format!("SELECT count(*) FROM accounts a WHERE {cond}"))?
        .query_row(params_from_iter(args), |r| r.get(0))?,
    )
  }

  fn accounts_page(
    &mut self,
    scope_id: i64,
    filter: &ListFilter,
    offset: i64,
    limit: i64,
  ) -> Result<Vec<AccountRow>> {
    let (cond, mut args) = filter_sql(scope_id, filter);
    args.push(Arg::Int(limit));
    args.push(Arg::Int(offset));
    let sql =
      format!("SELECT {ROW_COLUMNS} FROM accounts a WHERE {cond} ORDER BY a.pk LIMIT ? OFFSET ?");
    query_rows(self.conn, &sql, params_from_iter(args))
  }

  fn accounts_after(
    &mut self,
    scope_id: i64,
    filter: &ListFilter,
    after: i64,
    limit: i64,
  ) -> Result<Vec<AccountRow>> {
    let (cond, mut args) = filter_sql(scope_id, filter);
    args.push(Arg::Int(after));
    args.push(Arg::Int(limit));
    let sql = format!(
      "SELECT {ROW_COLUMNS} FROM accounts a WHERE {cond} AND a.pk > ? ORDER BY a.pk LIMIT ?"
    );
    query_rows(self.conn, &sql, params_from_iter(args))
  }

  fn accounts_by_end_user_email(
    &mut self,
    scope_id: i64,
    email_norm: &str,
  ) -> Result<Vec<AccountRow>> {
    let sql = format!(
      "SELECT {ROW_COLUMNS} FROM accounts a WHERE a.scope_id = ? AND a.email_norm = ? ORDER BY a.pk"
    );
    query_rows(self.conn, &sql, params![scope_id, email_norm])
  }

  fn identities_of(&mut self, pk: i64) -> Result<Vec<Identity>> {
    super::identities::load(self.conn, pk)
  }

  fn identities_of_many(&mut self, pks: &[i64]) -> Result<HashMap<i64, Vec<Identity>>> {
    super::identities::load_many(self.conn, pks)
  }
}

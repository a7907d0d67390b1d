//! The `meta` table, the scopes, the sealed columns and SQLite's own integrity checks. Rows
//! only; key rotation and the key check are in `domain::keys`.

use rusqlite::{params, OptionalExtension};

use super::SqliteTx;
use crate::domain::keys::{KeyTx, MetaRows, SealedColumn, SealedRows, SealedValue};
use crate::domain::scope::{ScopeRows, ScopeTx};
use crate::error::Result;

impl KeyTx for SqliteTx<'_> {}
impl ScopeTx for SqliteTx<'_> {}

impl MetaRows for SqliteTx<'_> {
  fn meta_get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(
      self
        .conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?,
    )
  }

  fn meta_put(&mut self, key: &str, value: &[u8]) -> Result<()> {
    self
      .conn
      .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
      .execute(params![key, value])?;
    Ok(())
  }

  fn meta_delete(&mut self, key: &str) -> Result<()> {
    self
      .conn
      .prepare_cached("DELETE FROM meta WHERE key = ?1")?
      .execute([key])?;
    Ok(())
  }
}

impl ScopeRows for SqliteTx<'_> {
  fn scope_id(&mut self, org_id: &str, environment: &str) -> Result<Option<i64>> {
    Ok(
      self
        .conn
        .prepare_cached("SELECT id FROM scopes WHERE org_id = ?1 AND environment = ?2")?
        .query_row(params![org_id, environment], |r| r.get(0))
        .optional()?,
    )
  }

  fn insert_scope(&mut self, org_id: &str, environment: &str) -> Result<()> {
    self
      .conn
      .prepare_cached("INSERT OR IGNORE INTO scopes (org_id, environment) VALUES (?1, ?2)")?
      .execute(params![org_id, environment])?;
    Ok(())
  }
}

/// Where a sealed column lives: (table, integer key, column, the text column bound in its
/// associated data).
fn place(col: SealedColumn) -> (&'static str, &'static str, &'static str, &'static str) {
  match col {
    SealedColumn::AccountCredentials => ("accounts", "pk", "credentials", "account_id"),
    SealedColumn::MergeCredentials => ("account_merges", "pk", "credentials", "oid"),
    SealedColumn::SigningKeySecret => ("signing_keys", "pk", "secret", "kid"),
    SealedColumn::WebhookSecret => ("webhooks", "pk", "secret", "id"),
  }
}

impl SealedRows for SqliteTx<'_> {
  fn sealed_values(
    &mut self,
    col: SealedColumn,
    after: i64,
    limit: usize,
  ) -> Result<Vec<SealedValue>> {
    let (table, pk, column, bound) = place(col);
    let sql = format!(
      "SELECT {pk}, scope_id, {bound}, {column} FROM {table}
       WHERE {pk} > ?1 AND {column} IS NOT NULL ORDER BY {pk} LIMIT ?2"
    );
    Ok(
      self
        .conn
        .prepare_cached(&sql)?
        .query_map(params![after, limit as i64], |r| {
          Ok(SealedValue {
            row: r.get(0)?,
            scope_id: r.get(1)?,
            bound: r.get(2)?,
            sealed: r.get(3)?,
          })
        })?
        .collect::<rusqlite::Result<_>>()?,
    )
  }

  fn replace_sealed(&mut self, col: SealedColumn, row: i64, sealed: &[u8]) -> Result<()> {
    let (table, pk, column, _) = place(col);
    self
      .conn
      .prepare_cached(&format!("UPDATE {table} SET {column} = ?2 WHERE {pk} = ?1"))?
      .execute(params![row, sealed])?;
    Ok(())
  }

  fn count_sealed_not_under(&mut self, col: SealedColumn, key_id: &[u8; 8]) -> Result<i64> {
    let (table, _, column, _) = place(col);
    // Sealed values start with a version byte, then the 8-byte key id.
    let sql = format!(
      "SELECT count(*) FROM {table} WHERE {column} IS NOT NULL AND substr({column}, 2, 8) != ?1"
    );
    Ok(
      self
        .conn
        .prepare_cached(&sql)?
        .query_row([key_id.as_slice()], |r| r.get::<_, i64>(0))?,
    )
  }

  /// `PRAGMA integrity_check` (structure of the file, every index matches its table) and
  /// `PRAGMA foreign_key_check` (no orphan rows).
  fn structure_problems(&mut self) -> Result<Vec<String>> {
    let mut details = Vec::new();
    {
      let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
      let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
      if rows != ["ok"] {
        details.extend(rows.into_iter().map(|r| format!("integrity_check: {r}")));
      }
    }
    let mut stmt = self.conn.prepare("PRAGMA foreign_key_check")?;
    let rows: Vec<String> = stmt
      .query_map([], |r| {
        let table: String = r.get(0)?;
        let rowid: Option<i64> = r.get(1)?;
        let parent: String = r.get(2)?;
        Ok(format!(
          "foreign_key_check: {table} row {} refers to a missing {parent} row",
          rowid.map(|id| id.to_string()).unwrap_or_else(|| "?".into())
        ))
      })?
      .collect::<rusqlite::Result<_>>()?;
    details.extend(rows);
    Ok(details)
  }
}

//! `meta`, scopes and the sealed columns on PostgreSQL. Rows only (rules: `domain::keys`).

use super::conn::PgTx;
use crate::domain::keys::{KeyTx, MetaRows, SealedColumn, SealedRows, SealedValue};
use crate::domain::scope::{ScopeRows, ScopeTx};
use crate::error::Result;

impl KeyTx for PgTx<'_> {}
impl ScopeTx for PgTx<'_> {}

impl MetaRows for PgTx<'_> {
  fn meta_get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(
      self
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
        .map(|r| r.get(0)),
    )
  }

  fn meta_put(&mut self, key: &str, value: &[u8]) -> Result<()> {
    self.defer(
      "INSERT INTO meta (key, value) VALUES ($1, $2)
       ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
      vec![Box::new(key.to_string()), Box::new(value.to_vec())],
    );
    Ok(())
  }

  fn meta_delete(&mut self, key: &str) -> Result<()> {
    self.defer(
      "DELETE FROM meta WHERE key = $1",
      vec![Box::new(key.to_string())],
    );
    Ok(())
  }
}

impl ScopeRows for PgTx<'_> {
  fn scope_id(&mut self, org_id: &str, environment: &str) -> Result<Option<i64>> {
    Ok(
      self
        .query_opt(
          "SELECT id FROM scopes WHERE org_id = $1 AND environment = $2",
          &[&org_id, &environment],
        )?
        .map(|r| r.get(0)),
    )
  }

  fn insert_scope(&mut self, org_id: &str, environment: &str) -> Result<()> {
    self.defer(
      "INSERT INTO scopes (org_id, environment) VALUES ($1, $2) ON CONFLICT DO NOTHING",
      vec![
        Box::new(org_id.to_string()),
        Box::new(environment.to_string()),
      ],
    );
    Ok(())
  }
}

/// (table, integer key, column, the text column bound in the associated data).
fn place(col: SealedColumn) -> (&'static str, &'static str, &'static str, &'static str) {
  match col {
    SealedColumn::AccountCredentials => ("accounts", "pk", "credentials", "account_id"),
    SealedColumn::MergeCredentials => ("account_merges", "pk", "credentials", "oid"),
    SealedColumn::SigningKeySecret => ("signing_keys", "pk", "secret", "kid"),
    SealedColumn::WebhookSecret => ("webhooks", "pk", "secret", "id"),
  }
}

impl SealedRows for PgTx<'_> {
  fn sealed_values(
    &mut self,
    col: SealedColumn,
    after: i64,
    limit: usize,
  ) -> Result<Vec<SealedValue>> {
    let (table, pk, column, bound) = place(col);
    let sql = format!(
      "SELECT {pk}, scope_id, {bound}, {column} FROM {table}
       WHERE {pk} > $1 AND {column} IS NOT NULL ORDER BY {pk} LIMIT $2"
    );
    Ok(
      self
        .query(&sql, &[&after, &(limit as i64)])?
        .into_iter()
        .map(|r| SealedValue {
          row: r.get(0),
          scope_id: r.get(1),
          bound: r.get(2),
          sealed: r.get(3),
        })
        .collect(),
    )
  }

  fn replace_sealed(&mut self, col: SealedColumn, row: i64, sealed: &[u8]) -> Result<()> {
    let (table, pk, column, _) = place(col);
    self.defer(
      format!("UPDATE {table} SET {column} = $2 WHERE {pk} = $1"),
      vec![Box::new(row), Box::new(sealed.to_vec())],
    );
    Ok(())
  }

  fn count_sealed_not_under(&mut self, col: SealedColumn, key_id: &[u8; 8]) -> Result<i64> {
    let (table, _, column, _) = place(col);
    // Sealed values start with a version byte, then the 8-byte key id.
    let sql = format!(
      "SELECT count(*) FROM {table} WHERE {column} IS NOT NULL AND substring({column} FROM 2 FOR 8) <> $1"
    );
    Ok(
      self
        .query(&sql, &[&key_id.as_slice()])?
        .first()
        .map(|r| r.get(0))
        .unwrap_or(0),
    )
  }

  /// PostgreSQL enforces references and keeps its indexes itself; there is no whole-database
  /// check to run from a client (`amcheck` needs superuser). Nothing to report.
  fn structure_problems(&mut self) -> Result<Vec<String>> {
    Ok(Vec::new())
  }
}

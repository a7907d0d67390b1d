//! The identities and account_merges tables on SQLite (schema: migrations 3 and 6). Rows only;
//! the rules are in `domain::identities`.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::accounts::{query_rows, ROW_COLUMNS};
use super::SqliteTx;
use crate::domain::accounts::AccountRow;
use crate::domain::identities::{IdentityRow, IdentityRows, MergeRecord, NewMerge};
use crate::error::{Error, Result};
use crate::identities::{Identity, LinkSuggestion};

const ID_COLUMNS: &str =
  "i.provider, i.user_id, i.connection, i.is_social, i.email, i.email_verified, i.profile_data, i.linked_at,
   i.connection_id";

/// Reads the `ID_COLUMNS` starting at column `at`.
fn read_identity(r: &Row<'_>, at: usize) -> rusqlite::Result<Identity> {
  let profile: Option<String> = r.get(at + 6)?;
  Ok(Identity {
    provider: r.get(at)?,
    user_id: r.get(at + 1)?,
    connection: r.get(at + 2)?,
    is_social: r.get(at + 3)?,
    email: r.get(at + 4)?,
    email_verified: r.get(at + 5)?,
    profile_data: profile.and_then(|p| match serde_json::from_str(&p) {
      Ok(Value::Object(m)) => Some(m),
      _ => None,
    }),
    linked_at: r.get(at + 7)?,
    connection_id: r.get(at + 8)?,
  })
}

/// The identities of one account, in the order they joined it.
pub(crate) fn load(conn: &Connection, account_pk: i64) -> Result<Vec<Identity>> {
  let sql = format!(
    "SELECT {ID_COLUMNS} FROM identities i WHERE i.account_pk = ?1 ORDER BY i.linked_at, i.pk"
  );
  let mut stmt = conn.prepare_cached(&sql)?;
  let rows = stmt.query_map([account_pk], |r| read_identity(r, 0))?;
  Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The identities of many accounts in one query (one cached statement whatever the count).
pub(crate) fn load_many(conn: &Connection, pks: &[i64]) -> Result<HashMap<i64, Vec<Identity>>> {
  let mut out: HashMap<i64, Vec<Identity>> = HashMap::new();
  match pks {
    [] => return Ok(out),
    [one] => {
      out.insert(*one, load(conn, *one)?);
      return Ok(out);
    }
    _ => {}
  }
  let sql = format!(
    "SELECT i.account_pk, {ID_COLUMNS} FROM identities i
     WHERE i.account_pk IN (SELECT value FROM json_each(?1))
     ORDER BY i.account_pk, i.linked_at, i.pk"
  );
  let list = serde_json::to_string(pks).map_err(|e| Error::storage(e.to_string()))?;
  let mut stmt = conn.prepare_cached(&sql)?;
  let rows = stmt.query_map([list], |r| Ok((r.get::<_, i64>(0)?, read_identity(r, 1)?)))?;
  for row in rows {
    let (pk, identity) = row?;
    out.entry(pk).or_default().push(identity);
  }
  Ok(out)
}

fn profile_text(identity: &Identity) -> Option<String> {
  identity
    .profile_data
    .as_ref()
    .map(|p| Value::Object(p.clone()).to_string())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
  matches!(e, rusqlite::Error::SqliteFailure(f, _)
    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
      || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

impl IdentityRows for SqliteTx<'_> {
  fn find_identity(
    &mut self,
    scope_id: i64,
    provider: &str,
    user_id: &str,
  ) -> Result<Option<IdentityRow>> {
    let sql = format!(
      "SELECT i.pk, i.account_pk, i.merge_pk, {ID_COLUMNS} FROM identities i
       WHERE i.scope_id = ?1 AND i.provider = ?2 AND i.user_id = ?3"
    );
    Ok(
      self
        .conn
        .prepare_cached(&sql)?
        .query_row(params![scope_id, provider, user_id], |r| {
          Ok(IdentityRow {
            pk: r.get(0)?,
            account_pk: r.get(1)?,
            merge_pk: r.get(2)?,
            identity: read_identity(r, 3)?,
          })
        })
        .optional()?,
    )
  }

  fn insert_identity(
    &mut self,
    scope_id: i64,
    account_pk: i64,
    identity: &Identity,
    email_norm: Option<&str>,
    merge_pk: Option<i64>,
  ) -> Result<bool> {
    let inserted = self
      .conn
      .prepare_cached(
        "INSERT INTO identities (scope_id, account_pk, provider, user_id, connection, is_social, email,
           email_norm, email_verified, profile_data, linked_at, merge_pk, connection_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
      )?
      .execute(params![
        scope_id,
        account_pk,
        identity.provider,
        identity.user_id,
        identity.connection,
        identity.is_social,
        identity.email,
        email_norm,
        identity.email_verified,
        profile_text(identity),
        identity.linked_at,
        merge_pk,
        identity.connection_id,
      ]);
    match inserted {
      Ok(_) => Ok(true),
      Err(e) if is_unique_violation(&e) => Ok(false),
      Err(e) => Err(e.into()),
    }
  }

  fn update_identity(
    &mut self,
    pk: i64,
    identity: &Identity,
    email_norm: Option<&str>,
  ) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE identities SET connection = ?2, is_social = ?3, email = ?4, email_norm = ?5,
           email_verified = ?6, profile_data = ?7, connection_id = ?8
         WHERE pk = ?1",
      )?
      .execute(params![
        pk,
        identity.connection,
        identity.is_social,
        identity.email,
        email_norm,
        identity.email_verified,
        profile_text(identity),
        identity.connection_id,
      ])?;
    Ok(())
  }

  fn delete_identity(&mut self, pk: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("DELETE FROM identities WHERE pk = ?1")?
      .execute([pk])?;
    Ok(())
  }

  fn move_identity(&mut self, pk: i64, to_pk: i64, linked_at: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE identities SET account_pk = ?2, merge_pk = NULL, linked_at = ?3 WHERE pk = ?1",
      )?
      .execute(params![pk, to_pk, linked_at])?;
    Ok(())
  }

  fn move_merged_identity(&mut self, pk: i64, to_pk: i64, linked_at: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("UPDATE identities SET account_pk = ?2, linked_at = ?3 WHERE pk = ?1")?
      .execute(params![pk, to_pk, linked_at])?;
    Ok(())
  }

  fn move_identities(&mut self, from_pk: i64, to_pk: i64, linked_at: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE identities SET account_pk = ?2, linked_at = ?3 WHERE account_pk = ?1",
      )?
      .execute(params![from_pk, to_pk, linked_at])?;
    Ok(())
  }

  fn stamp_merge(&mut self, account_pk: i64, merge_pk: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE identities SET merge_pk = ?2 WHERE account_pk = ?1 AND merge_pk IS NULL",
      )?
      .execute(params![account_pk, merge_pk])?;
    Ok(())
  }

  fn identities_of_merge(
    &mut self,
    account_pk: i64,
    merge_pk: i64,
  ) -> Result<Vec<(i64, String, String)>> {
    let mut stmt = self.conn.prepare_cached(
      "SELECT pk, provider, user_id FROM identities WHERE account_pk = ?1 AND merge_pk = ?2 ORDER BY pk",
    )?;
    let rows = stmt.query_map(params![account_pk, merge_pk], |r| {
      Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
  }

  fn touch_account(&mut self, pk: i64, now: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("UPDATE accounts SET version = version + 1, updated_at = ?2 WHERE pk = ?1")?
      .execute(params![pk, now])?;
    Ok(())
  }

  fn merges_of(&mut self, primary_pk: i64) -> Result<Vec<i64>> {
    Ok(
      self
        .conn
        .prepare_cached("SELECT pk FROM account_merges WHERE primary_pk = ?1 ORDER BY pk")?
        .query_map([primary_pk], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?,
    )
  }

  fn insert_merge(&mut self, scope_id: i64, m: &NewMerge<'_>) -> Result<i64> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO account_merges (scope_id, primary_pk, oid, secondary_id, state, credentials, policy, merged_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
      )?
      .execute(params![
        scope_id,
        m.primary_pk,
        m.oid,
        m.secondary_id,
        m.state,
        m.credentials,
        m.policy,
        m.merged_at
      ])?;
    Ok(self.conn.last_insert_rowid())
  }

  fn move_merges(&mut self, from_pk: i64, to_pk: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("UPDATE account_merges SET primary_pk = ?2 WHERE primary_pk = ?1")?
      .execute(params![from_pk, to_pk])?;
    Ok(())
  }

  fn move_held_merge(&mut self, merge_pk: i64, from_pk: i64, to_pk: i64) -> Result<bool> {
    let moved = self
      .conn
      .prepare_cached(
        "UPDATE account_merges SET primary_pk = ?3
         WHERE pk = ?1 AND primary_pk = ?2 AND restored_at IS NULL",
      )?
      .execute(params![merge_pk, from_pk, to_pk])?;
    Ok(moved == 1)
  }

  fn unrestored_merge(&mut self, merge_pk: i64) -> Result<Option<MergeRecord>> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT oid, state, credentials FROM account_merges WHERE pk = ?1 AND restored_at IS NULL",
        )?
        .query_row([merge_pk], |r| {
          Ok(MergeRecord {
            pk: merge_pk,
            oid: r.get(0)?,
            state: r.get(1)?,
            credentials: r.get(2)?,
          })
        })
        .optional()?,
    )
  }

  fn mark_restored(&mut self, merge_pk: i64, now: i64, restored_as: &str) -> Result<()> {
    self
      .conn
      .prepare_cached("UPDATE account_merges SET restored_at = ?2, restored_as = ?3 WHERE pk = ?1")?
      .execute(params![merge_pk, now, restored_as])?;
    Ok(())
  }

  fn accounts_with_email(&mut self, scope_id: i64, email_norm: &str) -> Result<Vec<AccountRow>> {
    let sql = format!(
      "SELECT {ROW_COLUMNS} FROM accounts a
       WHERE a.pk IN (SELECT i.account_pk FROM identities i WHERE i.scope_id = ?1 AND i.email_norm = ?2
                      UNION SELECT e.pk FROM accounts e WHERE e.scope_id = ?1 AND e.email_norm = ?2)
       ORDER BY a.pk"
    );
    query_rows(self.conn, &sql, params![scope_id, email_norm])
  }

  fn link_suggestions(&mut self, pk: i64) -> Result<Vec<LinkSuggestion>> {
    let mut stmt = self.conn.prepare_cached(
      "SELECT DISTINCT a.account_id, o.email_norm, a.pk
       FROM identities m
       JOIN identities o ON o.scope_id = m.scope_id AND o.email_norm = m.email_norm
         AND o.email_verified = 1 AND o.account_pk != m.account_pk
       JOIN accounts a ON a.pk = o.account_pk
       WHERE m.account_pk = ?1 AND m.email_verified = 1 AND m.email_norm IS NOT NULL
       ORDER BY a.pk, o.email_norm",
    )?;
    let rows = stmt.query_map([pk], |r| {
      Ok(LinkSuggestion {
        linked_account_id: r.get(0)?,
        email: r.get(1)?,
      })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
  }
}

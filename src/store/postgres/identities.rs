//! The identities and account_merges tables on PostgreSQL. Rows only; the rules are in
//! `domain::identities`.
//!
//! Writes whose result no rule needs are queued and go with the next read or the commit. An
//! identity insert that meets a row inserted by a concurrent transaction either fails the
//! serializable transaction (40001, retried by the engine, which then finds the row) or, with
//! `ON CONFLICT DO NOTHING`, returns no row: the rules answer `IDENTITY_ALREADY_LINKED` either
//! way, never a unique-violation storage error.

use serde_json::Value;

use super::accounts::{read_identity, read_row, ID_COLUMNS, ROW_COLUMNS};
use super::conn::PgTx;
use crate::domain::accounts::AccountRow;
use crate::domain::identities::{IdentityRow, IdentityRows, MergeRecord, NewMerge};
use crate::error::{Error, Result};
use crate::identities::{Identity, LinkSuggestion};

fn profile_text(identity: &Identity) -> Option<String> {
  identity
    .profile_data
    .as_ref()
    .map(|p| Value::Object(p.clone()).to_string())
}

impl IdentityRows for PgTx<'_> {
  fn find_identity(
    &mut self,
    scope_id: i64,
    provider: &str,
    user_id: &str,
  ) -> Result<Option<IdentityRow>> {
    let row = self.query_opt(
      &format!(
        "SELECT i.pk, i.account_pk, i.merge_pk, {ID_COLUMNS} FROM identities i
         WHERE i.scope_id = $1 AND i.provider = $2 AND i.user_id = $3"
      ),
      &[&scope_id, &provider, &user_id],
    )?;
    Ok(row.map(|r| IdentityRow {
      pk: r.get(0),
      account_pk: r.get(1),
      merge_pk: r.get(2),
      identity: read_identity(&r, 3),
    }))
  }

  fn insert_identity(
    &mut self,
    scope_id: i64,
    account_pk: i64,
    identity: &Identity,
    email_norm: Option<&str>,
    merge_pk: Option<i64>,
  ) -> Result<bool> {
    let profile = profile_text(identity);
    let inserted = self.query_opt(
      "INSERT INTO identities (scope_id, account_pk, provider, user_id, connection, is_social, email,
         email_norm, email_verified, profile_data, linked_at, merge_pk, connection_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
       ON CONFLICT DO NOTHING RETURNING pk",
      &[
        &scope_id,
        &account_pk,
        &identity.provider,
        &identity.user_id,
        &identity.connection,
        &identity.is_social,
        &identity.email,
        &email_norm,
        &identity.email_verified,
        &profile,
        &identity.linked_at,
        &merge_pk,
        &identity.connection_id,
      ],
    )?;
    Ok(inserted.is_some())
  }

  fn update_identity(
    &mut self,
    pk: i64,
    identity: &Identity,
    email_norm: Option<&str>,
  ) -> Result<()> {
    self.defer(
      "UPDATE identities SET connection = $2, is_social = $3, email = $4, email_norm = $5,
         email_verified = $6, profile_data = $7, connection_id = $8
       WHERE pk = $1",
      vec![
        Box::new(pk),
        Box::new(identity.connection.clone()),
        Box::new(identity.is_social),
        Box::new(identity.email.clone()),
        Box::new(email_norm.map(str::to_string)),
        Box::new(identity.email_verified),
        Box::new(profile_text(identity)),
        Box::new(identity.connection_id.clone()),
      ],
    );
    Ok(())
  }

  fn delete_identity(&mut self, pk: i64) -> Result<()> {
    self.defer("DELETE FROM identities WHERE pk = $1", vec![Box::new(pk)]);
    Ok(())
  }

  fn move_identity(&mut self, pk: i64, to_pk: i64, linked_at: i64) -> Result<()> {
    self.defer(
      "UPDATE identities SET account_pk = $2, merge_pk = NULL, linked_at = $3 WHERE pk = $1",
      vec![Box::new(pk), Box::new(to_pk), Box::new(linked_at)],
    );
    Ok(())
  }

  fn move_merged_identity(&mut self, pk: i64, to_pk: i64, linked_at: i64) -> Result<()> {
    self.defer(
      "UPDATE identities SET account_pk = $2, linked_at = $3 WHERE pk = $1",
      vec![Box::new(pk), Box::new(to_pk), Box::new(linked_at)],
    );
    Ok(())
  }

  fn move_identities(&mut self, from_pk: i64, to_pk: i64, linked_at: i64) -> Result<()> {
    self.defer(
      "UPDATE identities SET account_pk = $2, linked_at = $3 WHERE account_pk = $1",
      vec![Box::new(from_pk), Box::new(to_pk), Box::new(linked_at)],
    );
    Ok(())
  }

  fn stamp_merge(&mut self, account_pk: i64, merge_pk: i64) -> Result<()> {
    self.defer(
      "UPDATE identities SET merge_pk = $2 WHERE account_pk = $1 AND merge_pk IS NULL",
      vec![Box::new(account_pk), Box::new(merge_pk)],
    );
    Ok(())
  }

  fn identities_of_merge(
    &mut self,
    account_pk: i64,
    merge_pk: i64,
  ) -> Result<Vec<(i64, String, String)>> {
    Ok(
      self
        .query(
          "SELECT pk, provider, user_id FROM identities WHERE account_pk = $1 AND merge_pk = $2
           ORDER BY pk",
          &[&account_pk, &merge_pk],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect(),
    )
  }

  fn touch_account(&mut self, pk: i64, now: i64) -> Result<()> {
    self.defer(
      "UPDATE accounts SET version = version + 1, updated_at = $2 WHERE pk = $1",
      vec![Box::new(pk), Box::new(now)],
    );
    Ok(())
  }

  fn merges_of(&mut self, primary_pk: i64) -> Result<Vec<i64>> {
    Ok(
      self
        .query(
          "SELECT pk FROM account_merges WHERE primary_pk = $1 ORDER BY pk",
          &[&primary_pk],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect(),
    )
  }

  fn insert_merge(&mut self, scope_id: i64, m: &NewMerge<'_>) -> Result<i64> {
    let row = self.query_opt(
      "INSERT INTO account_merges (scope_id, primary_pk, oid, secondary_id, state, credentials, policy, merged_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING pk",
      &[
        &scope_id,
        &m.primary_pk,
        &m.oid,
        &m.secondary_id,
        &m.state,
        &m.credentials,
        &m.policy,
        &m.merged_at,
      ],
    )?;
    row
      .map(|r| r.get(0))
      .ok_or_else(|| Error::storage("storage error: the merge record insert returned no row"))
  }

  fn move_merges(&mut self, from_pk: i64, to_pk: i64) -> Result<()> {
    self.defer(
      "UPDATE account_merges SET primary_pk = $2 WHERE primary_pk = $1",
      vec![Box::new(from_pk), Box::new(to_pk)],
    );
    Ok(())
  }

  fn move_held_merge(&mut self, merge_pk: i64, from_pk: i64, to_pk: i64) -> Result<bool> {
    let moved = self.execute(
      "UPDATE account_merges SET primary_pk = $3
       WHERE pk = $1 AND primary_pk = $2 AND restored_at IS NULL",
      &[&merge_pk, &from_pk, &to_pk],
    )?;
    Ok(moved == 1)
  }

  fn unrestored_merge(&mut self, merge_pk: i64) -> Result<Option<MergeRecord>> {
    let row = self.query_opt(
      "SELECT oid, state, credentials FROM account_merges WHERE pk = $1 AND restored_at IS NULL",
      &[&merge_pk],
    )?;
    Ok(row.map(|r| MergeRecord {
      pk: merge_pk,
      oid: r.get(0),
      state: r.get(1),
      credentials: r.get(2),
    }))
  }

  fn mark_restored(&mut self, merge_pk: i64, now: i64, restored_as: &str) -> Result<()> {
    self.defer(
      "UPDATE account_merges SET restored_at = $2, restored_as = $3 WHERE pk = $1",
      vec![
        Box::new(merge_pk),
        Box::new(now),
        Box::new(restored_as.to_string()),
      ],
    );
    Ok(())
  }

  fn accounts_with_email(&mut self, scope_id: i64, email_norm: &str) -> Result<Vec<AccountRow>> {
    Ok(
      self
        .query(
          &format!(
            "SELECT {ROW_COLUMNS} FROM accounts a
             WHERE a.pk IN (SELECT i.account_pk FROM identities i WHERE i.scope_id = $1 AND i.email_norm = $2
                            UNION SELECT e.pk FROM accounts e WHERE e.scope_id = $1 AND e.email_norm = $2)
             ORDER BY a.pk"
          ),
          &[&scope_id, &email_norm],
        )?
        .iter()
        .map(read_row)
        .collect(),
    )
  }

  fn link_suggestions(&mut self, pk: i64) -> Result<Vec<LinkSuggestion>> {
    Ok(
      self
        .query(
          "SELECT DISTINCT a.account_id, o.email_norm, a.pk
           FROM identities m
           JOIN identities o ON o.scope_id = m.scope_id AND o.email_norm = m.email_norm
             AND o.email_verified AND o.account_pk <> m.account_pk
           JOIN accounts a ON a.pk = o.account_pk
           WHERE m.account_pk = $1 AND m.email_verified AND m.email_norm IS NOT NULL
           ORDER BY a.pk, o.email_norm",
          &[&pk],
        )?
        .iter()
        .map(|r| LinkSuggestion {
          linked_account_id: r.get(0),
          email: r.get(1),
        })
        .collect(),
    )
  }
}

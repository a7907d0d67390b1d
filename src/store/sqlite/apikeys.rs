//! API keys and access tokens on SQLite. Rows only (rules: `domain::apikeys`). Keys are looked
//! up across scopes: a key's row names the scope a request acts in.

use rusqlite::{params, OptionalExtension, Row};

use super::SqliteTx;
use crate::domain::apikeys::{AccessGrant, ApiKeyInfo, ApiKeyRows, KeyFilter, NewApiKey};
use crate::error::Result;

const KEY_COLUMNS: &str =
  "k.client_id, s.org_id, s.environment, k.name, k.key_hint, k.created_at, k.revoked_at";

fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
  Ok(ApiKeyInfo {
    client_id: r.get(0)?,
    org_id: r.get(1)?,
    environment: r.get(2)?,
    name: r.get(3)?,
    key_hint: r.get(4)?,
    created_at: r.get(5)?,
    revoked_at: r.get(6)?,
  })
}

impl ApiKeyRows for SqliteTx<'_> {
  fn insert_api_key(&mut self, scope_id: i64, key: &NewApiKey) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO api_keys (scope_id, client_id, key_hash, secret_hash, key_hint, name, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      )?
      .execute(params![
        scope_id,
        key.client_id,
        &key.key_hash[..],
        &key.secret_hash[..],
        key.key_hint,
        key.name,
        key.created_at
      ])?;
    Ok(())
  }

  fn api_key(&mut self, client_id: &str) -> Result<Option<ApiKeyInfo>> {
    Ok(
      self
        .conn
        .prepare_cached(&format!(
          "SELECT {KEY_COLUMNS} FROM api_keys k JOIN scopes s ON s.id = k.scope_id WHERE k.client_id = ?1"
        ))?
        .query_row(params![client_id], key_row)
        .optional()?,
    )
  }

  fn list_api_keys(&mut self, filter: &KeyFilter) -> Result<Vec<ApiKeyInfo>> {
    let rows = self
      .conn
      .prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN scopes s ON s.id = k.scope_id
         WHERE (?1 IS NULL OR s.org_id = ?1) AND (?2 IS NULL OR s.environment = ?2)
         ORDER BY k.pk LIMIT ?3"
      ))?
      .query_map(
        params![filter.org_id, filter.environment, filter.limit],
        key_row,
      )?
      .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
  }

  fn revoke_api_key(&mut self, client_id: &str, now_ms: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE api_keys SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
      )?
      .execute(params![client_id, now_ms])?;
    self
      .conn
      .prepare_cached(
        "DELETE FROM api_access_tokens WHERE key_pk = (SELECT pk FROM api_keys WHERE client_id = ?1)",
      )?
      .execute(params![client_id])?;
    Ok(())
  }

  fn live_api_key(&mut self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyInfo>> {
    Ok(
      self
        .conn
        .prepare_cached(&format!(
          "SELECT {KEY_COLUMNS} FROM api_keys k JOIN scopes s ON s.id = k.scope_id
           WHERE k.key_hash = ?1 AND k.revoked_at IS NULL"
        ))?
        .query_row(params![&key_hash[..]], key_row)
        .optional()?,
    )
  }

  fn live_api_key_secret(&mut self, client_id: &str) -> Result<Option<(ApiKeyInfo, Vec<u8>)>> {
    Ok(
      self
        .conn
        .prepare_cached(&format!(
          "SELECT {KEY_COLUMNS}, k.secret_hash FROM api_keys k JOIN scopes s ON s.id = k.scope_id
           WHERE k.client_id = ?1 AND k.revoked_at IS NULL"
        ))?
        .query_row(params![client_id], |r| Ok((key_row(r)?, r.get(7)?)))
        .optional()?,
    )
  }

  fn prune_access_tokens(&mut self, now_s: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("DELETE FROM api_access_tokens WHERE expires_at <= ?1")?
      .execute(params![now_s])?;
    Ok(())
  }

  fn insert_access_token(
    &mut self,
    token_hash: &[u8; 32],
    grant: &AccessGrant,
    now_ms: i64,
  ) -> Result<bool> {
    let n = self
      .conn
      .prepare_cached(
        "INSERT INTO api_access_tokens (hash, key_pk, audience, created_at, expires_at)
         SELECT ?1, pk, ?3, ?4, ?5 FROM api_keys WHERE client_id = ?2 AND revoked_at IS NULL",
      )?
      .execute(params![
        &token_hash[..],
        grant.key.client_id,
        grant.audience,
        now_ms,
        grant.expires_at
      ])?;
    Ok(n == 1)
  }

  fn access_token(
    &mut self,
    token_hash: &[u8; 32],
    audience: &str,
    now_s: i64,
  ) -> Result<Option<AccessGrant>> {
    Ok(
      self
        .conn
        .prepare_cached(&format!(
          "SELECT {KEY_COLUMNS}, t.audience, t.expires_at FROM api_access_tokens t
           JOIN api_keys k ON k.pk = t.key_pk JOIN scopes s ON s.id = k.scope_id
           WHERE t.hash = ?1 AND t.audience = ?2 AND t.expires_at > ?3 AND k.revoked_at IS NULL"
        ))?
        .query_row(params![&token_hash[..], audience, now_s], |r| {
          Ok(AccessGrant {
            key: key_row(r)?,
            audience: r.get(7)?,
            expires_at: r.get(8)?,
          })
        })
        .optional()?,
    )
  }
}

//! API keys and access tokens (SQL side; the rules are in `crate::apikeys`). Keys are looked
//! up across scopes: a key's row names the scope a request acts in.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{Pending, Scope, SqliteStore};
use crate::apikeys::{AccessGrant, ApiKeyInfo, KeyFilter, NewApiKey};
use crate::error::{Error, Result};

/// Storage of API keys, access tokens and scope look-ups for the server.
pub trait ApiKeyStore: Send + Sync {
  /// Stores a new key of `scope`.
  fn insert_api_key(&self, scope: &Scope, key: NewApiKey) -> Pending<ApiKeyInfo>;
  /// Keys oldest first, revoked ones included.
  fn list_api_keys(&self, filter: KeyFilter) -> Pending<Vec<ApiKeyInfo>>;
  /// Marks a key revoked (idempotent) and deletes its access tokens; `NOT_FOUND` if unknown.
  fn revoke_api_key(&self, client_id: String, now_ms: i64) -> Pending<ApiKeyInfo>;
  /// The live (not revoked) key whose API key has this digest.
  fn find_api_key(&self, key_hash: [u8; 32]) -> Pending<Option<ApiKeyInfo>>;
  /// A live key and its secret's digest, by client id.
  fn api_key_secret(&self, client_id: String) -> Pending<Option<(ApiKeyInfo, Vec<u8>)>>;
  /// Stores an access token's digest for a live key (false if the key was revoked meanwhile)
  /// and prunes expired tokens.
  fn insert_access_token(
    &self,
    token_hash: [u8; 32],
    grant: AccessGrant,
    now_ms: i64,
  ) -> Pending<bool>;
  /// The grant of a live, unexpired token issued for `audience`.
  fn find_access_token(
    &self,
    token_hash: [u8; 32],
    audience: String,
    now_s: i64,
  ) -> Pending<Option<AccessGrant>>;
  /// An existing scope, without creating it.
  fn find_scope(&self, org_id: String, environment: String) -> Pending<Option<Scope>>;
}

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

fn key_by_client_id(conn: &Connection, client_id: &str) -> Result<Option<ApiKeyInfo>> {
  Ok(
    conn
      .prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN scopes s ON s.id = k.scope_id WHERE k.client_id = ?1"
      ))?
      .query_row(params![client_id], key_row)
      .optional()?,
  )
}

pub fn insert(conn: &Connection, scope: &Scope, key: &NewApiKey) -> Result<ApiKeyInfo> {
  conn
    .prepare_cached(
      "INSERT INTO api_keys (scope_id, client_id, key_hash, secret_hash, key_hint, name, created_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
      scope.id,
      key.client_id,
      &key.key_hash[..],
      &key.secret_hash[..],
      key.key_hint,
      key.name,
      key.created_at
    ])?;
  key_by_client_id(conn, &key.client_id)?.ok_or_else(|| Error::storage("stored key not found"))
}

pub fn list(conn: &Connection, filter: &KeyFilter) -> Result<Vec<ApiKeyInfo>> {
  let rows = conn
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

pub fn revoke(conn: &Connection, client_id: &str, now_ms: i64) -> Result<ApiKeyInfo> {
  conn
    .prepare_cached(
      "UPDATE api_keys SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![client_id, now_ms])?;
  conn
    .prepare_cached(
      "DELETE FROM api_access_tokens WHERE key_pk = (SELECT pk FROM api_keys WHERE client_id = ?1)",
    )?
    .execute(params![client_id])?;
  key_by_client_id(conn, client_id)?
    .ok_or_else(|| Error::not_found(format!("No API key with client_id {client_id}")))
}

pub fn find(conn: &Connection, key_hash: &[u8]) -> Result<Option<ApiKeyInfo>> {
  Ok(
    conn
      .prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN scopes s ON s.id = k.scope_id
         WHERE k.key_hash = ?1 AND k.revoked_at IS NULL"
      ))?
      .query_row(params![key_hash], key_row)
      .optional()?,
  )
}

pub fn secret(conn: &Connection, client_id: &str) -> Result<Option<(ApiKeyInfo, Vec<u8>)>> {
  Ok(
    conn
      .prepare_cached(&format!(
        "SELECT {KEY_COLUMNS}, k.secret_hash FROM api_keys k JOIN scopes s ON s.id = k.scope_id
         WHERE k.client_id = ?1 AND k.revoked_at IS NULL"
      ))?
      .query_row(params![client_id], |r| Ok((key_row(r)?, r.get(7)?)))
      .optional()?,
  )
}

pub fn insert_token(
  conn: &Connection,
  token_hash: &[u8],
  grant: &AccessGrant,
  now_ms: i64,
) -> Result<bool> {
  conn
    .prepare_cached("DELETE FROM api_access_tokens WHERE expires_at <= ?1")?
    .execute(params![now_ms / 1000])?;
  let n = conn
    .prepare_cached(
      "INSERT INTO api_access_tokens (hash, key_pk, audience, created_at, expires_at)
       SELECT ?1, pk, ?3, ?4, ?5 FROM api_keys WHERE client_id = ?2 AND revoked_at IS NULL",
    )?
    .execute(params![
      token_hash,
      grant.key.client_id,
      grant.audience,
      now_ms,
      grant.expires_at
    ])?;
  Ok(n == 1)
}

pub fn find_token(
  conn: &Connection,
  token_hash: &[u8],
  audience: &str,
  now_s: i64,
) -> Result<Option<AccessGrant>> {
  Ok(
    conn
      .prepare_cached(&format!(
        "SELECT {KEY_COLUMNS}, t.audience, t.expires_at FROM api_access_tokens t
         JOIN api_keys k ON k.pk = t.key_pk JOIN scopes s ON s.id = k.scope_id
         WHERE t.hash = ?1 AND t.audience = ?2 AND t.expires_at > ?3 AND k.revoked_at IS NULL"
      ))?
      .query_row(params![token_hash, audience, now_s], |r| {
        Ok(AccessGrant {
          key: key_row(r)?,
          audience: r.get(7)?,
          expires_at: r.get(8)?,
        })
      })
      .optional()?,
  )
}

pub fn scope(conn: &Connection, org_id: &str, environment: &str) -> Result<Option<Scope>> {
  Ok(
    conn
      .prepare_cached("SELECT id FROM scopes WHERE org_id = ?1 AND environment = ?2")?
      .query_row(params![org_id, environment], |r| r.get::<_, i64>(0))
      .optional()?
      .map(|id| Scope {
        id,
        org_id: org_id.to_string(),
        environment: environment.to_string(),
      }),
  )
}

impl ApiKeyStore for SqliteStore {
  fn insert_api_key(&self, scope: &Scope, key: NewApiKey) -> Pending<ApiKeyInfo> {
    let scope = scope.clone();
    self.write(move |conn| insert(conn, &scope, &key))
  }

  fn list_api_keys(&self, filter: KeyFilter) -> Pending<Vec<ApiKeyInfo>> {
    self.read(move |conn| list(conn, &filter))
  }

  fn revoke_api_key(&self, client_id: String, now_ms: i64) -> Pending<ApiKeyInfo> {
    self.write(move |conn| revoke(conn, &client_id, now_ms))
  }

  fn find_api_key(&self, key_hash: [u8; 32]) -> Pending<Option<ApiKeyInfo>> {
    self.read(move |conn| find(conn, &key_hash))
  }

  fn api_key_secret(&self, client_id: String) -> Pending<Option<(ApiKeyInfo, Vec<u8>)>> {
    self.read(move |conn| secret(conn, &client_id))
  }

  fn insert_access_token(
    &self,
    token_hash: [u8; 32],
    grant: AccessGrant,
    now_ms: i64,
  ) -> Pending<bool> {
    self.write(move |conn| insert_token(conn, &token_hash, &grant, now_ms))
  }

  fn find_access_token(
    &self,
    token_hash: [u8; 32],
    audience: String,
    now_s: i64,
  ) -> Pending<Option<AccessGrant>> {
    self.read(move |conn| find_token(conn, &token_hash, &audience, now_s))
  }

  fn find_scope(&self, org_id: String, environment: String) -> Pending<Option<Scope>> {
    self.read(move |conn| scope(conn, &org_id, &environment))
  }
}

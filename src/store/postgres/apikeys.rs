//! API keys and access tokens on PostgreSQL. Rows only (rules: `domain::apikeys`).

use tokio_postgres::Row;

use super::conn::PgTx;
use crate::domain::apikeys::{AccessGrant, ApiKeyInfo, ApiKeyRows, KeyFilter, NewApiKey};
use crate::error::Result;

const KEY_COLUMNS: &str =
  "k.client_id, s.org_id, s.environment, k.name, k.key_hint, k.created_at, k.revoked_at";

fn key_row(r: &Row) -> ApiKeyInfo {
  ApiKeyInfo {
    client_id: r.get(0),
    org_id: r.get(1),
    environment: r.get(2),
    name: r.get(3),
    key_hint: r.get(4),
    created_at: r.get(5),
    revoked_at: r.get(6),
  }
}

impl ApiKeyRows for PgTx<'_> {
  fn insert_api_key(&mut self, scope_id: i64, key: &NewApiKey) -> Result<()> {
    self.defer(
      "INSERT INTO api_keys (scope_id, client_id, key_hash, secret_hash, key_hint, name, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)",
      vec![
        Box::new(scope_id),
        Box::new(key.client_id.clone()),
        Box::new(key.key_hash.to_vec()),
        Box::new(key.secret_hash.to_vec()),
        Box::new(key.key_hint.clone()),
        Box::new(key.name.clone()),
        Box::new(key.created_at),
      ],
    );
    Ok(())
  }

  fn api_key(&mut self, client_id: &str) -> Result<Option<ApiKeyInfo>> {
    Ok(
      self
        .query_opt(
          &format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN scopes s ON s.id = k.scope_id WHERE k.client_id = $1"
          ),
          &[&client_id],
        )?
        .map(|r| key_row(&r)),
    )
  }

  fn list_api_keys(&mut self, filter: &KeyFilter) -> Result<Vec<ApiKeyInfo>> {
    Ok(
      self
        .query(
          &format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN scopes s ON s.id = k.scope_id
             WHERE ($1::text IS NULL OR s.org_id = $1) AND ($2::text IS NULL OR s.environment = $2)
             ORDER BY k.pk LIMIT $3"
          ),
          &[&filter.org_id, &filter.environment, &filter.limit],
        )?
        .iter()
        .map(key_row)
        .collect(),
    )
  }

  fn revoke_api_key(&mut self, client_id: &str, now_ms: i64) -> Result<()> {
    self.defer(
      "UPDATE api_keys SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL",
      vec![Box::new(client_id.to_string()), Box::new(now_ms)],
    );
    self.defer(
      "DELETE FROM api_access_tokens WHERE key_pk = (SELECT pk FROM api_keys WHERE client_id = $1)",
      vec![Box::new(client_id.to_string())],
    );
    Ok(())
  }

  fn live_api_key(&mut self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyInfo>> {
    Ok(
      self
        .query_opt(
          &format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN scopes s ON s.id = k.scope_id
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
          ),
          &[&key_hash.as_slice()],
        )?
        .map(|r| key_row(&r)),
    )
  }

  fn live_api_key_secret(&mut self, client_id: &str) -> Result<Option<(ApiKeyInfo, Vec<u8>)>> {
    Ok(
      self
        .query_opt(
          &format!(
            "SELECT {KEY_COLUMNS}, k.secret_hash FROM api_keys k JOIN scopes s ON s.id = k.scope_id
             WHERE k.client_id = $1 AND k.revoked_at IS NULL"
          ),
          &[&client_id],
        )?
        .map(|r| (key_row(&r), r.get(7))),
    )
  }

  fn prune_access_tokens(&mut self, now_s: i64) -> Result<()> {
    self.defer(
      "DELETE FROM api_access_tokens WHERE expires_at <= $1",
      vec![Box::new(now_s)],
    );
    Ok(())
  }

  fn insert_access_token(
    &mut self,
    token_hash: &[u8; 32],
    grant: &AccessGrant,
    now_ms: i64,
  ) -> Result<bool> {
    let n = self.execute(
      "INSERT INTO api_access_tokens (hash, key_pk, audience, created_at, expires_at)
       SELECT $1, pk, $3, $4, $5 FROM api_keys WHERE client_id = $2 AND revoked_at IS NULL",
      &[
        &token_hash.as_slice(),
        &grant.key.client_id,
        &grant.audience,
        &now_ms,
        &grant.expires_at,
      ],
    )?;
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
        .query_opt(
          &format!(
            "SELECT {KEY_COLUMNS}, t.audience, t.expires_at FROM api_access_tokens t
             JOIN api_keys k ON k.pk = t.key_pk JOIN scopes s ON s.id = k.scope_id
             WHERE t.hash = $1 AND t.audience = $2 AND t.expires_at > $3 AND k.revoked_at IS NULL"
          ),
          &[&token_hash.as_slice(), &audience, &now_s],
        )?
        .map(|r| AccessGrant {
          key: key_row(&r),
          audience: r.get(7),
          expires_at: r.get(8),
        }),
    )
  }
}

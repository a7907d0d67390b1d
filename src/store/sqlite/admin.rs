//! What `stats` and `listSigningKeys` read on SQLite. Rows only (rules: `domain::admin`).

use rusqlite::params;

use super::SqliteTx;
use crate::domain::admin::{AdminRows, SigningKeyInfo, Stats};
use crate::error::Result;

impl AdminRows for SqliteTx<'_> {
  /// Each count on an index that starts with the scope.
  fn scope_counts(&mut self, scope_id: i64, now_ms: i64) -> Result<Stats> {
    let conn = self.conn;
    let count = |sql: &str, now: Option<i64>| -> Result<i64> {
      let mut stmt = conn.prepare_cached(sql)?;
      Ok(match now {
        Some(n) => stmt.query_row(params![scope_id, n], |r| r.get(0))?,
        None => stmt.query_row([scope_id], |r| r.get(0))?,
      })
    };
    Ok(Stats {
      accounts: count("SELECT count(*) FROM accounts WHERE scope_id = ?1", None)?,
      identities: count("SELECT count(*) FROM identities WHERE scope_id = ?1", None)?,
      consents: count("SELECT count(*) FROM consents WHERE scope_id = ?1", None)?,
      active_consents: count(
        "SELECT count(*) FROM consents WHERE scope_id = ?1 AND active = 1 AND expires_at > ?2",
        Some(now_ms),
      )?,
      tokens: count(
        "SELECT count(*) FROM session_tokens t JOIN token_families f ON f.pk = t.family_pk
         WHERE f.scope_id = ?1 AND t.exp > ?2 AND t.revoked_at IS NULL AND f.revoked_at IS NULL",
        Some(now_ms.div_euclid(1000)),
      )?,
      events: count("SELECT count(*) FROM events WHERE scope_id = ?1", None)?,
      ..Stats::default()
    })
  }

  /// The file's size is measured outside the transaction (`SqliteStore::file_usage`).
  fn stored_bytes(&mut self) -> Result<Option<u64>> {
    Ok(None)
  }

  fn signing_key_list(&mut self, scope_id: i64) -> Result<Vec<SigningKeyInfo>> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT kid, created_at, retired_at FROM signing_keys WHERE scope_id = ?1 ORDER BY pk",
        )?
        .query_map([scope_id], |r| {
          Ok(SigningKeyInfo {
            kid: r.get(0)?,
            created_at: r.get(1)?,
            retired_at: r.get(2)?,
            current: false,
          })
        })?
        .collect::<rusqlite::Result<_>>()?,
    )
  }
}

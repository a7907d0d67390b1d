//! What `stats` and `listSigningKeys` read on PostgreSQL. Rows only (rules: `domain::admin`).

use super::conn::PgTx;
use crate::domain::admin::{AdminRows, SigningKeyInfo, Stats};
use crate::error::Result;

impl AdminRows for PgTx<'_> {
  /// One round trip: every count of the scope in one statement.
  fn scope_counts(&mut self, scope_id: i64, now_ms: i64) -> Result<Stats> {
    let now_s = now_ms.div_euclid(1000);
    let row = self.query_opt(
      "SELECT
         (SELECT count(*) FROM accounts WHERE scope_id = $1),
         (SELECT count(*) FROM identities WHERE scope_id = $1),
         (SELECT count(*) FROM consents WHERE scope_id = $1),
         (SELECT count(*) FROM consents WHERE scope_id = $1 AND active AND expires_at > $2),
         (SELECT count(*) FROM session_tokens t JOIN token_families f ON f.pk = t.family_pk
           WHERE f.scope_id = $1 AND t.exp > $3 AND t.revoked_at IS NULL AND f.revoked_at IS NULL),
         (SELECT count(*) FROM events WHERE scope_id = $1)",
      &[&scope_id, &now_ms, &now_s],
    )?;
    Ok(row.map_or_else(Stats::default, |r| Stats {
      accounts: r.get(0),
      identities: r.get(1),
      consents: r.get(2),
      active_consents: r.get(3),
      tokens: r.get(4),
      events: r.get(5),
      ..Stats::default()
    }))
  }

  /// The schema's tables with their indexes and TOAST data.
  fn stored_bytes(&mut self) -> Result<Option<u64>> {
    let row = self.query_opt(
      "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind = 'r'",
      &[],
    )?;
    Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
  }

  fn signing_key_list(&mut self, scope_id: i64) -> Result<Vec<SigningKeyInfo>> {
    Ok(
      self
        .query(
          "SELECT kid, created_at, retired_at FROM signing_keys WHERE scope_id = $1 ORDER BY pk",
          &[&scope_id],
        )?
        .iter()
        .map(|r| SigningKeyInfo {
          kid: r.get(0),
          created_at: r.get(1),
          retired_at: r.get(2),
          current: false,
        })
        .collect(),
    )
  }
}

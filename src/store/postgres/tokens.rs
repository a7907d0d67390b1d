//! The session-token tables on PostgreSQL. Rows only (rules: `domain::tokens`).
//!
//! Revocation log entries are numbered from the writing transaction's id (see
//! `store::postgres`): a verifier that read the log up to a point never misses an entry a
//! slower transaction commits later below it. Bumping an epoch also queues a `NOTIFY`, so other
//! processes' verifiers reload within milliseconds of the commit.

use super::conn::PgTx;
use super::{NOTIFY_CHANNEL, XID_ID};
use crate::domain::tokens::families::{LiveToken, RefreshRow};
use crate::domain::tokens::keys::StoredKey;
use crate::domain::tokens::revocation::{Revocation, RevocationPage, StoredToken};
use crate::domain::tokens::{Claims, FamilyRows, RevocationRows, SigningKeyRows, TokenTx};
use crate::error::Result;

impl TokenTx for PgTx<'_> {}

impl SigningKeyRows for PgTx<'_> {
  fn signing_keys(&mut self, scope_id: i64) -> Result<Vec<StoredKey>> {
    Ok(
      self
        .query(
          "SELECT pk, kid, secret, retired_at IS NOT NULL FROM signing_keys WHERE scope_id = $1 ORDER BY pk",
          &[&scope_id],
        )?
        .into_iter()
        .map(|r| StoredKey {
          seq: r.get(0),
          kid: r.get(1),
          sealed: r.get(2),
          retired: r.get(3),
        })
        .collect(),
    )
  }

  fn live_signing_keys(&mut self, scope_id: i64) -> Result<Vec<StoredKey>> {
    Ok(
      self
        .query(
          "SELECT pk, kid, secret FROM signing_keys WHERE scope_id = $1 AND retired_at IS NULL",
          &[&scope_id],
        )?
        .into_iter()
        .map(|r| StoredKey {
          seq: r.get(0),
          kid: r.get(1),
          sealed: r.get(2),
          retired: false,
        })
        .collect(),
    )
  }

  fn live_signing_key(&mut self, scope_id: i64, kid: &str) -> Result<Option<Vec<u8>>> {
    Ok(
      self
        .query_opt(
          "SELECT secret FROM signing_keys WHERE scope_id = $1 AND kid = $2 AND retired_at IS NULL",
          &[&scope_id, &kid],
        )?
        .map(|r| r.get(0)),
    )
  }

  fn insert_signing_key(
    &mut self,
    scope_id: i64,
    kid: &str,
    sealed: &[u8],
    now_ms: i64,
  ) -> Result<()> {
    self.defer(
      "INSERT INTO signing_keys (scope_id, kid, secret, created_at) VALUES ($1, $2, $3, $4)",
      vec![
        Box::new(scope_id),
        Box::new(kid.to_string()),
        Box::new(sealed.to_vec()),
        Box::new(now_ms),
      ],
    );
    Ok(())
  }

  fn retire_signing_key(&mut self, scope_id: i64, kid: &str, now_ms: i64) -> Result<()> {
    self.defer(
      "UPDATE signing_keys SET retired_at = $3 WHERE scope_id = $1 AND kid = $2 AND retired_at IS NULL",
      vec![Box::new(scope_id), Box::new(kid.to_string()), Box::new(now_ms)],
    );
    Ok(())
  }
}

impl FamilyRows for PgTx<'_> {
  fn account_pk(&mut self, scope_id: i64, account_id: &str) -> Result<Option<i64>> {
    Ok(
      self
        .query_opt(
          "SELECT pk FROM accounts WHERE scope_id = $1 AND account_id = $2",
          &[&scope_id, &account_id],
        )?
        .map(|r| r.get(0)),
    )
  }

  fn latest_live_token(
    &mut self,
    account_pk: i64,
    scopes: Option<&str>,
    now: i64,
    max_exp: i64,
  ) -> Result<Option<LiveToken>> {
    Ok(
      self
        .query_opt(
          "SELECT t.jti, t.kid, t.iat, t.exp, t.family_pk, k.secret
             FROM token_families f
             JOIN session_tokens t ON t.family_pk = f.pk
             JOIN signing_keys k ON k.scope_id = f.scope_id AND k.kid = t.kid
            WHERE f.account_pk = $1 AND f.scopes IS NOT DISTINCT FROM $2::text
              AND f.expires_at > $3
              AND t.revoked_at IS NULL AND f.revoked_at IS NULL AND k.retired_at IS NULL
              AND t.exp > $3 AND t.exp <= $4
            ORDER BY t.exp DESC LIMIT 1",
          &[&account_pk, &scopes, &now, &max_exp],
        )?
        .map(|r| LiveToken {
          jti: r.get(0),
          kid: r.get(1),
          iat: r.get(2),
          exp: r.get(3),
          family: r.get(4),
          sealed_key: r.get(5),
        }),
    )
  }

  fn insert_family(
    &mut self,
    scope_id: i64,
    account_pk: i64,
    scopes: Option<&str>,
    ttl: i64,
    created_at_ms: i64,
    expires_at: i64,
  ) -> Result<i64> {
    Ok(
      self
        .query(
          "INSERT INTO token_families (scope_id, account_pk, scopes, ttl, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING pk",
          &[
            &scope_id,
            &account_pk,
            &scopes,
            &ttl,
            &created_at_ms,
            &expires_at,
          ],
        )?
        .first()
        .map(|r| r.get(0))
        .unwrap_or(0),
    )
  }

  fn extend_family(&mut self, family: i64, until: i64) -> Result<()> {
    self.defer(
      "UPDATE token_families SET expires_at = $2 WHERE pk = $1 AND expires_at < $2",
      vec![Box::new(family), Box::new(until)],
    );
    Ok(())
  }

  fn insert_session_token(&mut self, claims: &Claims, family: i64, kid: &str) -> Result<()> {
    self.defer(
      "INSERT INTO session_tokens (family_pk, jti, kid, iat, exp) VALUES ($1, $2, $3, $4, $5)",
      vec![
        Box::new(family),
        Box::new(claims.jti.clone()),
        Box::new(kid.to_string()),
        Box::new(claims.iat),
        Box::new(claims.exp),
      ],
    );
    Ok(())
  }

  fn insert_refresh_token(
    &mut self,
    hash: &[u8; 32],
    family: i64,
    jti: &str,
    expires_at: i64,
  ) -> Result<()> {
    self.defer(
      "INSERT INTO refresh_tokens (hash, family_pk, jti, expires_at) VALUES ($1, $2, $3, $4)",
      vec![
        Box::new(hash.to_vec()),
        Box::new(family),
        Box::new(jti.to_string()),
        Box::new(expires_at),
      ],
    );
    Ok(())
  }

  fn find_refresh_token(&mut self, hash: &[u8; 32]) -> Result<Option<RefreshRow>> {
    Ok(
      self
        .query_opt(
          "SELECT r.family_pk, r.expires_at, r.used_at IS NOT NULL, r.revoked_at IS NOT NULL,
                  f.scope_id, f.scopes, f.ttl, f.revoked_at IS NOT NULL, a.account_id
             FROM refresh_tokens r
             JOIN token_families f ON f.pk = r.family_pk
             JOIN accounts a ON a.pk = f.account_pk
            WHERE r.hash = $1",
          &[&hash.as_slice()],
        )?
        .map(|r| RefreshRow {
          family: r.get(0),
          expires_at: r.get(1),
          used: r.get(2),
          revoked: r.get(3),
          scope_id: r.get(4),
          scopes: r.get(5),
          ttl: r.get(6),
          family_revoked: r.get(7),
          account_id: r.get(8),
        }),
    )
  }

  fn mark_refresh_used(&mut self, hash: &[u8; 32], now_ms: i64) -> Result<()> {
    self.defer(
      "UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1",
      vec![Box::new(hash.to_vec()), Box::new(now_ms)],
    );
    Ok(())
  }

  /// Queued with the next statements (the counts would cost a round trip): reports no backlog,
  /// so the next pass comes a second later.
  fn prune_expired(&mut self, horizon: i64, batch: i64) -> Result<bool> {
    // A family's tokens and refresh tokens go with it (ON DELETE CASCADE).
    for sql in [
      "DELETE FROM token_families WHERE pk IN
         (SELECT pk FROM token_families WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
      "DELETE FROM token_revocations WHERE seq IN
         (SELECT seq FROM token_revocations WHERE kind = 'jti' AND expires_at < $1 LIMIT $2
          FOR UPDATE SKIP LOCKED)",
      "DELETE FROM token_uses WHERE (scope_id, purpose, jti) IN
         (SELECT scope_id, purpose, jti FROM token_uses WHERE expires_at < $1 LIMIT $2
          FOR UPDATE SKIP LOCKED)",
    ] {
      self.defer(sql, vec![Box::new(horizon), Box::new(batch)]);
    }
    Ok(false)
  }

  fn prune_family(&mut self, family: i64, now: i64, horizon: i64) -> Result<()> {
    self.defer(
      "DELETE FROM session_tokens WHERE family_pk = $1 AND exp < $2",
      vec![Box::new(family), Box::new(horizon)],
    );
    self.defer(
      "DELETE FROM refresh_tokens WHERE family_pk = $1 AND expires_at < $2",
      vec![Box::new(family), Box::new(now)],
    );
    Ok(())
  }
}

impl RevocationRows for PgTx<'_> {
  fn bump_token_epoch(&mut self, scope_id: i64) -> Result<()> {
    self.defer(
      "INSERT INTO token_epochs (scope_id, epoch) VALUES ($1, 1)
       ON CONFLICT (scope_id) DO UPDATE SET epoch = token_epochs.epoch + 1",
      vec![Box::new(scope_id)],
    );
    if !self.bumped.contains(&scope_id) {
      self.bumped.push(scope_id);
      // Delivered at commit, to every listening process.
      self.defer(
        "SELECT pg_notify($1, $2)",
        vec![
          Box::new(NOTIFY_CHANNEL.to_string()),
          Box::new(super::notify_payload(self.schema(), scope_id)),
        ],
      );
    }
    Ok(())
  }

  fn token_epoch(&mut self, scope_id: i64) -> Result<i64> {
    Ok(
      self
        .query_opt(
          "SELECT epoch FROM token_epochs WHERE scope_id = $1",
          &[&scope_id],
        )?
        .map(|r| r.get(0))
        .unwrap_or(0),
    )
  }

  /// Every committed entry after `after`, and the point before which no entry can appear any
  /// more (the oldest running transaction's id): the next read resumes there.
  fn revocations_after(&mut self, scope_id: i64, after: i64) -> Result<RevocationPage> {
    let rows = self.query(
      "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint * 65536 AS horizon)
       SELECT h.horizon, r.seq, r.kind, r.value, r.cutoff, r.expires_at
         FROM h LEFT JOIN LATERAL (
           SELECT seq, kind, value, cutoff, expires_at FROM token_revocations
            WHERE scope_id = $1 AND seq > $2 ORDER BY seq) r ON TRUE",
      &[&scope_id, &after],
    )?;
    let mut page = RevocationPage {
      entries: Vec::new(),
      resume_after: after,
    };
    for r in rows {
      let horizon: i64 = r.get(0);
      page.resume_after = page.resume_after.max(horizon - 1);
      let Some(kind) = r.get::<_, Option<String>>(2) else {
        continue;
      };
      let value: String = r.get(3);
      page.entries.push(match kind.as_str() {
        "jti" => Revocation::Jti {
          jti: value,
          exp: r.get::<_, Option<i64>>(5).unwrap_or(i64::MAX),
        },
        _ => Revocation::Account {
          account_id: value,
          cutoff: r.get::<_, Option<i64>>(4).unwrap_or(0),
        },
      });
    }
    Ok(page)
  }

  fn jti_listed(&mut self, scope_id: i64, jti: &str) -> Result<bool> {
    Ok(
      self
        .query(
          "SELECT EXISTS (SELECT 1 FROM token_revocations WHERE scope_id = $1 AND kind = 'jti' AND value = $2)",
          &[&scope_id, &jti],
        )?
        .first()
        .map(|r| r.get(0))
        .unwrap_or(false),
    )
  }

  fn is_revoked(&mut self, scope_id: i64, jti: &str, account_id: &str, iat: i64) -> Result<bool> {
    Ok(
      self
        .query(
          "SELECT EXISTS (SELECT 1 FROM token_revocations WHERE scope_id = $1 AND kind = 'jti' AND value = $2)
               OR EXISTS (SELECT 1 FROM token_revocations WHERE scope_id = $1 AND kind = 'account'
                            AND value = $3 AND cutoff > $4)",
          &[&scope_id, &jti, &account_id, &iat],
        )?
        .first()
        .map(|r| r.get(0))
        .unwrap_or(false),
    )
  }

  fn insert_jti_revocation(&mut self, scope_id: i64, jti: &str, exp: i64) -> Result<()> {
    let serial = self.next_serial()?;
    self.defer(
      format!(
        "INSERT INTO token_revocations (seq, scope_id, kind, value, expires_at)
         VALUES ({XID_ID} + $1, $2, 'jti', $3, $4)"
      ),
      vec![
        Box::new(serial),
        Box::new(scope_id),
        Box::new(jti.to_string()),
        Box::new(exp),
      ],
    );
    Ok(())
  }

  fn set_account_cutoff(&mut self, scope_id: i64, account_id: &str, cutoff: i64) -> Result<()> {
    self.defer(
      "DELETE FROM token_revocations WHERE scope_id = $1 AND kind = 'account' AND value = $2",
      vec![Box::new(scope_id), Box::new(account_id.to_string())],
    );
    let serial = self.next_serial()?;
    self.defer(
      format!(
        "INSERT INTO token_revocations (seq, scope_id, kind, value, cutoff)
         VALUES ({XID_ID} + $1, $2, 'account', $3, $4)"
      ),
      vec![
        Box::new(serial),
        Box::new(scope_id),
        Box::new(account_id.to_string()),
        Box::new(cutoff),
      ],
    );
    Ok(())
  }

  fn insert_token_use(
    &mut self,
    scope_id: i64,
    purpose: &str,
    jti: &str,
    used_at_ms: i64,
    expires_at: i64,
  ) -> Result<bool> {
    let n = self.execute(
      "INSERT INTO token_uses (scope_id, purpose, jti, used_at, expires_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT DO NOTHING",
      &[&scope_id, &purpose, &jti, &used_at_ms, &expires_at],
    )?;
    Ok(n > 0)
  }

  fn family_is_live(&mut self, family: i64, now: i64) -> Result<bool> {
    Ok(
      self
        .query(
          "SELECT EXISTS (SELECT 1 FROM session_tokens WHERE family_pk = $1 AND revoked_at IS NULL AND exp > $2)
               OR EXISTS (SELECT 1 FROM refresh_tokens WHERE family_pk = $1 AND used_at IS NULL
                            AND revoked_at IS NULL AND expires_at > $2)",
          &[&family, &now],
        )?
        .first()
        .map(|r| r.get(0))
        .unwrap_or(false),
    )
  }

  fn revoke_family_rows(
    &mut self,
    scope_id: i64,
    family: i64,
    now_ms: i64,
    log_after: i64,
  ) -> Result<()> {
    // Each log entry takes its own serial, so the tokens are read first.
    let tokens: Vec<(String, i64)> = self
      .query(
        "SELECT jti, exp FROM session_tokens WHERE family_pk = $1 AND revoked_at IS NULL AND exp > $2",
        &[&family, &log_after],
      )?
      .into_iter()
      .map(|r| (r.get(0), r.get(1)))
      .collect();
    for (jti, exp) in tokens {
      self.insert_jti_revocation(scope_id, &jti, exp)?;
    }
    self.defer(
      "UPDATE session_tokens SET revoked_at = $2 WHERE family_pk = $1 AND revoked_at IS NULL",
      vec![Box::new(family), Box::new(now_ms)],
    );
    self.defer(
      "UPDATE token_families SET revoked_at = $2 WHERE pk = $1 AND revoked_at IS NULL",
      vec![Box::new(family), Box::new(now_ms)],
    );
    Ok(())
  }

  fn account_families(&mut self, account_pk: i64) -> Result<Vec<i64>> {
    Ok(
      self
        .query(
          "SELECT pk FROM token_families WHERE account_pk = $1 AND revoked_at IS NULL",
          &[&account_pk],
        )?
        .into_iter()
        .map(|r| r.get(0))
        .collect(),
    )
  }

  fn session_token(
    &mut self,
    scope_id: i64,
    account_id: &str,
    jti: &str,
  ) -> Result<Option<StoredToken>> {
    Ok(
      self
        .query_opt(
          "SELECT t.family_pk, t.revoked_at IS NOT NULL
             FROM accounts a
             JOIN token_families f ON f.account_pk = a.pk
             JOIN session_tokens t ON t.family_pk = f.pk AND t.jti = $3
            WHERE a.scope_id = $1 AND a.account_id = $2",
          &[&scope_id, &account_id, &jti],
        )?
        .map(|r| StoredToken {
          family: r.get(0),
          revoked: r.get(1),
        }),
    )
  }

  fn revoke_session_token_row(&mut self, family: i64, jti: &str, now_ms: i64) -> Result<()> {
    self.defer(
      "UPDATE session_tokens SET revoked_at = $3 WHERE family_pk = $1 AND jti = $2",
      vec![
        Box::new(family),
        Box::new(jti.to_string()),
        Box::new(now_ms),
      ],
    );
    Ok(())
  }

  fn revoke_refresh_of(&mut self, family: i64, jti: &str, now_ms: i64, now: i64) -> Result<u64> {
    self.execute(
      "UPDATE refresh_tokens SET revoked_at = $3
        WHERE family_pk = $1 AND jti = $2 AND revoked_at IS NULL AND used_at IS NULL
          AND expires_at > $4",
      &[&family, &jti, &now_ms, &now],
    )
  }
}

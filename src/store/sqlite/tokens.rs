//! The session-token tables on SQLite (schema: migrations 2 and 9): signing keys, families,
//! issued tokens (claims), refresh-token hashes, the revocation log, epochs and token uses.
//! Rows only; the rules are in `domain::tokens`.

use rusqlite::{params, OptionalExtension};

use super::SqliteTx;
use crate::domain::tokens::families::{LiveToken, RefreshRow};
use crate::domain::tokens::keys::StoredKey;
use crate::domain::tokens::revocation::{Revocation, RevocationPage, StoredToken};
use crate::domain::tokens::{Claims, FamilyRows, RevocationRows, SigningKeyRows, TokenTx};
use crate::error::Result;

impl TokenTx for SqliteTx<'_> {}

/// Families examined per pruning pass (see `prune_expired`).
const FAMILY_SWEEP: i64 = 1024;

thread_local! {
  /// Where this thread's (its connection's) sweep of token_families resumes: a pk.
  static FAMILY_SWEEP_AFTER: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

impl SigningKeyRows for SqliteTx<'_> {
  fn signing_keys(&mut self, scope_id: i64) -> Result<Vec<StoredKey>> {
    let mut stmt = self.conn.prepare_cached(
      "SELECT pk, kid, secret, retired_at IS NOT NULL FROM signing_keys WHERE scope_id = ?1 ORDER BY pk",
    )?;
    let rows = stmt.query_map([scope_id], |r| {
      Ok(StoredKey {
        seq: r.get(0)?,
        kid: r.get(1)?,
        sealed: r.get(2)?,
        retired: r.get(3)?,
      })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
  }

  fn live_signing_keys(&mut self, scope_id: i64) -> Result<Vec<StoredKey>> {
    // No ORDER BY: reading the few live keys costs less than sorting them.
    let mut stmt = self.conn.prepare_cached(
      "SELECT pk, kid, secret FROM signing_keys WHERE scope_id = ?1 AND retired_at IS NULL",
    )?;
    let rows = stmt.query_map([scope_id], |r| {
      Ok(StoredKey {
        seq: r.get(0)?,
        kid: r.get(1)?,
        sealed: r.get(2)?,
        retired: false,
      })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
  }

  fn live_signing_key(&mut self, scope_id: i64, kid: &str) -> Result<Option<Vec<u8>>> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT secret FROM signing_keys WHERE scope_id = ?1 AND kid = ?2 AND retired_at IS NULL",
        )?
        .query_row(params![scope_id, kid], |r| r.get(0))
        .optional()?,
    )
  }

  fn insert_signing_key(
    &mut self,
    scope_id: i64,
    kid: &str,
    sealed: &[u8],
    now_ms: i64,
  ) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO signing_keys (scope_id, kid, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
      )?
      .execute(params![scope_id, kid, sealed, now_ms])?;
    Ok(())
  }

  fn retire_signing_key(&mut self, scope_id: i64, kid: &str, now_ms: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE signing_keys SET retired_at = ?3 WHERE scope_id = ?1 AND kid = ?2 AND retired_at IS NULL",
      )?
      .execute(params![scope_id, kid, now_ms])?;
    Ok(())
  }
}

impl FamilyRows for SqliteTx<'_> {
  fn account_pk(&mut self, scope_id: i64, account_id: &str) -> Result<Option<i64>> {
    Ok(
      self
        .conn
        .prepare_cached("SELECT pk FROM accounts WHERE scope_id = ?1 AND account_id = ?2")?
        .query_row(params![scope_id, account_id], |r| r.get(0))
        .optional()?,
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
        .conn
        .prepare_cached(
          "SELECT t.jti, t.kid, t.iat, t.exp, t.family_pk, k.secret
             FROM token_families f
             JOIN session_tokens t ON t.family_pk = f.pk
             JOIN signing_keys k ON k.scope_id = f.scope_id AND k.kid = t.kid
            WHERE f.account_pk = ?1 AND f.scopes IS ?2 AND f.expires_at > ?3
              AND t.revoked_at IS NULL AND f.revoked_at IS NULL AND k.retired_at IS NULL
              AND t.exp > ?3 AND t.exp <= ?4
            ORDER BY t.exp DESC LIMIT 1",
        )?
        .query_row(params![account_pk, scopes, now, max_exp], |r| {
          Ok(LiveToken {
            jti: r.get(0)?,
            kid: r.get(1)?,
            iat: r.get(2)?,
            exp: r.get(3)?,
            family: r.get(4)?,
            sealed_key: r.get(5)?,
          })
        })
        .optional()?,
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
    self
      .conn
      .prepare_cached(
        "INSERT INTO token_families (scope_id, account_pk, scopes, ttl, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
      )?
      .execute(params![
        scope_id,
        account_pk,
        scopes,
        ttl,
        created_at_ms,
        expires_at
      ])?;
    Ok(self.conn.last_insert_rowid())
  }

  fn extend_family(&mut self, family: i64, until: i64) -> Result<()> {
    self
      .conn
      // Only when it grows: an unchanged row is not rewritten (nor its expiry index).
      .prepare_cached(
        "UPDATE token_families SET expires_at = ?2 WHERE pk = ?1 AND expires_at < ?2",
      )?
      .execute(params![family, until])?;
    Ok(())
  }

  fn insert_session_token(&mut self, claims: &Claims, family: i64, kid: &str) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO session_tokens (family_pk, jti, kid, iat, exp) VALUES (?1, ?2, ?3, ?4, ?5)",
      )?
      .execute(params![family, claims.jti, kid, claims.iat, claims.exp])?;
    Ok(())
  }

  fn insert_refresh_token(
    &mut self,
    hash: &[u8; 32],
    family: i64,
    jti: &str,
    expires_at: i64,
  ) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO refresh_tokens (hash, family_pk, jti, expires_at) VALUES (?1, ?2, ?3, ?4)",
      )?
      .execute(params![&hash[..], family, jti, expires_at])?;
    Ok(())
  }

  fn find_refresh_token(&mut self, hash: &[u8; 32]) -> Result<Option<RefreshRow>> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT r.family_pk, r.expires_at, r.used_at IS NOT NULL, r.revoked_at IS NOT NULL,
                  f.scope_id, f.scopes, f.ttl, f.revoked_at IS NOT NULL, a.account_id
             FROM refresh_tokens r
             JOIN token_families f ON f.pk = r.family_pk
             JOIN accounts a ON a.pk = f.account_pk
            WHERE r.hash = ?1",
        )?
        .query_row([&hash[..]], |r| {
          Ok(RefreshRow {
            family: r.get(0)?,
            expires_at: r.get(1)?,
            used: r.get(2)?,
            revoked: r.get(3)?,
            scope_id: r.get(4)?,
            scopes: r.get(5)?,
            ttl: r.get(6)?,
            family_revoked: r.get(7)?,
            account_id: r.get(8)?,
          })
        })
        .optional()?,
    )
  }

  fn mark_refresh_used(&mut self, hash: &[u8; 32], now_ms: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1")?
      .execute(params![&hash[..], now_ms])?;
    Ok(())
  }

  fn prune_expired(&mut self, horizon: i64, batch: i64) -> Result<bool> {
    // Families have no expiry index (one b-tree less written per mint): a pass examines the
    // next FAMILY_SWEEP families in pk order after where this connection's last pass stopped,
    // deletes the expired ones (their tokens and refresh tokens go with them, ON DELETE
    // CASCADE) and starts over after the last family. Expired rows only take space: every
    // read checks expiry. Families expire roughly in pk order, so a pass that deleted some
    // is likely to find more next to them: it reports a backlog.
    let after = FAMILY_SWEEP_AFTER.with(|c| c.get());
    let (last, seen): (Option<i64>, i64) = self
      .conn
      .prepare_cached(
        "SELECT max(pk), count(*) FROM
           (SELECT pk FROM token_families WHERE pk > ?1 ORDER BY pk LIMIT ?2)",
      )?
      .query_row(params![after, FAMILY_SWEEP], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let deleted = match last {
      Some(last) => self
        .conn
        .prepare_cached(
          "DELETE FROM token_families WHERE pk > ?1 AND pk <= ?2 AND expires_at < ?3",
        )?
        .execute(params![after, last, horizon])?,
      None => 0,
    };
    FAMILY_SWEEP_AFTER.with(|c| {
      c.set(if seen < FAMILY_SWEEP {
        0
      } else {
        last.unwrap_or(0)
      })
    });
    let mut backlog = deleted > 0;
    for sql in [
      "DELETE FROM token_revocations WHERE seq IN
         (SELECT seq FROM token_revocations WHERE kind = 'jti' AND expires_at < ?1 LIMIT ?2)",
      "DELETE FROM token_uses WHERE (scope_id, purpose, jti) IN
         (SELECT scope_id, purpose, jti FROM token_uses WHERE expires_at < ?1 LIMIT ?2)",
    ] {
      let n = self
        .conn
        .prepare_cached(sql)?
        .execute(params![horizon, batch])?;
      backlog |= n as i64 >= batch;
    }
    Ok(backlog)
  }

  fn prune_family(&mut self, family: i64, now: i64, horizon: i64) -> Result<()> {
    self
      .conn
      .prepare_cached("DELETE FROM session_tokens WHERE family_pk = ?1 AND exp < ?2")?
      .execute(params![family, horizon])?;
    self
      .conn
      .prepare_cached("DELETE FROM refresh_tokens WHERE family_pk = ?1 AND expires_at < ?2")?
      .execute(params![family, now])?;
    Ok(())
  }
}

impl RevocationRows for SqliteTx<'_> {
  fn bump_token_epoch(&mut self, scope_id: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO token_epochs (scope_id, epoch) VALUES (?1, 1)
         ON CONFLICT (scope_id) DO UPDATE SET epoch = epoch + 1",
      )?
      .execute([scope_id])?;
    Ok(())
  }

  fn token_epoch(&mut self, scope_id: i64) -> Result<i64> {
    Ok(
      self
        .conn
        .prepare_cached("SELECT epoch FROM token_epochs WHERE scope_id = ?1")?
        .query_row([scope_id], |r| r.get(0))
        .optional()?
        .unwrap_or(0),
    )
  }

  fn revocations_after(&mut self, scope_id: i64, after: i64) -> Result<RevocationPage> {
    // One writer at a time: entries become visible in `seq` order, so the next read can start
    // after the newest one seen.
    let mut page = RevocationPage {
      entries: Vec::new(),
      resume_after: after,
    };
    let mut stmt = self.conn.prepare_cached(
      "SELECT seq, kind, value, cutoff, expires_at FROM token_revocations
        WHERE scope_id = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![scope_id, after])?;
    while let Some(r) = rows.next()? {
      let seq: i64 = r.get(0)?;
      let kind: String = r.get(1)?;
      let value: String = r.get(2)?;
      page.entries.push(match kind.as_str() {
        "jti" => Revocation::Jti {
          jti: value,
          exp: r.get::<_, Option<i64>>(4)?.unwrap_or(i64::MAX),
        },
        _ => Revocation::Account {
          account_id: value,
          cutoff: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
        },
      });
      page.resume_after = page.resume_after.max(seq);
    }
    Ok(page)
  }

  fn jti_listed(&mut self, scope_id: i64, jti: &str) -> Result<bool> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT EXISTS (SELECT 1 FROM token_revocations WHERE scope_id = ?1 AND kind = 'jti' AND value = ?2)",
        )?
        .query_row(params![scope_id, jti], |r| r.get(0))?,
    )
  }

  fn is_revoked(&mut self, scope_id: i64, jti: &str, account_id: &str, iat: i64) -> Result<bool> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT EXISTS (SELECT 1 FROM token_revocations WHERE scope_id = ?1 AND kind = 'jti' AND value = ?2)
               OR EXISTS (SELECT 1 FROM token_revocations WHERE scope_id = ?1 AND kind = 'account'
                            AND value = ?3 AND cutoff > ?4)",
        )?
        .query_row(params![scope_id, jti, account_id, iat], |r| r.get(0))?,
    )
  }

  fn insert_jti_revocation(&mut self, scope_id: i64, jti: &str, exp: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO token_revocations (scope_id, kind, value, expires_at) VALUES (?1, 'jti', ?2, ?3)",
      )?
      .execute(params![scope_id, jti, exp])?;
    Ok(())
  }

  fn set_account_cutoff(&mut self, scope_id: i64, account_id: &str, cutoff: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "DELETE FROM token_revocations WHERE scope_id = ?1 AND kind = 'account' AND value = ?2",
      )?
      .execute(params![scope_id, account_id])?;
    self
      .conn
      .prepare_cached(
        "INSERT INTO token_revocations (scope_id, kind, value, cutoff) VALUES (?1, 'account', ?2, ?3)",
      )?
      .execute(params![scope_id, account_id, cutoff])?;
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
    let n = self
      .conn
      .prepare_cached(
        "INSERT OR IGNORE INTO token_uses (scope_id, purpose, jti, used_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
      )?
      .execute(params![scope_id, purpose, jti, used_at_ms, expires_at])?;
    Ok(n > 0)
  }

  fn family_is_live(&mut self, family: i64, now: i64) -> Result<bool> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT EXISTS (SELECT 1 FROM session_tokens WHERE family_pk = ?1 AND revoked_at IS NULL AND exp > ?2)
               OR EXISTS (SELECT 1 FROM refresh_tokens WHERE family_pk = ?1 AND used_at IS NULL
                            AND revoked_at IS NULL AND expires_at > ?2)",
        )?
        .query_row(params![family, now], |r| r.get(0))?,
    )
  }

  fn revoke_family_rows(
    &mut self,
    scope_id: i64,
    family: i64,
    now_ms: i64,
    log_after: i64,
  ) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO token_revocations (scope_id, kind, value, expires_at)
         SELECT ?1, 'jti', jti, exp FROM session_tokens
          WHERE family_pk = ?2 AND revoked_at IS NULL AND exp > ?3",
      )?
      .execute(params![scope_id, family, log_after])?;
    self
      .conn
      .prepare_cached(
        "UPDATE session_tokens SET revoked_at = ?2 WHERE family_pk = ?1 AND revoked_at IS NULL",
      )?
      .execute(params![family, now_ms])?;
    self
      .conn
      .prepare_cached(
        "UPDATE token_families SET revoked_at = ?2 WHERE pk = ?1 AND revoked_at IS NULL",
      )?
      .execute(params![family, now_ms])?;
    Ok(())
  }

  fn account_families(&mut self, account_pk: i64) -> Result<Vec<i64>> {
    Ok(
      self
        .conn
        .prepare_cached(
          "SELECT pk FROM token_families WHERE account_pk = ?1 AND revoked_at IS NULL",
        )?
        .query_map([account_pk], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?,
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
        .conn
        .prepare_cached(
          "SELECT t.family_pk, t.revoked_at IS NOT NULL
             FROM accounts a
             JOIN token_families f ON f.account_pk = a.pk
             JOIN session_tokens t ON t.family_pk = f.pk AND t.jti = ?3
            WHERE a.scope_id = ?1 AND a.account_id = ?2",
        )?
        .query_row(params![scope_id, account_id, jti], |r| {
          Ok(StoredToken {
            family: r.get(0)?,
            revoked: r.get(1)?,
          })
        })
        .optional()?,
    )
  }

  fn revoke_session_token_row(&mut self, family: i64, jti: &str, now_ms: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE session_tokens SET revoked_at = ?3 WHERE family_pk = ?1 AND jti = ?2",
      )?
      .execute(params![family, jti, now_ms])?;
    Ok(())
  }

  fn revoke_refresh_of(&mut self, family: i64, jti: &str, now_ms: i64, now: i64) -> Result<u64> {
    let n = self
      .conn
      .prepare_cached(
        "UPDATE refresh_tokens SET revoked_at = ?3
          WHERE family_pk = ?1 AND jti = ?2 AND revoked_at IS NULL AND used_at IS NULL
            AND expires_at > ?4",
      )?
      .execute(params![family, jti, now_ms, now])?;
    Ok(n as u64)
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::domain::tokens::FamilyRows;

  /// The sweep reaches every family however many there are: a few passes delete each expired
  /// family with its tokens and refresh tokens, and nothing live.
  #[test]
  fn pruning_sweeps_every_family() {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    super::super::schema::migrate(&mut conn).unwrap();
    conn
      .execute_batch(
        "INSERT INTO scopes (id, org_id, environment) VALUES (1, 'o', 'test');
         INSERT INTO accounts (pk, scope_id, account_id, oid, created_at, updated_at)
           VALUES (1, 1, 'a', 'oa', 0, 0);",
      )
      .unwrap();
    let families = 3 * FAMILY_SWEEP + 7;
    let mut tx = SqliteTx::new(&conn);
    for i in 0..families {
      // Every third family has expired (before the horizon, 1000).
      let expires_at = if i % 3 == 0 { 999 } else { 5000 };
      let f = tx.insert_family(1, 1, None, 60, 0, expires_at).unwrap();
      conn
        .execute(
          "INSERT INTO session_tokens (family_pk, jti, kid, iat, exp) VALUES (?1, ?2, 'k', 0, 1)",
          params![f, format!("j{f}")],
        )
        .unwrap();
      conn
        .execute(
          "INSERT INTO refresh_tokens (hash, family_pk, jti, expires_at) VALUES (?1, ?1, 'j', 1)",
          params![f],
        )
        .unwrap();
    }
    let count = |t: &str| -> i64 {
      conn
        .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
        .unwrap()
    };
    let live = families - (families + 2) / 3;
    let mut passes = 0;
    while count("token_families") > live {
      SqliteTx::new(&conn).prune_expired(1000, 256).unwrap();
      passes += 1;
      // FAMILY_SWEEP families a pass: four passes reach them all.
      assert!(passes <= 4, "the sweep did not reach every family");
    }
    assert_eq!(count("session_tokens"), live);
    assert_eq!(count("refresh_tokens"), live);
    assert_eq!(
      count("token_families WHERE expires_at < 1000"),
      0,
      "an expired family is left"
    );
  }
}

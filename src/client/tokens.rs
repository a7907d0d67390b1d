//! Session-token calls of a client (`getTokenForLinkedAccount` and friends): input parsing, a
//! job per call on the store, and the in-memory verifier.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::Vault;
use crate::clock::now_ms;
use crate::crypto::Sealer;
use crate::domain::tokens::{
  families, keys, parse, refresh_token_hash, revocation, Claims, Issued, MintRequest, Secret,
  TokenOptions, TokenPolicy, Verifier, MAX_KID_CHARS,
};
use crate::domain::{Scope, MAX_ACCOUNT_ID_CHARS};
use crate::error::{Error, ErrorKind, Result};
use crate::input::{self, Fields};
use crate::store::{self, Pending, Store};

/// A client's token state: its policy and its verifier (keys and revocations kept in memory and
/// fresh; see `domain::tokens::verifier`).
pub struct TokenRuntime {
  pub policy: TokenPolicy,
  pub verifier: Arc<Verifier>,
}

impl fmt::Debug for TokenRuntime {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct("TokenRuntime")
      .field("policy", &self.policy)
      .finish_non_exhaustive()
  }
}

/// At open: makes sure the scope has a live signing key (registering `signingSecret` when
/// given and new), then builds the verifier. Asked in a read first, so opening a database that
/// has its key writes nothing. Blocking: call it off Node's thread.
pub(crate) fn open_runtime(
  store: &dyn Store,
  sealer: &Arc<Sealer>,
  scope: &Scope,
  options: TokenOptions,
) -> Result<TokenRuntime> {
  let secret = options.signing_secret;
  let (s1, scope1, secret1) = (sealer.clone(), scope.clone(), secret.clone());
  let needs_key = store::read(store, move |tx| {
    keys::needs_signing_key(tx, &s1, &scope1, secret1.as_ref())
  })
  .wait()?;
  if needs_key {
    let (s2, scope2) = (sealer.clone(), scope.clone());
    store::write(store, move |tx| {
      keys::ensure_signing_key(tx, &s2, &scope2, secret.as_ref(), now_ms())
    })
    .wait()?;
  }
  let feed = store.token_feed(scope, sealer.clone())?;
  let verifier = Verifier::new(scope.clone(), options.policy.skew, feed, now_ms())?;
  Ok(TokenRuntime {
    policy: options.policy,
    verifier: Arc::new(verifier),
  })
}

fn token_arg<'v>(v: &'v Value, what: &str) -> Result<&'v str> {
  match v {
    Value::String(s) if !s.is_empty() => Ok(s),
    _ => Err(Error::new(
      ErrorKind::InvalidToken,
      format!("{what} is missing or not a string"),
    )),
  }
}

/// Client methods for session tokens.
impl Vault {
  /// `getTokenForLinkedAccount({ linked_account_id, ttl_seconds?, force_refresh?, scopes? })`.
  pub fn get_token_for_linked_account(&self, input: &Value) -> Pending<Issued> {
    let policy = self.tokens.policy;
    Pending::flatten(MintRequest::parse(input, policy.session_ttl).map(|req| {
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      store::write_point(&*self.store, move |tx| {
        families::mint(tx, &sealer, &scope, &req, policy, now_ms())
      })
    }))
  }

  /// `verifySessionToken` / `verifySessionTokenSync`: the claims of a valid token. Runs on the
  /// caller's thread in microseconds: no database round trip unless the database changed (see
  /// `domain::tokens::verifier`).
  pub fn verify_session_token(&self, token: &str) -> Result<Claims> {
    self.tokens.verifier.verify(token, now_ms())
  }

  /// `refreshSessionToken(refresh_token)`. A reused refresh token revokes its family (that is
  /// committed) and the call fails with `TOKEN_REVOKED`.
  pub fn refresh_session_token(&self, refresh_token: &Value) -> Pending<Issued> {
    let parsed = token_arg(refresh_token, "refresh token").and_then(|t| {
      refresh_token_hash(t)?;
      Ok(t.to_string())
    });
    Pending::flatten(parsed.map(|token| {
      let (sealer, scope, policy) = (self.sealer.clone(), self.scope.clone(), self.tokens.policy);
      store::write_committing_failure(&*self.store, move |tx| {
        families::refresh(tx, &sealer, &scope, &token, policy, now_ms())
      })
    }))
  }

  /// `revokeSessionToken(token)` → revoked_count (0 or 1).
  pub fn revoke_session_token(&self, token: &Value) -> Pending<i64> {
    let parsed = token_arg(token, "session token").and_then(|t| {
      parse(t)?;
      Ok(t.to_string())
    });
    Pending::flatten(parsed.map(|token| {
      let (sealer, scope, policy) = (self.sealer.clone(), self.scope.clone(), self.tokens.policy);
      store::write(&*self.store, move |tx| {
        revocation::revoke_token(tx, &sealer, &scope, &token, policy, now_ms())
      })
    }))
  }

  /// `revokeAllSessionTokens(linked_account_id)` → revoked_count.
  pub fn revoke_all_session_tokens(&self, id: &Value) -> Pending<i64> {
    Pending::flatten(
      input::id(Some(id), "linked_account_id", MAX_ACCOUNT_ID_CHARS).map(|id| {
        let scope = self.scope.clone();
        store::write(&*self.store, move |tx| {
          revocation::revoke_all(tx, &scope, &id, now_ms())
        })
      }),
    )
  }

  /// `rotateSigningKey({ signingSecret? })` → the new `kid`.
  pub fn rotate_signing_key(&self, options: Option<&Value>) -> Pending<String> {
    let parsed = Fields::new(options, "options").and_then(|f| {
      f.str("signingSecret")?
        .map(|s| Secret::parse(s, "signingSecret"))
        .transpose()
    });
    Pending::flatten(parsed.map(|secret| {
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      store::write(&*self.store, move |tx| {
        keys::rotate(tx, &sealer, &scope, secret.as_ref(), now_ms())
      })
    }))
  }

  /// `retireSigningKey(kid)`.
  pub fn retire_signing_key(&self, kid: &Value) -> Pending<()> {
    Pending::flatten(input::id(Some(kid), "kid", MAX_KID_CHARS).map(|kid| {
      let scope = self.scope.clone();
      store::write(&*self.store, move |tx| {
        keys::retire(tx, &scope, &kid, now_ms())
      })
    }))
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::accounts::{self as acc, WriteMode};
  use crate::crypto::Key;
  use crate::domain::tokens::{
    self as tokens, encode, families::prune, FamilyRows, TokenPolicy, REVOCATION_MARGIN_SECS,
  };
  use crate::store::sqlite::SqliteTx;
  use crate::store::{Durability, Engine, SqliteStore, StoreConfig};
  use serde_json::json;

  const POLICY: TokenPolicy = TokenPolicy {
    session_ttl: 3600,
    refresh_ttl: 7200,
    skew: 30,
  };
  const SECRET: &str = "a-signing-secret-of-at-least-32-bytes!!";

  /// A client reduced to its store, key ring, scope and verifier: the token calls run as the
  /// jobs `Vault` makes.
  struct Client {
    store: SqliteStore,
    sealer: Arc<Sealer>,
    scope: Scope,
    verifier: Arc<Verifier>,
  }

  fn open(path: &str, org: &str, secret: Option<&str>) -> Result<Client> {
    let sealer = Arc::new(Sealer::new(Key::from_bytes([5; 32])));
    let store = SqliteStore::open(
      StoreConfig {
        path: path.to_string(),
        durability: Durability::Normal,
        readers: 1,
      },
      sealer.clone(),
    )
    .wait()?;
    let scope = super::super::open_scope(&store, &sealer, Some(org.to_string()), "test")?;
    let signing_secret = secret
      .map(|s| Secret::parse(s, "signingSecret"))
      .transpose()?;
    let runtime = open_runtime(
      &store,
      &sealer,
      &scope,
      TokenOptions {
        signing_secret,
        policy: POLICY,
      },
    )?;
    Ok(Client {
      store,
      sealer,
      scope,
      verifier: runtime.verifier,
    })
  }

  impl Client {
    fn account(&self, id: &str) {
      let input = acc::parse_payload(&json!({ "linked_account_id": id })).unwrap();
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      store::write(&self.store, move |tx| {
        crate::domain::accounts::write(
          tx,
          &sealer,
          &scope,
          input.clone(),
          WriteMode::Upsert { if_version: None },
          now_ms(),
        )
      })
      .wait()
      .unwrap();
    }
    fn delete_account(&self, id: &str) -> Pending<()> {
      let (scope, id) = (self.scope.clone(), id.to_string());
      store::write(&self.store, move |tx| {
        crate::domain::accounts::delete(tx, &scope, &id, now_ms())
      })
    }
    fn mint(&self, id: &str, force: bool) -> Issued {
      self.mint_req(MintRequest {
        account_id: id.into(),
        ttl: POLICY.session_ttl,
        force_refresh: force,
        scopes: None,
      })
    }
    fn mint_req(&self, req: MintRequest) -> Issued {
      self.try_mint(req).unwrap()
    }
    fn try_mint(&self, req: MintRequest) -> Result<Issued> {
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      store::write(&self.store, move |tx| {
        families::mint(tx, &sealer, &scope, &req, POLICY, now_ms())
      })
      .wait()
    }
    fn verify(&self, t: &str) -> Result<Claims> {
      self.verifier.verify(t, crate::clock::now_ms())
    }
    fn code(&self, t: &str) -> &'static str {
      self.verify(t).unwrap_err().code()
    }
    fn refresh_at(&self, r: &str, at: i64) -> Result<Issued> {
      let (sealer, scope, r) = (self.sealer.clone(), self.scope.clone(), r.to_string());
      store::write_committing_failure(&self.store, move |tx| {
        families::refresh(tx, &sealer, &scope, &r, POLICY, at)
      })
      .wait()
    }
    fn refresh(&self, r: &str) -> Result<Issued> {
      self.refresh_at(r, now_ms())
    }
    fn revoke(&self, t: &str) -> Result<i64> {
      let (sealer, scope, t) = (self.sealer.clone(), self.scope.clone(), t.to_string());
      store::write(&self.store, move |tx| {
        revocation::revoke_token(tx, &sealer, &scope, &t, POLICY, now_ms())
      })
      .wait()
    }
    fn revoke_all(&self, id: &str) -> Pending<i64> {
      let (scope, id) = (self.scope.clone(), id.to_string());
      store::write(&self.store, move |tx| {
        revocation::revoke_all(tx, &scope, &id, now_ms())
      })
    }
    fn rotate(&self, secret: Option<Secret>) -> Pending<String> {
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      store::write(&self.store, move |tx| {
        keys::rotate(tx, &sealer, &scope, secret.as_ref(), now_ms())
      })
    }
    fn retire(&self, kid: &str) -> Pending<()> {
      let (scope, kid) = (self.scope.clone(), kid.to_string());
      store::write(&self.store, move |tx| {
        keys::retire(tx, &scope, &kid, now_ms())
      })
    }
  }

  fn temp_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db").to_string_lossy().to_string();
    (dir, path)
  }

  #[test]
  fn mint_reuse_force_and_revoke_across_clients() {
    let (dir, path) = temp_db();
    let a = open(&path, "org_1", Some(SECRET)).unwrap();
    let b = open(&path, "org_1", Some(SECRET)).unwrap();
    a.account("u1");
    let first = a.mint("u1", false);
    assert!(!first.reused);
    let c = a.verify(&first.token).unwrap();
    assert_eq!(c.linked_account_id, "u1");
    assert_eq!(c.exp - c.iat, POLICY.session_ttl);
    assert_eq!(b.verify(&first.token).unwrap(), c);
    // Reuse: the same string, a new refresh token.
    let again = a.mint("u1", false);
    assert!(again.reused);
    assert_eq!(again.token, first.token);
    assert_ne!(again.refresh_token, first.refresh_token);
    assert!(again.expires_in <= first.expires_in);
    let forced = a.mint("u1", true);
    assert_ne!(forced.token, first.token);
    // Different scopes: another token.
    let scoped = a.mint_req(MintRequest {
      account_id: "u1".into(),
      ttl: POLICY.session_ttl,
      force_refresh: false,
      scopes: Some(vec!["read".into()]),
    });
    assert_ne!(scoped.token, first.token);
    assert_eq!(
      a.verify(&scoped.token).unwrap().scopes,
      Some(vec!["read".into()])
    );
    // Unknown account.
    let e = a
      .try_mint(MintRequest {
        account_id: "nobody".into(),
        ttl: 60,
        force_refresh: false,
        scopes: None,
      })
      .unwrap_err();
    assert_eq!(e.code(), "NOT_FOUND");

    // Revoke through B; A sees it on its next call, and so does B.
    assert_eq!(b.revoke(&first.token).unwrap(), 1);
    assert_eq!(a.code(&first.token), "TOKEN_REVOKED");
    assert_eq!(b.code(&first.token), "TOKEN_REVOKED");
    assert_eq!(b.revoke(&first.token).unwrap(), 0);
    // Its refresh tokens died with it; the forced one is untouched.
    assert_eq!(
      a.refresh(&first.refresh_token).unwrap_err().code(),
      "TOKEN_REVOKED"
    );
    assert_eq!(
      a.refresh(&again.refresh_token).unwrap_err().code(),
      "TOKEN_REVOKED"
    );
    assert!(a.verify(&forced.token).is_ok());
    // A revoked token is not reused.
    let next = a.mint("u1", false);
    assert_ne!(next.token, first.token);

    // Durable: a client opened later still rejects it.
    for c in [a, b] {
      c.verifier.close();
      assert_eq!(c.code(&forced.token), "CLIENT_CLOSED");
      c.store.close().wait().unwrap();
    }
    let c = open(&path, "org_1", None).unwrap();
    assert_eq!(c.code(&first.token), "TOKEN_REVOKED");
    assert!(c.verify(&forced.token).is_ok());
    c.store.close().wait().unwrap();
    // Neither the secret nor any token or refresh token is in the files.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
      let bytes = std::fs::read(entry.unwrap().path()).unwrap();
      for needle in [
        SECRET,
        &first.token[first.token.len() - 20..],
        &first.refresh_token[5..25],
        &forced.refresh_token[5..25],
      ] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
      }
    }
  }

  #[test]
  fn refresh_rotation_and_reuse_detection() {
    let (_dir, path) = temp_db();
    let a = open(&path, "org_1", None).unwrap();
    let b = open(&path, "org_1", None).unwrap();
    a.account("u1");
    let t1 = a.mint("u1", false);
    let t2 = a.refresh(&t1.refresh_token).unwrap();
    assert_ne!(t2.token, t1.token);
    assert_ne!(t2.refresh_token, t1.refresh_token);
    assert_eq!(t2.claims.linked_account_id, "u1");
    assert!(b.verify(&t2.token).is_ok());
    assert!(b.verify(&t1.token).is_ok());
    let t3 = b.refresh(&t2.refresh_token).unwrap();
    // Reusing t1's refresh token revokes the whole family: t1, t2, t3 and t3's refresh token.
    assert_eq!(
      b.refresh(&t1.refresh_token).unwrap_err().code(),
      "TOKEN_REVOKED"
    );
    for t in [&t1.token, &t2.token, &t3.token] {
      assert_eq!(a.code(t), "TOKEN_REVOKED");
      assert_eq!(b.code(t), "TOKEN_REVOKED");
    }
    assert_eq!(
      a.refresh(&t3.refresh_token).unwrap_err().code(),
      "TOKEN_REVOKED"
    );
    // Unknown / malformed refresh tokens.
    let (unknown, _) = tokens::new_refresh_token().unwrap();
    assert_eq!(a.refresh(&unknown).unwrap_err().code(), "INVALID_TOKEN");
    assert_eq!(a.refresh("nope").unwrap_err().code(), "INVALID_TOKEN");
    // Expired refresh token.
    let t4 = a.mint("u1", true);
    let later = crate::clock::now_ms() + (POLICY.refresh_ttl + 5) * 1000;
    let e = a.refresh_at(&t4.refresh_token, later).unwrap_err();
    assert_eq!(e.code(), "TOKEN_EXPIRED");
    // Another org on the same file cannot use it.
    let other = open(&path, "org_2", None).unwrap();
    assert_eq!(
      other.refresh(&t4.refresh_token).unwrap_err().code(),
      "INVALID_TOKEN"
    );
    assert!(a.refresh(&t4.refresh_token).is_ok());
  }

  #[test]
  fn deleting_the_account_or_revoke_all_revokes_its_tokens() {
    let (_dir, path) = temp_db();
    let a = open(&path, "org_1", Some(SECRET)).unwrap();
    let b = open(&path, "org_1", Some(SECRET)).unwrap();
    a.account("u1");
    a.account("u2");
    let t1 = a.mint("u1", false);
    let t1b = a.mint("u1", true);
    let t2 = a.mint("u2", false);
    let n = a.revoke_all("u2").wait().unwrap();
    assert_eq!(n, 1);
    assert_eq!(b.code(&t2.token), "TOKEN_REVOKED");
    assert!(b.verify(&t1.token).is_ok());
    // A new token minted after revoke-all works.
    let t2n = a.mint("u2", false);
    assert!(b.verify(&t2n.token).is_ok());
    assert_eq!(
      a.revoke_all("ghost").wait().unwrap_err().code(),
      "NOT_FOUND"
    );

    b.delete_account("u1").wait().unwrap();
    assert_eq!(a.code(&t1.token), "TOKEN_REVOKED");
    assert_eq!(a.code(&t1b.token), "TOKEN_REVOKED");
    assert_eq!(
      a.refresh(&t1.refresh_token).unwrap_err().code(),
      "INVALID_TOKEN"
    );
    // Recreated with the same id: old tokens stay dead, new ones work.
    a.account("u1");
    assert_eq!(b.code(&t1.token), "TOKEN_REVOKED");
    let fresh = a.mint("u1", false);
    assert_ne!(fresh.token, t1.token);
    assert!(b.verify(&fresh.token).is_ok());

    // Events: revoke_all (u2) and account_deleted (u1, two sessions).
    let scope_id = a.scope.id;
    let events = a.store.read(move |conn| {
      let mut s = conn.prepare(
        "SELECT linked_account_id, data FROM events WHERE scope_id = ?1 AND type = 'session_tokens.revoked' ORDER BY id",
      )?;
      let rows = s
        .query_map([scope_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
      Ok(rows)
    });
    let events = events.wait().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].0, "u2");
    assert!(events[0].1.contains("\"revoked_count\":1"));
    assert_eq!(events[1].0, "u1");
    assert!(events[1].1.contains("\"revoked_count\":2"));
    assert!(events[1].1.contains("account_deleted"));
  }

  #[test]
  fn key_rotation_and_retirement() {
    let (_dir, path) = temp_db();
    let a = open(&path, "org_1", Some(SECRET)).unwrap();
    let b = open(&path, "org_1", Some(SECRET)).unwrap();
    a.account("u1");
    let t1 = a.mint("u1", false);
    let k1 = tokens::parse(&t1.token).unwrap().kid;
    let k2 = a.rotate(None).wait().unwrap();
    assert_ne!(k1, k2);
    // New tokens (and reuse: t1 keeps its key) ...
    let t2 = a.mint("u1", true);
    assert_eq!(tokens::parse(&t2.token).unwrap().kid, k2);
    assert!(b.verify(&t1.token).is_ok());
    assert!(b.verify(&t2.token).is_ok());
    // ... retiring k1 kills t1 everywhere; t1 is no longer reused.
    b.retire(&k1).wait().unwrap();
    assert_eq!(a.code(&t1.token), "INVALID_TOKEN");
    assert_eq!(b.code(&t1.token), "INVALID_TOKEN");
    assert!(a.verify(&t2.token).is_ok());
    // Idempotent; the last live key cannot be retired; unknown kid.
    b.retire(&k1).wait().unwrap();
    let e = b.retire(&k2).wait().unwrap_err();
    assert_eq!(
      (e.code(), e.field.as_deref()),
      ("VALIDATION_ERROR", Some("kid"))
    );
    assert_eq!(b.retire("nope").wait().unwrap_err().code(), "NOT_FOUND");
    // Rotating to a chosen secret; rotating to a known one is refused.
    let chosen = Secret::parse("another-secret-with-32-bytes-or-more", "s").unwrap();
    let k3 = a.rotate(Some(chosen.clone())).wait().unwrap();
    let t3 = a.mint("u1", true);
    assert_eq!(tokens::parse(&t3.token).unwrap().kid, k3);
    assert!(b.verify(&t3.token).is_ok());
    let e = a.rotate(Some(chosen)).wait().unwrap_err();
    assert_eq!(e.code(), "VALIDATION_ERROR");
    // Opening with the retired secret is refused; a new secret becomes the signing key.
    a.verifier.close();
    a.store.close().wait().unwrap();
    b.verifier.close();
    b.store.close().wait().unwrap();
    let e = open(&path, "org_1", Some(SECRET)).err().unwrap();
    assert_eq!(e.field.as_deref(), Some("signingSecret"));
    let c = open(&path, "org_1", Some("yet-another-secret-of-32-bytes-xxxx")).unwrap();
    c.account("u1");
    let t4 = c.mint("u1", true);
    let k4 = tokens::parse(&t4.token).unwrap().kid;
    assert!(k4 != k3 && k4 != k2);
    assert!(c.verify(&t3.token).is_ok());
  }

  #[test]
  fn memory_database_sees_its_own_revocations() {
    let a = open(":memory:", "org_1", None).unwrap();
    a.account("u1");
    let t1 = a.mint("u1", false);
    assert!(a.verify(&t1.token).is_ok());
    assert_eq!(a.revoke(&t1.token).unwrap(), 1);
    assert_eq!(a.code(&t1.token), "TOKEN_REVOKED");
    let t2 = a.mint("u1", false);
    let k2 = a.rotate(None).wait().unwrap();
    let k1 = tokens::parse(&t2.token).unwrap().kid;
    a.retire(&k1).wait().unwrap();
    assert_eq!(a.code(&t2.token), "INVALID_TOKEN");
    let t3 = a.mint("u1", false);
    assert_eq!(tokens::parse(&t3.token).unwrap().kid, k2);
    assert!(a.verify(&t3.token).is_ok());
    a.delete_account("u1").wait().unwrap();
    assert_eq!(a.code(&t3.token), "TOKEN_REVOKED");
  }

  #[test]
  fn external_tokens_verify_and_revoke_by_jti_and_cutoff() {
    let (_dir, path) = temp_db();
    let a = open(&path, "org_1", Some(SECRET)).unwrap();
    a.account("u1");
    let kid = tokens::parse(&a.mint("u1", false).token).unwrap().kid;
    let secret = Secret::parse(SECRET, "s").unwrap();
    let now = tokens::secs(crate::clock::now_ms());
    let make = |jti: &str, iat: i64, org: &str| {
      let c = Claims {
        org_id: org.into(),
        linked_account_id: "u1".into(),
        environment: "test".into(),
        iat,
        exp: now + 600,
        jti: jti.into(),
        scopes: None,
      };
      encode(&kid, &c, &secret).unwrap()
    };
    let ext = make("ext-1", now - 5, "org_1");
    assert!(a.verify(&ext).is_ok());
    assert_eq!(a.code(&make("x", now - 5, "org_2")), "INVALID_TOKEN");
    assert_eq!(a.revoke(&ext).unwrap(), 1);
    assert_eq!(a.revoke(&ext).unwrap(), 0);
    assert_eq!(a.code(&ext), "TOKEN_REVOKED");
    let ext2 = make("ext-2", now - 5, "org_1");
    assert!(a.verify(&ext2).is_ok());
    a.revoke_all("u1").wait().unwrap();
    assert_eq!(a.code(&ext2), "TOKEN_REVOKED");
    // Issued after the cutoff second: valid.
    assert!(a.verify(&make("ext-3", now + 1, "org_1")).is_ok());
  }

  /// Rewrites a closed file's token tables in the layout of schema version 8 (tokens keyed by
  /// jti with their account, refresh tokens indexed by jti and expiry: migration 2's tables,
  /// as linkvault wrote them before migration 9), rows as they are.
  fn downgrade_to_v8(path: &str) {
    let v2 = crate::store::sqlite::schema::migration_sql(2);
    let start = v2.find("CREATE TABLE token_families").unwrap();
    let end = v2.find("-- Append-only revocation log").unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn
      .execute_batch(&format!(
        "BEGIN;
         ALTER TABLE refresh_tokens RENAME TO r9;
         ALTER TABLE session_tokens RENAME TO s9;
         ALTER TABLE token_families RENAME TO f9;
         DROP INDEX token_families_account;
         DROP INDEX IF EXISTS token_families_expiry;
         DROP INDEX refresh_tokens_family;
         {}
         INSERT INTO token_families (pk, scope_id, account_pk, scopes, ttl, created_at, expires_at, revoked_at)
           SELECT pk, scope_id, account_pk, scopes, ttl, created_at, expires_at, revoked_at FROM f9;
         INSERT INTO session_tokens (jti, family_pk, account_pk, kid, iat, exp, revoked_at)
           SELECT t.jti, t.family_pk, f.account_pk, t.kid, t.iat, t.exp, t.revoked_at
           FROM s9 t JOIN f9 f ON f.pk = t.family_pk;
         INSERT INTO refresh_tokens (hash, family_pk, jti, expires_at, used_at, revoked_at)
           SELECT hash, family_pk, jti, expires_at, used_at, revoked_at FROM r9;
         DROP TABLE r9;
         DROP TABLE s9;
         DROP TABLE f9;
         PRAGMA user_version = 8;
         COMMIT;",
        &v2[start..end]
      ))
      .unwrap();
    let n: i64 = conn
      .query_row(
        "SELECT count(*) FROM sqlite_master WHERE name IN ('session_tokens_account', 'refresh_tokens_jti')",
        [],
        |r| r.get(0),
      )
      .unwrap();
    assert_eq!(n, 2);
  }

  /// A file of schema version 8 migrates to 9 with its tokens as they were: live tokens verify,
  /// revoked ones stay revoked, refresh tokens rotate, a used one is still detected as reused
  /// (and revokes its family), tokens are found again for reuse, for revokeSessionToken (with
  /// their refresh tokens) and for account deletion.
  #[test]
  fn tokens_survive_migration_9() {
    let (_dir, path) = temp_db();
    let a = open(&path, "org_1", None).unwrap();
    a.account("u1");
    a.account("u2");
    let live = a.mint("u1", false);
    let rotated = a.mint("u1", true);
    let next = a.refresh(&rotated.refresh_token).unwrap();
    let revoked = a.mint("u2", false);
    assert_eq!(a.revoke(&revoked.token).unwrap(), 1);
    let other = a.mint("u2", true);
    a.store.close().wait().unwrap();
    drop(a);
    downgrade_to_v8(&path);

    let b = open(&path, "org_1", None).unwrap();
    let version: i64 = b
      .store
      .read(|conn| Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?))
      .wait()
      .unwrap();
    assert_eq!(version, crate::store::sqlite::schema::latest_version());
    for t in [&live, &rotated, &next, &other] {
      assert!(b.verify(&t.token).is_ok());
    }
    assert_eq!(b.code(&revoked.token), "TOKEN_REVOKED");
    assert_eq!(
      b.refresh(&revoked.refresh_token).unwrap_err().code(),
      "TOKEN_REVOKED"
    );
    assert_eq!(b.revoke(&revoked.token).unwrap(), 0);
    assert!(b.mint("u1", false).reused);
    // revokeSessionToken finds a migrated token and its refresh token.
    assert_eq!(b.revoke(&other.token).unwrap(), 1);
    assert_eq!(b.code(&other.token), "TOKEN_REVOKED");
    assert_eq!(
      b.refresh(&other.refresh_token).unwrap_err().code(),
      "TOKEN_REVOKED"
    );
    // A refresh token used before the migration is a reuse: its family is revoked.
    assert_eq!(
      b.refresh(&rotated.refresh_token).unwrap_err().code(),
      "TOKEN_REVOKED"
    );
    assert_eq!(b.code(&next.token), "TOKEN_REVOKED");
    assert_eq!(
      b.refresh(&next.refresh_token).unwrap_err().code(),
      "TOKEN_REVOKED"
    );
    // The untouched family still rotates, then goes with its account.
    let fresh = b.refresh(&live.refresh_token).unwrap();
    assert!(b.verify(&fresh.token).is_ok());
    b.delete_account("u1").wait().unwrap();
    assert_eq!(b.code(&fresh.token), "TOKEN_REVOKED");
    assert_eq!(b.code(&live.token), "TOKEN_REVOKED");
  }

  #[test]
  fn expired_rows_are_pruned() {
    let (_dir, path) = temp_db();
    let a = open(&path, "org_1", None).unwrap();
    a.account("u1");
    let t = a.mint("u1", false);
    a.refresh(&t.refresh_token).unwrap();
    let t2 = a.mint("u1", true);
    assert_eq!(a.revoke(&t2.token).unwrap(), 1);
    a.revoke_all("u1").wait().unwrap();
    let counts = |a: &Client| {
      a.store
        .read(|conn| {
          let n = |t: &str| -> Result<i64> {
            Ok(conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?)
          };
          Ok([
            n("token_families")?,
            n("session_tokens")?,
            n("refresh_tokens")?,
            n("token_revocations WHERE kind = 'jti'")?,
            n("token_revocations WHERE kind = 'account'")?,
          ])
        })
        .wait()
        .unwrap()
    };
    assert_eq!(counts(&a), [2, 3, 3, 3, 1]);
    // Long after everything expired, one pass removes it all but the account cutoff.
    let later = crate::clock::now_ms() / 1000 + POLICY.refresh_ttl + REVOCATION_MARGIN_SECS + 10;
    a.store
      .write(move |conn| prune(&mut SqliteTx::new(conn), later))
      .wait()
      .unwrap();
    assert_eq!(counts(&a), [0, 0, 0, 0, 1]);
  }

  #[test]
  fn in_transaction_helpers_for_other_features() {
    let (_dir, path) = temp_db();
    let a = open(&path, "org_1", None).unwrap();
    a.account("u1");
    let t = a.mint("u1", false);
    let (sealer, scope) = (a.sealer.clone(), a.scope.clone());
    let consume = |purpose: &'static str, max_age: Option<i64>, at: i64| {
      let (sealer, scope, tok) = (sealer.clone(), scope.clone(), t.token.clone());
      a.store
        .write(move |conn| {
          revocation::consume_once(
            &mut SqliteTx::new(conn),
            &sealer,
            &scope,
            &tok,
            purpose,
            max_age,
            POLICY.skew,
            at,
          )
        })
        .wait()
    };
    let now = crate::clock::now_ms();
    assert_eq!(
      consume("link", Some(600), now).unwrap().linked_account_id,
      "u1"
    );
    assert_eq!(
      consume("link", Some(600), now).unwrap_err().code(),
      "TOKEN_REVOKED"
    );
    assert!(consume("other", None, now).is_ok());
    assert_eq!(
      consume("late", Some(600), now + 601_000)
        .unwrap_err()
        .code(),
      "TOKEN_EXPIRED"
    );
    // A failing caller job leaves the token unused.
    let (s2, sc2, tok2) = (sealer.clone(), scope.clone(), t.token.clone());
    let r: Result<()> = a
      .store
      .write(move |conn| {
        revocation::consume_once(
          &mut SqliteTx::new(conn),
          &s2,
          &sc2,
          &tok2,
          "rolled",
          None,
          30,
          now,
        )?;
        Err(Error::storage("caller failed"))
      })
      .wait();
    assert!(r.is_err());
    assert!(consume("rolled", None, now).is_ok());
    // revoke_account_in_txn inside another job; verify_in_txn sees it in the same transaction.
    let (s3, sc3, tok3) = (sealer.clone(), scope.clone(), t.token.clone());
    let n = a
      .store
      .write(move |conn| {
        let mut tx = SqliteTx::new(conn);
        let pk = tx.account_pk(sc3.id, "u1")?.unwrap();
        let n = revocation::revoke_account(&mut tx, &sc3, pk, "u1", "identity_linked", now)?;
        assert_eq!(
          revocation::verify_in_txn(&mut tx, &s3, &sc3, &tok3, 30, now)
            .unwrap_err()
            .code(),
          "TOKEN_REVOKED"
        );
        Ok(n)
      })
      .wait()
      .unwrap();
    assert_eq!(n, 1);
    assert_eq!(a.code(&t.token), "TOKEN_REVOKED");
  }
}

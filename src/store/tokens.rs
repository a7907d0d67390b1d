//! Session tokens in SQLite: signing keys (secrets sealed), token families, issued tokens,
//! refresh-token hashes, revocations, and the in-memory verifier that keeps verification off
//! the database.
//!
//! # Tables (migration 2)
//! - `signing_keys`: one row per key of a scope; `secret` sealed with the client's encryption
//!   key (AAD binds scope and kid). The newest live (not retired) key signs new tokens; every
//!   live key verifies.
//! - `token_families`: one row per mint (`getTokenForLinkedAccount` that did not reuse a token);
//!   every token and refresh token descended from it by refreshing belongs to it.
//! - `session_tokens`: the claims of every issued token (not the token: a reused token is
//!   re-signed from them, HMAC being deterministic; so no bearer token is stored at all).
//! - `refresh_tokens`: SHA-256 of each refresh token (never the token), single use.
//! - `token_revocations`: append-only log (`seq`) of revoked `jti`s and per-account cutoffs;
//!   `token_epochs`: a per-scope counter bumped in the same transaction as every change that
//!   can make a valid token invalid (a revocation, a key added or retired).
//! - `token_uses`: (purpose, jti) pairs consumed by [`consume_once`].
//!
//! # Revocation that takes effect at once, without a database round trip per verification
//! A verifier holds, in memory, the live keys of its scope, the revoked `jti`s that have not yet
//! expired (plus a margin) and the per-account cutoffs, together with the `epoch` and the last
//! revocation `seq` it has seen. Before each verification it asks SQLite whether the file has
//! changed since its last look, with `PRAGMA data_version` on a dedicated read-only connection:
//! the value changes whenever any other connection, in this process or another one, commits to
//! the file. It reads the WAL index in shared memory (no file read, no transaction left open)
//! and costs under a microsecond. Only when it changed does the verifier read the scope's epoch
//! (one indexed row) and, when that moved too, the keys and the revocations with a larger `seq`.
//! Both reads run in one snapshot, and the `data_version` remembered is the one of that
//! snapshot, so a commit landing in between is seen on the next call. A revocation is committed
//! (and its promise resolved) before any later verification starts, so every client on the
//! file, in any process, rejects the token from its very next call; a revocation never waits
//! for a timer or a cache expiry.
//!
//! A private `:memory:` database has no second connection. There the writer connection carries
//! a TEMP trigger on `token_epochs` calling a Rust function that raises a flag; a verification
//! that finds the flag raised reloads through the writer thread (after that commit).
//!
//! Revocations are durable rows, so they survive restarts; each is pruned once the token has
//! been expired for [`REVOCATION_MARGIN_SECS`] (longer than any allowed clock skew), after
//! which the token fails as expired anyway.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::json;

use super::sqlite::{Db, SqliteStore};
use super::{accounts, Pending, Scope};
use crate::crypto::Sealer;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{self, types};
use crate::tokens::{
  self, encode, new_refresh_token, random_id, refresh_token_hash, scopes_from_key, scopes_key,
  Check, Claims, Issued, MintRequest, Secret, TokenPolicy, REVOCATION_MARGIN_SECS,
};

/// Session-token storage of a client.
pub trait TokenStore: Send + Sync {
  /// Makes sure the scope has a live signing key (registering `secret` when given and new),
  /// then returns the scope's verifier. Blocking: call it off Node's thread.
  fn open_tokens(
    &self,
    scope: &Scope,
    secret: Option<Secret>,
    skew: i64,
  ) -> Result<Arc<dyn TokenVerifier>>;
  /// Returns a reusable token for the account and scopes, or mints a new one.
  fn mint_session_token(
    &self,
    scope: &Scope,
    req: MintRequest,
    policy: TokenPolicy,
  ) -> Pending<Issued>;
  /// Rotates a refresh token. A reused refresh token revokes its family (committed) and the
  /// inner result is `TOKEN_REVOKED`.
  fn refresh_session_token(
    &self,
    scope: &Scope,
    refresh_token: String,
    policy: TokenPolicy,
  ) -> Pending<Result<Issued>>;
  /// Revokes one token and the refresh tokens issued with it; 1 if anything changed.
  fn revoke_session_token(&self, scope: &Scope, token: String, policy: TokenPolicy)
    -> Pending<i64>;
  /// Revokes every token of an account; the number of sessions (families) revoked.
  fn revoke_all_session_tokens(&self, scope: &Scope, account_id: String) -> Pending<i64>;
  /// Adds a signing key (random, or `secret`) that signs from now on; returns its kid.
  fn rotate_signing_key(&self, scope: &Scope, secret: Option<Secret>) -> Pending<String>;
  /// Retires a key: tokens it signed stop verifying.
  fn retire_signing_key(&self, scope: &Scope, kid: String) -> Pending<()>;
}

/// Verifies session tokens of one scope from memory, kept fresh from the database.
pub trait TokenVerifier: Send + Sync {
  /// Full verification: framing, key, signature, claims, expiry, revocation. Microseconds in the
  /// common case; reads the database only when it changed.
  fn verify(&self, token: &str, now_ms: i64) -> Result<Claims>;
  /// Later verifications fail with `CLIENT_CLOSED`.
  fn close(&self);
}

fn invalid(message: &str) -> Error {
  Error::new(ErrorKind::InvalidToken, message)
}

fn revoked(message: &str) -> Error {
  Error::new(ErrorKind::TokenRevoked, message)
}

fn unknown_key() -> Error {
  invalid("session token was signed by an unknown or retired key")
}

fn secs(now_ms: i64) -> i64 {
  now_ms.div_euclid(1000)
}

// ---------------------------------------------------------------------------------------------
// Signing keys

pub(crate) fn key_aad(scope_id: i64, kid: &str) -> Vec<u8> {
  format!("linkvault/signing-key/v1/{scope_id}/{kid}").into_bytes()
}

fn open_key(sealer: &Sealer, scope_id: i64, kid: &str, sealed: &[u8]) -> Result<Secret> {
  Ok(Secret::from_bytes(
    sealer.open(sealed, &key_aad(scope_id, kid))?,
  ))
}

struct KeyRow {
  kid: String,
  sealed: Vec<u8>,
  retired: bool,
}

fn key_rows(conn: &Connection, scope_id: i64) -> Result<Vec<KeyRow>> {
  let mut stmt = conn.prepare_cached(
    "SELECT kid, secret, retired_at IS NOT NULL FROM signing_keys WHERE scope_id = ?1 ORDER BY pk",
  )?;
  let rows = stmt.query_map([scope_id], |r| {
    Ok(KeyRow {
      kid: r.get(0)?,
      sealed: r.get(1)?,
      retired: r.get(2)?,
    })
  })?;
  Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The key that signs new tokens: the newest live one. (Picked in Rust: an `ORDER BY` costs
/// more than reading the few live keys.)
fn current_key(conn: &Connection, sealer: &Sealer, scope: &Scope) -> Result<(String, Secret)> {
  let mut stmt = conn.prepare_cached(
    "SELECT pk, kid, secret FROM signing_keys WHERE scope_id = ?1 AND retired_at IS NULL",
  )?;
  let mut rows = stmt.query([scope.id])?;
  let mut best: Option<(i64, String, Vec<u8>)> = None;
  while let Some(r) = rows.next()? {
    let pk: i64 = r.get(0)?;
    if best.as_ref().is_none_or(|b| pk > b.0) {
      best = Some((pk, r.get(1)?, r.get(2)?));
    }
  }
  let (_, kid, sealed) = best.ok_or_else(|| Error::storage("no live signing key"))?;
  let secret = open_key(sealer, scope.id, &kid, &sealed)?;
  Ok((kid, secret))
}

/// A live key by kid.
fn live_key(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  kid: &str,
) -> Result<Option<Secret>> {
  let sealed: Option<Vec<u8>> = conn
    .prepare_cached(
      "SELECT secret FROM signing_keys WHERE scope_id = ?1 AND kid = ?2 AND retired_at IS NULL",
    )?
    .query_row(params![scope.id, kid], |r| r.get(0))
    .optional()?;
  sealed
    .map(|s| open_key(sealer, scope.id, kid, &s))
    .transpose()
}

/// Bumps the scope's epoch: verifiers reload keys and revocations.
/// After revoking: bump the scope's epoch (so every verifier reloads), prune, and append the
/// `session_tokens.revoked` event when something was revoked.
fn announce_revocation(
  conn: &Connection,
  scope: &Scope,
  account_id: &str,
  count: i64,
  reason: &str,
  now_ms: i64,
) -> Result<()> {
  bump_epoch(conn, scope.id)?;
  prune(conn, secs(now_ms))?;
  if count > 0 {
    events::append(
      conn,
      scope.id,
      types::SESSION_TOKENS_REVOKED,
      Some(account_id),
      &json!({ "revoked_count": count, "reason": reason }),
      now_ms,
    )?;
  }
  Ok(())
}

fn bump_epoch(conn: &Connection, scope_id: i64) -> Result<()> {
  conn
    .prepare_cached(
      "INSERT INTO token_epochs (scope_id, epoch) VALUES (?1, 1)
       ON CONFLICT (scope_id) DO UPDATE SET epoch = epoch + 1",
    )?
    .execute([scope_id])?;
  Ok(())
}

fn insert_key(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  secret: &Secret,
  reason: &str,
  now_ms: i64,
) -> Result<String> {
  let kid = random_id()?;
  // Seal under the file's key (it may have been rotated by another client): see store::keys.
  super::keys::sync(conn, sealer)?;
  let sealed = sealer.seal(secret.as_bytes(), &key_aad(scope.id, &kid))?;
  conn
    .prepare_cached(
      "INSERT INTO signing_keys (scope_id, kid, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![scope.id, kid, sealed, now_ms])?;
  bump_epoch(conn, scope.id)?;
  events::append(
    conn,
    scope.id,
    types::SIGNING_KEY_ADDED,
    None,
    &json!({ "kid": kid, "reason": reason }),
    now_ms,
  )?;
  Ok(kid)
}

/// The existing key row holding `secret`, if any.
fn find_secret<'r>(
  rows: &'r [KeyRow],
  sealer: &Sealer,
  scope_id: i64,
  secret: &Secret,
) -> Result<Option<&'r KeyRow>> {
  for row in rows {
    if open_key(sealer, scope_id, &row.kid, &row.sealed)?.ct_eq(secret) {
      return Ok(Some(row));
    }
  }
  Ok(None)
}

/// At open: with `signingSecret`, registers it as the newest key unless the scope already has
/// it (a retired one is refused); without, generates a key if the scope has no live one.
/// Whether opening needs to register a signing key (none live yet, or a new `signingSecret`).
/// Checked on a reader first, so opening a file that has its key writes nothing (and works on a
/// read-only file).
fn needs_signing_key(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  secret: Option<&Secret>,
) -> Result<bool> {
  let rows = key_rows(conn, scope.id)?;
  match secret {
    Some(s) => match find_secret(&rows, sealer, scope.id, s)? {
      Some(row) if row.retired => Err(Error::validation(
        "signingSecret",
        "signingSecret belongs to a retired signing key",
      )),
      Some(_) => Ok(false),
      None => Ok(true),
    },
    None => Ok(!rows.iter().any(|r| !r.retired)),
  }
}

pub fn ensure_signing_key(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  secret: Option<&Secret>,
  now_ms: i64,
) -> Result<()> {
  let rows = key_rows(conn, scope.id)?;
  match secret {
    Some(s) => match find_secret(&rows, sealer, scope.id, s)? {
      Some(row) if row.retired => Err(Error::validation(
        "signingSecret",
        "signingSecret belongs to a retired signing key",
      )),
      Some(_) => Ok(()),
      None => insert_key(conn, sealer, scope, s, "signingSecret", now_ms).map(|_| ()),
    },
    None if rows.iter().any(|r| !r.retired) => Ok(()),
    None => insert_key(
      conn,
      sealer,
      scope,
      &Secret::generate()?,
      "generated",
      now_ms,
    )
    .map(|_| ()),
  }
}

pub fn rotate_key(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  secret: Option<Secret>,
  now_ms: i64,
) -> Result<String> {
  let secret = match secret {
    Some(s) => {
      let rows = key_rows(conn, scope.id)?;
      if find_secret(&rows, sealer, scope.id, &s)?.is_some() {
        return Err(Error::validation(
          "signingSecret",
          "signingSecret is already a signing key of this client",
        ));
      }
      s
    }
    None => Secret::generate()?,
  };
  insert_key(conn, sealer, scope, &secret, "rotated", now_ms)
}

pub fn retire_key(conn: &Connection, scope: &Scope, kid: &str, now_ms: i64) -> Result<()> {
  let retired: Option<bool> = conn
    .prepare_cached(
      "SELECT retired_at IS NOT NULL FROM signing_keys WHERE scope_id = ?1 AND kid = ?2",
    )?
    .query_row(params![scope.id, kid], |r| r.get(0))
    .optional()?;
  match retired {
    None => Err(Error::not_found(format!("signing key {kid} not found"))),
    Some(true) => Ok(()),
    Some(false) => {
      let live: i64 = conn
        .prepare_cached(
          "SELECT count(*) FROM signing_keys WHERE scope_id = ?1 AND retired_at IS NULL",
        )?
        .query_row([scope.id], |r| r.get(0))?;
      if live <= 1 {
        return Err(Error::validation(
          "kid",
          "cannot retire the only live signing key: call rotateSigningKey() first",
        ));
      }
      conn
        .prepare_cached("UPDATE signing_keys SET retired_at = ?3 WHERE scope_id = ?1 AND kid = ?2")?
        .execute(params![scope.id, kid, now_ms])?;
      bump_epoch(conn, scope.id)?;
      events::append(
        conn,
        scope.id,
        types::SIGNING_KEY_RETIRED,
        None,
        &json!({ "kid": kid }),
        now_ms,
      )?;
      Ok(())
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Minting and refreshing

/// Rows pruned per table per pass.
const PRUNE_BATCH: i64 = 256;

thread_local! {
  /// The second of the last pruning pass made on this thread. Writes run on their database's
  /// own writer thread, so this is per connection.
  static LAST_PRUNE: std::cell::Cell<i64> = const { std::cell::Cell::new(i64::MIN) };
}

/// Deletes rows that can no longer matter, anywhere in the file: families whose last token and
/// refresh token expired (with their rows), tokens expired past the revocation margin, expired
/// refresh tokens, revocations and uses of tokens expired past the margin. A pass costs tens
/// of microseconds even with nothing to delete, so it runs at most once per second (per writer
/// connection), a bounded batch per table, and again on the next write while a backlog remains.
fn prune(conn: &Connection, now: i64) -> Result<()> {
  if LAST_PRUNE.with(|l| l.get()) == now {
    return Ok(());
  }
  let horizon = now - REVOCATION_MARGIN_SECS;
  let mut backlog = false;
  for (sql, limit) in [
    (
      "DELETE FROM token_families WHERE pk IN
         (SELECT pk FROM token_families WHERE expires_at < ?1 LIMIT ?2)",
      horizon,
    ),
    (
      "DELETE FROM session_tokens WHERE jti IN
         (SELECT jti FROM session_tokens WHERE exp < ?1 LIMIT ?2)",
      horizon,
    ),
    (
      "DELETE FROM refresh_tokens WHERE hash IN
         (SELECT hash FROM refresh_tokens WHERE expires_at < ?1 LIMIT ?2)",
      now,
    ),
    (
      "DELETE FROM token_revocations WHERE seq IN
         (SELECT seq FROM token_revocations WHERE kind = 'jti' AND expires_at < ?1 LIMIT ?2)",
      horizon,
    ),
    (
      "DELETE FROM token_uses WHERE (scope_id, purpose, jti) IN
         (SELECT scope_id, purpose, jti FROM token_uses WHERE expires_at < ?1 LIMIT ?2)",
      horizon,
    ),
  ] {
    let n = conn
      .prepare_cached(sql)?
      .execute(params![limit, PRUNE_BATCH])?;
    backlog |= n as i64 >= PRUNE_BATCH;
  }
  LAST_PRUNE.with(|l| l.set(if backlog { i64::MIN } else { now }));
  Ok(())
}

/// Extends a family's lifetime to cover a new token or refresh token.
fn extend_family(conn: &Connection, family_pk: i64, until: i64) -> Result<()> {
  conn
    // Only when it grows: an unchanged row is not rewritten (nor its expiry index).
    .prepare_cached("UPDATE token_families SET expires_at = ?2 WHERE pk = ?1 AND expires_at < ?2")?
    .execute(params![family_pk, until])?;
  Ok(())
}

fn insert_refresh(conn: &Connection, family_pk: i64, jti: &str, expires_at: i64) -> Result<String> {
  let (token, hash) = new_refresh_token()?;
  conn
    .prepare_cached(
      "INSERT INTO refresh_tokens (hash, family_pk, jti, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![&hash[..], family_pk, jti, expires_at])?;
  extend_family(conn, family_pk, expires_at)?;
  Ok(token)
}

/// Signs and records a new token (and its refresh token) in `family_pk`.
#[allow(clippy::too_many_arguments)]
fn issue_in_family(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  family_pk: i64,
  account_pk: i64,
  account_id: &str,
  scopes: Option<Vec<String>>,
  ttl: i64,
  refresh_ttl: i64,
  now: i64,
) -> Result<Issued> {
  let (kid, secret) = current_key(conn, sealer, scope)?;
  let claims = Claims {
    org_id: scope.org_id.clone(),
    linked_account_id: account_id.to_string(),
    environment: scope.environment.clone(),
    iat: now,
    exp: now + ttl,
    jti: random_id()?,
    scopes,
  };
  let token = encode(&kid, &claims, &secret)?;
  conn
    .prepare_cached(
      "INSERT INTO session_tokens (jti, family_pk, account_pk, kid, iat, exp) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![claims.jti, family_pk, account_pk, kid, claims.iat, claims.exp])?;
  extend_family(conn, family_pk, claims.exp + REVOCATION_MARGIN_SECS)?;
  let refresh_token = insert_refresh(conn, family_pk, &claims.jti, now + refresh_ttl)?;
  Ok(Issued {
    token,
    expires_in: ttl,
    refresh_token,
    refresh_expires_in: refresh_ttl,
    claims,
    reused: false,
  })
}

/// A still-valid token of the account with the same scopes, re-signed. It is reused while more
/// than half of the requested TTL remains and it does not outlive the requested TTL; its key
/// must still be live. The token string is reproduced by signing the stored claims again:
/// HMAC-SHA256 over a fixed serialization is deterministic, so no token is ever stored, not even
/// sealed. Refresh tokens exist only as hashes, so a reuse comes with a new refresh token of the
/// same family, expiring when the first one does (both anchored at the token's `iat`).
fn reuse(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  account_pk: i64,
  req: &MintRequest,
  policy: TokenPolicy,
  now: i64,
) -> Result<Option<Issued>> {
  let scopes = scopes_key(&req.scopes);
  let row: Option<(String, String, i64, i64, i64, Vec<u8>)> = conn
    .prepare_cached(
      "SELECT t.jti, t.kid, t.iat, t.exp, t.family_pk, k.secret
         FROM session_tokens t
         JOIN token_families f ON f.pk = t.family_pk
         JOIN signing_keys k ON k.scope_id = f.scope_id AND k.kid = t.kid
        WHERE t.account_pk = ?1 AND f.scopes IS ?2
          AND t.revoked_at IS NULL AND f.revoked_at IS NULL AND k.retired_at IS NULL
          AND t.exp > ?3 AND t.exp <= ?3 + ?4 AND (t.exp - ?3) * 2 > ?4
        ORDER BY t.exp DESC LIMIT 1",
    )?
    .query_row(params![account_pk, scopes, now, req.ttl], |r| {
      Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
      ))
    })
    .optional()?;
  let Some((jti, kid, iat, exp, family_pk, sealed)) = row else {
    return Ok(None);
  };
  let refresh_exp = iat + policy.refresh_ttl;
  if refresh_exp <= now {
    return Ok(None);
  }
  let secret = open_key(sealer, scope.id, &kid, &sealed)?;
  let claims = Claims {
    org_id: scope.org_id.clone(),
    linked_account_id: req.account_id.clone(),
    environment: scope.environment.clone(),
    iat,
    exp,
    jti,
    scopes: req.scopes.clone(),
  };
  let token = encode(&kid, &claims, &secret)?;
  let refresh_token = insert_refresh(conn, family_pk, &claims.jti, refresh_exp)?;
  Ok(Some(Issued {
    token,
    expires_in: exp - now,
    refresh_token,
    refresh_expires_in: refresh_exp - now,
    claims,
    reused: true,
  }))
}

pub fn mint(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  req: &MintRequest,
  policy: TokenPolicy,
  now_ms: i64,
) -> Result<Issued> {
  let account_pk = accounts::pk_of(conn, scope, &req.account_id)?;
  let now = secs(now_ms);
  prune(conn, now)?;
  if !req.force_refresh {
    if let Some(issued) = reuse(conn, sealer, scope, account_pk, req, policy, now)? {
      return Ok(issued);
    }
  }
  conn
    .prepare_cached(
      "INSERT INTO token_families (scope_id, account_pk, scopes, ttl, created_at, expires_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
      scope.id,
      account_pk,
      scopes_key(&req.scopes),
      req.ttl,
      now_ms,
      // The family lives as long as its first token (plus the revocation margin) and refresh
      // token; set now so issuing into it needs no update.
      (now + req.ttl + REVOCATION_MARGIN_SECS).max(now + policy.refresh_ttl)
    ])?;
  let family_pk = conn.last_insert_rowid();
  issue_in_family(
    conn,
    sealer,
    scope,
    family_pk,
    account_pk,
    &req.account_id,
    req.scopes.clone(),
    req.ttl,
    policy.refresh_ttl,
    now,
  )
}

struct RefreshRow {
  family_pk: i64,
  expires_at: i64,
  used: bool,
  revoked: bool,
  scope_id: i64,
  account_pk: i64,
  scopes: Option<String>,
  ttl: i64,
  family_revoked: bool,
  account_id: String,
}

/// Rotates a refresh token. The outer `Err` rolls back (nothing to keep); `Ok(Err(..))` commits
/// (a detected reuse revoked the family).
pub fn refresh(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  refresh_token: &str,
  policy: TokenPolicy,
  now_ms: i64,
) -> Result<Result<Issued>> {
  let hash = refresh_token_hash(refresh_token)?;
  let now = secs(now_ms);
  // The lookup is by the SHA-256 of a 256-bit random value: timing of the index search can
  // reveal nothing useful about a token, so no constant-time comparison is needed here.
  let row = conn
    .prepare_cached(
      "SELECT r.family_pk, r.expires_at, r.used_at IS NOT NULL, r.revoked_at IS NOT NULL,
              f.scope_id, f.account_pk, f.scopes, f.ttl, f.revoked_at IS NOT NULL, a.account_id
         FROM refresh_tokens r
         JOIN token_families f ON f.pk = r.family_pk
         JOIN accounts a ON a.pk = f.account_pk
        WHERE r.hash = ?1",
    )?
    .query_row([&hash[..]], |r| {
      Ok(RefreshRow {
        family_pk: r.get(0)?,
        expires_at: r.get(1)?,
        used: r.get(2)?,
        revoked: r.get(3)?,
        scope_id: r.get(4)?,
        account_pk: r.get(5)?,
        scopes: r.get(6)?,
        ttl: r.get(7)?,
        family_revoked: r.get(8)?,
        account_id: r.get(9)?,
      })
    })
    .optional()?;
  let row = match row {
    Some(r) if r.scope_id == scope.id => r,
    _ => return Err(invalid("refresh token is unknown")),
  };
  if row.family_revoked || row.revoked {
    return Err(revoked("refresh token has been revoked"));
  }
  if row.used {
    // Reuse: someone holds a copy. Revoke everything descended from the same mint, keep that
    // committed, and fail.
    let live = revoke_family(conn, scope, row.family_pk, now_ms)?;
    announce_revocation(
      conn,
      scope,
      &row.account_id,
      i64::from(live),
      "refresh_token_reuse",
      now_ms,
    )?;
    return Ok(Err(revoked(
      "refresh token was already used: every token of its session has been revoked",
    )));
  }
  if row.expires_at <= now {
    return Err(Error::new(
      ErrorKind::TokenExpired,
      "refresh token has expired",
    ));
  }
  conn
    .prepare_cached("UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1")?
    .execute(params![&hash[..], now_ms])?;
  issue_in_family(
    conn,
    sealer,
    scope,
    row.family_pk,
    row.account_pk,
    &row.account_id,
    scopes_from_key(row.scopes),
    row.ttl,
    policy.refresh_ttl,
    now,
  )
  .map(Ok)
}

// ---------------------------------------------------------------------------------------------
// Revoking

/// Revokes a family: its tokens (listed in `token_revocations` while they could still verify),
/// its refresh tokens (through the family). Returns whether it still had a token or refresh
/// token that could be used.
fn revoke_family(conn: &Connection, scope: &Scope, family_pk: i64, now_ms: i64) -> Result<bool> {
  let now = secs(now_ms);
  let live: bool = conn
    .prepare_cached(
      "SELECT EXISTS (SELECT 1 FROM session_tokens WHERE family_pk = ?1 AND revoked_at IS NULL AND exp > ?2)
           OR EXISTS (SELECT 1 FROM refresh_tokens WHERE family_pk = ?1 AND used_at IS NULL
                        AND revoked_at IS NULL AND expires_at > ?2)",
    )?
    .query_row(params![family_pk, now], |r| r.get(0))?;
  conn
    .prepare_cached(
      "INSERT INTO token_revocations (scope_id, kind, value, expires_at)
       SELECT ?1, 'jti', jti, exp FROM session_tokens
        WHERE family_pk = ?2 AND revoked_at IS NULL AND exp > ?3",
    )?
    .execute(params![scope.id, family_pk, now - REVOCATION_MARGIN_SECS])?;
  conn
    .prepare_cached(
      "UPDATE session_tokens SET revoked_at = ?2 WHERE family_pk = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![family_pk, now_ms])?;
  conn
    .prepare_cached(
      "UPDATE token_families SET revoked_at = ?2 WHERE pk = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![family_pk, now_ms])?;
  Ok(live)
}

/// Revokes every session token of an account inside the caller's transaction (used by
/// `revokeAllSessionTokens`, by account deletion, and available to other features): every
/// family of the account, plus a cutoff that also revokes tokens signed outside linkvault for
/// this account with an `iat` before now. Appends `session_tokens.revoked` when a live session
/// was revoked. Returns the number of sessions (families) that still had a usable token or
/// refresh token.
pub fn revoke_account_in_txn(
  conn: &Connection,
  scope: &Scope,
  account_pk: i64,
  account_id: &str,
  reason: &str,
  now_ms: i64,
) -> Result<i64> {
  let families: Vec<i64> = conn
    .prepare_cached("SELECT pk FROM token_families WHERE account_pk = ?1 AND revoked_at IS NULL")?
    .query_map([account_pk], |r| r.get(0))?
    .collect::<rusqlite::Result<_>>()?;
  let mut count = 0;
  for f in families {
    if revoke_family(conn, scope, f, now_ms)? {
      count += 1;
    }
  }
  conn
    .prepare_cached(
      "DELETE FROM token_revocations WHERE scope_id = ?1 AND kind = 'account' AND value = ?2",
    )?
    .execute(params![scope.id, account_id])?;
  conn
    .prepare_cached(
      "INSERT INTO token_revocations (scope_id, kind, value, cutoff) VALUES (?1, 'account', ?2, ?3)",
    )?
    .execute(params![scope.id, account_id, secs(now_ms)])?;
  announce_revocation(conn, scope, account_id, count, reason, now_ms)?;
  Ok(count)
}

/// Signature, key and claims of `token` from the database (not the in-memory verifier), in the
/// caller's transaction.
fn authenticate(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  skew: i64,
  now_ms: i64,
  check_expiry: bool,
) -> Result<Claims> {
  let parsed = tokens::parse(token)?;
  let secret = live_key(conn, sealer, scope, &parsed.kid)?.ok_or_else(unknown_key)?;
  let mut check = Check::new(scope, now_ms, skew);
  check.check_expiry = check_expiry;
  parsed.verify(&secret, &check)
}

fn revoked_in_db(conn: &Connection, scope: &Scope, c: &Claims) -> Result<bool> {
  Ok(
    conn
      .prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM token_revocations WHERE scope_id = ?1 AND kind = 'jti' AND value = ?2)
             OR EXISTS (SELECT 1 FROM token_revocations WHERE scope_id = ?1 AND kind = 'account'
                          AND value = ?3 AND cutoff > ?4)",
      )?
      .query_row(params![scope.id, c.jti, c.linked_account_id, c.iat], |r| {
        r.get(0)
      })?,
  )
}

/// `revokeSessionToken`: the token must be authentic (signature, live key, this scope) but may
/// have expired (its refresh tokens may still be alive). Revokes it and the refresh tokens
/// issued with it; a token signed outside linkvault is revoked by its `jti`. Returns 1 if this
/// call changed anything, else 0.
pub fn revoke_token(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  policy: TokenPolicy,
  now_ms: i64,
) -> Result<i64> {
  let claims = authenticate(conn, sealer, scope, token, policy.skew, now_ms, false)?;
  let now = secs(now_ms);
  // Whether linkvault issued it (and whether it is already revoked).
  let row: Option<bool> = conn
    .prepare_cached(
      "SELECT t.revoked_at IS NOT NULL FROM session_tokens t
         JOIN token_families f ON f.pk = t.family_pk
        WHERE t.jti = ?1 AND f.scope_id = ?2",
    )?
    .query_row(params![claims.jti, scope.id], |r| r.get(0))
    .optional()?;
  let listed = |conn: &Connection| -> Result<bool> {
    Ok(
      conn
        .prepare_cached(
          "SELECT EXISTS (SELECT 1 FROM token_revocations WHERE scope_id = ?1 AND kind = 'jti' AND value = ?2)",
        )?
        .query_row(params![scope.id, claims.jti], |r| r.get(0))?,
    )
  };
  let list = |conn: &Connection| -> Result<()> {
    if claims.exp > now - REVOCATION_MARGIN_SECS && !listed(conn)? {
      conn
        .prepare_cached(
          "INSERT INTO token_revocations (scope_id, kind, value, expires_at) VALUES (?1, 'jti', ?2, ?3)",
        )?
        .execute(params![scope.id, claims.jti, claims.exp])?;
    }
    Ok(())
  };
  let mut changed = false;
  match row {
    Some(already) => {
      if !already {
        conn
          .prepare_cached("UPDATE session_tokens SET revoked_at = ?2 WHERE jti = ?1")?
          .execute(params![claims.jti, now_ms])?;
        list(conn)?;
        changed = true;
      }
      let n = conn
        .prepare_cached(
          "UPDATE refresh_tokens SET revoked_at = ?2
            WHERE jti = ?1 AND revoked_at IS NULL AND used_at IS NULL AND expires_at > ?3",
        )?
        .execute(params![claims.jti, now_ms, now])?;
      changed |= n > 0;
    }
    None => {
      if claims.exp > now - REVOCATION_MARGIN_SECS && !listed(conn)? {
        list(conn)?;
        changed = true;
      }
    }
  }
  if changed {
    announce_revocation(conn, scope, &claims.linked_account_id, 1, "revoked", now_ms)?;
  }
  Ok(i64::from(changed))
}

/// Fully verifies `token` against the database inside the caller's transaction (keys,
/// signature, claims, expiry, revocations), without the in-memory verifier.
pub fn verify_in_txn(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  skew: i64,
  now_ms: i64,
) -> Result<Claims> {
  let claims = authenticate(conn, sealer, scope, token, skew, now_ms, true)?;
  if revoked_in_db(conn, scope, &claims)? {
    return Err(revoked("session token has been revoked"));
  }
  Ok(claims)
}

/// Verifies `token` (as [`verify_in_txn`]) and consumes it for `purpose`, once: a second
/// consumption of the same token for the same purpose fails with `TOKEN_REVOKED` ("already
/// used"); callers may map that to their own code. With `max_age_secs`, a token whose `iat` is
/// older than that fails with `TOKEN_EXPIRED` (e.g. `Some(600)` for "signed in within the last
/// 10 minutes"). The consumption is part of the caller's transaction: if the caller's job fails,
/// the token stays unused.
#[allow(clippy::too_many_arguments)]
pub fn consume_once(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  purpose: &str,
  max_age_secs: Option<i64>,
  skew: i64,
  now_ms: i64,
) -> Result<Claims> {
  let claims = verify_in_txn(conn, sealer, scope, token, skew, now_ms)?;
  let now = secs(now_ms);
  if let Some(max) = max_age_secs {
    if now - claims.iat > max {
      return Err(Error::new(
        ErrorKind::TokenExpired,
        "session token is too old for this purpose",
      ));
    }
  }
  prune(conn, now)?;
  let inserted = conn
    .prepare_cached(
      "INSERT OR IGNORE INTO token_uses (scope_id, purpose, jti, used_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![scope.id, purpose, claims.jti, now_ms, claims.exp])?;
  if inserted == 0 {
    return Err(revoked("session token was already used for this purpose"));
  }
  Ok(claims)
}

// ---------------------------------------------------------------------------------------------
// The in-memory verifier

/// A change read from the database since the verifier's last look.
struct Delta {
  epoch: i64,
  /// Every live kid; the secret only for kids the verifier does not hold yet.
  keys: Vec<(String, Option<Secret>)>,
  /// (jti, exp) revoked.
  jtis: Vec<(String, i64)>,
  /// (account id, cutoff iat).
  cutoffs: Vec<(String, i64)>,
  last_seq: i64,
}

fn read_epoch(conn: &Connection, scope_id: i64) -> Result<i64> {
  Ok(
    conn
      .prepare_cached("SELECT epoch FROM token_epochs WHERE scope_id = ?1")?
      .query_row([scope_id], |r| r.get(0))
      .optional()?
      .unwrap_or(0),
  )
}

/// What changed since (`epoch`, `last_seq`), or `None` if the epoch did not move.
fn load_delta(
  conn: &Connection,
  sealer: &Sealer,
  scope_id: i64,
  epoch: Option<i64>,
  last_seq: i64,
  known: &HashSet<String>,
) -> Result<Option<Delta>> {
  let now_epoch = read_epoch(conn, scope_id)?;
  if epoch == Some(now_epoch) {
    return Ok(None);
  }
  let mut keys = Vec::new();
  for row in key_rows(conn, scope_id)? {
    if row.retired {
      continue;
    }
    let secret = if known.contains(&row.kid) {
      None
    } else {
      Some(open_key(sealer, scope_id, &row.kid, &row.sealed)?)
    };
    keys.push((row.kid, secret));
  }
  let mut delta = Delta {
    epoch: now_epoch,
    keys,
    jtis: Vec::new(),
    cutoffs: Vec::new(),
    last_seq,
  };
  let mut stmt = conn.prepare_cached(
    "SELECT seq, kind, value, cutoff, expires_at FROM token_revocations
      WHERE scope_id = ?1 AND seq > ?2 ORDER BY seq",
  )?;
  let mut rows = stmt.query(params![scope_id, last_seq])?;
  while let Some(r) = rows.next()? {
    let seq: i64 = r.get(0)?;
    let kind: String = r.get(1)?;
    let value: String = r.get(2)?;
    match kind.as_str() {
      "jti" => delta
        .jtis
        .push((value, r.get::<_, Option<i64>>(4)?.unwrap_or(i64::MAX))),
      _ => delta
        .cutoffs
        .push((value, r.get::<_, Option<i64>>(3)?.unwrap_or(0))),
    }
    delta.last_seq = delta.last_seq.max(seq);
  }
  Ok(Some(delta))
}

#[derive(Default)]
struct View {
  epoch: Option<i64>,
  last_seq: i64,
  keys: HashMap<String, Secret>,
  /// jti → exp.
  revoked: HashMap<String, i64>,
  /// account id → tokens with a smaller `iat` are revoked.
  cutoffs: HashMap<String, i64>,
  next_prune: i64,
}

impl View {
  fn known(&self) -> HashSet<String> {
    self.keys.keys().cloned().collect()
  }

  /// Applies a delta. Returns `false` if the view is incomplete (cannot happen: the kids asked
  /// about were held under the same lock) so that the caller reloads everything next time.
  fn apply(&mut self, d: Delta, now: i64) -> bool {
    let mut complete = true;
    let mut keys = HashMap::with_capacity(d.keys.len());
    for (kid, secret) in d.keys {
      match secret.or_else(|| self.keys.remove(&kid)) {
        Some(s) => {
          keys.insert(kid, s);
        }
        None => complete = false,
      }
    }
    self.keys = keys;
    for (jti, exp) in d.jtis {
      if exp.saturating_add(REVOCATION_MARGIN_SECS) > now {
        self.revoked.insert(jti, exp);
      }
    }
    for (account, cutoff) in d.cutoffs {
      let e = self.cutoffs.entry(account).or_insert(cutoff);
      *e = (*e).max(cutoff);
    }
    self.last_seq = d.last_seq;
    // A missing key fails closed (unknown kid) until the next full key load.
    self.epoch = complete.then_some(d.epoch);
    complete
  }

  fn prune(&mut self, now: i64) {
    if now >= self.next_prune {
      self
        .revoked
        .retain(|_, exp| exp.saturating_add(REVOCATION_MARGIN_SECS) > now);
      self.next_prune = now + 60;
    }
  }

  fn check_revoked(&self, c: &Claims) -> Result<()> {
    if self.revoked.contains_key(&c.jti) {
      return Err(revoked("session token has been revoked"));
    }
    if let Some(cutoff) = self.cutoffs.get(&c.linked_account_id) {
      if c.iat < *cutoff {
        return Err(revoked("session token has been revoked"));
      }
    }
    Ok(())
  }
}

enum Source {
  /// A dedicated read-only connection on the file (in `State`), polled with `data_version`.
  File,
  /// A private in-memory database: reload through the writer when the trigger raised `dirty`.
  Memory { db: Arc<Db>, dirty: Arc<AtomicBool> },
}

struct State {
  conn: Option<Connection>,
  data_version: Option<i64>,
  view: View,
  /// Tokens this verifier has verified, with their key id and claims. A request path verifies
  /// the same token again and again: a repeat skips the HMAC and the JSON parsing, while key
  /// retirement, expiry and revocation are still checked on every call. Bounded: emptied when
  /// full.
  verified: HashMap<String, (String, Claims)>,
}

/// Most tokens `State::verified` holds.
const VERIFIED_CACHE: usize = 4096;

pub struct SqliteVerifier {
  scope: Scope,
  sealer: Arc<Sealer>,
  skew: i64,
  source: Source,
  closed: AtomicBool,
  state: Mutex<State>,
}

fn data_version(conn: &Connection) -> Result<i64> {
  Ok(
    conn
      .prepare_cached("PRAGMA data_version")?
      .query_row([], |r| r.get(0))?,
  )
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
  conn.prepare_cached(sql)?.execute([])?;
  Ok(())
}

impl SqliteVerifier {
  /// Brings the view up to date if the database changed.
  fn refresh(&self, st: &mut State, now: i64) -> Result<()> {
    match &self.source {
      Source::File => {
        let Some(conn) = st.conn.as_ref() else {
          return Err(Error::closed());
        };
        let dv = data_version(conn)?;
        if st.data_version != Some(dv) {
          // One snapshot for the data_version and the rows, so that a commit landing in
          // between is seen on the next call.
          exec(conn, "BEGIN")?;
          let read = (|| {
            let dv = data_version(conn)?;
            let known = st.view.known();
            let delta = load_delta(
              conn,
              &self.sealer,
              self.scope.id,
              st.view.epoch,
              st.view.last_seq,
              &known,
            )?;
            Ok::<_, Error>((dv, delta))
          })();
          if exec(conn, "COMMIT").is_err() {
            let _ = conn.execute_batch("ROLLBACK");
          }
          if !conn.is_autocommit() {
            // Never keep reading from a stale snapshot.
            return Err(Error::storage("token verifier could not end its read"));
          }
          let (dv, delta) = read?;
          let complete = match delta {
            Some(d) => st.view.apply(d, now),
            None => true,
          };
          st.data_version = complete.then_some(dv);
        }
      }
      Source::Memory { db, dirty } => {
        if dirty.swap(false, Ordering::SeqCst) {
          let (sealer, scope_id) = (self.sealer.clone(), self.scope.id);
          let (epoch, last_seq, known) = (st.view.epoch, st.view.last_seq, st.view.known());
          let loaded = db
            .read(move |conn| load_delta(conn, &sealer, scope_id, epoch, last_seq, &known))
            .wait();
          match loaded {
            Ok(Some(d)) => {
              if !st.view.apply(d, now) {
                dirty.store(true, Ordering::SeqCst);
              }
            }
            Ok(None) => {}
            Err(e) => {
              dirty.store(true, Ordering::SeqCst);
              return Err(e);
            }
          }
        }
      }
    }
    st.view.prune(now);
    Ok(())
  }
}

impl TokenVerifier for SqliteVerifier {
  fn verify(&self, token: &str, now_ms: i64) -> Result<Claims> {
    if self.closed.load(Ordering::Acquire) {
      return Err(Error::closed());
    }
    let mut st = self
      .state
      .lock()
      .map_err(|_| Error::storage("token verifier lock poisoned"))?;
    self.refresh(&mut st, secs(now_ms))?;
    let check = Check::new(&self.scope, now_ms, self.skew);
    if let Some((kid, claims)) = st.verified.get(token) {
      if st.view.keys.contains_key(kid) {
        tokens::check_claims(claims, &check)?;
        st.view.check_revoked(claims)?;
        return Ok(claims.clone());
      }
    }
    let parsed = tokens::parse(token)?;
    let secret = st.view.keys.get(&parsed.kid).ok_or_else(unknown_key)?;
    let claims = parsed.verify(secret, &check)?;
    st.view.check_revoked(&claims)?;
    if st.verified.len() >= VERIFIED_CACHE {
      st.verified.clear();
    }
    st.verified
      .insert(token.to_string(), (parsed.kid, claims.clone()));
    Ok(claims)
  }

  fn close(&self) {
    self.closed.store(true, Ordering::Release);
    if let Ok(mut st) = self.state.lock() {
      st.conn = None;
      st.view = View::default();
      st.verified.clear();
    }
  }
}

fn is_memory(path: &str) -> bool {
  path == ":memory:" || path.is_empty()
}

/// The dedicated connection of a file verifier: read-only, short busy wait (it runs on Node's
/// thread; in WAL mode a reader waits only during recovery).
fn open_verifier_conn(path: &str) -> Result<Connection> {
  let flags =
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
  let conn = Connection::open_with_flags(path, flags)?;
  conn.busy_timeout(Duration::from_millis(1000))?;
  conn.set_prepared_statement_cache_capacity(16);
  Ok(conn)
}

/// In a private in-memory database: a TEMP trigger on the writer connection raises `dirty`
/// whenever an epoch changes.
fn install_memory_signal(conn: &Connection, dirty: Arc<AtomicBool>) -> Result<()> {
  conn.create_scalar_function(
    "lv_tokens_changed",
    1,
    FunctionFlags::SQLITE_UTF8,
    move |_ctx| {
      dirty.store(true, Ordering::SeqCst);
      Ok(0i64)
    },
  )?;
  conn.execute_batch(
    "CREATE TEMP TRIGGER IF NOT EXISTS lv_tokens_epoch_ins AFTER INSERT ON main.token_epochs
       BEGIN SELECT lv_tokens_changed(NEW.scope_id); END;
     CREATE TEMP TRIGGER IF NOT EXISTS lv_tokens_epoch_upd AFTER UPDATE ON main.token_epochs
       BEGIN SELECT lv_tokens_changed(NEW.scope_id); END;",
  )?;
  Ok(())
}

impl TokenStore for SqliteStore {
  fn open_tokens(
    &self,
    scope: &Scope,
    secret: Option<Secret>,
    skew: i64,
  ) -> Result<Arc<dyn TokenVerifier>> {
    let sealer = self.sealer();
    let memory = is_memory(self.path());
    let dirty = Arc::new(AtomicBool::new(false));
    let needs_key = if memory {
      true
    } else {
      let (s1, scope1, secret1) = (sealer.clone(), scope.clone(), secret.clone());
      self
        .read(move |conn| needs_signing_key(conn, &s1, &scope1, secret1.as_ref()))
        .wait()?
    };
    let (s2, scope2, dirty2) = (sealer.clone(), scope.clone(), dirty.clone());
    let initial = if !needs_key {
      None
    } else {
      self
        .write(move |conn| {
          ensure_signing_key(conn, &s2, &scope2, secret.as_ref(), crate::clock::now_ms())?;
          if memory {
            install_memory_signal(conn, dirty2)?;
            load_delta(conn, &s2, scope2.id, None, 0, &HashSet::new())
          } else {
            Ok(None)
          }
        })
        .wait()?
    };
    let now = secs(crate::clock::now_ms());
    let mut state = State {
      conn: None,
      data_version: None,
      view: View::default(),
      verified: HashMap::new(),
    };
    let source = if memory {
      if let Some(d) = initial {
        if !state.view.apply(d, now) {
          dirty.store(true, Ordering::SeqCst);
        }
      }
      Source::Memory {
        db: self.engine(),
        dirty,
      }
    } else {
      state.conn = Some(open_verifier_conn(self.path())?);
      Source::File
    };
    let verifier = SqliteVerifier {
      scope: scope.clone(),
      sealer,
      skew,
      source,
      closed: AtomicBool::new(false),
      state: Mutex::new(state),
    };
    // Load now rather than on the first verification.
    {
      let mut st = verifier
        .state
        .lock()
        .map_err(|_| Error::storage("token verifier lock poisoned"))?;
      verifier.refresh(&mut st, now)?;
    }
    Ok(Arc::new(verifier))
  }

  fn mint_session_token(
    &self,
    scope: &Scope,
    req: MintRequest,
    policy: TokenPolicy,
  ) -> Pending<Issued> {
    let (scope, sealer) = (scope.clone(), self.sealer());
    self.write(move |conn| mint(conn, &sealer, &scope, &req, policy, crate::clock::now_ms()))
  }

  fn refresh_session_token(
    &self,
    scope: &Scope,
    refresh_token: String,
    policy: TokenPolicy,
  ) -> Pending<Result<Issued>> {
    let (scope, sealer) = (scope.clone(), self.sealer());
    self.write(move |conn| {
      refresh(
        conn,
        &sealer,
        &scope,
        &refresh_token,
        policy,
        crate::clock::now_ms(),
      )
    })
  }

  fn revoke_session_token(
    &self,
    scope: &Scope,
    token: String,
    policy: TokenPolicy,
  ) -> Pending<i64> {
    let (scope, sealer) = (scope.clone(), self.sealer());
    self.write(move |conn| {
      revoke_token(
        conn,
        &sealer,
        &scope,
        &token,
        policy,
        crate::clock::now_ms(),
      )
    })
  }

  fn revoke_all_session_tokens(&self, scope: &Scope, account_id: String) -> Pending<i64> {
    let scope = scope.clone();
    self.write(move |conn| {
      let pk = accounts::pk_of(conn, &scope, &account_id)?;
      revoke_account_in_txn(
        conn,
        &scope,
        pk,
        &account_id,
        "revoke_all",
        crate::clock::now_ms(),
      )
    })
  }

  fn rotate_signing_key(&self, scope: &Scope, secret: Option<Secret>) -> Pending<String> {
    let (scope, sealer) = (scope.clone(), self.sealer());
    self.write(move |conn| rotate_key(conn, &sealer, &scope, secret, crate::clock::now_ms()))
  }

  fn retire_signing_key(&self, scope: &Scope, kid: String) -> Pending<()> {
    let scope = scope.clone();
    self.write(move |conn| retire_key(conn, &scope, &kid, crate::clock::now_ms()))
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::accounts::{self as acc, WriteMode};
  use crate::crypto::Key;
  use crate::store::{AccountStore, Durability, Store, StoreConfig};
  use serde_json::json;

  const POLICY: TokenPolicy = TokenPolicy {
    session_ttl: 3600,
    refresh_ttl: 7200,
    skew: 30,
  };
  const SECRET: &str = "a-signing-secret-of-at-least-32-bytes!!";

  struct Client {
    store: SqliteStore,
    scope: Scope,
    verifier: Arc<dyn TokenVerifier>,
  }

  fn open(path: &str, org: &str, secret: Option<&str>) -> Result<Client> {
    let store = SqliteStore::open(
      StoreConfig {
        path: path.to_string(),
        durability: Durability::Normal,
        readers: 1,
      },
      Sealer::new(Key::from_bytes([5; 32])),
    )
    .wait()?;
    let scope = store
      .open_scope(Some(org.to_string()), "test".to_string())
      .wait()?;
    let secret = secret
      .map(|s| Secret::parse(s, "signingSecret"))
      .transpose()?;
    let verifier = store.open_tokens(&scope, secret, POLICY.skew)?;
    Ok(Client {
      store,
      scope,
      verifier,
    })
  }

  impl Client {
    fn account(&self, id: &str) {
      let input = acc::parse_payload(&json!({ "linked_account_id": id })).unwrap();
      self
        .store
        .write_account(&self.scope, input, WriteMode::Upsert { if_version: None })
        .wait()
        .unwrap();
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
      self
        .store
        .mint_session_token(&self.scope, req, POLICY)
        .wait()
        .unwrap()
    }
    fn verify(&self, t: &str) -> Result<Claims> {
      self.verifier.verify(t, crate::clock::now_ms())
    }
    fn code(&self, t: &str) -> &'static str {
      self.verify(t).unwrap_err().code()
    }
    fn refresh(&self, r: &str) -> Result<Issued> {
      self
        .store
        .refresh_session_token(&self.scope, r.to_string(), POLICY)
        .wait()
        .and_then(|x| x)
    }
    fn revoke(&self, t: &str) -> Result<i64> {
      self
        .store
        .revoke_session_token(&self.scope, t.to_string(), POLICY)
        .wait()
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
      .store
      .mint_session_token(
        &a.scope,
        MintRequest {
          account_id: "nobody".into(),
          ttl: 60,
          force_refresh: false,
          scopes: None,
        },
        POLICY,
      )
      .wait()
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
    let (sealer, scope, r) = (a.store.sealer(), a.scope.clone(), t4.refresh_token.clone());
    let later = crate::clock::now_ms() + (POLICY.refresh_ttl + 5) * 1000;
    let e = a
      .store
      .write(move |conn| refresh(conn, &sealer, &scope, &r, POLICY, later))
      .wait()
      .unwrap_err();
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
    let n = a
      .store
      .revoke_all_session_tokens(&a.scope, "u2".into())
      .wait()
      .unwrap();
    assert_eq!(n, 1);
    assert_eq!(b.code(&t2.token), "TOKEN_REVOKED");
    assert!(b.verify(&t1.token).is_ok());
    // A new token minted after revoke-all works.
    let t2n = a.mint("u2", false);
    assert!(b.verify(&t2n.token).is_ok());
    assert_eq!(
      a.store
        .revoke_all_session_tokens(&a.scope, "ghost".into())
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );

    b.store
      .delete_account(&b.scope, "u1".into())
      .wait()
      .unwrap();
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
    let k2 = a.store.rotate_signing_key(&a.scope, None).wait().unwrap();
    assert_ne!(k1, k2);
    // New tokens (and reuse: t1 keeps its key) ...
    let t2 = a.mint("u1", true);
    assert_eq!(tokens::parse(&t2.token).unwrap().kid, k2);
    assert!(b.verify(&t1.token).is_ok());
    assert!(b.verify(&t2.token).is_ok());
    // ... retiring k1 kills t1 everywhere; t1 is no longer reused.
    b.store
      .retire_signing_key(&b.scope, k1.clone())
      .wait()
      .unwrap();
    assert_eq!(a.code(&t1.token), "INVALID_TOKEN");
    assert_eq!(b.code(&t1.token), "INVALID_TOKEN");
    assert!(a.verify(&t2.token).is_ok());
    // Idempotent; the last live key cannot be retired; unknown kid.
    b.store
      .retire_signing_key(&b.scope, k1.clone())
      .wait()
      .unwrap();
    let e = b
      .store
      .retire_signing_key(&b.scope, k2.clone())
      .wait()
      .unwrap_err();
    assert_eq!(
      (e.code(), e.field.as_deref()),
      ("VALIDATION_ERROR", Some("kid"))
    );
    assert_eq!(
      b.store
        .retire_signing_key(&b.scope, "nope".into())
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    // Rotating to a chosen secret; rotating to a known one is refused.
    let chosen = Secret::parse("another-secret-with-32-bytes-or-more", "s").unwrap();
    let k3 = a
      .store
      .rotate_signing_key(&a.scope, Some(chosen.clone()))
      .wait()
      .unwrap();
    let t3 = a.mint("u1", true);
    assert_eq!(tokens::parse(&t3.token).unwrap().kid, k3);
    assert!(b.verify(&t3.token).is_ok());
    let e = a
      .store
      .rotate_signing_key(&a.scope, Some(chosen))
      .wait()
      .unwrap_err();
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
    let k2 = a.store.rotate_signing_key(&a.scope, None).wait().unwrap();
    let k1 = tokens::parse(&t2.token).unwrap().kid;
    a.store.retire_signing_key(&a.scope, k1).wait().unwrap();
    assert_eq!(a.code(&t2.token), "INVALID_TOKEN");
    let t3 = a.mint("u1", false);
    assert_eq!(tokens::parse(&t3.token).unwrap().kid, k2);
    assert!(a.verify(&t3.token).is_ok());
    a.store
      .delete_account(&a.scope, "u1".into())
      .wait()
      .unwrap();
    assert_eq!(a.code(&t3.token), "TOKEN_REVOKED");
  }

  #[test]
  fn external_tokens_verify_and_revoke_by_jti_and_cutoff() {
    let (_dir, path) = temp_db();
    let a = open(&path, "org_1", Some(SECRET)).unwrap();
    a.account("u1");
    let kid = tokens::parse(&a.mint("u1", false).token).unwrap().kid;
    let secret = Secret::parse(SECRET, "s").unwrap();
    let now = secs(crate::clock::now_ms());
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
    a.store
      .revoke_all_session_tokens(&a.scope, "u1".into())
      .wait()
      .unwrap();
    assert_eq!(a.code(&ext2), "TOKEN_REVOKED");
    // Issued after the cutoff second: valid.
    assert!(a.verify(&make("ext-3", now + 1, "org_1")).is_ok());
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
    a.store
      .revoke_all_session_tokens(&a.scope, "u1".into())
      .wait()
      .unwrap();
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
      .write(move |conn| prune(conn, later))
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
    let (sealer, scope) = (a.store.sealer(), a.scope.clone());
    let consume = |purpose: &'static str, max_age: Option<i64>, at: i64| {
      let (sealer, scope, tok) = (sealer.clone(), scope.clone(), t.token.clone());
      a.store
        .write(move |conn| {
          consume_once(
            conn,
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
        consume_once(conn, &s2, &sc2, &tok2, "rolled", None, 30, now)?;
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
        let pk = accounts::pk_of(conn, &sc3, "u1")?;
        let n = revoke_account_in_txn(conn, &sc3, pk, "u1", "identity_linked", now)?;
        assert_eq!(
          verify_in_txn(conn, &s3, &sc3, &tok3, 30, now)
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

#[cfg(test)]
mod timing {
  //! `cargo test --release -- --ignored --nocapture tokens_timing`: where a mint's time goes.
  use super::*;
  use crate::crypto::Key;
  use crate::store::{Durability, Store, StoreConfig};
  use std::time::Instant;

  #[test]
  #[ignore]
  fn tokens_timing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db").to_string_lossy().to_string();
    let store = SqliteStore::open(
      StoreConfig {
        path,
        durability: Durability::Normal,
        readers: 1,
      },
      Sealer::new(Key::from_bytes([5; 32])),
    )
    .wait()
    .unwrap();
    let scope = store
      .open_scope(Some("o".into()), "test".into())
      .wait()
      .unwrap();
    let _v = store.open_tokens(&scope, None, 30).unwrap();
    let sealer = store.sealer();
    let policy = TokenPolicy {
      session_ttl: 3600,
      refresh_ttl: 7200,
      skew: 30,
    };
    store
      .write({
        let scope = scope.clone();
        move |conn| {
          conn.execute(
            "INSERT INTO accounts (scope_id, account_id, oid, created_at, updated_at) VALUES (?1, 'x', 'o', 0, 0)",
            [scope.id],
          )?;
          Ok(())
        }
      })
      .wait()
      .unwrap();
    let n = 3000;
    let minted = store
      .mint_session_token(
        &scope,
        MintRequest {
          account_id: "x".into(),
          ttl: 3600,
          force_refresh: false,
          scopes: None,
        },
        policy,
      )
      .wait()
      .unwrap();
    let now = crate::clock::now_ms();
    let timed = |name: &str, f: &dyn Fn()| {
      let s = Instant::now();
      for _ in 0..100_000 {
        f();
      }
      println!(
        "{name:<28} {:>8.2} µs",
        s.elapsed().as_secs_f64() * 1e6 / 100_000.0
      );
    };
    timed("verifier.verify", &|| {
      _v.verify(&minted.token, now).unwrap();
    });
    let parsed_key = Secret::from_bytes(vec![1; 43]);
    timed("parse", &|| {
      tokens::parse(&minted.token).unwrap();
    });
    timed("parse+hmac+claims", &|| {
      let p = tokens::parse(&minted.token).unwrap();
      let _ = p.verify(&parsed_key, &Check::new(&scope, now, 30));
    });
    timed("hmac only", &|| {
      crate::crypto::hmac_sha256(parsed_key.as_bytes(), minted.token.as_bytes());
    });
    let vconn = open_verifier_conn(store.path()).unwrap();
    timed("data_version", &|| {
      data_version(&vconn).unwrap();
    });
    store
      .write(move |conn| {
        let now = crate::clock::now_ms();
        let t = |name: &str, f: &mut dyn FnMut(i64) -> Result<()>| -> Result<()> {
          let s = Instant::now();
          for i in 0..n {
            f(i)?;
          }
          println!(
            "{name:<28} {:>8.2} µs",
            s.elapsed().as_secs_f64() * 1e6 / n as f64
          );
          Ok(())
        };
        let req = |force| MintRequest {
          account_id: "x".into(),
          ttl: 3600,
          force_refresh: force,
          scopes: None,
        };
        t("mint force", &mut |_| {
          mint(conn, &sealer, &scope, &req(true), policy, now).map(|_| ())
        })?;
        t("mint reuse", &mut |_| {
          mint(conn, &sealer, &scope, &req(false), policy, now).map(|_| ())
        })?;
        t("reuse (query only)", &mut |_| {
          reuse(conn, &sealer, &scope, 1, &req(false), policy, now / 1000).map(|_| ())
        })?;
        t("current_key", &mut |_| {
          current_key(conn, &sealer, &scope).map(|_| ())
        })?;
        let (kid, secret) = current_key(conn, &sealer, &scope)?;
        let c = Claims {
          org_id: "o".into(),
          linked_account_id: "x".into(),
          environment: "test".into(),
          iat: 1,
          exp: 2,
          jti: "j".into(),
          scopes: None,
        };
        t("encode", &mut |_| encode(&kid, &c, &secret).map(|_| ()))?;
        t("random_id", &mut |_| random_id().map(|_| ()))?;
        t("new_refresh_token", &mut |_| {
          new_refresh_token().map(|_| ())
        })?;
        t("insert_refresh", &mut |_| {
          insert_refresh(conn, 1, "j", now / 1000 + 10).map(|_| ())
        })?;
        t("extend_family", &mut |_| {
          extend_family(conn, 1, now / 1000 + 10)
        })?;
        Ok(())
      })
      .wait()
      .unwrap();
  }
}

//! Revocation: of one token (`revokeSessionToken`), of a family (a reused refresh token), of
//! every token of an account (`revokeAllSessionTokens`, account deletion, merges), and the
//! checks made against the database inside a transaction (`verify_in_txn`, `consume_once`).
//!
//! Revocations are durable rows in an append-only log read incrementally by verifiers: `jti`
//! entries (one token, kept until it has been expired for [`REVOCATION_MARGIN_SECS`]) and
//! per-account cutoffs (tokens of the account issued before the cutoff second). Every change
//! that can make a valid token invalid (a revocation, a key added or retired) bumps the scope's
//! epoch in the same transaction, so verifiers know when to read the log again.

use serde_json::json;

use super::keys::live_key;
use super::{parse, secs, Check, Claims, TokenPolicy, TokenTx, REVOCATION_MARGIN_SECS};
use crate::crypto::Sealer;
use crate::domain::events::types;
use crate::domain::scope::account_not_found;
use crate::domain::Scope;
use crate::error::{Error, ErrorKind, Result};

/// One entry of the revocation log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
  /// The token `jti`, which expires at `exp`.
  Jti { jti: String, exp: i64 },
  /// Every token of the account issued (`iat`) before `cutoff`.
  Account { account_id: String, cutoff: i64 },
}

/// An issued token's row: its family and whether it is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredToken {
  pub family: i64,
  pub revoked: bool,
}

/// Revocations read from the log, and where to resume the next read.
#[derive(Clone, Debug, Default)]
pub struct RevocationPage {
  pub entries: Vec<Revocation>,
  /// Pass as `after` next time. An engine whose transactions can commit out of log order
  /// returns a point before the newest entry (entries read again are harmless).
  pub resume_after: i64,
}

/// The revocation log, the per-scope epochs and the revocation state of token rows.
pub trait RevocationRows {
  fn bump_token_epoch(&mut self, scope_id: i64) -> Result<()>;
  fn token_epoch(&mut self, scope_id: i64) -> Result<i64>;
  /// The scope's log entries after `after`.
  fn revocations_after(&mut self, scope_id: i64, after: i64) -> Result<RevocationPage>;
  /// Whether the log holds `jti`.
  fn jti_listed(&mut self, scope_id: i64, jti: &str) -> Result<bool>;
  /// Whether the log revokes this token (its jti, or a cutoff of its account after `iat`).
  fn is_revoked(&mut self, scope_id: i64, jti: &str, account_id: &str, iat: i64) -> Result<bool>;
  fn insert_jti_revocation(&mut self, scope_id: i64, jti: &str, exp: i64) -> Result<()>;
  /// Replaces the account's cutoff.
  fn set_account_cutoff(&mut self, scope_id: i64, account_id: &str, cutoff: i64) -> Result<()>;
  /// Records that `jti` was consumed for `purpose`; false if it already was.
  fn insert_token_use(
    &mut self,
    scope_id: i64,
    purpose: &str,
    jti: &str,
    used_at_ms: i64,
    expires_at: i64,
  ) -> Result<bool>;
  /// Whether the family still has a token or a refresh token that could be used at `now`.
  fn family_is_live(&mut self, family: i64, now: i64) -> Result<bool>;
  /// Marks the family and its tokens revoked, logging the `jti` of each of its unrevoked
  /// tokens that expires after `log_after`.
  fn revoke_family_rows(
    &mut self,
    scope_id: i64,
    family: i64,
    now_ms: i64,
    log_after: i64,
  ) -> Result<()>;
  /// The account's unrevoked families.
  fn account_families(&mut self, account_pk: i64) -> Result<Vec<i64>>;
  /// A token linkvault issued in this scope for the account `account_id` (found through the
  /// account's families), if it is still stored.
  fn session_token(
    &mut self,
    scope_id: i64,
    account_id: &str,
    jti: &str,
  ) -> Result<Option<StoredToken>>;
  fn revoke_session_token_row(&mut self, family: i64, jti: &str, now_ms: i64) -> Result<()>;
  /// Revokes the family's unused, unrevoked refresh tokens issued with `jti` that expire after
  /// `now`; returns how many.
  fn revoke_refresh_of(&mut self, family: i64, jti: &str, now_ms: i64, now: i64) -> Result<u64>;
}

fn invalid(message: &str) -> Error {
  Error::new(ErrorKind::InvalidToken, message)
}

fn revoked(message: &str) -> Error {
  Error::new(ErrorKind::TokenRevoked, message)
}

pub(super) fn unknown_key() -> Error {
  invalid("session token was signed by an unknown or retired key")
}

/// After revoking: bumps the scope's epoch (so every verifier reloads), prunes, and appends the
/// `session_tokens.revoked` event when something was revoked.
pub fn announce_revocation(
  tx: &mut (impl TokenTx + ?Sized),
  scope: &Scope,
  account_id: &str,
  count: i64,
  reason: &str,
  now_ms: i64,
) -> Result<()> {
  tx.bump_token_epoch(scope.id)?;
  super::families::prune(tx, secs(now_ms))?;
  if count > 0 {
    tx.append_event(
      scope.id,
      types::SESSION_TOKENS_REVOKED,
      Some(account_id),
      &json!({ "revoked_count": count, "reason": reason }),
      now_ms,
    )?;
  }
  Ok(())
}

/// Revokes a family: its tokens (logged while they could still verify) and its refresh tokens.
/// Returns whether it still had a token or refresh token that could be used.
pub fn revoke_family(
  tx: &mut (impl TokenTx + ?Sized),
  scope: &Scope,
  family: i64,
  now_ms: i64,
) -> Result<bool> {
  let now = secs(now_ms);
  let live = tx.family_is_live(family, now)?;
  tx.revoke_family_rows(scope.id, family, now_ms, now - REVOCATION_MARGIN_SECS)?;
  Ok(live)
}

/// Revokes every session token of an account inside the caller's transaction (used by
/// `revokeAllSessionTokens`, by account deletion and merges): every family of the account, plus
/// a cutoff that also revokes tokens signed outside linkvault for this account with an `iat`
/// before now. Appends `session_tokens.revoked` when a live session was revoked. Returns the
/// number of sessions (families) that still had a usable token or refresh token.
pub fn revoke_account(
  tx: &mut (impl TokenTx + ?Sized),
  scope: &Scope,
  account_pk: i64,
  account_id: &str,
  reason: &str,
  now_ms: i64,
) -> Result<i64> {
  let mut count = 0;
  for family in tx.account_families(account_pk)? {
    if revoke_family(tx, scope, family, now_ms)? {
      count += 1;
    }
  }
  tx.set_account_cutoff(scope.id, account_id, secs(now_ms))?;
  announce_revocation(tx, scope, account_id, count, reason, now_ms)?;
  Ok(count)
}

/// `revokeAllSessionTokens(linked_account_id)`.
pub fn revoke_all(
  tx: &mut (impl TokenTx + ?Sized),
  scope: &Scope,
  account_id: &str,
  now_ms: i64,
) -> Result<i64> {
  let pk = tx
    .account_pk(scope.id, account_id)?
    .ok_or_else(|| account_not_found(scope, account_id))?;
  revoke_account(tx, scope, pk, account_id, "revoke_all", now_ms)
}

/// Signature, key and claims of `token` from the database (not the in-memory verifier), in the
/// caller's transaction.
fn authenticate(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  skew: i64,
  now_ms: i64,
  check_expiry: bool,
) -> Result<Claims> {
  let parsed = parse(token)?;
  let secret = live_key(tx, sealer, scope, &parsed.kid)?.ok_or_else(unknown_key)?;
  let mut check = Check::new(scope, now_ms, skew);
  check.check_expiry = check_expiry;
  parsed.verify(&secret, &check)
}

/// `revokeSessionToken`: the token must be authentic (signature, live key, this scope) but may
/// have expired (its refresh tokens may still be alive). Revokes it and the refresh tokens
/// issued with it; a token signed outside linkvault is revoked by its `jti`. Returns 1 if this
/// call changed anything, else 0.
pub fn revoke_token(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  policy: TokenPolicy,
  now_ms: i64,
) -> Result<i64> {
  let claims = authenticate(tx, sealer, scope, token, policy.skew, now_ms, false)?;
  let now = secs(now_ms);
  // Logged only while the token could still verify somewhere.
  let worth_logging = claims.exp > now - REVOCATION_MARGIN_SECS;
  let mut changed = false;
  // The claims are authenticated: the token's account is the one it was issued for.
  match tx.session_token(scope.id, &claims.linked_account_id, &claims.jti)? {
    Some(row) => {
      if !row.revoked {
        tx.revoke_session_token_row(row.family, &claims.jti, now_ms)?;
        if worth_logging && !tx.jti_listed(scope.id, &claims.jti)? {
          tx.insert_jti_revocation(scope.id, &claims.jti, claims.exp)?;
        }
        changed = true;
      }
      changed |= tx.revoke_refresh_of(row.family, &claims.jti, now_ms, now)? > 0;
    }
    None => {
      if worth_logging && !tx.jti_listed(scope.id, &claims.jti)? {
        tx.insert_jti_revocation(scope.id, &claims.jti, claims.exp)?;
        changed = true;
      }
    }
  }
  if changed {
    announce_revocation(tx, scope, &claims.linked_account_id, 1, "revoked", now_ms)?;
  }
  Ok(i64::from(changed))
}

/// Fully verifies `token` against the database inside the caller's transaction (keys,
/// signature, claims, expiry, revocations), without the in-memory verifier.
pub fn verify_in_txn(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  skew: i64,
  now_ms: i64,
) -> Result<Claims> {
  let claims = authenticate(tx, sealer, scope, token, skew, now_ms, true)?;
  if tx.is_revoked(scope.id, &claims.jti, &claims.linked_account_id, claims.iat)? {
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
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  purpose: &str,
  max_age_secs: Option<i64>,
  skew: i64,
  now_ms: i64,
) -> Result<Claims> {
  let claims = verify_in_txn(tx, sealer, scope, token, skew, now_ms)?;
  let now = secs(now_ms);
  if let Some(max) = max_age_secs {
    if now - claims.iat > max {
      return Err(Error::new(
        ErrorKind::TokenExpired,
        "session token is too old for this purpose",
      ));
    }
  }
  super::families::prune(tx, now)?;
  if !tx.insert_token_use(scope.id, purpose, &claims.jti, now_ms, claims.exp)? {
    return Err(revoked("session token was already used for this purpose"));
  }
  Ok(claims)
}

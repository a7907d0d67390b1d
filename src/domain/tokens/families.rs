//! Token families: minting (`getTokenForLinkedAccount`, which returns a still-valid token again
//! when it can), refreshing (single-use refresh tokens, a reused one revokes its family), and
//! the pruning of rows that can no longer matter.
//!
//! A family is one mint; every token and refresh token descended from it by refreshing belongs
//! to it. Tokens are stored as claims, never as strings: a reused token is re-signed from its
//! claims (HMAC over a fixed serialization is deterministic). Refresh tokens are stored as
//! SHA-256 hashes only.

use super::keys::{current_key, open_key};
use super::revocation::{announce_revocation, revoke_family};
use super::{
  encode, new_refresh_token, random_id, refresh_token_hash, scopes_from_key, scopes_key, secs,
  Claims, Issued, MintRequest, TokenPolicy, TokenTx, REVOCATION_MARGIN_SECS,
};
use crate::crypto::Sealer;
use crate::domain::scope::account_not_found;
use crate::domain::Scope;
use crate::error::{Error, ErrorKind, Result};

/// A still-valid token that could be returned again, with its key's sealed secret.
#[derive(Clone, Debug)]
pub struct LiveToken {
  pub jti: String,
  pub kid: String,
  pub iat: i64,
  pub exp: i64,
  pub family: i64,
  pub sealed_key: Vec<u8>,
}

/// A refresh token's row, its family's and its account's id.
#[derive(Clone, Debug)]
pub struct RefreshRow {
  pub family: i64,
  pub expires_at: i64,
  pub used: bool,
  pub revoked: bool,
  pub scope_id: i64,
  /// The family's scope set (stored form, see [`scopes_key`]).
  pub scopes: Option<String>,
  pub ttl: i64,
  pub family_revoked: bool,
  pub account_id: String,
}

/// The token tables: families, issued tokens (claims), refresh-token hashes.
pub trait FamilyRows {
  /// The stored key of a linked account of the scope.
  fn account_pk(&mut self, scope_id: i64, account_id: &str) -> Result<Option<i64>>;
  /// Of the account's unrevoked tokens for the scope set `scopes` (in an unrevoked family,
  /// signed by a live key) with `now < exp <= max_exp`, the one that expires last.
  fn latest_live_token(
    &mut self,
    account_pk: i64,
    scopes: Option<&str>,
    now: i64,
    max_exp: i64,
  ) -> Result<Option<LiveToken>>;
  /// Adds a family; returns its id.
  fn insert_family(
    &mut self,
    scope_id: i64,
    account_pk: i64,
    scopes: Option<&str>,
    ttl: i64,
    created_at_ms: i64,
    expires_at: i64,
  ) -> Result<i64>;
  /// Raises the family's expiry to `until` (never lowers it).
  fn extend_family(&mut self, family: i64, until: i64) -> Result<()>;
  /// Records an issued token's claims in its family (the account is the family's).
  fn insert_session_token(&mut self, claims: &Claims, family: i64, kid: &str) -> Result<()>;
  fn insert_refresh_token(
    &mut self,
    hash: &[u8; 32],
    family: i64,
    jti: &str,
    expires_at: i64,
  ) -> Result<()>;
  fn find_refresh_token(&mut self, hash: &[u8; 32]) -> Result<Option<RefreshRow>>;
  fn mark_refresh_used(&mut self, hash: &[u8; 32], now_ms: i64) -> Result<()>;
  /// Deletes, anywhere in the database, at most `batch` rows per table of: families expired
  /// before `horizon` (with their tokens and refresh tokens), jti revocations and token uses
  /// expired before `horizon`. True if a table had more.
  fn prune_expired(&mut self, horizon: i64, batch: i64) -> Result<bool>;
  /// Deletes the family's tokens expired before `horizon` and refresh tokens expired before
  /// `now` (a family kept alive by refreshing would otherwise keep them all).
  fn prune_family(&mut self, family: i64, now: i64, horizon: i64) -> Result<()>;
}

/// Rows pruned per table per pass.
const PRUNE_BATCH: i64 = 256;

thread_local! {
  /// The second of the last pruning pass made on this thread. Engines run writes on their own
  /// threads, one connection each, so this is per connection.
  static LAST_PRUNE: std::cell::Cell<i64> = const { std::cell::Cell::new(i64::MIN) };
}

/// Deletes rows that can no longer matter: families whose last token and refresh token expired
/// (with their rows: a family's expiry covers each of its tokens plus the revocation margin and
/// each of its refresh tokens, so no row outlives its use), revocations and uses of tokens
/// expired past the margin. A pass costs tens of microseconds even with nothing to
/// delete, so it runs at most once per second per connection, a bounded batch per table, and
/// again on the next write while a backlog remains.
pub fn prune(tx: &mut (impl TokenTx + ?Sized), now: i64) -> Result<()> {
  if LAST_PRUNE.with(|l| l.get()) == now {
    return Ok(());
  }
  let backlog = tx.prune_expired(now - REVOCATION_MARGIN_SECS, PRUNE_BATCH)?;
  LAST_PRUNE.with(|l| l.set(if backlog { i64::MIN } else { now }));
  Ok(())
}

/// A new refresh token recorded in `family`. The caller makes sure the family's expiry covers
/// `expires_at`.
fn insert_refresh(
  tx: &mut (impl TokenTx + ?Sized),
  family: i64,
  jti: &str,
  expires_at: i64,
) -> Result<String> {
  let (token, hash) = new_refresh_token()?;
  tx.insert_refresh_token(&hash, family, jti, expires_at)?;
  Ok(token)
}

/// When a family must be kept until: past its token `exp` by the revocation margin, and until
/// its refresh token expires.
fn family_expiry(exp: i64, refresh_exp: i64) -> i64 {
  (exp + REVOCATION_MARGIN_SECS).max(refresh_exp)
}

/// Signs and records a new token (and its refresh token) in `family`. A new family's expiry
/// already covers them (set by [`mint`]); an older one (`extend`) is raised to cover them.
#[allow(clippy::too_many_arguments)]
fn issue_in_family(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  family: i64,
  extend: bool,
  account_id: &str,
  scopes: Option<Vec<String>>,
  ttl: i64,
  refresh_ttl: i64,
  now: i64,
) -> Result<Issued> {
  let (kid, secret) = current_key(tx, sealer, scope)?;
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
  tx.insert_session_token(&claims, family, &kid)?;
  let refresh_exp = now + refresh_ttl;
  if extend {
    tx.extend_family(family, family_expiry(claims.exp, refresh_exp))?;
  }
  let refresh_token = insert_refresh(tx, family, &claims.jti, refresh_exp)?;
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
/// must still be live. Refresh tokens exist only as hashes, so a reuse comes with a new refresh
/// token of the same family, expiring when the first one does (both anchored at the token's
/// `iat`).
fn reuse(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  account_pk: i64,
  req: &MintRequest,
  policy: TokenPolicy,
  now: i64,
) -> Result<Option<Issued>> {
  let scopes = scopes_key(&req.scopes);
  // The latest-expiring candidate passes the half-TTL rule if any candidate does.
  let Some(t) = tx.latest_live_token(account_pk, scopes.as_deref(), now, now + req.ttl)? else {
    return Ok(None);
  };
  if (t.exp - now) * 2 <= req.ttl {
    return Ok(None);
  }
  let refresh_exp = t.iat + policy.refresh_ttl;
  if refresh_exp <= now {
    return Ok(None);
  }
  let secret = open_key(sealer, scope.id, &t.kid, &t.sealed_key)?;
  let claims = Claims {
    org_id: scope.org_id.clone(),
    linked_account_id: req.account_id.clone(),
    environment: scope.environment.clone(),
    iat: t.iat,
    exp: t.exp,
    jti: t.jti,
    scopes: req.scopes.clone(),
  };
  let token = encode(&t.kid, &claims, &secret)?;
  tx.extend_family(t.family, refresh_exp)?;
  let refresh_token = insert_refresh(tx, t.family, &claims.jti, refresh_exp)?;
  Ok(Some(Issued {
    token,
    expires_in: t.exp - now,
    refresh_token,
    refresh_expires_in: refresh_exp - now,
    claims,
    reused: true,
  }))
}

/// `getTokenForLinkedAccount`: a reusable token for the account and scopes, or a new family.
pub fn mint(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  req: &MintRequest,
  policy: TokenPolicy,
  now_ms: i64,
) -> Result<Issued> {
  let account_pk = tx
    .account_pk(scope.id, &req.account_id)?
    .ok_or_else(|| account_not_found(scope, &req.account_id))?;
  let now = secs(now_ms);
  prune(tx, now)?;
  if !req.force_refresh {
    if let Some(issued) = reuse(tx, sealer, scope, account_pk, req, policy, now)? {
      return Ok(issued);
    }
  }
  let family = tx.insert_family(
    scope.id,
    account_pk,
    scopes_key(&req.scopes).as_deref(),
    req.ttl,
    now_ms,
    // Set now so issuing into it needs no update.
    family_expiry(now + req.ttl, now + policy.refresh_ttl),
  )?;
  issue_in_family(
    tx,
    sealer,
    scope,
    family,
    false,
    &req.account_id,
    req.scopes.clone(),
    req.ttl,
    policy.refresh_ttl,
    now,
  )
}

fn invalid(message: &str) -> Error {
  Error::new(ErrorKind::InvalidToken, message)
}

fn revoked(message: &str) -> Error {
  Error::new(ErrorKind::TokenRevoked, message)
}

/// `refreshSessionToken`: rotates a refresh token. The outer `Err` rolls back (nothing to
/// keep); `Ok(Err(..))` commits (a detected reuse revoked the family).
pub fn refresh(
  tx: &mut (impl TokenTx + ?Sized),
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
  let row = match tx.find_refresh_token(&hash)? {
    Some(r) if r.scope_id == scope.id => r,
    _ => return Err(invalid("refresh token is unknown")),
  };
  if row.family_revoked || row.revoked {
    return Err(revoked("refresh token has been revoked"));
  }
  if row.used {
    // Reuse: someone holds a copy. Revoke everything descended from the same mint, keep that
    // committed, and fail.
    let live = revoke_family(tx, scope, row.family, now_ms)?;
    announce_revocation(
      tx,
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
  tx.mark_refresh_used(&hash, now_ms)?;
  // Refreshing keeps the family alive: drop what of it has expired meanwhile.
  tx.prune_family(row.family, now, now - REVOCATION_MARGIN_SECS)?;
  issue_in_family(
    tx,
    sealer,
    scope,
    row.family,
    true,
    &row.account_id,
    scopes_from_key(row.scopes),
    row.ttl,
    policy.refresh_ttl,
    now,
  )
  .map(Ok)
}

//! Session-token methods of `Client` (Cobalt's `getTokenForLinkedAccount` and friends).

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::{Env, JsValue, ValueType};
use napi_derive::napi;
use serde_json::Value;

use super::client::Client;
use super::js::{error_object, js_error, json_arg, promise, Json};
use crate::domain::tokens::Issued;
use crate::error::{Error, ErrorKind};

/// Input of `getTokenForLinkedAccount`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct SessionTokenRequest {
  /// The linked account the token acts for; `NOT_FOUND` if it does not exist.
  #[napi(js_name = "linked_account_id")]
  pub linked_account_id: String,
  /// Lifetime in seconds (1 to 366 days); default `sessionTokenTtlSeconds`.
  #[napi(js_name = "ttl_seconds")]
  pub ttl_seconds: Option<u32>,
  /// Always mint a new token instead of returning a still-valid one.
  #[napi(js_name = "force_refresh")]
  pub force_refresh: Option<bool>,
  /// Put into the `scopes` claim (as a sorted set). Tokens are reused only for the same set.
  pub scopes: Option<Vec<String>>,
}

/// A session token and its refresh token (Cobalt v3 response shape).
#[napi(object)]
pub struct SessionToken {
  /// Compact JWS (HS256). Verifiable by any JWT library holding `signingSecret`.
  pub token: String,
  /// Seconds until the token expires (the remaining time when a token is reused).
  #[napi(js_name = "expires_in")]
  pub expires_in: i64,
  /// Opaque, single-use: `refreshSessionToken` returns a new pair and consumes it.
  #[napi(js_name = "refresh_token")]
  pub refresh_token: String,
  /// Seconds until the refresh token expires.
  #[napi(js_name = "refresh_expires_in")]
  pub refresh_expires_in: i64,
}

/// The claims of a verified session token.
// Type-only: documents the result in index.d.ts; the values are the core's `Claims` sent as
// JSON text (same names), which is cheaper for Node's thread than building the object.
#[allow(dead_code)]
#[napi(object)]
pub struct SessionClaims {
  #[napi(js_name = "org_id")]
  pub org_id: String,
  #[napi(js_name = "linked_account_id")]
  pub linked_account_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
  /// Issued at, seconds since the epoch.
  pub iat: i64,
  /// Expires at, seconds since the epoch.
  pub exp: i64,
  /// Unique token id.
  pub jti: String,
  /// Present only when the token was minted with scopes.
  pub scopes: Option<Vec<String>>,
}

/// `{ success: true, revoked_count }`.
#[napi(object)]
pub struct RevokeResult {
  #[napi(ts_type = "true")]
  pub success: bool,
  /// `revokeSessionToken`: 1 if this call revoked the token or its refresh token, else 0.
  /// `revokeAllSessionTokens`: the number of sessions (a mint and its refreshes) revoked.
  #[napi(js_name = "revoked_count")]
  pub revoked_count: i64,
}

/// `{ kid }` of a new signing key.
#[napi(object)]
pub struct SigningKey {
  pub kid: String,
}

/// Options of `rotateSigningKey`.
// Type-only: documents the input in index.d.ts.
#[allow(dead_code)]
#[napi(object)]
pub struct RotateSigningKeyOptions {
  /// The new secret (string of at least 32 bytes), for verifiers outside linkvault that must
  /// know it. Default: a random secret, stored sealed.
  pub signing_secret: Option<String>,
}

/// `{ success: true }`.
#[napi(object)]
pub struct SuccessResult {
  #[napi(ts_type = "true")]
  pub success: bool,
}

fn session_token(i: Issued) -> SessionToken {
  SessionToken {
    token: i.token,
    expires_in: i.expires_in,
    refresh_token: i.refresh_token,
    refresh_expires_in: i.refresh_expires_in,
  }
}

fn revoke_result(n: i64) -> RevokeResult {
  RevokeResult {
    success: true,
    revoked_count: n,
  }
}

/// Reads the token argument of a verify call without going through JSON: only a string is a
/// token; anything else is `INVALID_TOKEN` (a missing `Authorization` header is a 401).
fn token_string(arg: Option<Unknown<'_>>) -> Result<String, Error> {
  let missing = || {
    Error::new(
      ErrorKind::InvalidToken,
      "session token is missing or not a string",
    )
  };
  let v = arg.ok_or_else(missing)?;
  match v.get_type() {
    Ok(ValueType::String) => {
      // SAFETY: the value was just checked to be a string of the current call's env.
      unsafe {
        <String as napi::bindgen_prelude::FromNapiValue>::from_napi_value(v.value().env, v.raw())
      }
      .map_err(|_| missing())
    }
    _ => Err(missing()),
  }
}

fn arg(v: Option<Unknown<'_>>, field: &str) -> crate::Result<Value> {
  json_arg(v, field)
}

#[napi]
impl Client {
  /// Returns a session token for one linked account, for its frontend to act for that end
  /// user: `{ token, expires_in, refresh_token, refresh_expires_in }`. A still-valid token for
  /// the same account and scopes (more than half of the requested TTL left, and not outliving
  /// it) is returned again, with its remaining `expires_in` and a new refresh token, unless
  /// `force_refresh: true`. `NOT_FOUND` for an unknown account.
  #[napi(
    ts_args_type = "request: SessionTokenRequest",
    ts_return_type = "Promise<SessionToken>"
  )]
  pub fn get_token_for_linked_account<'e>(
    &self,
    env: &'e Env,
    request: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, SessionToken>> {
    let p = match arg(request, "options") {
      Ok(v) => self.vault.get_token_for_linked_account(&v),
      Err(e) => crate::store::Pending::ready(Err(e)),
    };
    promise(env, p, session_token)
  }

  /// Verifies a session token and returns its claims. Rejects with `INVALID_TOKEN`,
  /// `TOKEN_EXPIRED` or `TOKEN_REVOKED` (status 401). Settles at once: the check runs in
  /// microseconds from memory (see `verifySessionTokenSync`).
  #[napi(
    ts_args_type = "token: string",
    ts_return_type = "Promise<SessionClaims>"
  )]
  pub fn verify_session_token<'e>(
    &self,
    env: &'e Env,
    token: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let r = token_string(token).and_then(|t| self.vault.verify_session_token(&t));
    match r {
      // Claims cross as JSON text (`JSON.parse` is cheaper than setting each property).
      Ok(c) => PromiseRaw::resolve(env, Json::of(&c)),
      Err(e) => PromiseRaw::reject(env, error_object(env, &e)?.to_unknown()),
    }
  }

  /// Synchronous twin of `verifySessionToken` for hot request paths: returns the claims or
  /// throws an `Error` with `code` (`INVALID_TOKEN`, `TOKEN_EXPIRED`, `TOKEN_REVOKED`,
  /// `CLIENT_CLOSED`) and `status`. No database round trip in the common case; revocations
  /// made by any client on the same file, in any process, are seen on the next call.
  #[napi(ts_args_type = "token: string", ts_return_type = "SessionClaims")]
  pub fn verify_session_token_sync(
    &self,
    env: &Env,
    token: Option<Unknown<'_>>,
  ) -> napi::Result<Json> {
    token_string(token)
      .and_then(|t| self.vault.verify_session_token(&t))
      .map(|c| Json::of(&c))
      .map_err(|e| js_error(env, &e))
  }

  /// Exchanges a refresh token for a new `{ token, expires_in, refresh_token,
  /// refresh_expires_in }`. Each refresh token works once: presenting a used one revokes every
  /// token and refresh token of its session and rejects with `TOKEN_REVOKED`. `INVALID_TOKEN`
  /// for an unknown one, `TOKEN_EXPIRED` past its lifetime.
  #[napi(
    ts_args_type = "refresh_token: string",
    ts_return_type = "Promise<SessionToken>"
  )]
  pub fn refresh_session_token<'e>(
    &self,
    env: &'e Env,
    refresh_token: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, SessionToken>> {
    match arg(refresh_token, "refresh_token") {
      Ok(v) => promise(env, self.vault.refresh_session_token(&v), session_token),
      Err(e) => promise(env, crate::store::Pending::ready(Err(e)), session_token),
    }
  }

  /// Revokes a session token and the refresh token issued with it, for every client on the
  /// file at once: `{ success: true, revoked_count: 0 | 1 }` (0 if already revoked). The token
  /// must be authentic (`INVALID_TOKEN` otherwise) but may have expired.
  #[napi(
    ts_args_type = "token: string",
    ts_return_type = "Promise<RevokeResult>"
  )]
  pub fn revoke_session_token<'e>(
    &self,
    env: &'e Env,
    token: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, RevokeResult>> {
    let p = match arg(token, "token") {
      Ok(v) => self.vault.revoke_session_token(&v),
      Err(e) => crate::store::Pending::ready(Err(e)),
    };
    promise(env, p, revoke_result)
  }

  /// Revokes every session token and refresh token of a linked account:
  /// `{ success: true, revoked_count }` (sessions revoked). `NOT_FOUND` for an unknown account.
  #[napi(
    ts_args_type = "linked_account_id: string",
    ts_return_type = "Promise<RevokeResult>"
  )]
  pub fn revoke_all_session_tokens<'e>(
    &self,
    env: &'e Env,
    linked_account_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, RevokeResult>> {
    let p = match arg(linked_account_id, "linked_account_id") {
      Ok(v) => self.vault.revoke_all_session_tokens(&v),
      Err(e) => crate::store::Pending::ready(Err(e)),
    };
    promise(env, p, revoke_result)
  }

  /// Adds a signing key that signs every new token from now on and returns its `kid`. Tokens
  /// signed by older keys keep verifying until they expire or their key is retired.
  #[napi(
    ts_args_type = "options?: RotateSigningKeyOptions",
    ts_return_type = "Promise<SigningKey>"
  )]
  pub fn rotate_signing_key<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, SigningKey>> {
    let p = match arg(options, "options") {
      Ok(v) => self.vault.rotate_signing_key(Some(&v)),
      Err(e) => crate::store::Pending::ready(Err(e)),
    };
    promise(env, p, |kid| SigningKey { kid })
  }

  /// Retires a signing key: tokens it signed fail with `INVALID_TOKEN` from now on, on every
  /// client. `NOT_FOUND` for an unknown kid; the only live key cannot be retired
  /// (`VALIDATION_ERROR`: rotate first). Retiring a retired key does nothing.
  #[napi(
    ts_args_type = "kid: string",
    ts_return_type = "Promise<SuccessResult>"
  )]
  pub fn retire_signing_key<'e>(
    &self,
    env: &'e Env,
    kid: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, SuccessResult>> {
    let p = match arg(kid, "kid") {
      Ok(v) => self.vault.retire_signing_key(&v),
      Err(e) => crate::store::Pending::ready(Err(e)),
    };
    promise(env, p, |_| SuccessResult { success: true })
  }
}

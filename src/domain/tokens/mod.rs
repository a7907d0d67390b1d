//! Session tokens: the pure core (no SQL, no napi).
//!
//! A session token is a compact JWS (RFC 7515) signed with HMAC-SHA256:
//! header `{"alg":"HS256","typ":"JWT","kid":…}` and payload exactly
//! `{org_id, linked_account_id, environment, iat, exp, jti[, scopes]}` (Cobalt's session-token
//! claims plus `jti` and optional `scopes`). Anyone holding the signing secret can verify it with
//! a standard JWT library. HMAC, SHA-256, base64url and the constant-time comparison come from
//! the RustCrypto `hmac`/`sha2`, `base64` and `subtle` crates (through [`crate::crypto`]); this
//! module only frames bytes.
//!
//! Parsing is strict and fails closed: exactly three non-empty base64url segments (no padding,
//! canonical trailing bits), a header and a payload that are JSON objects with no unknown or
//! duplicate members, `alg` exactly `HS256` (so `none`, RS/ES/PS and `HS384/512` all fail), a
//! `kid`, and a 32-byte signature. The signature is checked (in constant time) before the
//! payload is parsed, so unauthenticated payload bytes never reach the JSON parser. Every
//! rejection is `INVALID_TOKEN`, `TOKEN_EXPIRED` or `TOKEN_REVOKED`, and no message contains
//! any part of the token.
//!
//! Refresh tokens are opaque: `lvrt_` + 32 random bytes in base64url (256 bits). Only their
//! SHA-256 is stored.
//!
//! The rules around tokens are split by concern: signing keys (`keys`), token families, minting
//! and refreshing (`families`), revocation (`revocation`) and the in-memory verifier
//! (`verifier`). What they need from storage is the small traits (`*Rows`) each engine implements.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Scope;
use crate::crypto;
use crate::error::{Error, ErrorKind, Result};
use crate::input::{self, Fields};

pub mod families;
pub mod keys;
pub mod revocation;
pub mod verifier;

pub use families::FamilyRows;
pub use keys::SigningKeyRows;
pub use revocation::RevocationRows;
pub use verifier::Verifier;

/// What the token operations need from their transaction.
pub trait TokenTx:
  SigningKeyRows
  + FamilyRows
  + RevocationRows
  + crate::domain::events::EventLog
  + crate::domain::keys::MetaRows
{
}

/// Whole seconds of a millisecond time.
pub fn secs(now_ms: i64) -> i64 {
  now_ms.div_euclid(1000)
}

use super::MAX_ACCOUNT_ID_CHARS as MAX_ID_CHARS;

/// Longest token accepted (bytes); longer input is rejected before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest `kid` accepted in a header.
pub const MAX_KID_CHARS: usize = 128;
/// Largest `clockSkewSeconds`.
pub const MAX_SKEW_SECS: i64 = 600;
/// Largest TTL for session and refresh tokens (366 days).
pub const MAX_TTL_SECS: i64 = 366 * 86_400;
pub const DEFAULT_SESSION_TTL_SECS: i64 = 86_400;
pub const DEFAULT_REFRESH_TTL_SECS: i64 = 30 * 86_400;
pub const DEFAULT_SKEW_SECS: i64 = 30;
/// A revocation is kept until this long after the token's `exp`: any client on the file, with
/// any allowed skew, rejects the token as expired by then.
pub const REVOCATION_MARGIN_SECS: i64 = MAX_SKEW_SECS + 60;
/// Shortest `signingSecret` (bytes of its UTF-8 form), as RFC 7518 §3.2 requires for HS256.
pub const MIN_SECRET_BYTES: usize = 32;
pub const MAX_SECRET_BYTES: usize = 1024;
pub const MAX_SCOPES: usize = 64;
pub const MAX_SCOPE_CHARS: usize = 256;
pub const REFRESH_PREFIX: &str = "lvrt_";
const REFRESH_RANDOM_BYTES: usize = 32;
/// base64url length of 32 bytes without padding.
const REFRESH_B64_LEN: usize = 43;

/// A signing secret: the HMAC key bytes. Wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("Secret(<hidden>)")
  }
}

impl Secret {
  pub fn from_bytes(bytes: Vec<u8>) -> Self {
    Secret(bytes)
  }

  /// A new random secret: 32 random bytes written as base64url text (43 characters), so that
  /// it can also be handed to a JWT library as a string secret.
  pub fn generate() -> Result<Self> {
    let mut raw = [0u8; 32];
    crypto::os_random(&mut raw)?;
    Ok(Secret(crypto::b64url(&raw).into_bytes()))
  }

  /// A user-given secret: its UTF-8 bytes, at least 32 of them. Errors name `field` and never
  /// echo the value.
  pub fn parse(text: &str, field: &str) -> Result<Self> {
    let n = text.len();
    if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&n) {
      return Err(Error::validation(
        field,
        format!("{field} must be a string of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"),
      ));
    }
    Ok(Secret(text.as_bytes().to_vec()))
  }

  pub fn as_bytes(&self) -> &[u8] {
    &self.0
  }

  pub fn ct_eq(&self, other: &Secret) -> bool {
    crypto::ct_eq(&self.0, &other.0)
  }
}

/// The claims of a session token, in the order they are serialized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
  pub org_id: String,
  pub linked_account_id: String,
  pub environment: String,
  /// Issued at, seconds since the Unix epoch.
  pub iat: i64,
  /// Expires at, seconds since the Unix epoch.
  pub exp: i64,
  pub jti: String,
  #[serde(default, skip_serializing_if = "Option::is_none")]
  pub scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderIn {
  alg: String,
  #[serde(default)]
  typ: Option<String>,
  #[serde(default)]
  kid: Option<String>,
}

#[derive(Serialize)]
struct HeaderOut<'a> {
  alg: &'static str,
  typ: &'static str,
  kid: &'a str,
}

fn invalid(message: &str) -> Error {
  Error::new(ErrorKind::InvalidToken, message)
}

/// The (org, environment) a client accepts tokens for, its clock skew and the time.
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
  pub org_id: &'a str,
  pub environment: &'a str,
  pub now_secs: i64,
  pub skew_secs: i64,
  /// `false` skips the `exp` check (used to revoke a token that already expired).
  pub check_expiry: bool,
}

impl<'a> Check<'a> {
  pub fn new(scope: &'a Scope, now_ms: i64, skew_secs: i64) -> Self {
    Check {
      org_id: &scope.org_id,
      environment: &scope.environment,
      now_secs: now_ms.div_euclid(1000),
      skew_secs,
      check_expiry: true,
    }
  }
}

/// A token whose framing and header are valid; its signature and payload are not checked yet.
pub struct Parsed<'t> {
  pub kid: String,
  /// `header.payload`, the bytes the signature covers.
  signing_input: &'t str,
  payload_b64: &'t str,
  signature: [u8; 32],
}

impl fmt::Debug for Parsed<'_> {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct("Parsed")
      .field("kid", &self.kid)
      .finish_non_exhaustive()
  }
}

/// Deserializes a JSON object (not an array, which serde would also map onto a struct).
fn json_object<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Option<T> {
  let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
  if first != Some(&b'{') {
    return None;
  }
  serde_json::from_slice(bytes).ok()
}

/// Checks the framing and the header of `token`.
pub fn parse(token: &str) -> Result<Parsed<'_>> {
  if token.is_empty() {
    return Err(invalid("session token is empty"));
  }
  if token.len() > MAX_TOKEN_BYTES {
    return Err(invalid("session token is too long"));
  }
  let mut parts = token.split('.');
  let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
  else {
    return Err(invalid(
      "session token is malformed: expected three dot-separated parts",
    ));
  };
  if h.is_empty() || p.is_empty() || s.is_empty() {
    return Err(invalid("session token is malformed: empty part"));
  }
  let header_bytes =
    crypto::b64url_decode(h).ok_or_else(|| invalid("session token header is not base64url"))?;
  let header: HeaderIn =
    json_object(&header_bytes).ok_or_else(|| invalid("session token header is not valid JSON"))?;
  if header.alg != "HS256" {
    return Err(invalid("session token alg is not HS256"));
  }
  if let Some(typ) = &header.typ {
    if !typ.eq_ignore_ascii_case("JWT") {
      return Err(invalid("session token typ is not JWT"));
    }
  }
  let kid = match header.kid {
    Some(k) if !k.is_empty() && k.chars().count() <= MAX_KID_CHARS => k,
    Some(_) => return Err(invalid("session token kid is invalid")),
    None => return Err(invalid("session token has no kid")),
  };
  let sig =
    crypto::b64url_decode(s).ok_or_else(|| invalid("session token signature is not base64url"))?;
  let signature: [u8; 32] = sig
    .as_slice()
    .try_into()
    .map_err(|_| invalid("session token signature has the wrong length"))?;
  Ok(Parsed {
    kid,
    signing_input: &token[..h.len() + 1 + p.len()],
    payload_b64: p,
    signature,
  })
}

impl Parsed<'_> {
  /// Verifies the signature with `secret` in constant time, then parses and checks the claims.
  /// Revocation is the caller's part.
  pub fn verify(&self, secret: &Secret, check: &Check<'_>) -> Result<Claims> {
    let mac = crypto::hmac_sha256(secret.as_bytes(), self.signing_input.as_bytes());
    if !crypto::ct_eq(&mac, &self.signature) {
      return Err(invalid("session token signature is invalid"));
    }
    let payload = crypto::b64url_decode(self.payload_b64)
      .ok_or_else(|| invalid("session token payload is not base64url"))?;
    let claims: Claims = json_object(&payload)
      .ok_or_else(|| invalid("session token payload is not valid claims JSON"))?;
    check_claims(&claims, check)?;
    Ok(claims)
  }
}

/// The claim checks after a valid signature: scope, times.
pub fn check_claims(c: &Claims, check: &Check<'_>) -> Result<()> {
  if c.org_id != check.org_id || c.environment != check.environment {
    return Err(invalid(
      "session token was issued for another organization or environment",
    ));
  }
  if c.jti.is_empty() || c.linked_account_id.is_empty() {
    return Err(invalid("session token claims are incomplete"));
  }
  if c.iat < 0 || c.exp <= c.iat {
    return Err(invalid("session token times are invalid"));
  }
  if c.iat > check.now_secs.saturating_add(check.skew_secs) {
    return Err(invalid("session token is issued in the future"));
  }
  if check.check_expiry && check.now_secs >= c.exp.saturating_add(check.skew_secs) {
    return Err(Error::new(
      ErrorKind::TokenExpired,
      "session token has expired",
    ));
  }
  Ok(())
}

/// Signs `claims` under `kid`. The output is a pure function of its inputs (HMAC is
/// deterministic and the JSON field order is fixed), which is what lets a stored token be
/// re-issued as the same string; a test pins the bytes.
pub fn encode(kid: &str, claims: &Claims, secret: &Secret) -> Result<String> {
  let header = serde_json::to_vec(&HeaderOut {
    alg: "HS256",
    typ: "JWT",
    kid,
  })
  .map_err(|e| Error::storage(format!("cannot encode token header: {e}")))?;
  let payload = serde_json::to_vec(claims)
    .map_err(|e| Error::storage(format!("cannot encode token claims: {e}")))?;
  let mut out = crypto::b64url(&header);
  out.push('.');
  out.push_str(&crypto::b64url(&payload));
  let mac = crypto::hmac_sha256(secret.as_bytes(), out.as_bytes());
  out.push('.');
  out.push_str(&crypto::b64url(&mac));
  Ok(out)
}

/// A fresh random id for a token (`jti`) or key (`kid`): 16 random bytes in base64url.
pub fn random_id() -> Result<String> {
  Ok(crypto::b64url(&crypto::random_bytes::<16>()?))
}

/// A new refresh token and the SHA-256 that is stored instead of it.
pub fn new_refresh_token() -> Result<(String, [u8; 32])> {
  let raw = crypto::random_bytes::<REFRESH_RANDOM_BYTES>()?;
  let token = format!("{REFRESH_PREFIX}{}", crypto::b64url(&raw));
  let hash = crypto::sha256(token.as_bytes());
  Ok((token, hash))
}

/// The stored hash of a refresh token, or `INVALID_TOKEN` if it is not one of ours.
pub fn refresh_token_hash(token: &str) -> Result<[u8; 32]> {
  let bad = || invalid("refresh token is malformed");
  let body = token.strip_prefix(REFRESH_PREFIX).ok_or_else(bad)?;
  if body.len() != REFRESH_B64_LEN || crypto::b64url_decode(body).is_none() {
    return Err(bad());
  }
  Ok(crypto::sha256(token.as_bytes()))
}

/// Scopes as a set: de-duplicated and sorted, so that the same set always reuses the same
/// token. `None` (no `scopes` claim) differs from `Some([])`.
pub fn canonical_scopes(scopes: Option<Vec<String>>) -> Option<Vec<String>> {
  scopes.map(|mut s| {
    s.sort();
    s.dedup();
    s
  })
}

/// The stored form of a scope set (`NULL` for none).
pub fn scopes_key(scopes: &Option<Vec<String>>) -> Option<String> {
  scopes
    .as_ref()
    .map(|s| serde_json::to_string(s).unwrap_or_default())
}

pub fn scopes_from_key(key: Option<String>) -> Option<Vec<String>> {
  key.map(|k| serde_json::from_str(&k).unwrap_or_default())
}

/// Lifetimes and skew of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
  pub session_ttl: i64,
  pub refresh_ttl: i64,
  pub skew: i64,
}

/// The token options of `Client.open`.
#[derive(Debug)]
pub struct TokenOptions {
  pub signing_secret: Option<Secret>,
  pub policy: TokenPolicy,
}

impl Default for TokenOptions {
  fn default() -> Self {
    TokenOptions {
      signing_secret: None,
      policy: TokenPolicy {
        session_ttl: DEFAULT_SESSION_TTL_SECS,
        refresh_ttl: DEFAULT_REFRESH_TTL_SECS,
        skew: DEFAULT_SKEW_SECS,
      },
    }
  }
}

impl TokenOptions {
  /// Reads `signingSecret`, `sessionTokenTtlSeconds`, `refreshTokenTtlSeconds`,
  /// `clockSkewSeconds` from the client options.
  pub fn parse(f: &Fields<'_>) -> Result<Self> {
    let signing_secret = f
      .str("signingSecret")?
      .map(|s| Secret::parse(s, "signingSecret"))
      .transpose()?;
    let d = TokenOptions::default().policy;
    Ok(TokenOptions {
      signing_secret,
      policy: TokenPolicy {
        session_ttl: f
          .int("sessionTokenTtlSeconds", 1, MAX_TTL_SECS)?
          .unwrap_or(d.session_ttl),
        refresh_ttl: f
          .int("refreshTokenTtlSeconds", 1, MAX_TTL_SECS)?
          .unwrap_or(d.refresh_ttl),
        skew: f
          .int("clockSkewSeconds", 0, MAX_SKEW_SECS)?
          .unwrap_or(d.skew),
      },
    })
  }
}

/// A validated `getTokenForLinkedAccount` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintRequest {
  pub account_id: String,
  pub ttl: i64,
  pub force_refresh: bool,
  pub scopes: Option<Vec<String>>,
}

impl MintRequest {
  pub fn parse(v: &Value, default_ttl: i64) -> Result<Self> {
    let f = match v {
      Value::Object(_) => Fields::new(Some(v), "options")?,
      _ => {
        return Err(Error::validation(
          "options",
          "getTokenForLinkedAccount expects an object { linked_account_id, ttl_seconds?, force_refresh?, scopes? }",
        ))
      }
    };
    let account_id = input::id(
      f.raw("linked_account_id"),
      "linked_account_id",
      MAX_ID_CHARS,
    )?;
    let ttl = f
      .int("ttl_seconds", 1, MAX_TTL_SECS)?
      .unwrap_or(default_ttl);
    let force_refresh = f.bool("force_refresh")?.unwrap_or(false);
    let scopes = f.strings("scopes")?;
    if let Some(s) = &scopes {
      if s.len() > MAX_SCOPES {
        return Err(Error::validation(
          "scopes",
          format!("scopes must have at most {MAX_SCOPES} entries"),
        ));
      }
      for scope in s {
        let n = scope.chars().count();
        if n == 0
          || n > MAX_SCOPE_CHARS
          || scope.chars().any(|c| c.is_whitespace() || c.is_control())
        {
          return Err(Error::validation(
            "scopes",
            format!(
              "each scope must be 1 to {MAX_SCOPE_CHARS} characters without whitespace or control characters"
            ),
          ));
        }
      }
    }
    Ok(MintRequest {
      account_id,
      ttl,
      force_refresh,
      scopes: canonical_scopes(scopes),
    })
  }
}

/// What `getTokenForLinkedAccount` and `refreshSessionToken` return.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
  pub token: String,
  /// Seconds until `exp`.
  pub expires_in: i64,
  pub refresh_token: String,
  /// Seconds until the refresh token expires.
  pub refresh_expires_in: i64,
  pub claims: Claims,
  /// Whether an existing token was returned again.
  pub reused: bool,
}

impl fmt::Debug for Issued {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct("Issued")
      .field("token", &"<hidden>")
      .field("expires_in", &self.expires_in)
      .field("refresh_token", &"<hidden>")
      .field("refresh_expires_in", &self.refresh_expires_in)
      .field("claims", &self.claims)
      .field("reused", &self.reused)
      .finish()
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn secret() -> Secret {
    Secret::parse("0123456789abcdef0123456789abcdef", "s").unwrap()
  }

  fn claims(now: i64) -> Claims {
    Claims {
      org_id: "org_1".into(),
      linked_account_id: "u1".into(),
      environment: "test".into(),
      iat: now,
      exp: now + 60,
      jti: "j1".into(),
      scopes: None,
    }
  }

  fn check(now: i64) -> Check<'static> {
    Check {
      org_id: "org_1",
      environment: "test",
      now_secs: now,
      skew_secs: 30,
      check_expiry: true,
    }
  }

  fn verify(token: &str, s: &Secret, now: i64) -> Result<Claims> {
    parse(token)?.verify(s, &check(now))
  }

  fn code(r: Result<Claims>) -> &'static str {
    r.unwrap_err().code()
  }

  fn seg(json: &str) -> String {
    crypto::b64url(json.as_bytes())
  }

  /// Signs arbitrary header/payload JSON the way a JWT library would.
  fn forge(header: &str, payload: &str, s: &Secret) -> String {
    let input = format!("{}.{}", seg(header), seg(payload));
    let mac = crypto::hmac_sha256(s.as_bytes(), input.as_bytes());
    format!("{input}.{}", crypto::b64url(&mac))
  }

  const NOW: i64 = 1_700_000_000;

  #[test]
  fn round_trip_and_pinned_bytes() {
    let s = secret();
    let mut c = claims(NOW);
    let t = encode("k1", &c, &s).unwrap();
    // The exact bytes are pinned: reusing a stored token re-signs it and must reproduce them.
    // This string is what `jsonwebtoken` (Node) produces for the same claims, secret and kid.
    assert_eq!(
      t,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJvcmdfaWQiOiJvcmdfMSIsImxpbmtlZF9hY2NvdW50X2lkIjoidTEiLCJlbnZpcm9ubWVudCI6InRlc3QiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDA2MCwianRpIjoiajEifQ.0EtFlZSGG2ji_7fN8ty9c1IZUqzxVafwxOISwS1GRgA"
    );
    assert_eq!(encode("k1", &c, &s).unwrap(), t);
    let p = parse(&t).unwrap();
    assert_eq!(p.kid, "k1");
    assert_eq!(p.verify(&s, &check(NOW)).unwrap(), c);
    c.scopes = Some(vec!["a".into(), "b".into()]);
    let t2 = encode("k1", &c, &s).unwrap();
    assert_eq!(verify(&t2, &s, NOW).unwrap().scopes, c.scopes);
  }

  #[test]
  fn hmac_matches_rfc7515_appendix_a1() {
    // RFC 7515 A.1: the HS256 example, computed with the same primitives as `encode`.
    let key = crypto::b64url_decode(
      "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
    )
    .unwrap();
    let input = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    assert_eq!(
      crypto::b64url(&crypto::hmac_sha256(&key, input.as_bytes())),
      "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    );
  }

  #[test]
  fn rejects_wrong_alg_typ_kid_and_framing() {
    let s = secret();
    let p = r#"{"org_id":"org_1","linked_account_id":"u1","environment":"test","iat":1700000000,"exp":1700000060,"jti":"j1"}"#;
    let ok = forge(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#, p, &s);
    assert!(verify(&ok, &s, NOW).is_ok());
    // kid-less, typ-less variants.
    assert!(verify(&forge(r#"{"alg":"HS256","kid":"k1"}"#, p, &s), &s, NOW).is_ok());
    for h in [
      r#"{"alg":"none","typ":"JWT","kid":"k1"}"#,
      r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#,
      r#"{"alg":"HS512","typ":"JWT","kid":"k1"}"#,
      r#"{"alg":"hs256","typ":"JWT","kid":"k1"}"#,
      r#"{"alg":"HS256","typ":"JWE","kid":"k1"}"#,
      r#"{"alg":"HS256","typ":"JWT"}"#,
      r#"{"alg":"HS256","typ":"JWT","kid":""}"#,
      r#"{"alg":"HS256","typ":"JWT","kid":5}"#,
      r#"{"alg":"HS256","typ":"JWT","kid":"k1","crit":["exp"]}"#,
      r#"{"alg":"HS256","alg":"HS256","kid":"k1"}"#,
      r#"["HS256","JWT","k1"]"#,
      r#"{"alg":"HS256","kid":"k1"} x"#,
      "not json",
    ] {
      assert_eq!(
        code(verify(&forge(h, p, &s), &s, NOW)),
        "INVALID_TOKEN",
        "{h}"
      );
    }
    // alg none with an empty signature.
    let none = format!(
      "{}.{}.",
      seg(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
      seg(p)
    );
    assert_eq!(code(verify(&none, &s, NOW)), "INVALID_TOKEN");
    for bad in [
      "",
      "a",
      "a.b",
      "a.b.c.d",
      ".b.c",
      "a..c",
      &format!("{ok}."),
      &format!("{ok}="),
      &format!(" {ok}"),
      &ok.replace('.', ".."),
      &"a".repeat(MAX_TOKEN_BYTES + 1),
    ] {
      assert_eq!(code(verify(bad, &s, NOW)), "INVALID_TOKEN");
    }
    // Wrong secret.
    let other = Secret::parse("ffffffffffffffffffffffffffffffff", "s").unwrap();
    assert_eq!(code(verify(&ok, &other, NOW)), "INVALID_TOKEN");
  }

  #[test]
  fn rejects_bad_claims() {
    let s = secret();
    let h = r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#;
    let base = r#""org_id":"org_1","linked_account_id":"u1","environment":"test""#;
    for p in [
      format!(r#"{{{base},"iat":1700000000,"exp":1700000060}}"#),
      format!(r#"{{{base},"iat":1700000000,"exp":1700000060,"jti":"j","extra":1}}"#),
      format!(r#"{{{base},"iat":1700000000,"exp":1700000060,"jti":"j","nbf":1}}"#),
      format!(r#"{{{base},"iat":1700000000.5,"exp":1700000060,"jti":"j"}}"#),
      format!(r#"{{{base},"iat":"1700000000","exp":1700000060,"jti":"j"}}"#),
      format!(r#"{{{base},"iat":1700000000,"exp":1700000000,"jti":"j"}}"#),
      format!(r#"{{{base},"iat":-5,"exp":1700000060,"jti":"j"}}"#),
      format!(r#"{{{base},"iat":1700000000,"exp":1700000060,"jti":""}}"#),
      format!(r#"{{{base},"iat":1700000000,"exp":1700000060,"jti":"j","scopes":"a"}}"#),
      format!(r#"{{{base},"iat":1700000000,"iat":1700000000,"exp":1700000060,"jti":"j"}}"#),
      r#"{"org_id":"org_2","linked_account_id":"u1","environment":"test","iat":1700000000,"exp":1700000060,"jti":"j"}"#.to_string(),
      r#"{"org_id":"org_1","linked_account_id":"u1","environment":"production","iat":1700000000,"exp":1700000060,"jti":"j"}"#.to_string(),
      // iat beyond the skew
      format!(r#"{{{base},"iat":1700000031,"exp":1700000090,"jti":"j"}}"#),
      "[]".to_string(),
    ] {
      assert_eq!(code(verify(&forge(h, &p, &s), &s, NOW)), "INVALID_TOKEN", "{p}");
    }
    // Within the skew: fine.
    let p = format!(r#"{{{base},"iat":1700000030,"exp":1700000090,"jti":"j"}}"#);
    assert!(verify(&forge(h, &p, &s), &s, NOW).is_ok());
  }

  #[test]
  fn expiry_honours_skew() {
    let s = secret();
    let t = encode("k1", &claims(NOW), &s).unwrap();
    assert!(verify(&t, &s, NOW + 60 + 29).is_ok());
    assert_eq!(code(verify(&t, &s, NOW + 60 + 30)), "TOKEN_EXPIRED");
    let p = parse(&t).unwrap();
    let mut c = check(NOW + 1000);
    c.check_expiry = false;
    assert!(p.verify(&s, &c).is_ok());
    c.skew_secs = 0;
    c.check_expiry = true;
    c.now_secs = NOW + 60;
    assert_eq!(p.verify(&s, &c).unwrap_err().code(), "TOKEN_EXPIRED");
  }

  #[test]
  fn every_single_byte_change_is_rejected() {
    let s = secret();
    let mut c = claims(NOW);
    c.scopes = Some(vec!["read".into()]);
    let t = encode("k1", &c, &s).unwrap();
    let bytes = t.as_bytes();
    for i in 0..bytes.len() {
      for flip in [1u8, 2, 4, 8, 16, 32, 64, 128] {
        let mut m = bytes.to_vec();
        m[i] ^= flip;
        let Ok(text) = std::str::from_utf8(&m) else {
          continue;
        };
        let r = verify(text, &s, NOW);
        assert!(r.is_err(), "byte {i} flip {flip} accepted");
        let e = r.unwrap_err();
        assert_eq!(e.code(), "INVALID_TOKEN");
        assert!(!e.message.contains(text));
      }
    }
  }

  /// A light property test without a dependency: random mutations (flips, truncation,
  /// insertion, segment swaps) of valid tokens never panic and are never accepted, and random
  /// strings never verify.
  #[test]
  fn random_mutations_never_verify() {
    let s = secret();
    let t = encode("k1", &claims(NOW), &s).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      x
    };
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"";
    for _ in 0..20_000 {
      let mut m = t.as_bytes().to_vec();
      for _ in 0..(next() % 4 + 1) {
        let i = (next() as usize) % m.len().max(1);
        match next() % 4 {
          0 => m[i] = alphabet[(next() as usize) % alphabet.len()],
          1 => m.truncate(i),
          2 => m.insert(i, alphabet[(next() as usize) % alphabet.len()]),
          _ => {
            m.remove(i.min(m.len().saturating_sub(1)));
          }
        }
        if m.is_empty() {
          break;
        }
      }
      if m == t.as_bytes() {
        continue;
      }
      if let Ok(text) = std::str::from_utf8(&m) {
        assert!(verify(text, &s, NOW).is_err());
      }
      let len = (next() % 300) as usize;
      let junk: String = (0..len)
        .map(|_| alphabet[(next() as usize) % alphabet.len()] as char)
        .collect();
      assert!(verify(&junk, &s, NOW).is_err());
    }
  }

  #[test]
  fn refresh_tokens() {
    let (t, h) = new_refresh_token().unwrap();
    assert!(t.starts_with(REFRESH_PREFIX));
    assert_eq!(t.len(), REFRESH_PREFIX.len() + 43);
    assert_eq!(refresh_token_hash(&t).unwrap(), h);
    assert_ne!(new_refresh_token().unwrap().0, t);
    for bad in [
      "",
      "lvrt_",
      "lvrt_abc",
      &t[1..],
      &format!("{t}A"),
      &t.replace("lvrt_", "xxxx_"),
    ] {
      assert_eq!(refresh_token_hash(bad).unwrap_err().code(), "INVALID_TOKEN");
    }
  }

  #[test]
  fn options_and_requests() {
    let v = serde_json::json!({"signingSecret": "short"});
    let e = TokenOptions::parse(&Fields::new(Some(&v), "options").unwrap()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("signingSecret"));
    assert!(!e.message.contains("short"));
    let v = serde_json::json!({"signingSecret": "x".repeat(32), "clockSkewSeconds": 0, "sessionTokenTtlSeconds": 5});
    let o = TokenOptions::parse(&Fields::new(Some(&v), "options").unwrap()).unwrap();
    assert_eq!(o.policy.skew, 0);
    assert_eq!(o.policy.session_ttl, 5);
    assert_eq!(o.policy.refresh_ttl, DEFAULT_REFRESH_TTL_SECS);
    assert_eq!(format!("{:?}", o.signing_secret), "Some(Secret(<hidden>))");
    let v = serde_json::json!({"clockSkewSeconds": 601});
    assert!(TokenOptions::parse(&Fields::new(Some(&v), "options").unwrap()).is_err());

    let r = MintRequest::parse(
      &serde_json::json!({"linked_account_id": "u1", "scopes": ["b", "a", "b"]}),
      100,
    )
    .unwrap();
    assert_eq!(r.scopes, Some(vec!["a".to_string(), "b".to_string()]));
    assert_eq!(r.ttl, 100);
    for (bad, field) in [
      (serde_json::json!("u1"), "options"),
      (serde_json::json!({}), "linked_account_id"),
      (
        serde_json::json!({"linked_account_id": "u1", "ttl_seconds": 0}),
        "ttl_seconds",
      ),
      (
        serde_json::json!({"linked_account_id": "u1", "force_refresh": 1}),
        "force_refresh",
      ),
      (
        serde_json::json!({"linked_account_id": "u1", "scopes": ["a b"]}),
        "scopes",
      ),
      (
        serde_json::json!({"linked_account_id": "u1", "scopes": [""]}),
        "scopes",
      ),
      (
        serde_json::json!({"linked_account_id": "u1", "scopes": "a"}),
        "scopes",
      ),
    ] {
      let e = MintRequest::parse(&bad, 100).unwrap_err();
      assert_eq!(e.field.as_deref(), Some(field), "{bad}");
    }
  }
}

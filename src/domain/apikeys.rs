//! API keys and client credentials for the HTTP server (`linkvault keys`, `linkvault serve`).
//!
//! A key belongs to one (org, environment) scope and carries three secrets' worth of access:
//! - `api_key` (`tk_…` for test, `pk_…` for production, Cobalt's convention): Cobalt's
//!   `x-api-key`;
//! - `client_id` (public) + `client_secret`: the client credentials of Auth0's `POST /oauth/token`
//!   and Fiskil's `POST /v1/token`, which issue short-lived opaque access tokens.
//!
//! Unlike account data, keys are not read within a client's scope: looking a key up is what
//! decides the scope a request acts in. Secrets are 256-bit random values shown once; only
//! their SHA-256 is stored (a fast hash suffices for random secrets of this size: there is
//! nothing to brute-force, unlike passwords). The secret comparison is constant-time.

use std::fmt;

use super::Scope;
use crate::crypto::{ct_eq, hex_encode, random_bytes, sha256};
use crate::error::{Error, Result};

/// Longest key name.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest audience of an access token.
pub const MAX_AUDIENCE_CHARS: usize = 256;
/// Access-token lifetime bounds, seconds (default one hour, as Fiskil's).
pub const DEFAULT_ACCESS_TTL: i64 = 3600;
pub const MAX_ACCESS_TTL: i64 = 86_400;
/// Most keys one `listApiKeys` returns.
pub const MAX_LIST: i64 = 10_000;

pub const CLIENT_ID_PREFIX: &str = "lvc_";
const SECRET_PREFIX: &str = "lvs_";
const ACCESS_PREFIX: &str = "lva_";
/// 32 random bytes as hex.
const SECRET_HEX: usize = 64;

/// The API key prefix of an environment (Cobalt: `tk` test keys, `pk` production keys).
pub fn key_prefix(environment: &str) -> &'static str {
  if environment == "production" {
    "pk_"
  } else {
    "tk_"
  }
}

/// A key as listed: never its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyInfo {
  pub client_id: String,
  pub org_id: String,
  pub environment: String,
  pub name: Option<String>,
  /// The API key's prefix and last four characters (`tk_…3f9a`), to recognise it.
  pub key_hint: String,
  /// Milliseconds since the epoch.
  pub created_at: i64,
  pub revoked_at: Option<i64>,
}

/// What the store keeps for a new key.
#[derive(Clone)]
pub struct NewApiKey {
  pub client_id: String,
  pub key_hash: [u8; 32],
  pub secret_hash: [u8; 32],
  pub key_hint: String,
  pub name: Option<String>,
  pub created_at: i64,
}

/// A created key with its secrets, returned once.
pub struct CreatedApiKey {
  pub api_key: String,
  pub client_secret: String,
  pub info: ApiKeyInfo,
}

impl fmt::Debug for CreatedApiKey {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct("CreatedApiKey")
      .field("info", &self.info)
      .finish_non_exhaustive()
  }
}

/// A valid access token's key and audience.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessGrant {
  pub key: ApiKeyInfo,
  pub audience: String,
  /// Unix seconds.
  pub expires_at: i64,
}

/// A new access token, returned once.
pub struct IssuedAccessToken {
  pub access_token: String,
  pub expires_in: i64,
  pub grant: AccessGrant,
}

impl fmt::Debug for IssuedAccessToken {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct("IssuedAccessToken")
      .field("expires_in", &self.expires_in)
      .field("grant", &self.grant)
      .finish_non_exhaustive()
  }
}

/// Filters of `listApiKeys`.
#[derive(Clone, Debug, Default)]
pub struct KeyFilter {
  pub org_id: Option<String>,
  pub environment: Option<String>,
  pub limit: i64,
}

fn random_hex<const N: usize>() -> Result<String> {
  Ok(hex_encode(&random_bytes::<N>()?))
}

/// The digest the store keeps of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
  sha256(secret.as_bytes())
}

/// Whether `text` is `prefix` followed by exactly 64 lowercase hex characters. Checked before
/// any look-up, so malformed input costs no database read.
fn well_formed(text: &str, prefix: &str) -> bool {
  text.len() == prefix.len() + SECRET_HEX
    && text.starts_with(prefix)
    && text[prefix.len()..]
      .bytes()
      .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Generates a key for `scope`: the secrets to show once and the record to store.
pub fn generate(
  scope: &Scope,
  name: Option<String>,
  now_ms: i64,
) -> Result<(String, String, NewApiKey)> {
  let api_key = format!("{}{}", key_prefix(&scope.environment), random_hex::<32>()?);
  let client_secret = format!("{SECRET_PREFIX}{}", random_hex::<32>()?);
  let client_id = format!("{CLIENT_ID_PREFIX}{}", random_hex::<16>()?);
  let key_hint = format!(
    "{}…{}",
    key_prefix(&scope.environment),
    &api_key[api_key.len() - 4..]
  );
  let record = NewApiKey {
    client_id,
    key_hash: digest(&api_key),
    secret_hash: digest(&client_secret),
    key_hint,
    name,
    created_at: now_ms,
  };
  Ok((api_key, client_secret, record))
}

/// Whether `secret` matches the stored digest (constant-time).
pub fn secret_matches(secret: &str, stored: &[u8]) -> bool {
  ct_eq(&digest(secret), stored)
}

/// Whether `text` is a well-formed API key (`tk_`/`pk_` and 64 hex characters): checked before
/// any look-up, so malformed input costs no database read.
pub fn well_formed_api_key(text: &str) -> bool {
  well_formed(text, "tk_") || well_formed(text, "pk_")
}

/// Whether client credentials are well-formed (checked before any look-up).
pub fn well_formed_credentials(client_id: &str, secret: &str) -> bool {
  client_id.starts_with(CLIENT_ID_PREFIX) && well_formed(secret, SECRET_PREFIX)
}

/// Whether `text` is a well-formed access token.
pub fn well_formed_access_token(text: &str) -> bool {
  well_formed(text, ACCESS_PREFIX)
}

/// A new access token's text (`lva_` and 64 hex characters), made before the write that stores
/// its digest (a job may run twice: randomness stays outside it).
pub fn new_access_token() -> Result<String> {
  Ok(format!("{ACCESS_PREFIX}{}", random_hex::<32>()?))
}

/// The API key tables. Keys are looked up across scopes: a key's row names its scope.
pub trait ApiKeyRows {
  fn insert_api_key(&mut self, scope_id: i64, key: &NewApiKey) -> Result<()>;
  /// A key by client id, revoked or not.
  fn api_key(&mut self, client_id: &str) -> Result<Option<ApiKeyInfo>>;
  /// Keys oldest first, revoked ones included.
  fn list_api_keys(&mut self, filter: &KeyFilter) -> Result<Vec<ApiKeyInfo>>;
  /// Sets `revoked_at` unless set, and deletes the key's access tokens.
  fn revoke_api_key(&mut self, client_id: &str, now_ms: i64) -> Result<()>;
  /// The live key whose API key has this digest.
  fn live_api_key(&mut self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyInfo>>;
  /// A live key and its secret's digest.
  fn live_api_key_secret(&mut self, client_id: &str) -> Result<Option<(ApiKeyInfo, Vec<u8>)>>;
  /// Deletes access tokens expired at `now_s` (Unix seconds).
  fn prune_access_tokens(&mut self, now_s: i64) -> Result<()>;
  /// Stores a token's digest if its key is live; whether it was stored.
  fn insert_access_token(
    &mut self,
    token_hash: &[u8; 32],
    grant: &AccessGrant,
    now_ms: i64,
  ) -> Result<bool>;
  /// The grant of a live, unexpired token issued for `audience`.
  fn access_token(
    &mut self,
    token_hash: &[u8; 32],
    audience: &str,
    now_s: i64,
  ) -> Result<Option<AccessGrant>>;
}

/// `createApiKey`: stores `key` in `scope` and returns it as listed.
pub fn create(
  tx: &mut (impl ApiKeyRows + ?Sized),
  scope: &Scope,
  key: &NewApiKey,
) -> Result<ApiKeyInfo> {
  tx.insert_api_key(scope.id, key)?;
  tx.api_key(&key.client_id)?
    .ok_or_else(|| Error::storage("stored key not found"))
}

/// `revokeApiKey`: idempotent; `NOT_FOUND` if unknown. Its access tokens go at once.
pub fn revoke(
  tx: &mut (impl ApiKeyRows + ?Sized),
  client_id: &str,
  now_ms: i64,
) -> Result<ApiKeyInfo> {
  tx.revoke_api_key(client_id, now_ms)?;
  tx.api_key(client_id)?
    .ok_or_else(|| Error::not_found(format!("No API key with client_id {client_id}")))
}

/// `resolveApiKey` of a well-formed key: its live key, if the key's prefix names that key's
/// environment (a key only opens the environment its prefix names).
pub fn resolve(tx: &mut (impl ApiKeyRows + ?Sized), api_key: &str) -> Result<Option<ApiKeyInfo>> {
  let found = tx.live_api_key(&digest(api_key))?;
  Ok(found.filter(|k| api_key.starts_with(key_prefix(&k.environment))))
}

/// The live key of client credentials whose secret matches (constant-time), else None.
pub fn authenticate(
  tx: &mut (impl ApiKeyRows + ?Sized),
  client_id: &str,
  client_secret: &str,
) -> Result<Option<ApiKeyInfo>> {
  Ok(
    tx.live_api_key_secret(client_id)?
      .filter(|(_, stored)| secret_matches(client_secret, stored))
      .map(|(key, _)| key),
  )
}

/// Stores an access token's digest (pruning expired ones); false if the key was revoked since
/// it was authenticated.
pub fn store_access_token(
  tx: &mut (impl ApiKeyRows + ?Sized),
  token: &str,
  grant: &AccessGrant,
  now_ms: i64,
) -> Result<bool> {
  tx.prune_access_tokens(now_ms.div_euclid(1000))?;
  tx.insert_access_token(&digest(token), grant, now_ms)
}

/// `resolveAccessToken` of a well-formed token.
pub fn resolve_access_token(
  tx: &mut (impl ApiKeyRows + ?Sized),
  token: &str,
  audience: &str,
  now_ms: i64,
) -> Result<Option<AccessGrant>> {
  tx.access_token(&digest(token), audience, now_ms.div_euclid(1000))
}
#[cfg(test)]
mod tests {
  use super::*;

  fn scope(env: &str) -> Scope {
    Scope {
      id: 1,
      org_id: "org_1".into(),
      environment: env.into(),
    }
  }

  #[test]
  fn generated_secrets_have_their_formats_and_only_digests_are_kept() {
    let (api_key, secret, record) = generate(&scope("test"), None, 5).unwrap();
    assert!(well_formed(&api_key, "tk_"));
    assert!(well_formed(&secret, SECRET_PREFIX));
    assert!(record.client_id.starts_with(CLIENT_ID_PREFIX));
    assert_eq!(record.key_hash, digest(&api_key));
    assert!(secret_matches(&secret, &record.secret_hash));
    assert!(!secret_matches(&api_key, &record.secret_hash));
    assert!(record.key_hint.starts_with("tk_…"));
    assert!(api_key.ends_with(&record.key_hint["tk_…".len()..]));
    let (prod, _, _) = generate(&scope("production"), None, 5).unwrap();
    assert!(prod.starts_with("pk_"));
    let (other, _, _) = generate(&scope("test"), None, 5).unwrap();
    assert_ne!(api_key, other);
  }

  #[test]
  fn debug_output_never_shows_secrets() {
    let (api_key, client_secret, record) = generate(&scope("test"), None, 5).unwrap();
    let created = CreatedApiKey {
      api_key: api_key.clone(),
      client_secret: client_secret.clone(),
      info: ApiKeyInfo {
        client_id: record.client_id,
        org_id: "org_1".into(),
        environment: "test".into(),
        name: None,
        key_hint: record.key_hint,
        created_at: 5,
        revoked_at: None,
      },
    };
    let text = format!("{created:?}");
    assert!(!text.contains(&api_key) && !text.contains(&client_secret));
  }

  #[test]
  fn malformed_keys_are_refused_without_a_look_up() {
    assert!(!well_formed("tk_", "tk_"));
    assert!(!well_formed(&format!("tk_{}", "A".repeat(64)), "tk_"));
    assert!(!well_formed(&format!("tk_{}", "a".repeat(63)), "tk_"));
    assert!(well_formed(&format!("tk_{}", "a".repeat(64)), "tk_"));
    assert!(!well_formed(&format!("pk_{}", "a".repeat(64)), "tk_"));
  }
}

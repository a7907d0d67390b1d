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

use serde_json::Value;

use crate::client::Vault;
use crate::crypto::{ct_eq, hex_encode, random_bytes, sha256};
use crate::error::{Error, Result};
use crate::input::{self, Fields};
use crate::store::{Pending, Scope};

/// Longest key name.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest audience of an access token.
pub const MAX_AUDIENCE_CHARS: usize = 256;
/// Access-token lifetime bounds, seconds (default one hour, as Fiskil's).
pub const DEFAULT_ACCESS_TTL: i64 = 3600;
pub const MAX_ACCESS_TTL: i64 = 86_400;
/// Most keys one `listApiKeys` returns.
pub const MAX_LIST: i64 = 10_000;

const CLIENT_ID_PREFIX: &str = "lvc_";
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

fn optional_name(f: &Fields<'_>) -> Result<Option<String>> {
  match f.get("name") {
    None => Ok(None),
    some => Ok(Some(input::id(some, "name", MAX_NAME_CHARS)?)),
  }
}

fn environment_arg(f: &Fields<'_>) -> Result<Option<String>> {
  match f.str("environment")? {
    None => Ok(None),
    Some(e @ ("test" | "production")) => Ok(Some(e.to_string())),
    Some(_) => Err(Error::validation(
      "environment",
      "environment must be 'test' or 'production'",
    )),
  }
}

fn pending<T>(r: Result<Pending<T>>) -> Pending<T> {
  r.unwrap_or_else(|e| Pending::ready(Err(e)))
}

fn string_arg<'v>(v: &'v Value, field: &str, max: usize) -> Result<&'v str> {
  match v {
    Value::String(s) if !s.is_empty() && s.len() <= max => Ok(s),
    Value::String(_) => Err(Error::validation(
      field,
      format!("{field} must be 1 to {max} characters"),
    )),
    _ => Err(Error::validation(
      field,
      format!("{field} must be a string"),
    )),
  }
}

/// Client methods for API keys. `createApiKey` works in the client's scope; the others work
/// on the whole store, since a key's look-up is what decides a scope.
impl Vault {
  /// `createApiKey({ name? })`.
  pub fn create_api_key(&self, options: Option<&Value>) -> Pending<CreatedApiKey> {
    pending((|| {
      let f = Fields::new(options, "options")?;
      let name = optional_name(&f)?;
      let (api_key, client_secret, record) = generate(&self.scope, name, crate::clock::now_ms())?;
      let stored = self.store.insert_api_key(&self.scope, record);
      let (answer, result) = Pending::channel();
      stored.on_ready(move |r| {
        let _ = answer.send(r.map(|info| CreatedApiKey {
          api_key,
          client_secret,
          info,
        }));
      });
      Ok(result)
    })())
  }

  /// `listApiKeys({ orgId?, environment?, limit? })`, oldest first.
  pub fn list_api_keys(&self, options: Option<&Value>) -> Pending<Vec<ApiKeyInfo>> {
    pending((|| {
      let f = Fields::new(options, "options")?;
      let org_id = match f.get("orgId") {
        None => None,
        some => Some(input::id(some, "orgId", 256)?),
      };
      let filter = KeyFilter {
        org_id,
        environment: environment_arg(&f)?,
        limit: f.int("limit", 1, MAX_LIST)?.unwrap_or(MAX_LIST),
      };
      Ok(self.store.list_api_keys(filter))
    })())
  }

  /// `revokeApiKey(client_id)`: `NOT_FOUND` if unknown; revoking twice changes nothing.
  pub fn revoke_api_key(&self, client_id: &Value) -> Pending<ApiKeyInfo> {
    pending(
      input::id(Some(client_id), "client_id", 128)
        .map(|id| self.store.revoke_api_key(id, crate::clock::now_ms())),
    )
  }

  /// `resolveApiKey(api_key)`: the live key it belongs to, else `None`.
  pub fn resolve_api_key(&self, api_key: &Value) -> Pending<Option<ApiKeyInfo>> {
    let Value::String(key) = api_key else {
      return Pending::ready(Ok(None));
    };
    if !(well_formed(key, "tk_") || well_formed(key, "pk_")) {
      return Pending::ready(Ok(None));
    }
    let prefix = &key[..3];
    let found = self.store.find_api_key(digest(key));
    let (answer, result) = Pending::channel();
    let prefix = prefix.to_string();
    found.on_ready(move |r| {
      // A key only opens the environment its prefix names.
      let _ = answer.send(r.map(|k| k.filter(|k| key_prefix(&k.environment) == prefix)));
    });
    result
  }

  /// `issueAccessToken({ client_id, client_secret, audience, ttl_seconds? })`: a new access
  /// token, or `None` when the credentials are unknown, wrong or revoked.
  pub fn issue_access_token(&self, input: &Value) -> Pending<Option<IssuedAccessToken>> {
    pending((|| {
      if !input.is_object() {
        return Err(Error::validation("request", "request must be an object"));
      }
      let f = Fields::new(Some(input), "")?;
      let client_id = input::id(f.get("client_id"), "client_id", 128)?;
      let secret = string_arg(
        f.get("client_secret").unwrap_or(&Value::Null),
        "client_secret",
        256,
      )?
      .to_string();
      let audience = input::id(f.get("audience"), "audience", MAX_AUDIENCE_CHARS)?;
      let ttl = f
        .int("ttl_seconds", 1, MAX_ACCESS_TTL)?
        .unwrap_or(DEFAULT_ACCESS_TTL);
      if !client_id.starts_with(CLIENT_ID_PREFIX) || !well_formed(&secret, SECRET_PREFIX) {
        return Ok(Pending::ready(Ok(None)));
      }
      let store = self.store.clone();
      let (answer, result) = Pending::channel();
      self
        .store
        .api_key_secret(client_id)
        .on_ready(move |found| match found {
          Err(e) => {
            let _ = answer.send(Err(e));
          }
          Ok(None) => {
            let _ = answer.send(Ok(None));
          }
          Ok(Some((key, stored))) => {
            if !secret_matches(&secret, &stored) {
              let _ = answer.send(Ok(None));
              return;
            }
            let token = match random_hex::<32>() {
              Ok(h) => format!("{ACCESS_PREFIX}{h}"),
              Err(e) => {
                let _ = answer.send(Err(e));
                return;
              }
            };
            let now_ms = crate::clock::now_ms();
            let expires_at = now_ms / 1000 + ttl;
            let grant = AccessGrant {
              key,
              audience,
              expires_at,
            };
            store
              .insert_access_token(digest(&token), grant.clone(), now_ms)
              .on_ready(move |r| {
                let _ = answer.send(r.map(|stored| {
                  stored.then_some(IssuedAccessToken {
                    access_token: token,
                    expires_in: ttl,
                    grant,
                  })
                }));
              });
          }
        });
      Ok(result)
    })())
  }

  /// `resolveAccessToken(token, audience)`: the grant of a live token issued for `audience`,
  /// else `None` (unknown, expired, other audience, key revoked).
  pub fn resolve_access_token(
    &self,
    token: &Value,
    audience: &Value,
  ) -> Pending<Option<AccessGrant>> {
    pending((|| {
      let audience = input::id(Some(audience), "audience", MAX_AUDIENCE_CHARS)?;
      let Value::String(token) = token else {
        return Ok(Pending::ready(Ok(None)));
      };
      if !well_formed(token, ACCESS_PREFIX) {
        return Ok(Pending::ready(Ok(None)));
      }
      Ok(
        self
          .store
          .find_access_token(digest(token), audience, crate::clock::now_ms() / 1000),
      )
    })())
  }
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
  fn keys_resolve_across_scopes_and_revocation_ends_their_tokens() {
    use crate::client::OpenOptions;
    use crate::crypto::Key;
    use crate::scoped::ScopeOptions;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db").to_string_lossy().to_string();
    let mut o = OpenOptions::parse(Some(&json!({"path": path, "orgId": "org_a"}))).unwrap();
    o.encryption_key = Some(Key::from_bytes([4; 32]));
    let root = Vault::open(o).wait().unwrap();
    let prod = root
      .for_scope(
        ScopeOptions::parse(Some(
          &json!({"orgId": "org_b", "environment": "production"}),
        ))
        .unwrap(),
      )
      .wait()
      .unwrap();
    let key = prod.create_api_key(None).wait().unwrap();
    assert!(key.api_key.starts_with("pk_"));
    // Any client resolves it to its own scope.
    let found = root
      .resolve_api_key(&json!(key.api_key))
      .wait()
      .unwrap()
      .unwrap();
    assert_eq!(
      (found.org_id.as_str(), found.environment.as_str()),
      ("org_b", "production")
    );
    let request =
      json!({"client_id": key.info.client_id, "client_secret": key.client_secret, "audience": "a"});
    let issued = root.issue_access_token(&request).wait().unwrap().unwrap();
    let grant = root
      .resolve_access_token(&json!(issued.access_token), &json!("a"))
      .wait()
      .unwrap()
      .unwrap();
    assert_eq!(grant.key.client_id, key.info.client_id);
    assert!(root
      .resolve_access_token(&json!(issued.access_token), &json!("b"))
      .wait()
      .unwrap()
      .is_none());
    let wrong = json!({"client_id": key.info.client_id, "client_secret": format!("lvs_{}", "0".repeat(64)), "audience": "a"});
    assert!(root.issue_access_token(&wrong).wait().unwrap().is_none());
    root
      .revoke_api_key(&json!(key.info.client_id))
      .wait()
      .unwrap();
    assert!(root
      .resolve_api_key(&json!(key.api_key))
      .wait()
      .unwrap()
      .is_none());
    assert!(root
      .resolve_access_token(&json!(issued.access_token), &json!("a"))
      .wait()
      .unwrap()
      .is_none());
    assert!(root.issue_access_token(&request).wait().unwrap().is_none());
    assert_eq!(
      root
        .revoke_api_key(&json!("lvc_unknown"))
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    root.close().wait().unwrap();
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

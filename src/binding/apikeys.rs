//! API keys and client credentials (`createApiKey`, `listApiKeys`, `revokeApiKey`,
//! `resolveApiKey`, `issueAccessToken`, `resolveAccessToken`): what `linkvault keys` and
//! `linkvault serve` are built on.

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;

use super::client::Client;
use super::js::{json_arg, promise, with_json};
use crate::clock::iso8601;
use crate::domain::apikeys::{AccessGrant, ApiKeyInfo, CreatedApiKey, IssuedAccessToken};
use crate::store::Pending;

/// Options of `createApiKey`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON.
#[allow(dead_code)]
#[napi(object)]
pub struct CreateApiKeyOptions {
  /// A label for people (1–256 characters).
  pub name: Option<String>,
}

/// Filters of `listApiKeys`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON.
#[allow(dead_code)]
#[napi(object)]
pub struct ApiKeyQuery {
  /// Only keys of this org.
  pub org_id: Option<String>,
  /// Only keys of this environment.
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: Option<String>,
  /// At most this many keys, 1–10000 (default 10000).
  pub limit: Option<u32>,
}

/// Input of `issueAccessToken` (the client-credentials grant).
// Type-only: documents the input in index.d.ts; the input itself is read as JSON.
#[allow(dead_code)]
#[napi(object)]
pub struct AccessTokenRequest {
  #[napi(js_name = "client_id")]
  pub client_id: String,
  #[napi(js_name = "client_secret")]
  pub client_secret: String,
  /// What the token is for; `resolveAccessToken` accepts it only for the same audience.
  pub audience: String,
  /// Lifetime in seconds, 1–86400 (default 3600).
  #[napi(js_name = "ttl_seconds")]
  pub ttl_seconds: Option<u32>,
}

/// An API key as listed: never its secrets.
#[napi(object, use_nullable = true)]
pub struct ApiKey {
  /// Public id of the key (`lvc_…`); also its client id for client credentials.
  #[napi(js_name = "client_id")]
  pub client_id: String,
  #[napi(js_name = "org_id")]
  pub org_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
  pub name: Option<String>,
  /// The API key's prefix and last four characters (`tk_…3f9a`).
  #[napi(js_name = "api_key_hint")]
  pub api_key_hint: String,
  /// ISO-8601 UTC.
  #[napi(js_name = "created_at")]
  pub created_at: String,
  /// ISO-8601 UTC; null while the key is live.
  #[napi(js_name = "revoked_at")]
  pub revoked_at: Option<String>,
}

/// A new key with its secrets: shown once, only their digests are stored.
#[napi(object, use_nullable = true)]
pub struct NewApiKey {
  /// Cobalt's `x-api-key`: `tk_…` (test) or `pk_…` (production).
  #[napi(js_name = "api_key")]
  pub api_key: String,
  #[napi(js_name = "client_id")]
  pub client_id: String,
  /// With `client_id`: the client credentials of `issueAccessToken` (Auth0's
  /// `POST /oauth/token`, Fiskil's `POST /v1/token`).
  #[napi(js_name = "client_secret")]
  pub client_secret: String,
  #[napi(js_name = "org_id")]
  pub org_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
  pub name: Option<String>,
  #[napi(js_name = "api_key_hint")]
  pub api_key_hint: String,
  #[napi(js_name = "created_at")]
  pub created_at: String,
}

/// The key and audience of a valid access token.
#[napi(object, use_nullable = true)]
pub struct AccessGrantInfo {
  #[napi(js_name = "client_id")]
  pub client_id: String,
  #[napi(js_name = "org_id")]
  pub org_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
  pub name: Option<String>,
  pub audience: String,
  /// Unix seconds.
  #[napi(js_name = "expires_at")]
  pub expires_at: i64,
}

/// A new access token (an opaque bearer secret, stored only as a digest).
#[napi(object)]
pub struct AccessToken {
  #[napi(js_name = "access_token")]
  pub access_token: String,
  #[napi(js_name = "token_type", ts_type = "'Bearer'")]
  pub token_type: String,
  /// Seconds.
  #[napi(js_name = "expires_in")]
  pub expires_in: i64,
  #[napi(js_name = "client_id")]
  pub client_id: String,
  #[napi(js_name = "org_id")]
  pub org_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
  pub audience: String,
}

fn key(k: ApiKeyInfo) -> ApiKey {
  ApiKey {
    client_id: k.client_id,
    org_id: k.org_id,
    environment: k.environment,
    name: k.name,
    api_key_hint: k.key_hint,
    created_at: iso8601(k.created_at),
    revoked_at: k.revoked_at.map(iso8601),
  }
}

fn created(c: CreatedApiKey) -> NewApiKey {
  NewApiKey {
    api_key: c.api_key,
    client_secret: c.client_secret,
    client_id: c.info.client_id,
    org_id: c.info.org_id,
    environment: c.info.environment,
    name: c.info.name,
    api_key_hint: c.info.key_hint,
    created_at: iso8601(c.info.created_at),
  }
}

fn grant(g: AccessGrant) -> AccessGrantInfo {
  AccessGrantInfo {
    client_id: g.key.client_id,
    org_id: g.key.org_id,
    environment: g.key.environment,
    name: g.key.name,
    audience: g.audience,
    expires_at: g.expires_at,
  }
}

fn issued(t: IssuedAccessToken) -> AccessToken {
  AccessToken {
    access_token: t.access_token,
    token_type: "Bearer".into(),
    expires_in: t.expires_in,
    client_id: t.grant.key.client_id,
    org_id: t.grant.key.org_id,
    environment: t.grant.key.environment,
    audience: t.grant.audience,
  }
}

#[napi]
impl Client {
  /// Creates an API key bound to this client's org and environment. The result holds the
  /// secrets (`api_key`, `client_secret`): they are shown this once, only their SHA-256
  /// digests are stored.
  #[napi(
    ts_args_type = "options?: CreateApiKeyOptions",
    ts_return_type = "Promise<NewApiKey>"
  )]
  pub fn create_api_key<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, NewApiKey>> {
    let p = with_json(options, "options", |v| {
      self.vault.create_api_key((!v.is_null()).then_some(v))
    });
    promise(env, p, created)
  }

  /// Lists the store's API keys (every org and environment unless filtered), oldest first,
  /// revoked ones included. Never returns secrets.
  #[napi(
    ts_args_type = "options?: ApiKeyQuery",
    ts_return_type = "Promise<ApiKey[]>"
  )]
  pub fn list_api_keys<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Vec<ApiKey>>> {
    let p = with_json(options, "options", |v| {
      self.vault.list_api_keys((!v.is_null()).then_some(v))
    });
    promise(env, p, |keys| keys.into_iter().map(key).collect())
  }

  /// Revokes a key (any org) by its `client_id`: its API key, client secret and access tokens
  /// stop working at once. `NOT_FOUND` if unknown; revoking again returns it unchanged.
  #[napi(ts_args_type = "client_id: string", ts_return_type = "Promise<ApiKey>")]
  pub fn revoke_api_key<'e>(
    &self,
    env: &'e Env,
    client_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, ApiKey>> {
    let p = with_json(client_id, "client_id", |v| self.vault.revoke_api_key(v));
    promise(env, p, key)
  }

  /// The live key an API key belongs to (any org and environment), or null for an unknown,
  /// malformed or revoked one. Its `org_id` and `environment` are the scope it opens.
  #[napi(
    ts_args_type = "api_key: string",
    ts_return_type = "Promise<ApiKey | null>"
  )]
  pub fn resolve_api_key<'e>(
    &self,
    env: &'e Env,
    api_key: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Option<ApiKey>>> {
    let p = with_json(api_key, "api_key", |v| self.vault.resolve_api_key(v));
    promise(env, p, |k| k.map(key))
  }

  /// The client-credentials grant: a new access token for a live key whose `client_secret`
  /// matches (compared in constant time), or null when the credentials are unknown, wrong or
  /// revoked. `VALIDATION_ERROR` for a missing field.
  #[napi(
    ts_args_type = "request: AccessTokenRequest",
    ts_return_type = "Promise<AccessToken | null>"
  )]
  pub fn issue_access_token<'e>(
    &self,
    env: &'e Env,
    request: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Option<AccessToken>>> {
    let p = match json_arg(request, "request") {
      Ok(mut v) => {
        let p = self.vault.issue_access_token(&v);
        if let Some(s) = v.get_mut("client_secret") {
          *s = serde_json::Value::Null;
        }
        p
      }
      Err(e) => Pending::ready(Err(e)),
    };
    promise(env, p, |t| t.map(issued))
  }

  /// The grant of a live access token issued for `audience`, or null (unknown, expired,
  /// issued for another audience, or its key revoked).
  #[napi(
    ts_args_type = "access_token: string, audience: string",
    ts_return_type = "Promise<AccessGrantInfo | null>"
  )]
  pub fn resolve_access_token<'e>(
    &self,
    env: &'e Env,
    access_token: Option<Unknown<'_>>,
    audience: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Option<AccessGrantInfo>>> {
    let p = match (
      json_arg(access_token, "access_token"),
      json_arg(audience, "audience"),
    ) {
      (Ok(t), Ok(a)) => self.vault.resolve_access_token(&t, &a),
      (Err(e), _) | (_, Err(e)) => Pending::ready(Err(e)),
    };
    promise(env, p, |g| g.map(grant))
  }
}

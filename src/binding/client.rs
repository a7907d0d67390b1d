//! The `Client` class: open, close and the scope it works in.

use std::sync::Arc;

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;

use super::js::{json_arg, promise, rejected};
use crate::client::{OpenOptions, Vault};
use crate::store::Pending;

/// Options of `Client.open`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct ClientOptions {
  /// Database file. Default `'linkvault.db'`; `':memory:'` for a private in-memory database.
  /// Not with `url`.
  pub path: Option<String>,
  /// A PostgreSQL server instead of a file: `postgres://user:password@host:5432/database`
  /// (or `postgresql://`), with libpq's parameters such as `sslmode` (`disable`, `prefer` (the
  /// default), `require`) and `connect_timeout` (seconds, default 5). Many processes on many
  /// hosts can share one database. Requires `encryptionKey` (or `LINKVAULT_ENCRYPTION_KEY`).
  /// A server that is down or refuses the login rejects `open` with `STORAGE_ERROR` (status
  /// 503) naming host and port.
  pub url: Option<String>,
  /// With `url`: the PostgreSQL schema holding linkvault's tables, created if missing
  /// (default `'linkvault'`; 1–63 letters, digits and underscores, not starting with a digit).
  pub schema: Option<String>,
  /// With `url`: connections of this client (1–100, default 10), plus one that listens for
  /// other processes' revocations.
  pub pool_size: Option<u32>,
  /// Becomes `associated_org` / `org_id`. Default: generated once and kept in the file.
  pub org_id: Option<String>,
  /// `'test'` or `'production'` (default `'test'`). Data is scoped by (orgId, environment).
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: Option<String>,
  /// 32 bytes as 64 hex characters or base64; seals credentials at rest. Default: env
  /// `LINKVAULT_ENCRYPTION_KEY`, else (SQLite only) a random key generated into `<path>.key`
  /// (mode 0600).
  pub encryption_key: Option<String>,
  /// SQLite `synchronous`: `'normal'` (default; fast, an OS crash may lose the last commits but
  /// never corrupts) or `'full'` (every commit fsynced before it resolves).
  #[napi(ts_type = "'normal' | 'full'")]
  pub durability: Option<String>,
  /// Base URL of your own hosted consent flow (absolute http(s)). Auth sessions then get
  /// `auth_url = ${authUrlBase}?session_id=…`; without it, the linkvault server's consent page
  /// (see `publicUrl`).
  pub auth_url_base: Option<String>,
  /// Absolute http(s) URL the linkvault HTTP server (`linkvault serve`) is reached at, without a
  /// query; a trailing `/` is dropped. Without `authUrlBase`, auth sessions get
  /// `auth_url = ${publicUrl}/link/session/<session_id>` (the server's consent page), or the
  /// relative `/link/session/<session_id>` without `publicUrl`.
  pub public_url: Option<String>,
  /// Your app's name, returned as `app_name` on consents (Fiskil's field); 1–256 characters.
  pub app_name: Option<String>,
  /// Your app's logo (absolute http(s) URL), returned as `app_logo` on consents.
  pub app_logo: Option<String>,
  /// HS256 secret for session tokens (a string of at least 32 bytes; its UTF-8 bytes are the
  /// HMAC key, as JWT libraries use a string secret). Registered as the signing key when new to
  /// the file. Default: a random secret generated once per (orgId, environment), stored sealed.
  pub signing_secret: Option<String>,
  /// Default session-token lifetime in seconds (default 86400).
  pub session_token_ttl_seconds: Option<u32>,
  /// Refresh-token lifetime in seconds (default 2592000, 30 days).
  pub refresh_token_ttl_seconds: Option<u32>,
  /// Tolerance for `exp` and `iat` when verifying, in seconds (0–600, default 30).
  pub clock_skew_seconds: Option<u32>,
  /// Older encryption keys (same format as `encryptionKey`, at most 16) this client may open
  /// values with: during a key rollout, deploy `encryptionKey: NEW, previousEncryptionKeys: [OLD]`
  /// everywhere, then call `rotateEncryptionKey(NEW)` once. New values are always sealed under
  /// the file's key. Not needed to read a file whose rotation was interrupted: either key alone
  /// opens it.
  pub previous_encryption_keys: Option<Vec<String>>,
}

/// A linkvault client on one SQLite file or PostgreSQL schema, scoped to one (orgId,
/// environment). Open one with `await Client.open(options)`; `await using client = await
/// Client.open(...)` closes it. Every method returns a Promise and never blocks the event loop;
/// rejections are `LinkvaultError`s with a stable `code`, an HTTP-like `status` and, for
/// `VALIDATION_ERROR`, the offending `field`.
#[napi]
pub struct Client {
  pub(crate) vault: Arc<Vault>,
}

#[napi]
impl Client {
  /// Opens (creating and migrating if needed) a database and returns a client.
  #[napi(
    ts_args_type = "options?: ClientOptions",
    ts_return_type = "Promise<Client>"
  )]
  pub fn open<'e>(
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Client>> {
    let parsed = json_arg(options, "options").and_then(|mut v| {
      let o = OpenOptions::parse(Some(&v));
      crate::domain::keys::scrub_key_strings(&mut v);
      o
    });
    match parsed {
      Err(e) => rejected(env, e),
      Ok(o) => promise(env, Vault::open(o), |vault| Client {
        vault: Arc::new(vault),
      }),
    }
  }

  /// Finishes queued work and closes the database. Later calls reject with `CLIENT_CLOSED`.
  /// Closing twice is harmless.
  #[napi(ts_return_type = "Promise<void>")]
  pub fn close<'e>(&self, env: &'e Env) -> napi::Result<PromiseRaw<'e, ()>> {
    let p: Pending<()> = self.vault.close();
    promise(env, p, |_| ())
  }

  /// The organization id data is scoped to (`associated_org`).
  #[napi(getter)]
  pub fn org_id(&self) -> String {
    self.vault.scope().org_id.clone()
  }

  /// The environment data is scoped to.
  #[napi(getter, ts_return_type = "'test' | 'production'")]
  pub fn environment(&self) -> String {
    self.vault.scope().environment.clone()
  }
}

//! `Vault`: the napi-free core of a linkvault client. It parses and validates input, owns the
//! store, the key ring and the scope, runs each call as a job on the store (the rules come from
//! `domain`), and returns [`Pending`] results that any front end (Node, Rust) awaits.
//!
//! One file per concept: `accounts`, `end_users`, `identities`, `tokens`, `keys`
//! (encryption-key rotation), `events`; consents are still an `impl Vault` block in
//! `crate::consents`.

// Vault methods of the vendor-compatibility calls (Fiskil end users, Auth0 users), kept apart.
mod accounts;
mod admin;
mod apikeys;
mod consents;
mod end_users;
mod events;
mod identities;
mod keys;
#[cfg(test)]
pub(crate) mod testing;
mod tokens;
mod users;
mod webhooks;

pub use keys::Rotation;
pub(crate) use tokens::open_runtime as open_token_runtime;
pub use tokens::TokenRuntime;

use std::sync::Arc;

use serde_json::Value;

use crate::clock::now_ms;
use crate::crypto::{Key, Sealer};
use crate::domain::tokens::TokenOptions;
use crate::error::{Error, Result};
use crate::input::{self, Fields};
use crate::store::postgres::{self, Target, DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, MAX_POOL_SIZE};
use crate::store::{
  self as storage, Durability, Pending, PgStore, Scope, SqliteStore, Store, StoreConfig,
};

pub const ENV_ENCRYPTION_KEY: &str = "LINKVAULT_ENCRYPTION_KEY";

/// Longest accepted `path` (Linux's PATH_MAX).
const MAX_PATH_BYTES: usize = 4096;

/// Options of `Client.open`.
#[derive(Debug)]
pub struct OpenOptions {
  pub path: String,
  pub org_id: Option<String>,
  pub environment: String,
  pub encryption_key: Option<Key>,
  pub durability: Durability,
  /// `authUrlBase`: auth sessions get `auth_url = ${authUrlBase}?session_id=…`.
  pub auth_url_base: Option<String>,
  /// `publicUrl`: where the linkvault HTTP server is reached; without `authUrlBase`, sessions get
  /// `auth_url = ${publicUrl}/link/session/<session_id>` (its consent page).
  pub public_url: Option<String>,
  /// `appName` / `appLogo`: Fiskil's `app_name` / `app_logo` on consents.
  pub app: AppInfo,
  /// Session-token options (`signingSecret`, TTLs, skew).
  pub tokens: TokenOptions,
  /// `previousEncryptionKeys` (reliability, key rotation): older keys this client can open
  /// values with; the file's own key is always the one new values are sealed under.
  pub previous_keys: Vec<Key>,
  /// Set when the key came from `<path>.key`: a key rotation replaces that file.
  pub key_file: Option<std::path::PathBuf>,
  /// `url` (with `schema` and `poolSize`): a PostgreSQL server instead of the SQLite `path`.
  pub server: Option<Server>,
}

/// Where a PostgreSQL client connects.
#[derive(Debug)]
pub struct Server {
  pub target: Target,
  pub pool_size: usize,
}

/// `url`, `schema` and `poolSize`: `None` without `url`.
fn parse_server(f: &Fields<'_>) -> Result<Option<Server>> {
  let Some(url) = f.str("url")? else {
    for field in ["schema", "poolSize"] {
      if f.get(field).is_some() {
        return Err(Error::validation(
          field,
          format!("{field} applies to a PostgreSQL store: give url too"),
        ));
      }
    }
    return Ok(None);
  };
  if f.get("path").is_some() {
    return Err(Error::validation(
      "url",
      "give url (PostgreSQL) or path (SQLite), not both",
    ));
  }
  if f.get("durability").is_some() {
    return Err(Error::validation(
      "durability",
      "durability is SQLite's synchronous setting; a PostgreSQL commit is as durable as the \
       server's synchronous_commit makes it",
    ));
  }
  let schema = f.str("schema")?.unwrap_or(DEFAULT_SCHEMA);
  if !postgres::valid_schema(schema) {
    return Err(Error::validation(
      "schema",
      "schema must be 1 to 63 letters, digits or underscores, not starting with a digit",
    ));
  }
  let pool_size = f
    .int("poolSize", 1, MAX_POOL_SIZE as i64)?
    .map_or(DEFAULT_POOL_SIZE, |n| n as usize);
  let target = Target::parse(url, schema)?;
  Ok(Some(Server { target, pool_size }))
}

fn env_key_set() -> bool {
  std::env::var(ENV_ENCRYPTION_KEY).is_ok_and(|k| !k.trim().is_empty())
}

impl OpenOptions {
  pub fn parse(v: Option<&Value>) -> Result<Self> {
    let f = Fields::new(v, "options")?;
    let server = parse_server(&f)?;
    let path = f.str("path")?.unwrap_or("linkvault.db").to_string();
    if path.contains('\0') {
      return Err(Error::validation("path", "path must not contain NUL"));
    }
    if path.len() > MAX_PATH_BYTES {
      return Err(Error::validation(
        "path",
        format!("path must be at most {MAX_PATH_BYTES} bytes"),
      ));
    }
    let org_id = match f.get("orgId") {
      None => None,
      some => Some(input::id(some, "orgId", 256)?),
    };
    let environment = match f.str("environment")? {
      None => "test".to_string(),
      Some(e @ ("test" | "production")) => e.to_string(),
      Some(_) => {
        return Err(Error::validation(
          "environment",
          "environment must be 'test' or 'production'",
        ))
      }
    };
    let encryption_key = f
      .str("encryptionKey")?
      .map(|k| Key::parse(k, "encryptionKey"))
      .transpose()?;
    if server.is_some() && encryption_key.is_none() && !env_key_set() {
      return Err(Error::validation(
        "encryptionKey",
        format!(
          "encryptionKey (or {ENV_ENCRYPTION_KEY}) is required with url: a server database has \
           no key file"
        ),
      ));
    }
    let durability = match f.str("durability")? {
      None | Some("normal") => Durability::Normal,
      Some("full") => Durability::Full,
      Some(_) => {
        return Err(Error::validation(
          "durability",
          "durability must be 'normal' or 'full'",
        ))
      }
    };
    let auth_url_base = match f.str("authUrlBase")? {
      None => None,
      Some(base) => {
        crate::consents::validate_http_url("authUrlBase", base)?;
        Some(base.to_string())
      }
    };
    let public_url = match f.str("publicUrl")? {
      None => None,
      Some(url) => {
        crate::consents::validate_http_url("publicUrl", url)?;
        if url.contains('?') {
          return Err(Error::validation(
            "publicUrl",
            "publicUrl must not have a query (paths are appended to it)",
          ));
        }
        Some(url.trim_end_matches('/').to_string())
      }
    };
    let app = AppInfo::parse(&f)?;
    let tokens = TokenOptions::parse(&f)?;
    let previous_keys = crate::domain::keys::parse_previous_keys(f.get("previousEncryptionKeys"))?;
    Ok(OpenOptions {
      path,
      org_id,
      environment,
      encryption_key,
      durability,
      auth_url_base,
      public_url,
      app,
      tokens,
      previous_keys,
      key_file: None,
      server,
    })
  }

  fn is_memory(&self) -> bool {
    self.path == ":memory:"
  }

  /// The key from the option, else `LINKVAULT_ENCRYPTION_KEY`, else (in the `test` environment
  /// only) `<path>.key`, created on first use; a private in-memory database gets a random key.
  /// Outside `test` a key file beside the database is refused: it would end up in the same
  /// backups and disk images as the data it protects.
  fn resolve_key(&mut self) -> Result<Key> {
    self.resolve_key_with(std::env::var(ENV_ENCRYPTION_KEY).ok())
  }

  /// [`Self::resolve_key`] with the environment variable's value given.
  fn resolve_key_with(&mut self, env_key: Option<String>) -> Result<Key> {
    if let Some(k) = self.encryption_key.take() {
      return Ok(k);
    }
    if let Some(text) = env_key {
      if !text.trim().is_empty() {
        return Key::parse(&text, ENV_ENCRYPTION_KEY);
      }
    }
    if self.server.is_some() {
      return Err(Error::validation(
        "encryptionKey",
        format!("encryptionKey (or {ENV_ENCRYPTION_KEY}) is required with url"),
      ));
    }
    if self.is_memory() {
      return Key::random();
    }
    if self.environment != "test" {
      return Err(Error::validation(
        "encryptionKey",
        format!(
          "encryptionKey is required outside the 'test' environment: pass it or set \
           {ENV_ENCRYPTION_KEY} (a key file beside the database is only generated in 'test')"
        ),
      ));
    }
    let file = std::path::PathBuf::from(format!("{}.key", self.path));
    let key = Key::load_or_create_file(&file)?;
    self.key_file = Some(file);
    Ok(key)
  }
}

/// Your app as consents name it (Fiskil's `app_name`, `app_logo`): client options, not stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppInfo {
  pub name: Option<String>,
  pub logo: Option<String>,
}

/// Longest `appName`.
pub const MAX_APP_NAME_CHARS: usize = 256;

impl AppInfo {
  fn parse(f: &Fields<'_>) -> Result<Self> {
    let name = match f.str("appName")? {
      Some(n) if n.is_empty() || n.chars().count() > MAX_APP_NAME_CHARS => {
        return Err(Error::validation(
          "appName",
          format!("appName must be 1 to {MAX_APP_NAME_CHARS} characters"),
        ))
      }
      other => other.map(str::to_string),
    };
    let logo = match f.str("appLogo")? {
      Some(url) => {
        crate::consents::validate_http_url("appLogo", url)?;
        Some(url.to_string())
      }
      None => None,
    };
    Ok(AppInfo { name, logo })
  }
}

/// One open client: a store, the key ring and the (org, environment) scope it works in.
pub struct Vault {
  pub(crate) store: Arc<dyn Store>,
  /// The encryption keys this client holds; the engine's legacy modules share it.
  pub(crate) sealer: Arc<Sealer>,
  pub(crate) scope: Scope,
  pub(crate) auth_url_base: Option<String>,
  pub(crate) public_url: Option<String>,
  pub(crate) app: AppInfo,
  pub(crate) tokens: TokenRuntime,
  /// Where the key came from when it is `<path>.key` (a rotation replaces that file).
  pub(crate) key_file: Option<std::path::PathBuf>,
  /// Set for a client made by `forScope`: the store belongs to the client it came from, so
  /// `close` leaves it open.
  pub(crate) shares_store: bool,
}

impl std::fmt::Debug for Vault {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("Vault")
      .field("scope", &self.scope)
      .finish_non_exhaustive()
  }
}

impl Vault {
  /// Opens the database (off the caller's thread) and resolves the scope.
  pub fn open(mut options: OpenOptions) -> Pending<Vault> {
    let (answer, result) = Pending::channel();
    let spawned = std::thread::Builder::new()
      .name("linkvault-open".into())
      .spawn(move || {
        let _ = answer.send(Vault::open_blocking(&mut options));
      });
    match spawned {
      Ok(_) => result,
      Err(e) => Pending::ready(Err(Error::storage(format!(
        "cannot start open thread: {e}"
      )))),
    }
  }

  fn open_blocking(options: &mut OpenOptions) -> Result<Vault> {
    let key = options.resolve_key()?;
    let mut sealer = Sealer::new(key);
    for k in std::mem::take(&mut options.previous_keys) {
      sealer = sealer.with_older(k);
    }
    let sealer = Arc::new(sealer);
    let store: Arc<dyn Store> = match options.server.take() {
      Some(server) => Arc::new(PgStore::open(server.target, server.pool_size)?),
      None => {
        let config = StoreConfig {
          path: options.path.clone(),
          durability: options.durability,
          readers: 2,
        };
        Arc::new(SqliteStore::open(config, sealer.clone()).wait()?)
      }
    };
    let opened = Vault::attach(store.clone(), sealer, options);
    if opened.is_err() {
      let _ = store.close().wait();
    }
    opened
  }

  /// Resolves the scope and the token verifier on an open store.
  fn attach(
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    options: &mut OpenOptions,
  ) -> Result<Vault> {
    let scope = open_scope(
      &*store,
      &sealer,
      options.org_id.clone(),
      &options.environment,
    )?;
    let tokens = std::mem::take(&mut options.tokens);
    let runtime = tokens::open_runtime(&*store, &sealer, &scope, tokens)?;
    Ok(Vault {
      store,
      sealer,
      scope,
      auth_url_base: options.auth_url_base.clone(),
      public_url: options.public_url.clone(),
      app: options.app.clone(),
      tokens: runtime,
      key_file: options.key_file.clone(),
      shares_store: false,
    })
  }

  pub fn scope(&self) -> &Scope {
    &self.scope
  }

  pub fn close(&self) -> Pending<()> {
    self.tokens.verifier.close();
    if self.shares_store {
      return Pending::ready(Ok(()));
    }
    self.store.close()
  }
}

/// Checks the encryption key against the database and resolves the scope (see
/// `domain::scope::open`); nothing is written to a read-only database.
pub(crate) fn open_scope(
  store: &dyn Store,
  sealer: &Arc<Sealer>,
  org_id: Option<String>,
  environment: &str,
) -> Result<Scope> {
  let writable = !store.is_read_only();
  let (sealer, environment) = (sealer.clone(), environment.to_string());
  let job = move |tx: &mut dyn storage::Tx| {
    crate::domain::scope::open(
      tx,
      &sealer,
      org_id.as_deref(),
      &environment,
      writable,
      now_ms(),
    )
  };
  if writable {
    storage::write(store, job).wait()
  } else {
    storage::read(store, job).wait()
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  fn open_at(path: &str, env: &str, key: [u8; 32]) -> Vault {
    let mut o = OpenOptions::parse(Some(
      &json!({"path": path, "environment": env, "orgId": "org_1"}),
    ))
    .unwrap();
    o.encryption_key = Some(Key::from_bytes(key));
    Vault::open(o).wait().unwrap()
  }

  #[test]
  fn upsert_get_list_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db").to_string_lossy().to_string();
    let v = open_at(&path, "test", [1; 32]);
    let out = v
      .upsert_linked_account(
        &json!({"linked_account_id": "u1", "name": "Ann", "udf": {"plan": "pro"},
                "your_app": {"app_id": "app", "auth_credentials": {"Authorization": "Bearer zzz-secret"}}}),
        None,
      )
      .wait()
      .unwrap();
    assert!(out.new_account);
    assert_eq!(out.account.version, 0);
    // Same payload again: nothing changes.
    let again = v
      .upsert_linked_account(
        &json!({"linked_account_id": "u1", "your_app": {"app_id": "app", "auth_credentials": {"Authorization": "Bearer zzz-secret"}}}),
        None,
      )
      .wait()
      .unwrap();
    assert!(!again.changed);
    assert_eq!(again.account.version, 0);
    let changed = v
      .upsert_linked_account(
        &json!({"linked_account_id": "u1", "udf": {"plan": "team"}}),
        None,
      )
      .wait()
      .unwrap();
    assert_eq!(changed.account.version, 1);
    assert_eq!(changed.account.name.as_deref(), Some("Ann"));
    let conflict = v
      .upsert_linked_account(
        &json!({"linked_account_id": "u1", "name": "B"}),
        Some(&json!({"ifVersion": 0})),
      )
      .wait();
    assert_eq!(conflict.unwrap_err().code(), "VERSION_CONFLICT");
    let creds = v
      .get_linked_account_credentials(&json!("u1"))
      .wait()
      .unwrap()
      .unwrap();
    assert_eq!(creds.auth_credentials["Authorization"], "Bearer zzz-secret");
    let page = v
      .get_all_linked_accounts(Some(&json!({"udf": {"plan": "team"}})))
      .wait()
      .unwrap();
    assert_eq!(page.total, 1);
    let page = v
      .get_all_linked_accounts(Some(&json!({"search": "AN"})))
      .wait()
      .unwrap();
    assert_eq!(page.total, 1);
    // Another environment sees nothing.
    v.close().wait().unwrap();
    assert_eq!(
      v.get_linked_account_by_id(&json!("u1"))
        .wait()
        .unwrap_err()
        .code(),
      "CLIENT_CLOSED"
    );
    let prod = open_at(&path, "production", [1; 32]);
    assert_eq!(
      prod
        .get_linked_account_by_id(&json!("u1"))
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    prod.close().wait().unwrap();
    // The wrong key is refused.
    let mut o = OpenOptions::parse(Some(&json!({"path": path}))).unwrap();
    o.encryption_key = Some(Key::from_bytes([2; 32]));
    assert_eq!(
      Vault::open(o).wait().unwrap_err().code(),
      "DECRYPTION_FAILED"
    );
    // No credential byte on disk in clear.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
      let bytes = std::fs::read(entry.unwrap().path()).unwrap();
      assert!(!bytes.windows(10).any(|w| w == b"zzz-secret"));
    }
  }

  #[test]
  fn production_requires_an_encryption_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db").to_string_lossy().to_string();
    let open =
      |env: &str| OpenOptions::parse(Some(&json!({"path": path, "environment": env}))).unwrap();
    let e = open("production").resolve_key_with(None).unwrap_err();
    assert_eq!(
      (e.code(), e.field.as_deref()),
      ("VALIDATION_ERROR", Some("encryptionKey"))
    );
    assert!(!std::path::Path::new(&format!("{path}.key")).exists());
    // The environment variable, or the test environment's key file, still work.
    assert!(open("production")
      .resolve_key_with(Some("22".repeat(32)))
      .is_ok());
    assert!(open("test").resolve_key_with(None).is_ok());
    assert!(std::path::Path::new(&format!("{path}.key")).exists());
  }

  #[test]
  fn keyset_pages_visit_each_account_once() {
    let v = open_at(":memory:", "test", [3; 32]);
    for i in 0..25 {
      v.upsert_linked_account(&json!({"linked_account_id": format!("a{i}")}), None)
        .wait()
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
      let q = match &after {
        Some(c) => json!({"limit": 10, "after": c}),
        None => json!({"limit": 10}),
      };
      let page = v.list_linked_accounts(Some(&q)).wait().unwrap();
      seen.extend(page.docs.into_iter().map(|a| a.account_id));
      match page.next {
        Some(n) => after = Some(crate::accounts::encode_cursor(n)),
        None => break,
      }
    }
    assert_eq!(seen.len(), 25);
    seen.dedup();
    assert_eq!(seen.len(), 25);
  }
}

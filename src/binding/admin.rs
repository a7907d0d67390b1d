//! Operations tooling on `Client`: `backup`, `stats`, `listSigningKeys`, and the `onProgress`
//! option of `checkIntegrity` and `rotateEncryptionKey` (see `reliability`).

use std::sync::Arc;

use napi::bindgen_prelude::{FromNapiValue, Object, PromiseRaw, Unknown};
use napi::{Env, JsValue, ValueType};
use napi_derive::napi;

use super::client::Client;
use super::js::{promise, with_json, ProgressCallback};
use crate::clock::iso8601;
use crate::domain::admin::ProgressFn;
use crate::domain::admin::{SigningKeyInfo, Stats};
use crate::error::Error;
use crate::store::BackupInfo;

/// What `backup` wrote.
#[napi(object)]
pub struct BackupResult {
  /// The copy's absolute path.
  pub path: String,
  /// Its size in bytes.
  pub bytes: f64,
  /// Database pages copied.
  pub pages: f64,
  /// How long the copy took, in milliseconds.
  #[napi(js_name = "duration_ms")]
  pub duration_ms: f64,
}

/// The result of `stats()`: this client's scope counted, and the state of the database.
#[napi(object)]
pub struct ClientStats {
  #[napi(js_name = "org_id")]
  pub org_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
  /// Linked accounts.
  pub accounts: f64,
  /// Identities linked to them.
  pub identities: f64,
  /// Consents, ended ones included.
  pub consents: f64,
  /// Consents active now.
  #[napi(js_name = "active_consents")]
  pub active_consents: f64,
  /// Session tokens neither expired nor revoked.
  pub tokens: f64,
  /// Events in the log (after pruning).
  pub events: f64,
  /// Size of the database file in bytes (0 for `':memory:'`).
  #[napi(js_name = "database_bytes")]
  pub database_bytes: f64,
  /// Size of its write-ahead log (`<path>-wal`) in bytes.
  #[napi(js_name = "wal_bytes")]
  pub wal_bytes: f64,
  /// Writes queued for the writer thread and not yet started.
  #[napi(js_name = "write_queue")]
  pub write_queue: f64,
}

/// A session-token signing key (never its secret).
#[napi(object, js_name = "SigningKeyInfo", use_nullable = true)]
pub struct SigningKeyInfoJs {
  pub kid: String,
  /// ISO-8601 UTC.
  #[napi(js_name = "created_at")]
  pub created_at: String,
  /// ISO-8601 UTC, or null while the key is live.
  #[napi(js_name = "retired_at")]
  pub retired_at: Option<String>,
  /// True for the key that signs new tokens (the newest live one).
  pub current: bool,
}

/// `{ done, total }` passed to `onProgress`.
// Type-only: the value is built in `js::ProgressCallback`.
#[allow(dead_code)]
#[napi(object)]
pub struct Progress {
  pub done: f64,
  pub total: f64,
}

/// Options of `checkIntegrity` and `rotateEncryptionKey`.
// Type-only: read by `progress_option`.
#[allow(dead_code)]
#[napi(object)]
pub struct ProgressOptions {
  /// Called on Node's thread with `{ done, total }` as the work advances, every call before the
  /// promise settles; the last call has `done === total`. An exception it throws is an uncaught
  /// exception.
  #[napi(ts_type = "(progress: Progress) => void")]
  pub on_progress: Option<serde_json::Value>,
}

/// Reads `{ onProgress }` (a function) from an options argument.
pub(crate) fn progress_option(
  env: &Env,
  options: Option<Unknown<'_>>,
) -> Result<Option<ProgressFn>, Error> {
  let Some(o) = options else { return Ok(None) };
  match o.get_type() {
    Ok(ValueType::Undefined | ValueType::Null) => return Ok(None),
    Ok(ValueType::Object) => {}
    _ => return Err(Error::validation("options", "options must be an object")),
  }
  // SAFETY: the type was just checked to be an object.
  let obj = unsafe { Object::from_napi_value(o.value().env, o.raw()) }
    .map_err(|e| Error::validation("options", e.reason.clone()))?;
  let f: Option<Unknown<'_>> = obj.get("onProgress").map_err(|_| {
    // A getter or proxy trap threw: clear its exception so the rejection can be delivered.
    let mut pending = false;
    // SAFETY: plain N-API calls on the current call's env.
    unsafe {
      napi::sys::napi_is_exception_pending(env.raw(), &mut pending);
      if pending {
        let mut ex = std::ptr::null_mut();
        napi::sys::napi_get_and_clear_last_exception(env.raw(), &mut ex);
      }
    }
    Error::validation("onProgress", "onProgress could not be read")
  })?;
  let Some(f) = f else { return Ok(None) };
  match f.get_type() {
    Ok(ValueType::Undefined) => Ok(None),
    Ok(ValueType::Function) => {
      let cb = ProgressCallback::new(env, &f)
        .map_err(|e| Error::storage(format!("cannot keep onProgress: {}", e.reason)))?;
      Ok(Some(Arc::new(move |p: crate::domain::admin::Progress| {
        cb.report(p.done, p.total)
      })))
    }
    _ => Err(Error::validation(
      "onProgress",
      "onProgress must be a function",
    )),
  }
}

fn backup_result(b: BackupInfo) -> BackupResult {
  BackupResult {
    path: b.path,
    bytes: b.bytes as f64,
    pages: b.pages as f64,
    duration_ms: b.duration_ms as f64,
  }
}

fn signing_key(k: SigningKeyInfo) -> SigningKeyInfoJs {
  SigningKeyInfoJs {
    kid: k.kid,
    created_at: iso8601(k.created_at),
    retired_at: k.retired_at.map(iso8601),
    current: k.current,
  }
}

#[napi]
impl Client {
  /// Copies the whole database file (every scope) to `destPath` with SQLite's online backup:
  /// a consistent snapshot holding every write acknowledged before the call, taken while reads
  /// and writes go on. The copy is one self-contained file (no `-wal`), written under a
  /// temporary name and linked into place when complete. It holds credentials sealed under the
  /// encryption key: keep the key out of the backup's place. `VALIDATION_ERROR` (`field:
  /// 'destPath'`) if `destPath` exists (a backup never replaces a file), its directory does not,
  /// it is the database itself, or the database is `':memory:'`.
  #[napi(
    ts_args_type = "destPath: string",
    ts_return_type = "Promise<BackupResult>"
  )]
  pub fn backup<'e>(
    &self,
    env: &'e Env,
    dest_path: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, BackupResult>> {
    let p = with_json(dest_path, "destPath", |v| self.vault.backup(v));
    promise(env, p, backup_result)
  }

  /// This client's scope counted (accounts, identities, consents, live tokens, events) with the
  /// database and WAL sizes and the write-queue depth. Each count walks an index of the scope on
  /// a reader thread, never blocking writes: about 20 ms per 100,000 rows counted on a 2-core VM
  /// (75 ms for 200,000 accounts and their 200,000 events). A health endpoint polled every few
  /// seconds can call it as is; cache it if the scope holds millions of rows.
  #[napi(ts_return_type = "Promise<ClientStats>")]
  pub fn stats<'e>(&self, env: &'e Env) -> napi::Result<PromiseRaw<'e, ClientStats>> {
    let scope = self.vault.scope().clone();
    promise(env, self.vault.stats(), move |s: Stats| ClientStats {
      org_id: scope.org_id,
      environment: scope.environment,
      accounts: s.accounts as f64,
      identities: s.identities as f64,
      consents: s.consents as f64,
      active_consents: s.active_consents as f64,
      tokens: s.tokens as f64,
      events: s.events as f64,
      database_bytes: s.database_bytes as f64,
      wal_bytes: s.wal_bytes as f64,
      write_queue: s.write_queue as f64,
    })
  }

  /// This scope's session-token signing keys, oldest first: `{ kid, created_at, retired_at,
  /// current }`, never the secret. The input of `retireSigningKey`.
  #[napi(ts_return_type = "Promise<SigningKeyInfo[]>")]
  pub fn list_signing_keys<'e>(
    &self,
    env: &'e Env,
  ) -> napi::Result<PromiseRaw<'e, Vec<SigningKeyInfoJs>>> {
    promise(env, self.vault.list_signing_keys(), |keys| {
      keys.into_iter().map(signing_key).collect()
    })
  }
}

//! `checkIntegrity` and `rotateEncryptionKey` (reliability and key rotation).

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;

use super::admin::progress_option;
use super::client::Client;
use super::js::{json_arg, promise};
use crate::client::Rotation;
use crate::domain::keys::scrub_key_strings;
use crate::domain::keys::Integrity;
use crate::store::Pending;

/// The result of `checkIntegrity()`.
#[napi(object)]
pub struct IntegrityReport {
  /// True when SQLite's `integrity_check` says `ok`, `foreign_key_check` finds no orphan row,
  /// and every sealed value is under the file's encryption key (or a rotation is in progress).
  pub ok: bool,
  /// One line per problem found; empty when all is well. A line starting with `note:` is
  /// information (an interrupted key rotation) and does not make `ok` false.
  pub details: Vec<String>,
}

/// The result of `rotateEncryptionKey(newKey)`.
#[napi(object)]
pub struct KeyRotation {
  /// Sealed values re-encrypted under the new key by this call.
  pub resealed: f64,
  /// Batches (write jobs of at most 500 rows) it took.
  pub batches: f64,
  /// True when it continued an interrupted rotation to the same key.
  pub resumed: bool,
  /// The new key's public id (16 hex characters), as stored in each sealed value.
  #[napi(js_name = "key_id")]
  pub key_id: String,
}

fn report(i: Integrity) -> IntegrityReport {
  IntegrityReport {
    ok: i.ok,
    details: i.details,
  }
}

fn rotation(r: Rotation) -> KeyRotation {
  KeyRotation {
    resealed: r.resealed as f64,
    batches: r.batches as f64,
    resumed: r.resumed,
    key_id: r.key_id,
  }
}

#[napi]
impl Client {
  /// Checks the database file: SQLite's `PRAGMA integrity_check` (pages, records, every index
  /// matches its table), `PRAGMA foreign_key_check` (no orphan rows: identities, UDF rows,
  /// merge records and sessions all belong to an existing account) and that every sealed value
  /// is under the file's encryption key. Runs on a reader (writes go on meanwhile); it reads the
  /// whole file, so it takes time on a large one. `options.onProgress` is called with
  /// `{ done, total }` in steps (integrity check, foreign keys, sealed values: `total` 3).
  #[napi(
    ts_args_type = "options?: ProgressOptions",
    ts_return_type = "Promise<IntegrityReport>"
  )]
  pub fn check_integrity<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, IntegrityReport>> {
    let p = match progress_option(env, options) {
      Ok(progress) => self.vault.check_integrity_with(progress),
      Err(e) => Pending::ready(Err(e)),
    };
    promise(env, p, report)
  }

  /// Re-encrypts every stored secret (account credentials, credentials kept in merge records)
  /// under `newKey`, online: in batches of 500 rows, each its own write, so other calls go on
  /// meanwhile. From its first batch every client (any process) seals new values under
  /// `newKey`, and a client opened with either key reads everything. If interrupted (crash,
  /// `close()`), call it again with the same key to resume. When it resolves, the old key opens
  /// nothing in the file. A key kept in `<path>.key` is replaced there; a key given as an option
  /// or in `LINKVAULT_ENCRYPTION_KEY` must be changed by you (to `newKey`) before the next open.
  /// `VALIDATION_ERROR` (`field: 'newKey'`) for a malformed key or while a rotation to another
  /// key is unfinished; `DECRYPTION_FAILED` if a stored value cannot be opened.
  /// `options.onProgress` is called with `{ done, total }`: sealed values resealed so far out of
  /// those under another key when the call started.
  #[napi(
    ts_args_type = "newKey: string, options?: ProgressOptions",
    ts_return_type = "Promise<KeyRotation>"
  )]
  pub fn rotate_encryption_key<'e>(
    &self,
    env: &'e Env,
    new_key: Option<Unknown<'_>>,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, KeyRotation>> {
    let p = match json_arg(new_key, "newKey") {
      Ok(mut v) => {
        let p = match progress_option(env, options) {
          Ok(progress) => self.vault.rotate_encryption_key_with(&v, progress),
          Err(e) => Pending::ready(Err(e)),
        };
        scrub_key_strings(&mut v);
        p
      }
      Err(e) => Pending::ready(Err(e)),
    };
    promise(env, p, rotation)
  }
}

//! Operations tooling on a client (`backup`, `stats`, `listSigningKeys`, `checkIntegrity`).
//! The rules are in `domain::admin`; `backup` is the engine's (a SQLite file copy; a
//! PostgreSQL store answers VALIDATION_ERROR: back it up with pg_dump).

use std::path::PathBuf;

use serde_json::Value;

use super::end_users::map_result;
use crate::client::Vault;
use crate::clock::now_ms;
use crate::domain::admin::{self, ProgressFn, SigningKeyInfo, Stats};
use crate::domain::keys::Integrity;
use crate::error::{Error, Result};
use crate::store::{self, BackupInfo, Pending};

/// Longest accepted `destPath` (Linux's PATH_MAX), and longest file name: the copy is first
/// written as `.<name>.partial-<12 hex>`, which must fit the usual 255-byte limit.
const MAX_PATH_BYTES: usize = 4096;
const MAX_NAME_BYTES: usize = 200;

/// `backup(destPath)`'s argument: a non-empty path without NUL.
fn dest_path(v: &Value) -> Result<PathBuf> {
  match v {
    Value::String(s) if s.len() > MAX_PATH_BYTES => Err(Error::validation(
      "destPath",
      format!("destPath must be at most {MAX_PATH_BYTES} bytes"),
    )),
    Value::String(s) if !s.is_empty() && !s.contains('\0') => {
      let p = PathBuf::from(s);
      match p.file_name() {
        Some(name) if name.len() <= MAX_NAME_BYTES => Ok(p),
        Some(_) => Err(Error::validation(
          "destPath",
          format!("destPath's file name must be at most {MAX_NAME_BYTES} bytes"),
        )),
        None => Err(Error::validation("destPath", "destPath must name a file")),
      }
    }
    Value::Null => Err(Error::validation("destPath", "destPath is required")),
    _ => Err(Error::validation(
      "destPath",
      "destPath must be a non-empty file path",
    )),
  }
}

impl Vault {
  /// `backup(destPath)`: a consistent copy of the whole database file, taken online.
  pub fn backup(&self, dest: &Value) -> Pending<BackupInfo> {
    match dest_path(dest) {
      Ok(p) => self.store.backup(p),
      Err(e) => Pending::ready(Err(e)),
    }
  }

  /// `stats()`: this scope's counts and the engine's state.
  pub fn stats(&self) -> Pending<Stats> {
    let scope = self.scope.clone();
    // The queue as the call finds it (on PostgreSQL this read waits in the same queue).
    let write_queue = self.store.usage().write_queue;
    let counts = store::read(&*self.store, move |tx| admin::stats(tx, &scope, now_ms()));
    let engine = self.store.clone();
    map_result(counts, move |r| {
      r.map(|mut s| {
        let usage = engine.usage();
        if s.database_bytes == 0 {
          s.database_bytes = usage.database_bytes;
        }
        s.wal_bytes = usage.wal_bytes;
        s.write_queue = write_queue;
        s
      })
    })
  }

  /// `listSigningKeys()`: this scope's session-token signing keys, oldest first.
  pub fn list_signing_keys(&self) -> Pending<Vec<SigningKeyInfo>> {
    let scope = self.scope.clone();
    store::read(&*self.store, move |tx| admin::signing_keys(tx, &scope))
  }

  /// `checkIntegrity({ onProgress })`.
  pub fn check_integrity_with(&self, progress: Option<ProgressFn>) -> Pending<Integrity> {
    crate::store::read(&*self.store, move |tx| {
      crate::domain::keys::integrity_reporting(tx, progress.as_ref())
    })
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::client::OpenOptions;
  use crate::domain::admin::Progress;
  use serde_json::json;
  use std::sync::{Arc, Mutex};

  #[test]
  fn stats_signing_keys_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db").to_string_lossy().to_string();
    let o = OpenOptions::parse(Some(&json!({
      "path": path, "orgId": "org_s", "encryptionKey": "11".repeat(32),
    })))
    .unwrap();
    let v = Vault::open(o).wait().unwrap();
    for i in 0..3 {
      v.upsert_linked_account(&json!({"linked_account_id": format!("u{i}")}), None)
        .wait()
        .unwrap();
    }
    v.get_token_for_linked_account(&json!({"linked_account_id": "u1"}))
      .wait()
      .unwrap();
    let s = v.stats().wait().unwrap();
    assert_eq!((s.accounts, s.tokens, s.identities), (3, 1, 0));
    assert!(s.events >= 4 && s.database_bytes > 0);

    let keys = v.list_signing_keys().wait().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].current && keys[0].retired_at.is_none());

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let f: ProgressFn = Arc::new(move |p| sink.lock().unwrap().push(p));
    let report = v.check_integrity_with(Some(f)).wait().unwrap();
    assert!(report.ok, "{:?}", report.details);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&Progress { done: 0, total: 3 }));
    assert_eq!(seen.last(), Some(&Progress { done: 3, total: 3 }));
    v.close().wait().unwrap();
  }

  #[test]
  fn stats_signing_keys_and_backup_on_either_engine() {
    use crate::client::testing::{event, fresh, open, On, BOTH};
    use crate::domain::events::types::ACCOUNT_CREATED;
    for on in BOTH {
      let v = open(&fresh(on), json!({"orgId": "org_s"}), 3);
      let before = v.stats().wait().unwrap();
      event(&v, ACCOUNT_CREATED, Some("u1"));
      v.rotate_signing_key(None).wait().unwrap();
      let s = v.stats().wait().unwrap();
      // The rotation's own event counts too.
      assert_eq!(s.events, before.events + 2, "{on:?}");
      assert_eq!((s.accounts, s.identities, s.tokens), (0, 0, 0));
      assert!(s.database_bytes > 0, "{on:?}");
      let keys = v.list_signing_keys().wait().unwrap();
      assert_eq!(keys.len(), 2);
      assert!(!keys[0].current && keys[1].current);
      assert!(keys
        .iter()
        .all(|k| k.retired_at.is_none() && k.created_at > 0));
      let dir = tempfile::tempdir().unwrap();
      let dest = json!(dir.path().join("copy.db").to_string_lossy());
      match on {
        On::Sqlite => assert!(v.backup(&dest).wait().unwrap().bytes > 0),
        On::Postgres => {
          let e = v.backup(&dest).wait().unwrap_err();
          assert_eq!(
            (e.code(), e.field.as_deref()),
            ("VALIDATION_ERROR", Some("destPath"))
          );
          assert!(e.message.contains("pg_dump"));
        }
      }
      v.close().wait().unwrap();
    }
  }
}

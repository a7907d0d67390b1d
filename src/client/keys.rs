//! Encryption-key rotation and integrity checks of a client (`rotateEncryptionKey`,
//! `checkIntegrity`). The rules are in `domain::keys`; here each batch of a rotation is one job,
//! so other calls interleave.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::Vault;
use crate::clock::now_ms;
use crate::crypto::{hex_encode, Key, Sealer};
use crate::domain::keys::{self, Begin, Integrity, ROTATION_BATCH};
use crate::error::{Error, Result};
use crate::store::{self, Pending, Store};

/// Passes over the sealed columns before a rotation gives up (only a value that keeps
/// reappearing under another key could need more than one).
const MAX_PASSES: usize = 3;

/// What `rotateEncryptionKey` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
  /// Sealed values re-encrypted under the new key by this call.
  pub resealed: u64,
  /// Write jobs (batches) it took.
  pub batches: u64,
  /// Whether it continued a rotation that had been interrupted.
  pub resumed: bool,
  /// The new key's public id (hex), as stored next to sealed values.
  pub key_id: String,
}

impl Vault {
  /// `checkIntegrity()`.
  pub fn check_integrity(&self) -> Pending<Integrity> {
    store::read(&*self.store, |tx| keys::integrity(tx))
  }

  /// Starts (or resumes) a rotation to `new_key` (one write).
  #[cfg(test)]
  pub(crate) fn rotation_begin(&self, new_key: Key) -> Pending<Begin> {
    begin(&*self.store, &self.sealer, new_key)
  }

  /// Reseals one batch (one write).
  #[cfg(test)]
  pub(crate) fn rotation_step(&self, batch: usize) -> Pending<keys::Step> {
    step(&*self.store, &self.sealer, batch)
  }

  /// `rotateEncryptionKey(newKey)`: re-seals every stored secret under `newKey`, online, in
  /// batches of [`ROTATION_BATCH`] rows; resumable by calling it again with the same key.
  pub fn rotate_encryption_key(&self, new_key: &Value) -> Pending<Rotation> {
    self.rotate_encryption_key_with(new_key, None)
  }

  /// `rotateEncryptionKey(newKey, { onProgress })`: progress counts the sealed values resealed
  /// by this call out of those under another key when it started.
  pub fn rotate_encryption_key_with(
    &self,
    new_key: &Value,
    on_progress: Option<crate::domain::admin::ProgressFn>,
  ) -> Pending<Rotation> {
    let key = match new_key {
      Value::String(s) => match Key::parse(s, "newKey") {
        Ok(k) => k,
        Err(e) => return Pending::ready(Err(e)),
      },
      Value::Null => return Pending::ready(Err(Error::validation("newKey", "newKey is required"))),
      _ => {
        return Pending::ready(Err(Error::validation(
          "newKey",
          "newKey must be a string: 32 bytes as 64 hex characters or base64",
        )))
      }
    };
    let (store, sealer, key_file) = (
      self.store.clone(),
      self.sealer.clone(),
      self.key_file.clone(),
    );
    let (answer, pending) = Pending::channel();
    let spawned = std::thread::Builder::new()
      .name("linkvault-rotate".into())
      .spawn(move || {
        let _ = answer.send(rotate_blocking(
          &*store,
          &sealer,
          key_file.as_deref(),
          key,
          on_progress.as_ref(),
        ));
      });
    match spawned {
      Ok(_) => pending,
      Err(e) => Pending::ready(Err(Error::storage(format!(
        "cannot start rotation thread: {e}"
      )))),
    }
  }
}

fn begin(store: &dyn Store, sealer: &Arc<Sealer>, new_key: Key) -> Pending<Begin> {
  let sealer = sealer.clone();
  store::write(store, move |tx| {
    keys::begin(tx, &sealer, &new_key, now_ms())
  })
}

fn step(store: &dyn Store, sealer: &Arc<Sealer>, batch: usize) -> Pending<keys::Step> {
  let sealer = sealer.clone();
  store::write(store, move |tx| keys::step(tx, &sealer, batch))
}

/// The rotation, one job per step (runs on its own thread).
fn rotate_blocking(
  store: &dyn Store,
  sealer: &Arc<Sealer>,
  key_file: Option<&Path>,
  key: Key,
  on_progress: Option<&crate::domain::admin::ProgressFn>,
) -> Result<Rotation> {
  let report = |done, total| crate::domain::admin::report(on_progress, done, total);
  let key_id = hex_encode(&key.id());
  let begun = begin(store, sealer, key.clone()).wait()?;
  let mut out = Rotation {
    resumed: begun == Begin::Resumed,
    key_id,
    ..Rotation::default()
  };
  if begun == Begin::AlreadyCurrent {
    report(0, 0);
    return Ok(out);
  }
  let total = match on_progress {
    Some(_) => store::read(store, |tx| keys::leftovers(tx)).wait()?.max(0) as u64,
    None => 0,
  };
  report(0, total);
  // A key kept in `<path>.key` follows the file: written once the rotation is recorded
  // (a crash before or after this point leaves a key that opens the file either way).
  if let Some(path) = key_file {
    key.replace_file(path)?;
  }
  drop(key);
  for _ in 0..MAX_PASSES {
    loop {
      let done = step(store, sealer, ROTATION_BATCH).wait()?;
      out.batches += 1;
      out.resealed += done.resealed as u64;
      report(out.resealed, total);
      if done.done {
        break;
      }
    }
    let leftovers = store::read(store, |tx| keys::leftovers(tx)).wait()?;
    let sealer = sealer.clone();
    let finished = store::write(store, move |tx| keys::finish(tx, &sealer, leftovers)).wait()?;
    if finished {
      report(total, total);
      return Ok(out);
    }
  }
  Err(Error::storage(
    "storage error: key rotation did not converge (values keep appearing under another \
     key); it can be resumed",
  ))
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  use crate::client::OpenOptions;
  use crate::crypto::{hex_encode, Key};
  use crate::domain::keys::{scrub_key_strings, Begin, ROTATION_BATCH};
  use crate::error::Result;
  use serde_json::Value;

  fn open_with(path: &str, key: [u8; 32], previous: &[[u8; 32]]) -> Result<Vault> {
    let prev: Vec<String> = previous.iter().map(|k| hex_encode(k)).collect();
    let o = OpenOptions::parse(Some(&json!({
      "path": path, "orgId": "org_k", "encryptionKey": hex_encode(&key),
      "previousEncryptionKeys": prev,
    })))?;
    Vault::open(o).wait()
  }

  fn creds(v: &Vault, id: &str) -> Result<Value> {
    v.get_linked_account_credentials(&json!(id))
      .wait()
      .map(|c| {
        c.map(|c| Value::Object(c.auth_credentials))
          .unwrap_or(Value::Null)
      })
  }

  fn raw_kids(path: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
      .prepare(
        "SELECT hex(substr(credentials, 2, 8)) FROM accounts WHERE credentials IS NOT NULL
         UNION ALL SELECT hex(substr(credentials, 2, 8)) FROM account_merges WHERE credentials IS NOT NULL",
      )
      .unwrap();
    st.query_map([], |r| r.get(0))
      .unwrap()
      .collect::<rusqlite::Result<_>>()
      .unwrap()
  }

  #[test]
  fn rotation_reseals_everything_and_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db").to_string_lossy().to_string();
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let v = open_with(&path, old, &[]).unwrap();
    for i in 0..1203 {
      v.upsert_linked_account(
        &json!({"linked_account_id": format!("a{i}"),
                "your_app": {"auth_credentials": {"token": format!("secret-{i}")}}}),
        None,
      )
      .wait()
      .unwrap();
    }
    // A merge record holds sealed credentials too.
    v.link_accounts(&json!("a0"), &json!("a1"), None)
      .wait()
      .unwrap();
    let r = v
      .rotate_encryption_key(&json!(hex_encode(&new)))
      .wait()
      .unwrap();
    assert_eq!(
      r.resealed, 1204,
      "1202 accounts + 1 merge record + 1 signing key"
    );
    assert!(r.batches >= 3, "{r:?}");
    let new_kid = hex_encode(&Key::from_bytes(new).id()).to_uppercase();
    assert!(raw_kids(&path).iter().all(|k| *k == new_kid));
    // The rotating client keeps working.
    assert_eq!(creds(&v, "a5").unwrap(), json!({"token": "secret-5"}));
    v.close().wait().unwrap();
    // The old key opens nothing any more; the new one opens everything.
    assert_eq!(
      open_with(&path, old, &[]).unwrap_err().code(),
      "DECRYPTION_FAILED"
    );
    let v = open_with(&path, new, &[]).unwrap();
    assert_eq!(creds(&v, "a1202").unwrap(), json!({"token": "secret-1202"}));
    assert!(v.check_integrity().wait().unwrap().ok);
    // Rotating to the current key again is a no-op.
    let again = v
      .rotate_encryption_key(&json!(hex_encode(&new)))
      .wait()
      .unwrap();
    assert_eq!(again.resealed, 0);
    v.close().wait().unwrap();
  }

  #[test]
  fn interrupted_rotation_reads_with_either_key_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db").to_string_lossy().to_string();
    let (old, new) = ([3u8; 32], [4u8; 32]);
    let v = open_with(&path, old, &[]).unwrap();
    for i in 0..1200 {
      v.upsert_linked_account(
        &json!({"linked_account_id": format!("a{i}"),
                "your_app": {"auth_credentials": {"n": i}}}),
        None,
      )
      .wait()
      .unwrap();
    }
    // Begin and one batch only: an interrupted rotation.
    assert_eq!(
      v.rotation_begin(Key::from_bytes(new)).wait().unwrap(),
      Begin::Started
    );
    let step = v.rotation_step(ROTATION_BATCH).wait().unwrap();
    assert_eq!(step.resealed, ROTATION_BATCH);
    // A write during the rotation is sealed under the new key.
    v.upsert_linked_account(
      &json!({"linked_account_id": "a0", "your_app": {"auth_credentials": {"n": "changed"}}}),
      None,
    )
    .wait()
    .unwrap();
    v.close().wait().unwrap();
    let integrity_note = |v: &Vault| v.check_integrity().wait().unwrap();
    for key in [old, new] {
      let c = open_with(&path, key, &[]).unwrap();
      for i in [0usize, 1, 499, 500, 501, 1199] {
        let want = if i == 0 {
          json!({"n": "changed"})
        } else {
          json!({"n": i})
        };
        assert_eq!(
          creds(&c, &format!("a{i}")).unwrap(),
          want,
          "key {key:?} a{i}"
        );
      }
      let report = integrity_note(&c);
      assert!(report.ok, "{report:?}");
      assert!(report.details[0].starts_with("note: a key rotation is in progress"));
      c.close().wait().unwrap();
    }
    // Another key cannot start a second rotation meanwhile.
    let c = open_with(&path, old, &[]).unwrap();
    assert_eq!(
      c.rotate_encryption_key(&json!(hex_encode(&[9u8; 32])))
        .wait()
        .unwrap_err()
        .field
        .as_deref(),
      Some("newKey")
    );
    // Resumed by a client opened with the old key.
    let r = c
      .rotate_encryption_key(&json!(hex_encode(&new)))
      .wait()
      .unwrap();
    assert!(r.resumed);
    // The rest of the 1200 credentials, and the signing key.
    assert_eq!(r.resealed, 1200 - ROTATION_BATCH as u64 + 1);
    c.close().wait().unwrap();
    assert_eq!(
      open_with(&path, old, &[]).unwrap_err().code(),
      "DECRYPTION_FAILED"
    );
    let c = open_with(&path, new, &[]).unwrap();
    assert_eq!(creds(&c, "a1199").unwrap(), json!({"n": 1199}));
    assert!(c.check_integrity().wait().unwrap().details.is_empty());
    c.close().wait().unwrap();
  }

  #[test]
  fn previous_keys_open_old_values_and_the_file_key_stays_current() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db").to_string_lossy().to_string();
    let (old, new) = ([5u8; 32], [6u8; 32]);
    let v = open_with(&path, old, &[]).unwrap();
    v.upsert_linked_account(
      &json!({"linked_account_id": "x", "your_app": {"auth_credentials": {"a": 1}}}),
      None,
    )
    .wait()
    .unwrap();
    v.close().wait().unwrap();
    // Deployed with the new key and the old one as previous, before rotating: works, and
    // keeps sealing under the file's (old) key until the rotation.
    let v = open_with(&path, new, &[old]).unwrap();
    v.upsert_linked_account(
      &json!({"linked_account_id": "y", "your_app": {"auth_credentials": {"b": 2}}}),
      None,
    )
    .wait()
    .unwrap();
    let old_kid = hex_encode(&Key::from_bytes(old).id()).to_uppercase();
    assert!(raw_kids(&path).iter().all(|k| *k == old_kid));
    let r = v
      .rotate_encryption_key(&json!(hex_encode(&new)))
      .wait()
      .unwrap();
    assert_eq!(r.resealed, 3, "2 credentials + 1 signing key");
    v.close().wait().unwrap();
    // Only the new key is needed now; the old one is refused.
    let v = open_with(&path, new, &[]).unwrap();
    assert_eq!(creds(&v, "x").unwrap(), json!({"a": 1}));
    v.close().wait().unwrap();
    assert!(open_with(&path, old, &[]).is_err());
    // Bad previous keys name the field.
    let bad = OpenOptions::parse(Some(&json!({"previousEncryptionKeys": ["nope"]}))).unwrap_err();
    assert_eq!(bad.field.as_deref(), Some("previousEncryptionKeys"));
    let bad = OpenOptions::parse(Some(&json!({"previousEncryptionKeys": "x"}))).unwrap_err();
    assert_eq!(bad.field.as_deref(), Some("previousEncryptionKeys"));
  }

  #[test]
  fn a_client_open_before_the_rotation_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db").to_string_lossy().to_string();
    let (old, new) = ([7u8; 32], [8u8; 32]);
    let a = open_with(&path, old, &[]).unwrap();
    let b = open_with(&path, old, &[]).unwrap();
    a.upsert_linked_account(
      &json!({"linked_account_id": "x", "your_app": {"auth_credentials": {"a": 1}}}),
      None,
    )
    .wait()
    .unwrap();
    // `a` begins a rotation; `b` (opened earlier, old key only) writes and reads meanwhile.
    a.rotation_begin(Key::from_bytes(new)).wait().unwrap();
    b.upsert_linked_account(
      &json!({"linked_account_id": "y", "your_app": {"auth_credentials": {"b": 2}}}),
      None,
    )
    .wait()
    .unwrap();
    assert_eq!(creds(&b, "x").unwrap(), json!({"a": 1}));
    let new_kid = hex_encode(&Key::from_bytes(new).id()).to_uppercase();
    let kids = raw_kids(&path);
    assert_eq!(
      kids.iter().filter(|k| **k == new_kid).count(),
      1,
      "y is sealed under the new key"
    );
    a.rotate_encryption_key(&json!(hex_encode(&new)))
      .wait()
      .unwrap();
    assert!(raw_kids(&path).iter().all(|k| *k == new_kid));
    // `b` learned the new key while the rotation ran.
    assert_eq!(creds(&b, "y").unwrap(), json!({"b": 2}));
    a.close().wait().unwrap();
    b.close().wait().unwrap();
  }

  #[test]
  fn the_key_file_follows_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db").to_string_lossy().to_string();
    let open_default = || {
      let o = OpenOptions::parse(Some(&json!({"path": path, "orgId": "o"}))).unwrap();
      Vault::open(o).wait()
    };
    if std::env::var(crate::client::ENV_ENCRYPTION_KEY).is_ok() {
      return; // the key would not come from the file
    }
    let v = open_default().unwrap();
    v.upsert_linked_account(
      &json!({"linked_account_id": "x", "your_app": {"auth_credentials": {"a": 1}}}),
      None,
    )
    .wait()
    .unwrap();
    let before = std::fs::read_to_string(format!("{path}.key")).unwrap();
    let new = hex_encode(&[11u8; 32]);
    v.rotate_encryption_key(&json!(new)).wait().unwrap();
    v.close().wait().unwrap();
    let after = std::fs::read_to_string(format!("{path}.key")).unwrap();
    assert_ne!(before, after);
    assert_eq!(after.trim(), new);
    let v = open_default().unwrap();
    assert_eq!(creds(&v, "x").unwrap(), json!({"a": 1}));
    v.close().wait().unwrap();
  }

  /// Key material is wiped when dropped: `Key` and the ciphers built from it zeroize
  /// themselves (compile-time checks), and option strings holding keys are scrubbed.
  #[test]
  fn key_material_is_zeroized() {
    fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroized_on_drop::<Key>();
    zeroized_on_drop::<chacha20poly1305::XChaCha20Poly1305>();
    zeroized_on_drop::<zeroize::Zeroizing<Vec<u8>>>();
    let mut options = json!({
      "path": "x.db", "encryptionKey": "ab".repeat(32), "previousEncryptionKeys": ["cd".repeat(32)],
    });
    let parsed = OpenOptions::parse(Some(&options)).unwrap();
    scrub_key_strings(&mut options);
    assert_eq!(options["path"], "x.db");
    assert!(options["encryptionKey"]
      .as_str()
      .unwrap()
      .bytes()
      .all(|b| b == 0));
    assert!(options["previousEncryptionKeys"][0]
      .as_str()
      .unwrap()
      .bytes()
      .all(|b| b == 0));
    // The parsed keys are intact, and never printed.
    assert_eq!(
      parsed.encryption_key.as_ref().unwrap().as_bytes(),
      &[0xab; 32]
    );
    assert!(!format!("{parsed:?}").contains("abab"));
    assert!(!format!(
      "{:?}",
      crate::crypto::Sealer::new(Key::from_bytes([0xab; 32]))
    )
    .contains("ab"));
  }

  #[test]
  fn integrity_reports_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.db").to_string_lossy().to_string();
    let v = open_with(&path, [1; 32], &[]).unwrap();
    v.upsert_linked_account(&json!({"linked_account_id": "x"}), None)
      .wait()
      .unwrap();
    let ok = v.check_integrity().wait().unwrap();
    assert!(ok.ok && ok.details.is_empty(), "{ok:?}");
    v.close().wait().unwrap();
    // An orphan row written behind linkvault's back (foreign keys off) is reported.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    c.execute(
      "INSERT INTO udf (account_pk, key, pos, value, oid, created_at, updated_at)
       VALUES (999, 'k', 0, '1', 'o', 0, 0)",
      [],
    )
    .unwrap();
    drop(c);
    let v = open_with(&path, [1; 32], &[]).unwrap();
    let bad = v.check_integrity().wait().unwrap();
    assert!(!bad.ok);
    assert!(bad.details[0].contains("foreign_key_check: udf"), "{bad:?}");
    v.close().wait().unwrap();
  }
}

//! The encryption key of a database, key rotation and integrity checks (the rules; each engine
//! stores the rows through [`MetaRows`] and [`SealedRows`]).
//!
//! **The file's key** is the key `meta.key_check` is sealed under. Every value sealed in the
//! file is sealed under it, except during a rotation. A client may hold other keys too
//! (`previousEncryptionKeys`, or keys learned during a rotation); before any job that seals or
//! opens stored secrets, [`sync`] makes the file's key the client's current key, so that
//! whatever client or process writes, it seals under the file's key.
//!
//! **Rotation** (`rotateEncryptionKey`) is online, in bounded batches, resumable:
//! 1. `begin`: in one transaction, `key_check` is resealed under the new key, the new key is
//!    stored wrapped (sealed) under the old one (`rotation_next_key`) and the old key wrapped
//!    under the new one (`rotation_prev_key`), and a cursor is recorded (`rotation`). From then
//!    on every writer seals under the new key, and a client that holds **either** key can unwrap
//!    the other: it reads everything, whatever the progress.
//! 2. `step`: one write job per batch (at most `batch` rows examined) reseals values still under
//!    another key and advances the cursor, so other calls interleave between batches. A crash
//!    leaves the cursor where the last committed batch put it.
//! 3. `finish`: once a read finds no value under another key, the wrapped keys and the cursor
//!    are deleted: from then on the old key opens nothing in the file.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::crypto::{hex_decode, hex_encode, Key, Sealer, KID_LEN};
use crate::error::{Error, ErrorKind, Result};

pub const KEY_CHECK_PLAIN: &[u8] = b"linkvault key check";
pub const KEY_CHECK_AAD: &[u8] = b"linkvault/meta/key-check";
const NEXT_KEY_AAD: &[u8] = b"linkvault/meta/rotation/next-key";
const PREV_KEY_AAD: &[u8] = b"linkvault/meta/rotation/prev-key";

/// Rows examined per rotation batch: each batch is one write job, so other calls interleave.
pub const ROTATION_BATCH: usize = 500;

/// At most this many previous keys (`previousEncryptionKeys`).
pub const MAX_PREVIOUS_KEYS: usize = 16;

/// The `meta` key/value rows of a database (key check, rotation record, default org id).
pub trait MetaRows {
  fn meta_get(&mut self, key: &str) -> Result<Option<Vec<u8>>>;
  fn meta_put(&mut self, key: &str, value: &[u8]) -> Result<()>;
  fn meta_delete(&mut self, key: &str) -> Result<()>;
}

/// Every column of sealed values in the database, in the order a rotation visits them. Append
/// only: the rotation cursor stores the position in [`SealedColumn::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SealedColumn {
  /// Linked accounts' `your_app.auth_credentials`, bound to (scope, account id).
  AccountCredentials,
  /// The credentials a merged secondary had, kept in its merge record, bound to (scope, the
  /// record's oid).
  MergeCredentials,
  /// Session-token signing secrets, bound to (scope, kid).
  SigningKeySecret,
  /// Webhook signing secrets, bound to (scope, webhook id).
  WebhookSecret,
}

impl SealedColumn {
  pub const ALL: [SealedColumn; 4] = [
    SealedColumn::AccountCredentials,
    SealedColumn::MergeCredentials,
    SealedColumn::SigningKeySecret,
    SealedColumn::WebhookSecret,
  ];

  /// The associated data a value of this column is sealed with, from its row's scope and the
  /// text it is bound to.
  pub fn aad(self, scope_id: i64, bound: &str) -> Vec<u8> {
    match self {
      SealedColumn::AccountCredentials => credentials_aad(scope_id, bound),
      SealedColumn::MergeCredentials => merge_aad(scope_id, bound),
      SealedColumn::SigningKeySecret => signing_key_aad(scope_id, bound),
      SealedColumn::WebhookSecret => webhook_secret_aad(scope_id, bound),
    }
  }
}

/// Binds sealed credentials to their scope and account, so they cannot be moved to another row.
pub fn credentials_aad(scope_id: i64, account_id: &str) -> Vec<u8> {
  format!("linkvault/credentials/v1/{scope_id}/{account_id}").into_bytes()
}

/// Binds a merge record's sealed credentials to that record.
pub fn merge_aad(scope_id: i64, merge_oid: &str) -> Vec<u8> {
  format!("linkvault/merge-credentials/v1/{scope_id}/{merge_oid}").into_bytes()
}

/// Binds a sealed signing secret to its scope and kid.
pub fn signing_key_aad(scope_id: i64, kid: &str) -> Vec<u8> {
  format!("linkvault/signing-key/v1/{scope_id}/{kid}").into_bytes()
}

/// Binds a webhook's sealed signing secret to its scope and id.
pub fn webhook_secret_aad(scope_id: i64, webhook_id: &str) -> Vec<u8> {
  format!("linkvault/webhook-secret/v1/{scope_id}/{webhook_id}").into_bytes()
}

/// One sealed value and where it is.
#[derive(Clone, Debug)]
pub struct SealedValue {
  /// The row's integer key in its table (the rotation cursor).
  pub row: i64,
  pub scope_id: i64,
  /// The text the associated data is bound to (see [`SealedColumn`]).
  pub bound: String,
  pub sealed: Vec<u8>,
}

/// The sealed columns, for rotation and integrity checks.
pub trait SealedRows {
  /// Up to `limit` non-null values of `column` in rows after `after`, in row order.
  fn sealed_values(
    &mut self,
    column: SealedColumn,
    after: i64,
    limit: usize,
  ) -> Result<Vec<SealedValue>>;
  fn replace_sealed(&mut self, column: SealedColumn, row: i64, sealed: &[u8]) -> Result<()>;
  /// How many non-null values of `column` are not sealed under `key_id`.
  fn count_sealed_not_under(&mut self, column: SealedColumn, key_id: &[u8; KID_LEN])
    -> Result<i64>;
  /// The engine's own consistency checks (structure, indexes, references): one line per problem.
  fn structure_problems(&mut self) -> Result<Vec<String>>;
}

/// Rotation progress, kept in `meta.rotation` (JSON).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Progress {
  /// Hex key ids.
  from: String,
  to: String,
  /// Position in [`SealedColumn::ALL`] and the last row done in that column.
  column: usize,
  after: i64,
  resealed: i64,
  started_at: i64,
}

/// What a key-rotation or key-check operation needs from its transaction.
pub trait KeyTx: MetaRows + SealedRows {}

fn progress(tx: &mut (impl MetaRows + ?Sized)) -> Result<Option<Progress>> {
  match tx.meta_get("rotation")? {
    None => Ok(None),
    Some(v) => serde_json::from_slice(&v)
      .map(Some)
      .map_err(|_| Error::storage("the key rotation record in the database is damaged")),
  }
}

fn save_progress(tx: &mut (impl MetaRows + ?Sized), p: &Progress) -> Result<()> {
  let text = serde_json::to_vec(p).map_err(|e| Error::storage(format!("rotation record: {e}")))?;
  tx.meta_put("rotation", &text)
}

fn kid_hex(kid: &[u8; KID_LEN]) -> String {
  hex_encode(kid)
}

fn kid_from_hex(text: &str) -> Option<[u8; KID_LEN]> {
  hex_decode(text).and_then(|v| v.as_slice().try_into().ok())
}

/// The id of the database's key (from `key_check`), if it has one yet.
fn file_key_id(tx: &mut (impl MetaRows + ?Sized)) -> Result<Option<[u8; KID_LEN]>> {
  Ok(
    tx.meta_get("key_check")?
      .and_then(|s| Sealer::sealed_key_id(&s)),
  )
}

fn wrong_key() -> Error {
  Error::new(
    ErrorKind::DecryptionFailed,
    "the encryption key does not open this database (a wrong key, or the database's key was \
     rotated: open the client with the new key)",
  )
}

/// During a rotation, learns the key wrapped under a key the sealer holds (the new key from the
/// old one, the old key from the new one).
fn learn_rotation_keys(tx: &mut (impl MetaRows + ?Sized), sealer: &Sealer) -> Result<()> {
  for (name, aad) in [
    ("rotation_next_key", NEXT_KEY_AAD),
    ("rotation_prev_key", PREV_KEY_AAD),
  ] {
    if let Some(wrapped) = tx.meta_get(name)? {
      if let Ok(bytes) = sealer.open(&wrapped, aad).map(Zeroizing::new) {
        if let Some(k) = Key::from_slice(&bytes) {
          sealer.learn(k);
        }
      }
    }
  }
  Ok(())
}

/// For reads that open stored secrets: makes sure the sealer knows the database's key
/// (learning it from a rotation's wrapped keys if needed). Never changes the sealing key: only
/// writes do that ([`sync`]), inside their own transaction.
pub fn learn(tx: &mut (impl MetaRows + ?Sized), sealer: &Sealer) -> Result<()> {
  match file_key_id(tx)? {
    Some(kid) if !sealer.knows(&kid) => learn_rotation_keys(tx, sealer),
    _ => Ok(()),
  }
}

/// For writes: makes the database's key the sealer's current key (learning it from a rotation's
/// wrapped keys if needed). Called at the start of every write that seals or opens stored
/// secrets, inside that write's transaction, so a rotation started by any client or process is
/// followed at once: whoever writes, seals under the database's key.
pub fn sync(tx: &mut (impl MetaRows + ?Sized), sealer: &Sealer) -> Result<()> {
  let Some(kid) = file_key_id(tx)? else {
    return Ok(());
  };
  if sealer.key_id() == kid {
    return Ok(());
  }
  if !sealer.knows(&kid) {
    learn_rotation_keys(tx, sealer)?;
  }
  if sealer.use_key(&kid) {
    Ok(())
  } else {
    Err(wrong_key())
  }
}

/// At open: the key must open the database (`key_check`), directly or through a rotation's
/// wrapped keys; a new database gets its `key_check` sealed under the client's key (`writable`).
pub fn check_file_key(
  tx: &mut (impl MetaRows + ?Sized),
  sealer: &Sealer,
  writable: bool,
) -> Result<()> {
  match tx.meta_get("key_check")? {
    Some(sealed) => {
      learn_rotation_keys(tx, sealer)?;
      sealer
        .open(&sealed, KEY_CHECK_AAD)
        .map_err(|_| wrong_key())?;
      sync(tx, sealer)
    }
    None if writable => tx.meta_put("key_check", &sealer.seal(KEY_CHECK_PLAIN, KEY_CHECK_AAD)?),
    None => Err(Error::storage(
      "storage error: the database is read-only and was never initialized by linkvault",
    )),
  }
}

/// How `begin` found the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
  /// A new rotation was started.
  Started,
  /// A rotation to this key was in progress: it continues from its cursor.
  Resumed,
  /// The key is already the database's key and no rotation is in progress: nothing to do.
  AlreadyCurrent,
}

/// Starts (or resumes) a rotation to `new_key`.
pub fn begin(
  tx: &mut (impl MetaRows + ?Sized),
  sealer: &Sealer,
  new_key: &Key,
  now: i64,
) -> Result<Begin> {
  sync(tx, sealer)?;
  let new_kid = new_key.id();
  if let Some(p) = progress(tx)? {
    if kid_from_hex(&p.to) == Some(new_kid) {
      sealer.learn(new_key.clone());
      sealer.use_key(&new_kid);
      return Ok(Begin::Resumed);
    }
    return Err(Error::validation(
      "newKey",
      "a rotation to another key is in progress; finish it first by calling \
       rotateEncryptionKey with that key",
    ));
  }
  let old = sealer
    .current_key()
    .ok_or_else(|| Error::storage("no encryption key"))?;
  let old_kid = old.id();
  if file_key_id(tx)? == Some(new_kid) || old_kid == new_kid {
    return Ok(Begin::AlreadyCurrent);
  }
  tx.meta_put(
    "rotation_next_key",
    &Sealer::seal_with(&old, new_key.as_bytes(), NEXT_KEY_AAD)?,
  )?;
  tx.meta_put(
    "rotation_prev_key",
    &Sealer::seal_with(new_key, old.as_bytes(), PREV_KEY_AAD)?,
  )?;
  save_progress(
    tx,
    &Progress {
      from: kid_hex(&old_kid),
      to: kid_hex(&new_kid),
      column: 0,
      after: 0,
      resealed: 0,
      started_at: now,
    },
  )?;
  tx.meta_put(
    "key_check",
    &Sealer::seal_with(new_key, KEY_CHECK_PLAIN, KEY_CHECK_AAD)?,
  )?;
  sealer.learn(new_key.clone());
  sealer.use_key(&new_kid);
  Ok(Begin::Started)
}

/// One batch of a rotation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
  pub examined: usize,
  pub resealed: usize,
  /// Every column has been visited (or no rotation is in progress).
  pub done: bool,
}

/// Reseals one batch (at most `batch` values examined) and advances the cursor.
pub fn step(tx: &mut (impl KeyTx + ?Sized), sealer: &Sealer, batch: usize) -> Result<Step> {
  sync(tx, sealer)?;
  let Some(mut p) = progress(tx)? else {
    return Ok(Step {
      done: true,
      ..Step::default()
    });
  };
  let to = kid_from_hex(&p.to).ok_or_else(|| Error::storage("damaged rotation record"))?;
  let mut out = Step::default();
  while out.examined < batch {
    let Some(&col) = SealedColumn::ALL.get(p.column) else {
      break;
    };
    let want = batch - out.examined;
    let values = tx.sealed_values(col, p.after, want)?;
    for v in &values {
      out.examined += 1;
      p.after = v.row;
      if Sealer::sealed_key_id(&v.sealed) == Some(to) {
        continue;
      }
      let aad = col.aad(v.scope_id, &v.bound);
      let plain = Zeroizing::new(sealer.open(&v.sealed, &aad).map_err(|_| {
        Error::new(
          ErrorKind::DecryptionFailed,
          format!(
            "key rotation paused: the sealed value {col:?} of row {} cannot be decrypted with \
             any key this client has (damaged data?); the rotation can be resumed",
            v.row
          ),
        )
      })?);
      let resealed = sealer.seal(&plain, &aad)?;
      tx.replace_sealed(col, v.row, &resealed)?;
      out.resealed += 1;
    }
    if values.len() < want {
      // This column is done: on to the next one.
      p.column += 1;
      p.after = 0;
    }
  }
  p.resealed += out.resealed as i64;
  out.done = p.column >= SealedColumn::ALL.len();
  save_progress(tx, &p)?;
  Ok(out)
}

/// Sealed values not under the database's key (a read: a full scan of the sealed columns).
pub fn leftovers(tx: &mut (impl KeyTx + ?Sized)) -> Result<i64> {
  let Some(kid) = file_key_id(tx)? else {
    return Ok(0);
  };
  let mut n = 0;
  for col in SealedColumn::ALL {
    n += tx.count_sealed_not_under(col, &kid)?;
  }
  Ok(n)
}

/// Ends a rotation: `leftovers` is what a read ([`leftovers`]) found after the last batch. With
/// none, the count is taken again inside this write transaction (a writer that began before
/// the rotation and commits late may have sealed under the old key after that read: on SQLite
/// this transaction excludes every writer, on PostgreSQL it runs serializable, so such a writer
/// and this count cannot both commit unseen by each other); still none, the wrapped keys and
/// the cursor are deleted and true is returned (also when no rotation was in progress).
/// Otherwise the cursor restarts for another pass and false is returned.
pub fn finish(tx: &mut (impl KeyTx + ?Sized), sealer: &Sealer, leftovers: i64) -> Result<bool> {
  sync(tx, sealer)?;
  let Some(mut p) = progress(tx)? else {
    return Ok(true);
  };
  if leftovers > 0 || self::leftovers(tx)? > 0 {
    p.column = 0;
    p.after = 0;
    save_progress(tx, &p)?;
    return Ok(false);
  }
  for k in ["rotation", "rotation_next_key", "rotation_prev_key"] {
    tx.meta_delete(k)?;
  }
  Ok(true)
}

/// What `checkIntegrity` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Integrity {
  pub ok: bool,
  pub details: Vec<String>,
}

/// The engine's own checks (SQLite: `PRAGMA integrity_check` and `foreign_key_check`), and the
/// sealed values: outside a rotation, every one is under the database's key.
pub fn integrity(tx: &mut (impl KeyTx + ?Sized)) -> Result<Integrity> {
  integrity_reporting(tx, None)
}

/// [`integrity`], reporting progress in three steps: the engine's structure checks, the
/// rotation record, the sealed values.
pub fn integrity_reporting(
  tx: &mut (impl KeyTx + ?Sized),
  on_progress: Option<&crate::domain::admin::ProgressFn>,
) -> Result<Integrity> {
  const STEPS: u64 = 3;
  crate::domain::admin::report(on_progress, 0, STEPS);
  let mut details = tx.structure_problems()?;
  crate::domain::admin::report(on_progress, 1, STEPS);
  let rotation = progress(tx)?;
  crate::domain::admin::report(on_progress, 2, STEPS);
  match rotation {
    Some(p) => details.push(format!(
      "note: a key rotation is in progress (to key {}); call rotateEncryptionKey to finish it",
      p.to
    )),
    None => {
      let n = leftovers(tx)?;
      if n > 0 {
        details.push(format!(
          "sealed values: {n} are not sealed under the database's encryption key"
        ));
      }
    }
  }
  crate::domain::admin::report(on_progress, STEPS, STEPS);
  let ok = details.iter().all(|d| d.starts_with("note:"));
  Ok(Integrity { ok, details })
}

/// `previousEncryptionKeys`: an array of keys in the `encryptionKey` format.
pub fn parse_previous_keys(v: Option<&Value>) -> Result<Vec<Key>> {
  const FIELD: &str = "previousEncryptionKeys";
  match v {
    None | Some(Value::Null) => Ok(Vec::new()),
    Some(Value::Array(items)) if items.len() <= MAX_PREVIOUS_KEYS => items
      .iter()
      .map(|item| match item {
        Value::String(s) => Key::parse(s, FIELD),
        _ => Err(Error::validation(
          FIELD,
          format!("{FIELD} must be an array of keys (strings)"),
        )),
      })
      .collect(),
    Some(Value::Array(_)) => Err(Error::validation(
      FIELD,
      format!("{FIELD} may hold at most {MAX_PREVIOUS_KEYS} keys"),
    )),
    Some(_) => Err(Error::validation(
      FIELD,
      format!("{FIELD} must be an array of keys (strings)"),
    )),
  }
}

/// Wipes the key strings of `Client.open`'s options (or a `newKey` value) once they are parsed,
/// so that no copy of a key outlives the call in this process's Rust memory. (The JS string the
/// caller passed lives in V8's heap, out of reach.)
pub fn scrub_key_strings(v: &mut Value) {
  use zeroize::Zeroize;
  match v {
    Value::String(s) => s.zeroize(),
    Value::Object(m) => {
      for k in ["encryptionKey", "previousEncryptionKeys"] {
        if let Some(x) = m.get_mut(k) {
          scrub_key_strings(x);
        }
      }
    }
    Value::Array(items) => items.iter_mut().for_each(scrub_key_strings),
    _ => {}
  }
}

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

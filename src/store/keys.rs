//! The file's encryption key, key rotation and integrity checks (SQL side).
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

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{accounts, identities, MaintenanceStore, Pending, Scope, SqliteStore};
use crate::crypto::{hex_decode, hex_encode, Key, Sealer};
use crate::error::{Error, ErrorKind, Result};

pub(super) const KEY_CHECK_PLAIN: &[u8] = b"linkvault key check";
pub(super) const KEY_CHECK_AAD: &[u8] = b"linkvault/meta/key-check";
const NEXT_KEY_AAD: &[u8] = b"linkvault/meta/rotation/next-key";
const PREV_KEY_AAD: &[u8] = b"linkvault/meta/rotation/prev-key";

/// A column of sealed values, with how to rebuild each value's associated data from its row.
struct SealedColumn {
  table: &'static str,
  /// The table's integer primary key (the rotation cursor).
  pk: &'static str,
  column: &'static str,
  /// The text column (besides `scope_id`) the associated data is bound to.
  bound_to: &'static str,
  aad: fn(scope_id: i64, bound: &str) -> Vec<u8>,
}

fn scope_only(id: i64) -> Scope {
  Scope {
    id,
    org_id: String::new(),
    environment: String::new(),
  }
}

/// Every sealed column in the file, in the order a rotation visits them. Append only: the
/// rotation cursor stores an index into this list.
const SEALED_COLUMNS: &[SealedColumn] = &[
  // Linked accounts' `your_app.auth_credentials`.
  SealedColumn {
    table: "accounts",
    pk: "pk",
    column: "credentials",
    bound_to: "account_id",
    aad: |scope_id, id| accounts::credentials_aad(&scope_only(scope_id), id),
  },
  // The credentials a merged secondary had, kept in its merge record.
  SealedColumn {
    table: "account_merges",
    pk: "pk",
    column: "credentials",
    bound_to: "oid",
    aad: |scope_id, oid| identities::merge_aad(&scope_only(scope_id), oid),
  },
  // Session-token signing secrets.
  SealedColumn {
    table: "signing_keys",
    pk: "pk",
    column: "secret",
    bound_to: "kid",
    aad: |scope_id, kid| super::tokens::key_aad(scope_id, kid),
  },
  // Webhook signing secrets.
  SealedColumn {
    table: "webhooks",
    pk: "pk",
    column: "secret",
    bound_to: "id",
    aad: super::webhooks::secret_aad,
  },
];

/// Rotation progress, kept in `meta.rotation` (JSON).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Progress {
  /// Hex key ids.
  from: String,
  to: String,
  /// Index into `SEALED_COLUMNS` and the last primary key done in that table.
  column: usize,
  after: i64,
  resealed: i64,
  started_at: i64,
}

/// A value of the `meta` table.
pub(super) fn meta_get(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
  Ok(
    conn
      .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
      .query_row([key], |r| r.get(0))
      .optional()?,
  )
}

pub(super) fn meta_put(conn: &Connection, key: &str, value: &[u8]) -> Result<()> {
  conn
    .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
    .execute(params![key, value])?;
  Ok(())
}

fn meta_delete(conn: &Connection, key: &str) -> Result<()> {
  conn
    .prepare_cached("DELETE FROM meta WHERE key = ?1")?
    .execute([key])?;
  Ok(())
}

fn progress(conn: &Connection) -> Result<Option<Progress>> {
  match meta_get(conn, "rotation")? {
    None => Ok(None),
    Some(v) => serde_json::from_slice(&v)
      .map(Some)
      .map_err(|_| Error::storage("the key rotation record in the database is damaged")),
  }
}

fn save_progress(conn: &Connection, p: &Progress) -> Result<()> {
  let text = serde_json::to_vec(p).map_err(|e| Error::storage(format!("rotation record: {e}")))?;
  meta_put(conn, "rotation", &text)
}

fn kid_hex(kid: &[u8; 8]) -> String {
  hex_encode(kid)
}

fn kid_from_hex(text: &str) -> Option<[u8; 8]> {
  hex_decode(text).and_then(|v| v.as_slice().try_into().ok())
}

/// The id of the file's key (from `key_check`), if the file has one yet.
fn file_key_id(conn: &Connection) -> Result<Option<[u8; 8]>> {
  Ok(meta_get(conn, "key_check")?.and_then(|s| Sealer::sealed_key_id(&s)))
}

fn wrong_key() -> Error {
  Error::new(
    ErrorKind::DecryptionFailed,
    "the encryption key does not open this database (a wrong key, or the file's key was \
     rotated: open the client with the new key)",
  )
}

/// During a rotation, learns the key wrapped under a key the sealer holds (the new key from the
/// old one, the old key from the new one).
fn learn_rotation_keys(conn: &Connection, sealer: &Sealer) -> Result<()> {
  for (name, aad) in [
    ("rotation_next_key", NEXT_KEY_AAD),
    ("rotation_prev_key", PREV_KEY_AAD),
  ] {
    if let Some(wrapped) = meta_get(conn, name)? {
      if let Ok(bytes) = sealer.open(&wrapped, aad).map(Zeroizing::new) {
        if let Some(k) = Key::from_slice(&bytes) {
          sealer.learn(k);
        }
      }
    }
  }
  Ok(())
}

/// For read jobs that open stored secrets: makes sure the sealer knows the file's key (learning
/// it from a rotation's wrapped keys if needed). Never changes the sealing key: only the writer
/// thread does that ([`sync`]), inside its own transaction.
pub(crate) fn learn(conn: &Connection, sealer: &Sealer) -> Result<()> {
  match file_key_id(conn)? {
    Some(kid) if !sealer.knows(&kid) => learn_rotation_keys(conn, sealer),
    _ => Ok(()),
  }
}

/// For write jobs: makes the file's key the sealer's current key (learning it from a rotation's
/// wrapped keys if needed). Called at the start of every write job that seals or opens stored
/// secrets, inside that job's transaction, so a rotation started by any client or process is
/// followed at once: whoever writes, seals under the file's key.
pub(crate) fn sync(conn: &Connection, sealer: &Sealer) -> Result<()> {
  let Some(kid) = file_key_id(conn)? else {
    return Ok(());
  };
  if sealer.key_id() == kid {
    return Ok(());
  }
  if !sealer.knows(&kid) {
    learn_rotation_keys(conn, sealer)?;
  }
  if sealer.use_key(&kid) {
    Ok(())
  } else {
    Err(wrong_key())
  }
}

/// At open: the key must open the file (`key_check`), directly or through a rotation's wrapped
/// keys; a new file gets its `key_check` sealed under the client's key (`writable`).
pub(super) fn check_file_key(conn: &Connection, sealer: &Sealer, writable: bool) -> Result<()> {
  match meta_get(conn, "key_check")? {
    Some(sealed) => {
      learn_rotation_keys(conn, sealer)?;
      sealer
        .open(&sealed, KEY_CHECK_AAD)
        .map_err(|_| wrong_key())?;
      sync(conn, sealer)
    }
    None if writable => meta_put(
      conn,
      "key_check",
      &sealer.seal(KEY_CHECK_PLAIN, KEY_CHECK_AAD)?,
    ),
    None => Err(Error::storage(
      "storage error: the database is read-only and was never initialized by linkvault",
    )),
  }
}

/// `open_scope` on a file opened read-only: the key must open it and the scope must exist
/// already (nothing can be written). Used by `SqliteStore::open_scope`.
pub(super) fn read_only_scope(
  conn: &Connection,
  sealer: &Sealer,
  org_id: Option<String>,
  environment: String,
) -> Result<Scope> {
  check_file_key(conn, sealer, false)?;
  let org_id = match org_id {
    Some(o) => o,
    None => meta_get(conn, "default_org_id")?
      .and_then(|v| String::from_utf8(v).ok())
      .ok_or_else(|| {
        Error::storage("storage error: the database is read-only and has no default orgId")
      })?,
  };
  let id: i64 = conn
    .prepare_cached("SELECT id FROM scopes WHERE org_id = ?1 AND environment = ?2")?
    .query_row(params![org_id, environment], |r| r.get(0))
    .optional()?
    .ok_or_else(|| {
      Error::storage(
        "storage error: the database is read-only and has no data for this orgId and environment",
      )
    })?;
  Ok(Scope {
    id,
    org_id,
    environment,
  })
}

/// How `begin` found the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
  /// A new rotation was started.
  Started,
  /// A rotation to this key was in progress: it continues from its cursor.
  Resumed,
  /// The key is already the file's key and no rotation is in progress: nothing to do.
  AlreadyCurrent,
}

fn begin(conn: &Connection, sealer: &Sealer, new_key: &Key, now: i64) -> Result<Begin> {
  sync(conn, sealer)?;
  let new_kid = new_key.id();
  if let Some(p) = progress(conn)? {
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
  if file_key_id(conn)? == Some(new_kid) || old_kid == new_kid {
    return Ok(Begin::AlreadyCurrent);
  }
  meta_put(
    conn,
    "rotation_next_key",
    &Sealer::seal_with(&old, new_key.as_bytes(), NEXT_KEY_AAD)?,
  )?;
  meta_put(
    conn,
    "rotation_prev_key",
    &Sealer::seal_with(new_key, old.as_bytes(), PREV_KEY_AAD)?,
  )?;
  save_progress(
    conn,
    &Progress {
      from: kid_hex(&old_kid),
      to: kid_hex(&new_kid),
      column: 0,
      after: 0,
      resealed: 0,
      started_at: now,
    },
  )?;
  meta_put(
    conn,
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

fn step(conn: &Connection, sealer: &Sealer, batch: usize) -> Result<Step> {
  sync(conn, sealer)?;
  let Some(mut p) = progress(conn)? else {
    return Ok(Step {
      done: true,
      ..Step::default()
    });
  };
  let to = kid_from_hex(&p.to).ok_or_else(|| Error::storage("damaged rotation record"))?;
  let mut out = Step::default();
  while out.examined < batch {
    let Some(col) = SEALED_COLUMNS.get(p.column) else {
      break;
    };
    let sql = format!(
      "SELECT {pk}, scope_id, {bound}, {column} FROM {table}
       WHERE {pk} > ?1 AND {column} IS NOT NULL ORDER BY {pk} LIMIT ?2",
      pk = col.pk,
      bound = col.bound_to,
      column = col.column,
      table = col.table
    );
    let want = batch - out.examined;
    let rows: Vec<(i64, i64, String, Vec<u8>)> = conn
      .prepare_cached(&sql)?
      .query_map(params![p.after, want as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
      })?
      .collect::<rusqlite::Result<_>>()?;
    let update = format!(
      "UPDATE {table} SET {column} = ?2 WHERE {pk} = ?1",
      pk = col.pk,
      table = col.table,
      column = col.column
    );
    for (rowid, scope_id, bound, sealed) in &rows {
      out.examined += 1;
      p.after = *rowid;
      if Sealer::sealed_key_id(sealed) == Some(to) {
        continue;
      }
      let aad = (col.aad)(*scope_id, bound);
      let plain = Zeroizing::new(sealer.open(sealed, &aad).map_err(|_| {
        Error::new(
          ErrorKind::DecryptionFailed,
          format!(
            "key rotation paused: the sealed {}.{} of row {rowid} cannot be decrypted with any \
             key this client has (damaged data?); the rotation can be resumed",
            col.table, col.column
          ),
        )
      })?);
      let resealed = sealer.seal(&plain, &aad)?;
      conn
        .prepare_cached(&update)?
        .execute(params![rowid, resealed])?;
      out.resealed += 1;
    }
    if rows.len() < want {
      // This column is done: on to the next one.
      p.column += 1;
      p.after = 0;
    }
  }
  p.resealed += out.resealed as i64;
  out.done = p.column >= SEALED_COLUMNS.len();
  save_progress(conn, &p)?;
  Ok(out)
}

/// Sealed values not under the file's key (a read: a full scan of the sealed columns).
fn leftovers(conn: &Connection) -> Result<i64> {
  let Some(kid) = file_key_id(conn)? else {
    return Ok(0);
  };
  let mut n = 0;
  for col in SEALED_COLUMNS {
    let sql = format!(
      "SELECT count(*) FROM {table} WHERE {column} IS NOT NULL AND substr({column}, 2, 8) != ?1",
      table = col.table,
      column = col.column
    );
    n += conn
      .prepare_cached(&sql)?
      .query_row([kid.as_slice()], |r| r.get::<_, i64>(0))?;
  }
  Ok(n)
}

/// Ends a rotation: `leftovers` is what a read (`leftovers`) found after the last batch. With
/// none, the wrapped keys and the cursor are deleted and true is returned (also when no
/// rotation was in progress). Otherwise the cursor restarts for another pass and false is
/// returned. (Every writer seals under the file's key once the rotation began, so nothing can
/// add a value under the old key between that read and this job.)
fn finish(conn: &Connection, sealer: &Sealer, leftovers: i64) -> Result<bool> {
  sync(conn, sealer)?;
  let Some(mut p) = progress(conn)? else {
    return Ok(true);
  };
  if leftovers > 0 {
    p.column = 0;
    p.after = 0;
    save_progress(conn, &p)?;
    return Ok(false);
  }
  for k in ["rotation", "rotation_next_key", "rotation_prev_key"] {
    meta_delete(conn, k)?;
  }
  Ok(true)
}

/// What `checkIntegrity` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Integrity {
  pub ok: bool,
  pub details: Vec<String>,
}

/// `PRAGMA integrity_check` (structure of the file, every index matches its table),
/// `PRAGMA foreign_key_check` (no orphan rows), and the sealed values: outside a rotation,
/// every one is under the file's key.
fn integrity(conn: &Connection) -> Result<Integrity> {
  integrity_with(conn, None)
}

/// [`integrity`], reporting progress in steps (integrity check, foreign keys, sealed values).
pub(super) fn integrity_with(
  conn: &Connection,
  on_progress: Option<&crate::admin::ProgressFn>,
) -> Result<Integrity> {
  const STEPS: u64 = 3;
  crate::admin::report(on_progress, 0, STEPS);
  let mut details = Vec::new();
  {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt
      .query_map([], |r| r.get(0))?
      .collect::<rusqlite::Result<_>>()?;
    if rows != ["ok"] {
      details.extend(rows.into_iter().map(|r| format!("integrity_check: {r}")));
    }
  }
  crate::admin::report(on_progress, 1, STEPS);
  {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let rows: Vec<String> = stmt
      .query_map([], |r| {
        let table: String = r.get(0)?;
        let rowid: Option<i64> = r.get(1)?;
        let parent: String = r.get(2)?;
        Ok(format!(
          "foreign_key_check: {table} row {} refers to a missing {parent} row",
          rowid.map(|id| id.to_string()).unwrap_or_else(|| "?".into())
        ))
      })?
      .collect::<rusqlite::Result<_>>()?;
    details.extend(rows);
  }
  crate::admin::report(on_progress, 2, STEPS);
  match progress(conn)? {
    Some(p) => details.push(format!(
      "note: a key rotation is in progress (to key {}); call rotateEncryptionKey to finish it",
      p.to
    )),
    None => {
      let n = leftovers(conn)?;
      if n > 0 {
        details.push(format!(
          "sealed values: {n} are not sealed under the file's encryption key"
        ));
      }
    }
  }
  crate::admin::report(on_progress, STEPS, STEPS);
  let ok = details.iter().all(|d| d.starts_with("note:"));
  Ok(Integrity { ok, details })
}

/// Key rotation and maintenance, on the SQLite engine.
impl MaintenanceStore for SqliteStore {
  fn rotation_begin(&self, new_key: Key) -> Pending<Begin> {
    let sealer = self.sealer();
    self.write(move |conn| begin(conn, &sealer, &new_key, crate::clock::now_ms()))
  }

  fn rotation_step(&self, batch: usize) -> Pending<Step> {
    let sealer = self.sealer();
    self.write(move |conn| step(conn, &sealer, batch))
  }

  fn rotation_leftovers(&self) -> Pending<i64> {
    self.read(leftovers)
  }

  fn rotation_finish(&self, leftovers: i64) -> Pending<bool> {
    let sealer = self.sealer();
    self.write(move |conn| finish(conn, &sealer, leftovers))
  }

  fn check_integrity(&self) -> Pending<Integrity> {
    self.read(integrity)
  }
}

//! Online backups of the SQLite engine (`backup`) and what `stats` measures outside a
//! transaction (file sizes, the writer's queue). Kept apart from the data paths; nothing here
//! changes stored data.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::SqliteStore;
use crate::crypto::{hex_encode, random_bytes};
use crate::error::{Error, Result};
use crate::store::{Pending, Usage};

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
  /// The copy's path, absolute.
  pub path: String,
  pub bytes: u64,
  pub pages: u64,
  pub duration_ms: u64,
}

impl SqliteStore {
  fn is_memory(&self) -> bool {
    self.path() == ":memory:" || self.path().is_empty()
  }

  /// A consistent copy of the whole database at `dest` (which must not exist), taken while
  /// writes go on.
  pub fn backup_file(&self, dest: PathBuf) -> Pending<BackupInfo> {
    if self.is_memory() {
      return Pending::ready(Err(Error::validation(
        "destPath",
        "a private ':memory:' database cannot be backed up",
      )));
    }
    if self.engine().is_closed() {
      return Pending::ready(Err(Error::closed()));
    }
    let source = self.path().to_string();
    let (answer, pending) = Pending::channel();
    // A dedicated thread: a large copy must not hold a reader thread that other calls wait on.
    let spawned = std::thread::Builder::new()
      .name("linkvault-backup".into())
      .spawn(move || {
        let _ = answer.send(backup_to(&source, &dest));
      });
    match spawned {
      Ok(_) => pending,
      Err(e) => Pending::ready(Err(Error::storage(format!(
        "cannot start backup thread: {e}"
      )))),
    }
  }

  /// The file sizes and the writer's queue.
  pub fn file_usage(&self) -> Usage {
    let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (database_bytes, wal_bytes) = if self.is_memory() {
      (0, 0)
    } else {
      (size(self.path()), size(&format!("{}-wal", self.path())))
    };
    Usage {
      database_bytes,
      wal_bytes,
      write_queue: self.engine().write_queue_len() as u64,
    }
  }
}

/// Copies `source` into a new file at `dest` with SQLite's online backup, in one step: the copy
/// is the snapshot of the moment the step began (every write acknowledged before the call is
/// in it), and in WAL mode the writer goes on meanwhile. The copy is written beside `dest`
/// under a temporary name, made a self-contained file (rollback journal, no `-wal`), synced,
/// then linked to `dest`, which fails rather than replacing a file that appeared meanwhile.
fn backup_to(source: &str, dest: &Path) -> Result<BackupInfo> {
  let started = Instant::now();
  let dest = absolute(dest)?;
  if dest.exists() {
    return Err(Error::validation(
      "destPath",
      format!(
        "{} already exists: a backup never replaces a file",
        dest.display()
      ),
    ));
  }
  let dir = dest
    .parent()
    .ok_or_else(|| Error::validation("destPath", "destPath has no directory"))?;
  if !dir.is_dir() {
    return Err(Error::validation(
      "destPath",
      format!("directory {} does not exist", dir.display()),
    ));
  }
  if same_file(source, &dest) {
    return Err(Error::validation(
      "destPath",
      "destPath is the database itself",
    ));
  }
  let name = dest
    .file_name()
    .map(|n| n.to_string_lossy().into_owned())
    .unwrap_or_default();
  let tmp = dir.join(format!(
    ".{name}.partial-{}",
    hex_encode(&random_bytes::<6>()?)
  ));
  let result = copy_into(source, &tmp).and_then(|pages| {
    std::fs::hard_link(&tmp, &dest).map_err(|e| {
      if e.kind() == std::io::ErrorKind::AlreadyExists {
        Error::validation(
          "destPath",
          format!(
            "{} already exists: a backup never replaces a file",
            dest.display()
          ),
        )
      } else {
        Error::storage(format!("storage error: cannot create the backup file: {e}"))
      }
    })?;
    sync_dir(dir);
    Ok(pages)
  });
  let _ = std::fs::remove_file(&tmp);
  let _ = std::fs::remove_file(format!("{}-journal", tmp.display()));
  let pages = result?;
  let bytes = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
  Ok(BackupInfo {
    path: dest.to_string_lossy().into_owned(),
    bytes,
    pages,
    duration_ms: started.elapsed().as_millis() as u64,
  })
}

/// The backup itself; returns the number of pages copied.
fn copy_into(source: &str, tmp: &Path) -> Result<u64> {
  let flags =
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
  let src = Connection::open_with_flags(source, flags)?;
  src.busy_timeout(std::time::Duration::from_secs(5))?;
  let mut dst = Connection::open(tmp)?;
  let pages = {
    let backup = Backup::new(&src, &mut dst)?;
    // -1: every page in one step, inside one read transaction of the source.
    match backup.step(-1)? {
      StepResult::Done => backup.progress().pagecount as u64,
      other => {
        return Err(Error::storage(format!(
          "storage error: the backup did not complete ({other:?}); nothing was written"
        )))
      }
    }
  };
  // The copy is in WAL mode like its source: make it one self-contained file.
  let _: String = dst.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
  dst.pragma_update(None, "synchronous", "FULL")?;
  drop(src);
  dst.close().map_err(|(_, e)| Error::from(e)).and_then(|_| {
    std::fs::File::open(tmp)
      .and_then(|f| f.sync_all())
      .map_err(|e| Error::storage(format!("storage error: cannot sync the backup: {e}")))
  })?;
  Ok(pages)
}

fn absolute(p: &Path) -> Result<PathBuf> {
  if p.is_absolute() {
    return Ok(p.to_path_buf());
  }
  std::env::current_dir()
    .map(|d| d.join(p))
    .map_err(|e| Error::storage(format!("storage error: no current directory: {e}")))
}

fn same_file(source: &str, dest: &Path) -> bool {
  match (std::fs::canonicalize(source), std::fs::canonicalize(dest)) {
    (Ok(a), Ok(b)) => a == b,
    _ => false,
  }
}

/// Makes the new directory entry durable (best effort: not every platform can open a directory).
fn sync_dir(dir: &Path) {
  if let Ok(d) = std::fs::File::open(dir) {
    let _ = d.sync_all();
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::crypto::{Key, Sealer};
  use crate::store::{Durability, Engine, StoreConfig};
  use std::sync::Arc;

  fn sealer() -> Arc<Sealer> {
    Arc::new(Sealer::new(Key::from_bytes([7; 32])))
  }

  fn open(path: &str) -> SqliteStore {
    let config = StoreConfig {
      path: path.to_string(),
      durability: Durability::Normal,
      readers: 1,
    };
    SqliteStore::open(config, sealer()).wait().unwrap()
  }

  #[test]
  fn backup_copies_a_consistent_snapshot_and_never_replaces_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db").to_string_lossy().to_string();
    let store = open(&path);
    let scope = crate::client::open_scope(&store, &sealer(), Some("org".into()), "test").unwrap();
    store
      .write(|c| {
        c.execute_batch("CREATE TABLE t (x INTEGER)")?;
        Ok(())
      })
      .wait()
      .unwrap();
    for i in 0..50 {
      store
        .write(move |c| {
          c.execute("INSERT INTO t VALUES (?1)", [i])?;
          Ok(())
        })
        .wait()
        .unwrap();
    }
    let dest = dir.path().join("copy.db");
    let info = store.backup_file(dest.clone()).wait().unwrap();
    assert!(info.pages > 0 && info.bytes > 0);
    let copy = Connection::open(&dest).unwrap();
    let n: i64 = copy
      .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
      .unwrap();
    assert_eq!(n, 50);
    let mode: String = copy
      .query_row("PRAGMA journal_mode", [], |r| r.get(0))
      .unwrap();
    assert_eq!(mode, "delete");
    let e = store.backup_file(dest.clone()).wait().unwrap_err();
    assert_eq!(
      (e.code(), e.field.as_deref()),
      ("VALIDATION_ERROR", Some("destPath"))
    );
    let e = store.backup_file(PathBuf::from(&path)).wait().unwrap_err();
    assert_eq!(e.code(), "VALIDATION_ERROR");
    let e = store
      .backup(dir.path().join("missing").join("x.db"))
      .wait()
      .unwrap_err();
    assert_eq!(e.code(), "VALIDATION_ERROR");
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
      .unwrap()
      .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
      .collect();
    assert!(names.iter().all(|n| !n.contains(".partial-")), "{names:?}");
    let _ = scope;
    assert!(store.file_usage().database_bytes > 0);
    store.close().wait().unwrap();
  }

  #[test]
  fn memory_databases_cannot_be_backed_up() {
    let store = open(":memory:");
    let dir = tempfile::tempdir().unwrap();
    let e = store
      .backup_file(dir.path().join("x.db"))
      .wait()
      .unwrap_err();
    assert_eq!(e.code(), "VALIDATION_ERROR");
    store.close().wait().unwrap();
  }
}

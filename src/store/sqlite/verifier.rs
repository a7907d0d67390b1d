//! How a SQLite database keeps a token verifier fresh without a round trip per verification.
//!
//! On a file, the feed owns a dedicated read-only connection and asks it, before each
//! verification, for `PRAGMA data_version`: the value changes whenever any other connection,
//! in this process or another one, commits to the file. It reads the WAL index in shared memory
//! (no file read, no transaction left open) and costs under a microsecond. Only when it changed
//! does the feed read the scope's epoch and, when that moved too, the keys and the new
//! revocations (`domain::tokens::verifier::load_delta`). Both reads run in one snapshot, and
//! the `data_version` remembered is the one of that snapshot, so a commit landing in between is
//! seen on the next call. A revocation is committed (and its promise resolved) before any later
//! verification starts, so every client on the file, in any process, rejects the token from its
//! very next call.
//!
//! A private `:memory:` database has no second connection. There the writer connection carries
//! a TEMP trigger on `token_epochs` calling a Rust function that raises a flag; a verification
//! that finds the flag raised reloads through the writer thread (after that commit).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags};

use super::{Db, SqliteTx};
use crate::crypto::Sealer;
use crate::domain::tokens::verifier::{load_delta, Feed, View};
use crate::domain::Scope;
use crate::error::{Error, Result};

/// A file database: polled with `data_version` on a dedicated connection.
pub(super) struct FileFeed {
  conn: Option<Connection>,
  data_version: Option<i64>,
  scope_id: i64,
  sealer: Arc<Sealer>,
}

fn data_version(conn: &Connection) -> Result<i64> {
  Ok(
    conn
      .prepare_cached("PRAGMA data_version")?
      .query_row([], |r| r.get(0))?,
  )
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
  conn.prepare_cached(sql)?.execute([])?;
  Ok(())
}

/// The dedicated connection of a file feed: read-only, short busy wait (it runs on Node's
/// thread; in WAL mode a reader waits only during recovery).
pub(super) fn open_feed_conn(path: &str) -> Result<Connection> {
  let flags =
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
  let conn = Connection::open_with_flags(path, flags)?;
  conn.busy_timeout(Duration::from_millis(1000))?;
  conn.set_prepared_statement_cache_capacity(16);
  Ok(conn)
}

impl FileFeed {
  pub(super) fn open(path: &str, scope: &Scope, sealer: Arc<Sealer>) -> Result<Self> {
    Ok(FileFeed {
      conn: Some(open_feed_conn(path)?),
      data_version: None,
      scope_id: scope.id,
      sealer,
    })
  }
}

impl Feed for FileFeed {
  fn refresh(&mut self, view: &mut View, now: i64) -> Result<()> {
    let Some(conn) = self.conn.as_ref() else {
      return Err(Error::closed());
    };
    let dv = data_version(conn)?;
    if self.data_version == Some(dv) {
      return Ok(());
    }
    // One snapshot for the data_version and the rows, so that a commit landing in between is
    // seen on the next call.
    exec(conn, "BEGIN")?;
    let read = (|| {
      let dv = data_version(conn)?;
      let known = view.known();
      let mut tx = SqliteTx::new(conn);
      let delta = load_delta(
        &mut tx,
        &self.sealer,
        self.scope_id,
        view.epoch(),
        view.after(),
        &known,
      )?;
      Ok::<_, Error>((dv, delta))
    })();
    if exec(conn, "COMMIT").is_err() {
      let _ = conn.execute_batch("ROLLBACK");
    }
    if !conn.is_autocommit() {
      // Never keep reading from a stale snapshot.
      return Err(Error::storage("token verifier could not end its read"));
    }
    let (dv, delta) = read?;
    let complete = match delta {
      Some(d) => view.apply(d, now),
      None => true,
    };
    self.data_version = complete.then_some(dv);
    Ok(())
  }

  fn close(&mut self) {
    self.conn = None;
  }
}

/// A private in-memory database: reloads through the writer when its trigger raised `dirty`.
pub(super) struct MemoryFeed {
  db: Arc<Db>,
  dirty: Arc<AtomicBool>,
  scope_id: i64,
  sealer: Arc<Sealer>,
}

impl MemoryFeed {
  /// Installs the trigger on the writer connection; the first refresh loads everything.
  pub(super) fn open(db: Arc<Db>, scope: &Scope, sealer: Arc<Sealer>) -> Result<Self> {
    let dirty = Arc::new(AtomicBool::new(true));
    let flag = dirty.clone();
    db.write(move |conn| install_memory_signal(conn, flag))
      .wait()?;
    Ok(MemoryFeed {
      db,
      dirty,
      scope_id: scope.id,
      sealer,
    })
  }
}

impl Feed for MemoryFeed {
  fn refresh(&mut self, view: &mut View, now: i64) -> Result<()> {
    if !self.dirty.swap(false, Ordering::SeqCst) {
      return Ok(());
    }
    let (sealer, scope_id) = (self.sealer.clone(), self.scope_id);
    let (epoch, after, known) = (view.epoch(), view.after(), view.known());
    let loaded = self
      .db
      .read(move |conn| {
        load_delta(
          &mut SqliteTx::new(conn),
          &sealer,
          scope_id,
          epoch,
          after,
          &known,
        )
      })
      .wait();
    match loaded {
      Ok(Some(d)) => {
        if !view.apply(d, now) {
          self.dirty.store(true, Ordering::SeqCst);
        }
        Ok(())
      }
      Ok(None) => Ok(()),
      Err(e) => {
        self.dirty.store(true, Ordering::SeqCst);
        Err(e)
      }
    }
  }
}

/// A TEMP trigger on the writer connection raises `dirty` whenever an epoch changes.
fn install_memory_signal(conn: &Connection, dirty: Arc<AtomicBool>) -> Result<()> {
  conn.create_scalar_function(
    "lv_tokens_changed",
    1,
    FunctionFlags::SQLITE_UTF8,
    move |_ctx| {
      dirty.store(true, Ordering::SeqCst);
      Ok(0i64)
    },
  )?;
  conn.execute_batch(
    "CREATE TEMP TRIGGER IF NOT EXISTS lv_tokens_epoch_ins AFTER INSERT ON main.token_epochs
       BEGIN SELECT lv_tokens_changed(NEW.scope_id); END;
     CREATE TEMP TRIGGER IF NOT EXISTS lv_tokens_epoch_upd AFTER UPDATE ON main.token_epochs
       BEGIN SELECT lv_tokens_changed(NEW.scope_id); END;",
  )?;
  Ok(())
}

//! The embedded SQLite engine.
//!
//! One writer thread owns the only write connection and commits queued writes together (group
//! commit): it takes every job waiting in its queue, runs each inside its own SAVEPOINT of one
//! `BEGIN IMMEDIATE` transaction (a failing job rolls back only its own changes), commits once,
//! and only then answers each caller. A few reader threads each own a read connection and run
//! each read in its own snapshot. WAL mode lets readers run while the writer commits, and other
//! processes on the same file wait on SQLite's lock (busy timeout plus retry) instead of failing.
//! No work runs on the async runtime's workers, and on Node's thread only point reads by key
//! (`Engine::read_point_job`): one more read connection serves them on the calling thread when
//! it is free at once and no lock would make it wait (no busy timeout: a lock sends the read to
//! a reader thread), as better-sqlite3 does, without the hand-off to a reader thread and back;
//! see [`PointCalls`] for when they go to the reader threads anyway. Point writes (one account,
//! one token family: `Engine::write_point_job`) likewise run in a transaction of their own on the
//! calling thread when the writer has nothing queued or running, the durability is 'normal' (no
//! fsync per commit) and no lock held by another process would make them wait; checkpoints stay
//! on the writer thread.
//!
//! The engine only persists: [`SqliteTx`] implements the row traits of `domain` over one
//! connection inside the current transaction (`accounts`, `consents`, `tokens`, `keys`, `events` here), and jobs
//! (`store::Job`) bring the rules.

pub(crate) mod accounts;
mod admin;
mod apikeys;
mod backup;
mod consents;
pub(crate) mod events;
pub(crate) mod identities;
mod keys;
pub(crate) mod schema;
mod tokens;
mod verifier;
mod webhooks;

pub use backup::BackupInfo;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags};

use super::{Engine, Job, Listeners, Pending, Scope, Store, Tx};
use crate::crypto::Sealer;
use crate::domain::tokens::verifier::Feed;
use crate::error::{Error, Result};

/// One transaction's view of a SQLite database: the row traits of `domain` over the connection
/// that runs the job, inside the transaction the engine opened.
pub struct SqliteTx<'c> {
  conn: &'c Connection,
}

impl<'c> SqliteTx<'c> {
  pub fn new(conn: &'c Connection) -> Self {
    SqliteTx { conn }
  }
}

impl Tx for SqliteTx<'_> {}

/// How hard a commit waits for the disk (SQLite `synchronous`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
  /// `synchronous=NORMAL`: a commit is durable once the WAL is checkpointed; an OS crash or power
  /// loss can lose the last few commits, never corrupt the file. Much faster.
  Normal,
  /// `synchronous=FULL`: every commit is fsynced before it is acknowledged.
  Full,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
  /// A file path, or `:memory:` for a private in-memory database.
  pub path: String,
  pub durability: Durability,
  /// Reader threads for a file database.
  pub readers: usize,
}

type Done = Box<dyn FnOnce(Result<()>) + Send>;
type ConnWrite = Box<dyn FnOnce(std::result::Result<&Connection, &Error>) -> (bool, Done) + Send>;
type ConnRead = Box<dyn FnOnce(&Connection) + Send>;

/// Work for the writer thread: a job (`store::Job`, given a [`SqliteTx`]) or a closure on the
/// connection (the modules that still hold their own SQL).
enum WriteJob {
  Job(Box<dyn Job>),
  Conn(ConnWrite),
}

/// What the writer does once the batch committed (or failed): deliver a job's events and
/// finish it, or run a closure's answer.
enum Finish {
  Job(Box<dyn Job>, Vec<(i64, crate::domain::events::Event)>, Ran),
  Conn(Done),
}

enum ReadJob {
  Job(Box<dyn Job>),
  Conn(ConnRead),
}

/// Work the writer did not take (closed), with the error to answer it with.
struct SendBack(WriteJob, Error);

const MAX_BATCH: usize = 256;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const LOCK_WAIT_LIMIT: Duration = Duration::from_secs(120);

/// The connection pool: one writer, some readers.
pub struct Db {
  writer: RwLock<Option<Sender<WriteJob>>>,
  /// The write connection: the writer thread's, lent to point writes on the calling thread
  /// (`write_now`) while the writer has nothing to do. None once the writer has closed it.
  write_conn: Arc<Mutex<Option<Connection>>>,
  /// What the writer connection's hooks share with `write_now`.
  write_flags: Arc<WriterFlags>,
  /// Whether point writes may run on the calling thread: a writable file or memory database
  /// with durability 'normal' (with 'full', every commit waits for an fsync).
  inline_writes: bool,
  /// Writes sent to the writer thread and not yet committed or failed: a point write runs on
  /// the calling thread only when none is, so that it cannot overtake one.
  unfinished_writes: Arc<AtomicUsize>,
  point_writes: Arc<PointCalls>,
  readers: RwLock<Option<Sender<ReadJob>>>,
  /// The read connection of `read_now` (point reads on the caller's thread); None for an
  /// in-memory database and once closed.
  inline: Mutex<Option<Inline>>,
  point_reads: Arc<PointCalls>,
  threads: Mutex<Vec<JoinHandle<()>>>,
  /// Disconnects when the writer thread has closed its connection.
  writer_exit: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
  /// What other connections should open: the path, or the immutable-snapshot URI of a
  /// read-only file (see `open_writer`).
  read_path: String,
  /// Live event subscribers (`onEvent`), called after each commit with that job's events.
  listeners: Arc<Listeners>,
  /// RELIABILITY: the file could only be opened read-only (not writable by this process):
  /// reads work, every write fails with STORAGE_ERROR (SQLite refuses it).
  read_only: bool,
}

impl Db {
  /// Opens (creating if needed) and migrates the database, then starts its threads.
  pub fn open(config: StoreConfig) -> Pending<Arc<Db>> {
    let (answer, pending) = Pending::channel();
    let (wtx, wrx) = unbounded::<WriteJob>();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
    let listeners = Arc::new(Listeners::default());
    let write_flags = Arc::new(WriterFlags::default());
    let unfinished_writes = Arc::new(AtomicUsize::new(0));
    let durability = config.durability;
    let spawned = std::thread::Builder::new()
      .name("linkvault-writer".into())
      .spawn(move || {
        let mut config = config;
        let flags = write_flags.clone();
        let opened = open_writer(&mut config, flags).and_then(|mut conn| {
          let memory = is_memory(&config.path);
          // RELIABILITY: a file this process cannot write is opened read-only (SQLite falls
          // back by itself); it is used as it is if its schema is current.
          let read_only = !memory && conn.is_readonly(rusqlite::MAIN_DB)?;
          if read_only {
            schema::check_current(&conn)?;
          } else {
            schema::migrate(&mut conn)?;
          }
          let (rtx, rrx) = unbounded::<ReadJob>();
          let mut threads = Vec::new();
          if !memory {
            for i in 0..config.readers.max(1) {
              let rconn = open_reader(&config.path)?;
              let rx = rrx.clone();
              let h = std::thread::Builder::new()
                .name(format!("linkvault-reader-{i}"))
                .spawn(move || reader_loop(rconn, rx))
                .map_err(|e| Error::storage(format!("cannot start reader thread: {e}")))?;
              threads.push(h);
            }
          }
          let inline = if memory {
            None
          } else {
            Some(open_inline(&config.path)?)
          };
          let db = Db {
            writer: RwLock::new(Some(wtx)),
            write_conn: Arc::new(Mutex::new(None)),
            write_flags,
            inline_writes: !read_only && durability == Durability::Normal,
            unfinished_writes,
            point_writes: PointCalls::new(INLINE_WRITE_STREAK),
            readers: RwLock::new(if memory { None } else { Some(rtx) }),
            inline: Mutex::new(inline),
            point_reads: PointCalls::new(INLINE_STREAK),
            threads: Mutex::new(threads),
            writer_exit: Mutex::new(Some(exit_rx)),
            listeners: listeners.clone(),
            read_only,
            read_path: config.path.clone(),
          };
          Ok((conn, Arc::new(db)))
        });
        match opened {
          Ok((conn, db)) => {
            let shared = db.write_conn.clone();
            let unfinished = db.unfinished_writes.clone();
            if let Ok(mut slot) = shared.lock() {
              *slot = Some(conn);
            }
            let _ = answer.send(Ok(db));
            writer_loop(&shared, wrx, listeners, &unfinished);
            drop(exit_tx);
          }
          Err(e) => {
            let _ = answer.send(Err(e));
          }
        }
      });
    match spawned {
      Ok(handle) => {
        // The writer's own handle is not joined: it exits when the last sender is dropped.
        drop(handle);
        pending
      }
      Err(e) => Pending::ready(Err(Error::storage(format!(
        "cannot start writer thread: {e}"
      )))),
    }
  }

  /// Runs `f` in the next group-commit transaction. `f` returning `Err` rolls back its changes
  /// only. The result is delivered after the commit; a failed commit fails every job in it.
  /// Events the job appended go to the live subscribers after the commit, before the caller's
  /// answer is sent, in commit order.
  pub fn write<T, F>(&self, f: F) -> Pending<T>
  where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
  {
    let (answer, pending) = Pending::channel();
    let listeners = self.listeners.clone();
    let job: ConnWrite = Box::new(move |conn| match conn {
      Err(e) => {
        let e = e.clone();
        (
          false,
          Box::new(move |_| {
            let _ = answer.send(Err(e));
          }),
        )
      }
      Ok(conn) => {
        let (res, appended) = if listeners.is_empty() {
          (f(conn), Vec::new())
        } else {
          events::collect(|| f(conn))
        };
        let ok = res.is_ok();
        (
          ok,
          Box::new(move |commit: Result<()>| {
            if ok && commit.is_ok() {
              listeners.deliver(&appended);
            }
            let _ = answer.send(commit.and(res));
          }),
        )
      }
    });
    match self.send_write(WriteJob::Conn(job)) {
      Ok(()) => pending,
      Err(back) => Pending::ready(Err(back.1)),
    }
  }

  /// Queues a job for the next group-commit transaction (see [`Db::write`]).
  pub fn write_job(&self, job: Box<dyn Job>) {
    if let Err(SendBack(WriteJob::Job(job), e)) = self.send_write(WriteJob::Job(job)) {
      job.finish(Err(e));
    }
  }

  /// Queues `work` for the writer, or gives it back when the engine is closed.
  fn send_write(&self, work: WriteJob) -> std::result::Result<(), SendBack> {
    let closed = || Error::closed();
    let Ok(guard) = self.writer.read() else {
      return Err(SendBack(work, closed()));
    };
    let Some(tx) = guard.as_ref() else {
      return Err(SendBack(work, closed()));
    };
    // Counted before it can be taken, so that the writer's count never goes below zero.
    self.unfinished_writes.fetch_add(1, Ordering::Relaxed);
    tx.send(work).map_err(|e| {
      self.unfinished_writes.fetch_sub(1, Ordering::Relaxed);
      SendBack(e.0, closed())
    })
  }

  /// Runs a bounded write (`Engine::write_point_job`): on the calling thread when
  /// [`PointCalls`] allows it and [`Db::write_now`] can, else through the writer thread.
  pub fn write_point_job(&self, job: Box<dyn Job>) {
    let may = self.inline_writes && self.unfinished_writes.load(Ordering::Relaxed) == 0;
    self.point_writes.dispatch(
      job,
      may,
      |job| self.write_now(job),
      |job| self.write_job(job),
    );
  }

  /// Runs a write job in a transaction of its own on the calling thread, or gives it back: when
  /// the writer thread holds the connection, the WAL is due for a checkpoint (the writer thread
  /// runs those), the engine is closed, or the transaction met a lock held by another process
  /// (the writer thread waits such locks out; this thread must not). Its result is then
  /// discarded and it runs again from the start.
  fn write_now(&self, job: Box<dyn Job>) -> std::result::Result<(), Box<dyn Job>> {
    let flags = &self.write_flags;
    if flags.wal_frames.load(Ordering::Relaxed) >= CHECKPOINT_PAGES || self.is_closed() {
      return Err(job);
    }
    let Ok(guard) = self.write_conn.try_lock() else {
      return Err(job);
    };
    let Some(conn) = guard.as_ref() else {
      return Err(job);
    };
    flags.on_calling_thread.store(true, Ordering::Relaxed);
    let ran = commit_alone(conn, job, &self.listeners);
    flags.on_calling_thread.store(false, Ordering::Relaxed);
    let met_a_lock = flags.met_a_lock.swap(false, Ordering::Relaxed);
    drop(guard);
    match ran {
      Ok((finish, outcome)) if !met_a_lock => {
        finish.run(&outcome, &self.listeners);
        Ok(())
      }
      Ok((finish, _)) => match finish.into_work() {
        Some(WriteJob::Job(job)) => Err(job),
        _ => Ok(()),
      },
      Err(job) => Err(job),
    }
  }

  /// Runs `f` on a reader connection inside one read transaction (a consistent snapshot).
  /// An in-memory database has no readers: its reads queue behind the writer.
  pub fn read<T, F>(&self, f: F) -> Pending<T>
  where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
  {
    let Some(readers) = self.reader_queue() else {
      return self.write(f);
    };
    let (answer, pending) = Pending::channel();
    let job: ConnRead = Box::new(move |conn| {
      let _ = answer.send(in_read_txn(conn, f));
    });
    if readers.send(ReadJob::Conn(job)).is_err() {
      return Pending::ready(Err(Error::closed()));
    }
    pending
  }

  /// Queues a read-only job (see [`Db::read`]).
  pub fn read_job(&self, job: Box<dyn Job>) {
    let Some(readers) = self.reader_queue() else {
      return self.write_job(job);
    };
    if let Err(e) = readers.send(ReadJob::Job(job)) {
      if let ReadJob::Job(job) = e.0 {
        job.finish(Err(Error::closed()));
      }
    }
  }

  /// Runs a point read by key (`Engine::read_point_job`): on the calling thread when
  /// [`PointCalls`] allows it and [`Db::read_now`] can, else on a reader thread.
  pub fn read_point_job(&self, job: Box<dyn Job>) {
    self.point_reads.dispatch(
      job,
      true,
      |job| self.read_now(job),
      |job| self.read_job(job),
    );
  }

  /// Runs a point-read job on the calling thread, or gives it back: when the inline connection
  /// is in use (another JS thread), the database is in memory or closed, or the read met a lock
  /// held elsewhere (a WAL recovery or reset by another connection), which a reader thread
  /// waits out instead.
  fn read_now(&self, mut job: Box<dyn Job>) -> std::result::Result<(), Box<dyn Job>> {
    let Ok(guard) = self.inline.try_lock() else {
      return Err(job);
    };
    let Some(inline) = guard.as_ref() else {
      return Err(job);
    };
    let outcome = run_read(&inline.conn, &mut *job);
    let met_a_lock = inline.met_a_lock.swap(false, Ordering::Relaxed);
    drop(guard);
    if met_a_lock {
      // Its result is discarded: the job runs again from the start (`Job::run`).
      return Err(job);
    }
    job.finish(outcome);
    Ok(())
  }

  /// The readers' queue; None for an in-memory database (reads go to the writer) and once
  /// closed (then the writer refuses them).
  fn reader_queue(&self) -> Option<Sender<ReadJob>> {
    self.readers.read().ok().and_then(|g| g.clone())
  }

  /// Writes queued and not yet taken by the writer thread (`stats().write_queue`).
  pub fn write_queue_len(&self) -> usize {
    self
      .writer
      .read()
      .ok()
      .and_then(|g| g.as_ref().map(|tx| tx.len()))
      .unwrap_or(0)
  }

  /// Whether `close` was called.
  pub fn is_closed(&self) -> bool {
    self.writer.read().map(|g| g.is_none()).unwrap_or(true)
  }

  /// The path (or URI) other connections to this database should open.
  pub fn read_path(&self) -> &str {
    &self.read_path
  }

  /// Whether the file was opened read-only (RELIABILITY: see `read_only`).
  pub fn is_read_only(&self) -> bool {
    self.read_only
  }

  /// The live event subscribers of this engine.
  pub fn listeners(&self) -> &Arc<Listeners> {
    &self.listeners
  }

  /// Stops accepting work, lets queued work finish and waits for the threads to end.
  pub fn close(&self) -> Pending<()> {
    let writer = self.writer.write().ok().and_then(|mut g| g.take());
    let readers = self.readers.write().ok().and_then(|mut g| g.take());
    // Taken at once, so that no read is served after `close`; waits at most for one point read
    // running on another JS thread.
    let inline = self.inline.lock().ok().and_then(|mut g| g.take());
    let threads: Vec<JoinHandle<()>> = self
      .threads
      .lock()
      .map(|mut t| t.drain(..).collect())
      .unwrap_or_default();
    let writer_exit = self.writer_exit.lock().ok().and_then(|mut g| g.take());
    let Some(writer) = writer else {
      return Pending::ready(Ok(()));
    };
    // Readers finish their queued reads and close first, so that the writer's connection is
    // the file's last: closing it then folds the WAL into the database file and removes it.
    // The writer answers a final no-op job after everything queued before it; then the dropped
    // sender ends its thread.
    let (done_tx, done) = Pending::channel();
    let listeners = self.listeners.clone();
    let _ = std::thread::Builder::new()
      .name("linkvault-close".into())
      .spawn(move || {
        drop(inline);
        drop(readers);
        for t in threads {
          let _ = t.join();
        }
        let (answer, pending) = Pending::channel();
        let fence = WriteJob::Conn(Box::new(move |_| {
          (
            true,
            Box::new(move |_| {
              let _ = answer.send(Ok(()));
            }),
          )
        }));
        let _ = writer.send(fence);
        drop(writer);
        let r = pending.wait();
        // Every queued write has committed and been delivered: drop the subscribers.
        listeners.clear();
        // Wait until the writer has closed its connection.
        if let Some(rx) = writer_exit {
          let _ = rx.recv();
        }
        let _ = done_tx.send(r);
      });
    done
  }
}

/// RELIABILITY: `file:<path>?immutable=1` for a read-only file whose `-wal` is absent or empty
/// (see `Db::open`); None when a `-wal` has content (it would be ignored) or the path is
/// already a URI.
fn immutable_uri(path: &str) -> Option<String> {
  if path.starts_with("file:") {
    return None;
  }
  let wal_len = std::fs::metadata(format!("{path}-wal"))
    .map(|m| m.len())
    .unwrap_or(0);
  if wal_len > 0 {
    return None;
  }
  let mut uri = String::from("file:");
  for c in path.chars() {
    match c {
      '%' => uri.push_str("%25"),
      '?' => uri.push_str("%3f"),
      '#' => uri.push_str("%23"),
      c => uri.push(c),
    }
  }
  uri.push_str("?immutable=1");
  Some(uri)
}

fn is_memory(path: &str) -> bool {
  path == ":memory:" || path.is_empty()
}

fn configure(conn: &Connection) -> Result<()> {
  conn.busy_timeout(BUSY_TIMEOUT)?;
  // Query planner stability: without it, SQLite 3.54 re-prepares any cached statement with
  // `col = ?` and an ORDER BY on every new binding (to try value-specific plans), which made
  // re-parsing the top cost of every read. Our plans do not depend on bound values.
  conn.set_db_config(
    rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
    true,
  )?;
  conn.set_prepared_statement_cache_capacity(128);
  // A 32 MiB page cache per connection (SQLite's default is 2 MiB): indexes of a million
  // accounts stay in memory. Temporary b-trees (sorts) stay in memory too.
  conn.pragma_update(None, "cache_size", -32768)?;
  conn.pragma_update(None, "temp_store", "MEMORY")?;
  conn.create_scalar_function(
    "lv_icontains",
    2,
    FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
    |ctx| {
      let hay: Option<String> = ctx.get(0)?;
      let needle: String = ctx.get(1)?;
      Ok(
        hay
          .map(|h| h.to_lowercase().contains(&needle))
          .unwrap_or(false),
      )
    },
  )?;
  Ok(())
}

/// WAL size (in pages) past which a commit on the writer thread checkpoints, as SQLite's own
/// `wal_autocheckpoint` does; point writes on Node's thread never checkpoint and, past it,
/// leave the next write to the writer thread. (A checkpoint thread of its own was measured, and
/// lost: see bench/README.md.)
const CHECKPOINT_PAGES: usize = 1000;

/// What the write connection's hooks share with `Db::write_now`.
#[derive(Default)]
struct WriterFlags {
  /// Set while a point write runs on a calling thread: then a lock held elsewhere is not
  /// waited for, and no checkpoint runs.
  on_calling_thread: AtomicBool,
  /// Set by the busy handler: the point write met a lock held elsewhere.
  met_a_lock: AtomicBool,
  /// Pages in the WAL after the last commit.
  wal_frames: AtomicUsize,
}

/// SQLite's own busy-timeout schedule (sqliteDefaultBusyCallback): whether to try again after
/// sleeping, for the `attempt`-th time, until `limit` has passed.
fn busy_wait(attempt: i32, limit: Duration) -> bool {
  const DELAYS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
  let n = usize::try_from(attempt).unwrap_or(0);
  let (delay, prior) = match DELAYS_MS.get(n) {
    Some(d) => (*d, DELAYS_MS[..n].iter().sum::<u64>()),
    None => (100, 228 + 100 * (n as u64 - DELAYS_MS.len() as u64)),
  };
  let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
  if prior >= limit {
    return false;
  }
  std::thread::sleep(Duration::from_millis(delay.min(limit - prior)));
  true
}

fn open_writer(config: &mut StoreConfig, flags: Arc<WriterFlags>) -> Result<Connection> {
  let mut conn = if is_memory(&config.path) {
    Connection::open_in_memory()?
  } else {
    Connection::open(&config.path)?
  };
  // RELIABILITY: a WAL file that is read-only in a read-only directory cannot be read without
  // its `-shm` (SQLite would have to create it). With no `-wal` either, nothing is
  // uncheckpointed: read the file as an immutable snapshot (the readers too: `config.path`).
  if !is_memory(&config.path)
    && conn.is_readonly(rusqlite::MAIN_DB)?
    && conn
      .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
      .is_err()
  {
    if let Some(uri) = immutable_uri(&config.path) {
      drop(conn);
      config.path = uri;
      conn = Connection::open(&config.path)?;
    }
  }
  configure(&conn)?;
  // RELIABILITY: a read-only file keeps the journal mode it has.
  if !is_memory(&config.path) && !conn.is_readonly(rusqlite::MAIN_DB)? {
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
      return Err(Error::storage(format!(
        "could not enable WAL mode (got {mode})"
      )));
    }
  }
  let sync = match config.durability {
    Durability::Normal => "NORMAL",
    Durability::Full => "FULL",
  };
  conn.pragma_update(None, "synchronous", sync)?;
  conn.pragma_update(None, "foreign_keys", "ON")?;
  // The busy timeout and the WAL's auto-checkpoint as SQLite's own, except on a calling thread
  // (`Db::write_now`), which must never wait nor checkpoint.
  let busy = flags.clone();
  conn.busy_handler(Some(move |attempt: i32| {
    if busy.on_calling_thread.load(Ordering::Relaxed) {
      busy.met_a_lock.store(true, Ordering::Relaxed);
      return false;
    }
    busy_wait(attempt, BUSY_TIMEOUT)
  }))?;
  conn.wal_hook(Some(
    move |wal: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
      let pages = usize::try_from(pages).unwrap_or(0);
      flags.wal_frames.store(pages, Ordering::Relaxed);
      if pages >= CHECKPOINT_PAGES && !flags.on_calling_thread.load(Ordering::Relaxed) {
        // PASSIVE, as SQLite's: a checkpoint that readers hold back is tried again next commit.
        let _ = wal.checkpoint();
      }
      Ok(())
    },
  ))?;
  Ok(conn)
}

fn open_reader(path: &str) -> Result<Connection> {
  let flags =
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
  let conn = Connection::open_with_flags(path, flags)?;
  configure(&conn)?;
  Ok(conn)
}

/// When point reads (or point writes, counted apart) run on the calling thread. Not more than
/// [`PointCalls::limit`] in a row: a promise settled at once resumes its `await` without a turn of
/// the event loop, so a loop of awaited point calls would otherwise keep timers and I/O waiting
/// for as long as it runs; the next call goes to a storage thread, and awaiting it lets the loop
/// turn. A new streak starts only when that call was answered alone (nothing else queued when it
/// was sent, and no other call of its kind made before it was answered): the caller awaits one
/// call at a time. Many calls in flight keep going to the storage threads, which serve them in
/// parallel with Node's thread (the writer commits them together), faster than one after
/// another on it. And never while other point calls of the kind wait for a storage thread.
struct PointCalls {
  /// How many may run on a calling thread in a row.
  limit: usize,
  /// Point calls queued for a storage thread and not yet answered.
  queued: AtomicUsize,
  /// Point calls run on a calling thread since a storage thread last answered one alone.
  streak: AtomicUsize,
  /// Point calls made, wherever they ran.
  made: AtomicUsize,
}

/// At most this many point reads in a row run on Node's thread (about 20 µs each).
const INLINE_STREAK: usize = 32;

/// At most this many point writes in a row run on Node's thread (50–100 µs each): the first
/// calls of a burst of concurrent writes may run here before the others queue, and a short
/// streak keeps that pause of the event loop under a millisecond.
const INLINE_WRITE_STREAK: usize = 8;

impl PointCalls {
  fn new(limit: usize) -> Arc<PointCalls> {
    Arc::new(PointCalls {
      limit,
      queued: AtomicUsize::new(0),
      streak: AtomicUsize::new(0),
      made: AtomicUsize::new(0),
    })
  }

  fn inline_allowed(&self) -> bool {
    self.queued.load(Ordering::Relaxed) == 0 && self.streak.load(Ordering::Relaxed) < self.limit
  }

  /// Runs `job` on the calling thread with `now` when these counts (and `may`) allow it and
  /// `now` can, else hands it, counted, to a storage thread with `queue`.
  fn dispatch(
    self: &Arc<Self>,
    job: Box<dyn Job>,
    may: bool,
    now: impl FnOnce(Box<dyn Job>) -> std::result::Result<(), Box<dyn Job>>,
    queue: impl FnOnce(Box<dyn Job>),
  ) {
    let made = self.made.fetch_add(1, Ordering::Relaxed) + 1;
    let job = if may && self.inline_allowed() {
      match now(job) {
        Ok(()) => {
          self.streak.fetch_add(1, Ordering::Relaxed);
          return;
        }
        Err(job) => job,
      }
    } else {
      job
    };
    let alone = self.queued.fetch_add(1, Ordering::Relaxed) == 0;
    queue(Box::new(Queued {
      job,
      counts: self.clone(),
      alone,
      made,
    }));
  }
}

/// A point call sent to a storage thread, counted in [`PointCalls`] until it is answered.
struct Queued {
  job: Box<dyn Job>,
  counts: Arc<PointCalls>,
  /// Whether no other point call of its kind was queued when it was.
  alone: bool,
  /// `PointCalls::made` counting it: another call was made meanwhile if that moved on.
  made: usize,
}

impl Job for Queued {
  fn run(&mut self, tx: &mut dyn Tx) -> Result<()> {
    self.job.run(tx)
  }

  fn finish(self: Box<Self>, outcome: Result<()>) {
    // Counted out before the answer, so that the caller resuming on it may run inline again.
    let still_queued = self.counts.queued.fetch_sub(1, Ordering::Relaxed) - 1;
    let none_made_since = self.counts.made.load(Ordering::Relaxed) == self.made;
    if self.alone && still_queued == 0 && none_made_since {
      self.counts.streak.store(0, Ordering::Relaxed);
    }
    self.job.finish(outcome)
  }
}

/// The read connection of `Db::read_now`: a reader whose reads never wait for a lock.
struct Inline {
  conn: Connection,
  /// Set by its busy handler: the last read met a lock held elsewhere.
  met_a_lock: Arc<AtomicBool>,
}

fn open_inline(path: &str) -> Result<Inline> {
  let mut conn = open_reader(path)?;
  let met_a_lock = Arc::new(AtomicBool::new(false));
  let flag = met_a_lock.clone();
  // Never wait (this runs on Node's thread): note the lock, and `read_now` hands the read to a
  // reader thread, whose busy timeout waits it out.
  conn.busy_handler(Some(move |_attempts: i32| {
    flag.store(true, Ordering::Relaxed);
    false
  }))?;
  Ok(Inline { conn, met_a_lock })
}

fn in_read_txn<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
  conn.prepare_cached("BEGIN")?.execute([])?;
  let res = catch_unwind(AssertUnwindSafe(|| f(conn)))
    .unwrap_or_else(|_| Err(Error::storage("internal error while reading (panic)")));
  let _ = conn
    .prepare_cached("COMMIT")
    .and_then(|mut s| s.execute([]));
  res
}

fn reader_loop(conn: Connection, rx: Receiver<ReadJob>) {
  while let Ok(job) = rx.recv() {
    match job {
      ReadJob::Conn(f) => f(&conn),
      ReadJob::Job(mut job) => {
        let outcome = run_read(&conn, &mut *job);
        job.finish(outcome);
      }
    }
  }
}

/// Runs a read job in its own read transaction (a fresh snapshot: it sees every commit that
/// finished before it began). The job keeps its own result: the outcome is the read's (its
/// snapshot, a panic).
fn run_read(conn: &Connection, job: &mut dyn Job) -> Result<()> {
  exec_cached(conn, "BEGIN").and_then(|()| {
    let ran = catch_unwind(AssertUnwindSafe(|| job.run(&mut SqliteTx::new(conn))));
    let _ = exec_cached(conn, "COMMIT");
    match ran {
      Ok(_) => Ok(()),
      Err(_) => Err(Error::storage("internal error while reading (panic)")),
    }
  })
}

/// `BEGIN IMMEDIATE`, waiting for other processes' write locks well past the busy timeout so
/// that `SQLITE_BUSY` does not reach users under contention.
fn begin_immediate(conn: &Connection) -> Result<()> {
  let start = Instant::now();
  loop {
    match conn
      .prepare_cached("BEGIN IMMEDIATE")
      .and_then(|mut s| s.execute([]))
    {
      Ok(_) => return Ok(()),
      Err(rusqlite::Error::SqliteFailure(e, _))
        if e.code == rusqlite::ErrorCode::DatabaseBusy && start.elapsed() < LOCK_WAIT_LIMIT =>
      {
        continue
      }
      Err(e) => return Err(e.into()),
    }
  }
}

fn exec_cached(conn: &Connection, sql: &str) -> Result<()> {
  conn.prepare_cached(sql)?.execute([])?;
  Ok(())
}

/// Runs one unit of work of a batch inside its savepoint (or fails it when `conn` is an error).
fn run_write(
  conn: std::result::Result<&Connection, &Error>,
  work: WriteJob,
  listeners: &Listeners,
) -> (bool, Finish) {
  match work {
    WriteJob::Conn(f) => match conn {
      Err(e) => (false, Finish::Conn(f(Err(e)).1)),
      Ok(conn) => {
        let (ok, done) = catch_unwind(AssertUnwindSafe(|| f(Ok(conn))))
          .unwrap_or_else(|_| (false, Box::new(|_| {}) as Done));
        (ok, Finish::Conn(done))
      }
    },
    WriteJob::Job(mut job) => match conn {
      Err(e) => (
        false,
        Finish::Job(job, Vec::new(), Ran::Failed(Some(e.clone()))),
      ),
      Ok(conn) => {
        let mut tx = SqliteTx::new(conn);
        let ran = catch_unwind(AssertUnwindSafe(|| {
          if listeners.is_empty() {
            (job.run(&mut tx), Vec::new())
          } else {
            events::collect(|| job.run(&mut tx))
          }
        }));
        match ran {
          Ok((Ok(()), appended)) => (true, Finish::Job(job, appended, Ran::Ok)),
          Ok((Err(_), _)) => (false, Finish::Job(job, Vec::new(), Ran::Failed(None))),
          Err(_) => (
            false,
            Finish::Job(
              job,
              Vec::new(),
              Ran::Failed(Some(Error::storage("internal error while writing (panic)"))),
            ),
          ),
        }
      }
    },
  }
}

/// How a job's run went.
enum Ran {
  Ok,
  /// Its changes were rolled back; with the error to answer instead of its own, if any.
  Failed(Option<Error>),
}

impl Finish {
  /// The job back, to run again (its events of the undone run are dropped).
  fn into_work(self) -> Option<WriteJob> {
    match self {
      Finish::Job(job, _, _) => Some(WriteJob::Job(job)),
      Finish::Conn(_) => None,
    }
  }

  /// Hands a committed job's events to the subscribers now (`run` then has none left).
  fn deliver_events(&mut self, outcome: &Result<()>, listeners: &Listeners) {
    if let Finish::Job(_, appended, Ran::Ok) = self {
      if outcome.is_ok() {
        listeners.deliver(&std::mem::take(appended));
      }
    }
  }

  fn run(self, outcome: &Result<()>, listeners: &Listeners) {
    match self {
      Finish::Conn(done) => done(outcome.clone()),
      Finish::Job(job, appended, ran) => match ran {
        Ran::Ok => {
          if outcome.is_ok() {
            listeners.deliver(&appended);
          }
          job.finish(outcome.clone());
        }
        Ran::Failed(None) => job.finish(outcome.clone()),
        Ran::Failed(Some(e)) => job.finish(Err(e)),
      },
    }
  }
}

/// Runs `batch` in one transaction and commits it; `finishes` gets one entry per unit of work,
/// in order, and the commit's outcome is returned.
///
/// A job needs a rollback point of its own only if it fails, and jobs rarely fail, so the batch
/// first runs without savepoints: a savepoint makes SQLite copy every page a job touches into a
/// statement journal, a tenth of the writer's time in a batch of upserts. When a job fails in a
/// batch of several, the transaction rolls back and the whole batch runs again, each job inside
/// its own SAVEPOINT, so that the failure undoes only its own changes. Jobs are re-runnable (a
/// PostgreSQL retry runs them again too) and keep only the result of their last run. A closure
/// (`WriteJob::Conn`) runs once, so a batch holding one takes savepoints from the start.
fn commit_batch(
  conn: &Connection,
  batch: &mut Vec<WriteJob>,
  finishes: &mut Vec<Finish>,
  listeners: &Listeners,
) -> Result<()> {
  if let Err(e) = begin_immediate(conn) {
    fail_all(batch, finishes, listeners, &e);
    return Err(e);
  }
  if batch.iter().all(|w| matches!(w, WriteJob::Job(_))) {
    let mut failed = false;
    let mut queue = batch.drain(..);
    for work in queue.by_ref() {
      let (ok, finish) = run_write(Ok(conn), work, listeners);
      finishes.push(finish);
      if !ok {
        failed = true;
        break;
      }
    }
    let rest: Vec<WriteJob> = queue.collect();
    if failed {
      let _ = conn.execute_batch("ROLLBACK");
      if finishes.len() == 1 && rest.is_empty() {
        // The batch was this one job: the rollback undid exactly its changes.
        return Ok(());
      }
      batch.extend(finishes.drain(..).filter_map(Finish::into_work));
      batch.extend(rest);
      if let Err(e) = begin_immediate(conn) {
        fail_all(batch, finishes, listeners, &e);
        return Err(e);
      }
      run_with_savepoints(conn, batch, finishes, listeners);
    }
  } else {
    run_with_savepoints(conn, batch, finishes, listeners);
  }
  match exec_cached(conn, "COMMIT") {
    Ok(()) => Ok(()),
    Err(e) => {
      let _ = conn.execute_batch("ROLLBACK");
      Err(e)
    }
  }
}

/// Runs each unit of work of `batch` inside its own savepoint of the open transaction.
fn run_with_savepoints(
  conn: &Connection,
  batch: &mut Vec<WriteJob>,
  finishes: &mut Vec<Finish>,
  listeners: &Listeners,
) {
  for work in batch.drain(..) {
    match exec_cached(conn, "SAVEPOINT job") {
      Err(e) => finishes.push(run_write(Err(&e), work, listeners).1),
      Ok(()) => {
        let (ok, finish) = run_write(Ok(conn), work, listeners);
        if !ok {
          let _ = exec_cached(conn, "ROLLBACK TO job");
        }
        let _ = exec_cached(conn, "RELEASE job");
        finishes.push(finish);
      }
    }
  }
}

/// Fails every unit of work of `batch` with `e` (the transaction could not begin).
fn fail_all(
  batch: &mut Vec<WriteJob>,
  finishes: &mut Vec<Finish>,
  listeners: &Listeners,
  e: &Error,
) {
  for work in batch.drain(..) {
    finishes.push(run_write(Err(e), work, listeners).1);
  }
}

fn writer_loop(
  conn: &Mutex<Option<Connection>>,
  rx: Receiver<WriteJob>,
  listeners: Arc<Listeners>,
  unfinished: &AtomicUsize,
) {
  let mut batch: Vec<WriteJob> = Vec::with_capacity(MAX_BATCH);
  let mut finishes: Vec<Finish> = Vec::with_capacity(MAX_BATCH);
  let lock = || conn.lock().unwrap_or_else(|p| p.into_inner());
  while let Ok(first) = rx.recv() {
    batch.push(first);
    while batch.len() < MAX_BATCH {
      match rx.try_recv() {
        Ok(job) => batch.push(job),
        Err(_) => break,
      }
    }
    let taken = batch.len();
    let outcome = match lock().as_ref() {
      Some(c) => commit_batch(c, &mut batch, &mut finishes, &listeners),
      None => {
        let e = Error::closed();
        fail_all(&mut batch, &mut finishes, &listeners, &e);
        Err(e)
      }
    };
    for finish in finishes.iter_mut() {
      finish.deliver_events(&outcome, &listeners);
    }
    // Committed (or failed) and their events handed to the subscribers: a point write may run
    // on its caller's thread from now on, even as soon as these are answered, without
    // overtaking them or their events.
    unfinished.fetch_sub(taken, Ordering::Relaxed);
    for finish in finishes.drain(..) {
      finish.run(&outcome, &listeners);
    }
  }
  // Every sender is gone: fold the WAL into the database file and close. The checkpoint is
  // explicit because other connections on the file (the token verifier's) may outlive this one,
  // and SQLite only checkpoints by itself when the last connection closes.
  let last = lock().take();
  if let Some(conn) = last {
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    let _ = conn.close();
  }
}

/// One job in a transaction of its own (`Db::write_now`): how it ran, and the commit's outcome
/// (`Ok` also when the job failed: its changes were rolled back and it answers its own error).
/// Gives the job back when the transaction could not begin.
fn commit_alone(
  conn: &Connection,
  job: Box<dyn Job>,
  listeners: &Listeners,
) -> std::result::Result<(Finish, Result<()>), Box<dyn Job>> {
  if exec_cached(conn, "BEGIN IMMEDIATE").is_err() {
    return Err(job);
  }
  let (ok, finish) = run_write(Ok(conn), WriteJob::Job(job), listeners);
  let outcome = if ok {
    exec_cached(conn, "COMMIT")
  } else {
    Ok(())
  };
  if !ok || outcome.is_err() {
    let _ = conn.execute_batch("ROLLBACK");
  }
  Ok((finish, outcome))
}

/// The SQLite implementation of the store traits.
pub struct SqliteStore {
  db: Arc<Db>,
  sealer: Arc<Sealer>,
  path: String,
}

impl SqliteStore {
  pub fn open(config: StoreConfig, sealer: Arc<Sealer>) -> Pending<SqliteStore> {
    let path = config.path.clone();
    let opened = Db::open(config);
    let (answer, pending) = Pending::channel();
    // Db::open answers from its writer thread; map its result without blocking the caller.
    let _ = std::thread::Builder::new()
      .name("linkvault-open".into())
      .spawn(move || {
        let r = opened.wait().map(|db| SqliteStore {
          path: if is_memory(&path) {
            path
          } else {
            db.read_path().to_string()
          },
          db,
          sealer,
        });
        let _ = answer.send(r);
      });
    pending
  }

  /// Runs a write job on this store's engine (used by the modules that add tables).
  pub fn write<T, F>(&self, f: F) -> Pending<T>
  where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
  {
    self.db.write(f)
  }

  pub fn read<T, F>(&self, f: F) -> Pending<T>
  where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
  {
    self.db.read(f)
  }

  pub fn sealer(&self) -> Arc<Sealer> {
    self.sealer.clone()
  }

  /// The database path other connections open (`:memory:` for a private in-memory database;
  /// the immutable-snapshot URI of a read-only file).
  pub fn path(&self) -> &str {
    &self.path
  }

  /// The engine itself, for components that queue their own jobs (the token verifier; a read
  /// that notices an expired consent queues the write that records it).
  pub fn engine(&self) -> Arc<Db> {
    self.db.clone()
  }
}

impl Engine for SqliteStore {
  fn write_job(&self, job: Box<dyn Job>) {
    self.db.write_job(job)
  }

  fn read_job(&self, job: Box<dyn Job>) {
    self.db.read_job(job)
  }

  fn read_point_job(&self, job: Box<dyn Job>) {
    self.db.read_point_job(job)
  }

  fn write_point_job(&self, job: Box<dyn Job>) {
    self.db.write_point_job(job)
  }

  fn is_read_only(&self) -> bool {
    self.db.is_read_only()
  }

  fn is_closed(&self) -> bool {
    self.db.is_closed()
  }

  fn listeners(&self) -> &Arc<Listeners> {
    self.db.listeners()
  }

  fn token_feed(&self, scope: &Scope, sealer: Arc<Sealer>) -> Result<Box<dyn Feed>> {
    if is_memory(&self.path) {
      Ok(Box::new(verifier::MemoryFeed::open(
        self.db.clone(),
        scope,
        sealer,
      )?))
    } else {
      Ok(Box::new(verifier::FileFeed::open(
        &self.path, scope, sealer,
      )?))
    }
  }

  fn close(&self) -> Pending<()> {
    self.db.close()
  }

  fn usage(&self) -> super::Usage {
    self.file_usage()
  }

  fn backup(&self, dest: std::path::PathBuf) -> Pending<BackupInfo> {
    self.backup_file(dest)
  }
}

impl Store for SqliteStore {}

impl From<rusqlite::Error> for Error {
  fn from(e: rusqlite::Error) -> Self {
    // SQLite messages carry no bound parameter values, so no secret can leak through them.
    // The common environmental failures get a message that says what happened and what it
    // means for the data; the SQLite text follows for diagnosis.
    use rusqlite::ErrorCode as C;
    let hint = match &e {
      rusqlite::Error::SqliteFailure(f, _) => match f.code {
        C::ReadOnly => Some(
          "the database is read-only (the file or its directory is not writable): the write was \
           refused and nothing changed; reads still work",
        ),
        C::DiskFull => Some(
          "the disk is full (or the process file-size limit was reached): the write was not \
           saved; data committed earlier is intact",
        ),
        C::SystemIoFailure => Some(
          "an I/O error occurred while accessing the database file (disk full, file-size limit \
           or device error?): the operation was not saved; data committed earlier is intact",
        ),
        C::CannotOpen => {
          Some("cannot open the database file (check that its directory exists and is accessible)")
        }
        C::DatabaseCorrupt | C::NotADatabase => {
          Some("the database file is damaged or is not a linkvault database")
        }
        C::DatabaseBusy | C::DatabaseLocked => {
          Some("the database stayed locked by another connection for too long")
        }
        C::PermissionDenied => Some("permission denied on the database file"),
        _ => None,
      },
      _ => None,
    };
    match hint {
      Some(h) => Error::storage(format!("storage error: {h} ({e})")),
      None => Error::storage(format!("storage error: {e}")),
    }
  }
}

#[cfg(test)]
mod tests {
  use serde_json::json;

  use super::*;
  use crate::client::{OpenOptions, Vault};
  use crate::crypto::Key;

  fn temp() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db").to_string_lossy().to_string();
    (dir, path)
  }

  /// A batch runs without savepoints until a job fails; then it runs again with one savepoint
  /// per job. Either way a failing job leaves nothing behind and the others commit, in order,
  /// each seeing the ones before it.
  #[test]
  fn a_failing_job_in_a_batch_undoes_only_its_own_changes() {
    use crate::domain::accounts::AccountRow;
    let (_d, path) = temp();
    let sealer = Arc::new(Sealer::new(Key::from_bytes([7; 32])));
    let config = StoreConfig {
      path: path.clone(),
      durability: Durability::Normal,
      readers: 1,
    };
    let db = SqliteStore::open(config, sealer).wait().unwrap();
    let scope: i64 = db
      .write(|c| {
        c.execute(
          "INSERT INTO scopes (org_id, environment) VALUES ('o', 'test')",
          [],
        )?;
        Ok(c.last_insert_rowid())
      })
      .wait()
      .unwrap();
    let row = |id: &str| AccountRow {
      pk: 0,
      oid: format!("oid-{id}"),
      name: None,
      has_app: false,
      app_id: None,
      credentials: None,
      created_at: 1,
      updated_at: 1,
      version: 0,
      account_id: id.to_string(),
      end_user: Default::default(),
    };
    // Each round holds the writer with a closure so that the jobs queued behind it form one
    // batch: (the id each job inserts, whether it then fails).
    let rounds: [&[(&str, bool)]; 4] = [
      &[("a1", false), ("a2", true), ("a3", false), ("a4", false)],
      &[("b1", true)],
      &[("c1", false), ("c2", false), ("c3", true)],
      &[("d1", true), ("d2", false), ("d1", false)],
    ];
    let mut committed = 0;
    for jobs in rounds {
      let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
      let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
      let held = db.write(move |_| {
        let _ = started_tx.send(());
        let _ = go_rx.recv();
        Ok(())
      });
      started_rx.recv().unwrap();
      let pending: Vec<_> = jobs
        .iter()
        .map(|&(id, fails)| {
          let r = row(id);
          crate::store::write(&db, move |tx: &mut dyn Tx| {
            let pk = tx.insert_account(scope, &r)?;
            if fails {
              return Err(Error::validation("x", "this job fails after writing"));
            }
            // The job sees every earlier job of its batch.
            Ok((pk, tx.count_accounts(scope, &Default::default())?))
          })
        })
        .collect();
      go_tx.send(()).unwrap();
      held.wait().unwrap();
      for (&(id, fails), p) in jobs.iter().zip(pending) {
        match p.wait() {
          Ok((_, seen)) => {
            committed += 1;
            assert!(!fails, "{id}");
            assert_eq!(seen, committed, "{id} sees the jobs committed before it");
          }
          Err(e) => assert!(
            fails && e.message.contains("fails after writing"),
            "{id}: {}",
            e.message
          ),
        }
      }
    }
    let conn = Connection::open(&path).unwrap();
    let ids: Vec<String> = conn
      .prepare("SELECT account_id FROM accounts ORDER BY pk")
      .unwrap()
      .query_map([], |r| r.get(0))
      .unwrap()
      .collect::<rusqlite::Result<_>>()
      .unwrap();
    assert_eq!(ids, ["a1", "a3", "a4", "c1", "c2", "d2", "d1"]);
  }

  /// Every kind of call ends its transaction and resets its statements: a reader left in a
  /// snapshot (or a statement left un-reset, which keeps one open) would stop checkpoints from
  /// reusing the WAL, and the WAL would grow without bound.
  #[test]
  fn calls_leave_no_snapshot_open_so_the_wal_can_be_checkpointed() {
    let (_d, path) = temp();
    let mut o = OpenOptions::parse(Some(&json!({"path": path, "orgId": "org_1"}))).unwrap();
    o.encryption_key = Some(Key::from_bytes([7; 32]));
    let v = Vault::open(o).wait().unwrap();
    for i in 0..20 {
      let payload = json!({"linked_account_id": format!("u{i}"), "name": "N", "udf": {"plan": "pro", "seats": i},
        "your_app": {"app_id": "app", "auth_credentials": {"Authorization": "Bearer x"}}});
      v.upsert_linked_account(&payload, None).wait().unwrap();
      let update = json!({"linked_account_id": format!("u{i}"), "udf": {"seats": i + 1}});
      v.upsert_linked_account(&update, None).wait().unwrap();
    }
    for i in 0..20 {
      v.get_linked_account_by_id(&json!(format!("u{i}")))
        .wait()
        .unwrap();
      v.get_linked_account_credentials(&json!(format!("u{i}")))
        .wait()
        .unwrap();
    }
    assert!(v.get_linked_account_by_id(&json!("nobody")).wait().is_err());
    let page = v
      .list_linked_accounts(Some(&json!({"limit": 5})))
      .wait()
      .unwrap();
    assert_eq!(page.docs.len(), 5);
    v.list_linked_accounts(Some(&json!({"udf": {"plan": "pro"}, "search": "u1"})))
      .wait()
      .unwrap();
    v.get_all_linked_accounts(Some(&json!({"page": 2, "limit": 3})))
      .wait()
      .unwrap();
    v.list_events(Some(&json!({"limit": 10}))).wait().unwrap();
    v.link_identity(
      &json!("u1"),
      &json!({"provider": "github", "user_id": "1", "email": "a@example.com"}),
    )
    .wait()
    .unwrap();
    v.get_linked_accounts_by_email(&json!("a@example.com"))
      .wait()
      .unwrap();
    let issued = v
      .get_token_for_linked_account(&json!({"linked_account_id": "u2"}))
      .wait()
      .unwrap();
    v.verify_session_token(&issued.token).unwrap();
    v.delete_linked_account(&json!("u3")).wait().unwrap();
    v.verify_session_token(&issued.token).unwrap();

    // With the client still open and idle, another connection checkpoints the whole WAL and
    // truncates it: no connection of the client holds a snapshot.
    let other = Connection::open(&path).unwrap();
    other.busy_timeout(Duration::from_secs(5)).unwrap();
    let (busy, log, done): (i64, i64, i64) = other
      .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
      })
      .unwrap();
    assert_eq!((busy, log, done), (0, 0, 0));
    let wal = std::fs::metadata(format!("{path}-wal")).unwrap().len();
    assert_eq!(wal, 0);
    drop(other);
    v.close().wait().unwrap();
  }

  /// A second engine on the file of a client that wrote `u1` (a `Db` whose fields the tests
  /// can reach), and the client.
  fn engine_beside_a_client(path: &str) -> (Vault, SqliteStore) {
    let mut o = OpenOptions::parse(Some(&json!({"path": path, "orgId": "org_1"}))).unwrap();
    o.encryption_key = Some(Key::from_bytes([7; 32]));
    let v = Vault::open(o).wait().unwrap();
    v.upsert_linked_account(&json!({"linked_account_id": "u1"}), None)
      .wait()
      .unwrap();
    let config = StoreConfig {
      path: path.to_string(),
      durability: Durability::Normal,
      readers: 1,
    };
    let sealer = Arc::new(Sealer::new(Key::from_bytes([7; 32])));
    (v, SqliteStore::open(config, sealer).wait().unwrap())
  }

  /// The scope's id, by a point read, and whether it ran on the calling thread.
  fn scope_read_where(s: &SqliteStore) -> Pending<(bool, Option<i64>)> {
    let caller = std::thread::current().id();
    crate::store::read_point(s, move |tx| {
      let here = std::thread::current().id() == caller;
      Ok((here, tx.scope_id("org_1", "test")?))
    })
  }

  /// The scope's id, by a point read.
  fn scope_read(s: &SqliteStore) -> Pending<Option<i64>> {
    crate::store::read_point(s, |tx| tx.scope_id("org_1", "test"))
  }

  /// A point read that must run on the calling thread (answered before it returns).
  fn inline_read(s: &SqliteStore) -> Option<i64> {
    let (here, id) = scope_read_where(s)
      .try_take()
      .ok()
      .expect("answered at once")
      .unwrap();
    assert!(here, "ran on the calling thread");
    id
  }

  /// A point read that must run on a reader thread (it may be answered before it returns).
  fn queued_read(s: &SqliteStore) -> Pending<(bool, Option<i64>)> {
    scope_read_where(s)
  }

  /// Waits for a read made by [`queued_read`] and checks it ran on a reader thread.
  fn answered_elsewhere(p: Pending<(bool, Option<i64>)>) -> Option<i64> {
    let (here, id) = p.wait().unwrap();
    assert!(!here, "ran on a reader thread");
    id
  }

  /// A point read runs on the calling thread only when the inline connection is free at once:
  /// while another thread holds it, the read goes to a reader thread and still answers; once
  /// closed, it fails with CLIENT_CLOSED as every read does.
  #[test]
  fn a_point_read_never_waits_for_the_inline_connection() {
    let (_d, path) = temp();
    let (v, s) = engine_beside_a_client(&path);
    let id = inline_read(&s);
    assert!(id.is_some());
    let held = s.db.inline.lock().unwrap();
    // The inline connection was held: a reader thread answers.
    let later = queued_read(&s);
    assert_eq!(answered_elsewhere(later), id);
    drop(held);
    assert_eq!(inline_read(&s), id);
    s.close().wait().unwrap();
    assert_eq!(scope_read(&s).wait().unwrap_err().code(), "CLIENT_CLOSED");
    v.close().wait().unwrap();
  }

  /// Point reads run on the calling thread at most `INLINE_STREAK` in a row (so that awaiting
  /// them lets the event loop turn), and not while another waits for a reader thread.
  #[test]
  fn point_reads_go_to_a_reader_thread_after_a_streak_or_behind_a_queued_one() {
    let (_d, path) = temp();
    let (v, s) = engine_beside_a_client(&path);
    let id = inline_read(&s);
    for _ in 1..INLINE_STREAK {
      assert_eq!(inline_read(&s), id);
    }
    // The streak is over.
    assert_eq!(answered_elsewhere(queued_read(&s)), id);
    // A reader thread answered it alone: a new streak starts.
    assert_eq!(inline_read(&s), id);
    // While one waits for a reader thread, the next ones wait too. (The only reader thread is
    // kept busy until `go`, and the inline connection held while the first read is made.)
    s.db
      .point_reads
      .streak
      .store(INLINE_STREAK - 1, Ordering::Relaxed);
    let (go, wait) = crossbeam_channel::bounded::<()>(0);
    let busy = s.read(move |_| wait.recv().map_err(|_| Error::closed()));
    let held = s.db.inline.lock().unwrap();
    let first = queued_read(&s);
    drop(held);
    // Behind a queued one.
    let next: Vec<_> = (0..4).map(|_| queued_read(&s)).collect();
    go.send(()).unwrap();
    busy.wait().unwrap();
    assert_eq!(answered_elsewhere(first), id);
    for p in next {
      assert_eq!(answered_elsewhere(p), id);
    }
    // They were answered together, not alone (calls in flight): the streak goes on.
    let streak = s.db.point_reads.streak.load(Ordering::Relaxed);
    assert_eq!(streak, INLINE_STREAK - 1);
    assert_eq!(inline_read(&s), id);
    // The streak is over.
    assert_eq!(answered_elsewhere(queued_read(&s)), id);
    assert_eq!(inline_read(&s), id);
    s.close().wait().unwrap();
    v.close().wait().unwrap();
  }

  /// A point read that meets a lock held by another connection (the inline connection's busy
  /// handler fired) is not retried on the calling thread (Node's), which would wait: its
  /// result is discarded and it runs again, from the start, on a reader thread, which waits
  /// the lock out. (A job standing in for SQLite here sets the flag the busy handler sets.)
  #[test]
  fn a_point_read_that_meets_a_lock_runs_again_on_a_reader_thread() {
    let (_d, path) = temp();
    let (v, s) = engine_beside_a_client(&path);
    let flag = s
      .db
      .inline
      .lock()
      .unwrap()
      .as_ref()
      .unwrap()
      .met_a_lock
      .clone();
    let caller = std::thread::current().id();
    let mut runs = 0;
    let read = crate::store::read_point(&s, move |tx| {
      runs += 1;
      if runs == 1 {
        flag.store(true, Ordering::Relaxed);
        return Err(Error::storage("storage error: database is locked"));
      }
      let elsewhere = std::thread::current().id() != caller;
      Ok((runs, elsewhere, tx.scope_id("org_1", "test")?))
    });
    let (runs, elsewhere, id) = read.wait().unwrap();
    assert_eq!((runs, elsewhere), (2, true));
    assert!(id.is_some());
    // The next read runs on the calling thread again.
    assert_eq!(inline_read(&s), id);
    s.close().wait().unwrap();
    v.close().wait().unwrap();
  }

  /// Keeps the writer thread busy, from the moment it has started, until the returned sender
  /// sends; the pending is that busy job's answer.
  fn hold_writer(s: &SqliteStore) -> (crossbeam_channel::Sender<()>, Pending<()>) {
    let (go, wait) = crossbeam_channel::bounded::<()>(0);
    let (started_tx, started) = crossbeam_channel::bounded::<()>(1);
    let busy = s.write(move |_| {
      let _ = started_tx.send(());
      wait.recv().map_err(|_| Error::closed())
    });
    started.recv().unwrap();
    (go, busy)
  }

  /// Puts `value` under the meta key "t" by a point write; whether it ran on the calling thread.
  fn meta_write_where(s: &SqliteStore, value: &str) -> Pending<bool> {
    let caller = std::thread::current().id();
    let value = value.to_string();
    crate::store::write_point(s, move |tx| {
      tx.meta_put("t", value.as_bytes())?;
      Ok(std::thread::current().id() == caller)
    })
  }

  /// A point write that must run on the calling thread (answered before it returns).
  fn inline_write(s: &SqliteStore, value: &str) {
    let here = meta_write_where(s, value)
      .try_take()
      .ok()
      .expect("answered at once")
      .unwrap();
    assert!(here, "ran on the calling thread");
  }

  /// Waits for a point write and checks it ran on the writer thread.
  fn written_elsewhere(p: Pending<bool>) {
    assert!(!p.wait().unwrap(), "ran on the writer thread");
  }

  fn meta_t(s: &SqliteStore) -> Option<String> {
    crate::store::read(s, |tx| tx.meta_get("t"))
      .wait()
      .unwrap()
      .map(|v| String::from_utf8(v).unwrap())
  }

  /// A point write runs on the calling thread while the writer has nothing to do; behind a
  /// write the writer has not committed yet it is queued too, so that writes commit in the
  /// order they were made. A failing one changes nothing and answers its own error.
  #[test]
  fn point_writes_run_on_the_calling_thread_only_when_no_write_is_unfinished() {
    let (_d, path) = temp();
    let (v, s) = engine_beside_a_client(&path);
    inline_write(&s, "1");
    assert_eq!(meta_t(&s).as_deref(), Some("1"));
    // The writer thread is kept busy until `go`.
    let (go, busy) = hold_writer(&s);
    let second = meta_write_where(&s, "2");
    let third = meta_write_where(&s, "3");
    go.send(()).unwrap();
    busy.wait().unwrap();
    written_elsewhere(second);
    written_elsewhere(third);
    assert_eq!(meta_t(&s).as_deref(), Some("3"));
    inline_write(&s, "4");
    let failed = crate::store::write_point(&s, |tx| -> Result<()> {
      tx.meta_put("t", b"5")?;
      Err(Error::validation("t", "refused"))
    })
    .try_take()
    .ok()
    .expect("answered at once");
    assert_eq!(failed.unwrap_err().code(), "VALIDATION_ERROR");
    assert_eq!(meta_t(&s).as_deref(), Some("4"));
    s.close().wait().unwrap();
    let closed = crate::store::write_point(&s, |tx| tx.meta_put("t", b"6"));
    assert_eq!(closed.wait().unwrap_err().code(), "CLIENT_CLOSED");
    v.close().wait().unwrap();
  }

  /// A point write that meets a write lock held by another process does not wait on the
  /// calling thread (Node's): it runs again on the writer thread, which waits the lock out.
  #[test]
  fn a_point_write_never_waits_for_a_lock_held_elsewhere() {
    let (_d, path) = temp();
    let (v, s) = engine_beside_a_client(&path);
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let write = meta_write_where(&s, "1");
    // Returned without waiting for the lock (SQLite's busy timeout is 5 s) and not answered.
    assert!(started.elapsed() < BUSY_TIMEOUT / 2);
    let write = match write.try_take() {
      Ok(r) => panic!("answered while the lock was held: {r:?}"),
      Err(p) => p,
    };
    other.execute_batch("COMMIT").unwrap();
    written_elsewhere(write);
    assert_eq!(meta_t(&s).as_deref(), Some("1"));
    // The next one runs on the calling thread again.
    inline_write(&s, "2");
    s.close().wait().unwrap();
    v.close().wait().unwrap();
  }

  /// Point writes run on the calling thread at most `INLINE_WRITE_STREAK` in a row; with the WAL due
  /// for a checkpoint, or with durability 'full' (an fsync per commit), on the writer thread.
  #[test]
  fn point_writes_go_to_the_writer_after_a_streak_a_full_wal_or_with_full_durability() {
    let (_d, path) = temp();
    let (v, s) = engine_beside_a_client(&path);
    for i in 0..INLINE_WRITE_STREAK {
      inline_write(&s, &i.to_string());
    }
    written_elsewhere(meta_write_where(&s, "streak over"));
    // The writer answered it alone: a new streak starts.
    inline_write(&s, "again");
    s.db
      .write_flags
      .wal_frames
      .store(CHECKPOINT_PAGES, Ordering::Relaxed);
    written_elsewhere(meta_write_where(&s, "checkpoint"));
    // The writer's commit counted the WAL again (it was not that large).
    assert!(s.db.write_flags.wal_frames.load(Ordering::Relaxed) < CHECKPOINT_PAGES);
    inline_write(&s, "after");
    // Two calls in flight together: answered, but neither alone, so the streak goes on. (Many
    // calls in flight go to the writer, which commits them together.)
    s.db
      .point_writes
      .streak
      .store(INLINE_WRITE_STREAK, Ordering::Relaxed);
    // (The writer thread is kept busy until `go`, so that the first cannot be answered before
    // the second is made.)
    let (go, busy) = hold_writer(&s);
    let first = meta_write_where(&s, "a");
    let second = meta_write_where(&s, "b");
    go.send(()).unwrap();
    busy.wait().unwrap();
    written_elsewhere(first);
    written_elsewhere(second);
    written_elsewhere(meta_write_where(&s, "c"));
    // That one was alone: a new streak starts.
    inline_write(&s, "d");
    s.close().wait().unwrap();
    let config = StoreConfig {
      path: path.clone(),
      durability: Durability::Full,
      readers: 1,
    };
    let sealer = Arc::new(Sealer::new(Key::from_bytes([7; 32])));
    let full = SqliteStore::open(config, sealer).wait().unwrap();
    written_elsewhere(meta_write_where(&full, "full"));
    written_elsewhere(meta_write_where(&full, "full again"));
    full.close().wait().unwrap();
    v.close().wait().unwrap();
  }

  /// `stats().write_queue`: the writes queued behind a busy writer thread, none once idle.
  #[test]
  fn write_queue_counts_the_writes_not_yet_taken() {
    let (_d, path) = temp();
    let (v, s) = engine_beside_a_client(&path);
    assert_eq!(s.usage().write_queue, 0);
    // The writer runs the busy job: the rest stay queued behind it.
    let (go, busy) = hold_writer(&s);
    let queued: Vec<_> = (0..5)
      .map(|i| crate::store::write(&s, move |tx| tx.meta_put("t", i.to_string().as_bytes())))
      .collect();
    let point = meta_write_where(&s, "point");
    assert_eq!(s.usage().write_queue, 6);
    go.send(()).unwrap();
    busy.wait().unwrap();
    for w in queued {
      w.wait().unwrap();
    }
    written_elsewhere(point);
    assert_eq!(s.usage().write_queue, 0);
    s.close().wait().unwrap();
    v.close().wait().unwrap();
  }
}

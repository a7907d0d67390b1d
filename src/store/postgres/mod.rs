//! The PostgreSQL engine: many processes on many hosts share one database.
//!
//! **Connections.** `poolSize` worker threads each own one connection, driven by a runtime of
//! the same thread (a query costs no thread hop), and take jobs from one queue. A connection
//! that broke (the server restarted) is replaced before the worker's next job, so calls after
//! the server is back succeed without reopening the client. One more connection per client
//! listens for revocation notifications (see `feed`).
//!
//! **Transactions.** A write job runs in a `SERIALIZABLE` transaction: concurrent jobs, in this
//! process or any other, behave as if they ran one after another, which is what the rules
//! (written once, in `domain`) assume and what SQLite gives. A serialization failure or
//! deadlock (40001, 40P01) rolls back and runs the job again on a fresh transaction (jobs are
//! re-runnable and have no effect outside it), at least [`MAX_ATTEMPTS`] times and for as long
//! as [`RETRY_BUDGET`] allows; callers never see it. (Under SERIALIZABLE, concurrent inserts of
//! neighbouring keys conflict through PostgreSQL's page-level predicate locks even when the rows
//! differ: a burst of hundreds of writes can need many retries, as measured by the 500-upsert
//! seeds of the test suites.) Reads run in `REPEATABLE READ READ ONLY` (one snapshot, never a
//! conflict), except a read the rules answer with one statement (`Engine::read_point_job`, such as
//! `getLinkedAccountById`): it runs alone, without `BEGIN` and `COMMIT`, a statement being its
//! own snapshot; should it send a second statement it is run again in a read transaction.
//! Statements whose result the rules do not need are pipelined with the next read or with the
//! commit (`conn::PgTx`).
//!
//! **Ordering.** Event ids and revocation-log numbers are the writing transaction's id times
//! 65536 plus a serial ([`XID_ID`]), and readers stop at the oldest running transaction, so
//! nothing committed late is skipped (`events`, `tokens`).
//!
//! **Loss of the server.** Connecting waits at most the URL's `connect_timeout` (default 5 s);
//! a round trip without an answer fails after `conn::ROUND_TRIP_TIMEOUT` (30 s). Both fail the
//! call with `STORAGE_ERROR` (status 503). A write whose commit was not confirmed is reported as
//! failed and not retried (it may have been saved; nothing acknowledged is ever lost).

mod accounts;
mod admin;
mod apikeys;
mod conn;
mod consents;
mod events;
mod feed;
mod identities;
mod keys;
mod schema;
mod target;
#[cfg(test)]
pub(crate) mod tests;
mod tokens;
mod webhooks;

pub use target::Target;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

use self::conn::{Failure, Mode, PgConn, PgTx};
use self::feed::Feeds;
use super::{Engine, Job, Listeners, Pending, Scope, Store};
use crate::crypto::Sealer;
use crate::domain::tokens::verifier::Feed;
use crate::error::{Error, Result};

/// Runs of one write job that are always allowed (the first and the retries after conflicts).
pub const MAX_ATTEMPTS: u32 = 50;
/// How long a write job keeps being retried after conflicts once [`MAX_ATTEMPTS`] are spent.
pub const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// Longest a read waits for older transactions to end before it returns what is safe.
pub const HORIZON_WAIT: Duration = Duration::from_secs(1);
/// Default `poolSize`.
pub const DEFAULT_POOL_SIZE: usize = 10;
/// Largest `poolSize`.
pub const MAX_POOL_SIZE: usize = 100;
/// Default `schema`.
pub const DEFAULT_SCHEMA: &str = "linkvault";

/// SQL for an id numbered by the writing transaction: add a serial below 65536.
pub(crate) const XID_ID: &str = "(pg_current_xact_id()::text::bigint * 65536)";
/// Serials per transaction.
pub(crate) const XID_SERIALS: i64 = 65535;
/// The channel token-epoch changes are announced on (payload: schema and scope id).
pub(crate) const NOTIFY_CHANNEL: &str = "linkvault_tokens";

pub(crate) fn notify_payload(schema: &str, scope_id: i64) -> String {
  format!("{schema} {scope_id}")
}

/// `"name"`, for identifiers that cannot be parameters.
pub(crate) fn quote_ident(s: &str) -> String {
  format!("\"{}\"", s.replace('"', "\"\""))
}

/// Whether `name` is acceptable as the `schema` option.
pub fn valid_schema(name: &str) -> bool {
  let mut chars = name.chars();
  matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    && name.len() <= 63
}

enum Work {
  Write(Box<dyn Job>),
  Read(Box<dyn Job>),
  ReadOne(Box<dyn Job>),
}

struct Inner {
  target: Target,
  queue: RwLock<Option<Sender<Work>>>,
  workers: Mutex<Vec<JoinHandle<()>>>,
  listeners: Arc<Listeners>,
  feeds: Arc<Feeds>,
}

/// A linkvault store on a PostgreSQL schema.
pub struct PgStore {
  inner: Arc<Inner>,
}

impl PgStore {
  /// Connects, creates or migrates the schema, and starts the workers and the listener.
  /// Blocking: call it off Node's thread.
  pub fn open(target: Target, pool_size: usize) -> Result<PgStore> {
    let mut first = PgConn::connect(&target)?;
    schema::migrate(&mut first)?;
    let (tx, rx) = unbounded::<Work>();
    let listeners = Arc::new(Listeners::default());
    let feeds = Arc::new(Feeds::default());
    let mut workers = Vec::with_capacity(pool_size);
    let mut first = Some(first);
    for i in 0..pool_size.max(1) {
      let (rx, target, listeners, feeds) =
        (rx.clone(), target.clone(), listeners.clone(), feeds.clone());
      let conn = first.take();
      let h = std::thread::Builder::new()
        .name(format!("linkvault-pg-{i}"))
        .spawn(move || worker_loop(conn, target, rx, listeners, feeds))
        .map_err(|e| Error::storage(format!("cannot start a worker thread: {e}")))?;
      workers.push(h);
    }
    feeds.start_listener(target.clone())?;
    Ok(PgStore {
      inner: Arc::new(Inner {
        target,
        queue: RwLock::new(Some(tx)),
        workers: Mutex::new(workers),
        listeners,
        feeds,
      }),
    })
  }

  fn send(&self, work: Work) {
    let sent = match self.inner.queue.read() {
      Ok(g) => match g.as_ref() {
        Some(q) => q.send(work).map_err(|e| e.0),
        None => Err(work),
      },
      Err(_) => Err(work),
    };
    if let Err(Work::Write(job) | Work::Read(job) | Work::ReadOne(job)) = sent {
      job.finish(Err(Error::closed()));
    }
  }
}

/// A worker: one connection, jobs one at a time.
fn worker_loop(
  mut conn: Option<PgConn>,
  target: Target,
  rx: Receiver<Work>,
  listeners: Arc<Listeners>,
  feeds: Arc<Feeds>,
) {
  while let Ok(work) = rx.recv() {
    if conn.as_ref().is_none_or(PgConn::is_closed) {
      conn = None;
      match PgConn::connect(&target) {
        Ok(c) => conn = Some(c),
        Err(e) => {
          let (Work::Write(job) | Work::Read(job) | Work::ReadOne(job)) = work;
          job.finish(Err(e));
          continue;
        }
      }
    }
    let Some(c) = conn.as_mut() else { continue };
    let again = match work {
      Work::Write(job) => run_write(c, job, &listeners, &feeds, true).map(Work::Write),
      Work::Read(job) => run_read(c, job, Mode::Read, true).map(Work::Read),
      Work::ReadOne(job) => run_read(c, job, Mode::ReadOne, true).map(Work::ReadOne),
    };
    // The connection broke before anything was committed (the server restarted since it was
    // last used): once more on a new connection.
    if let Some(work) = again {
      conn = None;
      match (PgConn::connect(&target), work) {
        (Ok(mut c), Work::Write(job)) => {
          let _ = run_write(&mut c, job, &listeners, &feeds, false);
          conn = Some(c);
        }
        (Ok(mut c), Work::Read(job)) => {
          let _ = run_read(&mut c, job, Mode::Read, false);
          conn = Some(c);
        }
        (Ok(mut c), Work::ReadOne(job)) => {
          let _ = run_read(&mut c, job, Mode::ReadOne, false);
          conn = Some(c);
        }
        (Err(e), Work::Write(job) | Work::Read(job) | Work::ReadOne(job)) => job.finish(Err(e)),
      }
    }
  }
}

/// A random pause before attempt `attempt + 1` (up to 0.5 ms doubling to 64 ms), so that
/// conflicting jobs do not collide again in step.
fn jitter(attempt: u32) -> Duration {
  let cap_us = (1u64 << attempt.min(7)) * 500;
  let r = crate::crypto::random_bytes::<8>().map_or(0, u64::from_le_bytes);
  Duration::from_micros(r % cap_us)
}

/// Runs a write job, retrying conflicts. Gives the job back, unfinished, when the connection
/// broke before the commit and `may_reconnect`.
fn run_write(
  conn: &mut PgConn,
  mut job: Box<dyn Job>,
  listeners: &Listeners,
  feeds: &Feeds,
  may_reconnect: bool,
) -> Option<Box<dyn Job>> {
  let started = Instant::now();
  let mut attempt = 0;
  let may_retry = |attempt: u32| attempt < MAX_ATTEMPTS || started.elapsed() < RETRY_BUDGET;
  loop {
    attempt += 1;
    let mut tx = PgTx::new(conn, Mode::Write);
    let ran = catch_unwind(AssertUnwindSafe(|| job.run(&mut tx)));
    let bumped = std::mem::take(&mut tx.bumped);
    let outcome = match ran {
      Err(_) => {
        tx.rollback();
        job.finish(Err(Error::storage("internal error while writing (panic)")));
        return None;
      }
      Ok(Err(_)) => {
        let failure = tx.failure();
        tx.rollback();
        match failure {
          Some(Failure::Conflict) if may_retry(attempt) => {
            std::thread::sleep(jitter(attempt));
            continue;
          }
          Some(Failure::Broken) if may_reconnect && attempt == 1 => return Some(job),
          // The job keeps its own error.
          _ => Ok(()),
        }
      }
      Ok(Ok(())) => match tx.commit() {
        Ok(events) => {
          listeners.deliver(&events);
          // The revoking client honours its revocation at once.
          for scope_id in bumped {
            feeds.load_scope(scope_id, conn);
          }
          Ok(())
        }
        Err((Failure::Conflict, _)) if may_retry(attempt) => {
          std::thread::sleep(jitter(attempt));
          continue;
        }
        Err((_, e)) => Err(e),
      },
    };
    job.finish(outcome);
    return None;
  }
}

/// Runs a read job in `mode` (`Read` or `ReadOne`), reading again while older transactions hide
/// committed events, and in a transaction if a `ReadOne` job needed more than one statement.
/// Gives the job back when the connection broke and `may_reconnect`.
fn run_read(
  conn: &mut PgConn,
  mut job: Box<dyn Job>,
  mut mode: Mode,
  may_reconnect: bool,
) -> Option<Box<dyn Job>> {
  let start = Instant::now();
  let mut attempt: u64 = 0;
  loop {
    attempt += 1;
    let mut tx = PgTx::new(conn, mode);
    let ran = catch_unwind(AssertUnwindSafe(|| job.run(&mut tx)));
    let wait = tx.horizon_wait;
    let failure = tx.failure();
    let outcome = match ran {
      Err(_) => {
        tx.rollback();
        Err(Error::storage("internal error while reading (panic)"))
      }
      Ok(_) => match tx.commit() {
        Ok(_) => Ok(()),
        Err((_, e)) => Err(e),
      },
    };
    if failure == Some(Failure::Broken) && may_reconnect && attempt == 1 {
      return Some(job);
    }
    if failure == Some(Failure::NeedsSnapshot) && mode == Mode::ReadOne {
      mode = Mode::Read;
      attempt = 0;
      continue;
    }
    if outcome.is_ok() && failure.is_none() && wait && start.elapsed() < HORIZON_WAIT {
      std::thread::sleep(Duration::from_millis(attempt.min(20)));
      continue;
    }
    job.finish(outcome);
    return None;
  }
}

impl Engine for PgStore {
  fn write_job(&self, job: Box<dyn Job>) {
    self.send(Work::Write(job));
  }

  fn read_job(&self, job: Box<dyn Job>) {
    self.send(Work::Read(job));
  }

  fn read_point_job(&self, job: Box<dyn Job>) {
    self.send(Work::ReadOne(job));
  }

  fn is_read_only(&self) -> bool {
    false
  }

  fn is_closed(&self) -> bool {
    self.inner.queue.read().map(|g| g.is_none()).unwrap_or(true)
  }

  fn listeners(&self) -> &Arc<Listeners> {
    &self.inner.listeners
  }

  fn token_feed(&self, scope: &Scope, sealer: Arc<Sealer>) -> Result<Box<dyn Feed>> {
    Ok(Box::new(self.inner.feeds.open(self, scope, sealer)?))
  }

  fn usage(&self) -> super::Usage {
    let write_queue = self
      .inner
      .queue
      .read()
      .ok()
      .and_then(|g| g.as_ref().map(|q| q.len() as u64))
      .unwrap_or(0);
    super::Usage {
      write_queue,
      ..super::Usage::default()
    }
  }

  fn close(&self) -> Pending<()> {
    let queue = self.inner.queue.write().ok().and_then(|mut g| g.take());
    if queue.is_none() {
      return Pending::ready(Ok(()));
    }
    drop(queue);
    let inner = self.inner.clone();
    let (answer, pending) = Pending::channel();
    let _ = std::thread::Builder::new()
      .name("linkvault-pg-close".into())
      .spawn(move || {
        // Workers finish the queued jobs, then their queue is closed and they end.
        let workers: Vec<JoinHandle<()>> = inner
          .workers
          .lock()
          .map(|mut w| w.drain(..).collect())
          .unwrap_or_default();
        for w in workers {
          let _ = w.join();
        }
        inner.feeds.stop();
        inner.listeners.clear();
        let _ = answer.send(Ok(()));
      });
    let _ = &self.inner.target;
    pending
  }
}

impl Store for PgStore {}

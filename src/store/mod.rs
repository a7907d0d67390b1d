//! Storage. An engine only persists: it runs jobs inside transactions and implements, over
//! its own connection, the row traits the rules declare (`domain::tokens::FamilyRows`,
//! `domain::keys::MetaRows`, `domain::events::EventLog`, ...), with no rule of its own. The
//! embedded SQLite engine (`sqlite`) is one; a server database implements the same traits.
//!
//! A [`Job`] is the unit of work: the client hands one to [`Engine::write_job`] or
//! [`Engine::read_job`], the engine runs it in a transaction and then tells it how the
//! transaction ended. A job may be run more than once (an engine that retries a transaction
//! after a conflict runs it again from the start, on a fresh transaction), so it must have no
//! effect outside its transaction; the events it appends (`EventLog::append_event`) are part
//! of the transaction and reach live subscribers ([`Listeners`]) only after the commit.

mod listeners;
mod pending;
pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use crate::crypto::Sealer;
use crate::domain::accounts::AccountRows;
use crate::domain::admin::AdminRows;
use crate::domain::apikeys::ApiKeyRows;
use crate::domain::consents::ConsentRows;
use crate::domain::events::EventLog;
use crate::domain::identities::IdentityRows;
use crate::domain::keys::KeyTx;
use crate::domain::scope::ScopeTx;
use crate::domain::tokens::verifier::Feed;
use crate::domain::tokens::TokenTx;
use crate::domain::webhooks::WebhookRows;
use crate::error::{Error, Result};

pub use crate::domain::Scope;
pub use listeners::{Listener, Listeners};
pub use pending::{Answer, Pending};
pub use postgres::PgStore;
pub use sqlite::{BackupInfo, Durability, SqliteStore, StoreConfig};

/// One transaction, as a job sees it: every row trait of the rules.
pub trait Tx:
  AccountRows
  + AdminRows
  + ApiKeyRows
  + ConsentRows
  + EventLog
  + IdentityRows
  + KeyTx
  + ScopeTx
  + TokenTx
  + WebhookRows
{
}

/// Work run inside one transaction.
pub trait Job: Send {
  /// Does the work. `Err` rolls the transaction (or the job's part of it) back. Called again
  /// from the start, on a fresh transaction, when the engine retries after a conflict: no effect
  /// outside `tx`.
  fn run(&mut self, tx: &mut dyn Tx) -> Result<()>;
  /// Called once, after the transaction ended, with how it ended (`Err` if it could not commit
  /// or the engine is closed). A job keeps its own result from `run`.
  fn finish(self: Box<Self>, outcome: Result<()>);
}

/// What every engine provides.
pub trait Engine: Send + Sync {
  /// Runs `job` in a write transaction. Its events reach the subscribers after the commit,
  /// before `finish`.
  fn write_job(&self, job: Box<dyn Job>);
  /// Runs a bounded write `job` (one account, one token family) as [`Engine::write_job`] does
  /// or cheaper: SQLite may run it in a transaction of its own on the calling thread before
  /// returning, when its writer has nothing to do and nothing would make it wait (Node's thread
  /// calls this: it must never block). The default is `write_job`.
  fn write_point_job(&self, job: Box<dyn Job>) {
    self.write_job(job)
  }
  /// Runs `job` in a read-only transaction (one consistent snapshot).
  fn read_job(&self, job: Box<dyn Job>);
  /// Runs a bounded read `job` (a point read by key, most often one statement) in one
  /// snapshot, as [`Engine::read_job`] does or cheaper: SQLite may run it to completion on the
  /// calling thread before returning, when its inline read connection is free at once (Node's
  /// thread calls this: it must never block); PostgreSQL runs it without BEGIN/COMMIT, each
  /// statement being its own snapshot, and runs it again in a transaction if it needs a second
  /// statement. The default is `read_job`.
  fn read_point_job(&self, job: Box<dyn Job>) {
    self.read_job(job)
  }
  /// Whether writes are impossible (a read-only SQLite file): opening then writes nothing.
  fn is_read_only(&self) -> bool;
  /// Whether `close` was called.
  fn is_closed(&self) -> bool;
  /// The live event subscribers (`onEvent`).
  fn listeners(&self) -> &Arc<Listeners>;
  /// What keeps a token verifier of `scope` fresh (see `domain::tokens::verifier`).
  fn token_feed(&self, scope: &Scope, sealer: Arc<Sealer>) -> Result<Box<dyn Feed>>;
  /// Finishes queued work and stops; later jobs finish with `CLIENT_CLOSED`.
  fn close(&self) -> Pending<()>;
  /// What `stats` reports of the engine itself, measured outside a transaction.
  fn usage(&self) -> Usage {
    Usage::default()
  }
  /// `backup(destPath)`: a consistent copy of the whole store at `dest`. Only a file engine
  /// can; a server database is backed up with its own tools.
  fn backup(&self, _dest: PathBuf) -> Pending<BackupInfo> {
    Pending::ready(Err(Error::validation(
      "destPath",
      "backup() copies a SQLite file; back up a PostgreSQL store with pg_dump",
    )))
  }
}

/// The engine's own figures in `stats` (see `domain::admin::Stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
  pub database_bytes: u64,
  pub wal_bytes: u64,
  pub write_queue: u64,
}

/// A job from a closure returning `T`: its result goes to a [`Pending`].
struct FnJob<T, F> {
  f: F,
  out: Option<Result<T>>,
  answer: Answer<T>,
}

impl<T, F> Job for FnJob<T, F>
where
  T: Send + 'static,
  F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
{
  fn run(&mut self, tx: &mut dyn Tx) -> Result<()> {
    let r = (self.f)(tx);
    let status = match &r {
      Ok(_) => Ok(()),
      Err(e) => Err(e.clone()),
    };
    self.out = Some(r);
    status
  }

  fn finish(self: Box<Self>, outcome: Result<()>) {
    let FnJob { out, answer, .. } = *self;
    let r = outcome.and_then(|()| out.unwrap_or_else(|| Err(Error::storage("job did not run"))));
    let _ = answer.send(r);
  }
}

fn job<T, F>(f: F) -> (Box<dyn Job>, Pending<T>)
where
  T: Send + 'static,
  F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
{
  let (answer, pending) = Pending::channel();
  (
    Box::new(FnJob {
      f,
      out: None,
      answer,
    }),
    pending,
  )
}

/// A job running `f`, handed to `send`; its result.
fn sent<T, F>(f: F, send: impl FnOnce(Box<dyn Job>)) -> Pending<T>
where
  T: Send + 'static,
  F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
{
  let (job, pending) = job(f);
  send(job);
  pending
}

/// Runs `f` in a write transaction of `engine`; its result once committed.
pub fn write<T, F>(engine: &(impl Engine + ?Sized), f: F) -> Pending<T>
where
  T: Send + 'static,
  F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
{
  sent(f, |job| engine.write_job(job))
}

/// Runs `f`, a bounded write, in a write transaction of `engine`: perhaps on the calling
/// thread ([`Engine::write_point_job`]; the result is then ready on return), else as [`write`]
/// does. Writes whose size depends on the data (cascades, rotations, pruning) use [`write`].
pub fn write_point<T, F>(engine: &(impl Engine + ?Sized), f: F) -> Pending<T>
where
  T: Send + 'static,
  F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
{
  sent(f, |job| engine.write_point_job(job))
}

/// Runs `f` in a read transaction of `engine`.
pub fn read<T, F>(engine: &(impl Engine + ?Sized), f: F) -> Pending<T>
where
  T: Send + 'static,
  F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
{
  sent(f, |job| engine.read_job(job))
}

/// Runs `f`, a bounded point read by key, in a read transaction of `engine`: perhaps on the
/// calling thread ([`Engine::read_point_job`]; the result is then ready on return, see
/// [`Pending::try_take`]), else as [`read`] does. Lists and pages use [`read`].
pub fn read_point<T, F>(engine: &(impl Engine + ?Sized), f: F) -> Pending<T>
where
  T: Send + 'static,
  F: FnMut(&mut dyn Tx) -> Result<T> + Send + 'static,
{
  sent(f, |job| engine.read_point_job(job))
}

/// A write whose changes must commit even when the call then fails: `f` returns `Ok(Err(e))`
/// to commit and fail with `e` (a detected refresh-token reuse revokes its family durably,
/// then fails with `TOKEN_REVOKED`).
pub fn write_committing_failure<T, F>(engine: &(impl Engine + ?Sized), f: F) -> Pending<T>
where
  T: Send + 'static,
  F: FnMut(&mut dyn Tx) -> Result<Result<T>> + Send + 'static,
{
  let (answer, pending) = Pending::channel();
  let (job, inner) = job(f);
  engine.write_job(job);
  inner.on_ready(move |r| {
    let _ = answer.send(r.and_then(|r| r));
  });
  pending
}

/// Everything a linkvault client needs from storage.
pub trait Store: Engine {}

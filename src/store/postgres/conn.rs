//! One PostgreSQL connection, owned by one thread, and the transaction a job runs on it.
//!
//! The connection's I/O is polled by a current-thread runtime owned by the same thread, inside
//! `block_on`: a query costs no hand-off between threads. Statements are prepared once per
//! connection and cached.
//!
//! [`PgTx`] pipelines: `BEGIN` and every write whose result a rule does not need (an `INSERT`
//! of an event, an `UPDATE` of a row already read) are queued and sent together with the next
//! read, or with `COMMIT`. A transaction that reads once and then writes costs two round trips.
//! A read of one statement ([`Mode::ReadOne`]) needs no transaction at all: a statement is its
//! own snapshot.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Connection, Row, Socket, Statement};

use super::target::{Target, TlsStream};
use crate::domain::events::Event;
use crate::error::{Error, Result};

/// Longest wait for one round trip. A call made while the server is unreachable fails with
/// `STORAGE_ERROR` after at most this (connecting has its own `CONNECT_TIMEOUT`).
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(30);

/// A query parameter owned by a queued write.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// A connection and the runtime that drives it.
pub struct PgConn {
  rt: Runtime,
  client: Client,
  statements: HashMap<String, Statement>,
  target: Target,
}

/// How a failed statement affects the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
  /// A serialization failure or deadlock (40001, 40P01): run the job again.
  Conflict,
  /// The connection is gone: reconnect before the next job.
  Broken,
  /// Anything else: the job fails.
  Other,
  /// A job run without a transaction ([`Mode::ReadOne`]) sent a second statement: run it again
  /// in a read transaction.
  NeedsSnapshot,
}

/// Maps a driver error to ours, saying whether it is a conflict or a lost connection. Server
/// messages carry no bound values, so no secret can leak through them.
pub fn classify(e: &tokio_postgres::Error, target: &Target) -> (Failure, Error) {
  if let Some(code) = e.code() {
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
      return (
        Failure::Conflict,
        Error::storage(format!(
          "storage error: transaction conflict ({})",
          code.code()
        )),
      );
    }
    // The server is going away or refuses connections for now (shutdown, restart, crash
    // recovery, connection exceptions): the connection is done for, and retrying later works.
    if code.code().starts_with("08") || code.code().starts_with("57P") {
      return (
        Failure::Broken,
        Error::unavailable(format!(
          "storage error: the PostgreSQL server at {} is unavailable (SQLSTATE {})",
          target.display(),
          code.code()
        )),
      );
    }
    let db = e
      .as_db_error()
      .map(|d| d.message().to_string())
      .unwrap_or_default();
    return (
      Failure::Other,
      Error::storage(format!("storage error: {db} (SQLSTATE {})", code.code())),
    );
  }
  if e.is_closed() {
    return (
      Failure::Broken,
      Error::unavailable(format!(
        "storage error: lost the connection to the PostgreSQL server at {} ({e})",
        target.display()
      )),
    );
  }
  (
    Failure::Other,
    Error::storage(format!("storage error: {e}")),
  )
}

impl PgConn {
  /// Connects (with the target's connect timeout) and sets the search path to the schema.
  pub fn connect(target: &Target) -> Result<PgConn> {
    PgConn::connect_with(target, |connection| async move {
      let _ = connection.await;
    })
  }

  /// Connects, driving the connection's I/O with `drive` (which may also read its
  /// notifications) on this connection's runtime.
  pub fn connect_with<D, F>(target: &Target, drive: D) -> Result<PgConn>
  where
    D: FnOnce(Connection<Socket, TlsStream>) -> F,
    F: Future<Output = ()> + Send + 'static,
  {
    let rt = tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .map_err(|e| Error::storage(format!("cannot start a runtime: {e}")))?;
    let (client, connection) = rt.block_on(target.connect_raw())?;
    rt.spawn(drive(connection));
    let mut conn = PgConn {
      rt,
      client,
      statements: HashMap::new(),
      target: target.clone(),
    };
    let set = format!("SET search_path TO {}", super::quote_ident(target.schema()));
    conn.batch(&set)?;
    Ok(conn)
  }

  pub fn is_closed(&self) -> bool {
    self.client.is_closed()
  }

  /// Waits up to `limit` for the next notification payload on `rx` (which the connection's
  /// driver feeds), polling the connection meanwhile.
  pub fn wait_notification(
    &self,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    limit: Duration,
  ) -> Option<String> {
    self
      .rt
      .block_on(async { tokio::time::timeout(limit, rx.recv()).await.ok().flatten() })
  }

  pub fn target(&self) -> &Target {
    &self.target
  }

  /// Runs `fut` on this connection's runtime, at most [`ROUND_TRIP_TIMEOUT`].
  fn run<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let target = &self.target;
    self.rt.block_on(async {
      match tokio::time::timeout(ROUND_TRIP_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::unavailable(format!(
          "storage error: no answer from the PostgreSQL server at {} within {} s",
          target.display(),
          ROUND_TRIP_TIMEOUT.as_secs()
        ))),
      }
    })
  }

  /// Simple-protocol statements (no parameters), outside any job.
  pub fn batch(&mut self, sql: &str) -> Result<()> {
    let (client, target) = (&self.client, &self.target);
    self.run(async {
      client
        .batch_execute(sql)
        .await
        .map_err(|e| classify(&e, target).1)
    })
  }

  /// The single integer `sql` returns (outside any job).
  pub fn scalar_i64(&mut self, sql: &str) -> Result<i64> {
    let (client, target) = (&self.client, &self.target);
    self.run(async {
      let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| classify(&e, target).1)?;
      Ok(row.get::<_, i64>(0))
    })
  }

  /// The prepared statements for `sqls`, preparing the missing ones together.
  fn prepare_all(
    &mut self,
    sqls: &[&str],
  ) -> std::result::Result<Vec<Statement>, (Failure, Error)> {
    let missing: Vec<String> = sqls
      .iter()
      .filter(|s| !self.statements.contains_key(**s))
      .map(|s| s.to_string())
      .collect();
    if !missing.is_empty() {
      let (client, target) = (&self.client, &self.target);
      let prepared = self
        .rt
        .block_on(async {
          tokio::time::timeout(
            ROUND_TRIP_TIMEOUT,
            join_all(missing.iter().map(|s| client.prepare(s))),
          )
          .await
        })
        .map_err(|_| {
          (
            Failure::Broken,
            Error::unavailable(format!(
              "storage error: no answer from the PostgreSQL server at {}",
              target.display()
            )),
          )
        })?;
      for (sql, st) in missing.into_iter().zip(prepared) {
        let st = st.map_err(|e| classify(&e, target))?;
        self.statements.insert(sql, st);
      }
    }
    Ok(
      sqls
        .iter()
        .filter_map(|s| self.statements.get(*s).cloned())
        .collect(),
    )
  }
}

/// Encodes every queued parameter as the driver will, without sending anything: the errors
/// the driver would find before sending a statement (a count or type mismatch).
fn precheck(queue: &[Queued], statements: &[Statement]) -> Result<()> {
  let mut buf = bytes::BytesMut::new();
  for (q, st) in queue.iter().zip(statements) {
    let bad = |why: String| {
      Error::storage(format!(
        "storage error: cannot send {}: {why}",
        statement_head(&q.sql)
      ))
    };
    if st.params().len() != q.params.len() {
      return Err(bad(format!(
        "{} parameters for {}",
        q.params.len(),
        st.params().len()
      )));
    }
    for (p, ty) in q.params.iter().zip(st.params()) {
      buf.clear();
      p.to_sql_checked(ty, &mut buf)
        .map_err(|e| bad(e.to_string()))?;
    }
  }
  Ok(())
}

/// The start of a statement, for error messages (statements hold no values).
fn statement_head(sql: &str) -> String {
  let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
  one_line.chars().take(80).collect()
}

/// A queued write: SQL, owned parameters, and whether its single returned value (an event id)
/// is wanted.
struct Queued {
  sql: String,
  params: Vec<Param>,
  event: Option<usize>,
}

/// What the statement sent last in a flush should return.
#[derive(Clone, Copy)]
enum Want {
  Rows,
  Count,
}

enum Answer {
  Rows(Vec<Row>),
  Count(u64),
}

/// Isolation of a job's transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
  /// `SERIALIZABLE`: concurrent jobs behave as if they ran one at a time, as on SQLite; a
  /// conflict is retried.
  Write,
  /// `REPEATABLE READ READ ONLY`: one snapshot, never a conflict.
  Read,
  /// No transaction: the job's one statement is its own snapshot. A second statement fails
  /// with [`Failure::NeedsSnapshot`] (nothing was written: the engine runs the job again in
  /// [`Mode::Read`]).
  ReadOne,
}

/// One transaction on a [`PgConn`]: the row traits of `domain` are implemented on it in
/// `tokens`, `keys` and `events`.
pub struct PgTx<'c> {
  conn: &'c mut PgConn,
  queue: Vec<Queued>,
  begun: bool,
  mode: Mode,
  /// A statement was sent ([`Mode::ReadOne`]).
  sent: bool,
  /// The first failure; later statements are not sent.
  failed: Option<(Failure, Error)>,
  /// Events appended, in order (ids filled from `INSERT … RETURNING` at the flush).
  pub(super) events: Vec<(i64, Event)>,
  /// The next per-transaction number for xid-based ids (see `events`).
  pub(super) serial: i64,
  /// Scopes whose token epoch this transaction bumped.
  pub(super) bumped: Vec<i64>,
  /// A read found committed events it could not return yet (an older transaction is still
  /// running): the engine reads again in a moment.
  pub(super) horizon_wait: bool,
}

impl crate::store::Tx for PgTx<'_> {}

impl<'c> PgTx<'c> {
  pub fn new(conn: &'c mut PgConn, mode: Mode) -> Self {
    PgTx {
      conn,
      queue: Vec::new(),
      begun: false,
      mode,
      sent: false,
      failed: None,
      events: Vec::new(),
      serial: 0,
      bumped: Vec::new(),
      horizon_wait: false,
    }
  }

  /// The schema of the connection (for notification payloads).
  pub fn schema(&self) -> &str {
    self.conn.target.schema()
  }

  pub fn failure(&self) -> Option<Failure> {
    self.failed.as_ref().map(|f| f.0)
  }

  fn fail(&mut self, f: (Failure, Error)) -> Error {
    let e = f.1.clone();
    if self.failed.is_none() {
      self.failed = Some(f);
    }
    e
  }

  /// Queues a write whose result is not needed now.
  pub fn defer(&mut self, sql: impl Into<String>, params: Vec<Param>) {
    self.queue.push(Queued {
      sql: sql.into(),
      params,
      event: None,
    });
  }

  /// Queues an event insert returning its id, for `events[index]`.
  pub(super) fn defer_event(&mut self, sql: &str, params: Vec<Param>, index: usize) {
    self.queue.push(Queued {
      sql: sql.to_string(),
      params,
      event: Some(index),
    });
  }

  /// Sends what is queued (and `BEGIN` first) together with `sql`, and returns `sql`'s rows.
  pub fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
    match self.flush(Some((sql, params, Want::Rows)), false)? {
      Some(Answer::Rows(rows)) => Ok(rows),
      _ => Ok(Vec::new()),
    }
  }

  /// The first row of `sql`, if any.
  pub fn query_opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
    Ok(self.query(sql, params)?.into_iter().next())
  }

  /// Runs `sql` now (with what is queued) and returns how many rows it changed.
  pub fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
    match self.flush(Some((sql, params, Want::Count)), false)? {
      Some(Answer::Count(n)) => Ok(n),
      _ => Ok(0),
    }
  }

  fn begin_sql(&self) -> Option<&'static str> {
    match self.mode {
      Mode::Write => Some("BEGIN ISOLATION LEVEL SERIALIZABLE"),
      Mode::Read => Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
      Mode::ReadOne => None,
    }
  }

  /// Sends `BEGIN` (once), the queue, then `last`, then `COMMIT` if `commit`; returns `last`'s
  /// answer. With `commit`, `Ok` means committed.
  fn flush(
    &mut self,
    last: Option<(&str, &[&(dyn ToSql + Sync)], Want)>,
    commit: bool,
  ) -> Result<Option<Answer>> {
    if let Some((_, e)) = &self.failed {
      return Err(e.clone());
    }
    if self.mode == Mode::ReadOne {
      if self.sent || !self.queue.is_empty() {
        return Err(self.fail((
          Failure::NeedsSnapshot,
          Error::storage("storage error: a one-statement read sent a second statement"),
        )));
      }
      self.sent = true;
    }
    let queue = std::mem::take(&mut self.queue);
    let mut sqls: Vec<&str> = queue.iter().map(|q| q.sql.as_str()).collect();
    if let Some((sql, _, _)) = last {
      sqls.push(sql);
    }
    let statements = match self.conn.prepare_all(&sqls) {
      Ok(s) => s,
      Err(f) => return Err(self.fail(f)),
    };
    if commit {
      // A statement that tokio-postgres cannot encode is never sent, and the COMMIT behind it
      // would keep the rest: encode every parameter once beforehand, as the driver will.
      if let Err(e) = precheck(&queue, &statements) {
        return Err(self.fail((Failure::Other, e)));
      }
    }
    let begin = if self.begun { None } else { self.begin_sql() };
    self.begun |= begin.is_some();
    let (client, target) = (&self.conn.client, &self.conn.target);
    let outcome = self.conn.rt.block_on(async {
      let begin_fut = async {
        match begin {
          Some(b) => client.batch_execute(b).await,
          None => Ok(()),
        }
      };
      let queued = join_all(queue.iter().zip(&statements).map(|(q, st)| {
        let params: Vec<&(dyn ToSql + Sync)> = q
          .params
          .iter()
          .map(|p| p.as_ref() as &(dyn ToSql + Sync))
          .collect();
        async move { client.query(st, &params).await }
      }));
      let last_fut = async {
        match (last, statements.last()) {
          (Some((_, params, Want::Rows)), Some(st)) => client
            .query(st, params)
            .await
            .map(|r| Some(Answer::Rows(r))),
          (Some((_, params, Want::Count)), Some(st)) => client
            .execute(st, params)
            .await
            .map(|n| Some(Answer::Count(n))),
          _ => Ok(None),
        }
      };
      // After a failed statement the transaction is aborted and COMMIT only ends it.
      let commit_fut = async {
        match commit {
          true => client.batch_execute("COMMIT").await,
          false => Ok(()),
        }
      };
      tokio::time::timeout(
        ROUND_TRIP_TIMEOUT,
        futures_util::future::join4(begin_fut, queued, last_fut, commit_fut),
      )
      .await
    });
    let (began, queued, last_rows, committed) = match outcome {
      Ok(r) => r,
      Err(_) if commit => {
        return Err(self.fail((
          Failure::Broken,
          Error::unavailable(format!(
            "storage error: the PostgreSQL server at {} did not confirm the commit within {} s; \
             the write may or may not have been saved",
            target.display(),
            ROUND_TRIP_TIMEOUT.as_secs()
          )),
        )))
      }
      Err(_) => {
        return Err(self.fail((
          Failure::Broken,
          Error::unavailable(format!(
            "storage error: no answer from the PostgreSQL server at {} within {} s",
            target.display(),
            ROUND_TRIP_TIMEOUT.as_secs()
          )),
        )))
      }
    };
    if commit {
      // Whatever happened below, the transaction has ended (committed only if all succeeded).
      self.begun = false;
    }
    if let Err(e) = began {
      let f = classify(&e, target);
      return Err(self.fail(f));
    }
    for (q, r) in queue.iter().zip(queued) {
      match r {
        Ok(rows) => {
          if let (Some(i), Some(row)) = (q.event, rows.first()) {
            if let Some(slot) = self.events.get_mut(i) {
              slot.1.id = row.get::<_, i64>(0);
            }
          }
        }
        Err(e) => {
          let (kind, mut err) = classify(&e, target);
          if kind == Failure::Other {
            err.message = format!("{} in: {}", err.message, statement_head(&q.sql));
          }
          return Err(self.fail((kind, err)));
        }
      }
    }
    let rows = match last_rows {
      Ok(rows) => rows,
      Err(e) => {
        let f = classify(&e, target);
        return Err(self.fail(f));
      }
    };
    if let Err(e) = committed {
      let f = classify(&e, target);
      return Err(self.fail(f));
    }
    Ok(rows)
  }

  /// Sends the queue and `COMMIT` together (one round trip). The transaction's outcome: `Ok`
  /// only if every statement succeeded and the commit did.
  pub fn commit(mut self) -> std::result::Result<Vec<(i64, Event)>, (Failure, Error)> {
    if let Some(f) = self.failed.take() {
      self.rollback_quietly();
      return Err(f);
    }
    if !self.begun && self.queue.is_empty() {
      return Ok(std::mem::take(&mut self.events));
    }
    match self.flush(None, true) {
      Ok(_) => Ok(std::mem::take(&mut self.events)),
      Err(e) => {
        let f = self.failed.take().unwrap_or((Failure::Other, e));
        // Still open only if nothing was sent (a statement could not be prepared or encoded).
        self.rollback_quietly();
        Err(f)
      }
    }
  }

  /// Ends the transaction without keeping anything.
  pub fn rollback(mut self) {
    self.rollback_quietly();
  }

  fn rollback_quietly(&mut self) {
    self.queue.clear();
    if self.begun && !self.conn.is_closed() {
      let client = &self.conn.client;
      let _ = self.conn.rt.block_on(async {
        tokio::time::timeout(ROUND_TRIP_TIMEOUT, client.batch_execute("ROLLBACK")).await
      });
    }
    self.begun = false;
  }

  /// The next per-transaction serial for an xid-based id.
  pub(super) fn next_serial(&mut self) -> Result<i64> {
    if self.serial >= super::XID_SERIALS {
      return Err(Error::storage(
        "storage error: too many events in one transaction",
      ));
    }
    self.serial += 1;
    Ok(self.serial)
  }
}

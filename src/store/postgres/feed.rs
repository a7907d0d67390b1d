//! Keeping token verifiers fresh across processes without a round trip per verification.
//!
//! Every transaction that bumps a scope's token epoch (a revocation, a key added or retired)
//! also sends `NOTIFY linkvault_tokens` (payload: schema and scope) at its commit. Each client
//! keeps one connection listening: on a notification it reads what changed
//! (`domain::tokens::verifier::load_delta`: the epoch, the keys, the new revocation entries)
//! and hands it to the verifiers of that scope, which apply it before their next verification.
//! A lost notification (the listening connection dropped, the server restarted) cannot leave a
//! revoked token valid for long: the same read runs every [`EPOCH_CHECK`] anyway (one indexed
//! row when nothing changed). So a revocation made by any process is honoured everywhere
//! within milliseconds, and at most `EPOCH_CHECK` plus one round trip late. In the revoking
//! client itself it holds at once: the worker that committed it reads the change before the
//! call returns.
//!
//! A verification never waits for the database: it applies deltas already read, if any.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::future::poll_fn;
use tokio_postgres::AsyncMessage;

use super::conn::{Mode, PgConn, PgTx};
use super::{notify_payload, PgStore, Target, NOTIFY_CHANNEL};
use crate::crypto::Sealer;
use crate::domain::tokens::verifier::{load_delta, Delta, Feed, View};
use crate::domain::Scope;
use crate::error::Result;
use crate::store;

/// How often every scope's epoch is read, whatever notifications arrived.
pub const EPOCH_CHECK: Duration = Duration::from_millis(250);

/// What the last read of a scope saw, so the next one reads only what is new.
#[derive(Default)]
struct Loader {
  epoch: Option<i64>,
  after: i64,
  known: HashSet<String>,
}

/// One verifier's side of the feed.
struct Shared {
  scope_id: i64,
  sealer: Arc<Sealer>,
  loader: Mutex<Loader>,
  inbox: Mutex<Vec<Delta>>,
  ready: AtomicBool,
  closed: AtomicBool,
}

impl Shared {
  fn deliver(&self, loader: &mut Loader, delta: Delta) {
    loader.epoch = Some(delta.epoch);
    loader.after = loader.after.max(delta.resume_after);
    loader.known = delta.keys.iter().map(|(kid, _)| kid.clone()).collect();
    if let Ok(mut inbox) = self.inbox.lock() {
      inbox.push(delta);
      self.ready.store(true, Ordering::Release);
    }
  }

  /// Reads what changed since the last read, on `conn`, and queues it for the verifier.
  fn load(&self, conn: &mut PgConn) {
    let Ok(mut loader) = self.loader.lock() else {
      return;
    };
    let mut tx = PgTx::new(conn, Mode::Read);
    let delta = load_delta(
      &mut tx,
      &self.sealer,
      self.scope_id,
      loader.epoch,
      loader.after,
      &loader.known,
    );
    let committed = tx.commit().is_ok();
    // A failed read changes nothing: the next check reads again.
    if let (true, Ok(Some(d))) = (committed, delta) {
      self.deliver(&mut loader, d);
    }
  }

  /// Forgets what was read: the next read loads every key again.
  fn reset(&self) {
    if let Ok(mut loader) = self.loader.lock() {
      *loader = Loader::default();
    }
  }
}

/// The [`Feed`] a PostgreSQL verifier refreshes from.
pub struct PgFeed(Arc<Shared>);

impl Feed for PgFeed {
  fn refresh(&mut self, view: &mut View, now: i64) -> Result<()> {
    if !self.0.ready.swap(false, Ordering::AcqRel) {
      return Ok(());
    }
    let deltas = match self.0.inbox.lock() {
      Ok(mut inbox) => std::mem::take(&mut *inbox),
      Err(_) => return Ok(()),
    };
    for d in deltas {
      if !view.apply(d, now) {
        // A key the view should hold is missing (cannot happen when every delta is applied in
        // order): the key is refused meanwhile, and the next read loads all keys again.
        view.invalidate();
        self.0.reset();
      }
    }
    Ok(())
  }

  fn close(&mut self) {
    self.0.closed.store(true, Ordering::Release);
  }
}

/// The verifiers of one store, and the thread that listens for their changes.
#[derive(Default)]
pub struct Feeds {
  list: Mutex<Vec<Arc<Shared>>>,
  stop: Arc<AtomicBool>,
  listener: Mutex<Option<JoinHandle<()>>>,
}

impl Feeds {
  /// A feed for a new verifier of `scope`, loaded now (a read job on the store).
  pub fn open(&self, store: &PgStore, scope: &Scope, sealer: Arc<Sealer>) -> Result<PgFeed> {
    let shared = Arc::new(Shared {
      scope_id: scope.id,
      sealer: sealer.clone(),
      loader: Mutex::new(Loader::default()),
      inbox: Mutex::new(Vec::new()),
      ready: AtomicBool::new(false),
      closed: AtomicBool::new(false),
    });
    let scope_id = scope.id;
    let first = store::read(store, move |tx| {
      load_delta(tx, &sealer, scope_id, None, 0, &HashSet::new())
    })
    .wait()?;
    if let (Some(d), Ok(mut loader)) = (first, shared.loader.lock()) {
      shared.deliver(&mut loader, d);
    }
    if let Ok(mut list) = self.list.lock() {
      list.retain(|s| !s.closed.load(Ordering::Acquire));
      list.push(shared.clone());
    }
    Ok(PgFeed(shared))
  }

  fn feeds(&self, scope_id: Option<i64>) -> Vec<Arc<Shared>> {
    self
      .list
      .lock()
      .map(|l| {
        l.iter()
          .filter(|s| !s.closed.load(Ordering::Acquire))
          .filter(|s| scope_id.is_none_or(|id| s.scope_id == id))
          .cloned()
          .collect()
      })
      .unwrap_or_default()
  }

  /// Reads the changes of `scope_id` for this store's verifiers, on `conn`.
  pub fn load_scope(&self, scope_id: i64, conn: &mut PgConn) {
    for s in self.feeds(Some(scope_id)) {
      s.load(conn);
    }
  }

  /// Starts the listening thread.
  pub fn start_listener(self: &Arc<Self>, target: Target) -> Result<()> {
    let feeds = self.clone();
    let h = std::thread::Builder::new()
      .name("linkvault-pg-listen".into())
      .spawn(move || feeds.listen(target))
      .map_err(|e| crate::error::Error::storage(format!("cannot start a thread: {e}")))?;
    if let Ok(mut l) = self.listener.lock() {
      *l = Some(h);
    }
    Ok(())
  }

  /// Stops the listening thread (within one `EPOCH_CHECK`).
  pub fn stop(&self) {
    self.stop.store(true, Ordering::Release);
    if let Some(h) = self.listener.lock().ok().and_then(|mut l| l.take()) {
      let _ = h.join();
    }
  }

  fn listen(&self, target: Target) {
    let mut session: Option<(PgConn, tokio::sync::mpsc::UnboundedReceiver<String>)> = None;
    while !self.stop.load(Ordering::Acquire) {
      if session.as_ref().is_none_or(|(c, _)| c.is_closed()) {
        session = connect_listening(&target).ok();
        if session.is_none() {
          // The server is unreachable: try again at the next check.
          std::thread::sleep(EPOCH_CHECK);
          continue;
        }
        // Notifications may have been missed meanwhile: read every scope.
        self.load_all(session.as_mut().map(|s| &mut s.0));
      }
      let Some((conn, rx)) = session.as_mut() else {
        continue;
      };
      match conn.wait_notification(rx, EPOCH_CHECK) {
        Some(payload) => {
          // Coalesce a burst: one read per scope that changed.
          let mut changed: HashSet<String> = HashSet::from([payload]);
          while let Ok(p) = rx.try_recv() {
            changed.insert(p);
          }
          // The verifiers as they are now, not as they were when the wait began: one opened
          // meanwhile (a client opened just before a revocation) must see it at once too.
          for s in self.feeds(None) {
            if changed.contains(&notify_payload(target.schema(), s.scope_id)) {
              s.load(conn);
            }
          }
        }
        None => self.load_all(Some(conn)),
      }
    }
  }

  fn load_all(&self, conn: Option<&mut PgConn>) {
    if let Some(conn) = conn {
      for s in self.feeds(None) {
        s.load(conn);
      }
    }
  }
}

/// A connection that `LISTEN`s, with its notifications' payloads.
fn connect_listening(
  target: &Target,
) -> Result<(PgConn, tokio::sync::mpsc::UnboundedReceiver<String>)> {
  let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
  let mut conn = PgConn::connect_with(target, move |mut connection| async move {
    while let Some(Ok(message)) = poll_fn(|cx| connection.poll_message(cx)).await {
      if let AsyncMessage::Notification(n) = message {
        if tx.send(n.payload().to_string()).is_err() {
          break;
        }
      }
    }
  })?;
  conn.batch(&format!("LISTEN {NOTIFY_CHANNEL}"))?;
  Ok((conn, rx))
}

//! Storage behind traits. The embedded SQLite engine (`sqlite`) is the one implementation today;
//! a server database can implement the same traits. Every operation returns a [`Pending`] that
//! resolves once the work is durable (for writes: after its transaction committed).

mod accounts;
mod schema;
pub mod sqlite;
pub mod tokens;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::accounts::{
  Account, AccountInput, Credentials, KeysetPage, ListFilter, OffsetPage, UpsertOutcome, WriteMode,
};
use crate::error::{Error, Result};

pub use sqlite::{Durability, SqliteStore, StoreConfig};
pub use tokens::{TokenStore, TokenVerifier};

/// The (organization, environment) pair every row belongs to. Data of one scope is never
/// visible from another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
  /// Internal numeric id of the pair, resolved at open.
  pub id: i64,
  pub org_id: String,
  pub environment: String,
}

/// The result of a storage operation, delivered from the storage threads.
pub struct Pending<T>(PendingInner<T>);

enum PendingInner<T> {
  Waiting(oneshot::Receiver<Result<T>>),
  Ready(Option<Result<T>>),
}

impl<T> Pending<T> {
  pub fn channel() -> (oneshot::Sender<Result<T>>, Self) {
    let (tx, rx) = oneshot::channel();
    (tx, Pending(PendingInner::Waiting(rx)))
  }

  pub fn ready(r: Result<T>) -> Self {
    Pending(PendingInner::Ready(Some(r)))
  }

  /// Blocks the current thread until the result arrives (for Rust callers without a runtime,
  /// tests and benchmarks). Never call it on Node's thread.
  pub fn wait(self) -> Result<T> {
    match self.0 {
      PendingInner::Ready(r) => r.unwrap_or_else(|| Err(Error::storage("result already taken"))),
      PendingInner::Waiting(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(stopped())),
    }
  }
}

fn stopped() -> Error {
  Error::storage("storage thread stopped before answering")
}

// `Pending` holds no self-references (the receiver is itself Unpin).
impl<T> Unpin for Pending<T> {}

impl<T> Future for Pending<T> {
  type Output = Result<T>;
  fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
    let this = self.get_mut();
    match &mut this.0 {
      PendingInner::Ready(r) => Poll::Ready(
        r.take()
          .unwrap_or_else(|| Err(Error::storage("polled after completion"))),
      ),
      PendingInner::Waiting(rx) => Pin::new(rx)
        .poll(cx)
        .map(|r| r.unwrap_or_else(|_| Err(stopped()))),
    }
  }
}

/// Linked accounts.
pub trait AccountStore: Send + Sync {
  /// Creates (`WriteMode::Create`) or creates-or-updates an account.
  fn write_account(
    &self,
    scope: &Scope,
    input: AccountInput,
    mode: WriteMode,
  ) -> Pending<UpsertOutcome>;
  fn get_account(&self, scope: &Scope, id: String) -> Pending<Account>;
  fn delete_account(&self, scope: &Scope, id: String) -> Pending<()>;
  /// Offset pages with a total count (`page` from 1).
  fn page_accounts(
    &self,
    scope: &Scope,
    filter: ListFilter,
    page: i64,
    limit: i64,
  ) -> Pending<OffsetPage>;
  /// Keyset pages in insertion order, after the row `after` (exclusive).
  fn list_accounts(
    &self,
    scope: &Scope,
    filter: ListFilter,
    after: Option<i64>,
    limit: i64,
  ) -> Pending<KeysetPage>;
  fn get_credentials(&self, scope: &Scope, id: String) -> Pending<Option<Credentials>>;
}

/// Everything a linkvault client needs from storage.
pub trait Store: AccountStore + TokenStore {
  /// Checks the encryption key against the file, and resolves the scope's id (generating and
  /// keeping a default organization id when none is given).
  fn open_scope(&self, org_id: Option<String>, environment: String) -> Pending<Scope>;

  /// Finishes queued work and stops the storage threads; later calls fail with `CLIENT_CLOSED`.
  fn close(&self) -> Pending<()>;
}

//! Storage behind traits. The embedded SQLite engine (`sqlite`) is the one implementation today;
//! a server database can implement the same traits. Every operation returns a [`Pending`] that
//! resolves once the work is durable (for writes: after its transaction committed).

mod accounts;
pub mod admin;
pub mod apikeys;
pub mod consents;
pub mod end_users;
pub mod events;
mod identities;
pub mod keys;
mod schema;
pub mod sqlite;
pub mod tokens;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;

use crate::accounts::{
  Account, AccountInput, Credentials, KeysetPage, ListFilter, OffsetPage, UpsertOutcome, WriteMode,
};
use crate::error::{Error, Result};
use crate::identities::{Identity, IdentityInput, LinkSuggestion, LinkTarget, UdfPolicy};

pub use admin::{AdminStore, BackupInfo, SigningKeyInfo, Stats};
pub use apikeys::ApiKeyStore;
pub use consents::ConsentStore;
pub use end_users::EndUserStore;
pub use events::EventStore;
pub use keys::{Begin, Integrity, Step};
pub use sqlite::{Durability, SqliteStore, StoreConfig};
pub use tokens::{TokenStore, TokenVerifier};
pub use webhooks::WebhookStore;

/// The (organization, environment) pair every row belongs to. Data of one scope is never
/// visible from another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
  /// Internal numeric id of the pair, resolved at open.
  pub id: i64,
  pub org_id: String,
  pub environment: String,
}

/// The result of a storage operation, delivered from the storage threads. It can be awaited
/// (a `Future`), waited for (`wait`, blocking) or handed a callback (`on_ready`) that the
/// answering thread runs directly, which is how the Node binding resolves promises without an
/// async runtime in between.
pub struct Pending<T>(PendingInner<T>);

enum PendingInner<T> {
  Slot(Arc<Slot<T>>),
  Ready(Option<Result<T>>),
}

type Callback<T> = Box<dyn FnOnce(Result<T>) + Send>;

struct Slot<T> {
  state: Mutex<State<T>>,
  ready: Condvar,
}

enum State<T> {
  Empty,
  Waiting(Waker),
  Callback(Callback<T>),
  Ready(Result<T>),
  Taken,
}

/// The sending half of a [`Pending`]. Dropping it unanswered answers with a storage error, so a
/// caller is never left waiting (e.g. when a storage thread panics).
pub struct Answer<T>(Option<Arc<Slot<T>>>);

impl<T> Answer<T> {
  /// Delivers the result; false if it had already been answered.
  pub fn send(mut self, r: Result<T>) -> bool {
    match self.0.take() {
      Some(slot) => deliver(&slot, r),
      None => false,
    }
  }
}

impl<T> Drop for Answer<T> {
  fn drop(&mut self) {
    if let Some(slot) = self.0.take() {
      let _ = deliver(&slot, Err(stopped()));
    }
  }
}

fn lock<T>(slot: &Slot<T>) -> MutexGuard<'_, State<T>> {
  // A poisoned slot only means a callback panicked; the state itself is still consistent.
  slot.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn deliver<T>(slot: &Slot<T>, r: Result<T>) -> bool {
  let mut state = lock(slot);
  match std::mem::replace(&mut *state, State::Taken) {
    State::Empty => {
      *state = State::Ready(r);
      slot.ready.notify_all();
      true
    }
    State::Waiting(waker) => {
      *state = State::Ready(r);
      drop(state);
      waker.wake();
      true
    }
    State::Callback(cb) => {
      drop(state);
      cb(r);
      true
    }
    other @ (State::Ready(_) | State::Taken) => {
      *state = other;
      false
    }
  }
}

impl<T> Pending<T> {
  pub fn channel() -> (Answer<T>, Self) {
    let slot = Arc::new(Slot {
      state: Mutex::new(State::Empty),
      ready: Condvar::new(),
    });
    (
      Answer(Some(slot.clone())),
      Pending(PendingInner::Slot(slot)),
    )
  }

  pub fn ready(r: Result<T>) -> Self {
    Pending(PendingInner::Ready(Some(r)))
  }

  /// Blocks the current thread until the result arrives (for Rust callers without a runtime,
  /// tests and benchmarks). Never call it on Node's thread.
  pub fn wait(self) -> Result<T> {
    match self.0 {
      PendingInner::Ready(r) => r.unwrap_or_else(|| Err(taken())),
      PendingInner::Slot(slot) => {
        let mut state = lock(&slot);
        loop {
          match std::mem::replace(&mut *state, State::Taken) {
            State::Ready(r) => return r,
            State::Taken | State::Callback(_) => return Err(taken()),
            waiting @ (State::Empty | State::Waiting(_)) => {
              *state = waiting;
              state = slot.ready.wait(state).unwrap_or_else(|p| p.into_inner());
            }
          }
        }
      }
    }
  }

  /// Runs `cb` with the result: at once if it is already there, else on the thread that
  /// answers.
  pub fn on_ready(self, cb: impl FnOnce(Result<T>) + Send + 'static) {
    match self.0 {
      PendingInner::Ready(r) => cb(r.unwrap_or_else(|| Err(taken()))),
      PendingInner::Slot(slot) => {
        let mut state = lock(&slot);
        match std::mem::replace(&mut *state, State::Taken) {
          State::Ready(r) => {
            drop(state);
            cb(r);
          }
          State::Empty | State::Waiting(_) => *state = State::Callback(Box::new(cb)),
          State::Taken | State::Callback(_) => {
            drop(state);
            cb(Err(taken()));
          }
        }
      }
    }
  }
}

fn stopped() -> Error {
  Error::storage("storage thread stopped before answering")
}

fn taken() -> Error {
  Error::storage("result already taken")
}

// `Pending` holds no self-references (only an `Arc` or a ready value), so it is Unpin.
impl<T> Unpin for Pending<T> {}

impl<T> Future for Pending<T> {
  type Output = Result<T>;
  fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
    match &mut self.get_mut().0 {
      PendingInner::Ready(r) => Poll::Ready(r.take().unwrap_or_else(|| Err(taken()))),
      PendingInner::Slot(slot) => {
        let mut state = lock(slot);
        match std::mem::replace(&mut *state, State::Taken) {
          State::Ready(r) => Poll::Ready(r),
          State::Empty | State::Waiting(_) => {
            *state = State::Waiting(cx.waker().clone());
            Poll::Pending
          }
          State::Taken | State::Callback(_) => Poll::Ready(Err(taken())),
        }
      }
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

/// Identities of linked accounts, merges and unlinks (`crate::identities`).
pub trait IdentityStore: Send + Sync {
  /// Attaches an identity (or refreshes its profile when it is already on this account);
  /// returns the account's identities. `IDENTITY_ALREADY_LINKED` if another account holds it.
  fn link_identity(
    &self,
    scope: &Scope,
    id: String,
    input: IdentityInput,
  ) -> Pending<Vec<Identity>>;
  /// Merges `target` into `primary` in one transaction; returns the merged primary.
  /// `token_skew` is the clock skew (seconds) allowed when a `link_with` token is verified.
  fn link_accounts(
    &self,
    scope: &Scope,
    primary: String,
    target: LinkTarget,
    policy: UdfPolicy,
    token_skew: i64,
  ) -> Pending<Account>;
  /// Detaches an identity into a standalone account; returns the remaining identities.
  fn unlink_identity(
    &self,
    scope: &Scope,
    id: String,
    provider: String,
    user_id: String,
  ) -> Pending<Vec<Identity>>;
  /// Accounts holding an identity whose normalized email is `email_norm`.
  fn accounts_by_email(&self, scope: &Scope, email_norm: String) -> Pending<Vec<Account>>;
  fn link_suggestions(&self, scope: &Scope, id: String) -> Pending<Vec<LinkSuggestion>>;
}

/// Key rotation and integrity checks (`crate::keys`, SQL in `store::keys`).
pub trait MaintenanceStore: Send + Sync {
  /// Starts (or resumes) a rotation of the file's encryption key to `new_key`.
  fn rotation_begin(&self, new_key: crate::crypto::Key) -> Pending<Begin>;
  /// Reseals one batch (at most `batch` rows examined) and advances the cursor.
  fn rotation_step(&self, batch: usize) -> Pending<Step>;
  /// How many sealed values are not under the file's key (a read).
  fn rotation_leftovers(&self) -> Pending<i64>;
  /// Ends the rotation if `leftovers` is 0 (true), else restarts its cursor (false).
  fn rotation_finish(&self, leftovers: i64) -> Pending<bool>;
  /// `PRAGMA integrity_check`, `PRAGMA foreign_key_check` and the sealed values' keys.
  fn check_integrity(&self) -> Pending<Integrity>;
}

/// Everything a linkvault client needs from storage.
pub trait Store:
  AccountStore
  + AdminStore
  + ApiKeyStore
  + ConsentStore
  + EndUserStore
  + EventStore
  + IdentityStore
  + MaintenanceStore
  + TokenStore
  + WebhookStore
{
  /// Checks the encryption key against the file, and resolves the scope's id (generating and
  /// keeping a default organization id when none is given).
  fn open_scope(&self, org_id: Option<String>, environment: String) -> Pending<Scope>;

  /// Finishes queued work and stops the storage threads; later calls fail with `CLIENT_CLOSED`.
  fn close(&self) -> Pending<()>;
}

//! [`Pending`]: the result of a storage operation, delivered from the engine's threads.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};

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
  /// A thread is blocked in `wait` on the condition variable.
  Parked,
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
      // Nobody waits yet: no wake-up (a notify is a system call even with no waiter).
      *state = State::Ready(r);
      true
    }
    State::Parked => {
      *state = State::Ready(r);
      // Unlocked first, so the woken thread does not wake into a held lock.
      drop(state);
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
            // (A waker from an earlier poll is superseded by this blocking wait.)
            State::Empty | State::Parked | State::Waiting(_) => {
              *state = State::Parked;
              state = slot.ready.wait(state).unwrap_or_else(|p| p.into_inner());
            }
          }
        }
      }
    }
  }

  /// The result if it is already there (answered on this thread, or refused input), else the
  /// `Pending` back: a caller can then use it at once instead of being called back.
  pub fn try_take(self) -> std::result::Result<Result<T>, Self> {
    match self.0 {
      PendingInner::Ready(r) => Ok(r.unwrap_or_else(|| Err(taken()))),
      PendingInner::Slot(slot) => {
        let mut state = lock(&slot);
        match std::mem::replace(&mut *state, State::Taken) {
          State::Ready(r) => Ok(r),
          other @ (State::Empty | State::Parked | State::Waiting(_) | State::Callback(_)) => {
            *state = other;
            drop(state);
            Err(Pending(PendingInner::Slot(slot)))
          }
          State::Taken => Ok(Err(taken())),
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
          State::Empty | State::Parked | State::Waiting(_) => {
            *state = State::Callback(Box::new(cb))
          }
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
          State::Empty | State::Parked | State::Waiting(_) => {
            *state = State::Waiting(cx.waker().clone());
            Poll::Pending
          }
          State::Taken | State::Callback(_) => Poll::Ready(Err(taken())),
        }
      }
    }
  }
}

impl<T> Pending<T> {
  /// The pending result of a call whose input may already have been refused.
  pub fn flatten(r: Result<Pending<T>>) -> Pending<T> {
    r.unwrap_or_else(|e| Pending::ready(Err(e)))
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::time::Instant;

  #[test]
  fn answers_reach_wait_callback_and_future() {
    let (a, p) = Pending::<i32>::channel();
    a.send(Ok(1));
    assert_eq!(p.wait().unwrap(), 1);
    let (a, p) = Pending::<i32>::channel();
    let t = std::thread::spawn(move || p.wait());
    std::thread::sleep(std::time::Duration::from_millis(20));
    a.send(Ok(2));
    assert_eq!(t.join().unwrap().unwrap(), 2);
    let (a, p) = Pending::<i32>::channel();
    let (tx, rx) = std::sync::mpsc::channel();
    p.on_ready(move |r| tx.send(r.unwrap()).unwrap());
    a.send(Ok(3));
    assert_eq!(rx.recv().unwrap(), 3);
    // A dropped answer is a storage error, never a hang.
    let (a, p) = Pending::<i32>::channel();
    drop(a);
    assert_eq!(p.wait().unwrap_err().code(), "STORAGE_ERROR");
  }

  #[test]
  fn try_take_gives_a_ready_result_and_keeps_a_pending_one() {
    assert_eq!(Pending::ready(Ok(1)).try_take().ok().unwrap().unwrap(), 1);
    let (a, p) = Pending::<i32>::channel();
    a.send(Ok(2));
    assert_eq!(p.try_take().ok().unwrap().unwrap(), 2);
    let (a, p) = Pending::<i32>::channel();
    let p = p.try_take().unwrap_err();
    // Still answerable after a look that found nothing.
    a.send(Ok(3));
    assert_eq!(p.wait().unwrap(), 3);
  }

  /// `cargo test --release -- --ignored --nocapture pending_vs_oneshot`: the cost of `Pending`
  /// next to `tokio::sync::oneshot` (which has no callback delivery; the binding needs one).
  #[test]
  #[ignore]
  fn pending_vs_oneshot() {
    let n = 1_000_000u32;
    for _ in 0..3 {
      let t = Instant::now();
      for i in 0..n {
        let (a, p) = Pending::<u32>::channel();
        a.send(Ok(i));
        assert_eq!(p.wait().unwrap(), i);
      }
      let pending = t.elapsed().as_nanos() as f64 / f64::from(n);
      let t = Instant::now();
      for i in 0..n {
        let (tx, mut rx) = tokio::sync::oneshot::channel::<Result<u32>>();
        let _ = tx.send(Ok(i));
        assert_eq!(rx.try_recv().unwrap().unwrap(), i);
      }
      let oneshot = t.elapsed().as_nanos() as f64 / f64::from(n);
      let t = Instant::now();
      for i in 0..n {
        let (a, p) = Pending::<u32>::channel();
        p.on_ready(move |r| assert_eq!(r.unwrap(), i));
        a.send(Ok(i));
      }
      let callback = t.elapsed().as_nanos() as f64 / f64::from(n);
      println!(
        "answer + take: Pending {pending:.0} ns, oneshot {oneshot:.0} ns; Pending::on_ready {callback:.0} ns"
      );
    }
  }
}

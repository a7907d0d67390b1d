//! Live event subscribers (`onEvent`) of one engine, each for one scope. The engine hands them
//! each committed transaction's events, in commit order.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::domain::events::Event;

/// A live subscriber: called on the engine's thread with the events of one committed job.
/// It must not block (the binding only queues them for Node's thread).
pub type Listener = Arc<dyn Fn(&[Event]) + Send + Sync>;

/// The subscribers of one engine.
#[derive(Default)]
pub struct Listeners {
  next_id: AtomicU64,
  count: AtomicUsize,
  list: Mutex<Vec<(u64, i64, Listener)>>,
}

impl Listeners {
  /// Whether anyone listens (engines skip collecting events when no one does).
  pub fn is_empty(&self) -> bool {
    self.count.load(Ordering::Acquire) == 0
  }

  pub fn add(&self, scope_id: i64, listener: Listener) -> u64 {
    let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    if let Ok(mut list) = self.list.lock() {
      list.push((id, scope_id, listener));
      self.count.store(list.len(), Ordering::Release);
    }
    id
  }

  /// Removes a subscriber; false if it was not there (already removed).
  pub fn remove(&self, id: u64) -> bool {
    let Ok(mut list) = self.list.lock() else {
      return false;
    };
    let before = list.len();
    list.retain(|(i, _, _)| *i != id);
    self.count.store(list.len(), Ordering::Release);
    list.len() != before
  }

  pub fn clear(&self) {
    if let Ok(mut list) = self.list.lock() {
      list.clear();
      self.count.store(0, Ordering::Release);
    }
  }

  /// Hands committed events to every subscriber of their scope, in order.
  pub fn deliver(&self, events: &[(i64, Event)]) {
    if events.is_empty() || self.is_empty() {
      return;
    }
    let subscribers: Vec<(i64, Listener)> = match self.list.lock() {
      Ok(list) => list.iter().map(|(_, s, l)| (*s, l.clone())).collect(),
      Err(_) => return,
    };
    for (scope_id, listener) in subscribers {
      let mine: Vec<Event> = events
        .iter()
        .filter(|(s, _)| *s == scope_id)
        .map(|(_, e)| e.clone())
        .collect();
      if !mine.is_empty() {
        listener(&mine);
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  #[test]
  fn listeners_filter_by_scope_and_unsubscribe() {
    let l = Listeners::default();
    assert!(l.is_empty());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let id = l.add(
      1,
      Arc::new(move |evs: &[Event]| s2.lock().unwrap().extend(evs.iter().map(|e| e.id))),
    );
    let ev = |id, scope| {
      (
        scope,
        Event {
          id,
          kind: "t".into(),
          linked_account_id: None,
          data: json!({}),
          created_at: 0,
        },
      )
    };
    l.deliver(&[ev(1, 1), ev(2, 2), ev(3, 1)]);
    assert_eq!(*seen.lock().unwrap(), vec![1, 3]);
    assert!(l.remove(id));
    assert!(!l.remove(id));
    assert!(l.is_empty());
    l.deliver(&[ev(4, 1)]);
    assert_eq!(*seen.lock().unwrap(), vec![1, 3]);
  }
}

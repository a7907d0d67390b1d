//! Event-log calls of a client (`listEvents`, `pruneEvents`, `onEvent`).

use serde_json::Value;

use super::Vault;
use crate::domain::events::{self, parse_prune, parse_query, EventPage};
use crate::error::{Error, Result};
use crate::store::{self, Listener, Pending};

impl Vault {
  /// `listEvents({ after?, limit?, types?, linked_account_id? })`.
  pub fn list_events(&self, query: Option<&Value>) -> Pending<EventPage> {
    Pending::flatten(parse_query(query).map(|q| {
      let scope = self.scope.clone();
      store::read(&*self.store, move |tx| events::list(tx, &scope, &q))
    }))
  }

  /// `pruneEvents({ before })`: returns how many events were deleted.
  pub fn prune_events(&self, options: Option<&Value>) -> Pending<i64> {
    Pending::flatten(parse_prune(options).map(|before| {
      let scope = self.scope.clone();
      store::write(&*self.store, move |tx| events::prune(tx, &scope, before))
    }))
  }

  /// `onEvent`: `listener` gets the events of this client's writes after they commit;
  /// `CLIENT_CLOSED` once the client is closed.
  pub fn subscribe(&self, listener: Listener) -> Result<u64> {
    if self.store.is_closed() {
      return Err(Error::closed());
    }
    Ok(self.store.listeners().add(self.scope.id, listener))
  }

  /// Stops a subscription; false if it had already stopped.
  pub fn unsubscribe(&self, id: u64) -> bool {
    self.store.listeners().remove(id)
  }
}

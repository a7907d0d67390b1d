//! Test clients on either engine: rules tests run on SQLite and on PostgreSQL (the server of
//! `store::postgres::tests`, a schema of its own per store).

use serde_json::{json, Value};

use super::{OpenOptions, Vault};
use crate::crypto::hex_encode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum On {
  Sqlite,
  Postgres,
}

pub(crate) const BOTH: [On; 2] = [On::Sqlite, On::Postgres];

/// A new, empty store: a SQLite file in a temporary directory or a new PostgreSQL schema.
pub(crate) fn fresh(on: On) -> Value {
  match on {
    On::Sqlite => {
      let dir = tempfile::tempdir().unwrap().keep();
      json!({"path": dir.join("t.db").to_string_lossy()})
    }
    On::Postgres => json!({
      "url": crate::store::postgres::tests::server_url(),
      "schema": crate::store::postgres::tests::unique_schema(),
      "poolSize": 4,
    }),
  }
}

/// Opens a client on the store `at` with `extra` options and key `[key; 32]`.
pub(crate) fn open(at: &Value, extra: Value, key: u8) -> Vault {
  let mut options = at.clone();
  if let (Some(o), Value::Object(e)) = (options.as_object_mut(), extra) {
    o.extend(e);
    o.insert("encryptionKey".into(), json!(hex_encode(&[key; 32])));
  }
  Vault::open(OpenOptions::parse(Some(&options)).unwrap())
    .wait()
    .unwrap()
}

/// Appends an event to `v`'s scope, as a mutation of an end user would.
pub(crate) fn event(v: &Vault, kind: &'static str, user: Option<&str>) {
  let (scope_id, user) = (v.scope.id, user.map(str::to_string));
  crate::store::write(&*v.store, move |tx| {
    tx.append_event(
      scope_id,
      kind,
      user.as_deref(),
      &json!({}),
      crate::clock::now_ms(),
    )
  })
  .wait()
  .unwrap();
}

/// Waits until `listEvents` shows `n` events of this client's scope. On PostgreSQL events stay
/// hidden while any older transaction on the server runs (other tests' included), and webhook
/// claims fan out only what lies below that horizon.
pub(crate) fn until_listed(v: &Vault, n: usize) {
  let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
  loop {
    let page = v.list_events(Some(&json!({"limit": 1000}))).wait().unwrap();
    if page.events.len() >= n || std::time::Instant::now() > deadline {
      assert!(
        page.events.len() >= n,
        "{} events listed, not {n}",
        page.events.len()
      );
      return;
    }
    std::thread::sleep(std::time::Duration::from_millis(10));
  }
}

//! Operations tooling: counts of a scope (`stats`), its signing keys (`listSigningKeys`) and
//! progress reports of long operations (`onProgress` of `rotateEncryptionKey` and
//! `checkIntegrity`). Nothing here changes stored data.

use std::sync::Arc;

use super::Scope;
use crate::error::Result;

/// `{ done, total }` of a long operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
  pub done: u64,
  pub total: u64,
}

/// Receives progress reports, on the thread doing the work (it must not block).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Calls `f` (if any) with `done` (capped at `total`) of `total`.
pub fn report(f: Option<&ProgressFn>, done: u64, total: u64) {
  if let Some(f) = f {
    f(Progress {
      done: done.min(total),
      total,
    });
  }
}

/// Counts of one scope and the state of the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
  pub accounts: i64,
  pub identities: i64,
  pub consents: i64,
  pub active_consents: i64,
  /// Session tokens neither expired nor revoked.
  pub tokens: i64,
  pub events: i64,
  /// SQLite: size of the database file and of its write-ahead log (0 for `:memory:`).
  /// PostgreSQL: size of the schema's tables and indexes; `wal_bytes` 0 (the server's WAL is
  /// shared by every database).
  pub database_bytes: u64,
  pub wal_bytes: u64,
  /// Calls queued and not yet taken by the engine (SQLite: writes waiting for the writer;
  /// PostgreSQL: jobs waiting for a pooled connection).
  pub write_queue: u64,
}

/// One signing key of a scope (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyInfo {
  pub kid: String,
  /// Milliseconds since the epoch.
  pub created_at: i64,
  pub retired_at: Option<i64>,
  /// The key that signs new tokens (the newest live one).
  pub current: bool,
}

/// What `stats` and `listSigningKeys` read.
pub trait AdminRows {
  /// The scope's counts (`database_bytes`, `wal_bytes` and `write_queue` left 0): accounts,
  /// identities, consents (all and active at `now_ms`), live session tokens, events.
  fn scope_counts(&mut self, scope_id: i64, now_ms: i64) -> Result<Stats>;
  /// Bytes the store occupies, when the engine measures it inside a transaction (None: the
  /// engine measures it outside, as SQLite's file size).
  fn stored_bytes(&mut self) -> Result<Option<u64>>;
  /// The scope's signing keys, oldest first (`current` false).
  fn signing_key_list(&mut self, scope_id: i64) -> Result<Vec<SigningKeyInfo>>;
}

/// `stats()`: the scope's counts.
pub fn stats(tx: &mut (impl AdminRows + ?Sized), scope: &Scope, now_ms: i64) -> Result<Stats> {
  let mut s = tx.scope_counts(scope.id, now_ms)?;
  if let Some(bytes) = tx.stored_bytes()? {
    s.database_bytes = bytes;
  }
  Ok(s)
}

/// `listSigningKeys()`: the newest live key is the current one (as
/// `domain::tokens::keys::current_key` picks it).
pub fn signing_keys(
  tx: &mut (impl AdminRows + ?Sized),
  scope: &Scope,
) -> Result<Vec<SigningKeyInfo>> {
  let mut keys = tx.signing_key_list(scope.id)?;
  if let Some(k) = keys.iter_mut().rev().find(|k| k.retired_at.is_none()) {
    k.current = true;
  }
  Ok(keys)
}

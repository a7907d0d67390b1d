//! The durable event log (a transactional outbox): every mutation appends its event in the same
//! transaction as the change, so a committed change always has its event and a failed one none.

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::error::Result;

/// Event types, as stored and returned.
pub mod types {
  pub const ACCOUNT_CREATED: &str = "linked_account.created";
  pub const ACCOUNT_UPDATED: &str = "linked_account.updated";
  pub const ACCOUNT_DELETED: &str = "linked_account.deleted";
  /// Session tokens were revoked; data `{ revoked_count, reason }` with reason `revoked`,
  /// `revoke_all`, `account_deleted` or `refresh_token_reuse`.
  pub const SESSION_TOKENS_REVOKED: &str = "session_tokens.revoked";
  /// A signing key was added (generated at open, `signingSecret`, or `rotateSigningKey`);
  /// data `{ kid, reason }`.
  pub const SIGNING_KEY_ADDED: &str = "signing_key.added";
  /// A signing key was retired; data `{ kid }`.
  pub const SIGNING_KEY_RETIRED: &str = "signing_key.retired";
}

/// One event as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
  pub id: i64,
  pub kind: String,
  pub linked_account_id: Option<String>,
  pub data: Value,
  pub created_at: i64,
}

/// Appends an event inside the caller's transaction and returns its id.
pub fn append(
  conn: &Connection,
  scope_id: i64,
  kind: &str,
  account_id: Option<&str>,
  data: &Value,
  now: i64,
) -> Result<i64> {
  conn
    .prepare_cached(
      "INSERT INTO events (scope_id, type, linked_account_id, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![scope_id, kind, account_id, data.to_string(), now])?;
  Ok(conn.last_insert_rowid())
}

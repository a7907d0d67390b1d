//! Account helpers over a SQLite connection, for the consents module that still holds its own
//! SQL. The rules are in `domain::accounts`, the rows in `sqlite::accounts`; this only adapts a
//! `&Connection` to them. It goes once consents run on the row traits.

use rusqlite::Connection;

use super::sqlite::SqliteTx;
use super::Scope;
use crate::domain::accounts as domain;
use crate::error::Result;

/// The account's stored primary key, or `NOT_FOUND`.
pub fn pk_of(conn: &Connection, scope: &Scope, id: &str) -> Result<i64> {
  domain::find(&mut SqliteTx::new(conn), scope, id).map(|r| r.pk)
}

//! The (organization, environment) scope every row belongs to, and how a client resolves it.

use super::keys::{self, MetaRows};
use crate::crypto::Sealer;
use crate::error::{Error, Result};

/// The (organization, environment) pair every row belongs to. Data of one scope is never
/// visible from another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
  /// Internal numeric id of the pair, resolved at open.
  pub id: i64,
  pub org_id: String,
  pub environment: String,
}

/// The scopes table.
pub trait ScopeRows {
  fn scope_id(&mut self, org_id: &str, environment: &str) -> Result<Option<i64>>;
  /// Adds the scope unless it exists (concurrent opens may race: both must succeed).
  fn insert_scope(&mut self, org_id: &str, environment: &str) -> Result<()>;
}

/// What opening a scope needs from its transaction.
pub trait ScopeTx: ScopeRows + MetaRows {}

/// At open: checks the encryption key against the database (sealing the key check of a new
/// one), and resolves the scope's id, generating and keeping a default organization id when
/// none is given. On a database that cannot be written (`writable` false) nothing is written:
/// the scope must exist already.
pub fn open(
  tx: &mut (impl ScopeTx + ?Sized),
  sealer: &Sealer,
  org_id: Option<&str>,
  environment: &str,
  writable: bool,
  now_ms: i64,
) -> Result<Scope> {
  keys::check_file_key(tx, sealer, writable)?;
  let org_id = match org_id {
    Some(o) => o.to_string(),
    None => match tx.meta_get("default_org_id")? {
      Some(v) => String::from_utf8(v).map_err(|_| Error::storage("default org id is not text"))?,
      None if writable => {
        let o = crate::crypto::object_id(now_ms)?;
        tx.meta_put("default_org_id", o.as_bytes())?;
        o
      }
      None => {
        return Err(Error::storage(
          "storage error: the database is read-only and has no default orgId",
        ))
      }
    },
  };
  if writable {
    tx.insert_scope(&org_id, environment)?;
  }
  let id = tx.scope_id(&org_id, environment)?.ok_or_else(|| {
    Error::storage(
      "storage error: the database is read-only and has no data for this orgId and environment",
    )
  })?;
  Ok(Scope {
    id,
    org_id,
    environment: environment.to_string(),
  })
}

/// `NOT_FOUND` for a linked account id of `scope` (the message Cobalt's API uses).
pub fn account_not_found(scope: &Scope, id: &str) -> Error {
  Error::not_found(format!(
    "Linked Account with account id {id} for org {} in environment {} not found",
    scope.org_id, scope.environment
  ))
}

//! Fiskil's end-user calls of a client (`createEndUser`, `getEndUser`, `getEndUsers`,
//! `updateEndUser`, `deleteEndUser`): end users are linked accounts.

use serde_json::Value;

use super::Vault;
use crate::accounts::MAX_ID_CHARS;
use crate::clock::now_ms;
use crate::domain::end_users as rules;
use crate::end_users::{self, EndUser};
use crate::error::{Error, ErrorKind, Result};
use crate::input;
use crate::store::{self, Pending};

fn pending<T>(r: Result<Pending<T>>) -> Pending<T> {
  r.unwrap_or_else(|e| Pending::ready(Err(e)))
}

/// `p`'s result passed through `f` (on the thread that answers).
pub(super) fn map_result<T: Send + 'static, U: Send + 'static>(
  p: Pending<T>,
  f: impl FnOnce(Result<T>) -> Result<U> + Send + 'static,
) -> Pending<U> {
  let (answer, out) = Pending::channel();
  p.on_ready(move |r| {
    answer.send(f(r));
  });
  out
}

fn end_user_id(v: &Value) -> Result<String> {
  input::id(Some(v), "end_user_id", MAX_ID_CHARS)
}

/// Fiskil's `end_user_not_found`, as a `NOT_FOUND` that names the end user.
fn not_found<T>(id: String) -> impl FnOnce(Result<T>) -> Result<T> {
  move |r| {
    r.map_err(|e| match e.kind {
      ErrorKind::NotFound => {
        Error::not_found(format!("end_user_not_found: end user {id} not found"))
      }
      _ => e,
    })
  }
}

impl Vault {
  /// `createEndUser({ email?, name?, phone?, abn? })`: a new linked account with a generated id
  /// (a UUID, as Fiskil's `end_user_id`).
  pub fn create_end_user(&self, fields: Option<&Value>) -> Pending<EndUser> {
    pending((|| {
      let patch = end_users::parse_fields(fields)?;
      let id = crate::consents::new_uuid()?;
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      let p = store::write(&*self.store, move |tx| {
        rules::create(tx, &sealer, &scope, id.clone(), &patch, now_ms())
      });
      Ok(map_result(p, |r| r.map(EndUser::from)))
    })())
  }

  /// `getEndUser(end_user_id)`.
  pub fn get_end_user(&self, id: &Value) -> Pending<EndUser> {
    pending(end_user_id(id).map(|id| {
      let p = self.get_account(id.clone());
      map_result(p, move |r| not_found(id)(r).map(EndUser::from))
    }))
  }

  /// `getEndUsers({ email })`: end users whose email matches after trimming and Unicode
  /// lowercasing. Emails are not unique, so this is a list.
  pub fn get_end_users(&self, query: Option<&Value>) -> Pending<Vec<EndUser>> {
    pending(end_users::parse_email_query(query).map(|email| {
      let scope = self.scope.clone();
      let p = store::read(&*self.store, move |tx| rules::by_email(tx, &scope, &email));
      map_result(p, |r| r.map(|v| v.into_iter().map(EndUser::from).collect()))
    }))
  }

  /// `updateEndUser(end_user_id, { email?, name?, phone?, abn? })`: fields sent are set, `null`
  /// clears one, fields not sent are kept.
  pub fn update_end_user(&self, id: &Value, fields: Option<&Value>) -> Pending<()> {
    pending((|| {
      let id = end_user_id(id)?;
      let patch = end_users::parse_fields(fields)?;
      let (scope, key) = (self.scope.clone(), id.clone());
      let p = store::write(&*self.store, move |tx| {
        rules::update(tx, &scope, &key, &patch, now_ms())
      });
      Ok(map_result(p, not_found(id)))
    })())
  }

  /// `deleteEndUser(end_user_id)`: deletes the linked account, with the same cascade.
  pub fn delete_end_user(&self, id: &Value) -> Pending<()> {
    pending(end_user_id(id).map(|id| {
      let p = self.delete_account(id.clone());
      map_result(p, not_found(id))
    }))
  }
}

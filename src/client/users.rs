//! Auth0's user calls of a client (`getUser`, `getUsersByEmail`): accounts seen as Auth0 users.

use serde_json::Value;

use super::end_users::map_result;
use super::Vault;
use crate::accounts::MAX_ID_CHARS;
use crate::error::{Error, Result};
use crate::identities::{normalize_email, parse_email};
use crate::input;
use crate::store::Pending;
use crate::users::User;

impl Vault {
  /// `getUser(id)`: the account as Auth0's user object (own identity first).
  pub fn get_user(&self, id: &Value) -> Pending<User> {
    match input::id(Some(id), "id", MAX_ID_CHARS) {
      Ok(id) => map_result(self.get_account(id), |r| r.map(|a| User::from(&a))),
      Err(e) => Pending::ready(Err(e)),
    }
  }

  /// `getUsersByEmail(email)`: users whose email (end-user email or an identity's) matches after
  /// trimming and Unicode lowercasing, in creation order. Unlike Auth0's exact, case-sensitive
  /// match, `Ann@X.com` finds `ann@x.com`.
  pub fn get_users_by_email(&self, email: &Value) -> Pending<Vec<User>> {
    let parsed: Result<String> = if email.is_null() {
      Err(Error::validation("email", "email is required"))
    } else {
      parse_email(email, "email").map(|e| normalize_email(&e))
    };
    match parsed {
      Ok(norm) => map_result(self.accounts_by_email(norm), |r| {
        r.map(|v| v.iter().map(User::from).collect())
      }),
      Err(e) => Pending::ready(Err(e)),
    }
  }
}

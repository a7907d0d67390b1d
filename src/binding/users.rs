//! Auth0's user methods of `Client` (`getUser`, `getUsersByEmail`): linked accounts seen as
//! Auth0 users, own identity first.

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;
use serde_json::{Map, Value};

use super::client::Client;
use super::identities::{to_js_identity, LinkedIdentity};
use super::js::{promise, with_json, Json};
use crate::clock::iso8601;
use crate::users::User;

/// Auth0's user object for a linked account.
#[derive(serde::Serialize)]
#[napi(object, use_nullable = true)]
pub struct Auth0User {
  /// The `linked_account_id` (Auth0's full form, e.g. `'google-oauth2|1034'`, when it is one).
  #[napi(js_name = "user_id")]
  pub user_id: String,
  /// The end-user email when set, else the first identity's email; null when none.
  pub email: Option<String>,
  #[napi(js_name = "email_verified")]
  pub email_verified: bool,
  pub name: Option<String>,
  /// ISO-8601 UTC with milliseconds.
  #[napi(js_name = "created_at")]
  pub created_at: String,
  #[napi(js_name = "updated_at")]
  pub updated_at: String,
  /// `identities[0]` is the account's own identity (`{ provider, user_id }` from an id of the
  /// form `provider|user_id`, else `{ provider: 'linkvault', connection: 'linkvault', user_id:
  /// id }`), then the linked identities in the order they joined.
  pub identities: Vec<LinkedIdentity>,
  /// The account's UDF as an object.
  #[napi(js_name = "app_metadata", ts_type = "Record<string, unknown>")]
  pub app_metadata: Map<String, Value>,
  /// Always `{}`: linkvault keeps user data in `app_metadata` (the UDF).
  #[napi(js_name = "user_metadata", ts_type = "Record<string, never>")]
  pub user_metadata: Map<String, Value>,
}

fn to_js(u: User) -> Auth0User {
  Auth0User {
    user_id: u.user_id,
    email: u.email,
    email_verified: u.email_verified,
    name: u.name,
    created_at: iso8601(u.created_at),
    updated_at: iso8601(u.updated_at),
    identities: u.identities.into_iter().map(to_js_identity).collect(),
    app_metadata: u.app_metadata,
    user_metadata: Map::new(),
  }
}

#[napi]
impl Client {
  /// The account `id` as Auth0's user object (`GET /api/v2/users/{id}`); `NOT_FOUND` if
  /// unknown.
  #[napi(ts_args_type = "id: string", ts_return_type = "Promise<Auth0User>")]
  pub fn get_user<'e>(
    &self,
    env: &'e Env,
    id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = with_json(id, "id", |v| self.vault.get_user(v));
    promise(env, p, |u| Json::of(&to_js(u)))
  }

  /// Users whose email (end-user email or an identity's) matches after trimming and Unicode
  /// lowercasing, in creation order (`GET /api/v2/users-by-email`, without Auth0's case
  /// sensitivity); `[]` when none.
  #[napi(
    ts_args_type = "email: string",
    ts_return_type = "Promise<Auth0User[]>"
  )]
  pub fn get_users_by_email<'e>(
    &self,
    env: &'e Env,
    email: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = with_json(email, "email", |v| self.vault.get_users_by_email(v));
    promise(env, p, |v| {
      Json::of(&v.into_iter().map(to_js).collect::<Vec<_>>())
    })
  }
}

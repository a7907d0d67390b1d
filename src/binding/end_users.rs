//! Fiskil's end-user methods of `Client` (`createEndUser`, `getEndUser`, `getEndUsers`,
//! `updateEndUser`, `deleteEndUser`). An end user is a linked account: `end_user_id` is its
//! `linked_account_id`.

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;

use super::client::Client;
use super::js::{json_arg, promise, with_json};
use crate::end_users::EndUser as CoreEndUser;
use crate::store::Pending;

/// Body of `createEndUser` / `updateEndUser` (Fiskil's end-user fields).
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct EndUserInput {
  /// At most 320 characters with one `@` (trimmed). Not unique, as at Fiskil. `null` clears it
  /// (update).
  #[napi(ts_type = "string | null")]
  pub email: Option<String>,
  /// The account's `name`, at most 1,024 characters. `null` clears it (update).
  #[napi(ts_type = "string | null")]
  pub name: Option<String>,
  /// E.164: `+`, country code and number, at most 15 digits, no spaces (`'+61412345678'`).
  /// `null` clears it (update).
  #[napi(ts_type = "string | null")]
  pub phone: Option<String>,
  /// Australian Business Number: 11 digits with a valid checksum (spaces between groups are
  /// dropped: `'51 824 753 556'` is stored as `'51824753556'`). `null` clears it (update).
  #[napi(ts_type = "string | null")]
  pub abn: Option<String>,
}

/// Filter of `getEndUsers`.
// Type-only (see `EndUserInput`).
#[allow(dead_code)]
#[napi(object)]
pub struct EndUserQuery {
  /// Matched after trimming and Unicode lowercasing (`' Ann@X.com'` finds `ann@x.com`).
  pub email: String,
}

/// What `createEndUser` returns (Fiskil's response).
#[napi(object)]
pub struct CreatedEndUser {
  /// The new end user's id: a UUID, and the `linked_account_id` of its linked account.
  #[napi(js_name = "end_user_id")]
  pub end_user_id: String,
}

/// Fiskil's end-user object; fields not set are absent.
#[napi(object)]
pub struct EndUser {
  /// The end user's id (its `linked_account_id`).
  pub id: String,
  pub email: Option<String>,
  pub name: Option<String>,
  pub phone: Option<String>,
  pub abn: Option<String>,
}

fn to_js(u: CoreEndUser) -> EndUser {
  EndUser {
    id: u.id,
    email: u.email,
    name: u.name,
    phone: u.phone,
    abn: u.abn,
  }
}

#[napi]
impl Client {
  /// Creates an end user: a new linked account with a generated id (a UUID) holding the fields
  /// sent (all optional). Appends `linked_account.created`. Bad `email`, `name`, `phone` or
  /// `abn`, or any other key: `VALIDATION_ERROR` naming it.
  #[napi(
    ts_args_type = "end_user?: EndUserInput",
    ts_return_type = "Promise<CreatedEndUser>"
  )]
  pub fn create_end_user<'e>(
    &self,
    env: &'e Env,
    end_user: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, CreatedEndUser>> {
    let p = with_json(end_user, "end_user", |v| {
      self.vault.create_end_user(Some(v))
    });
    promise(env, p, |u| CreatedEndUser { end_user_id: u.id })
  }

  /// Gets an end user (any linked account); `NOT_FOUND` (Fiskil's `end_user_not_found`) if
  /// unknown.
  #[napi(
    ts_args_type = "end_user_id: string",
    ts_return_type = "Promise<EndUser>"
  )]
  pub fn get_end_user<'e>(
    &self,
    env: &'e Env,
    end_user_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, EndUser>> {
    let p = with_json(end_user_id, "end_user_id", |v| self.vault.get_end_user(v));
    promise(env, p, to_js)
  }

  /// End users whose email matches (trimmed, case-insensitive), in creation order; `[]` when
  /// none. Emails are not unique.
  #[napi(
    ts_args_type = "query: EndUserQuery",
    ts_return_type = "Promise<EndUser[]>"
  )]
  pub fn get_end_users<'e>(
    &self,
    env: &'e Env,
    query: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Vec<EndUser>>> {
    let p = with_json(query, "query", |v| self.vault.get_end_users(Some(v)));
    promise(env, p, |v| v.into_iter().map(to_js).collect())
  }

  /// Updates an end user's fields: sent ones are set, `null` clears one, others are kept.
  /// Resolves with no value (Fiskil answers 204). A change bumps the account's `__v` and appends
  /// `linked_account.updated` (field names only). `NOT_FOUND` if unknown.
  #[napi(
    ts_args_type = "end_user_id: string, end_user: EndUserInput",
    ts_return_type = "Promise<void>"
  )]
  pub fn update_end_user<'e>(
    &self,
    env: &'e Env,
    end_user_id: Option<Unknown<'_>>,
    end_user: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, ()>> {
    let p = match (
      json_arg(end_user_id, "end_user_id"),
      json_arg(end_user, "end_user"),
    ) {
      (Ok(id), Ok(f)) => self.vault.update_end_user(&id, Some(&f)),
      (Err(e), _) | (_, Err(e)) => Pending::ready(Err(e)),
    };
    promise(env, p, |_| ())
  }

  /// Deletes an end user: its linked account with everything attached (consents end with
  /// `account_deleted`, tokens are revoked). Resolves with no value; `NOT_FOUND` if unknown.
  #[napi(ts_args_type = "end_user_id: string", ts_return_type = "Promise<void>")]
  pub fn delete_end_user<'e>(
    &self,
    env: &'e Env,
    end_user_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, ()>> {
    let p = with_json(end_user_id, "end_user_id", |v| {
      self.vault.delete_end_user(v)
    });
    promise(env, p, |_| ())
  }
}

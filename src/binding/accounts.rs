//! Linked-account methods of `Client`, with the names and shapes of Cobalt's Node SDK.

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;
use serde_json::{Map, Value};

use super::client::Client;
use super::identities::{to_js_identity, LinkedIdentity};
use super::js::{json_arg, promise, with_json, Json};
use crate::accounts::{self, Account, Credentials, KeysetPage, OffsetPage, UpsertOutcome};
use crate::clock::iso8601;

/// The customer's own app entry. Sent `your_app` replaces the stored one as a whole.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct YourAppInput {
  /// Your app's id (required by Cobalt's older docs, optional here).
  #[napi(js_name = "app_id")]
  pub app_id: Option<String>,
  /// Header-like pairs used to call your API for this account. Required, as Cobalt requires
  /// it (`VALIDATION_ERROR`, `field: 'your_app.auth_credentials'`). Sealed at rest; only
  /// `getLinkedAccountCredentials` returns them. No other key is accepted in `your_app`: one
  /// would be a header meant for here (`VALIDATION_ERROR` naming it).
  #[napi(js_name = "auth_credentials", ts_type = "Record<string, unknown>")]
  pub auth_credentials: Map<String, Value>,
}

/// Payload of `createLinkedAccount` / `upsertLinkedAccount` (Cobalt's `createLinkedAccountPayload`).
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct LinkedAccountPayload {
  /// Your id for this end user, unique per (orgId, environment); 1–256 characters.
  #[napi(js_name = "linked_account_id")]
  pub linked_account_id: Option<String>,
  /// Alias of `linked_account_id` (Cobalt v3).
  #[napi(js_name = "account_id")]
  pub account_id: Option<String>,
  /// Display name, up to 1,024 characters. `null` clears it; omitted keeps it.
  #[napi(ts_type = "string | null")]
  pub name: Option<String>,
  /// User-defined fields. Keys sent are set, keys not sent are kept, `null` removes a key.
  #[napi(ts_type = "Record<string, unknown>")]
  pub udf: Option<Map<String, Value>>,
  /// Your app and its credentials. `null` removes it; omitted keeps it.
  #[napi(js_name = "your_app", ts_type = "YourAppInput | null")]
  pub your_app: Option<YourAppInput>,
  /// Cobalt v3 nesting: `name`, `udf`, `your_app` here win over the flat fields.
  #[napi(
    ts_type = "{ name?: string | null; udf?: Record<string, unknown>; your_app?: YourAppInput | null }"
  )]
  pub payload: Option<Map<String, Value>>,
}

/// Options of `upsertLinkedAccount`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct UpsertOptions {
  /// Compare-and-set: only write if the stored `__v` equals this, else `VERSION_CONFLICT`.
  pub if_version: Option<i64>,
}

/// One user-defined field as returned.
#[derive(serde::Serialize)]
#[napi(object)]
pub struct UdfEntry {
  #[napi(js_name = "key_name")]
  pub key_name: String,
  /// The value as it was sent.
  #[napi(js_name = "key_value", ts_type = "unknown")]
  pub key_value: Value,
  #[napi(js_name = "_id")]
  #[serde(rename = "_id")]
  pub id: String,
  #[napi(js_name = "createdAt")]
  #[serde(rename = "createdAt")]
  pub created_at: String,
  #[napi(js_name = "updatedAt")]
  #[serde(rename = "updatedAt")]
  pub updated_at: String,
}

/// The `your_app` of an account as returned (never with credentials).
#[derive(serde::Serialize)]
#[napi(object)]
pub struct YourAppRef {
  #[napi(js_name = "app_id")]
  #[serde(skip_serializing_if = "Option::is_none")]
  pub app_id: Option<String>,
}

/// A linked account (Cobalt's response object). Credentials are never included.
#[derive(serde::Serialize)]
#[napi(object)]
pub struct LinkedAccount {
  /// 24-hex id of the record.
  #[napi(js_name = "_id")]
  #[serde(rename = "_id")]
  pub id: String,
  #[napi(js_name = "associated_org")]
  pub associated_org: String,
  #[napi(js_name = "account_id")]
  pub account_id: String,
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: String,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub name: Option<String>,
  pub udf: Vec<UdfEntry>,
  #[napi(js_name = "your_app")]
  #[serde(skip_serializing_if = "Option::is_none")]
  pub your_app: Option<YourAppRef>,
  /// ISO-8601 UTC with milliseconds.
  #[napi(js_name = "createdAt")]
  #[serde(rename = "createdAt")]
  pub created_at: String,
  #[napi(js_name = "updatedAt")]
  #[serde(rename = "updatedAt")]
  pub updated_at: String,
  /// Version: 0 on create, +1 on every update that changes something.
  #[napi(js_name = "__v")]
  #[serde(rename = "__v")]
  pub version: i64,
  /// Only on `createLinkedAccount` / `upsertLinkedAccount`: whether this call created it.
  #[napi(js_name = "new_account")]
  #[serde(skip_serializing_if = "Option::is_none")]
  pub new_account: Option<bool>,
  /// Identities linked to the account (`linkIdentity`, `linkAccounts`), in the order they
  /// joined it.
  pub identities: Vec<LinkedIdentity>,
  /// Fiskil end-user email (`createEndUser` / `updateEndUser`), when set.
  #[serde(skip_serializing_if = "Option::is_none")]
  pub email: Option<String>,
  /// Fiskil end-user phone in E.164, when set.
  #[serde(skip_serializing_if = "Option::is_none")]
  pub phone: Option<String>,
  /// Fiskil end-user ABN (11 digits), when set.
  #[serde(skip_serializing_if = "Option::is_none")]
  pub abn: Option<String>,
}

/// Options of `getAllLinkedAccounts`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct PageQuery {
  /// Page number from 1 (default 1).
  pub page: Option<u32>,
  /// Page size, 1–1000 (default 10).
  pub limit: Option<u32>,
  /// Exact UDF values that must all match.
  #[napi(ts_type = "Record<string, unknown>")]
  pub udf: Option<Map<String, Value>>,
  /// Case-insensitive substring of the id or the name.
  pub search: Option<String>,
}

/// The paginated envelope of `getAllLinkedAccounts` (mongoose-paginate shape).
#[derive(serde::Serialize)]
#[napi(object, use_nullable = true)]
pub struct LinkedAccountPage {
  pub docs: Vec<LinkedAccount>,
  #[napi(js_name = "totalDocs")]
  #[serde(rename = "totalDocs")]
  pub total_docs: i64,
  pub limit: i64,
  #[napi(js_name = "totalPages")]
  #[serde(rename = "totalPages")]
  pub total_pages: i64,
  pub page: i64,
  #[napi(js_name = "pagingCounter")]
  #[serde(rename = "pagingCounter")]
  pub paging_counter: i64,
  #[napi(js_name = "hasPrevPage")]
  #[serde(rename = "hasPrevPage")]
  pub has_prev_page: bool,
  #[napi(js_name = "hasNextPage")]
  #[serde(rename = "hasNextPage")]
  pub has_next_page: bool,
  #[napi(js_name = "prevPage")]
  #[serde(rename = "prevPage")]
  pub prev_page: Option<i64>,
  #[napi(js_name = "nextPage")]
  #[serde(rename = "nextPage")]
  pub next_page: Option<i64>,
}

/// Options of `listLinkedAccounts`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct KeysetQuery {
  /// The `next` cursor of the previous page; omit for the first page.
  pub after: Option<String>,
  /// Page size, 1–1000 (default 50).
  pub limit: Option<u32>,
  #[napi(ts_type = "Record<string, unknown>")]
  pub udf: Option<Map<String, Value>>,
  pub search: Option<String>,
}

/// A keyset page of `listLinkedAccounts`.
#[derive(serde::Serialize)]
#[napi(object, use_nullable = true)]
pub struct LinkedAccountList {
  pub docs: Vec<LinkedAccount>,
  /// Opaque cursor for the next page, or null at the end.
  pub next: Option<String>,
}

/// What `getLinkedAccountCredentials` returns.
#[napi(object)]
pub struct LinkedAccountCredentials {
  #[napi(js_name = "app_id")]
  pub app_id: Option<String>,
  #[napi(js_name = "auth_credentials", ts_type = "Record<string, unknown>")]
  pub auth_credentials: Map<String, Value>,
}

/// `{ message }` of `deleteLinkedAccount` (Cobalt's response).
#[napi(object)]
pub struct DeleteResult {
  #[napi(ts_type = "'User deleted successfully'")]
  pub message: String,
}

pub(crate) fn to_js_account(a: Account) -> LinkedAccount {
  LinkedAccount {
    id: a.oid,
    associated_org: a.org_id,
    account_id: a.account_id,
    environment: a.environment,
    name: a.name,
    udf: a
      .udf
      .into_iter()
      .map(|u| UdfEntry {
        key_name: u.key,
        key_value: u.value,
        id: u.oid,
        created_at: iso8601(u.created_at),
        updated_at: iso8601(u.updated_at),
      })
      .collect(),
    your_app: a.your_app.map(|app_id| YourAppRef { app_id }),
    created_at: iso8601(a.created_at),
    updated_at: iso8601(a.updated_at),
    version: a.version,
    new_account: None,
    identities: a.identities.into_iter().map(to_js_identity).collect(),
    email: a.end_user.email,
    phone: a.end_user.phone,
    abn: a.end_user.abn,
  }
}

fn upserted(o: UpsertOutcome) -> LinkedAccount {
  let mut a = to_js_account(o.account);
  a.new_account = Some(o.new_account);
  a
}

fn page(p: OffsetPage) -> LinkedAccountPage {
  let total_pages = ((p.total + p.limit - 1) / p.limit).max(1);
  LinkedAccountPage {
    docs: p.docs.into_iter().map(to_js_account).collect(),
    total_docs: p.total,
    limit: p.limit,
    total_pages,
    page: p.page,
    paging_counter: (p.page - 1) * p.limit + 1,
    has_prev_page: p.page > 1,
    has_next_page: p.page < total_pages,
    prev_page: (p.page > 1).then(|| p.page - 1),
    next_page: (p.page < total_pages).then(|| p.page + 1),
  }
}

fn keyset(p: KeysetPage) -> LinkedAccountList {
  LinkedAccountList {
    docs: p.docs.into_iter().map(to_js_account).collect(),
    next: p.next.map(accounts::encode_cursor),
  }
}

fn credentials(c: Option<Credentials>) -> Option<LinkedAccountCredentials> {
  c.map(|c| LinkedAccountCredentials {
    app_id: c.app_id,
    auth_credentials: c.auth_credentials,
  })
}

#[napi]
impl Client {
  /// Creates a linked account; rejects with `ALREADY_EXISTS` if the id exists in this scope.
  #[napi(
    ts_args_type = "payload: LinkedAccountPayload",
    ts_return_type = "Promise<LinkedAccount & { new_account: true }>"
  )]
  pub fn create_linked_account<'e>(
    &self,
    env: &'e Env,
    payload: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = with_json(payload, "payload", |v| self.vault.create_linked_account(v));
    promise(env, p, |o| Json::of(&upserted(o)))
  }

  /// Creates or updates a linked account. Fields not sent are kept; UDF keys merge (null
  /// removes one); a sent `your_app` replaces the stored one. `__v` grows only when something
  /// changed. `options.ifVersion` makes it a compare-and-set (`VERSION_CONFLICT` on mismatch).
  #[napi(
    ts_args_type = "payload: LinkedAccountPayload, options?: UpsertOptions",
    ts_return_type = "Promise<LinkedAccount & { new_account: boolean }>"
  )]
  pub fn upsert_linked_account<'e>(
    &self,
    env: &'e Env,
    payload: Option<Unknown<'_>>,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = match (json_arg(payload, "payload"), json_arg(options, "options")) {
      (Ok(v), Ok(o)) => self.vault.upsert_linked_account(&v, Some(&o)),
      (Err(e), _) | (_, Err(e)) => crate::store::Pending::ready(Err(e)),
    };
    promise(env, p, |o| Json::of(&upserted(o)))
  }

  /// Gets one linked account; `NOT_FOUND` if it does not exist in this scope.
  #[napi(
    ts_args_type = "linked_account_id: string",
    ts_return_type = "Promise<LinkedAccount>"
  )]
  pub fn get_linked_account_by_id<'e>(
    &self,
    env: &'e Env,
    linked_account_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = with_json(linked_account_id, "linked_account_id", |v| {
      self.vault.get_linked_account_by_id(v)
    });
    promise(env, p, |a| Json::of(&to_js_account(a)))
  }

  /// Deletes a linked account and everything attached to it; `NOT_FOUND` if unknown.
  #[napi(
    ts_args_type = "linked_account_id: string",
    ts_return_type = "Promise<DeleteResult>"
  )]
  pub fn delete_linked_account<'e>(
    &self,
    env: &'e Env,
    linked_account_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, DeleteResult>> {
    let p = with_json(linked_account_id, "linked_account_id", |v| {
      self.vault.delete_linked_account(v)
    });
    promise(env, p, |_| DeleteResult {
      message: "User deleted successfully".into(),
    })
  }

  /// Lists linked accounts a page at a time with a total count (Cobalt's paginated envelope).
  /// For large lists prefer `listLinkedAccounts`.
  #[napi(
    ts_args_type = "options?: PageQuery",
    ts_return_type = "Promise<LinkedAccountPage>"
  )]
  pub fn get_all_linked_accounts<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = with_json(options, "options", |v| {
      self.vault.get_all_linked_accounts(Some(v))
    });
    promise(env, p, |o| Json::of(&page(o)))
  }

  /// Lists linked accounts in creation order with an opaque cursor (`next`, null at the end).
  /// Each account is visited once even while others are inserted.
  #[napi(
    ts_args_type = "options?: KeysetQuery",
    ts_return_type = "Promise<LinkedAccountList>"
  )]
  pub fn list_linked_accounts<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = with_json(options, "options", |v| {
      self.vault.list_linked_accounts(Some(v))
    });
    promise(env, p, |o| Json::of(&keyset(o)))
  }

  /// The account's `{ app_id, auth_credentials }`, decrypted, or null when it has no `your_app`.
  #[napi(
    ts_args_type = "linked_account_id: string",
    ts_return_type = "Promise<LinkedAccountCredentials | null>"
  )]
  pub fn get_linked_account_credentials<'e>(
    &self,
    env: &'e Env,
    linked_account_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Option<LinkedAccountCredentials>>> {
    let p = with_json(linked_account_id, "linked_account_id", |v| {
      self.vault.get_linked_account_credentials(v)
    });
    promise(env, p, credentials)
  }
}

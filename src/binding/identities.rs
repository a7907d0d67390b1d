//! Identity-linking methods of `Client` (Auth0's account linking, without its losses).

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;
use serde_json::{Map, Value};

use super::accounts::to_js_account;
use super::client::Client;
use super::js::{json_arg, promise, Json};
use crate::clock::iso8601;
use crate::identities::{self, Identity, LinkSuggestion as CoreSuggestion};
use crate::store::Pending;

/// One identity of a linked account (Auth0's identity shape).
#[derive(serde::Serialize)]
#[napi(object)]
pub struct LinkedIdentity {
  /// e.g. `'google-oauth2'`, `'github'`, `'auth0'`.
  pub provider: String,
  /// The id at the provider, without the `provider|` prefix; always a string.
  #[napi(js_name = "user_id")]
  pub user_id: String,
  /// The connection it was linked with, else the provider's name (Auth0's connection names
  /// for social providers).
  pub connection: String,
  /// Auth0's `connection_id`, when the link named one.
  #[napi(js_name = "connection_id")]
  #[serde(skip_serializing_if = "Option::is_none")]
  pub connection_id: Option<String>,
  #[napi(js_name = "isSocial")]
  #[serde(rename = "isSocial")]
  pub is_social: bool,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub email: Option<String>,
  #[napi(js_name = "email_verified")]
  pub email_verified: bool,
  /// Attributes from the identity provider.
  #[napi(js_name = "profileData", ts_type = "Record<string, unknown>")]
  #[serde(rename = "profileData", skip_serializing_if = "Option::is_none")]
  pub profile_data: Option<Map<String, Value>>,
  /// When the identity joined the account that holds it now (ISO-8601 UTC).
  #[napi(js_name = "linkedAt")]
  #[serde(rename = "linkedAt")]
  pub linked_at: String,
}

/// Input of `linkIdentity`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct IdentityInput {
  /// 1–64 characters of `[A-Za-z0-9._-]`.
  pub provider: String,
  /// String or number (stringified: `9` and `'9'` are the same identity); 1–256 characters.
  #[napi(js_name = "user_id", ts_type = "string | number")]
  pub user_id: String,
  /// Connection name. `null` clears it (reads then report the provider); omitted keeps the
  /// stored one.
  #[napi(ts_type = "string | null")]
  pub connection: Option<String>,
  /// Auth0's connection id, `con_` + 16 letters or digits; stored on the identity. `null`
  /// clears it.
  #[napi(js_name = "connection_id", ts_type = "string | null")]
  pub connection_id: Option<String>,
  /// Default false.
  #[napi(js_name = "isSocial")]
  pub is_social: Option<bool>,
  /// At most 320 characters with one `@`. `null` clears it.
  #[napi(ts_type = "string | null")]
  pub email: Option<String>,
  /// Default false. Changing `email` without sending this resets it to false.
  #[napi(js_name = "email_verified")]
  pub email_verified: Option<bool>,
  /// Provider attributes, a JSON object of at most 64 KiB. `null` clears it.
  #[napi(js_name = "profileData", ts_type = "Record<string, unknown> | null")]
  pub profile_data: Option<Map<String, Value>>,
}

/// `{ link_with }`: the user-initiated form of `linkAccounts`.
// Type-only (see `IdentityInput`).
#[allow(dead_code)]
#[napi(object)]
pub struct LinkWith {
  /// A session token minted for the secondary account, at most 10 minutes old; single-use.
  #[napi(js_name = "link_with")]
  pub link_with: String,
}

/// Options of `linkAccounts`.
// Type-only (see `IdentityInput`).
#[allow(dead_code)]
#[napi(object)]
pub struct LinkAccountsOptions {
  /// Which value a UDF key present on both accounts keeps (default `'primary_wins'`). Keys only
  /// one side has are always kept.
  #[napi(ts_type = "'primary_wins' | 'secondary_wins'")]
  pub udf: Option<String>,
}

/// A suggestion to link two accounts, never acted on automatically.
#[napi(object)]
pub struct LinkSuggestion {
  /// The other account.
  #[napi(js_name = "linked_account_id")]
  pub linked_account_id: String,
  #[napi(ts_type = "'verified_email'")]
  pub reason: String,
  /// The shared email, trimmed and lowercased.
  pub email: String,
}

pub(crate) fn to_js_identity(i: Identity) -> LinkedIdentity {
  LinkedIdentity {
    connection: crate::users::connection_of(&i),
    connection_id: i.connection_id,
    provider: i.provider,
    user_id: i.user_id,
    is_social: i.is_social,
    email: i.email,
    email_verified: i.email_verified,
    profile_data: i.profile_data,
    linked_at: iso8601(i.linked_at),
  }
}

fn identities(v: Vec<Identity>) -> Vec<LinkedIdentity> {
  v.into_iter().map(to_js_identity).collect()
}

fn suggestion(s: CoreSuggestion) -> LinkSuggestion {
  LinkSuggestion {
    linked_account_id: s.linked_account_id,
    reason: identities::REASON_VERIFIED_EMAIL.to_string(),
    email: s.email,
  }
}

#[napi]
impl Client {
  /// Attaches an identity to a linked account and returns the account's linked `identities`
  /// (`getUser(id).identities` adds the account's own identity first, as Auth0 lists it).
  /// Attaching one already on this account refreshes its profile fields (idempotent); one held
  /// by another account rejects with `IDENTITY_ALREADY_LINKED` (409) and changes nothing. The
  /// own identity of another existing account (`{ provider: 'google-oauth2', user_id: 1034 }`
  /// for `google-oauth2|1034`) merges that account in, as Auth0's link of an existing user;
  /// unlinking it undoes the merge. The account's own identity: `VALIDATION_ERROR`.
  #[napi(
    ts_args_type = "linked_account_id: string, identity: IdentityInput",
    ts_return_type = "Promise<LinkedIdentity[]>"
  )]
  pub fn link_identity<'e>(
    &self,
    env: &'e Env,
    linked_account_id: Option<Unknown<'_>>,
    identity: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Vec<LinkedIdentity>>> {
    let p = match (
      json_arg(linked_account_id, "linked_account_id"),
      json_arg(identity, "identity"),
    ) {
      (Ok(id), Ok(i)) => self.vault.link_identity(&id, &i),
      (Err(e), _) | (_, Err(e)) => Pending::ready(Err(e)),
    };
    promise(env, p, identities)
  }

  /// Merges the secondary account into the primary in one transaction and returns the merged
  /// primary: every identity moves (the secondary's own identity too, so that unlinking it
  /// undoes the merge), UDF keys merge by `options.udf`, the secondary disappears (`NOT_FOUND`
  /// afterwards) and a merge record keeps its full state for `unlinkIdentity`. A secondary whose
  /// own identity another account holds: `IDENTITY_ALREADY_LINKED`.
  /// The secondary is a `linked_account_id`, or `{ link_with: <session token of the secondary> }`.
  /// Linking an account to itself rejects with `VALIDATION_ERROR`.
  #[napi(
    ts_args_type = "primary_id: string, secondary: string | LinkWith, options?: LinkAccountsOptions",
    ts_return_type = "Promise<LinkedAccount>"
  )]
  pub fn link_accounts<'e>(
    &self,
    env: &'e Env,
    primary_id: Option<Unknown<'_>>,
    secondary: Option<Unknown<'_>>,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = match (
      json_arg(primary_id, "primary_id"),
      json_arg(secondary, "secondary_id"),
      json_arg(options, "options"),
    ) {
      (Ok(a), Ok(b), Ok(o)) => self.vault.link_accounts(&a, &b, Some(&o)),
      (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Pending::ready(Err(e)),
    };
    promise(env, p, |a| Json::of(&to_js_account(a)))
  }

  /// Detaches an identity and returns the account's remaining linked `identities`. The
  /// identity leaves as a standalone linked account: the account it came from by a merge is
  /// restored (original id when free, name, udf, your_app, consents; unlinking its own identity
  /// brings back everything the merge brought), else it is the account whose own identity it is
  /// (`${provider}|${user_id}`). If the ids are taken: `ALREADY_EXISTS`, nothing changes. The
  /// account's own identity: `VALIDATION_ERROR`. Unknown identity: `NOT_FOUND`.
  #[napi(
    ts_args_type = "linked_account_id: string, provider: string, user_id: string | number",
    ts_return_type = "Promise<LinkedIdentity[]>"
  )]
  pub fn unlink_identity<'e>(
    &self,
    env: &'e Env,
    linked_account_id: Option<Unknown<'_>>,
    provider: Option<Unknown<'_>>,
    user_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Vec<LinkedIdentity>>> {
    let p = match (
      json_arg(linked_account_id, "linked_account_id"),
      json_arg(provider, "provider"),
      json_arg(user_id, "user_id"),
    ) {
      (Ok(a), Ok(p), Ok(u)) => self.vault.unlink_identity(&a, &p, &u),
      (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Pending::ready(Err(e)),
    };
    promise(env, p, identities)
  }

  /// Accounts with an identity of this email, or this end-user email, compared after trimming
  /// and Unicode lowercasing (`Ann@X.com` finds `ann@x.com`); consistent immediately after
  /// writes.
  #[napi(
    ts_args_type = "email: string",
    ts_return_type = "Promise<LinkedAccount[]>"
  )]
  pub fn get_linked_accounts_by_email<'e>(
    &self,
    env: &'e Env,
    email: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Json>> {
    let p = match json_arg(email, "email") {
      Ok(e) => self.vault.get_linked_accounts_by_email(&e),
      Err(e) => Pending::ready(Err(e)),
    };
    promise(env, p, |v| {
      Json::of(&v.into_iter().map(to_js_account).collect::<Vec<_>>())
    })
  }

  /// Other accounts sharing an email that is verified on both sides. Suggestions only:
  /// nothing is ever linked automatically, and unverified emails never produce one.
  #[napi(
    ts_args_type = "linked_account_id: string",
    ts_return_type = "Promise<LinkSuggestion[]>"
  )]
  pub fn get_link_suggestions<'e>(
    &self,
    env: &'e Env,
    linked_account_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Vec<LinkSuggestion>>> {
    let p = match json_arg(linked_account_id, "linked_account_id") {
      Ok(id) => self.vault.get_link_suggestions(&id),
      Err(e) => Pending::ready(Err(e)),
    };
    promise(env, p, |v| v.into_iter().map(suggestion).collect())
  }
}

//! Identity linking and account merging: Auth0's `identities[]` model (one end user who signs in
//! several ways, `google-oauth2|123`, `github|9`, ...) without Auth0's losses.
//!
//! - `(provider, user_id)` is unique within a scope, enforced by a UNIQUE index, so no race can
//!   put one identity on two accounts (`IDENTITY_ALREADY_LINKED`).
//! - `linkAccounts` merges a secondary account into a primary in one transaction and keeps the
//!   secondary's full pre-merge state in a merge record (credentials stay sealed).
//! - `unlinkIdentity` restores the account an identity came from, from that record.
//! - Look-up by email is case-insensitive (trim + Unicode lowercasing), and link suggestions need
//!   an email verified on both sides. Nothing is ever linked automatically.
//!
//! This file holds the pure rules (input parsing, validation, UDF merge policy) and the `Vault`
//! methods; SQL lives in `store::identities`.

use std::fmt;

use serde_json::{Map, Value};

use crate::accounts::{self, Account, Patch, UdfRow, MAX_UDF_KEYS};
use crate::client::Vault;
use crate::error::{Error, Result};
use crate::input;
use crate::store::Pending;
use crate::users;

pub const MAX_PROVIDER_CHARS: usize = 64;
pub const MAX_USER_ID_CHARS: usize = 256;
pub const MAX_EMAIL_CHARS: usize = 320;
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;
pub const MAX_CONNECTION_CHARS: usize = 256;
/// Longest `link_with` token accepted before any verification.
pub const MAX_LINK_TOKEN_CHARS: usize = 8192;
/// A `link_with` token older than this (by its `iat`) is refused with `INVALID_TOKEN`.
pub const LINK_WITH_MAX_AGE_MS: i64 = 10 * 60 * 1000;
/// The only suggestion reason today.
pub const REASON_VERIFIED_EMAIL: &str = "verified_email";

/// One identity of a linked account (Auth0's identity shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
  pub provider: String,
  /// Without the `provider|` prefix, always a string.
  pub user_id: String,
  pub connection: Option<String>,
  /// Auth0's `connection_id` (`con_` + 16 alphanumerics), when the link named one.
  pub connection_id: Option<String>,
  pub is_social: bool,
  pub email: Option<String>,
  pub email_verified: bool,
  pub profile_data: Option<Map<String, Value>>,
  /// When the identity joined the account that holds it now (ms since the epoch).
  pub linked_at: i64,
}

/// A validated `linkIdentity` input. Profile fields not sent keep their stored value when the
/// identity is already on the account; `null` clears them.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityInput {
  pub provider: String,
  pub user_id: String,
  pub connection: Patch<String>,
  pub connection_id: Patch<String>,
  pub is_social: Option<bool>,
  pub email: Patch<String>,
  pub email_verified: Option<bool>,
  pub profile_data: Patch<Map<String, Value>>,
}

impl IdentityInput {
  /// The identity as it should be stored, given what is stored now (if it is on this account).
  /// Changing the email without sending `email_verified` resets it to false: a verification
  /// never carries over to another address.
  pub fn apply(&self, existing: Option<&Identity>, now: i64) -> Identity {
    fn patch<T: Clone>(p: &Patch<T>, old: Option<&Option<T>>) -> Option<T> {
      match p {
        Patch::Set(v) => Some(v.clone()),
        Patch::Clear => None,
        Patch::Keep => old.cloned().flatten(),
      }
    }
    let email = patch(&self.email, existing.map(|e| &e.email));
    let same_email = existing
      .map(|e| e.email.as_deref().map(normalize_email) == email.as_deref().map(normalize_email))
      .unwrap_or(false);
    let email_verified = match self.email_verified {
      Some(v) => v,
      None if same_email => existing.map(|e| e.email_verified).unwrap_or(false),
      None => false,
    };
    Identity {
      provider: self.provider.clone(),
      user_id: self.user_id.clone(),
      connection: patch(&self.connection, existing.map(|e| &e.connection)),
      connection_id: patch(&self.connection_id, existing.map(|e| &e.connection_id)),
      is_social: self
        .is_social
        .or(existing.map(|e| e.is_social))
        .unwrap_or(false),
      email,
      email_verified,
      profile_data: patch(&self.profile_data, existing.map(|e| &e.profile_data)),
      linked_at: existing.map(|e| e.linked_at).unwrap_or(now),
    }
  }
}

/// Length of an Auth0 `connection_id`: `con_` and 16 alphanumerics.
pub const CONNECTION_ID_CHARS: usize = 20;

/// Auth0's `connection_id` pattern, `^con_[A-Za-z0-9]{16}$`.
pub fn is_connection_id(s: &str) -> bool {
  s.len() == CONNECTION_ID_CHARS
    && s.starts_with("con_")
    && s.bytes().skip(4).all(|b| b.is_ascii_alphanumeric())
}

/// Who is merged into the primary by `linkAccounts`.
#[derive(Clone, PartialEq)]
pub enum LinkTarget {
  /// The secondary's `linked_account_id` (server-side link).
  Account(String),
  /// `{ link_with }`: a session token minted for the secondary (user-initiated link).
  Token(String),
}

impl fmt::Debug for LinkTarget {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match self {
      LinkTarget::Account(id) => f.debug_tuple("Account").field(id).finish(),
      LinkTarget::Token(_) => f.write_str("Token(<hidden>)"),
    }
  }
}

/// Which side's value a UDF key present on both accounts keeps. Keys only one side has are
/// always kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UdfPolicy {
  #[default]
  PrimaryWins,
  SecondaryWins,
}

impl UdfPolicy {
  pub fn as_str(self) -> &'static str {
    match self {
      UdfPolicy::PrimaryWins => "primary_wins",
      UdfPolicy::SecondaryWins => "secondary_wins",
    }
  }
}

/// `{ linked_account_id, reason: 'verified_email', email }`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSuggestion {
  pub linked_account_id: String,
  /// The shared email, normalized (trimmed, lowercased).
  pub email: String,
}

/// Trim + Unicode lowercasing: the form emails are compared in.
pub fn normalize_email(email: &str) -> String {
  email.trim().to_lowercase()
}

fn reject_unknown(m: &Map<String, Value>, allowed: &[&str], owner: &str) -> Result<()> {
  match m.keys().find(|k| !allowed.contains(&k.as_str())) {
    None => Ok(()),
    // An empty key cannot serve as a field name: report it under the object's own name.
    Some(k) if k.is_empty() => Err(Error::validation(
      owner,
      format!("{owner} has an empty key (allowed: {})", allowed.join(", ")),
    )),
    Some(k) => Err(Error::validation(
      k.as_str(),
      format!("{k} is not a known field (allowed: {})", allowed.join(", ")),
    )),
  }
}

/// `provider`: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn parse_provider(v: Option<&Value>) -> Result<String> {
  let bad = || {
    Error::validation(
      "provider",
      format!("provider must be 1 to {MAX_PROVIDER_CHARS} characters of A-Z a-z 0-9 . _ -"),
    )
  };
  match v {
    None | Some(Value::Null) => Err(Error::validation("provider", "provider is required")),
    Some(Value::String(s))
      if !s.is_empty()
        && s.len() <= MAX_PROVIDER_CHARS
        && s
          .bytes()
          .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) =>
    {
      Ok(s.clone())
    }
    Some(_) => Err(bad()),
  }
}

/// `user_id`: a string, or a safe integer that is stringified (`9` and `'9'` are one identity);
/// 1–256 characters once a string.
pub fn parse_user_id(v: Option<&Value>) -> Result<String> {
  let s = match v {
    None | Some(Value::Null) => return Err(Error::validation("user_id", "user_id is required")),
    Some(Value::String(s)) => s.clone(),
    Some(Value::Number(n)) => {
      const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
      let text = if let Some(i) = n.as_i64() {
        Some(i.to_string())
      } else {
        n.as_f64()
          .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_SAFE)
          .map(|f| (f as i64).to_string())
      };
      text
        .filter(|t| {
          t.parse::<i64>()
            .map(|i| i.unsigned_abs() <= MAX_SAFE as u64)
            == Ok(true)
        })
        .ok_or_else(|| {
          Error::validation(
            "user_id",
            "user_id must be a string or a safe integer (numbers are stringified)",
          )
        })?
    }
    Some(_) => {
      return Err(Error::validation(
        "user_id",
        "user_id must be a string or a number",
      ))
    }
  };
  let n = s.chars().count();
  if n == 0 || n > MAX_USER_ID_CHARS {
    return Err(Error::validation(
      "user_id",
      format!("user_id must be 1 to {MAX_USER_ID_CHARS} characters"),
    ));
  }
  Ok(s)
}

/// `email`: at most 320 characters with exactly one `@` between a non-empty local part and
/// domain (checked after trimming).
pub fn parse_email(v: &Value, field: &str) -> Result<String> {
  let Value::String(s) = v else {
    return Err(Error::validation(
      field,
      format!("{field} must be a string"),
    ));
  };
  let t = s.trim();
  let ok = s.chars().count() <= MAX_EMAIL_CHARS
    && t.matches('@').count() == 1
    && !t.starts_with('@')
    && !t.ends_with('@');
  if !ok {
    return Err(Error::validation(
      field,
      format!("{field} must be at most {MAX_EMAIL_CHARS} characters with one '@'"),
    ));
  }
  Ok(s.clone())
}

fn optional_string(
  f: &Map<String, Value>,
  key: &str,
  max: usize,
  check: impl Fn(&Value) -> Result<String>,
) -> Result<Patch<String>> {
  match f.get(key) {
    None => Ok(Patch::Keep),
    Some(Value::Null) => Ok(Patch::Clear),
    Some(v) => {
      let s = check(v)?;
      if s.chars().count() > max {
        return Err(Error::validation(
          key,
          format!("{key} must be at most {max} characters"),
        ));
      }
      Ok(Patch::Set(s))
    }
  }
}

fn optional_bool(f: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
  match f.get(key) {
    None | Some(Value::Null) => Ok(None),
    Some(Value::Bool(b)) => Ok(Some(*b)),
    Some(_) => Err(Error::validation(key, format!("{key} must be a boolean"))),
  }
}

/// Parses `linkIdentity`'s `{ provider, user_id, connection?, isSocial?, email?,
/// email_verified?, profileData? }`. Unknown fields are refused (they are usually typos).
pub fn parse_identity(v: &Value) -> Result<IdentityInput> {
  let Value::Object(m) = v else {
    return Err(Error::validation(
      "identity",
      "identity must be an object { provider, user_id, ... }",
    ));
  };
  reject_unknown(
    m,
    &[
      "provider",
      "user_id",
      "connection",
      "connection_id",
      "isSocial",
      "email",
      "email_verified",
      "profileData",
    ],
    "identity",
  )?;
  let provider = parse_provider(m.get("provider"))?;
  let user_id = parse_user_id(m.get("user_id"))?;
  let connection = optional_string(m, "connection", MAX_CONNECTION_CHARS, |v| match v {
    Value::String(s) if !s.is_empty() => Ok(s.clone()),
    _ => Err(Error::validation(
      "connection",
      "connection must be a non-empty string",
    )),
  })?;
  let connection_id = optional_string(m, "connection_id", CONNECTION_ID_CHARS, |v| match v {
    Value::String(s) if is_connection_id(s) => Ok(s.clone()),
    _ => Err(Error::validation(
      "connection_id",
      "connection_id must be 'con_' followed by 16 letters or digits (Auth0's form)",
    )),
  })?;
  let email = optional_string(m, "email", MAX_EMAIL_CHARS, |v| parse_email(v, "email"))?;
  let profile_data = match m.get("profileData") {
    None => Patch::Keep,
    Some(Value::Null) => Patch::Clear,
    Some(Value::Object(p)) => {
      let size = serde_json::to_string(p)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
      if size > MAX_PROFILE_BYTES {
        return Err(Error::validation(
          "profileData",
          format!("profileData is {size} bytes as JSON; the limit is {MAX_PROFILE_BYTES}"),
        ));
      }
      Patch::Set(p.clone())
    }
    Some(_) => {
      return Err(Error::validation(
        "profileData",
        "profileData must be an object",
      ))
    }
  };
  Ok(IdentityInput {
    provider,
    user_id,
    connection,
    connection_id,
    is_social: optional_bool(m, "isSocial")?,
    email,
    email_verified: optional_bool(m, "email_verified")?,
    profile_data,
  })
}

/// `linkAccounts`' second argument: a `linked_account_id`, or `{ link_with: <session token> }`
/// (nothing else may be sent with `link_with`).
pub fn parse_link_target(v: &Value) -> Result<LinkTarget> {
  match v {
    Value::Object(m) => {
      reject_unknown(m, &["link_with"], "secondary_id")?;
      match m.get("link_with") {
        Some(Value::String(t)) if !t.is_empty() && t.len() <= MAX_LINK_TOKEN_CHARS => {
          Ok(LinkTarget::Token(t.clone()))
        }
        None | Some(Value::Null) => Err(Error::validation("link_with", "link_with is required")),
        Some(Value::String(_)) => Err(Error::validation(
          "link_with",
          format!("link_with must be a session token of 1 to {MAX_LINK_TOKEN_CHARS} characters"),
        )),
        Some(_) => Err(Error::validation(
          "link_with",
          "link_with must be a session token string",
        )),
      }
    }
    Value::String(_) => Ok(LinkTarget::Account(input::id(
      Some(v),
      "secondary_id",
      accounts::MAX_ID_CHARS,
    )?)),
    Value::Null => Err(Error::validation(
      "secondary_id",
      "secondary_id is required",
    )),
    _ => Err(Error::validation(
      "secondary_id",
      "secondary_id must be a linked_account_id or { link_with }",
    )),
  }
}

/// `linkAccounts`' options: `{ udf?: 'primary_wins' | 'secondary_wins' }`.
pub fn parse_link_options(v: Option<&Value>) -> Result<UdfPolicy> {
  match v {
    None | Some(Value::Null) => Ok(UdfPolicy::default()),
    Some(Value::Object(m)) => {
      reject_unknown(m, &["udf"], "options")?;
      match m.get("udf") {
        None | Some(Value::Null) => Ok(UdfPolicy::default()),
        Some(Value::String(s)) if s == "primary_wins" => Ok(UdfPolicy::PrimaryWins),
        Some(Value::String(s)) if s == "secondary_wins" => Ok(UdfPolicy::SecondaryWins),
        Some(_) => Err(Error::validation(
          "udf",
          "udf must be 'primary_wins' or 'secondary_wins'",
        )),
      }
    }
    Some(_) => Err(Error::validation("options", "options must be an object")),
  }
}

/// Merges the secondary's UDF rows into the primary's. Keys only one side has are kept (rows
/// moved from the secondary keep their `_id` and `createdAt`); a key on both sides keeps the
/// winner's value. Fails with `VALIDATION_ERROR` (`udf`) when the union would exceed the key
/// limit, so that nothing of the secondary is dropped. Returns the keys that changed.
pub fn merge_udf_by_policy(
  primary: &mut Vec<UdfRow>,
  secondary: &[UdfRow],
  policy: UdfPolicy,
  now: i64,
) -> Result<Vec<String>> {
  let added = secondary
    .iter()
    .filter(|s| !primary.iter().any(|p| p.key == s.key))
    .count();
  if primary.len() + added > MAX_UDF_KEYS {
    return Err(Error::validation(
      "udf",
      format!(
        "merging would give the primary {} udf keys; the limit is {MAX_UDF_KEYS} (remove keys first)",
        primary.len() + added
      ),
    ));
  }
  let mut changed = Vec::new();
  for s in secondary {
    match primary.iter_mut().find(|p| p.key == s.key) {
      Some(p) => {
        if policy == UdfPolicy::SecondaryWins && p.json != s.json {
          p.value = s.value.clone();
          p.json = s.json.clone();
          p.updated_at = now;
          changed.push(s.key.clone());
        }
      }
      None => {
        let mut row = s.clone();
        row.updated_at = now;
        primary.push(row);
        changed.push(s.key.clone());
      }
    }
  }
  Ok(changed)
}

// ---------------------------------------------------------------------------------------------
// Link, merge and unlink decisions (Auth0 semantics on own identities, `crate::users`). The
// store looks the facts up and carries the decision out in its transaction.

/// Which account holds an identity now, as seen from the account being linked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
  Nobody,
  ThisAccount,
  Another,
}

/// What `linkIdentity(account_id, { provider, user_id })` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkAction {
  /// Attach it to the account.
  Insert,
  /// It is already on the account: refresh its profile fields.
  Refresh,
  /// It is the own identity of this other existing account: merge that account in, as Auth0
  /// does when linking an existing user.
  Merge(String),
}

/// Decides a link. `owner_exists` says whether the account this identity is the own identity
/// of (`users::account_of_identity`) exists.
pub fn link_action(
  account_id: &str,
  provider: &str,
  user_id: &str,
  holder: Holder,
  owner_exists: bool,
) -> Result<LinkAction> {
  match holder {
    Holder::ThisAccount => return Ok(LinkAction::Refresh),
    Holder::Another => {
      return Err(Error::new(
        crate::error::ErrorKind::IdentityAlreadyLinked,
        format!("identity {provider}|{user_id} is already linked to another account"),
      ))
    }
    Holder::Nobody => {}
  }
  let owner = users::account_of_identity(provider, user_id);
  if !users::is_own(&owner, provider, user_id) {
    return Ok(LinkAction::Insert);
  }
  if owner == account_id {
    return Err(Error::validation(
      "user_id",
      "this is the account's own identity: an account cannot be linked to itself",
    ));
  }
  Ok(if owner_exists {
    LinkAction::Merge(owner)
  } else {
    LinkAction::Insert
  })
}

/// Where a merged secondary's own identity goes. Every merge puts it on the primary, so that
/// unlinking it undoes the merge: no merge leaves data that unlink cannot bring back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnIdentityPlan {
  /// The secondary holds it as a linked identity already: it moves with the others.
  MovesWithSecondary,
  /// Nobody holds it: the merge adds it to the primary.
  AddToPrimary,
}

/// `holder` is seen from the secondary (`ThisAccount` = the secondary holds it).
pub fn own_identity_plan(secondary_id: &str, holder: Holder) -> Result<OwnIdentityPlan> {
  match holder {
    Holder::ThisAccount => Ok(OwnIdentityPlan::MovesWithSecondary),
    Holder::Nobody => Ok(OwnIdentityPlan::AddToPrimary),
    Holder::Another => {
      let (p, u) = users::own_identity(secondary_id);
      Err(Error::new(
        crate::error::ErrorKind::IdentityAlreadyLinked,
        format!(
          "cannot merge {secondary_id}: its own identity {p}|{u} is linked to another account \
           (unlink it first), and without it the merge could not be undone"
        ),
      ))
    }
  }
}

/// What happens to the secondary's own identity row when its merge is restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnRow {
  /// The merge added it: it goes (the restored account's id implies it).
  Drop,
  /// The secondary held it before the merge: it goes back with the account.
  MoveBack,
  /// The account comes back under another id: the row stays where it is.
  Keep,
}

/// How `unlinkIdentity` restores a merged account from its merge record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePlan {
  /// The restored account's id.
  pub id: String,
  /// Whether it is the secondary's original id (then with its `_id` and `createdAt` too).
  pub original: bool,
  /// Unlinking the secondary's own identity undoes the whole merge: every identity and merge
  /// record it brought that is still on the primary goes back with it. Unlinking another of its
  /// identities brings the account back with that identity only.
  pub whole: bool,
  pub own_row: OwnRow,
}

/// Decides a restore. `secondary_id` and `held` (the identities it had) come from the merge
/// record; `(provider, user_id)` is the identity unlinked; `free` says whether an id is unused.
pub fn restore_plan(
  secondary_id: &str,
  held: &[(String, String)],
  provider: &str,
  user_id: &str,
  free: impl Fn(&str) -> Result<bool>,
) -> Result<RestorePlan> {
  let own = users::own_identity(secondary_id);
  let whole = own.0 == provider && own.1 == user_id;
  let own_held = held.contains(&own);
  let (id, original) = if free(secondary_id)? {
    (secondary_id.to_string(), true)
  } else {
    let fallback = users::account_of_identity(provider, user_id);
    if !free(&fallback)? {
      return Err(taken(&fallback, Some(secondary_id)));
    }
    (fallback, false)
  };
  let own_row = match (original, own_held) {
    (false, _) if !whole => OwnRow::Keep,
    (_, true) => OwnRow::MoveBack,
    (_, false) => OwnRow::Drop,
  };
  Ok(RestorePlan {
    id,
    original,
    whole,
    own_row,
  })
}

/// `ALREADY_EXISTS` for an unlink whose standalone account id is taken.
pub fn taken(id: &str, restored: Option<&str>) -> Error {
  Error::new(
    crate::error::ErrorKind::AlreadyExists,
    format!(
      "cannot unlink into {id}: linked account {id} already exists{}",
      restored
        .filter(|r| *r != id)
        .map(|r| format!(" and so does {r}"))
        .unwrap_or_default()
    ),
  )
}

/// The standalone account of an unlinked identity that came by no merge: the account whose own
/// identity it is. The account's own identity itself cannot be unlinked (Auth0 refuses to remove
/// the main identity).
pub fn standalone_id(account_id: &str, provider: &str, user_id: &str) -> Result<String> {
  if users::is_own(account_id, provider, user_id) {
    return Err(Error::validation(
      "user_id",
      format!("{provider}|{user_id} is the own identity of {account_id} and cannot be unlinked"),
    ));
  }
  let id = users::account_of_identity(provider, user_id);
  if id.chars().count() > accounts::MAX_ID_CHARS {
    return Err(Error::validation(
      "user_id",
      format!(
        "the standalone account id {provider}|user_id would exceed {} characters",
        accounts::MAX_ID_CHARS
      ),
    ));
  }
  Ok(id)
}

fn account_id(v: &Value) -> Result<String> {
  input::id(Some(v), "linked_account_id", accounts::MAX_ID_CHARS)
}

fn pending<T>(r: Result<Pending<T>>) -> Pending<T> {
  r.unwrap_or_else(|e| Pending::ready(Err(e)))
}

impl Vault {
  /// `linkIdentity(linked_account_id, identity)` → the account's identities.
  pub fn link_identity(&self, id: &Value, identity: &Value) -> Pending<Vec<Identity>> {
    pending((|| {
      let id = account_id(id)?;
      let input = parse_identity(identity)?;
      Ok(self.store.link_identity(&self.scope, id, input))
    })())
  }

  /// `linkAccounts(primary_id, secondary_id | { link_with }, { udf })` → the merged primary.
  pub fn link_accounts(
    &self,
    primary: &Value,
    secondary: &Value,
    options: Option<&Value>,
  ) -> Pending<Account> {
    pending((|| {
      let primary = input::id(Some(primary), "primary_id", accounts::MAX_ID_CHARS)?;
      let target = parse_link_target(secondary)?;
      let policy = parse_link_options(options)?;
      if target == LinkTarget::Account(primary.clone()) {
        return Err(Error::validation(
          "secondary_id",
          "an account cannot be linked to itself",
        ));
      }
      Ok(self.store.link_accounts(
        &self.scope,
        primary,
        target,
        policy,
        self.tokens.policy.skew,
      ))
    })())
  }

  /// `unlinkIdentity(linked_account_id, provider, user_id)` → the remaining identities.
  pub fn unlink_identity(
    &self,
    id: &Value,
    provider: &Value,
    user_id: &Value,
  ) -> Pending<Vec<Identity>> {
    pending((|| {
      let id = account_id(id)?;
      let provider = parse_provider(Some(provider))?;
      let user_id = parse_user_id(Some(user_id))?;
      Ok(
        self
          .store
          .unlink_identity(&self.scope, id, provider, user_id),
      )
    })())
  }

  /// `getLinkedAccountsByEmail(email)`: accounts with an identity of that email, compared after
  /// trimming and Unicode lowercasing.
  pub fn get_linked_accounts_by_email(&self, email: &Value) -> Pending<Vec<Account>> {
    pending((|| {
      if email.is_null() {
        return Err(Error::validation("email", "email is required"));
      }
      let email = parse_email(email, "email")?;
      Ok(
        self
          .store
          .accounts_by_email(&self.scope, normalize_email(&email)),
      )
    })())
  }

  /// `getLinkSuggestions(linked_account_id)`: other accounts sharing an email verified on both
  /// sides.
  pub fn get_link_suggestions(&self, id: &Value) -> Pending<Vec<LinkSuggestion>> {
    pending(account_id(id).map(|id| self.store.link_suggestions(&self.scope, id)))
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  #[test]
  fn validation_names_each_field() {
    let big = "x".repeat(MAX_PROFILE_BYTES);
    let cases = [
      (json!({"user_id": "1"}), "provider"),
      (json!({"provider": "", "user_id": "1"}), "provider"),
      (json!({"provider": "a|b", "user_id": "1"}), "provider"),
      (
        json!({"provider": "p".repeat(65), "user_id": "1"}),
        "provider",
      ),
      (json!({"provider": 3, "user_id": "1"}), "provider"),
      (json!({"provider": "github"}), "user_id"),
      (json!({"provider": "github", "user_id": ""}), "user_id"),
      (
        json!({"provider": "github", "user_id": "u".repeat(257)}),
        "user_id",
      ),
      (json!({"provider": "github", "user_id": 1.5}), "user_id"),
      (json!({"provider": "github", "user_id": true}), "user_id"),
      (
        json!({"provider": "github", "user_id": 1, "email": "no-at"}),
        "email",
      ),
      (
        json!({"provider": "github", "user_id": 1, "email": "a@b@c"}),
        "email",
      ),
      (
        json!({"provider": "github", "user_id": 1, "email": 5}),
        "email",
      ),
      (
        json!({"provider": "github", "user_id": 1, "email": format!("{}@x.io", "a".repeat(320))}),
        "email",
      ),
      (
        json!({"provider": "github", "user_id": 1, "profileData": []}),
        "profileData",
      ),
      (
        json!({"provider": "github", "user_id": 1, "profileData": {"big": big}}),
        "profileData",
      ),
      (
        json!({"provider": "github", "user_id": 1, "isSocial": "yes"}),
        "isSocial",
      ),
      (
        json!({"provider": "github", "user_id": 1, "email_verified": 1}),
        "email_verified",
      ),
      (
        json!({"provider": "github", "user_id": 1, "connection": ""}),
        "connection",
      ),
      (
        json!({"provider": "github", "user_id": 1, "connection_id": "con_short"}),
        "connection_id",
      ),
      (
        json!({"provider": "github", "user_id": 1, "connection_id": "con_0123456789abcde!"}),
        "connection_id",
      ),
      (
        json!({"provider": "github", "user_id": 1, "userId": 1}),
        "userId",
      ),
      (json!("github|1"), "identity"),
    ];
    for (v, field) in cases {
      let err = parse_identity(&v).unwrap_err();
      assert_eq!(err.code(), "VALIDATION_ERROR");
      assert_eq!(err.field.as_deref(), Some(field), "{v:.80}");
    }
  }

  #[test]
  fn user_ids_are_stringified() {
    assert_eq!(parse_user_id(Some(&json!(9))).unwrap(), "9");
    assert_eq!(parse_user_id(Some(&json!(9.0))).unwrap(), "9");
    assert_eq!(parse_user_id(Some(&json!(1e10))).unwrap(), "10000000000");
    assert_eq!(parse_user_id(Some(&json!(-3))).unwrap(), "-3");
    assert_eq!(parse_user_id(Some(&json!("9"))).unwrap(), "9");
    assert!(parse_user_id(Some(&json!(1e300))).is_err());
    assert!(parse_user_id(Some(&json!(u64::MAX))).is_err());
  }

  #[test]
  fn emails_normalize_unicode_aware() {
    assert_eq!(normalize_email("  Ann@X.com "), "ann@x.com");
    assert_eq!(normalize_email("ÀNN@Ünï.de"), "ànn@ünï.de");
  }

  #[test]
  fn changing_the_email_drops_its_verification() {
    let first = parse_identity(&json!({
      "provider": "google-oauth2", "user_id": "1", "email": "a@x.io", "email_verified": true,
      "isSocial": true, "connection": "google"
    }))
    .unwrap()
    .apply(None, 5);
    assert!(first.email_verified && first.is_social);
    // Same address in another case: the verification stays; other fields are kept.
    let same =
      parse_identity(&json!({"provider": "google-oauth2", "user_id": "1", "email": "A@X.io"}))
        .unwrap()
        .apply(Some(&first), 9);
    assert!(same.email_verified);
    assert_eq!(same.connection.as_deref(), Some("google"));
    assert_eq!(same.linked_at, 5);
    let other =
      parse_identity(&json!({"provider": "google-oauth2", "user_id": "1", "email": "b@x.io"}))
        .unwrap()
        .apply(Some(&first), 9);
    assert!(!other.email_verified);
    let cleared =
      parse_identity(&json!({"provider": "google-oauth2", "user_id": "1", "connection": null}))
        .unwrap()
        .apply(Some(&first), 9);
    assert_eq!(cleared.connection, None);
    assert!(cleared.email_verified);
  }

  #[test]
  fn link_targets_and_options() {
    assert_eq!(
      parse_link_target(&json!("b")).unwrap(),
      LinkTarget::Account("b".into())
    );
    assert_eq!(
      parse_link_target(&json!({"link_with": "tok"})).unwrap(),
      LinkTarget::Token("tok".into())
    );
    for (v, field) in [
      (json!({}), "link_with"),
      (json!({"link_with": ""}), "link_with"),
      (json!({"link_with": 5}), "link_with"),
      (json!({"link_with": "t", "provider": "x"}), "provider"),
      (json!(""), "secondary_id"),
      (json!(7), "secondary_id"),
      (json!(null), "secondary_id"),
    ] {
      assert_eq!(
        parse_link_target(&v).unwrap_err().field.as_deref(),
        Some(field),
        "{v}"
      );
    }
    assert!(!format!("{:?}", LinkTarget::Token("s3cr3t".into())).contains("s3cr3t"));
    assert_eq!(parse_link_options(None).unwrap(), UdfPolicy::PrimaryWins);
    assert_eq!(
      parse_link_options(Some(&json!({"udf": "secondary_wins"}))).unwrap(),
      UdfPolicy::SecondaryWins
    );
    assert_eq!(
      parse_link_options(Some(&json!({"udf": "newest"})))
        .unwrap_err()
        .field
        .as_deref(),
      Some("udf")
    );
  }

  #[test]
  fn link_actions_follow_auth0() {
    use Holder::*;
    let act =
      |acc: &str, p: &str, u: &str, h: Holder, owner: bool| link_action(acc, p, u, h, owner);
    assert_eq!(
      act("a", "github", "9", Nobody, false).unwrap(),
      LinkAction::Insert
    );
    assert_eq!(
      act("a", "github", "9", ThisAccount, true).unwrap(),
      LinkAction::Refresh
    );
    assert_eq!(
      act("a", "github", "9", Another, true).unwrap_err().code(),
      "IDENTITY_ALREADY_LINKED"
    );
    assert_eq!(
      act("a", "github", "9", Nobody, true).unwrap(),
      LinkAction::Merge("github|9".into())
    );
    assert_eq!(
      act("a", "linkvault", "b", Nobody, true).unwrap(),
      LinkAction::Merge("b".into())
    );
    // ('linkvault', 'github|9') is nobody's own identity: a plain link.
    assert_eq!(
      act("a", "linkvault", "github|9", Nobody, true).unwrap(),
      LinkAction::Insert
    );
    assert_eq!(
      act("github|9", "github", "9", Nobody, false)
        .unwrap_err()
        .field
        .as_deref(),
      Some("user_id")
    );
    assert_eq!(
      own_identity_plan("b", Nobody).unwrap(),
      OwnIdentityPlan::AddToPrimary
    );
    assert_eq!(
      own_identity_plan("github|9", ThisAccount).unwrap(),
      OwnIdentityPlan::MovesWithSecondary
    );
    assert_eq!(
      own_identity_plan("b", Another).unwrap_err().code(),
      "IDENTITY_ALREADY_LINKED"
    );
  }

  #[test]
  fn restore_plans() {
    let held = vec![("github".to_string(), "9".to_string())];
    let free = |taken: &'static [&'static str]| move |id: &str| Ok(!taken.contains(&id));
    // The own identity: the whole merge, its synthetic own row dropped.
    let p = restore_plan("B", &held, "linkvault", "B", free(&[])).unwrap();
    assert_eq!(
      (p.id.as_str(), p.original, p.whole, p.own_row),
      ("B", true, true, OwnRow::Drop)
    );
    assert_eq!(
      restore_plan("B", &held, "linkvault", "B", free(&["B"]))
        .unwrap_err()
        .code(),
      "ALREADY_EXISTS"
    );
    // Another identity: back with it alone; under a fallback id the own row stays.
    let p = restore_plan("B", &held, "github", "9", free(&[])).unwrap();
    assert_eq!((p.whole, p.own_row), (false, OwnRow::Drop));
    let p = restore_plan("B", &held, "github", "9", free(&["B"])).unwrap();
    assert_eq!(
      (p.id.as_str(), p.original, p.own_row),
      ("github|9", false, OwnRow::Keep)
    );
    assert!(restore_plan("B", &held, "github", "9", free(&["B", "github|9"])).is_err());
    // A secondary that held its own identity gets it back.
    let p = restore_plan("github|9", &held, "github", "9", free(&[])).unwrap();
    assert_eq!((p.whole, p.own_row), (true, OwnRow::MoveBack));
    assert_eq!(standalone_id("a", "github", "9").unwrap(), "github|9");
    assert_eq!(standalone_id("a", "linkvault", "x").unwrap(), "x");
    assert_eq!(
      standalone_id("github|9", "github", "9")
        .unwrap_err()
        .field
        .as_deref(),
      Some("user_id")
    );
  }

  fn rows(pairs: &[(&str, Value)]) -> Vec<UdfRow> {
    pairs
      .iter()
      .enumerate()
      .map(|(i, (k, v))| UdfRow {
        key: k.to_string(),
        value: v.clone(),
        json: accounts::canonical_json(v),
        oid: format!("oid{k}"),
        created_at: i as i64,
        updated_at: i as i64,
      })
      .collect()
  }

  #[test]
  fn udf_policies_keep_one_sided_keys() {
    let p = rows(&[("plan", json!("pro")), ("a", json!(1))]);
    let s = rows(&[("plan", json!("free")), ("b", json!(2))]);
    let mut m = p.clone();
    let changed = merge_udf_by_policy(&mut m, &s, UdfPolicy::PrimaryWins, 100).unwrap();
    assert_eq!(changed, vec!["b"]);
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].value, json!("pro"));
    assert_eq!(m[2].oid, "oidb");
    let mut m = p.clone();
    let changed = merge_udf_by_policy(&mut m, &s, UdfPolicy::SecondaryWins, 100).unwrap();
    assert_eq!(changed, vec!["plan", "b"]);
    assert_eq!(m[0].value, json!("free"));
    assert_eq!(m[0].oid, "oidplan");
    // The key limit applies to the union.
    let many: Vec<(String, Value)> = (0..150).map(|i| (format!("p{i}"), json!(i))).collect();
    let more: Vec<(String, Value)> = (0..60).map(|i| (format!("s{i}"), json!(i))).collect();
    let as_ref = |v: &Vec<(String, Value)>| -> Vec<UdfRow> {
      rows(
        &v.iter()
          .map(|(k, v)| (k.as_str(), v.clone()))
          .collect::<Vec<_>>(),
      )
    };
    let mut m = as_ref(&many);
    let err = merge_udf_by_policy(&mut m, &as_ref(&more), UdfPolicy::PrimaryWins, 1).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("udf"));
    assert_eq!(m.len(), 150);
  }
}

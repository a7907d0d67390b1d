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
//! This file holds the types and input parsing; the rules (link, merge, unlink and restore,
//! UDF policies) are in `domain::identities`, the `Vault` methods in `client::identities`.

use std::fmt;

use serde_json::{Map, Value};

use crate::accounts::{self, Patch};
use crate::error::{Error, Result};
use crate::input;

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
}

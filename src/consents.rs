//! Auth sessions and consents, after Fiskil's account-linking flow: the backend creates a
//! single-use auth session for an end user (a linked account), the end user consents at an
//! institution, and the result is a consent with an expiry that can be renewed (through a new
//! session that names its `arrangement_id`), revoked, or can lapse.
//!
//! This file holds the types and input validation. The state machines and the operations are
//! in `domain::consents`, the client calls in `client::consents`.

use std::fmt;

use serde_json::Value;

use crate::accounts::MAX_ID_CHARS;
use crate::crypto;
use crate::error::{Error, Result};
use crate::input::{self, Fields};

/// Fiskil's auth-session lifetime, the default and the maximum `ttl_seconds`.
pub const DEFAULT_SESSION_TTL_SECS: i64 = 5 * 24 * 3600;
pub const MAX_SESSION_TTL_SECS: i64 = DEFAULT_SESSION_TTL_SECS;
/// The CDR maximum consent duration: 12 months (365 days).
pub const MAX_DURATION_SECS: i64 = 365 * 24 * 3600;
pub const MAX_URI_CHARS: usize = 2048;
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_LIST_ITEMS: usize = 1000;
pub const MAX_PERMISSION_CHARS: usize = 128;

/// Fiskil's consent error types, accepted by `cancelAuthSession`.
pub const ERROR_TYPES: &[&str] = &[
  "AUTH_SESSION_CANCELLED",
  "CONSENT_ENDUSER_DENIED",
  "CONSENT_OTP_FAILURE",
  "CONSENT_ENDUSER_INELIGIBLE",
  "CONSENT_TIMEOUT",
  "CONSENT_UPSTREAM_PROCESSING_ERROR",
  "AUTH_SESSION_INVALID",
  "CONSUMERDATA_PROCESSING_ERROR",
];

// ---------------------------------------------------------------------------------------------
// Session state machine

/// A session's stored state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
  Pending,
  Completed,
  Cancelled,
}

impl SessionState {
  pub fn as_str(self) -> &'static str {
    match self {
      SessionState::Pending => "pending",
      SessionState::Completed => "completed",
      SessionState::Cancelled => "cancelled",
    }
  }

  pub fn parse(s: &str) -> Option<Self> {
    match s {
      "pending" => Some(SessionState::Pending),
      "completed" => Some(SessionState::Completed),
      "cancelled" => Some(SessionState::Cancelled),
      _ => None,
    }
  }
}

/// A session's status as read: a pending session past `expires_at` is `expired`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
  Pending,
  Completed,
  Cancelled,
  Expired,
}

impl SessionStatus {
  pub fn as_str(self) -> &'static str {
    match self {
      SessionStatus::Pending => "pending",
      SessionStatus::Completed => "completed",
      SessionStatus::Cancelled => "cancelled",
      SessionStatus::Expired => "expired",
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Consent state machine

/// Why a consent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
  Revoked,
  Expired,
  AccountDeleted,
}

impl Termination {
  pub fn as_str(self) -> &'static str {
    match self {
      Termination::Revoked => "revoked",
      Termination::Expired => "expired",
      Termination::AccountDeleted => "account_deleted",
    }
  }

  pub fn parse(s: &str) -> Option<Self> {
    match s {
      "revoked" => Some(Termination::Revoked),
      "expired" => Some(Termination::Expired),
      "account_deleted" => Some(Termination::AccountDeleted),
      _ => None,
    }
  }
}

/// A consent (Fiskil's consent object). Times are milliseconds since the epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Consent {
  pub arrangement_id: String,
  pub end_user_id: String,
  pub institution_id: String,
  pub institution_name: Option<String>,
  pub account_ids: Vec<String>,
  pub permissions: Vec<String>,
  /// Seconds granted by the latest consent (first grant or renewal).
  pub duration: i64,
  pub created_at: i64,
  pub last_consent: i64,
  pub expires_at: i64,
  pub active: bool,
  pub termination_reason: Option<Termination>,
  pub institution_logo: Option<String>,
  pub institution_type: InstitutionType,
  /// When data was last accessed under the consent (`recordConsentAccess`), ms.
  pub last_accessed: Option<i64>,
  /// The end user's email (`createEndUser` / `updateEndUser`), as it is now.
  pub end_user_email: Option<String>,
}

/// Fiskil's `institution_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstitutionType {
  #[default]
  Banking,
  Energy,
}

impl InstitutionType {
  pub fn as_str(self) -> &'static str {
    match self {
      InstitutionType::Banking => "banking",
      InstitutionType::Energy => "energy",
    }
  }

  pub fn parse(s: &str) -> Option<Self> {
    match s {
      "banking" => Some(InstitutionType::Banking),
      "energy" => Some(InstitutionType::Energy),
      _ => None,
    }
  }
}

impl Consent {
  /// Whether the stored record says active but the consent has lapsed: it reads as expired and
  /// its expiry still has to be recorded (with its event).
  pub fn lapsed(&self, now: i64) -> bool {
    self.active && now >= self.expires_at
  }

  /// The consent as seen at `now`: a lapsed consent reads inactive, `expired`.
  pub fn seen_at(mut self, now: i64) -> Consent {
    if self.lapsed(now) {
      self.active = false;
      self.termination_reason = Some(Termination::Expired);
    }
    self
  }
}

// ---------------------------------------------------------------------------------------------
// Auth sessions

/// An auth session. `session_id` is a bearer secret (whoever holds it can complete the
/// session): it is stored hashed, known only at creation and to callers who pass it, and hidden
/// from `Debug`.
#[derive(Clone, PartialEq)]
pub struct AuthSession {
  /// Public record id (24 hex), safe to log and used in events.
  pub id: String,
  pub session_id: String,
  pub linked_account_id: String,
  /// Both or neither: the Link SDK flow sends none.
  pub redirect_uri: Option<String>,
  pub cancel_uri: Option<String>,
  pub institution_id: Option<String>,
  pub permissions: Option<Vec<String>>,
  /// Renewal target, if this is a renewal session.
  pub arrangement_id: Option<String>,
  pub state: SessionState,
  /// The status at the time it was read.
  pub status: SessionStatus,
  pub error_type: Option<String>,
  /// The consent the completion produced or renewed.
  pub consent_id: Option<String>,
  pub created_at: i64,
  pub expires_at: i64,
  pub finished_at: Option<i64>,
}

impl fmt::Debug for AuthSession {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct("AuthSession")
      .field("id", &self.id)
      .field("session_id", &"<hidden>")
      .field("linked_account_id", &self.linked_account_id)
      .field("state", &self.state)
      .field("status", &self.status)
      .field("arrangement_id", &self.arrangement_id)
      .field("consent_id", &self.consent_id)
      .field("expires_at", &self.expires_at)
      .finish_non_exhaustive()
  }
}

/// A validated `createAuthSession` input.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInput {
  pub linked_account_id: String,
  pub redirect_uri: Option<String>,
  pub cancel_uri: Option<String>,
  pub institution_id: Option<String>,
  pub permissions: Option<Vec<String>>,
  pub arrangement_id: Option<String>,
  pub ttl_seconds: i64,
}

/// A validated `completeAuthSession` result (what the end user consented to).
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
  pub institution_id: Option<String>,
  pub institution_name: Option<String>,
  pub institution_logo: Option<String>,
  pub institution_type: Option<InstitutionType>,
  pub account_ids: Vec<String>,
  pub permissions: Option<Vec<String>>,
  pub duration_seconds: Option<i64>,
}

/// Filters of `listConsents`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsentFilter {
  pub end_user_id: Option<String>,
  pub active: Option<bool>,
}

/// `linked_account_id`, or its alias `end_user_id` (they must agree when both are sent).
fn end_user(f: &Fields<'_>, required: bool) -> Result<Option<String>> {
  let field = "linked_account_id";
  match (f.get("linked_account_id"), f.get("end_user_id")) {
    (Some(a), Some(b)) if a != b => Err(Error::validation(
      field,
      "linked_account_id and end_user_id differ",
    )),
    (None, None) if !required => Ok(None),
    (Some(v), _) | (None, Some(v)) => input::id(Some(v), field, MAX_ID_CHARS).map(Some),
    (None, None) => Err(Error::validation(
      field,
      "linked_account_id (or end_user_id) is required",
    )),
  }
}

fn opt_id(f: &Fields<'_>, key: &str) -> Result<Option<String>> {
  match f.get(key) {
    None => Ok(None),
    some => input::id(some, &f.path(key), MAX_ID_CHARS).map(Some),
  }
}

/// A non-empty list of non-empty strings, duplicates dropped (first occurrence kept).
fn string_list(f: &Fields<'_>, key: &str, max_chars: usize) -> Result<Option<Vec<String>>> {
  let Some(items) = f.strings(key)? else {
    return Ok(None);
  };
  let field = f.path(key);
  if items.is_empty() || items.len() > MAX_LIST_ITEMS {
    return Err(Error::validation(
      &field,
      format!("{field} must have 1 to {MAX_LIST_ITEMS} items"),
    ));
  }
  let mut out: Vec<String> = Vec::with_capacity(items.len());
  for item in items {
    if item.is_empty() || item.chars().count() > max_chars {
      return Err(Error::validation(
        &field,
        format!("each of {field} must be 1 to {max_chars} characters"),
      ));
    }
    if !out.contains(&item) {
      out.push(item);
    }
  }
  Ok(Some(out))
}

/// An absolute `http:` or `https:` URL with a host, no credentials, no fragment, no whitespace.
pub fn validate_http_url(field: &str, url: &str) -> Result<()> {
  let bad = |why: &str| {
    Err(Error::validation(
      field,
      format!("{field} must be an absolute http(s) URL: {why}"),
    ))
  };
  if url.is_empty() {
    return bad("it is empty");
  }
  if url.chars().count() > MAX_URI_CHARS {
    return bad(&format!("it is longer than {MAX_URI_CHARS} characters"));
  }
  if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
    return bad("it contains whitespace or control characters");
  }
  let lower = url.to_ascii_lowercase();
  let rest = if lower.starts_with("https://") {
    &url[8..]
  } else if lower.starts_with("http://") {
    &url[7..]
  } else {
    return bad("the scheme must be http or https");
  };
  if url.contains('#') {
    return bad("it must not have a fragment");
  }
  let authority = rest.split(['/', '?']).next().unwrap_or("");
  if authority.contains('@') {
    return bad("it must not contain credentials");
  }
  let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
    match v6.split_once(']') {
      Some((h, tail)) if !h.is_empty() => (h, tail.strip_prefix(':')),
      _ => return bad("the host is malformed"),
    }
  } else {
    match authority.split_once(':') {
      Some((h, p)) => (h, Some(p)),
      None => (authority, None),
    }
  };
  if host.is_empty() {
    return bad("the host is missing");
  }
  if let Some(p) = port {
    if p.is_empty()
      || !p.bytes().all(|b| b.is_ascii_digit())
      || p.parse::<u32>().map_or(true, |n| n == 0 || n > 65_535)
    {
      return bad("the port is invalid");
    }
  }
  Ok(())
}

fn uri(f: &Fields<'_>, key: &str) -> Result<Option<String>> {
  let Some(value) = f.str(key)? else {
    return Ok(None);
  };
  validate_http_url(key, value)?;
  Ok(Some(value.to_string()))
}

/// `redirect_uri` and `cancel_uri`: both (the redirect flow) or neither (Fiskil's Link SDK flow,
/// where the SDK's promise carries the result).
fn uris(f: &Fields<'_>) -> Result<(Option<String>, Option<String>)> {
  match (uri(f, "redirect_uri")?, uri(f, "cancel_uri")?) {
    (Some(_), None) => Err(Error::validation(
      "cancel_uri",
      "cancel_uri is required with redirect_uri (the redirect flow needs both)",
    )),
    (None, Some(_)) => Err(Error::validation(
      "redirect_uri",
      "redirect_uri is required with cancel_uri (the redirect flow needs both)",
    )),
    both => Ok(both),
  }
}

/// Parses `createAuthSession`'s input.
pub fn parse_session_input(v: &Value) -> Result<SessionInput> {
  if !v.is_object() {
    return Err(Error::validation("options", "options must be an object"));
  }
  let f = Fields::new(Some(v), "options")?;
  let linked_account_id = end_user(&f, true)?.unwrap_or_default();
  let (redirect_uri, cancel_uri) = uris(&f)?;
  let institution_id = opt_id(&f, "institution_id")?;
  let permissions = string_list(&f, "permissions", MAX_PERMISSION_CHARS)?;
  let arrangement_id = opt_id(&f, "arrangement_id")?;
  let ttl_seconds = f
    .int("ttl_seconds", 1, MAX_SESSION_TTL_SECS)?
    .unwrap_or(DEFAULT_SESSION_TTL_SECS);
  Ok(SessionInput {
    linked_account_id,
    redirect_uri,
    cancel_uri,
    institution_id,
    permissions,
    arrangement_id,
    ttl_seconds,
  })
}

/// Parses `completeAuthSession`'s result. Cross-checks against the session (institution lock,
/// permission subset, renewal defaults) happen in `domain::consents::rules::resolve_completion`.
pub fn parse_completion(v: &Value) -> Result<Completion> {
  if !v.is_object() {
    return Err(Error::validation("result", "result must be an object"));
  }
  let f = Fields::new(Some(v), "options")?;
  let institution_id = opt_id(&f, "institution_id")?;
  let institution_name = match f.str("institution_name")? {
    Some(n) if n.chars().count() > MAX_NAME_CHARS => {
      return Err(Error::validation(
        "institution_name",
        format!("institution_name must be at most {MAX_NAME_CHARS} characters"),
      ))
    }
    other => other.map(str::to_string),
  };
  let institution_logo = match f.str("institution_logo")? {
    Some(url) => {
      validate_http_url("institution_logo", url)?;
      Some(url.to_string())
    }
    None => None,
  };
  let institution_type = match f.str("institution_type")? {
    None => None,
    Some(t) => Some(InstitutionType::parse(t).ok_or_else(|| {
      Error::validation(
        "institution_type",
        "institution_type must be 'banking' or 'energy'",
      )
    })?),
  };
  let account_ids = string_list(&f, "account_ids", MAX_ID_CHARS)?
    .ok_or_else(|| Error::validation("account_ids", "account_ids is required"))?;
  let permissions = string_list(&f, "permissions", MAX_PERMISSION_CHARS)?;
  let duration_seconds = f.int("duration_seconds", 1, MAX_DURATION_SECS)?;
  Ok(Completion {
    institution_id,
    institution_name,
    institution_logo,
    institution_type,
    account_ids,
    permissions,
    duration_seconds,
  })
}

/// Parses `cancelAuthSession`'s `{ error_type }` (default `AUTH_SESSION_CANCELLED`).
pub fn parse_cancel(v: Option<&Value>) -> Result<String> {
  let f = Fields::new(v, "options")?;
  match f.str("error_type")? {
    None => Ok(ERROR_TYPES[0].to_string()),
    Some(t) if ERROR_TYPES.contains(&t) => Ok(t.to_string()),
    Some(_) => Err(Error::validation(
      "error_type",
      format!("error_type must be one of {}", ERROR_TYPES.join(", ")),
    )),
  }
}

/// Parses `listConsents`' `{ end_user_id?, linked_account_id?, active? }`.
pub fn parse_filter(v: Option<&Value>) -> Result<ConsentFilter> {
  let f = Fields::new(v, "options")?;
  Ok(ConsentFilter {
    end_user_id: end_user(&f, false)?,
    active: f.bool("active")?,
  })
}

/// A random UUID v4 (arrangement ids and session ids look like Fiskil's).
pub fn new_uuid() -> Result<String> {
  let mut b: [u8; 16] = crypto::random_bytes()?;
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  let h = crypto::hex_encode(&b);
  Ok(format!(
    "{}-{}-{}-{}-{}",
    &h[0..8],
    &h[8..12],
    &h[12..16],
    &h[16..20],
    &h[20..32]
  ))
}

/// `${base}?session_id=…` (or `&session_id=` when the base already has a query).
pub fn auth_url(base: &str, session_id: &str) -> String {
  let sep = if base.contains('?') { '&' } else { '?' };
  format!("{base}{sep}session_id={session_id}")
}

/// Path of the HTTP server's consent page for a session (`linkvault serve`), under the client's
/// `publicUrl`.
pub const CONSENT_PAGE_PATH: &str = "/link/session/";

/// Where an end user goes to consent: `${authUrlBase}?session_id=…` when the client has an
/// `authUrlBase` (your own consent UI), else the linkvault server's consent page
/// `${publicUrl}/link/session/<session_id>` (a path relative to the server when `publicUrl` is
/// not set).
pub fn session_url(
  auth_url_base: Option<&str>,
  public_url: Option<&str>,
  session_id: &str,
) -> String {
  match auth_url_base {
    Some(base) => auth_url(base, session_id),
    None => format!(
      "{}{CONSENT_PAGE_PATH}{session_id}",
      public_url.unwrap_or("").trim_end_matches('/')
    ),
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::domain::consents::rules::session_status;
  use serde_json::json;

  fn session(state: SessionState, expires_at: i64) -> AuthSession {
    AuthSession {
      id: "s".into(),
      session_id: "secret-session".into(),
      linked_account_id: "u1".into(),
      redirect_uri: Some("https://app.example/ok".into()),
      cancel_uri: Some("https://app.example/cancel".into()),
      institution_id: None,
      permissions: None,
      arrangement_id: None,
      state,
      status: session_status(state, expires_at, 0),
      error_type: None,
      consent_id: None,
      created_at: 0,
      expires_at,
      finished_at: None,
    }
  }

  #[test]
  fn urls_must_be_absolute_http() {
    for ok in [
      "https://app.example/cb",
      "http://localhost:3000/cb?x=1",
      "HTTPS://APP.EXAMPLE",
      "https://[::1]:8443/cb",
    ] {
      assert!(validate_http_url("redirect_uri", ok).is_ok(), "{ok}");
    }
    for bad in [
      "",
      "/relative",
      "app.example/cb",
      "ftp://app.example",
      "javascript:alert(1)",
      "https://",
      "https:///path",
      "https://user:pw@app.example/",
      "https://app.example/cb#frag",
      "https://app.example/a b",
      "https://app.example:0/",
      "https://app.example:99999/",
      "https://app.example:/",
    ] {
      let e = validate_http_url("redirect_uri", bad).unwrap_err();
      assert_eq!(e.field.as_deref(), Some("redirect_uri"), "{bad}");
    }
  }

  #[test]
  fn parses_session_input_with_alias_and_defaults() {
    let i = parse_session_input(&json!({
      "end_user_id": "u1", "redirect_uri": "https://a.example/ok", "cancel_uri": "https://a.example/no"
    }))
    .unwrap();
    assert_eq!(i.linked_account_id, "u1");
    assert_eq!(i.ttl_seconds, DEFAULT_SESSION_TTL_SECS);
    // The Link SDK flow: no URIs at all.
    let i =
      parse_session_input(&json!({"end_user_id": "482c0e2b-5866-46b1-b795-220b7bba45b5"})).unwrap();
    assert_eq!((i.redirect_uri, i.cancel_uri), (None, None));
    let base = json!({"linked_account_id": "u1", "redirect_uri": "https://a.example/ok", "cancel_uri": "https://a.example/no"});
    for (patch, field) in [
      (json!({"end_user_id": "u2"}), "linked_account_id"),
      (json!({"linked_account_id": null}), "linked_account_id"),
      (json!({"redirect_uri": "nope"}), "redirect_uri"),
      (json!({"cancel_uri": null}), "cancel_uri"),
      (json!({"redirect_uri": null}), "redirect_uri"),
      (json!({"permissions": []}), "permissions"),
      (json!({"permissions": "accounts"}), "permissions"),
      (json!({"ttl_seconds": 0}), "ttl_seconds"),
      (
        json!({"ttl_seconds": MAX_SESSION_TTL_SECS + 1}),
        "ttl_seconds",
      ),
      (json!({"institution_id": 5}), "institution_id"),
      (json!({"arrangement_id": ""}), "arrangement_id"),
    ] {
      let mut v = base.clone();
      for (k, x) in patch.as_object().unwrap() {
        v[k] = x.clone();
      }
      let e = parse_session_input(&v).unwrap_err();
      assert_eq!(e.field.as_deref(), Some(field), "{patch}");
    }
  }

  #[test]
  fn parses_completion_and_cancel() {
    let c = parse_completion(&json!({
      "institution_id": "bank", "account_ids": ["a", "b", "a"], "permissions": ["accounts"],
      "duration_seconds": MAX_DURATION_SECS
    }))
    .unwrap();
    assert_eq!(c.account_ids, vec!["a", "b"]);
    for (v, field) in [
      (json!({"account_ids": []}), "account_ids"),
      (json!({}), "account_ids"),
      (
        json!({"account_ids": ["a"], "duration_seconds": MAX_DURATION_SECS + 1}),
        "duration_seconds",
      ),
      (
        json!({"account_ids": ["a"], "duration_seconds": 0}),
        "duration_seconds",
      ),
      (
        json!({"account_ids": ["a"], "institution_name": 1}),
        "institution_name",
      ),
      (
        json!({"account_ids": ["a"], "institution_type": "telco"}),
        "institution_type",
      ),
      (
        json!({"account_ids": ["a"], "institution_logo": "logo.png"}),
        "institution_logo",
      ),
    ] {
      assert_eq!(
        parse_completion(&v).unwrap_err().field.as_deref(),
        Some(field),
        "{v}"
      );
    }
    assert_eq!(parse_cancel(None).unwrap(), "AUTH_SESSION_CANCELLED");
    for t in ERROR_TYPES {
      assert_eq!(parse_cancel(Some(&json!({"error_type": t}))).unwrap(), *t);
    }
    assert_eq!(
      parse_cancel(Some(&json!({"error_type": "NOPE"})))
        .unwrap_err()
        .field
        .as_deref(),
      Some("error_type")
    );
  }

  #[test]
  fn ids_urls_and_debug() {
    let u = new_uuid().unwrap();
    assert_eq!(u.len(), 36);
    assert_eq!(&u[14..15], "4");
    assert_ne!(u, new_uuid().unwrap());
    assert_eq!(
      auth_url("https://link.example/start", "abc"),
      "https://link.example/start?session_id=abc"
    );
    assert_eq!(
      session_url(None, Some("https://lv.example/base/"), "abc"),
      "https://lv.example/base/link/session/abc"
    );
    assert_eq!(session_url(None, None, "abc"), "/link/session/abc");
    assert_eq!(
      session_url(
        Some("https://link.example/start"),
        Some("https://lv.example"),
        "abc"
      ),
      "https://link.example/start?session_id=abc"
    );
    assert_eq!(
      auth_url("https://link.example/?t=1", "abc"),
      "https://link.example/?t=1&session_id=abc"
    );
    let dbg = format!("{:?}", session(SessionState::Pending, 1));
    assert!(!dbg.contains("secret-session"));
    assert!(dbg.contains("<hidden>"));
  }
}

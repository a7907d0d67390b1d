//! Auth-session and consent methods of `Client`, with the names and shapes of Fiskil's API
//! (`end_user_id` = our `linked_account_id`).

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;

use super::client::Client;
use super::js::{json_arg, promise, with_json};
use crate::client::AppInfo;
use crate::clock::rfc3339_secs;
use crate::consents::{AuthSession as CoreSession, Consent as CoreConsent, Termination};
use crate::store::Pending;

/// Input of `createAuthSession`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON so that
// every wrong type is reported with its field name.
#[allow(dead_code)]
#[napi(object)]
pub struct AuthSessionInput {
  /// The end user: an existing linked account (`NOT_FOUND` otherwise).
  #[napi(js_name = "linked_account_id")]
  pub linked_account_id: Option<String>,
  /// Alias of `linked_account_id` (Fiskil's name).
  #[napi(js_name = "end_user_id")]
  pub end_user_id: Option<String>,
  /// Where the end user returns after consenting (the redirect flow): an absolute http(s) URL
  /// without fragment. Omit both URIs for the Link SDK flow; send both or neither.
  #[napi(js_name = "redirect_uri")]
  pub redirect_uri: Option<String>,
  /// Where the end user returns after cancelling or failing (the redirect flow): an absolute
  /// http(s) URL. Required with `redirect_uri`.
  #[napi(js_name = "cancel_uri")]
  pub cancel_uri: Option<String>,
  /// Locks the institution (the completion must be for it).
  #[napi(js_name = "institution_id")]
  pub institution_id: Option<String>,
  /// Permissions requested; the completion may grant these or fewer.
  pub permissions: Option<Vec<String>>,
  /// Makes this a renewal session for that (active) consent of the same end user.
  #[napi(js_name = "arrangement_id")]
  pub arrangement_id: Option<String>,
  /// Lifetime in seconds, 1 to 432000 (5 days, the default).
  #[napi(js_name = "ttl_seconds")]
  pub ttl_seconds: Option<u32>,
}

/// What the end user consented to (input of `completeAuthSession`).
// Type-only: see above.
#[allow(dead_code)]
#[napi(object)]
pub struct AuthSessionResult {
  /// Required unless the session (or the consent it renews) fixes the institution.
  #[napi(js_name = "institution_id")]
  pub institution_id: Option<String>,
  #[napi(js_name = "institution_name")]
  pub institution_name: Option<String>,
  /// The institution's logo, an absolute http(s) URL (a renewal keeps the consent's).
  #[napi(js_name = "institution_logo")]
  pub institution_logo: Option<String>,
  /// `'banking'` (default) or `'energy'` (a renewal keeps the consent's).
  #[napi(js_name = "institution_type", ts_type = "'banking' | 'energy'")]
  pub institution_type: Option<String>,
  /// The accounts shared: 1 to 1000 ids (duplicates dropped).
  #[napi(js_name = "account_ids")]
  pub account_ids: Vec<String>,
  /// Granted permissions (e.g. `accounts`, `balances`, `transactions`); default: the
  /// session's (or, for a renewal, the consent's). Must be within the session's.
  pub permissions: Option<Vec<String>>,
  /// Consent duration in seconds, 1 to 31536000 (365 days). Required for a new consent; a
  /// renewal defaults to the consent's duration.
  #[napi(js_name = "duration_seconds")]
  pub duration_seconds: Option<u32>,
}

/// Input of `cancelAuthSession`.
// Type-only: see above.
#[allow(dead_code)]
#[napi(object)]
pub struct CancelAuthSessionInput {
  /// Fiskil's consent error type (default `'AUTH_SESSION_CANCELLED'`).
  #[napi(
    js_name = "error_type",
    ts_type = "'AUTH_SESSION_CANCELLED' | 'CONSENT_ENDUSER_DENIED' | 'CONSENT_OTP_FAILURE' | 'CONSENT_ENDUSER_INELIGIBLE' | 'CONSENT_TIMEOUT' | 'CONSENT_UPSTREAM_PROCESSING_ERROR' | 'AUTH_SESSION_INVALID' | 'CONSUMERDATA_PROCESSING_ERROR'"
  )]
  pub error_type: Option<String>,
}

/// Filters of `listConsents`.
// Type-only: see above.
#[allow(dead_code)]
#[napi(object)]
pub struct ConsentQuery {
  /// Only this end user's consents (`NOT_FOUND` if the account does not exist).
  #[napi(js_name = "end_user_id")]
  pub end_user_id: Option<String>,
  /// Alias of `end_user_id`.
  #[napi(js_name = "linked_account_id")]
  pub linked_account_id: Option<String>,
  /// Only active (`true`) or only ended (`false`) consents, as of now.
  pub active: Option<bool>,
}

/// An auth session. `session_id` is a single-use bearer secret: hand it to the end user's
/// consent flow only. It is stored hashed and never appears in events.
#[napi(object, use_nullable = true)]
pub struct AuthSession {
  /// Public record id (24 hex); events name the session by it.
  pub id: String,
  #[napi(js_name = "session_id")]
  pub session_id: String,
  /// Where the end user consents: `${authUrlBase}?session_id=…` when the client has
  /// `authUrlBase`, else the linkvault server's consent page `${publicUrl}/link/session/<session_id>`
  /// (relative, `/link/session/<session_id>`, without `publicUrl`).
  #[napi(js_name = "auth_url")]
  pub auth_url: String,
  /// Unix seconds.
  #[napi(js_name = "expires_at")]
  pub expires_at: i64,
  /// `'expired'` once `expires_at` has passed while pending.
  #[napi(ts_type = "'pending' | 'completed' | 'cancelled' | 'expired'")]
  pub status: String,
  #[napi(js_name = "linked_account_id")]
  pub linked_account_id: String,
  /// Same as `linked_account_id` (Fiskil's name).
  #[napi(js_name = "end_user_id")]
  pub end_user_id: String,
  /// Null for a Link SDK session (created without URIs).
  #[napi(js_name = "redirect_uri")]
  pub redirect_uri: Option<String>,
  #[napi(js_name = "cancel_uri")]
  pub cancel_uri: Option<String>,
  #[napi(js_name = "institution_id")]
  pub institution_id: Option<String>,
  pub permissions: Option<Vec<String>>,
  /// The consent this session renews, if it is a renewal session.
  #[napi(js_name = "arrangement_id")]
  pub arrangement_id: Option<String>,
  /// The consent the completion created or renewed (Fiskil Link's `consentID`).
  #[napi(js_name = "consent_id")]
  pub consent_id: Option<String>,
  /// The Fiskil error type of a cancelled session.
  #[napi(js_name = "error_type")]
  pub error_type: Option<String>,
  /// Unix seconds.
  #[napi(js_name = "created_at")]
  pub created_at: i64,
}

/// A consent (Fiskil's consent object). Times are RFC 3339 (UTC, seconds).
#[napi(object, use_nullable = true)]
pub struct Consent {
  #[napi(js_name = "arrangement_id")]
  pub arrangement_id: String,
  /// False once revoked, expired (at once when `expires_at` passes) or its account deleted.
  pub active: bool,
  #[napi(js_name = "end_user_id")]
  pub end_user_id: String,
  #[napi(js_name = "institution_id")]
  pub institution_id: String,
  #[napi(js_name = "institution_name")]
  pub institution_name: Option<String>,
  #[napi(js_name = "account_ids")]
  pub account_ids: Vec<String>,
  pub permissions: Vec<String>,
  /// Seconds granted by the latest consent.
  pub duration: i64,
  #[napi(js_name = "created_at")]
  pub created_at: String,
  #[napi(js_name = "expires_at")]
  pub expires_at: String,
  /// When the end user last consented (creation or renewal).
  #[napi(js_name = "last_consent")]
  pub last_consent: String,
  /// Null while active.
  #[napi(
    js_name = "termination_reason",
    ts_type = "'revoked' | 'expired' | 'account_deleted'"
  )]
  pub termination_reason: Option<String>,
  /// The client's `appName` (null without it).
  #[napi(js_name = "app_name")]
  pub app_name: Option<String>,
  /// The client's `appLogo` (null without it).
  #[napi(js_name = "app_logo")]
  pub app_logo: Option<String>,
  /// The end user's email as it is now (`createEndUser` / `updateEndUser`), else null.
  #[napi(js_name = "end_user_email")]
  pub end_user_email: Option<String>,
  /// From the completion (`institution_logo`), else null.
  #[napi(js_name = "institution_logo")]
  pub institution_logo: Option<String>,
  /// From the completion (`institution_type`, default `'banking'`).
  #[napi(js_name = "institution_type", ts_type = "'banking' | 'energy'")]
  pub institution_type: String,
  /// When data was last accessed under the consent (`recordConsentAccess`); null until then.
  #[napi(js_name = "last_accessed")]
  pub last_accessed: Option<String>,
}

/// What `expireConsents` recorded.
#[napi(object)]
pub struct ExpireResult {
  /// How many lapsed consents this call recorded (0 if another client got there first).
  pub expired: u32,
  #[napi(js_name = "arrangement_ids")]
  pub arrangement_ids: Vec<String>,
}

fn secs(ms: i64) -> i64 {
  ms.div_euclid(1000)
}

fn to_js_session(s: CoreSession, auth_url: String) -> AuthSession {
  AuthSession {
    id: s.id,
    session_id: s.session_id,
    auth_url,
    expires_at: secs(s.expires_at),
    status: s.status.as_str().to_string(),
    end_user_id: s.linked_account_id.clone(),
    linked_account_id: s.linked_account_id,
    redirect_uri: s.redirect_uri,
    cancel_uri: s.cancel_uri,
    institution_id: s.institution_id,
    permissions: s.permissions,
    arrangement_id: s.arrangement_id,
    consent_id: s.consent_id,
    error_type: s.error_type,
    created_at: secs(s.created_at),
  }
}

pub(crate) fn to_js_consent(c: CoreConsent, app: &AppInfo) -> Consent {
  Consent {
    arrangement_id: c.arrangement_id,
    active: c.active,
    end_user_id: c.end_user_id,
    institution_id: c.institution_id,
    institution_name: c.institution_name,
    account_ids: c.account_ids,
    permissions: c.permissions,
    duration: c.duration,
    created_at: rfc3339_secs(secs(c.created_at)),
    expires_at: rfc3339_secs(secs(c.expires_at)),
    last_consent: rfc3339_secs(secs(c.last_consent)),
    termination_reason: c
      .termination_reason
      .map(|t: Termination| t.as_str().to_string()),
    app_name: app.name.clone(),
    app_logo: app.logo.clone(),
    end_user_email: c.end_user_email,
    institution_logo: c.institution_logo,
    institution_type: c.institution_type.as_str().to_string(),
    last_accessed: c.last_accessed.map(|t| rfc3339_secs(secs(t))),
  }
}

impl Client {
  /// A promise for a consent, with this client's app fields.
  fn consent_promise<'e>(
    &self,
    env: &'e Env,
    p: Pending<CoreConsent>,
  ) -> napi::Result<PromiseRaw<'e, Consent>> {
    let vault = self.vault.clone();
    promise(env, p, move |c| to_js_consent(c, &vault.app))
  }

  fn session_promise<'e>(
    &self,
    env: &'e Env,
    p: Pending<CoreSession>,
  ) -> napi::Result<PromiseRaw<'e, AuthSession>> {
    let vault = self.vault.clone();
    promise(env, p, move |s| {
      let url = vault.auth_url(&s.session_id);
      to_js_session(s, url)
    })
  }
}

#[napi]
impl Client {
  /// Creates a single-use auth session for an end user (a linked account), to hand to the
  /// consent flow. `NOT_FOUND` for an unknown account (or `arrangement_id`);
  /// `VALIDATION_ERROR` for non-http(s) URIs, a renewal of an ended consent or of another end
  /// user's consent. Appends `auth_session.created`.
  #[napi(
    ts_args_type = "options: AuthSessionInput",
    ts_return_type = "Promise<AuthSession>"
  )]
  pub fn create_auth_session<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, AuthSession>> {
    let p = with_json(options, "options", |v| self.vault.create_auth_session(v));
    self.session_promise(env, p)
  }

  /// Reads an auth session by its `session_id`, with its current `status`.
  #[napi(
    ts_args_type = "session_id: string",
    ts_return_type = "Promise<AuthSession>"
  )]
  pub fn get_auth_session<'e>(
    &self,
    env: &'e Env,
    session_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, AuthSession>> {
    let p = with_json(session_id, "session_id", |v| self.vault.get_auth_session(v));
    self.session_promise(env, p)
  }

  /// Records the end user's consent: creates the consent (`consent.received`) or, for a
  /// renewal session, updates the same consent (`consent.updated`), and completes the session
  /// (`auth_session.completed`), all in one transaction. A session is single use:
  /// `AUTH_SESSION_ALREADY_USED` once completed or cancelled (of concurrent completions exactly
  /// one succeeds), `AUTH_SESSION_EXPIRED` past `expires_at`.
  #[napi(
    ts_args_type = "session_id: string, result: AuthSessionResult",
    ts_return_type = "Promise<Consent>"
  )]
  pub fn complete_auth_session<'e>(
    &self,
    env: &'e Env,
    session_id: Option<Unknown<'_>>,
    result: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Consent>> {
    let p = match (
      json_arg(session_id, "session_id"),
      json_arg(result, "result"),
    ) {
      (Ok(s), Ok(r)) => self.vault.complete_auth_session(&s, &r),
      (Err(e), _) | (_, Err(e)) => Pending::ready(Err(e)),
    };
    self.consent_promise(env, p)
  }

  /// Ends a pending session without consent, with a Fiskil error type
  /// (`auth_session.cancelled`). Same single-use and expiry refusals as completion.
  #[napi(
    ts_args_type = "session_id: string, options?: CancelAuthSessionInput",
    ts_return_type = "Promise<AuthSession>"
  )]
  pub fn cancel_auth_session<'e>(
    &self,
    env: &'e Env,
    session_id: Option<Unknown<'_>>,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, AuthSession>> {
    let p = match (
      json_arg(session_id, "session_id"),
      json_arg(options, "options"),
    ) {
      (Ok(s), Ok(o)) => self.vault.cancel_auth_session(&s, Some(&o)),
      (Err(e), _) | (_, Err(e)) => Pending::ready(Err(e)),
    };
    self.session_promise(env, p)
  }

  /// Lists consents in creation order, optionally for one end user and/or by `active`.
  #[napi(
    ts_args_type = "options?: ConsentQuery",
    ts_return_type = "Promise<Consent[]>"
  )]
  pub fn list_consents<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Vec<Consent>>> {
    let p = with_json(options, "options", |v| self.vault.list_consents(Some(v)));
    let vault = self.vault.clone();
    promise(env, p, move |list| {
      list
        .into_iter()
        .map(|c| to_js_consent(c, &vault.app))
        .collect()
    })
  }

  /// Gets one consent; `NOT_FOUND` if unknown.
  #[napi(
    ts_args_type = "arrangement_id: string",
    ts_return_type = "Promise<Consent>"
  )]
  pub fn get_consent<'e>(
    &self,
    env: &'e Env,
    arrangement_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Consent>> {
    let p = with_json(arrangement_id, "arrangement_id", |v| {
      self.vault.get_consent(v)
    });
    self.consent_promise(env, p)
  }

  /// Revokes a consent (`termination_reason: 'revoked'`, `consent.revoked`). Revoking an ended
  /// consent is a no-op that returns it unchanged.
  #[napi(
    ts_args_type = "arrangement_id: string",
    ts_return_type = "Promise<Consent>"
  )]
  pub fn revoke_consent<'e>(
    &self,
    env: &'e Env,
    arrangement_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Consent>> {
    let p = with_json(arrangement_id, "arrangement_id", |v| {
      self.vault.revoke_consent(v)
    });
    self.consent_promise(env, p)
  }

  /// Records every consent past its `expires_at` as expired, each with one `consent.revoked`
  /// event (exactly once, even with several clients sweeping). Reads already show lapsed
  /// consents as expired; run this periodically so their events go out.
  #[napi(ts_return_type = "Promise<ExpireResult>")]
  pub fn expire_consents<'e>(&self, env: &'e Env) -> napi::Result<PromiseRaw<'e, ExpireResult>> {
    promise(env, self.vault.expire_consents(), |ids| ExpireResult {
      expired: ids.len() as u32,
      arrangement_ids: ids,
    })
  }
}

#[napi]
impl Client {
  /// Records that data was accessed under a consent: stamps its `last_accessed` (Fiskil's
  /// field) and appends `consent.accessed`. An ended consent (revoked, expired, account
  /// deleted) is refused with `VALIDATION_ERROR` (`field: 'arrangement_id'`); unknown:
  /// `NOT_FOUND`.
  #[napi(
    ts_args_type = "arrangement_id: string",
    ts_return_type = "Promise<Consent>"
  )]
  pub fn record_consent_access<'e>(
    &self,
    env: &'e Env,
    arrangement_id: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Consent>> {
    let p = with_json(arrangement_id, "arrangement_id", |v| {
      self.vault.record_consent_access(v)
    });
    self.consent_promise(env, p)
  }
}

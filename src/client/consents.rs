//! Auth-session and consent calls of a client (Fiskil's `createAuthSession`,
//! `completeAuthSession`, `listConsents`, ...): input parsing, then one job per call on the
//! store with the rules of `domain::consents`.

use std::sync::Arc;

use serde_json::Value;

use super::end_users::map_result;
use super::Vault;
use crate::accounts::MAX_ID_CHARS;
use crate::clock::now_ms;
use crate::consents::{
  parse_cancel, parse_completion, parse_filter, parse_session_input, session_url, AuthSession,
  Consent,
};
use crate::domain::consents::{lifecycle, sessions};
use crate::error::Result;
use crate::input;
use crate::store::{self, Pending, Scope, Store};

fn arrangement(v: &Value) -> Result<String> {
  input::id(Some(v), "arrangement_id", MAX_ID_CHARS)
}

fn session_key(v: &Value) -> Result<String> {
  input::id(Some(v), "session_id", MAX_ID_CHARS)
}

/// A read's result, after queueing (without waiting for it) the write that records the lapsed
/// consents the read noticed: a lapse reads as expired at once, and is recorded (with its
/// event) exactly once, by whichever write gets there first. The write is queued before the
/// caller gets the result, so the caller's next write comes after it.
fn recording_lapses<T: Send + 'static>(
  store: Arc<dyn Store>,
  scope: Scope,
  read: Pending<(T, bool)>,
) -> Pending<T> {
  map_result(read, move |r| {
    let (value, noticed) = r?;
    if noticed {
      drop(store::write(&*store, move |tx| {
        lifecycle::expire_due(tx, &scope, None, now_ms())
      }));
    }
    Ok(value)
  })
}

impl Vault {
  /// The `auth_url` of a session id (`session_url`).
  pub fn auth_url(&self, session_id: &str) -> String {
    session_url(
      self.auth_url_base.as_deref(),
      self.public_url.as_deref(),
      session_id,
    )
  }

  /// `createAuthSession(options)`.
  pub fn create_auth_session(&self, options: &Value) -> Pending<AuthSession> {
    Pending::flatten(parse_session_input(options).map(|input| {
      let scope = self.scope.clone();
      store::write(&*self.store, move |tx| {
        sessions::create(tx, &scope, input.clone(), now_ms())
      })
    }))
  }

  /// `getAuthSession(session_id)`.
  pub fn get_auth_session(&self, session_id: &Value) -> Pending<AuthSession> {
    Pending::flatten(session_key(session_id).map(|s| {
      let scope = self.scope.clone();
      store::read_point(&*self.store, move |tx| {
        sessions::get(tx, &scope, &s, now_ms())
      })
    }))
  }

  /// `completeAuthSession(session_id, result)`.
  pub fn complete_auth_session(&self, session_id: &Value, result: &Value) -> Pending<Consent> {
    Pending::flatten((|| {
      let s = session_key(session_id)?;
      let c = parse_completion(result)?;
      let scope = self.scope.clone();
      Ok(store::write(&*self.store, move |tx| {
        sessions::complete(tx, &scope, &s, c.clone(), now_ms())
      }))
    })())
  }

  /// `cancelAuthSession(session_id, { error_type })`.
  pub fn cancel_auth_session(
    &self,
    session_id: &Value,
    options: Option<&Value>,
  ) -> Pending<AuthSession> {
    Pending::flatten((|| {
      let s = session_key(session_id)?;
      let t = parse_cancel(options)?;
      let scope = self.scope.clone();
      Ok(store::write(&*self.store, move |tx| {
        sessions::cancel(tx, &scope, &s, &t, now_ms())
      }))
    })())
  }

  /// `listConsents({ end_user_id?, active? })`.
  pub fn list_consents(&self, query: Option<&Value>) -> Pending<Vec<Consent>> {
    Pending::flatten(parse_filter(query).map(|f| {
      let scope = self.scope.clone();
      let read = store::read(&*self.store, move |tx| {
        lifecycle::list(tx, &scope, &f, now_ms())
      });
      recording_lapses(self.store.clone(), self.scope.clone(), read)
    }))
  }

  /// `getConsent(arrangement_id)`.
  pub fn get_consent(&self, arrangement_id: &Value) -> Pending<Consent> {
    Pending::flatten(arrangement(arrangement_id).map(|a| {
      let scope = self.scope.clone();
      let read = store::read_point(&*self.store, move |tx| {
        lifecycle::get(tx, &scope, &a, now_ms())
      });
      recording_lapses(self.store.clone(), self.scope.clone(), read)
    }))
  }

  /// `revokeConsent(arrangement_id)`: idempotent.
  pub fn revoke_consent(&self, arrangement_id: &Value) -> Pending<Consent> {
    Pending::flatten(arrangement(arrangement_id).map(|a| {
      let scope = self.scope.clone();
      store::write(&*self.store, move |tx| {
        lifecycle::revoke(tx, &scope, &a, now_ms())
      })
    }))
  }

  /// `expireConsents()`: records every lapsed consent; returns the arrangement ids it recorded.
  pub fn expire_consents(&self) -> Pending<Vec<String>> {
    let scope = self.scope.clone();
    store::write(&*self.store, move |tx| {
      lifecycle::expire_due(tx, &scope, None, now_ms())
    })
  }

  /// `recordConsentAccess(arrangement_id)`: stamps `last_accessed` on an active consent.
  pub fn record_consent_access(&self, arrangement_id: &Value) -> Pending<Consent> {
    Pending::flatten(arrangement(arrangement_id).map(|a| {
      let scope = self.scope.clone();
      store::write(&*self.store, move |tx| {
        lifecycle::record_access(tx, &scope, &a, now_ms())
      })
    }))
  }
}

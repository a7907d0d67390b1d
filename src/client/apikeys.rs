//! API-key calls of a client (`createApiKey`, `listApiKeys`, `revokeApiKey`, `resolveApiKey`,
//! `issueAccessToken`, `resolveAccessToken`); the rules are in `domain::apikeys`.
//! `createApiKey` works in the client's scope; the others on the whole store, since a key's
//! look-up is what decides a scope.

use serde_json::Value;

use super::end_users::map_result;
use super::Vault;
use crate::clock::now_ms;
use crate::domain::apikeys::{
  self, AccessGrant, ApiKeyInfo, CreatedApiKey, IssuedAccessToken, KeyFilter, DEFAULT_ACCESS_TTL,
  MAX_ACCESS_TTL, MAX_AUDIENCE_CHARS, MAX_LIST, MAX_NAME_CHARS,
};
use crate::error::{Error, Result};
use crate::input::{self, Fields};
use crate::store::{self, Pending};

fn optional_name(f: &Fields<'_>) -> Result<Option<String>> {
  match f.get("name") {
    None => Ok(None),
    some => Ok(Some(input::id(some, "name", MAX_NAME_CHARS)?)),
  }
}

fn environment_arg(f: &Fields<'_>) -> Result<Option<String>> {
  match f.str("environment")? {
    None => Ok(None),
    Some(e @ ("test" | "production")) => Ok(Some(e.to_string())),
    Some(_) => Err(Error::validation(
      "environment",
      "environment must be 'test' or 'production'",
    )),
  }
}

fn string_arg<'v>(v: &'v Value, field: &str, max: usize) -> Result<&'v str> {
  match v {
    Value::String(s) if !s.is_empty() && s.len() <= max => Ok(s),
    Value::String(_) => Err(Error::validation(
      field,
      format!("{field} must be 1 to {max} characters"),
    )),
    _ => Err(Error::validation(
      field,
      format!("{field} must be a string"),
    )),
  }
}

impl Vault {
  /// `createApiKey({ name? })`.
  pub fn create_api_key(&self, options: Option<&Value>) -> Pending<CreatedApiKey> {
    Pending::flatten((|| {
      let f = Fields::new(options, "options")?;
      let name = optional_name(&f)?;
      let (api_key, client_secret, record) = apikeys::generate(&self.scope, name, now_ms())?;
      let scope = self.scope.clone();
      let stored = store::write(&*self.store, move |tx| apikeys::create(tx, &scope, &record));
      Ok(map_result(stored, move |r| {
        r.map(|info| CreatedApiKey {
          api_key,
          client_secret,
          info,
        })
      }))
    })())
  }

  /// `listApiKeys({ orgId?, environment?, limit? })`, oldest first.
  pub fn list_api_keys(&self, options: Option<&Value>) -> Pending<Vec<ApiKeyInfo>> {
    Pending::flatten((|| {
      let f = Fields::new(options, "options")?;
      let org_id = match f.get("orgId") {
        None => None,
        some => Some(input::id(some, "orgId", 256)?),
      };
      let filter = KeyFilter {
        org_id,
        environment: environment_arg(&f)?,
        limit: f.int("limit", 1, MAX_LIST)?.unwrap_or(MAX_LIST),
      };
      Ok(store::read(&*self.store, move |tx| {
        tx.list_api_keys(&filter)
      }))
    })())
  }

  /// `revokeApiKey(client_id)`: `NOT_FOUND` if unknown; revoking twice changes nothing.
  pub fn revoke_api_key(&self, client_id: &Value) -> Pending<ApiKeyInfo> {
    Pending::flatten(input::id(Some(client_id), "client_id", 128).map(|id| {
      let now = now_ms();
      store::write(&*self.store, move |tx| apikeys::revoke(tx, &id, now))
    }))
  }

  /// `resolveApiKey(api_key)`: the live key it belongs to, else `None`.
  pub fn resolve_api_key(&self, api_key: &Value) -> Pending<Option<ApiKeyInfo>> {
    let Value::String(key) = api_key else {
      return Pending::ready(Ok(None));
    };
    if !apikeys::well_formed_api_key(key) {
      return Pending::ready(Ok(None));
    }
    let key = key.clone();
    store::read_point(&*self.store, move |tx| apikeys::resolve(tx, &key))
  }

  /// `issueAccessToken({ client_id, client_secret, audience, ttl_seconds? })`: a new access
  /// token, or `None` when the credentials are unknown, wrong or revoked. A read checks the
  /// credentials (wrong ones cost no write), then a write stores the token's digest.
  pub fn issue_access_token(&self, input: &Value) -> Pending<Option<IssuedAccessToken>> {
    Pending::flatten((|| {
      if !input.is_object() {
        return Err(Error::validation("request", "request must be an object"));
      }
      let f = Fields::new(Some(input), "")?;
      let client_id = input::id(f.get("client_id"), "client_id", 128)?;
      let secret = string_arg(
        f.get("client_secret").unwrap_or(&Value::Null),
        "client_secret",
        256,
      )?
      .to_string();
      let audience = input::id(f.get("audience"), "audience", MAX_AUDIENCE_CHARS)?;
      let ttl = f
        .int("ttl_seconds", 1, MAX_ACCESS_TTL)?
        .unwrap_or(DEFAULT_ACCESS_TTL);
      if !apikeys::well_formed_credentials(&client_id, &secret) {
        return Ok(Pending::ready(Ok(None)));
      }
      let engine = self.store.clone();
      let (answer, result) = Pending::channel();
      store::read(&*self.store, move |tx| {
        apikeys::authenticate(tx, &client_id, &secret)
      })
      .on_ready(move |found| {
        let key = match found {
          Ok(Some(key)) => key,
          other => {
            let _ = answer.send(other.map(|_| None));
            return;
          }
        };
        let token = match apikeys::new_access_token() {
          Ok(t) => t,
          Err(e) => {
            let _ = answer.send(Err(e));
            return;
          }
        };
        let now = now_ms();
        let grant = AccessGrant {
          key,
          audience,
          expires_at: now.div_euclid(1000) + ttl,
        };
        let (t, g) = (token.clone(), grant.clone());
        store::write(&*engine, move |tx| {
          apikeys::store_access_token(tx, &t, &g, now)
        })
        .on_ready(move |r| {
          let _ = answer.send(r.map(|stored| {
            stored.then_some(IssuedAccessToken {
              access_token: token,
              expires_in: ttl,
              grant,
            })
          }));
        });
      });
      Ok(result)
    })())
  }

  /// `resolveAccessToken(token, audience)`: the grant of a live token issued for `audience`,
  /// else `None` (unknown, expired, other audience, key revoked).
  pub fn resolve_access_token(
    &self,
    token: &Value,
    audience: &Value,
  ) -> Pending<Option<AccessGrant>> {
    Pending::flatten((|| {
      let audience = input::id(Some(audience), "audience", MAX_AUDIENCE_CHARS)?;
      let Value::String(token) = token else {
        return Ok(Pending::ready(Ok(None)));
      };
      if !apikeys::well_formed_access_token(token) {
        return Ok(Pending::ready(Ok(None)));
      }
      let (token, now) = (token.clone(), now_ms());
      Ok(store::read(&*self.store, move |tx| {
        apikeys::resolve_access_token(tx, &token, &audience, now)
      }))
    })())
  }
}

#[cfg(test)]
mod tests {
  use crate::client::testing::{fresh, open, On, BOTH};
  use crate::scoped::ScopeOptions;
  use serde_json::json;

  #[test]
  fn keys_resolve_across_scopes_and_revocation_ends_their_tokens() {
    for on in BOTH {
      resolve_and_revoke(on);
    }
  }

  fn resolve_and_revoke(on: On) {
    let root = open(&fresh(on), json!({"orgId": "org_a"}), 4);
    let prod = root
      .for_scope(
        ScopeOptions::parse(Some(
          &json!({"orgId": "org_b", "environment": "production"}),
        ))
        .unwrap(),
      )
      .wait()
      .unwrap();
    let key = prod.create_api_key(None).wait().unwrap();
    assert!(key.api_key.starts_with("pk_"));
    // Any client resolves it to its own scope.
    let found = root
      .resolve_api_key(&json!(key.api_key))
      .wait()
      .unwrap()
      .unwrap();
    assert_eq!(
      (found.org_id.as_str(), found.environment.as_str()),
      ("org_b", "production")
    );
    let request =
      json!({"client_id": key.info.client_id, "client_secret": key.client_secret, "audience": "a"});
    let issued = root.issue_access_token(&request).wait().unwrap().unwrap();
    let grant = root
      .resolve_access_token(&json!(issued.access_token), &json!("a"))
      .wait()
      .unwrap()
      .unwrap();
    assert_eq!(grant.key.client_id, key.info.client_id);
    assert!(root
      .resolve_access_token(&json!(issued.access_token), &json!("b"))
      .wait()
      .unwrap()
      .is_none());
    let wrong = json!({"client_id": key.info.client_id, "client_secret": format!("lvs_{}", "0".repeat(64)), "audience": "a"});
    assert!(root.issue_access_token(&wrong).wait().unwrap().is_none());
    root
      .revoke_api_key(&json!(key.info.client_id))
      .wait()
      .unwrap();
    assert!(root
      .resolve_api_key(&json!(key.api_key))
      .wait()
      .unwrap()
      .is_none());
    assert!(root
      .resolve_access_token(&json!(issued.access_token), &json!("a"))
      .wait()
      .unwrap()
      .is_none());
    assert!(root.issue_access_token(&request).wait().unwrap().is_none());
    assert_eq!(
      root
        .revoke_api_key(&json!("lvc_unknown"))
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    let listed = root
      .list_api_keys(Some(&json!({"orgId": "org_b"})))
      .wait()
      .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some());
    prod.close().wait().unwrap();
    root.close().wait().unwrap();
  }
}

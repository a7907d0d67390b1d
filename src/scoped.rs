//! `forScope`: a client bound to another (org, environment) on the same store. A server that
//! answers many orgs opens the store once and derives one client per scope: no new
//! connections or threads for the store, only the scope's id and its own session-token
//! verifier (whose keys and revocations are per scope).

use serde_json::Value;

use crate::client::Vault;
use crate::domain::tokens::TokenOptions;
use crate::error::{Error, Result};
use crate::input::{self, Fields};
use crate::store::{Pending, Scope};

/// Options of `forScope`.
#[derive(Debug)]
pub struct ScopeOptions {
  pub org_id: String,
  pub environment: String,
  /// Create the scope when the store does not hold it yet (else `NOT_FOUND`).
  pub create: bool,
}

impl ScopeOptions {
  pub fn parse(v: Option<&Value>) -> Result<Self> {
    let f = Fields::new(v, "options")?;
    let org_id = input::id(f.get("orgId"), "orgId", 256)?;
    let environment = match f.str("environment")? {
      None => "test".to_string(),
      Some(e @ ("test" | "production")) => e.to_string(),
      Some(_) => {
        return Err(Error::validation(
          "environment",
          "environment must be 'test' or 'production'",
        ))
      }
    };
    let create = f.bool("create")?.unwrap_or(true);
    Ok(ScopeOptions {
      org_id,
      environment,
      create,
    })
  }
}

impl Vault {
  /// A client on this client's store bound to another scope, with this client's options
  /// (token lifetimes, skew, `authUrlBase`, `publicUrl`, `appName`, `appLogo`). Its `close()` releases only its own token
  /// verifier; the store closes with the client it came from.
  pub fn for_scope(&self, options: ScopeOptions) -> Pending<Vault> {
    let store = self.store.clone();
    let sealer = self.sealer.clone();
    let policy = self.tokens.policy;
    let auth_url_base = self.auth_url_base.clone();
    let public_url = self.public_url.clone();
    let app = self.app.clone();
    let key_file = self.key_file.clone();
    let (answer, result) = Pending::channel();
    // Opening a verifier waits on the store: not on the caller's (Node's) thread.
    let spawned = std::thread::Builder::new()
      .name("linkvault-scope".into())
      .spawn(move || {
        let r = (|| {
          let scope: Scope = if options.create {
            crate::client::open_scope(&*store, &sealer, Some(options.org_id), &options.environment)?
          } else {
            let (org, env) = (options.org_id, options.environment);
            let (o, e) = (org.clone(), env.clone());
            let id = crate::store::read(&*store, move |tx| tx.scope_id(&o, &e)).wait()?;
            let id = id.ok_or_else(|| {
              Error::not_found(format!("No data for org {org} in environment {env}"))
            })?;
            Scope {
              id,
              org_id: org,
              environment: env,
            }
          };
          let options = TokenOptions {
            signing_secret: None,
            policy,
          };
          let tokens = crate::client::open_token_runtime(&*store, &sealer, &scope, options)?;
          Ok(Vault {
            store,
            sealer,
            scope,
            auth_url_base,
            public_url,
            app,
            tokens,
            key_file,
            shares_store: true,
          })
        })();
        let _ = answer.send(r);
      });
    match spawned {
      Ok(_) => result,
      Err(e) => Pending::ready(Err(Error::storage(format!(
        "cannot start scope thread: {e}"
      )))),
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::client::OpenOptions;
  use crate::crypto::Key;
  use serde_json::json;

  fn open(path: &str) -> Vault {
    let mut o = OpenOptions::parse(Some(&json!({"path": path, "orgId": "org_a"}))).unwrap();
    o.encryption_key = Some(Key::from_bytes([9; 32]));
    Vault::open(o).wait().unwrap()
  }

  #[test]
  fn scoped_clients_share_the_store_and_see_only_their_scope() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db").to_string_lossy().to_string();
    let root = open(&path);
    let parse = |v| ScopeOptions::parse(Some(&v)).unwrap();
    assert_eq!(
      root
        .for_scope(parse(json!({"orgId": "org_b", "create": false})))
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    let b = root
      .for_scope(parse(json!({"orgId": "org_b"})))
      .wait()
      .unwrap();
    let b_prod = root
      .for_scope(parse(
        json!({"orgId": "org_b", "environment": "production"}),
      ))
      .wait()
      .unwrap();
    b.upsert_linked_account(&json!({"linked_account_id": "u1"}), None)
      .wait()
      .unwrap();
    for other in [&root, &b_prod] {
      let e = other
        .get_linked_account_by_id(&json!("u1"))
        .wait()
        .unwrap_err();
      assert_eq!(e.code(), "NOT_FOUND");
    }
    // A token of one scope does not verify in another.
    let issued = b
      .get_token_for_linked_account(&json!({"linked_account_id": "u1"}))
      .wait()
      .unwrap();
    assert_eq!(
      b.verify_session_token(&issued.token).unwrap().org_id,
      "org_b"
    );
    assert!(b_prod.verify_session_token(&issued.token).is_err());
    // Existing scopes are found without create.
    let again = root
      .for_scope(parse(json!({"orgId": "org_b", "create": false})))
      .wait()
      .unwrap();
    assert_eq!(again.scope().id, b.scope().id);
    // Closing a scoped client leaves the store open for the others.
    b.close().wait().unwrap();
    again.get_linked_account_by_id(&json!("u1")).wait().unwrap();
    root.close().wait().unwrap();
    assert_eq!(
      again
        .get_linked_account_by_id(&json!("u1"))
        .wait()
        .unwrap_err()
        .code(),
      "CLIENT_CLOSED"
    );
  }

  #[test]
  fn options_are_validated() {
    assert_eq!(
      ScopeOptions::parse(Some(&json!({})))
        .unwrap_err()
        .field
        .as_deref(),
      Some("orgId")
    );
    assert_eq!(
      ScopeOptions::parse(Some(&json!({"orgId": "o", "environment": "dev"})))
        .unwrap_err()
        .field
        .as_deref(),
      Some("environment")
    );
  }
}

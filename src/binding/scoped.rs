//! `forScope`: a client for another (org, environment) on the same store.

use std::sync::Arc;

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;

use super::client::Client;
use super::js::{json_arg, promise, rejected};
use crate::scoped::ScopeOptions;

/// Options of `forScope`.
// Type-only: documents the input in index.d.ts; the input itself is read as JSON.
#[allow(dead_code)]
#[napi(object)]
pub struct ForScopeOptions {
  /// The org the new client works in.
  pub org_id: String,
  /// Default `'test'`.
  #[napi(ts_type = "'test' | 'production'")]
  pub environment: Option<String>,
  /// Create the scope if the store does not hold it yet (default true); with false an
  /// unknown scope rejects with `NOT_FOUND` and nothing is written.
  pub create: Option<bool>,
}

#[napi]
impl Client {
  /// A client for another org and environment on this client's store: no new connections or
  /// threads, only its own scope and session-token verifier. It inherits this client's options
  /// (token lifetimes, skew, `authUrlBase`, `publicUrl`, `appName`, `appLogo`). Its `close()`
  /// releases only its verifier (token verification then rejects with `CLIENT_CLOSED`); the
  /// store stays open until the client it came from is closed, which ends every client derived
  /// from it. This is how one server answers many orgs from one database.
  #[napi(
    ts_args_type = "options: ForScopeOptions",
    ts_return_type = "Promise<Client>"
  )]
  pub fn for_scope<'e>(
    &self,
    env: &'e Env,
    options: Option<Unknown<'_>>,
  ) -> napi::Result<PromiseRaw<'e, Client>> {
    match json_arg(options, "options").and_then(|v| ScopeOptions::parse(Some(&v))) {
      Err(e) => rejected(env, e),
      Ok(o) => promise(env, self.vault.for_scope(o), |vault| Client {
        vault: Arc::new(vault),
      }),
    }
  }
}

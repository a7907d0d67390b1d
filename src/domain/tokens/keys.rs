//! Signing keys of a scope: the newest live key signs new tokens, every live key verifies, a
//! retired key verifies nothing. Secrets are stored sealed (associated data: scope and kid).

use serde_json::json;

use super::{random_id, Secret, TokenTx};
use crate::crypto::Sealer;
use crate::domain::events::types;
use crate::domain::keys::signing_key_aad;
use crate::domain::Scope;
use crate::error::{Error, Result};

/// One stored signing key.
#[derive(Clone, Debug)]
pub struct StoredKey {
  /// Insertion order: the greatest live one signs.
  pub seq: i64,
  pub kid: String,
  /// The secret, sealed.
  pub sealed: Vec<u8>,
  pub retired: bool,
}

/// The signing keys table.
pub trait SigningKeyRows {
  /// Every key of the scope, oldest first.
  fn signing_keys(&mut self, scope_id: i64) -> Result<Vec<StoredKey>>;
  /// The live (not retired) keys of the scope, in any order.
  fn live_signing_keys(&mut self, scope_id: i64) -> Result<Vec<StoredKey>>;
  /// A live key's sealed secret.
  fn live_signing_key(&mut self, scope_id: i64, kid: &str) -> Result<Option<Vec<u8>>>;
  fn insert_signing_key(
    &mut self,
    scope_id: i64,
    kid: &str,
    sealed: &[u8],
    now_ms: i64,
  ) -> Result<()>;
  fn retire_signing_key(&mut self, scope_id: i64, kid: &str, now_ms: i64) -> Result<()>;
}

pub fn open_key(sealer: &Sealer, scope_id: i64, kid: &str, sealed: &[u8]) -> Result<Secret> {
  Ok(Secret::from_bytes(
    sealer.open(sealed, &signing_key_aad(scope_id, kid))?,
  ))
}

/// The key that signs new tokens: the newest live one.
pub fn current_key(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
) -> Result<(String, Secret)> {
  let newest = tx
    .live_signing_keys(scope.id)?
    .into_iter()
    .max_by_key(|k| k.seq)
    .ok_or_else(|| Error::storage("no live signing key"))?;
  let secret = open_key(sealer, scope.id, &newest.kid, &newest.sealed)?;
  Ok((newest.kid, secret))
}

/// A live key by kid.
pub fn live_key(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  kid: &str,
) -> Result<Option<Secret>> {
  tx.live_signing_key(scope.id, kid)?
    .map(|s| open_key(sealer, scope.id, kid, &s))
    .transpose()
}

fn insert_key(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  secret: &Secret,
  reason: &str,
  now_ms: i64,
) -> Result<String> {
  let kid = random_id()?;
  // Seal under the database's key (another client may have rotated it): see domain::keys.
  crate::domain::keys::sync(tx, sealer)?;
  let sealed = sealer.seal(secret.as_bytes(), &signing_key_aad(scope.id, &kid))?;
  tx.insert_signing_key(scope.id, &kid, &sealed, now_ms)?;
  tx.bump_token_epoch(scope.id)?;
  tx.append_event(
    scope.id,
    types::SIGNING_KEY_ADDED,
    None,
    &json!({ "kid": kid, "reason": reason }),
    now_ms,
  )?;
  Ok(kid)
}

/// The stored key holding `secret`, if any.
fn find_secret<'r>(
  keys: &'r [StoredKey],
  sealer: &Sealer,
  scope_id: i64,
  secret: &Secret,
) -> Result<Option<&'r StoredKey>> {
  for key in keys {
    if open_key(sealer, scope_id, &key.kid, &key.sealed)?.ct_eq(secret) {
      return Ok(Some(key));
    }
  }
  Ok(None)
}

fn retired_secret() -> Error {
  Error::validation(
    "signingSecret",
    "signingSecret belongs to a retired signing key",
  )
}

/// Whether opening needs to register a signing key (none live yet, or a new `signingSecret`).
/// Asked in a read first, so opening a database that has its key writes nothing (and works on
/// a read-only file).
pub fn needs_signing_key(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  secret: Option<&Secret>,
) -> Result<bool> {
  let keys = tx.signing_keys(scope.id)?;
  match secret {
    Some(s) => match find_secret(&keys, sealer, scope.id, s)? {
      Some(key) if key.retired => Err(retired_secret()),
      Some(_) => Ok(false),
      None => Ok(true),
    },
    None => Ok(!keys.iter().any(|k| !k.retired)),
  }
}

/// At open: with `signingSecret`, registers it as the newest key unless the scope already has
/// it (a retired one is refused); without, generates a key if the scope has no live one.
pub fn ensure_signing_key(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  secret: Option<&Secret>,
  now_ms: i64,
) -> Result<()> {
  let keys = tx.signing_keys(scope.id)?;
  match secret {
    Some(s) => match find_secret(&keys, sealer, scope.id, s)? {
      Some(key) if key.retired => Err(retired_secret()),
      Some(_) => Ok(()),
      None => insert_key(tx, sealer, scope, s, "signingSecret", now_ms).map(|_| ()),
    },
    None if keys.iter().any(|k| !k.retired) => Ok(()),
    None => insert_key(tx, sealer, scope, &Secret::generate()?, "generated", now_ms).map(|_| ()),
  }
}

/// `rotateSigningKey`: adds a key (random, or `secret`) that signs from now on; returns its kid.
pub fn rotate(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  secret: Option<&Secret>,
  now_ms: i64,
) -> Result<String> {
  let secret = match secret {
    Some(s) => {
      let keys = tx.signing_keys(scope.id)?;
      if find_secret(&keys, sealer, scope.id, s)?.is_some() {
        return Err(Error::validation(
          "signingSecret",
          "signingSecret is already a signing key of this client",
        ));
      }
      s.clone()
    }
    None => Secret::generate()?,
  };
  insert_key(tx, sealer, scope, &secret, "rotated", now_ms)
}

/// `retireSigningKey`: tokens the key signed stop verifying. Retiring a retired key does
/// nothing; the only live key cannot be retired.
pub fn retire(
  tx: &mut (impl TokenTx + ?Sized),
  scope: &Scope,
  kid: &str,
  now_ms: i64,
) -> Result<()> {
  let keys = tx.signing_keys(scope.id)?;
  match keys.iter().find(|k| k.kid == kid) {
    None => Err(Error::not_found(format!("signing key {kid} not found"))),
    Some(k) if k.retired => Ok(()),
    Some(_) => {
      if keys.iter().filter(|k| !k.retired).count() <= 1 {
        return Err(Error::validation(
          "kid",
          "cannot retire the only live signing key: call rotateSigningKey() first",
        ));
      }
      tx.retire_signing_key(scope.id, kid, now_ms)?;
      tx.bump_token_epoch(scope.id)?;
      tx.append_event(
        scope.id,
        types::SIGNING_KEY_RETIRED,
        None,
        &json!({ "kid": kid }),
        now_ms,
      )?;
      Ok(())
    }
  }
}

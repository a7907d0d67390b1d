//! The in-memory verifier: verification without a database round trip.
//!
//! A verifier holds, for one scope, the live signing keys, the revoked `jti`s that have not yet
//! expired (plus a margin) and the per-account cutoffs, with the scope's epoch and where its
//! last read of the revocation log ended ([`View`]). Before each verification it asks its
//! [`Feed`] to bring the view up to date; how a feed learns that something changed is the
//! engine's (SQLite: `PRAGMA data_version`; PostgreSQL: notifications and a periodic epoch
//! check), and in the common case it costs no round trip. When the epoch moved, the feed reads
//! the keys and the new log entries ([`load_delta`]) and the view applies them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::keys::open_key;
use super::revocation::{unknown_key, Revocation};
use super::{check_claims, parse, secs, Check, Claims, Secret, TokenTx, REVOCATION_MARGIN_SECS};
use crate::crypto::Sealer;
use crate::domain::Scope;
use crate::error::{Error, ErrorKind, Result};

/// A change read from the database since the view's last look.
pub struct Delta {
  pub epoch: i64,
  /// Every live kid; the secret only for kids the view does not hold yet.
  pub keys: Vec<(String, Option<Secret>)>,
  pub revocations: Vec<Revocation>,
  pub resume_after: i64,
}

/// What changed since (`epoch`, `after`), or `None` if the epoch did not move.
pub fn load_delta(
  tx: &mut (impl TokenTx + ?Sized),
  sealer: &Sealer,
  scope_id: i64,
  epoch: Option<i64>,
  after: i64,
  known: &HashSet<String>,
) -> Result<Option<Delta>> {
  let now_epoch = tx.token_epoch(scope_id)?;
  if epoch == Some(now_epoch) {
    return Ok(None);
  }
  let mut keys = Vec::new();
  for key in tx.signing_keys(scope_id)? {
    if key.retired {
      continue;
    }
    let secret = if known.contains(&key.kid) {
      None
    } else {
      Some(open_key(sealer, scope_id, &key.kid, &key.sealed)?)
    };
    keys.push((key.kid, secret));
  }
  let page = tx.revocations_after(scope_id, after)?;
  Ok(Some(Delta {
    epoch: now_epoch,
    keys,
    revocations: page.entries,
    resume_after: page.resume_after,
  }))
}

/// The verifier's picture of one scope.
#[derive(Default)]
pub struct View {
  epoch: Option<i64>,
  after: i64,
  keys: HashMap<String, Secret>,
  /// jti → exp.
  revoked: HashMap<String, i64>,
  /// account id → tokens with a smaller `iat` are revoked.
  cutoffs: HashMap<String, i64>,
  next_prune: i64,
}

impl View {
  /// The epoch the view reflects (`None` before the first load, or after an incomplete one).
  pub fn epoch(&self) -> Option<i64> {
    self.epoch
  }

  /// Where the next read of the revocation log starts.
  pub fn after(&self) -> i64 {
    self.after
  }

  /// The kids whose secrets the view holds (a delta need not open them again).
  pub fn known(&self) -> HashSet<String> {
    self.keys.keys().cloned().collect()
  }

  /// Forgets the epoch, so that the next load reads the keys again.
  pub fn invalidate(&mut self) {
    self.epoch = None;
  }

  /// Applies a delta. Returns `false` if the view is incomplete (a kid it was told it holds is
  /// missing), so that the caller reloads everything next time; a missing key fails closed
  /// (unknown kid) meanwhile.
  pub fn apply(&mut self, d: Delta, now: i64) -> bool {
    let mut complete = true;
    let mut keys = HashMap::with_capacity(d.keys.len());
    for (kid, secret) in d.keys {
      match secret.or_else(|| self.keys.remove(&kid)) {
        Some(s) => {
          keys.insert(kid, s);
        }
        None => complete = false,
      }
    }
    self.keys = keys;
    for r in d.revocations {
      match r {
        Revocation::Jti { jti, exp } => {
          if exp.saturating_add(REVOCATION_MARGIN_SECS) > now {
            self.revoked.insert(jti, exp);
          }
        }
        Revocation::Account { account_id, cutoff } => {
          let e = self.cutoffs.entry(account_id).or_insert(cutoff);
          *e = (*e).max(cutoff);
        }
      }
    }
    self.after = self.after.max(d.resume_after);
    self.epoch = complete.then_some(d.epoch);
    complete
  }

  fn prune(&mut self, now: i64) {
    if now >= self.next_prune {
      self
        .revoked
        .retain(|_, exp| exp.saturating_add(REVOCATION_MARGIN_SECS) > now);
      self.next_prune = now + 60;
    }
  }

  fn check_revoked(&self, c: &Claims) -> Result<()> {
    if self.revoked.contains_key(&c.jti) {
      return Err(revoked());
    }
    if let Some(cutoff) = self.cutoffs.get(&c.linked_account_id) {
      if c.iat < *cutoff {
        return Err(revoked());
      }
    }
    Ok(())
  }
}

fn revoked() -> Error {
  Error::new(ErrorKind::TokenRevoked, "session token has been revoked")
}

/// Keeps a [`View`] fresh. Called before every verification, on the caller's thread (Node's,
/// for `verifySessionTokenSync`): in the common case, nothing changed, it must answer without a
/// database round trip.
pub trait Feed: Send {
  /// Brings `view` up to date if the database changed since its last look.
  fn refresh(&mut self, view: &mut View, now: i64) -> Result<()>;
  /// Releases the feed's resources (its connection, its subscription).
  fn close(&mut self) {}
}

struct State {
  view: View,
  feed: Box<dyn Feed>,
  /// Tokens this verifier has verified, with their key id and claims. A request path verifies
  /// the same token again and again: a repeat skips the HMAC and the JSON parsing, while key
  /// retirement, expiry and revocation are still checked on every call. Bounded: emptied when
  /// full.
  verified: HashMap<String, (String, Claims)>,
}

/// Most tokens `State::verified` holds.
const VERIFIED_CACHE: usize = 4096;

/// Verifies the session tokens of one scope from memory.
pub struct Verifier {
  scope: Scope,
  skew: i64,
  closed: AtomicBool,
  state: Mutex<State>,
}

impl Verifier {
  /// A verifier over `feed`, loaded now rather than on the first verification.
  pub fn new(scope: Scope, skew: i64, feed: Box<dyn Feed>, now_ms: i64) -> Result<Self> {
    let mut state = State {
      view: View::default(),
      feed,
      verified: HashMap::new(),
    };
    let State { view, feed, .. } = &mut state;
    feed.refresh(view, secs(now_ms))?;
    Ok(Verifier {
      scope,
      skew,
      closed: AtomicBool::new(false),
      state: Mutex::new(state),
    })
  }

  /// Full verification: framing, key, signature, claims, expiry, revocation. Microseconds in
  /// the common case.
  pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims> {
    if self.closed.load(Ordering::Acquire) {
      return Err(Error::closed());
    }
    let mut guard = self
      .state
      .lock()
      .map_err(|_| Error::storage("token verifier lock poisoned"))?;
    let st = &mut *guard;
    let now = secs(now_ms);
    st.feed.refresh(&mut st.view, now)?;
    st.view.prune(now);
    let check = Check::new(&self.scope, now_ms, self.skew);
    if let Some((kid, claims)) = st.verified.get(token) {
      if st.view.keys.contains_key(kid) {
        check_claims(claims, &check)?;
        st.view.check_revoked(claims)?;
        return Ok(claims.clone());
      }
    }
    let parsed = parse(token)?;
    let secret = st.view.keys.get(&parsed.kid).ok_or_else(unknown_key)?;
    let claims = parsed.verify(secret, &check)?;
    st.view.check_revoked(&claims)?;
    if st.verified.len() >= VERIFIED_CACHE {
      st.verified.clear();
    }
    st.verified
      .insert(token.to_string(), (parsed.kid, claims.clone()));
    Ok(claims)
  }

  /// Later verifications fail with `CLIENT_CLOSED`.
  pub fn close(&self) {
    self.closed.store(true, Ordering::Release);
    if let Ok(mut st) = self.state.lock() {
      st.feed.close();
      st.view = View::default();
      st.verified.clear();
    }
  }
}

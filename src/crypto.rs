//! Keys, sealing of secrets at rest, random ids and the HMAC/SHA-256 helpers.
//!
//! Secrets are sealed with XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`). A sealed value is
//! `version(1) | key id(8) | nonce(24) | ciphertext+tag`; the key id lets a reader pick the right
//! key while keys rotate, and the associated data binds each value to the row it belongs to, so a
//! sealed value copied to another row does not open.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

const SEAL_VERSION: u8 = 1;
pub const KID_LEN: usize = 8;
const NONCE_LEN: usize = 24;

/// A 32-byte symmetric key, wiped from memory on drop and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("Key(<hidden>)")
  }
}

impl Key {
  pub fn from_bytes(bytes: [u8; 32]) -> Self {
    Key(bytes)
  }

  pub fn random() -> Result<Self> {
    let mut b = [0u8; 32];
    os_random(&mut b)?;
    Ok(Key(b))
  }

  /// Parses 32 bytes written as 64 hex characters or as base64 (standard or URL-safe).
  /// The error names `field` and never echoes the input.
  pub fn parse(text: &str, field: &str) -> Result<Self> {
    let t = text.trim();
    let bad = || {
      Error::validation(
        field,
        format!("{field} must be 32 bytes as 64 hex characters or base64"),
      )
    };
    // The decoded bytes are wiped when dropped, and copied straight into the key.
    let bytes: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(
      if t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit()) {
        hex_decode(t).ok_or_else(bad)?
      } else {
        STANDARD
          .decode(t)
          .or_else(|_| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')))
          .map_err(|_| bad())?
      },
    );
    Key::from_slice(&bytes).ok_or_else(bad)
  }

  /// A key from exactly 32 bytes (copied in place, no intermediate copy left behind).
  pub fn from_slice(bytes: &[u8]) -> Option<Self> {
    if bytes.len() != 32 {
      return None;
    }
    let mut k = Key([0u8; 32]);
    k.0.copy_from_slice(bytes);
    Some(k)
  }

  pub fn as_bytes(&self) -> &[u8; 32] {
    &self.0
  }

  /// A short public fingerprint of the key, stored next to sealed values.
  pub fn id(&self) -> [u8; KID_LEN] {
    let mut h = Sha256::new();
    h.update(b"linkvault key id v1");
    h.update(self.0);
    let d = h.finalize();
    let mut out = [0u8; KID_LEN];
    out.copy_from_slice(&d[..KID_LEN]);
    out
  }

  /// Derives an independent subkey for another purpose (HMAC-SHA256 as a PRF).
  pub fn derive(&self, purpose: &str) -> Key {
    let tag = hmac_sha256(&self.0, purpose.as_bytes());
    Key(tag)
  }

  /// Loads the key kept beside a database file (`<db>.key`), creating it with mode 0600 the
  /// first time. Two processes racing to create it agree: creation is exclusive.
  pub fn load_or_create_file(path: &Path) -> Result<Self> {
    match std::fs::read_to_string(path).map(zeroize::Zeroizing::new) {
      Ok(text) => return Key::parse(&text, "encryptionKey"),
      Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
      Err(e) => {
        return Err(Error::storage(format!(
          "cannot read key file {}: {e}",
          path.display()
        )))
      }
    }
    let key = Key::random()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
      use std::os::unix::fs::OpenOptionsExt;
      opts.mode(0o600);
    }
    match opts.open(path) {
      Ok(mut f) => {
        let mut hex = hex_encode(&key.0);
        let res = f
          .write_all(hex.as_bytes())
          .and_then(|_| f.write_all(b"\n"))
          .and_then(|_| f.sync_all());
        hex.zeroize();
        res
          .map_err(|e| Error::storage(format!("cannot write key file {}: {e}", path.display())))?;
        Ok(key)
      }
      Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
        // Another process created it first; give it a moment to finish writing, then read it.
        for _ in 0..50 {
          if let Ok(text) = std::fs::read_to_string(path).map(zeroize::Zeroizing::new) {
            if text.ends_with('\n') {
              return Key::parse(&text, "encryptionKey");
            }
          }
          std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(Error::storage(format!(
          "key file {} is incomplete",
          path.display()
        )))
      }
      Err(e) => Err(Error::storage(format!(
        "cannot create key file {}: {e}",
        path.display()
      ))),
    }
  }
}

impl Key {
  /// Replaces the key file at `path` with this key, atomically (a new file with mode 0600,
  /// fsynced, renamed over the old one): a reader sees the old key or the new one, never a
  /// partial file. The hex text is wiped from memory afterwards.
  pub fn replace_file(&self, path: &Path) -> Result<()> {
    let tmp = path.with_extension(format!("key.tmp-{}", hex_encode(&random_bytes::<6>()?)));
    let fail =
      |e: std::io::Error| Error::storage(format!("cannot write key file {}: {e}", path.display()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
      use std::os::unix::fs::OpenOptionsExt;
      opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(fail)?;
    let mut hex = hex_encode(&self.0);
    let written = f
      .write_all(hex.as_bytes())
      .and_then(|_| f.write_all(b"\n"))
      .and_then(|_| f.sync_all());
    hex.zeroize();
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
      let _ = std::fs::remove_file(&tmp);
      return Err(fail(e));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
      if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
      }
    }
    Ok(())
  }
}

/// Seals and opens secrets under one current key, and opens values sealed under the older keys
/// it knows (picked by the key id each sealed value carries).
///
/// The key ring can change while the sealer is shared: during and after a key rotation
/// (`rotateEncryptionKey`) the store makes the file's key current (`use_key`) and learns keys
/// unwrapped from the file (`learn`). Every key is zeroized when the ring drops it.
pub struct Sealer {
  ring: std::sync::RwLock<Ring>,
}

#[derive(Clone)]
struct Ring {
  /// `(key id, key)`; the first is the current key.
  keys: Vec<([u8; KID_LEN], Key)>,
}

impl Clone for Sealer {
  fn clone(&self) -> Self {
    Sealer {
      ring: std::sync::RwLock::new(self.ring().clone()),
    }
  }
}

impl fmt::Debug for Sealer {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("Sealer(<hidden>)")
  }
}

/// Encrypts `plain` under `key`, binding it to `aad`.
fn seal_under(key: &Key, kid: &[u8; KID_LEN], plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
  let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
  let mut nonce = [0u8; NONCE_LEN];
  fill_random(&mut nonce)?;
  let ct = cipher
    .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
    .map_err(|_| Error::storage("encryption failed"))?;
  let mut out = Vec::with_capacity(1 + KID_LEN + NONCE_LEN + ct.len());
  out.push(SEAL_VERSION);
  out.extend_from_slice(kid);
  out.extend_from_slice(&nonce);
  out.extend_from_slice(&ct);
  Ok(out)
}

impl Sealer {
  pub fn new(current: Key) -> Self {
    Sealer {
      ring: std::sync::RwLock::new(Ring {
        keys: vec![(current.id(), current)],
      }),
    }
  }

  fn ring(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
    // A poisoned lock only means a panic elsewhere; the ring itself is always consistent.
    self.ring.read().unwrap_or_else(|p| p.into_inner())
  }

  fn ring_mut(&self) -> std::sync::RwLockWriteGuard<'_, Ring> {
    self.ring.write().unwrap_or_else(|p| p.into_inner())
  }

  pub fn with_older(self, older: Key) -> Self {
    self.learn(older);
    self
  }

  /// The id of the key new values are sealed under.
  pub fn key_id(&self) -> [u8; KID_LEN] {
    self
      .ring()
      .keys
      .first()
      .map(|k| k.0)
      .unwrap_or([0; KID_LEN])
  }

  /// Whether a key with this id is in the ring.
  pub fn knows(&self, kid: &[u8; KID_LEN]) -> bool {
    self.ring().keys.iter().any(|k| &k.0 == kid)
  }

  /// Adds a key that values may be sealed under (no effect if it is known already).
  pub fn learn(&self, key: Key) {
    let kid = key.id();
    let mut ring = self.ring_mut();
    if !ring.keys.iter().any(|k| k.0 == kid) {
      ring.keys.push((kid, key));
    }
  }

  /// Makes the known key `kid` the one new values are sealed under; false if it is unknown.
  pub fn use_key(&self, kid: &[u8; KID_LEN]) -> bool {
    let mut ring = self.ring_mut();
    match ring.keys.iter().position(|k| &k.0 == kid) {
      Some(i) => {
        let k = ring.keys.remove(i);
        ring.keys.insert(0, k);
        true
      }
      None => false,
    }
  }

  /// A copy of the current key (zeroized when dropped), to wrap it under another key.
  pub fn current_key(&self) -> Option<Key> {
    self.ring().keys.first().map(|k| k.1.clone())
  }

  /// Encrypts `plain`, binding it to `aad` (e.g. the row it is stored in).
  pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let ring = self.ring();
    let (kid, key) = ring
      .keys
      .first()
      .ok_or_else(|| Error::storage("no encryption key"))?;
    seal_under(key, kid, plain, aad)
  }

  /// Encrypts `plain` under `key` (not necessarily in the ring), e.g. to wrap a key.
  pub fn seal_with(key: &Key, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    seal_under(key, &key.id(), plain, aad)
  }

  /// Decrypts a value made by `seal` with the same `aad`; any mismatch is `DECRYPTION_FAILED`.
  pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < 1 + KID_LEN + NONCE_LEN + 16 || sealed[0] != SEAL_VERSION {
      return Err(Error::decryption());
    }
    let kid = &sealed[1..1 + KID_LEN];
    let ring = self.ring();
    let key = ring
      .keys
      .iter()
      .find(|k| k.0 == kid)
      .map(|k| &k.1)
      .ok_or_else(Error::decryption)?;
    let nonce = &sealed[1 + KID_LEN..1 + KID_LEN + NONCE_LEN];
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
      .decrypt(
        XNonce::from_slice(nonce),
        Payload {
          msg: &sealed[1 + KID_LEN + NONCE_LEN..],
          aad,
        },
      )
      .map_err(|_| Error::decryption())
  }

  /// The key id a sealed value was made with, if it is well-formed.
  pub fn sealed_key_id(sealed: &[u8]) -> Option<[u8; KID_LEN]> {
    sealed.get(1..1 + KID_LEN).and_then(|s| s.try_into().ok())
  }
}

/// Random bytes from the operating system, for long-lived keys and secrets.
pub fn os_random(buf: &mut [u8]) -> Result<()> {
  getrandom::getrandom(buf).map_err(|e| Error::storage(format!("no randomness available: {e}")))
}

/// Random bytes from `rand`'s thread-local CSPRNG (ChaCha, seeded and periodically reseeded
/// from the operating system), for nonces, ids and bearer tokens: a system call per id was a
/// visible share of every write.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
  use rand::RngExt;
  rand::rng().fill(buf);
  Ok(())
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
  let mut b = [0u8; N];
  fill_random(&mut b)?;
  Ok(b)
}

/// A 24-hex-character id shaped like a MongoDB ObjectId (4 bytes of seconds, 8 random bytes),
/// as Cobalt's `_id`s are.
pub fn object_id(now_ms: i64) -> Result<String> {
  let mut b = [0u8; 12];
  b[..4].copy_from_slice(&((now_ms / 1000) as u32).to_be_bytes());
  fill_random(&mut b[4..])?;
  Ok(hex_encode(&b))
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
  // HMAC accepts keys of any length, so this cannot fail.
  let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
    Ok(m) => m,
    Err(_) => unreachable!("HMAC takes any key length"),
  };
  mac.update(data);
  mac.finalize().into_bytes().into()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
  Sha256::digest(data).into()
}

/// Constant-time equality for secrets and MACs.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
  use subtle::ConstantTimeEq;
  a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn b64url(data: &[u8]) -> String {
  URL_SAFE_NO_PAD.encode(data)
}

pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
  URL_SAFE_NO_PAD.decode(text).ok()
}

pub fn hex_encode(bytes: &[u8]) -> String {
  const HEX: &[u8; 16] = b"0123456789abcdef";
  let mut s = String::with_capacity(bytes.len() * 2);
  for b in bytes {
    s.push(HEX[(b >> 4) as usize] as char);
    s.push(HEX[(b & 15) as usize] as char);
  }
  s
}

pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
  if !text.len().is_multiple_of(2) {
    return None;
  }
  (0..text.len())
    .step_by(2)
    .map(|i| {
      text
        .get(i..i + 2)
        .and_then(|h| u8::from_str_radix(h, 16).ok())
    })
    .collect()
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn seal_round_trip_and_aad_binding() {
    let s = Sealer::new(Key::from_bytes([7; 32]));
    let sealed = s.seal(b"secret", b"row-1").unwrap();
    assert_eq!(s.open(&sealed, b"row-1").unwrap(), b"secret");
    assert_eq!(
      s.open(&sealed, b"row-2").unwrap_err().code(),
      "DECRYPTION_FAILED"
    );
    let other = Sealer::new(Key::from_bytes([8; 32]));
    assert_eq!(
      other.open(&sealed, b"row-1").unwrap_err().code(),
      "DECRYPTION_FAILED"
    );
    let rotated = Sealer::new(Key::from_bytes([8; 32])).with_older(Key::from_bytes([7; 32]));
    assert_eq!(rotated.open(&sealed, b"row-1").unwrap(), b"secret");
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(s.open(&tampered, b"row-1").is_err());
    assert!(!sealed.windows(6).any(|w| w == b"secret"));
  }

  #[test]
  fn parses_hex_and_base64_keys_without_echoing() {
    let hex = "00".repeat(31) + "ff";
    assert_eq!(Key::parse(&hex, "k").unwrap().as_bytes()[31], 0xff);
    let b64 = STANDARD.encode([9u8; 32]);
    assert_eq!(Key::parse(&b64, "k").unwrap().as_bytes(), &[9u8; 32]);
    let err = Key::parse("not-a-key-at-all", "encryptionKey").unwrap_err();
    assert_eq!(err.field.as_deref(), Some("encryptionKey"));
    assert!(!err.message.contains("not-a-key"));
    assert_eq!(format!("{:?}", Key::from_bytes([1; 32])), "Key(<hidden>)");
  }

  #[test]
  fn object_ids_are_24_hex() {
    let id = object_id(1_700_000_000_000).unwrap();
    assert_eq!(id.len(), 24);
    assert!(id.starts_with("6553f100"));
    assert_ne!(id, object_id(1_700_000_000_000).unwrap());
  }
}

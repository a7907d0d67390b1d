//! Webhook signatures for hosts that forward events: the header value
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, verified in constant time
//! with a tolerance on the timestamp (against replays). Several `v1=` entries are accepted (one
//! per secret during a rotation); any one matching is enough.

use crate::crypto::{ct_eq, hex_decode, hex_encode, hmac_sha256};
use crate::error::{Error, Result};

pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// Timestamps above this are certainly milliseconds, not seconds (year 5138).
const MAX_TIMESTAMP_SECS: i64 = 100_000_000_000;

pub fn check_secret(secret: &[u8]) -> Result<()> {
  if secret.is_empty() {
    return Err(Error::validation("secret", "secret must not be empty"));
  }
  Ok(())
}

pub fn check_timestamp(t: i64) -> Result<()> {
  if !(0..MAX_TIMESTAMP_SECS).contains(&t) {
    return Err(Error::validation(
      "timestamp",
      "timestamp must be unix time in seconds (not milliseconds)",
    ));
  }
  Ok(())
}

pub fn check_tolerance(tolerance: i64) -> Result<()> {
  if tolerance < 0 {
    return Err(Error::validation(
      "toleranceSeconds",
      "toleranceSeconds must be zero or more",
    ));
  }
  Ok(())
}

fn mac(body: &[u8], secret: &[u8], t: i64) -> [u8; 32] {
  let mut signed = Vec::with_capacity(body.len() + 21);
  signed.extend_from_slice(t.to_string().as_bytes());
  signed.push(b'.');
  signed.extend_from_slice(body);
  hmac_sha256(secret, &signed)
}

/// The signature header for `body` at unix time `t` (seconds).
pub fn sign(body: &[u8], secret: &[u8], t: i64) -> Result<String> {
  check_secret(secret)?;
  check_timestamp(t)?;
  Ok(format!("t={t},v1={}", hex_encode(&mac(body, secret, t))))
}

/// Whether `header` is a valid signature of `body` made with `secret` no more than `tolerance`
/// seconds away from `now` (seconds). Malformed headers are simply not valid.
pub fn verify(body: &[u8], header: &str, secret: &[u8], tolerance: i64, now: i64) -> Result<bool> {
  check_secret(secret)?;
  check_tolerance(tolerance)?;
  let mut t: Option<i64> = None;
  let mut candidates: Vec<Vec<u8>> = Vec::new();
  for part in header.split(',') {
    let Some((k, v)) = part.trim().split_once('=') else {
      continue;
    };
    match k.trim() {
      "t" => {
        if t.is_some() {
          return Ok(false);
        }
        match v.trim().parse::<i64>() {
          Ok(n) if v.trim().bytes().all(|b| b.is_ascii_digit()) => t = Some(n),
          _ => return Ok(false),
        }
      }
      "v1" => {
        if let Some(sig) = hex_decode(&v.trim().to_ascii_lowercase()).filter(|s| s.len() == 32) {
          candidates.push(sig);
        }
      }
      _ => {}
    }
  }
  let Some(t) = t else { return Ok(false) };
  if (now - t).abs() > tolerance || candidates.is_empty() {
    return Ok(false);
  }
  let expected = mac(body, secret, t);
  // Compare against every candidate (no early exit) so timing reveals nothing.
  let mut ok = false;
  for c in &candidates {
    ok |= ct_eq(c, &expected);
  }
  Ok(ok)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn signs_like_the_documented_scheme() {
    let h = sign(b"{\"a\":1}", b"whsec", 1_700_000_000).unwrap();
    let expected = hex_encode(&hmac_sha256(b"whsec", b"1700000000.{\"a\":1}"));
    assert_eq!(h, format!("t=1700000000,v1={expected}"));
    assert!(verify(b"{\"a\":1}", &h, b"whsec", 300, 1_700_000_000).unwrap());
    assert!(verify(b"{\"a\":1}", &h, b"whsec", 300, 1_700_000_300).unwrap());
    // Stale or from the future.
    assert!(!verify(b"{\"a\":1}", &h, b"whsec", 300, 1_700_000_301).unwrap());
    assert!(!verify(b"{\"a\":1}", &h, b"whsec", 300, 1_699_999_699).unwrap());
    // Tampered body, wrong secret.
    assert!(!verify(b"{\"a\":2}", &h, b"whsec", 300, 1_700_000_000).unwrap());
    assert!(!verify(b"{\"a\":1}", &h, b"other", 300, 1_700_000_000).unwrap());
  }

  #[test]
  fn header_parsing_is_strict_but_allows_rotation() {
    let good = sign(b"x", b"s", 10).unwrap();
    let sig = good.split("v1=").nth(1).unwrap().to_string();
    let wrong = "00".repeat(32);
    assert!(verify(b"x", &format!("t=10, v1={wrong}, v1={sig}"), b"s", 5, 10).unwrap());
    assert!(verify(
      b"x",
      &format!("v1={},t=10", sig.to_uppercase()),
      b"s",
      5,
      10
    )
    .unwrap());
    for bad in [
      String::new(),
      "garbage".into(),
      format!("v1={sig}"),
      "t=10".into(),
      format!("t=10,t=10,v1={sig}"),
      format!("t=-10,v1={sig}"),
      format!("t=1e1,v1={sig}"),
      format!("t=10,v1={}", &sig[..62]),
      format!("t=10,v0={sig}"),
    ] {
      assert!(!verify(b"x", &bad, b"s", 5, 10).unwrap(), "{bad}");
    }
  }

  #[test]
  fn refuses_bad_arguments() {
    assert_eq!(
      sign(b"x", b"", 1).unwrap_err().field.as_deref(),
      Some("secret")
    );
    assert_eq!(
      sign(b"x", b"s", 1_700_000_000_000)
        .unwrap_err()
        .field
        .as_deref(),
      Some("timestamp")
    );
    assert_eq!(
      verify(b"x", "t=1", b"s", -1, 1)
        .unwrap_err()
        .field
        .as_deref(),
      Some("toleranceSeconds")
    );
    assert_eq!(
      verify(b"x", "t=1", b"", 1, 1).unwrap_err().field.as_deref(),
      Some("secret")
    );
  }
}

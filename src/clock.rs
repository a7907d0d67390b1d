//! Wall-clock time as milliseconds since the Unix epoch, and its ISO-8601 form.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
  SystemTime::now()
    .duration_since(UNIX_EPOCH)
    .map(|d| d.as_millis() as i64)
    .unwrap_or(0)
}

/// `2024-01-02T03:04:05.678Z` for a millisecond timestamp (UTC, always with milliseconds).
pub fn iso8601(ms: i64) -> String {
  let secs = ms.div_euclid(1000);
  let millis = ms.rem_euclid(1000);
  let days = secs.div_euclid(86_400);
  let sod = secs.rem_euclid(86_400);
  let (y, m, d) = civil_from_days(days);
  if !(0..=9999).contains(&y) {
    return format!(
      "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
      sod / 3600,
      (sod % 3600) / 60,
      sod % 60
    );
  }
  // Written digit by digit: this runs for every timestamp of every result, and the formatting
  // machinery was a visible share of a write.
  let mut out = [0u8; 24];
  let mut put = |at: usize, value: i64, width: usize| {
    let mut v = value;
    for i in (0..width).rev() {
      out[at + i] = b'0' + (v % 10) as u8;
      v /= 10;
    }
  };
  put(0, y, 4);
  put(5, i64::from(m), 2);
  put(8, i64::from(d), 2);
  put(11, sod / 3600, 2);
  put(14, (sod % 3600) / 60, 2);
  put(17, sod % 60, 2);
  put(20, millis, 3);
  for (at, c) in [
    (4, b'-'),
    (7, b'-'),
    (10, b'T'),
    (13, b':'),
    (16, b':'),
    (19, b'.'),
    (23, b'Z'),
  ] {
    out[at] = c;
  }
  out.iter().map(|&b| b as char).collect()
}

/// RFC 3339 without fractional seconds (`2024-01-02T03:04:05Z`), as Fiskil prints times.
pub fn rfc3339_secs(secs: i64) -> String {
  let full = iso8601(secs * 1000);
  format!("{}Z", &full[..19])
}

// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
  let z = z + 719_468;
  let era = z.div_euclid(146_097);
  let doe = z.rem_euclid(146_097);
  let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
  let y = yoe + era * 400;
  let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  let mp = (5 * doy + 2) / 153;
  let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
  let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
  (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn formats_known_instants() {
    assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(iso8601(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    assert_eq!(rfc3339_secs(1_700_000_000), "2023-11-14T22:13:20Z");
  }
}

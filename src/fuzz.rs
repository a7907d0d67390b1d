//! Property tests (proptest) over the core: every input parser never panics and its errors
//! always name a field; UDF merges keep their invariants; the session/consent state machine
//! holds under random operation sequences against the real store. The identity merge/unlink
//! property test lives with its seeded predecessor in `domain::identities::tests`.
//!
//! Budget: `LINKVAULT_FUZZ_CASES` (or proptest's `PROPTEST_CASES`) sets the number of cases of
//! every property; the default keeps `cargo test` fast. Long mode:
//! `LINKVAULT_FUZZ_CASES=20000 cargo test --release fuzz -- --nocapture`.
//! Each property prints how many cases it ran (`--nocapture` shows them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Number, Value};

use crate::error::{ErrorKind, Result};

/// Cases per property: `LINKVAULT_FUZZ_CASES`, else `PROPTEST_CASES`, else `default`.
pub(crate) fn cases(default: u32) -> u32 {
  ["LINKVAULT_FUZZ_CASES", "PROPTEST_CASES"]
    .iter()
    .find_map(|k| std::env::var(k).ok().and_then(|v| v.parse().ok()))
    .unwrap_or(default)
}

/// Runs `test` on `cases(default)` values of `strategy` and reports the count.
pub(crate) fn check<S: Strategy>(
  name: &str,
  default: u32,
  strategy: S,
  test: impl Fn(S::Value) -> std::result::Result<(), TestCaseError>,
) {
  let runs = AtomicU64::new(0);
  let mut runner = TestRunner::new(Config {
    cases: cases(default),
    failure_persistence: None,
    ..Config::default()
  });
  let result = runner.run(&strategy, |v| {
    runs.fetch_add(1, Ordering::Relaxed);
    test(v)
  });
  eprintln!("fuzz: {name}: {} executions", runs.load(Ordering::Relaxed));
  if let Err(e) = result {
    panic!("{name}: {e}");
  }
}

/// Field names the parsers know, so that random objects often hit real fields.
const KEYS: &[&str] = &[
  "linked_account_id",
  "account_id",
  "end_user_id",
  "name",
  "udf",
  "your_app",
  "app_id",
  "auth_credentials",
  "payload",
  "page",
  "limit",
  "after",
  "search",
  "ifVersion",
  "provider",
  "user_id",
  "connection",
  "isSocial",
  "email",
  "email_verified",
  "profileData",
  "link_with",
  "redirect_uri",
  "cancel_uri",
  "institution_id",
  "institution_name",
  "permissions",
  "arrangement_id",
  "ttl_seconds",
  "account_ids",
  "duration_seconds",
  "error_type",
  "active",
  "types",
  "before",
  "path",
  "orgId",
  "environment",
  "encryptionKey",
  "durability",
  "authUrlBase",
  "previousEncryptionKeys",
  "__proto__",
  "",
];

const STRINGS: &[&str] = &[
  "",
  "a",
  "test",
  "production",
  "full",
  "normal",
  "https://app.test/x",
  "http://h/",
  "accounts",
  "balances",
  "primary_wins",
  "secondary_wins",
  "CONSENT_TIMEOUT",
  "2024-01-31",
  "2024-01-31T12:00:00Z",
  "ann@example.com",
  "github",
  "x'); DROP TABLE accounts; --",
  "👩‍👩‍👧‍👦",
  "\u{202E}abc",
  "a\u{0}b",
  "YTE6MTA",
  "00ff",
];

fn string() -> impl Strategy<Value = String> {
  prop_oneof![
    3 => proptest::sample::select(STRINGS).prop_map(str::to_string),
    2 => any::<String>(),
    1 => proptest::string::string_regex("[a-f0-9]{64}").unwrap_or_else(|_| unreachable!()),
    1 => (0usize..400).prop_map(|n| "x".repeat(n)),
  ]
}

fn key() -> impl Strategy<Value = String> {
  prop_oneof![
    4 => proptest::sample::select(KEYS).prop_map(str::to_string),
    1 => any::<String>(),
  ]
}

fn number() -> impl Strategy<Value = Value> {
  prop_oneof![
    any::<i64>().prop_map(Value::from),
    (-5i64..2000).prop_map(Value::from),
    any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    Just(json!(1e300)),
    Just(json!(9007199254740993u64)),
  ]
}

/// Any JSON value, nested a few levels, biased towards the parsers' own field names.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
  let leaf = prop_oneof![
    Just(Value::Null),
    any::<bool>().prop_map(Value::Bool),
    number(),
    string().prop_map(Value::String),
  ];
  leaf.prop_recursive(4, 48, 6, |inner| {
    prop_oneof![
      proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
      proptest::collection::vec((key(), inner), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
    ]
  })
}

/// An object made of known fields with random values (deeper coverage of one parser).
fn object() -> impl Strategy<Value = Value> {
  proptest::collection::vec((key(), json_value()), 0..10)
    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

fn input() -> impl Strategy<Value = Value> {
  prop_oneof![2 => object(), 1 => json_value()]
}

/// An error from a parser must be a VALIDATION_ERROR with a non-empty field.
fn names_a_field<T>(r: &Result<T>) -> std::result::Result<(), TestCaseError> {
  if let Err(e) = r {
    prop_assert_eq!(e.kind, ErrorKind::Validation, "{:?}", e);
    prop_assert!(
      e.field.as_deref().is_some_and(|f| !f.is_empty()),
      "no field: {:?}",
      e
    );
  }
  Ok(())
}

#[test]
fn parsers_never_panic_and_errors_name_a_field() {
  use crate::domain::{events, keys};
  use crate::{accounts, client as vault, consents, identities};
  check("every parser x arbitrary JSON", 256, input(), |v| {
    names_a_field(&accounts::parse_payload(&v))?;
    names_a_field(&accounts::parse_page_query(Some(&v)))?;
    names_a_field(&accounts::parse_keyset_query(Some(&v)))?;
    names_a_field(&identities::parse_identity(&v))?;
    names_a_field(&identities::parse_link_target(&v))?;
    names_a_field(&identities::parse_link_options(Some(&v)))?;
    names_a_field(&identities::parse_user_id(Some(&v)))?;
    names_a_field(&identities::parse_provider(Some(&v)))?;
    names_a_field(&identities::parse_email(&v, "email"))?;
    names_a_field(&consents::parse_session_input(&v))?;
    names_a_field(&consents::parse_completion(&v))?;
    names_a_field(&consents::parse_cancel(Some(&v)))?;
    names_a_field(&consents::parse_filter(Some(&v)))?;
    names_a_field(&events::parse_query(Some(&v)))?;
    names_a_field(&events::parse_prune(Some(&v)))?;
    names_a_field(&keys::parse_previous_keys(Some(&v)))?;
    names_a_field(&vault::OpenOptions::parse(Some(&v)))?;
    // Accepted payloads are within the documented limits.
    if let Ok(p) = accounts::parse_payload(&v) {
      prop_assert!(!p.id.is_empty() && p.id.chars().count() <= accounts::MAX_ID_CHARS);
      prop_assert!(p.udf.len() <= 200);
    }
    Ok(())
  });
}

#[test]
fn text_parsers_never_panic_and_never_echo_keys() {
  use crate::crypto::{Key, Sealer};
  check(
    "cursors, dates, keys, sealed blobs, webhook headers",
    512,
    (
      string(),
      proptest::collection::vec(any::<u8>(), 0..120),
      any::<i64>(),
    ),
    |(s, bytes, n)| {
      let _ = crate::accounts::decode_cursor(&s);
      let _ = crate::domain::events::parse_iso8601(&s);
      if let Err(e) = Key::parse(&s, "encryptionKey") {
        prop_assert_eq!(e.field.as_deref(), Some("encryptionKey"));
        prop_assert!(s.len() < 8 || !e.message.contains(&s), "key echoed");
      }
      let sealer = Sealer::new(Key::from_bytes([1; 32]));
      prop_assert_eq!(
        sealer.open(&bytes, b"aad").map_err(|e| e.kind),
        Err(ErrorKind::DecryptionFailed)
      );
      let r = crate::domain::webhook::verify(&bytes, &s, b"secret", 300, n);
      prop_assert!(r.is_ok(), "{:?}", r);
      Ok(())
    },
  );
}

fn udf_rows(keys: &[(u8, i64)]) -> Vec<crate::accounts::UdfRow> {
  keys
    .iter()
    .map(|(k, v)| crate::accounts::UdfRow {
      key: format!("k{k}"),
      value: json!(v),
      json: json!(v).to_string(),
      oid: format!("oid{k}"),
      created_at: 1,
      updated_at: 1,
    })
    .collect()
}

fn unique(keys: Vec<(u8, i64)>) -> Vec<(u8, i64)> {
  let mut seen = std::collections::BTreeSet::new();
  keys.into_iter().filter(|(k, _)| seen.insert(*k)).collect()
}

#[test]
fn udf_upsert_merge_invariants() {
  use crate::accounts::merge_udf;
  let strategy = (
    proptest::collection::vec((0u8..12, -3i64..3), 0..10).prop_map(unique),
    proptest::collection::btree_map(0u8..12, proptest::option::of(-3i64..3), 0..10),
  );
  check("UDF upsert merge", 512, strategy, |(existing, sent)| {
    let mut rows = udf_rows(&existing);
    let sent_vec: Vec<(String, Option<Value>)> = sent
      .iter()
      .map(|(k, v)| (format!("k{k}"), v.map(|v| json!(v))))
      .collect();
    let changes =
      merge_udf(&mut rows, sent_vec, 99).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    // Model: a map with first-insertion order.
    let mut model: Vec<(String, i64)> = existing
      .iter()
      .map(|(k, v)| (format!("k{k}"), *v))
      .collect();
    for (k, v) in &sent {
      let key = format!("k{k}");
      let at = model.iter().position(|(m, _)| *m == key);
      match (at, v) {
        (Some(i), None) => {
          model.remove(i);
        }
        (Some(i), Some(v)) => model[i].1 = *v,
        (None, Some(v)) => model.push((key, *v)),
        (None, None) => {}
      }
    }
    let got: Vec<(String, i64)> = rows
      .iter()
      .map(|r| (r.key.clone(), r.value.as_i64().unwrap_or(i64::MIN)))
      .collect();
    prop_assert_eq!(&got, &model);
    for r in &rows {
      prop_assert_eq!(&r.json, &r.value.to_string());
      let before = existing.iter().find(|(k, _)| format!("k{k}") == r.key);
      match before {
        // A kept row keeps its _id and createdAt; updatedAt moves only if its value changed.
        Some((_, v)) => {
          prop_assert_eq!(r.created_at, 1);
          prop_assert_eq!(r.updated_at == 99, r.value != json!(v));
          prop_assert!(r.oid.starts_with("oid"));
        }
        None => prop_assert_eq!(r.created_at, 99),
      }
    }
    prop_assert_eq!(
      changes.any(),
      got
        != existing
          .iter()
          .map(|(k, v)| (format!("k{k}"), *v))
          .collect::<Vec<_>>()
    );
    Ok(())
  });
}

#[test]
fn udf_link_merge_invariants() {
  use crate::accounts::UdfRow;
  use crate::domain::identities::merge_udf_by_policy;
  use crate::identities::UdfPolicy;
  let strategy = (
    proptest::collection::vec((0u8..255, -3i64..3), 0..200).prop_map(unique),
    proptest::collection::vec((0u8..255, -3i64..3), 0..40).prop_map(unique),
    any::<bool>(),
  );
  check(
    "UDF merge of linked accounts",
    256,
    strategy,
    |(p, s, secondary_wins)| {
      let policy = if secondary_wins {
        UdfPolicy::SecondaryWins
      } else {
        UdfPolicy::PrimaryWins
      };
      let primary = udf_rows(&p);
      let secondary: Vec<UdfRow> = udf_rows(&s)
        .into_iter()
        .map(|mut r| {
          r.oid = format!("sec-{}", r.oid);
          r
        })
        .collect();
      let mut merged = primary.clone();
      let r = merge_udf_by_policy(&mut merged, &secondary, policy, 99);
      let union: BTreeMap<String, ()> = primary
        .iter()
        .chain(secondary.iter())
        .map(|r| (r.key.clone(), ()))
        .collect();
      if union.len() > 200 {
        // Refused, and nothing of the primary changed: nothing is dropped silently.
        prop_assert_eq!(r.map_err(|e| e.field), Err(Some("udf".to_string())));
        prop_assert_eq!(merged, primary);
        return Ok(());
      }
      prop_assert!(r.is_ok());
      prop_assert_eq!(
        merged.len(),
        union.len(),
        "every key of both sides is kept once"
      );
      // The primary's rows keep their order, then the secondary-only ones in theirs.
      let order: Vec<&str> = merged.iter().map(|r| r.key.as_str()).collect();
      let expected: Vec<&str> = primary
        .iter()
        .map(|r| r.key.as_str())
        .chain(
          secondary
            .iter()
            .filter(|s| !primary.iter().any(|p| p.key == s.key))
            .map(|r| r.key.as_str()),
        )
        .collect();
      prop_assert_eq!(order, expected);
      for m in &merged {
        let pv = primary.iter().find(|r| r.key == m.key);
        let sv = secondary.iter().find(|r| r.key == m.key);
        let want = match (pv, sv, policy) {
          (Some(_), Some(s), UdfPolicy::SecondaryWins) => &s.value,
          (Some(p), _, _) => &p.value,
          (None, Some(s), _) => {
            prop_assert_eq!(&m.oid, &s.oid, "a moved row keeps its _id");
            &s.value
          }
          (None, None, _) => unreachable!(),
        };
        prop_assert_eq!(&m.value, want);
      }
      Ok(())
    },
  );
}

#[test]
fn consent_state_machine_rules() {
  use crate::consents::{SessionState, SessionStatus, Termination};
  use crate::domain::consents::rules::{
    ceil_to_second, check_finishable, consent_expiry, session_status, termination, Ending,
  };
  let state = prop_oneof![
    Just(SessionState::Pending),
    Just(SessionState::Completed),
    Just(SessionState::Cancelled)
  ];
  let ending = prop_oneof![
    Just(Ending::Revoke),
    Just(Ending::Sweep),
    Just(Ending::AccountDeleted)
  ];
  let t = -10_000_000_000_000i64..10_000_000_000_000;
  check(
    "session and consent transitions",
    2048,
    (state, ending, any::<bool>(), t.clone(), t, 0i64..40_000_000),
    |(state, ending, active, expires, now, duration)| {
      // Only a pending session before its expiry can be finished; a used one says so first.
      let st = session_status(state, expires, now);
      let fin = check_finishable(state, expires, now).map_err(|e| e.kind);
      match st {
        SessionStatus::Pending => prop_assert_eq!(fin, Ok(())),
        SessionStatus::Completed | SessionStatus::Cancelled => {
          prop_assert_eq!(fin, Err(ErrorKind::AuthSessionAlreadyUsed))
        }
        SessionStatus::Expired => {
          prop_assert_eq!(state, SessionState::Pending);
          prop_assert!(now >= expires);
          prop_assert_eq!(fin, Err(ErrorKind::AuthSessionExpired))
        }
      }
      // An ended consent never changes again; a lapsed one ends as expired whatever ends it; a
      // sweep never ends a live consent.
      let term = termination(active, expires, ending, now);
      if !active {
        prop_assert_eq!(term, None);
      } else if now >= expires {
        prop_assert_eq!(term, Some(Termination::Expired));
      } else if ending == Ending::Sweep {
        prop_assert_eq!(term, None);
      } else {
        prop_assert!(term.is_some());
      }
      let c = ceil_to_second(now);
      prop_assert!(c >= now && c - now < 1000 && c.rem_euclid(1000) == 0);
      let e = consent_expiry(now, duration);
      prop_assert_eq!(e - now.div_euclid(1000) * 1000, duration * 1000);
      Ok(())
    },
  );
}

#[derive(Clone, Debug)]
enum ConsentOp {
  Session(usize),
  Complete(usize),
  Cancel(usize),
  Revoke(usize),
  Delete(usize),
  Renew(usize),
}

#[test]
fn consent_store_matches_a_model() {
  use crate::client::{OpenOptions, Vault};
  use crate::crypto::Key;
  let op = prop_oneof![
    3 => (0usize..3).prop_map(ConsentOp::Session),
    3 => (0usize..12).prop_map(ConsentOp::Complete),
    1 => (0usize..12).prop_map(ConsentOp::Cancel),
    2 => (0usize..12).prop_map(ConsentOp::Revoke),
    1 => (0usize..3).prop_map(ConsentOp::Delete),
    1 => (0usize..12).prop_map(ConsentOp::Renew),
  ];
  check(
    "consent store vs model",
    24,
    proptest::collection::vec(op, 1..40),
    |ops| {
      let mut o = OpenOptions::parse(Some(&json!({"path": ":memory:", "orgId": "o"})))
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
      o.encryption_key = Some(Key::from_bytes([9; 32]));
      let v = Vault::open(o)
        .wait()
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
      let accounts = ["u0", "u1", "u2"];
      let mut alive = [true; 3];
      for a in accounts {
        v.upsert_linked_account(&json!({"linked_account_id": a}), None)
          .wait()
          .ok();
      }
      // Model: sessions (id, account, used), consents (id, account, active, reason).
      let mut sessions: Vec<(String, usize, bool, Option<String>)> = Vec::new();
      let mut consents: Vec<(String, usize, bool, Option<&'static str>)> = Vec::new();
      for op in ops {
        match op {
          ConsentOp::Session(a) if !alive[a] => {
            let r = v
              .create_auth_session(&json!({"linked_account_id": accounts[a],
              "redirect_uri": "https://a.test/r", "cancel_uri": "https://a.test/c"}))
              .wait();
            prop_assert_eq!(r.map(|_| ()).map_err(|e| e.kind), Err(ErrorKind::NotFound));
          }
          ConsentOp::Session(a) => {
            let s = v
              .create_auth_session(&json!({"linked_account_id": accounts[a],
              "redirect_uri": "https://a.test/r", "cancel_uri": "https://a.test/c",
              "permissions": ["accounts"]}))
              .wait();
            let s = s.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            sessions.push((s.session_id, a, false, None));
          }
          ConsentOp::Renew(i) => {
            let Some(c) = consents.get(i % consents.len().max(1)).cloned() else {
              continue;
            };
            let r = v
              .create_auth_session(&json!({"linked_account_id": accounts[c.1],
              "redirect_uri": "https://a.test/r", "cancel_uri": "https://a.test/c",
              "arrangement_id": c.0}))
              .wait();
            match (alive[c.1], c.2, r) {
              (true, true, Ok(s)) => sessions.push((s.session_id, c.1, false, Some(c.0.clone()))),
              (false, _, Err(e)) => prop_assert_eq!(e.kind, ErrorKind::NotFound),
              (true, false, Err(e)) => prop_assert_eq!(e.field.as_deref(), Some("arrangement_id")),
              (alive, active, r) => prop_assert!(
                false,
                "renewal alive={} active={} got {:?}",
                alive,
                active,
                r.map(|_| ())
              ),
            }
          }
          ConsentOp::Complete(i) | ConsentOp::Cancel(i) => {
            let Some(s) = sessions.get(i % sessions.len().max(1)).cloned() else {
              continue;
            };
            let complete = matches!(op, ConsentOp::Complete(_));
            let r = if complete {
              v.complete_auth_session(
                &json!(s.0),
                &json!({"institution_id": "bank",
                "account_ids": ["x"], "duration_seconds": 3600}),
              )
              .wait()
              .map(Some)
            } else {
              v.cancel_auth_session(&json!(s.0), None)
                .wait()
                .map(|_| None)
            };
            match (alive[s.1], s.2, r) {
              (false, _, Err(e)) => prop_assert_eq!(e.kind, ErrorKind::NotFound),
              (true, true, Err(e)) => prop_assert_eq!(e.kind, ErrorKind::AuthSessionAlreadyUsed),
              (true, false, Ok(c)) => {
                let idx = sessions.iter().position(|x| x.0 == s.0).unwrap_or(0);
                sessions[idx].2 = true;
                if let Some(c) = c {
                  match &s.3 {
                    // A renewal of a live consent updates it in place.
                    Some(arr) if consents.iter().any(|x| &x.0 == arr && x.2) => {
                      prop_assert_eq!(&c.arrangement_id, arr);
                    }
                    _ => {
                      prop_assert!(!consents.iter().any(|x| x.0 == c.arrangement_id));
                      consents.push((c.arrangement_id, s.1, true, None));
                    }
                  }
                }
              }
              (alive, used, r) => prop_assert!(
                false,
                "finish alive={} used={} got {:?}",
                alive,
                used,
                r.map(|_| ())
              ),
            }
          }
          ConsentOp::Revoke(i) => {
            let Some(c) = consents.get(i % consents.len().max(1)).cloned() else {
              continue;
            };
            let r = v
              .revoke_consent(&json!(c.0))
              .wait()
              .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let idx = consents.iter().position(|x| x.0 == c.0).unwrap_or(0);
            if consents[idx].2 {
              consents[idx].2 = false;
              consents[idx].3 = Some("revoked");
            }
            prop_assert!(!r.active);
            prop_assert_eq!(r.termination_reason.map(|t| t.as_str()), consents[idx].3);
          }
          ConsentOp::Delete(a) => {
            let r = v.delete_linked_account(&json!(accounts[a])).wait();
            prop_assert_eq!(r.is_ok(), alive[a]);
            if alive[a] {
              alive[a] = false;
              for c in consents.iter_mut().filter(|c| c.1 == a && c.2) {
                c.2 = false;
                c.3 = Some("account_deleted");
              }
            }
          }
        }
      }
      // The store agrees with the model, consent by consent, and so do the events.
      for c in &consents {
        let got = v
          .get_consent(&json!(c.0))
          .wait()
          .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(got.active, c.2);
        prop_assert_eq!(got.termination_reason.map(|t| t.as_str()), c.3);
      }
      let events = v
        .list_events(Some(&json!({"types": "consent.revoked", "limit": 1000})))
        .wait()
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
      prop_assert_eq!(
        events.events.len(),
        consents.iter().filter(|c| !c.2).count(),
        "one consent.revoked per ended consent"
      );
      let received = v
        .list_events(Some(&json!({"types": "consent.received", "limit": 1000})))
        .wait()
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
      prop_assert_eq!(received.events.len(), consents.len());
      let integrity = v
        .check_integrity()
        .wait()
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
      prop_assert!(integrity.ok, "{:?}", integrity);
      v.close().wait().ok();
      Ok(())
    },
  );
}

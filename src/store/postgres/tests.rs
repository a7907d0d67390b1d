//! Tests against a real PostgreSQL: `LINKVAULT_TEST_PG_URL`, else a throwaway server started
//! by `__test__/pg-keeper.js` (which fails loudly when none can start). Each test works in a
//! schema of its own.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use super::conn::{Mode, PgConn, PgTx};
use super::*;
use crate::client::{OpenOptions, Vault};
use crate::crypto::{hex_encode, Key};
use crate::domain::tokens::{encode, Claims, Secret};

const SECRET: &str = "a-signing-secret-of-at-least-32-bytes!!";

/// The test server's URL (started once per test process).
pub fn server_url() -> String {
  static URL: OnceLock<String> = OnceLock::new();
  URL
    .get_or_init(|| {
      if let Ok(u) = std::env::var("LINKVAULT_TEST_PG_URL") {
        if !u.trim().is_empty() {
          return u;
        }
      }
      let keeper = concat!(env!("CARGO_MANIFEST_DIR"), "/__test__/pg-keeper.js");
      let mut child = Command::new("node")
        .arg(keeper)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node {keeper} to start PostgreSQL: {e}"));
      let mut line = String::new();
      BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
      let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        panic!("PostgreSQL could not be started for the tests (see pg-keeper's message above)")
      });
      // Its standard input stays open until this process exits; then it stops the server.
      std::mem::forget(child);
      v["url"].as_str().unwrap().to_string()
    })
    .clone()
}

pub fn unique_schema() -> String {
  format!(
    "t_{}",
    hex_encode(&crate::crypto::random_bytes::<6>().unwrap())
  )
}

fn open(schema: &str, org: &str, key: [u8; 32]) -> Result<Vault> {
  let o = OpenOptions::parse(Some(&json!({
    "url": server_url(), "schema": schema, "orgId": org, "poolSize": 4,
    "encryptionKey": hex_encode(&key), "signingSecret": SECRET,
  })))?;
  Vault::open(o).wait()
}

fn raw(schema: &str) -> PgConn {
  PgConn::connect(&Target::parse(&server_url(), schema).unwrap()).unwrap()
}

fn token(kid: &str, jti: &str, account: &str, org: &str) -> String {
  token_with(SECRET, kid, jti, account, org)
}

fn token_with(secret: &str, kid: &str, jti: &str, account: &str, org: &str) -> String {
  let now = crate::clock::now_ms() / 1000;
  let c = Claims {
    org_id: org.into(),
    linked_account_id: account.into(),
    environment: "test".into(),
    iat: now - 5,
    exp: now + 600,
    jti: jti.into(),
    scopes: None,
  };
  encode(kid, &c, &Secret::parse(secret, "s").unwrap()).unwrap()
}

/// Adds a random signing key; its kid.
fn current_kid(v: &Vault) -> String {
  v.rotate_signing_key(None).wait().unwrap()
}

/// The kid of the key registered from `signingSecret` at open.
fn secret_kid(v: &Vault) -> String {
  let events = v
    .list_events(Some(&json!({"types": ["signing_key.added"]})))
    .wait()
    .unwrap()
    .events;
  let e = events
    .iter()
    .find(|e| e.data["reason"] == "signingSecret")
    .unwrap();
  e.data["kid"].as_str().unwrap().to_string()
}

#[test]
fn concurrent_opens_of_a_fresh_schema_both_succeed_and_a_newer_one_is_refused() {
  let schema = unique_schema();
  let handles: Vec<_> = (0..3)
    .map(|_| {
      let s = schema.clone();
      std::thread::spawn(move || open(&s, "org_1", [1; 32]))
    })
    .collect();
  for h in handles {
    let v = h.join().unwrap().unwrap();
    v.close().wait().unwrap();
  }
  let mut c = raw(&schema);
  assert_eq!(
    c.scalar_i64(&format!(
      "SELECT max(version) FROM {}.migrations",
      quote_ident(&schema)
    ))
    .unwrap(),
    schema::latest_version()
  );
  c.batch(&format!(
    "INSERT INTO {}.migrations (version) VALUES (999)",
    quote_ident(&schema)
  ))
  .unwrap();
  let e = open(&schema, "org_1", [1; 32]).unwrap_err();
  assert_eq!(e.code(), "STORAGE_ERROR");
  assert!(e.message.contains("newer"), "{}", e.message);
}

#[test]
fn wrong_key_down_server_and_bad_options() {
  let schema = unique_schema();
  open(&schema, "o", [1; 32]).unwrap().close().wait().unwrap();
  assert_eq!(
    open(&schema, "o", [2; 32]).unwrap_err().code(),
    "DECRYPTION_FAILED"
  );
  // Nothing listens on port 1: STORAGE_ERROR 503 naming host and port, never the password.
  let o = OpenOptions::parse(Some(&json!({
    "url": "postgres://u:hunter2secret@127.0.0.1:1/db?connect_timeout=2",
    "encryptionKey": hex_encode(&[1; 32]),
  })))
  .unwrap();
  let e = Vault::open(o).wait().unwrap_err();
  assert_eq!((e.code(), e.status()), ("STORAGE_ERROR", 503));
  assert!(e.message.contains("127.0.0.1:1"), "{}", e.message);
  assert!(!e.message.contains("hunter2secret"));
  for (options, field) in [
    (
      json!({"url": server_url(), "path": "x.db", "encryptionKey": hex_encode(&[1; 32])}),
      "url",
    ),
    (
      json!({"url": "mysql://h/db", "encryptionKey": hex_encode(&[1; 32])}),
      "url",
    ),
    (json!({"url": server_url()}), "encryptionKey"),
    (
      json!({"url": server_url(), "encryptionKey": hex_encode(&[1; 32]), "poolSize": 0}),
      "poolSize",
    ),
    (
      json!({"url": server_url(), "encryptionKey": hex_encode(&[1; 32]), "schema": "a b"}),
      "schema",
    ),
    (json!({"schema": "x"}), "schema"),
  ] {
    if field == "encryptionKey" && std::env::var(crate::client::ENV_ENCRYPTION_KEY).is_ok() {
      continue;
    }
    let e = OpenOptions::parse(Some(&options)).unwrap_err();
    assert_eq!(
      (e.code(), e.field.as_deref()),
      ("VALIDATION_ERROR", Some(field)),
      "{options}"
    );
  }
}

#[test]
fn revocations_reach_other_clients_within_a_second() {
  let schema = unique_schema();
  let a = open(&schema, "org_1", [3; 32]).unwrap();
  let b = open(&schema, "org_1", [3; 32]).unwrap();
  let kid = secret_kid(&a);
  let t = token(&kid, "ext-1", "u1", "org_1");
  assert!(a.verify_session_token(&t).is_ok());
  assert!(b.verify_session_token(&t).is_ok());
  assert_eq!(a.revoke_session_token(&json!(t)).wait().unwrap(), 1);
  // At once in the revoking client; within a second in the other one.
  assert_eq!(
    a.verify_session_token(&t).unwrap_err().code(),
    "TOKEN_REVOKED"
  );
  let start = Instant::now();
  while b.verify_session_token(&t).is_ok() {
    assert!(
      start.elapsed() < Duration::from_secs(1),
      "revocation not seen by b within 1 s"
    );
    std::thread::sleep(Duration::from_millis(1));
  }
  assert_eq!(
    b.verify_session_token(&t).unwrap_err().code(),
    "TOKEN_REVOKED"
  );
  // Retiring a key is honoured the same way.
  let t2 = token(&kid, "ext-2", "u1", "org_1");
  assert!(a.verify_session_token(&t2).is_ok());
  const OTHER: &str = "another-signing-secret-of-32-bytes-or-more";
  let newer = a
    .rotate_signing_key(Some(&json!({ "signingSecret": OTHER })))
    .wait()
    .unwrap();
  // b learns the new key through the feed.
  let t3 = token_with(OTHER, &newer, "ext-3", "u1", "org_1");
  let start = Instant::now();
  while b.verify_session_token(&t3).is_err() {
    assert!(
      start.elapsed() < Duration::from_secs(1),
      "new key not seen by b within 1 s"
    );
    std::thread::sleep(Duration::from_millis(1));
  }
  a.retire_signing_key(&json!(kid)).wait().unwrap();
  assert_eq!(
    a.verify_session_token(&t2).unwrap_err().code(),
    "INVALID_TOKEN"
  );
  let start = Instant::now();
  while b.verify_session_token(&t2).is_ok() {
    assert!(start.elapsed() < Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(1));
  }
  assert!(b.verify_session_token(&t3).is_ok());
  a.close().wait().unwrap();
  b.close().wait().unwrap();
}

#[test]
fn list_events_never_skips_an_event_committed_out_of_order() {
  let schema = unique_schema();
  let a = open(&schema, "org_1", [4; 32]).unwrap();
  let seen = a.list_events(None).wait().unwrap().events;
  let last = seen.last().map(|e| e.id).unwrap_or(0);
  // T1 starts first (takes a transaction id) and stays open.
  let mut t1 = raw(&schema);
  t1.batch("BEGIN").unwrap();
  let xid = t1
    .scalar_i64("SELECT pg_current_xact_id()::text::bigint")
    .unwrap();
  // T2 (a linkvault write) commits meanwhile, with a larger id.
  current_kid(&a);
  let page = a.list_events(Some(&json!({"after": last}))).wait().unwrap();
  assert!(
    page.events.is_empty(),
    "an event past a running transaction was returned: {:?}",
    page.events
  );
  // T1 writes its event and commits last.
  let scope_id = a.scope().id;
  t1.batch(&format!(
    "INSERT INTO events (id, scope_id, type, data, created_at) VALUES ({} + 1, {scope_id}, 'test.t1', '{{}}', 0)",
    xid * 65536
  ))
  .unwrap();
  t1.batch("COMMIT").unwrap();
  let page = a.list_events(Some(&json!({"after": last}))).wait().unwrap();
  let kinds: Vec<&str> = page.events.iter().map(|e| e.kind.as_str()).collect();
  assert_eq!(kinds, ["test.t1", "signing_key.added"]);
  assert!(page.events[0].id < page.events[1].id);
  a.close().wait().unwrap();
}

#[test]
fn a_serialization_failure_is_retried_inside() {
  let schema = unique_schema();
  let a = open(&schema, "org_1", [5; 32]).unwrap();
  let mut c = raw(&schema);
  // The first insert into signing_keys fails with 40001 (the sequence is not rolled back).
  c.batch(
    "CREATE SEQUENCE fail_once;
     CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF nextval('fail_once') = 1 THEN
         RAISE EXCEPTION 'forced conflict' USING ERRCODE = '40001';
       END IF;
       RETURN NEW;
     END $$;
     CREATE TRIGGER fail_once BEFORE INSERT ON signing_keys FOR EACH ROW EXECUTE FUNCTION fail_once();",
  )
  .unwrap();
  let kid = current_kid(&a);
  assert!(!kid.is_empty());
  assert_eq!(c.scalar_i64("SELECT last_value FROM fail_once").unwrap(), 2);
  let added = a
    .list_events(Some(&json!({"types": ["signing_key.added"]})))
    .wait()
    .unwrap()
    .events;
  assert_eq!(added.iter().filter(|e| e.data["kid"] == kid).count(), 1);
  a.close().wait().unwrap();
}

#[test]
fn pg_tx_pipelines_and_reports_conflicts() {
  let schema = unique_schema();
  open(&schema, "o", [6; 32]).unwrap().close().wait().unwrap();
  let mut c = raw(&schema);
  let mut tx = PgTx::new(&mut c, Mode::Write);
  tx.defer(
    "INSERT INTO meta (key, value) VALUES ('k', '\\x01')",
    vec![],
  );
  let n = tx
    .query("SELECT count(*) FROM meta WHERE key = 'k'", &[])
    .unwrap()[0]
    .get::<_, i64>(0);
  assert_eq!(n, 1);
  tx.rollback();
  let n = c
    .scalar_i64("SELECT count(*) FROM meta WHERE key = 'k'")
    .unwrap();
  assert_eq!(n, 0);
  let _ = Key::random();
}

/// A schema at version 1 (tokens keyed by jti with their account, refresh tokens indexed by jti
/// and expiry) migrates to 2 with its tokens as they were: live tokens verify, revoked ones stay
/// revoked, a refresh token used before is still detected as reused, tokens are found again
/// for reuse and for revokeSessionToken (with their refresh tokens).
#[test]
fn tokens_survive_migration_2() {
  let schema = unique_schema();
  let a = open(&schema, "org_1", [4; 32]).unwrap();
  for id in ["u1", "u2"] {
    a.upsert_linked_account(&json!({ "linked_account_id": id }), None)
      .wait()
      .unwrap();
  }
  let mint = |v: &Vault, id: &str, force: bool| {
    v.get_token_for_linked_account(&json!({ "linked_account_id": id, "force_refresh": force }))
      .wait()
      .unwrap()
  };
  let live = mint(&a, "u1", false);
  let rotated = mint(&a, "u1", true);
  let next = a
    .refresh_session_token(&json!(rotated.refresh_token))
    .wait()
    .unwrap();
  let revoked = mint(&a, "u2", false);
  assert_eq!(
    a.revoke_session_token(&json!(revoked.token))
      .wait()
      .unwrap(),
    1
  );
  let other = mint(&a, "u2", true);
  a.close().wait().unwrap();
  // The token tables as migration 1 made them, rows as they are.
  let mut c = raw(&schema);
  c.batch(&format!(
    "BEGIN;
     SET LOCAL search_path TO {};
     ALTER TABLE session_tokens DROP CONSTRAINT session_tokens_pkey;
     ALTER TABLE session_tokens ADD COLUMN account_pk BIGINT REFERENCES accounts(pk) ON DELETE CASCADE;
     UPDATE session_tokens t SET account_pk = f.account_pk FROM token_families f WHERE f.pk = t.family_pk;
     ALTER TABLE session_tokens ALTER COLUMN account_pk SET NOT NULL;
     ALTER TABLE session_tokens ADD PRIMARY KEY (jti);
     CREATE INDEX session_tokens_account ON session_tokens (account_pk, exp);
     CREATE INDEX session_tokens_family ON session_tokens (family_pk);
     CREATE INDEX session_tokens_expiry ON session_tokens (exp);
     CREATE INDEX refresh_tokens_jti ON refresh_tokens (jti);
     CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
     DELETE FROM migrations WHERE version > 1;
     COMMIT;",
    quote_ident(&schema)
  ))
  .unwrap();

  let b = open(&schema, "org_1", [4; 32]).unwrap();
  assert_eq!(
    c.scalar_i64(&format!(
      "SELECT max(version) FROM {}.migrations",
      quote_ident(&schema)
    ))
    .unwrap(),
    schema::latest_version()
  );
  let code = |t: &str| b.verify_session_token(t).unwrap_err().code();
  let refresh_code = |r: &str| {
    b.refresh_session_token(&json!(r))
      .wait()
      .unwrap_err()
      .code()
  };
  for t in [&live, &rotated, &next, &other] {
    assert!(b.verify_session_token(&t.token).is_ok());
  }
  assert_eq!(code(&revoked.token), "TOKEN_REVOKED");
  assert_eq!(refresh_code(&revoked.refresh_token), "TOKEN_REVOKED");
  assert!(mint(&b, "u1", false).reused);
  assert_eq!(
    b.revoke_session_token(&json!(other.token)).wait().unwrap(),
    1
  );
  assert_eq!(code(&other.token), "TOKEN_REVOKED");
  assert_eq!(refresh_code(&other.refresh_token), "TOKEN_REVOKED");
  assert_eq!(refresh_code(&rotated.refresh_token), "TOKEN_REVOKED");
  assert_eq!(code(&next.token), "TOKEN_REVOKED");
  let fresh = b
    .refresh_session_token(&json!(live.refresh_token))
    .wait()
    .unwrap();
  assert!(b.verify_session_token(&fresh.token).is_ok());
  b.close().wait().unwrap();
}

/// What the three-query default of `find_account_pieces` returns, on the same transaction.
fn pieces_by_three_queries(
  tx: &mut PgTx<'_>,
  scope_id: i64,
  id: &str,
) -> Option<crate::domain::accounts::AccountPieces> {
  use crate::domain::accounts::{AccountPieces, AccountRows};
  let row = tx.find_account(scope_id, id).unwrap()?;
  let udf = tx.load_udf(row.pk).unwrap();
  let identities = tx.identities_of(row.pk).unwrap();
  Some(AccountPieces {
    row,
    udf,
    identities,
  })
}

#[test]
fn the_one_statement_account_read_returns_what_the_three_queries_return() {
  use crate::domain::accounts::AccountRows;
  let schema = unique_schema();
  let v = open(&schema, "org_1", [7; 32]).unwrap();
  let up = |p: serde_json::Value| v.upsert_linked_account(&p, None).wait().unwrap();
  let link = |id: &str, i: serde_json::Value| v.link_identity(&json!(id), &i).wait().unwrap();
  // Nothing attached.
  up(json!({"linked_account_id": "bare"}));
  // UDF rows whose order is neither key order nor insertion order of the keys alone (c goes,
  // then comes back last), values of every JSON kind; identities with and without their
  // optional fields, one linked in the same millisecond as another (ordered by pk).
  up(json!({"linked_account_id": "full", "name": "Ann",
    "udf": {"z": 1, "c": "two", "a": {"n": [1, null]}, "m": true},
    "your_app": {"auth_credentials": {"k": "v"}}}));
  up(json!({"linked_account_id": "full", "udf": {"c": null, "b": 2.5}}));
  up(json!({"linked_account_id": "full", "udf": {"c": "back"}}));
  link("full", json!({"provider": "github", "user_id": "1"}));
  link(
    "full",
    json!({"provider": "google-oauth2", "user_id": "g-2", "connection": "google",
      "connection_id": "con_0123456789abcdef", "isSocial": true, "email": "Ann@Example.com",
      "email_verified": true, "profileData": {"nick": "ann", "tags": ["x"]}}),
  );
  link(
    "full",
    json!({"provider": "auth0", "user_id": 3, "email": "ann@example.com"}),
  );
  // Identities without UDF rows.
  up(json!({"linked_account_id": "ids-only"}));
  link("ids-only", json!({"provider": "github", "user_id": "9"}));
  let scope_id = v.scope().id;
  let mut c = raw(&schema);
  for mode in [Mode::Read, Mode::ReadOne] {
    for id in ["bare", "full", "ids-only", "missing"] {
      let mut tx = PgTx::new(&mut c, Mode::Read);
      let expected = pieces_by_three_queries(&mut tx, scope_id, id);
      tx.commit().unwrap();
      let mut tx = PgTx::new(&mut c, mode);
      let got = tx.find_account_pieces(scope_id, id).unwrap();
      tx.commit().unwrap();
      assert_eq!(got, expected, "{id} in {mode:?}");
      match id {
        "full" => {
          let p = got.unwrap();
          let keys: Vec<&str> = p.udf.iter().map(|u| u.key.as_str()).collect();
          assert_eq!(keys, ["z", "a", "m", "b", "c"]);
          let users: Vec<&str> = p.identities.iter().map(|i| i.user_id.as_str()).collect();
          assert_eq!(users, ["1", "g-2", "3"]);
        }
        "bare" => {
          let p = got.unwrap();
          assert!(p.udf.is_empty() && p.identities.is_empty());
        }
        "ids-only" => assert_eq!(got.unwrap().identities.len(), 1),
        _ => assert!(got.is_none()),
      }
    }
  }
  // Through the client: the same account as the upsert returned.
  let last = up(json!({"linked_account_id": "full", "name": "Ann B"}));
  assert_eq!(
    v.get_linked_account_by_id(&json!("full")).wait().unwrap(),
    last.account
  );
  v.close().wait().unwrap();
}

#[test]
fn a_read_without_transaction_that_needs_a_second_statement_runs_again_in_one() {
  let schema = unique_schema();
  let v = open(&schema, "org_1", [8; 32]).unwrap();
  v.upsert_linked_account(&json!({"linked_account_id": "a", "udf": {"k": 1}}), None)
    .wait()
    .unwrap();
  let mut c = raw(&schema);
  let mut tx = PgTx::new(&mut c, Mode::ReadOne);
  assert_eq!(tx.query("SELECT 1", &[]).unwrap().len(), 1);
  tx.query("SELECT 2", &[]).unwrap_err();
  assert_eq!(tx.failure(), Some(Failure::NeedsSnapshot));
  tx.commit().unwrap_err();
  // The engine runs such a job again in a read transaction, which succeeds.
  let (scope, runs) = (v.scope().clone(), Arc::new(Mutex::new(0)));
  let counted = runs.clone();
  let got = crate::store::read_point(&*v.store, move |tx| {
    *counted.lock().unwrap() += 1;
    let row = crate::domain::accounts::find(tx, &scope, "a")?;
    tx.load_udf(row.pk)
  })
  .wait()
  .unwrap();
  assert_eq!(got.len(), 1);
  assert_eq!(*runs.lock().unwrap(), 2);
  v.close().wait().unwrap();
}

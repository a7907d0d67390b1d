//! Identity linking, merges and unlinks through a client (SQLite), and the pure decisions.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::client::{OpenOptions, Vault};
use crate::crypto::Key;
use crate::error::ErrorKind;

fn open(path: &str) -> Vault {
  let mut o = OpenOptions::parse(Some(&json!({"path": path, "orgId": "org_1"}))).unwrap();
  o.encryption_key = Some(Key::from_bytes([5; 32]));
  Vault::open(o).wait().unwrap()
}

fn temp() -> (tempfile::TempDir, String) {
  let dir = tempfile::tempdir().unwrap();
  let path = dir.path().join("i.db").to_string_lossy().to_string();
  (dir, path)
}

fn upsert(v: &Vault, payload: serde_json::Value) {
  v.upsert_linked_account(&payload, None).wait().unwrap();
}

fn link(
  v: &Vault,
  id: &str,
  identity: serde_json::Value,
) -> crate::Result<Vec<crate::identities::Identity>> {
  v.link_identity(&json!(id), &identity).wait()
}

fn kind<T: std::fmt::Debug>(r: crate::Result<T>) -> ErrorKind {
  r.unwrap_err().kind
}

fn count(path: &str, sql: &str) -> i64 {
  let c = rusqlite::Connection::open(path).unwrap();
  c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn link_is_idempotent_and_unique_per_scope() {
  let (_d, path) = temp();
  let v = open(&path);
  upsert(&v, json!({"linked_account_id": "a"}));
  upsert(&v, json!({"linked_account_id": "b"}));
  let ids = link(
    &v,
    "a",
    json!({"provider": "github", "user_id": 9, "email": "Ann@X.com", "isSocial": true}),
  )
  .unwrap();
  assert_eq!(ids.len(), 1);
  assert_eq!(ids[0].user_id, "9");
  assert!(ids[0].is_social && !ids[0].email_verified);
  let v0 = v
    .get_linked_account_by_id(&json!("a"))
    .wait()
    .unwrap()
    .version;
  // Same identity, same account, string form: refreshes the profile, no duplicate.
  let ids = link(
    &v,
    "a",
    json!({"provider": "github", "user_id": "9", "email_verified": true, "profileData": {"login": "ann"}}),
  )
  .unwrap();
  assert_eq!(ids.len(), 1);
  assert!(ids[0].email_verified);
  assert_eq!(ids[0].email.as_deref(), Some("Ann@X.com"));
  assert_eq!(ids[0].profile_data.as_ref().unwrap()["login"], "ann");
  let a = v.get_linked_account_by_id(&json!("a")).wait().unwrap();
  assert_eq!(a.version, v0 + 1);
  // Nothing changed: no new version, no event.
  let events_before = count(
    &path,
    "SELECT count(*) FROM events WHERE type = 'identity.linked'",
  );
  link(&v, "a", json!({"provider": "github", "user_id": "9"})).unwrap();
  assert_eq!(
    v.get_linked_account_by_id(&json!("a"))
      .wait()
      .unwrap()
      .version,
    v0 + 1
  );
  assert_eq!(
    count(
      &path,
      "SELECT count(*) FROM events WHERE type = 'identity.linked'"
    ),
    events_before
  );
  // Held by another account.
  assert_eq!(
    kind(link(&v, "b", json!({"provider": "github", "user_id": 9}))),
    ErrorKind::IdentityAlreadyLinked
  );
  assert!(v
    .get_linked_account_by_id(&json!("b"))
    .wait()
    .unwrap()
    .identities
    .is_empty());
  assert_eq!(
    kind(link(
      &v,
      "nope",
      json!({"provider": "github", "user_id": 1})
    )),
    ErrorKind::NotFound
  );
  // Every read carries identities.
  let page = v.get_all_linked_accounts(None).wait().unwrap();
  assert_eq!(page.docs[0].identities.len(), 1);
  let list = v.list_linked_accounts(None).wait().unwrap();
  assert_eq!(list.docs[0].identities.len(), 1);
  let up = v
    .upsert_linked_account(&json!({"linked_account_id": "a", "name": "Ann"}), None)
    .wait()
    .unwrap();
  assert_eq!(up.account.identities.len(), 1);
  // Another environment of the same file is another scope.
  v.close().wait().unwrap();
  let mut o = OpenOptions::parse(Some(
    &json!({"path": path, "orgId": "org_1", "environment": "production"}),
  ))
  .unwrap();
  o.encryption_key = Some(Key::from_bytes([5; 32]));
  let prod = Vault::open(o).wait().unwrap();
  upsert(&prod, json!({"linked_account_id": "a"}));
  link(&prod, "a", json!({"provider": "github", "user_id": 9})).unwrap();
  prod.close().wait().unwrap();
}

#[test]
fn merge_then_unlink_restores_the_secondary() {
  let (_d, path) = temp();
  let v = open(&path);
  upsert(
    &v,
    json!({"linked_account_id": "A", "name": "Primary", "udf": {"plan": "pro", "a": 1}}),
  );
  upsert(
    &v,
    json!({"linked_account_id": "B", "name": "Second", "udf": {"plan": "free", "b": {"x": [1, 2]}},
           "your_app": {"app_id": "app1", "auth_credentials": {"Authorization": "Bearer s3cr3t-b"}}}),
  );
  link(&v, "A", json!({"provider": "auth0", "user_id": "a1"})).unwrap();
  link(
    &v,
    "B",
    json!({"provider": "github", "user_id": 9, "email": "b@x.io"}),
  )
  .unwrap();
  link(
    &v,
    "B",
    json!({"provider": "google-oauth2", "user_id": "g2"}),
  )
  .unwrap();
  assert_eq!(
    kind(v.link_accounts(&json!("A"), &json!("A"), None).wait()),
    ErrorKind::Validation
  );
  assert_eq!(
    kind(v.link_accounts(&json!("A"), &json!("nope"), None).wait()),
    ErrorKind::NotFound
  );
  assert_eq!(
    kind(v.link_accounts(&json!("nope"), &json!("B"), None).wait()),
    ErrorKind::NotFound
  );
  let merged = v
    .link_accounts(&json!("A"), &json!("B"), None)
    .wait()
    .unwrap();
  // B's two identities and B's own identity (unlinking it would undo the whole merge).
  assert_eq!(merged.identities.len(), 4);
  assert!(merged
    .identities
    .iter()
    .any(|i| (i.provider.as_str(), i.user_id.as_str()) == ("linkvault", "B")));
  let udf: BTreeMap<_, _> = merged
    .udf
    .iter()
    .map(|u| (u.key.clone(), u.value.clone()))
    .collect();
  assert_eq!(udf["plan"], json!("pro"));
  assert_eq!(udf["b"], json!({"x": [1, 2]}));
  assert_eq!(merged.name.as_deref(), Some("Primary"));
  assert_eq!(
    kind(v.get_linked_account_by_id(&json!("B")).wait()),
    ErrorKind::NotFound
  );
  assert_eq!(
    kind(v.link_accounts(&json!("A"), &json!("B"), None).wait()),
    ErrorKind::NotFound
  );
  assert_eq!(count(&path, "SELECT count(*) FROM account_merges"), 1);
  assert_eq!(
    count(
      &path,
      "SELECT count(*) FROM events WHERE type = 'linked_accounts.merged'"
    ),
    1
  );
  // Unlink one identity of B: B comes back, by value, with its credentials.
  let remaining = v
    .unlink_identity(&json!("A"), &json!("github"), &json!(9))
    .wait()
    .unwrap();
  assert_eq!(remaining.len(), 2);
  let b = v.get_linked_account_by_id(&json!("B")).wait().unwrap();
  assert_eq!(b.name.as_deref(), Some("Second"));
  let budf: BTreeMap<_, _> = b
    .udf
    .iter()
    .map(|u| (u.key.clone(), u.value.clone()))
    .collect();
  assert_eq!(budf["plan"], json!("free"));
  assert_eq!(budf["b"], json!({"x": [1, 2]}));
  assert_eq!(b.your_app, Some(Some("app1".to_string())));
  assert_eq!(b.identities.len(), 1);
  assert_eq!(b.identities[0].email.as_deref(), Some("b@x.io"));
  let creds = v
    .get_linked_account_credentials(&json!("B"))
    .wait()
    .unwrap()
    .unwrap();
  assert_eq!(creds.auth_credentials["Authorization"], "Bearer s3cr3t-b");
  // The record was used; the other identity of B leaves as a bare provider|user_id account.
  v.unlink_identity(&json!("A"), &json!("google-oauth2"), &json!("g2"))
    .wait()
    .unwrap();
  let g = v
    .get_linked_account_by_id(&json!("google-oauth2|g2"))
    .wait()
    .unwrap();
  assert!(g.udf.is_empty() && g.name.is_none() && g.your_app.is_none());
  assert_eq!(
    kind(
      v.unlink_identity(&json!("A"), &json!("github"), &json!("9"))
        .wait()
    ),
    ErrorKind::NotFound
  );
  // Every change has its event, in the same transaction; no email or profile in them.
  for (ty, n) in [
    ("identity.linked", 3),
    ("linked_accounts.merged", 1),
    ("identity.unlinked", 2),
    ("linked_account.created", 4),
  ] {
    assert_eq!(
      count(
        &path,
        &format!("SELECT count(*) FROM events WHERE type = '{ty}'")
      ),
      n,
      "{ty}"
    );
  }
  assert_eq!(
    count(&path, "SELECT count(*) FROM events WHERE data LIKE '%@%'"),
    0
  );
  // No credential in clear anywhere on disk.
  v.close().wait().unwrap();
  for entry in std::fs::read_dir(std::path::Path::new(&path).parent().unwrap()).unwrap() {
    let bytes = std::fs::read(entry.unwrap().path()).unwrap();
    assert!(!bytes.windows(8).any(|w| w == b"s3cr3t-b"));
  }
}

#[test]
fn unlink_falls_back_then_refuses() {
  let (_d, path) = temp();
  let v = open(&path);
  upsert(&v, json!({"linked_account_id": "A"}));
  upsert(
    &v,
    json!({"linked_account_id": "B", "name": "Bee", "your_app": {"auth_credentials": {"k": "v-secret"}}}),
  );
  link(&v, "B", json!({"provider": "github", "user_id": "1"})).unwrap();
  link(&v, "B", json!({"provider": "github", "user_id": "2"})).unwrap();
  v.link_accounts(
    &json!("A"),
    &json!("B"),
    Some(&json!({"udf": "secondary_wins"})),
  )
  .wait()
  .unwrap();
  // Someone takes B's id and the fallback id of github|2.
  upsert(&v, json!({"linked_account_id": "B"}));
  upsert(&v, json!({"linked_account_id": "github|2"}));
  let before = v.get_linked_account_by_id(&json!("A")).wait().unwrap();
  assert_eq!(
    kind(
      v.unlink_identity(&json!("A"), &json!("github"), &json!("2"))
        .wait()
    ),
    ErrorKind::AlreadyExists
  );
  assert_eq!(
    v.get_linked_account_by_id(&json!("A")).wait().unwrap(),
    before
  );
  // github|1 falls back to its own id, with B's metadata re-sealed under the new row.
  v.unlink_identity(&json!("A"), &json!("github"), &json!(1))
    .wait()
    .unwrap();
  let restored = v
    .get_linked_account_by_id(&json!("github|1"))
    .wait()
    .unwrap();
  assert_eq!(restored.name.as_deref(), Some("Bee"));
  let creds = v
    .get_linked_account_credentials(&json!("github|1"))
    .wait()
    .unwrap()
    .unwrap();
  assert_eq!(creds.auth_credentials["k"], "v-secret");
  assert!(v
    .get_linked_account_by_id(&json!("B"))
    .wait()
    .unwrap()
    .name
    .is_none());
  // An identity linked directly leaves as provider|user_id.
  link(&v, "A", json!({"provider": "samlp", "user_id": "x"})).unwrap();
  v.unlink_identity(&json!("A"), &json!("samlp"), &json!("x"))
    .wait()
    .unwrap();
  assert_eq!(
    v.get_linked_account_by_id(&json!("samlp|x"))
      .wait()
      .unwrap()
      .identities
      .len(),
    1
  );
}

#[test]
fn nested_merges_restore_the_right_account() {
  nested_merges_restore_the_right_account_on(&open(":memory:"));
}

fn nested_merges_restore_the_right_account_on(v: &Vault) {
  for (id, name) in [("A", "a"), ("B", "b"), ("C", "c")] {
    upsert(v, json!({"linked_account_id": id, "name": name}));
    link(v, id, json!({"provider": "p", "user_id": id})).unwrap();
  }
  v.link_accounts(&json!("B"), &json!("C"), None)
    .wait()
    .unwrap();
  v.link_accounts(&json!("A"), &json!("B"), None)
    .wait()
    .unwrap();
  // p|A, p|B, p|C and the own identities of B and C.
  assert_eq!(
    v.get_linked_account_by_id(&json!("A"))
      .wait()
      .unwrap()
      .identities
      .len(),
    5
  );
  v.unlink_identity(&json!("A"), &json!("p"), &json!("C"))
    .wait()
    .unwrap();
  assert_eq!(
    v.get_linked_account_by_id(&json!("C"))
      .wait()
      .unwrap()
      .name
      .as_deref(),
    Some("c")
  );
  v.unlink_identity(&json!("A"), &json!("p"), &json!("B"))
    .wait()
    .unwrap();
  assert_eq!(
    v.get_linked_account_by_id(&json!("B"))
      .wait()
      .unwrap()
      .name
      .as_deref(),
    Some("b")
  );
}

#[test]
fn merge_respects_the_udf_key_limit() {
  merge_respects_the_udf_key_limit_on(&open(":memory:"));
}

fn merge_respects_the_udf_key_limit_on(v: &Vault) {
  let many = |p: &str, n: usize| -> serde_json::Map<String, serde_json::Value> {
    (0..n).map(|i| (format!("{p}{i}"), json!(i))).collect()
  };
  upsert(v, json!({"linked_account_id": "A", "udf": many("a", 150)}));
  upsert(v, json!({"linked_account_id": "B", "udf": many("b", 60)}));
  link(v, "B", json!({"provider": "p", "user_id": "1"})).unwrap();
  let err = v
    .link_accounts(&json!("A"), &json!("B"), None)
    .wait()
    .unwrap_err();
  assert_eq!(err.field.as_deref(), Some("udf"));
  // Nothing changed.
  assert_eq!(
    v.get_linked_account_by_id(&json!("B"))
      .wait()
      .unwrap()
      .identities
      .len(),
    1
  );
  assert_eq!(
    v.get_linked_account_by_id(&json!("A"))
      .wait()
      .unwrap()
      .udf
      .len(),
    150
  );
}

#[test]
fn email_lookup_and_suggestions() {
  email_lookup_and_suggestions_on(&open(":memory:"));
}

fn email_lookup_and_suggestions_on(v: &Vault) {
  for id in ["A", "B", "C", "D"] {
    upsert(v, json!({"linked_account_id": id}));
  }
  link(
    v,
    "A",
    json!({"provider": "auth0", "user_id": "a", "email": " Ann@X.com ", "email_verified": true}),
  )
  .unwrap();
  link(v, "B", json!({"provider": "google-oauth2", "user_id": "b", "email": "ann@x.com", "email_verified": true})).unwrap();
  link(
    v,
    "C",
    json!({"provider": "github", "user_id": "c", "email": "ANN@x.COM"}),
  )
  .unwrap();
  link(
    v,
    "D",
    json!({"provider": "github", "user_id": "d", "email": "ÄNN@x.com", "email_verified": true}),
  )
  .unwrap();
  let found = v
    .get_linked_accounts_by_email(&json!("ann@X.com"))
    .wait()
    .unwrap();
  let ids: Vec<_> = found.iter().map(|a| a.account_id.as_str()).collect();
  assert_eq!(ids, ["A", "B", "C"]);
  let umlaut = v
    .get_linked_accounts_by_email(&json!("änn@X.COM"))
    .wait()
    .unwrap();
  assert_eq!(umlaut.len(), 1);
  assert_eq!(
    v.get_linked_accounts_by_email(&json!("zed@x.com"))
      .wait()
      .unwrap()
      .len(),
    0
  );
  assert_eq!(
    v.get_linked_accounts_by_email(&json!("nope"))
      .wait()
      .unwrap_err()
      .field
      .as_deref(),
    Some("email")
  );
  let s = v.get_link_suggestions(&json!("A")).wait().unwrap();
  assert_eq!(s.len(), 1);
  assert_eq!(
    (s[0].linked_account_id.as_str(), s[0].email.as_str()),
    ("B", "ann@x.com")
  );
  // C's email is unverified: C gets no suggestion and is suggested to nobody.
  assert!(v
    .get_link_suggestions(&json!("C"))
    .wait()
    .unwrap()
    .is_empty());
  assert_eq!(
    kind(v.get_link_suggestions(&json!("Z")).wait()),
    ErrorKind::NotFound
  );
}

fn ids_of(v: &Vault, id: &str) -> Vec<(String, String)> {
  v.get_linked_account_by_id(&json!(id))
    .wait()
    .unwrap()
    .identities
    .into_iter()
    .map(|i| (i.provider, i.user_id))
    .collect()
}

fn pair(p: &str, u: &str) -> (String, String) {
  (p.to_string(), u.to_string())
}

/// Auth0: linking `{ provider, user_id }` that is another existing account's own identity
/// merges that account; unlinking it brings the account back as it was.
#[test]
fn linking_an_own_identity_merges_and_unlinking_it_restores() {
  let (_d, path) = temp();
  let v = open(&path);
  upsert(
    &v,
    json!({"linked_account_id": "auth0|primary", "name": "P"}),
  );
  upsert(
    &v,
    json!({"linked_account_id": "google-oauth2|1034", "name": "G", "udf": {"plan": "free"},
           "your_app": {"auth_credentials": {"Authorization": "Bearer g-secret"}}}),
  );
  link(
    &v,
    "google-oauth2|1034",
    json!({"provider": "github", "user_id": 9}),
  )
  .unwrap();
  let before = v
    .get_linked_account_by_id(&json!("google-oauth2|1034"))
    .wait()
    .unwrap();
  // Linking its own identity (user_id as a number is the same identity) merges it.
  let ids = link(
    &v,
    "auth0|primary",
    json!({"provider": "google-oauth2", "user_id": 1034, "connection_id": "con_0123456789abcdef",
           "profileData": {"given_name": "Gee"}}),
  )
  .unwrap();
  let pairs: Vec<_> = ids
    .iter()
    .map(|i| (i.provider.clone(), i.user_id.clone()))
    .collect();
  assert_eq!(pairs.len(), 2);
  assert!(pairs.contains(&pair("google-oauth2", "1034")));
  assert!(pairs.contains(&pair("github", "9")));
  let own = ids.iter().find(|i| i.provider == "google-oauth2").unwrap();
  assert_eq!(own.connection_id.as_deref(), Some("con_0123456789abcdef"));
  assert_eq!(own.profile_data.as_ref().unwrap()["given_name"], "Gee");
  assert_eq!(
    kind(
      v.get_linked_account_by_id(&json!("google-oauth2|1034"))
        .wait()
    ),
    ErrorKind::NotFound
  );
  let primary = v
    .get_linked_account_by_id(&json!("auth0|primary"))
    .wait()
    .unwrap();
  assert_eq!(primary.udf[0].value, json!("free"));
  // Linking it again now refreshes it (it is on this account).
  link(
    &v,
    "auth0|primary",
    json!({"provider": "google-oauth2", "user_id": "1034"}),
  )
  .unwrap();
  // Its own identity cannot be linked to itself, nor unlinked from itself.
  assert_eq!(
    kind(link(
      &v,
      "auth0|primary",
      json!({"provider": "auth0", "user_id": "primary"})
    )),
    ErrorKind::Validation
  );
  assert_eq!(
    kind(
      v.unlink_identity(&json!("auth0|primary"), &json!("auth0"), &json!("primary"))
        .wait()
    ),
    ErrorKind::Validation
  );
  // Unlinking the merged account's own identity undoes the whole merge.
  let rest = v
    .unlink_identity(
      &json!("auth0|primary"),
      &json!("google-oauth2"),
      &json!("1034"),
    )
    .wait()
    .unwrap();
  assert!(rest.is_empty());
  let after = v
    .get_linked_account_by_id(&json!("google-oauth2|1034"))
    .wait()
    .unwrap();
  assert_eq!(after.oid, before.oid);
  assert_eq!(after.name, before.name);
  assert_eq!(after.udf, before.udf);
  assert_eq!(after.your_app, before.your_app);
  assert_eq!(after.created_at, before.created_at);
  assert_eq!(after.identities, before.identities);
  assert_eq!(after.version, before.version + 1);
  let creds = v
    .get_linked_account_credentials(&json!("google-oauth2|1034"))
    .wait()
    .unwrap()
    .unwrap();
  assert_eq!(creds.auth_credentials["Authorization"], "Bearer g-secret");
  // The primary has no identity left (its own is implied by its id).
  assert_eq!(ids_of(&v, "auth0|primary"), Vec::<(String, String)>::new());
  v.close().wait().unwrap();
}

/// No merge leaves data that unlink cannot bring back: a secondary without identities is
/// restored through its own identity, with its consents.
#[test]
fn a_merged_account_without_identities_is_restorable() {
  let v = open(":memory:");
  upsert(&v, json!({"linked_account_id": "A"}));
  upsert(
    &v,
    json!({"linked_account_id": "B", "name": "Bee", "udf": {"b": 1}}),
  );
  let s = v
    .create_auth_session(&json!({"end_user_id": "B"}))
    .wait()
    .unwrap();
  let consent = v
    .complete_auth_session(
      &json!(s.session_id),
      &json!({"institution_id": "bank", "account_ids": ["acc"], "permissions": ["accounts"],
              "duration_seconds": 3600}),
    )
    .wait()
    .unwrap();
  let merged = v
    .link_accounts(&json!("A"), &json!("B"), None)
    .wait()
    .unwrap();
  assert_eq!(
    merged
      .identities
      .iter()
      .map(|i| (i.provider.clone(), i.user_id.clone()))
      .collect::<Vec<_>>(),
    vec![pair("linkvault", "B")]
  );
  let moved = v
    .get_consent(&json!(consent.arrangement_id))
    .wait()
    .unwrap();
  assert_eq!(moved.end_user_id, "A");
  v.unlink_identity(&json!("A"), &json!("linkvault"), &json!("B"))
    .wait()
    .unwrap();
  let b = v.get_linked_account_by_id(&json!("B")).wait().unwrap();
  assert_eq!(b.name.as_deref(), Some("Bee"));
  assert!(b.identities.is_empty());
  assert!(ids_of(&v, "A").is_empty());
  let back = v
    .get_consent(&json!(consent.arrangement_id))
    .wait()
    .unwrap();
  assert_eq!(back.end_user_id, "B");
  assert!(back.active);
}

/// Unlinking a merged account's own identity takes back everything it brought, merges it had
/// absorbed included; unlinking another of its identities brings it back with that one only.
#[test]
fn whole_and_partial_restores() {
  whole_and_partial_restores_on(&open(":memory:"));
}

fn whole_and_partial_restores_on(v: &Vault) {
  for id in ["A", "B", "C"] {
    upsert(v, json!({"linked_account_id": id, "name": id}));
    link(v, id, json!({"provider": "p", "user_id": id})).unwrap();
  }
  v.link_accounts(&json!("B"), &json!("C"), None)
    .wait()
    .unwrap();
  let b_before = ids_of(v, "B");
  v.link_accounts(&json!("A"), &json!("B"), None)
    .wait()
    .unwrap();
  assert_eq!(ids_of(v, "A").len(), 5);
  v.unlink_identity(&json!("A"), &json!("linkvault"), &json!("B"))
    .wait()
    .unwrap();
  assert_eq!(ids_of(v, "A"), vec![pair("p", "A")]);
  assert_eq!(ids_of(v, "B"), b_before);
  // C's merge went back with B: unlinking C's own identity from B restores C.
  v.unlink_identity(&json!("B"), &json!("linkvault"), &json!("C"))
    .wait()
    .unwrap();
  assert_eq!(ids_of(v, "C"), vec![pair("p", "C")]);
  assert_eq!(ids_of(v, "B"), vec![pair("p", "B")]);
  // Partial: B's other identity brings B back with it alone; B's own identity row goes.
  link(v, "B", json!({"provider": "q", "user_id": "1"})).unwrap();
  v.link_accounts(&json!("A"), &json!("B"), None)
    .wait()
    .unwrap();
  v.unlink_identity(&json!("A"), &json!("q"), &json!("1"))
    .wait()
    .unwrap();
  assert_eq!(ids_of(v, "B"), vec![pair("q", "1")]);
  assert_eq!(ids_of(v, "A"), vec![pair("p", "A"), pair("p", "B")]);
  // The record is used: p|B now leaves as the account whose own identity it is.
  v.unlink_identity(&json!("A"), &json!("p"), &json!("B"))
    .wait()
    .unwrap();
  assert_eq!(ids_of(v, "p|B"), vec![pair("p", "B")]);
}

/// A merge whose secondary's own identity is held by a third account is refused: without it
/// the merge could not be undone.
#[test]
fn a_merge_that_could_not_be_undone_is_refused() {
  a_merge_that_could_not_be_undone_is_refused_on(&open(":memory:"));
}

fn a_merge_that_could_not_be_undone_is_refused_on(v: &Vault) {
  upsert(v, json!({"linked_account_id": "A"}));
  upsert(v, json!({"linked_account_id": "C"}));
  // C holds github/9 before any account github|9 exists; then one is created.
  link(v, "C", json!({"provider": "github", "user_id": "9"})).unwrap();
  upsert(v, json!({"linked_account_id": "github|9"}));
  let e = v
    .link_accounts(&json!("A"), &json!("github|9"), None)
    .wait()
    .unwrap_err();
  assert_eq!(e.kind, ErrorKind::IdentityAlreadyLinked);
  v.get_linked_account_by_id(&json!("github|9"))
    .wait()
    .unwrap();
  // And linking that identity to A names it as taken.
  assert_eq!(
    kind(link(v, "A", json!({"provider": "github", "user_id": 9}))),
    ErrorKind::IdentityAlreadyLinked
  );
}

#[test]
fn deleting_a_primary_deletes_its_identities_and_records() {
  let (_d, path) = temp();
  let v = open(&path);
  upsert(&v, json!({"linked_account_id": "A"}));
  upsert(&v, json!({"linked_account_id": "B"}));
  link(&v, "A", json!({"provider": "p", "user_id": "1"})).unwrap();
  link(&v, "B", json!({"provider": "p", "user_id": "2"})).unwrap();
  v.link_accounts(&json!("A"), &json!("B"), None)
    .wait()
    .unwrap();
  v.delete_linked_account(&json!("A")).wait().unwrap();
  assert_eq!(count(&path, "SELECT count(*) FROM identities"), 0);
  assert_eq!(count(&path, "SELECT count(*) FROM account_merges"), 0);
  upsert(&v, json!({"linked_account_id": "C"}));
  link(&v, "C", json!({"provider": "p", "user_id": "2"})).unwrap();
}

/// A tiny deterministic generator (xorshift64*), enough to drive random operation sequences.
struct Rng(u64);
impl Rng {
  fn next(&mut self) -> u64 {
    self.0 ^= self.0 >> 12;
    self.0 ^= self.0 << 25;
    self.0 ^= self.0 >> 27;
    self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
  }
  fn below(&mut self, n: usize) -> usize {
    (self.next() % n as u64) as usize
  }
}

/// One step of a random identity workload; indices are taken modulo the live sizes.
#[derive(Clone, Debug)]
enum IdOp {
  Link { ident: usize, acc: usize },
  Merge { i: usize, j: usize },
  Unlink { acc: usize },
}

/// Runs `ops` on 8 fresh accounts named `<prefix>acc<i>` and checks after every step: the set
/// of identities only grows by successful links, no operation loses or duplicates one, each
/// is on exactly one account, and every account the model knows still exists. Returns the
/// counts of [steps, links, merges, unlinks] that succeeded.
fn run_identity_ops(v: &Vault, prefix: &str, ops: &[IdOp], integrity: bool) -> [usize; 4] {
  let mut done = [0usize; 4];
  let mut accounts: Vec<String> = (0..8).map(|i| format!("{prefix}acc{i}")).collect();
  for id in &accounts {
    upsert(v, json!({"linked_account_id": id, "udf": {"k": id}}));
  }
  let provider = prefix.trim_end_matches('-').to_string();
  let mut linked: BTreeSet<String> = BTreeSet::new();
  for op in ops {
    done[0] += 1;
    match op {
      IdOp::Link { ident, acc } => {
        let ident = format!("{}", ident % 30);
        let acc = accounts[acc % accounts.len()].clone();
        match link(v, &acc, json!({"provider": provider, "user_id": ident})) {
          Ok(_) => {
            linked.insert(ident);
            done[1] += 1;
          }
          Err(e) => {
            assert_eq!(e.kind, ErrorKind::IdentityAlreadyLinked);
            assert!(linked.contains(&ident));
          }
        }
      }
      IdOp::Merge { i, j } => {
        let (i, j) = (i % accounts.len(), j % accounts.len());
        let k_of = |id: &str| {
          let a = v.get_linked_account_by_id(&json!(id)).wait().unwrap();
          a.udf.iter().find(|u| u.key == "k").map(|u| u.value.clone())
        };
        let (pk, sk) = (k_of(&accounts[i]), k_of(&accounts[j]));
        let r = v
          .link_accounts(&json!(accounts[i]), &json!(accounts[j]), None)
          .wait();
        match r {
          Ok(merged) => {
            // UDF: the primary keeps its own value (primary_wins); a key only the secondary
            // had comes along.
            let k = merged
              .udf
              .iter()
              .find(|u| u.key == "k")
              .map(|u| u.value.clone());
            assert_eq!(k, pk.or(sk), "udf k after merging");
            accounts.remove(j);
            done[2] += 1;
          }
          Err(e) => assert!(i == j && e.kind == ErrorKind::Validation, "{e:?}"),
        }
      }
      IdOp::Unlink { acc: pick } => {
        let acc = accounts[pick % accounts.len()].clone();
        let a = v.get_linked_account_by_id(&json!(acc)).wait().unwrap();
        if !a.identities.is_empty() {
          let ident = a.identities[(pick / 8) % a.identities.len()].clone();
          let r = v
            .unlink_identity(&json!(acc), &json!(ident.provider), &json!(ident.user_id))
            .wait();
          match r {
            Ok(rest) => {
              assert!(rest.len() < a.identities.len());
              assert!(!rest
                .iter()
                .any(|x| x.user_id == ident.user_id && x.provider == ident.provider));
              let restored = if ident.provider == crate::users::OWN_PROVIDER {
                // A merged account's own identity: the whole merge is undone.
                ident.user_id.clone()
              } else {
                // The new standalone account is whichever account now holds it.
                let page = v
                  .get_all_linked_accounts(Some(&json!({"limit": 1000})))
                  .wait()
                  .unwrap();
                page
                  .docs
                  .iter()
                  .find(|d| {
                    d.identities
                      .iter()
                      .any(|x| x.user_id == ident.user_id && x.provider == ident.provider)
                  })
                  .unwrap()
                  .account_id
                  .clone()
              };
              assert_ne!(restored, acc);
              v.get_linked_account_by_id(&json!(restored)).wait().unwrap();
              accounts.push(restored);
              done[3] += 1;
            }
            // An account's own identity (`s1|5` holds `s1/5`) cannot be unlinked.
            Err(e) if crate::users::is_own(&acc, &ident.provider, &ident.user_id) => {
              assert_eq!(e.kind, ErrorKind::Validation)
            }
            Err(e) => assert_eq!(e.kind, ErrorKind::AlreadyExists),
          }
        }
      }
    }
    // Invariants, through the API: every identity of the workload's provider is on exactly
    // one account, none lost or invented; every account of the workload either exists or is
    // restorable, its own identity held by exactly one account.
    let mut seen: Vec<String> = Vec::new();
    let mut own_held: Vec<String> = Vec::new();
    for id in &accounts {
      let a = v.get_linked_account_by_id(&json!(id)).wait().unwrap();
      for x in &a.identities {
        if x.provider == provider {
          seen.push(x.user_id.clone());
        } else if x.provider == crate::users::OWN_PROVIDER {
          own_held.push(x.user_id.clone());
        }
      }
    }
    seen.sort();
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "an identity is on two accounts");
    assert_eq!(unique, linked, "identities lost or invented ({prefix})");
    own_held.sort();
    let mut gone: Vec<String> = (0..8)
      .map(|i| format!("{prefix}acc{i}"))
      .filter(|id| !accounts.contains(id))
      .collect();
    gone.sort();
    assert_eq!(
      own_held, gone,
      "a merged account is not restorable ({prefix})"
    );
  }
  // No orphan row, every index consistent, every sealed value opens. (Not on PostgreSQL yet:
  // its schema has no webhooks table, which the check reads.)
  if integrity {
    let integrity = v.check_integrity().wait().unwrap();
    assert!(integrity.ok, "{integrity:?}");
  }
  done
}

/// Random sequences of link / merge / unlink from a fixed set of seeds (see
/// `run_identity_ops` for the invariants).
#[test]
fn random_operations_conserve_identities() {
  let (_d, path) = temp();
  let v = open(&path);
  let ops = random_operations_on(&v, 1..=12, true);
  assert!(ops[1] > 100 && ops[2] > 20 && ops[3] > 20, "{ops:?}");
  let total = count(&path, "SELECT count(*) FROM identities");
  let distinct = count(
    &path,
    "SELECT count(DISTINCT scope_id || '/' || provider || '/' || user_id) FROM identities",
  );
  assert_eq!(total, distinct);
}

/// Runs 120 random link / merge / unlink steps per seed on `v`; the counts of what succeeded.
fn random_operations_on(
  v: &Vault,
  seeds: std::ops::RangeInclusive<u64>,
  integrity: bool,
) -> [usize; 4] {
  let mut ops = [0usize; 4];
  for seed in seeds {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let steps: Vec<IdOp> = (0..120)
      .map(|_| match rng.below(10) {
        0..=4 => IdOp::Link {
          ident: rng.below(30),
          acc: rng.below(64),
        },
        5..=6 => IdOp::Merge {
          i: rng.below(64),
          j: rng.below(64),
        },
        _ => IdOp::Unlink { acc: rng.below(64) },
      })
      .collect();
    let done = run_identity_ops(v, &format!("s{seed}-"), &steps, integrity);
    for (t, d) in ops.iter_mut().zip(done) {
      *t += d;
    }
  }
  eprintln!("steps, links, merges, unlinks: {ops:?}");
  ops
}

/// The same invariants on sequences proptest generates (and shrinks on failure), each on a
/// fresh in-memory database. Budget: `LINKVAULT_FUZZ_CASES` (see `crate::fuzz`).
#[test]
fn fuzz_identity_merge_unlink_invariants() {
  use proptest::prelude::*;
  let op = prop_oneof![
    5 => (0usize..30, 0usize..64).prop_map(|(ident, acc)| IdOp::Link { ident, acc }),
    2 => (0usize..64, 0usize..64).prop_map(|(i, j)| IdOp::Merge { i, j }),
    3 => (0usize..64).prop_map(|acc| IdOp::Unlink { acc }),
  ];
  crate::fuzz::check(
    "identity merge/unlink vs model",
    16,
    proptest::collection::vec(op, 1..80),
    |ops| {
      let v = open(":memory:");
      run_identity_ops(&v, "f-", &ops, true);
      v.close().wait().unwrap();
      Ok(())
    },
  );
}

/// Compares loading a list page's identities in one query (what the list methods do) with one
/// cached statement per account. Run with
/// `cargo test --release -- --ignored --nocapture identity_loading_strategies`.
#[test]
#[ignore]
fn identity_loading_strategies() {
  use std::time::Instant;
  let (_d, path) = temp();
  let v = open(&path);
  let accounts = 5000;
  for chunk in 0..(accounts / 500) {
    let pending: Vec<_> = (0..500)
      .map(|i| {
        let id = format!("acc{}", chunk * 500 + i);
        v.upsert_linked_account(
          &json!({"linked_account_id": id, "udf": {"plan": "pro"}}),
          None,
        )
      })
      .collect();
    for p in pending {
      p.wait().unwrap();
    }
    let pending: Vec<_> = (0..500)
      .flat_map(|i| {
        let id = format!("acc{}", chunk * 500 + i);
        [
          v.link_identity(
            &json!(id),
            &json!({"provider": "github", "user_id": id, "email": format!("{id}@x.io")}),
          ),
          v.link_identity(
            &json!(id),
            &json!({"provider": "google-oauth2", "user_id": id, "profileData": {"n": 1}}),
          ),
        ]
      })
      .collect();
    for p in pending {
      p.wait().unwrap();
    }
  }
  v.close().wait().unwrap();
  let conn = rusqlite::Connection::open(&path).unwrap();
  conn.set_prepared_statement_cache_capacity(128);
  let pks: Vec<i64> = conn
    .prepare("SELECT pk FROM accounts ORDER BY pk")
    .unwrap()
    .query_map([], |r| r.get(0))
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap();
  // Readers run each read inside one read transaction; measure the same way.
  conn.execute_batch("BEGIN").unwrap();
  for limit in [10usize, 100, 1000] {
    let rounds = 20;
    let t = Instant::now();
    let mut n = 0;
    for _ in 0..rounds {
      for page in pks.chunks(limit) {
        n += crate::store::sqlite::identities::load_many(&conn, page)
          .unwrap()
          .values()
          .map(Vec::len)
          .sum::<usize>();
      }
    }
    let batched = t.elapsed();
    let t = Instant::now();
    let mut m = 0;
    for _ in 0..rounds {
      for page in pks.chunks(limit) {
        for pk in page {
          m += crate::store::sqlite::identities::load(&conn, *pk)
            .unwrap()
            .len();
        }
      }
    }
    let per_account = t.elapsed();
    assert_eq!(n, m);
    let pages = rounds * pks.len().div_ceil(limit);
    eprintln!(
      "limit {limit:>4}: one query per page {:>8.1} us/page, one cached query per account {:>8.1} us/page",
      batched.as_secs_f64() * 1e6 / pages as f64,
      per_account.as_secs_f64() * 1e6 / pages as f64
    );
  }
}

/// The same rules on PostgreSQL (a schema of their own on the test server).
mod pg {
  use super::*;
  use crate::store::postgres::tests::{server_url, unique_schema};

  fn open_pg() -> Vault {
    let o = OpenOptions::parse(Some(&json!({
      "url": server_url(), "schema": unique_schema(), "orgId": "org_1", "poolSize": 2,
      "encryptionKey": "05".repeat(32),
    })))
    .unwrap();
    Vault::open(o).wait().unwrap()
  }

  #[test]
  fn pg_nested_merges_restore_the_right_account() {
    nested_merges_restore_the_right_account_on(&open_pg());
  }

  #[test]
  fn pg_merge_respects_the_udf_key_limit() {
    merge_respects_the_udf_key_limit_on(&open_pg());
  }

  #[test]
  fn pg_email_lookup_and_suggestions() {
    email_lookup_and_suggestions_on(&open_pg());
  }

  #[test]
  fn pg_whole_and_partial_restores() {
    whole_and_partial_restores_on(&open_pg());
  }

  #[test]
  fn pg_a_merge_that_could_not_be_undone_is_refused() {
    a_merge_that_could_not_be_undone_is_refused_on(&open_pg());
  }

  /// Fewer seeds than on SQLite: every step is a few round trips to the server.
  #[test]
  fn pg_random_operations_conserve_identities() {
    let v = open_pg();
    let ops = random_operations_on(&v, 1..=3, false);
    assert!(ops[1] > 20 && ops[2] > 5 && ops[3] > 5, "{ops:?}");
  }
}

// The decisions alone.
mod rules {
  use serde_json::{json, Value};

  use super::super::*;
  use crate::accounts::{self, UdfRow};
  use crate::identities::UdfPolicy;

  #[test]
  fn link_actions_follow_auth0() {
    use Holder::*;
    let act =
      |acc: &str, p: &str, u: &str, h: Holder, owner: bool| link_action(acc, p, u, h, owner);
    assert_eq!(
      act("a", "github", "9", Nobody, false).unwrap(),
      LinkAction::Insert
    );
    assert_eq!(
      act("a", "github", "9", ThisAccount, true).unwrap(),
      LinkAction::Refresh
    );
    assert_eq!(
      act("a", "github", "9", Another, true).unwrap_err().code(),
      "IDENTITY_ALREADY_LINKED"
    );
    assert_eq!(
      act("a", "github", "9", Nobody, true).unwrap(),
      LinkAction::Merge("github|9".into())
    );
    assert_eq!(
      act("a", "linkvault", "b", Nobody, true).unwrap(),
      LinkAction::Merge("b".into())
    );
    // ('linkvault', 'github|9') is nobody's own identity: a plain link.
    assert_eq!(
      act("a", "linkvault", "github|9", Nobody, true).unwrap(),
      LinkAction::Insert
    );
    assert_eq!(
      act("github|9", "github", "9", Nobody, false)
        .unwrap_err()
        .field
        .as_deref(),
      Some("user_id")
    );
    assert_eq!(
      own_identity_plan("b", Nobody).unwrap(),
      OwnIdentityPlan::AddToPrimary
    );
    assert_eq!(
      own_identity_plan("github|9", ThisAccount).unwrap(),
      OwnIdentityPlan::MovesWithSecondary
    );
    assert_eq!(
      own_identity_plan("b", Another).unwrap_err().code(),
      "IDENTITY_ALREADY_LINKED"
    );
  }

  #[test]
  fn restore_plans() {
    let held = vec![("github".to_string(), "9".to_string())];
    let free = |taken: &'static [&'static str]| move |id: &str| Ok(!taken.contains(&id));
    // The own identity: the whole merge, its synthetic own row dropped.
    let p = restore_plan("B", &held, "linkvault", "B", free(&[])).unwrap();
    assert_eq!(
      (p.id.as_str(), p.original, p.whole, p.own_row),
      ("B", true, true, OwnRow::Drop)
    );
    assert_eq!(
      restore_plan("B", &held, "linkvault", "B", free(&["B"]))
        .unwrap_err()
        .code(),
      "ALREADY_EXISTS"
    );
    // Another identity: back with it alone; under a fallback id the own row stays.
    let p = restore_plan("B", &held, "github", "9", free(&[])).unwrap();
    assert_eq!((p.whole, p.own_row), (false, OwnRow::Drop));
    let p = restore_plan("B", &held, "github", "9", free(&["B"])).unwrap();
    assert_eq!(
      (p.id.as_str(), p.original, p.own_row),
      ("github|9", false, OwnRow::Keep)
    );
    assert!(restore_plan("B", &held, "github", "9", free(&["B", "github|9"])).is_err());
    // A secondary that held its own identity gets it back.
    let p = restore_plan("github|9", &held, "github", "9", free(&[])).unwrap();
    assert_eq!((p.whole, p.own_row), (true, OwnRow::MoveBack));
    assert_eq!(standalone_id("a", "github", "9").unwrap(), "github|9");
    assert_eq!(standalone_id("a", "linkvault", "x").unwrap(), "x");
    assert_eq!(
      standalone_id("github|9", "github", "9")
        .unwrap_err()
        .field
        .as_deref(),
      Some("user_id")
    );
  }

  fn rows(pairs: &[(&str, Value)]) -> Vec<UdfRow> {
    pairs
      .iter()
      .enumerate()
      .map(|(i, (k, v))| UdfRow {
        key: k.to_string(),
        value: v.clone(),
        json: accounts::canonical_json(v),
        oid: format!("oid{k}"),
        created_at: i as i64,
        updated_at: i as i64,
      })
      .collect()
  }

  #[test]
  fn udf_policies_keep_one_sided_keys() {
    let p = rows(&[("plan", json!("pro")), ("a", json!(1))]);
    let s = rows(&[("plan", json!("free")), ("b", json!(2))]);
    let mut m = p.clone();
    let changed = merge_udf_by_policy(&mut m, &s, UdfPolicy::PrimaryWins, 100).unwrap();
    assert_eq!(changed, vec!["b"]);
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].value, json!("pro"));
    assert_eq!(m[2].oid, "oidb");
    let mut m = p.clone();
    let changed = merge_udf_by_policy(&mut m, &s, UdfPolicy::SecondaryWins, 100).unwrap();
    assert_eq!(changed, vec!["plan", "b"]);
    assert_eq!(m[0].value, json!("free"));
    assert_eq!(m[0].oid, "oidplan");
    // The key limit applies to the union.
    let many: Vec<(String, Value)> = (0..150).map(|i| (format!("p{i}"), json!(i))).collect();
    let more: Vec<(String, Value)> = (0..60).map(|i| (format!("s{i}"), json!(i))).collect();
    let as_ref = |v: &Vec<(String, Value)>| -> Vec<UdfRow> {
      rows(
        &v.iter()
          .map(|(k, v)| (k.as_str(), v.clone()))
          .collect::<Vec<_>>(),
      )
    };
    let mut m = as_ref(&many);
    let err = merge_udf_by_policy(&mut m, &as_ref(&more), UdfPolicy::PrimaryWins, 1).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("udf"));
    assert_eq!(m.len(), 150);
  }
}

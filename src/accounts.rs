//! Linked accounts: the payload rules of Cobalt's Node SDK (`createLinkedAccount`,
//! `upsertLinkedAccount`, `getAllLinkedAccounts`, ...), user-defined fields and their merge,
//! list queries. Pure logic; storage lives in `store`.

use std::fmt;

use serde_json::{Map, Value};

use crate::crypto;
use crate::error::{Error, Result};
use crate::identities::Identity;
use crate::input::{self, Fields};

pub const MAX_ID_CHARS: usize = 256;
pub const MAX_NAME_CHARS: usize = 1024;
pub const MAX_UDF_KEY_CHARS: usize = 128;
pub const MAX_UDF_KEYS: usize = 200;
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
pub const MAX_PAGE_LIMIT: i64 = 1000;

/// A field that an update may keep, clear (`null`) or set.
#[derive(Clone, Debug, PartialEq)]
pub enum Patch<T> {
  Keep,
  Clear,
  Set(T),
}

/// The customer's app entry of an account. Credentials are secret: `Debug` hides them.
#[derive(Clone, PartialEq)]
pub struct YourApp {
  pub app_id: Option<String>,
  pub auth_credentials: Option<Map<String, Value>>,
}

impl fmt::Debug for YourApp {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct("YourApp")
      .field("app_id", &self.app_id)
      .field(
        "auth_credentials",
        &self.auth_credentials.as_ref().map(|_| "<hidden>"),
      )
      .finish()
  }
}

/// What `getLinkedAccountCredentials` returns.
#[derive(Clone, PartialEq)]
pub struct Credentials {
  pub app_id: Option<String>,
  pub auth_credentials: Map<String, Value>,
}

impl fmt::Debug for Credentials {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct("Credentials")
      .field("app_id", &self.app_id)
      .field("auth_credentials", &"<hidden>")
      .finish()
  }
}

/// A validated create/upsert payload.
#[derive(Clone, Debug)]
pub struct AccountInput {
  pub id: String,
  pub name: Patch<String>,
  /// Keys in the order sent; `None` removes the key.
  pub udf: Vec<(String, Option<Value>)>,
  pub your_app: Patch<YourApp>,
}

/// Create only, or create-or-update with an optional compare-and-set on `__v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
  Create,
  Upsert { if_version: Option<i64> },
}

/// One user-defined field as stored and returned.
#[derive(Clone, Debug, PartialEq)]
pub struct UdfRow {
  pub key: String,
  pub value: Value,
  /// Canonical JSON of `value` (object keys sorted), used for change detection and filters.
  pub json: String,
  pub oid: String,
  pub created_at: i64,
  pub updated_at: i64,
}

/// Fiskil's end-user fields of an account (`crate::end_users`), each set or not. Validated on
/// the way in: `email` with one `@`, `phone` in E.164, `abn` 11 digits with a valid checksum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndUserFields {
  pub email: Option<String>,
  pub phone: Option<String>,
  pub abn: Option<String>,
}

/// A linked account as returned to users (never with credentials).
#[derive(Clone, Debug, PartialEq)]
pub struct Account {
  pub oid: String,
  pub org_id: String,
  pub account_id: String,
  pub environment: String,
  pub name: Option<String>,
  pub udf: Vec<UdfRow>,
  /// `Some` when the account has a `your_app`; holds its `app_id`, if any.
  pub your_app: Option<Option<String>>,
  pub created_at: i64,
  pub updated_at: i64,
  pub version: i64,
  /// Identities linked to the account (`crate::identities`), in the order they joined it.
  pub identities: Vec<Identity>,
  /// Fiskil's end-user fields (`name` is the account's own `name`).
  pub end_user: EndUserFields,
}

#[derive(Clone, Debug)]
pub struct UpsertOutcome {
  pub account: Account,
  pub new_account: bool,
  pub changed: bool,
}

/// Filters shared by both list methods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListFilter {
  /// (key, canonical JSON value): all must match.
  pub udf: Vec<(String, String)>,
  /// Lowercased needle for a substring match on id or name.
  pub search: Option<String>,
}

#[derive(Clone, Debug)]
pub struct OffsetPage {
  pub docs: Vec<Account>,
  pub total: i64,
  pub page: i64,
  pub limit: i64,
}

#[derive(Clone, Debug)]
pub struct KeysetPage {
  pub docs: Vec<Account>,
  /// Position of the last row returned when more may follow.
  pub next: Option<i64>,
}

/// Canonical JSON text of a value: object keys sorted at every level, so equal values have
/// equal text whatever order their keys were sent in.
pub fn canonical_json(v: &Value) -> String {
  fn sorted(v: &Value) -> Value {
    match v {
      Value::Object(m) => {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        Value::Object(
          keys
            .into_iter()
            .map(|k| (k.clone(), sorted(&m[k.as_str()])))
            .collect(),
        )
      }
      Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
      other => other.clone(),
    }
  }
  match v {
    Value::Object(_) | Value::Array(_) => sorted(v).to_string(),
    other => other.to_string(),
  }
}

/// Parses a create/upsert payload, as the Cobalt SDK documents it. Accepts `account_id` as an
/// alias of `linked_account_id`, and the v3 form that nests `name`, `udf`, `your_app` under
/// `payload` (nested fields win over flat ones).
pub fn parse_payload(payload: &Value) -> Result<AccountInput> {
  let top = Fields::new(Some(payload), "payload")?;
  if matches!(payload, Value::Null) {
    return Err(Error::validation("payload", "payload must be an object"));
  }
  let size = payload.to_string().len();
  if size > MAX_PAYLOAD_BYTES {
    return Err(Error::validation(
      "payload",
      format!("payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}"),
    ));
  }
  let id = match (top.get("linked_account_id"), top.get("account_id")) {
    (Some(a), Some(b)) if a != b => {
      return Err(Error::validation(
        "linked_account_id",
        "linked_account_id and account_id differ",
      ))
    }
    (Some(a), _) => input::id(Some(a), "linked_account_id", MAX_ID_CHARS)?,
    (None, b) => input::id(b, "linked_account_id", MAX_ID_CHARS)?,
  };
  let nested = Fields::new(top.get("payload"), "payload")?;
  let pick = |key: &str| nested.raw(key).or_else(|| top.raw(key));

  let name = match pick("name") {
    None => Patch::Keep,
    Some(Value::Null) => Patch::Clear,
    Some(Value::String(s)) if s.chars().count() <= MAX_NAME_CHARS => Patch::Set(s.clone()),
    Some(Value::String(_)) => {
      return Err(Error::validation(
        "name",
        format!("name must be at most {MAX_NAME_CHARS} characters"),
      ))
    }
    Some(_) => return Err(Error::validation("name", "name must be a string")),
  };

  let udf = match pick("udf") {
    None | Some(Value::Null) => Vec::new(),
    Some(Value::Object(m)) => parse_udf(m)?,
    Some(_) => {
      return Err(Error::validation(
        "udf",
        "udf must be an object of key/value pairs",
      ))
    }
  };

  let your_app = match pick("your_app") {
    None => Patch::Keep,
    Some(Value::Null) => Patch::Clear,
    Some(Value::Object(m)) => Patch::Set(parse_your_app(m)?),
    Some(_) => return Err(Error::validation("your_app", "your_app must be an object")),
  };
  Ok(AccountInput {
    id,
    name,
    udf,
    your_app,
  })
}

fn parse_udf(m: &Map<String, Value>) -> Result<Vec<(String, Option<Value>)>> {
  if m.len() > MAX_UDF_KEYS {
    return Err(Error::validation(
      "udf",
      format!("udf has {} keys; the limit is {MAX_UDF_KEYS}", m.len()),
    ));
  }
  m.iter()
    .map(|(k, v)| {
      if k.is_empty() || k.chars().count() > MAX_UDF_KEY_CHARS {
        return Err(Error::validation(
          "udf",
          format!("udf keys must be 1 to {MAX_UDF_KEY_CHARS} characters"),
        ));
      }
      Ok((k.clone(), if v.is_null() { None } else { Some(v.clone()) }))
    })
    .collect()
}

/// The keys `your_app` may have.
pub const YOUR_APP_FIELDS: &[&str] = &["app_id", "auth_credentials"];

/// `your_app`: `auth_credentials` is required, as Cobalt requires it; any other key than
/// `app_id` is refused, naming it, because it is usually a header meant for `auth_credentials`
/// (one of Cobalt's own examples puts `Authorization` directly in `your_app`) that dropping
/// would silently lose.
fn parse_your_app(m: &Map<String, Value>) -> Result<YourApp> {
  if let Some(k) = m.keys().find(|k| !YOUR_APP_FIELDS.contains(&k.as_str())) {
    return Err(Error::validation(
      format!("your_app.{k}"),
      format!(
        "your_app.{k} is not a your_app field (allowed: app_id, auth_credentials); headers such as \
         Authorization belong in your_app.auth_credentials"
      ),
    ));
  }
  let app_id = match m.get("app_id") {
    None | Some(Value::Null) => None,
    Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_ID_CHARS => Some(s.clone()),
    Some(_) => {
      return Err(Error::validation(
        "your_app.app_id",
        "your_app.app_id must be a non-empty string",
      ))
    }
  };
  let auth_credentials = match m.get("auth_credentials") {
    None | Some(Value::Null) => {
      return Err(Error::validation(
        "your_app.auth_credentials",
        "your_app.auth_credentials is required (send your_app complete, or omit it)",
      ))
    }
    Some(Value::Object(c)) => Some(c.clone()),
    Some(_) => {
      return Err(Error::validation(
        "your_app.auth_credentials",
        "your_app.auth_credentials must be an object",
      ))
    }
  };
  Ok(YourApp {
    app_id,
    auth_credentials,
  })
}

/// The result of merging sent UDF values into the stored rows.
#[derive(Debug, Default, PartialEq)]
pub struct UdfChanges {
  pub inserted: Vec<String>,
  pub updated: Vec<String>,
  pub removed: Vec<String>,
}

impl UdfChanges {
  pub fn any(&self) -> bool {
    !(self.inserted.is_empty() && self.updated.is_empty() && self.removed.is_empty())
  }
}

/// Applies sent UDF values to `rows`: a new key is appended, a changed value updates the row
/// (keeping its `_id` and `createdAt`), an equal value changes nothing, `None` removes the key.
pub fn merge_udf(
  rows: &mut Vec<UdfRow>,
  sent: Vec<(String, Option<Value>)>,
  now: i64,
) -> Result<UdfChanges> {
  let mut changes = UdfChanges::default();
  for (key, value) in sent {
    let at = rows.iter().position(|r| r.key == key);
    match (at, value) {
      (Some(i), None) => {
        rows.remove(i);
        changes.removed.push(key);
      }
      (None, None) => {}
      (Some(i), Some(v)) => {
        let json = canonical_json(&v);
        if let Some(row) = rows.get_mut(i) {
          if row.json != json {
            row.value = v;
            row.json = json;
            row.updated_at = now;
            changes.updated.push(key);
          }
        }
      }
      (None, Some(v)) => {
        let json = canonical_json(&v);
        rows.push(UdfRow {
          key: key.clone(),
          value: v,
          json,
          oid: crypto::object_id(now)?,
          created_at: now,
          updated_at: now,
        });
        changes.inserted.push(key);
      }
    }
  }
  if rows.len() > MAX_UDF_KEYS {
    return Err(Error::validation(
      "udf",
      format!("an account may have at most {MAX_UDF_KEYS} udf keys"),
    ));
  }
  Ok(changes)
}

/// Parses `{ page, limit, udf, search }` for `getAllLinkedAccounts`.
pub fn parse_page_query(q: Option<&Value>) -> Result<(ListFilter, i64, i64)> {
  let f = Fields::new(q, "options")?;
  let page = f.int("page", 1, i64::from(i32::MAX))?.unwrap_or(1);
  let limit = f.int("limit", 1, MAX_PAGE_LIMIT)?.unwrap_or(10);
  Ok((parse_filter(&f)?, page, limit))
}

/// Parses `{ after, limit, udf, search }` for `listLinkedAccounts`.
pub fn parse_keyset_query(q: Option<&Value>) -> Result<(ListFilter, Option<i64>, i64)> {
  let f = Fields::new(q, "options")?;
  let limit = f.int("limit", 1, MAX_PAGE_LIMIT)?.unwrap_or(50);
  let after = match f.str("after")? {
    None => None,
    Some(c) => Some(decode_cursor(c).ok_or_else(|| {
      Error::validation(
        "after",
        "after is not a cursor returned by listLinkedAccounts",
      )
    })?),
  };
  Ok((parse_filter(&f)?, after, limit))
}

fn parse_filter(f: &Fields<'_>) -> Result<ListFilter> {
  let udf = match f.object("udf")? {
    None => Vec::new(),
    Some(m) => {
      if m.len() > MAX_UDF_KEYS {
        return Err(Error::validation("udf", "too many udf filters"));
      }
      m.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), canonical_json(v)))
        .collect()
    }
  };
  let search = match f.str("search")? {
    Some(s) if s.chars().count() > MAX_NAME_CHARS => {
      return Err(Error::validation(
        "search",
        format!("search must be at most {MAX_NAME_CHARS} characters"),
      ))
    }
    Some(s) if !s.is_empty() => Some(s.to_lowercase()),
    _ => None,
  };
  Ok(ListFilter { udf, search })
}

/// Keyset cursors are opaque to users: `base64url("a1:<position>")`.
pub fn encode_cursor(pos: i64) -> String {
  crypto::b64url(format!("a1:{pos}").as_bytes())
}

pub fn decode_cursor(c: &str) -> Option<i64> {
  let raw = crypto::b64url_decode(c)?;
  let text = std::str::from_utf8(&raw).ok()?;
  text
    .strip_prefix("a1:")?
    .parse::<i64>()
    .ok()
    .filter(|p| *p >= 0)
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  #[test]
  fn payload_aliases_and_nesting() {
    let p =
      parse_payload(&json!({"account_id": "a", "name": "x", "payload": {"name": "y"}})).unwrap();
    assert_eq!(p.id, "a");
    assert_eq!(p.name, Patch::Set("y".into()));
    let err = parse_payload(&json!({"linked_account_id": "a", "account_id": "b"})).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("linked_account_id"));
  }

  #[test]
  fn payload_validation_names_fields() {
    let cases = [
      (json!({}), "linked_account_id"),
      (json!({"linked_account_id": ""}), "linked_account_id"),
      (json!({"linked_account_id": 5}), "linked_account_id"),
      (
        json!({"linked_account_id": "x".repeat(257)}),
        "linked_account_id",
      ),
      (
        json!({"linked_account_id": "a", "your_app": {}}),
        "your_app.auth_credentials",
      ),
      (
        json!({"linked_account_id": "a", "your_app": {"app_id": "app_1"}}),
        "your_app.auth_credentials",
      ),
      (
        json!({"linked_account_id": "a", "your_app": {"app_id": "app_1", "Authorization": "Bearer x", "auth_credentials": {}}}),
        "your_app.Authorization",
      ),
      (
        json!({"linked_account_id": "a", "your_app": {"app_id": 3, "auth_credentials": {}}}),
        "your_app.app_id",
      ),
      (
        json!({"linked_account_id": "a", "your_app": {"auth_credentials": "x"}}),
        "your_app.auth_credentials",
      ),
      (json!({"linked_account_id": "a", "udf": []}), "udf"),
      (
        json!({"linked_account_id": "a", "udf": {"k".repeat(129): 1}}),
        "udf",
      ),
      (
        json!({"linked_account_id": "a", "name": "n".repeat(1025)}),
        "name",
      ),
      (json!({"linked_account_id": "a", "name": 1}), "name"),
      (
        json!({"linked_account_id": "a", "udf": {"big": "x".repeat(300_000)}}),
        "payload",
      ),
      (json!("str"), "payload"),
    ];
    for (payload, field) in cases {
      let err = parse_payload(&payload).unwrap_err();
      assert_eq!(err.code(), "VALIDATION_ERROR");
      assert_eq!(err.field.as_deref(), Some(field), "{payload:.60}");
    }
    let many: Map<String, Value> = (0..201).map(|i| (format!("k{i}"), json!(i))).collect();
    let err = parse_payload(&json!({"linked_account_id": "a", "udf": many})).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("udf"));
  }

  #[test]
  fn udf_merge_keeps_ids_and_detects_no_change() {
    let mut rows = Vec::new();
    let c = merge_udf(
      &mut rows,
      vec![
        ("a".into(), Some(json!(1))),
        ("b".into(), Some(json!({"x": [1]}))),
      ],
      10,
    )
    .unwrap();
    assert_eq!(c.inserted, vec!["a", "b"]);
    let before = rows.clone();
    let c = merge_udf(&mut rows, vec![("b".into(), Some(json!({"x": [1]})))], 20).unwrap();
    assert!(!c.any());
    assert_eq!(rows, before);
    let c = merge_udf(
      &mut rows,
      vec![("a".into(), Some(json!(2))), ("c".into(), None)],
      30,
    )
    .unwrap();
    assert_eq!(c.updated, vec!["a"]);
    assert_eq!(rows[0].oid, before[0].oid);
    assert_eq!((rows[0].created_at, rows[0].updated_at), (10, 30));
    assert_eq!(rows[1].updated_at, 10);
    let c = merge_udf(&mut rows, vec![("a".into(), None)], 40).unwrap();
    assert_eq!(c.removed, vec!["a"]);
    assert_eq!(rows.len(), 1);
  }

  #[test]
  fn canonical_json_ignores_key_order() {
    assert_eq!(
      canonical_json(&json!({"b": 1, "a": {"d": 2, "c": 3}})),
      canonical_json(&json!({"a": {"c": 3, "d": 2}, "b": 1}))
    );
  }

  #[test]
  fn cursors_round_trip_and_reject_garbage() {
    assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
    assert_eq!(decode_cursor("nope"), None);
    assert!(parse_keyset_query(Some(&json!({"after": "zzz"}))).is_err());
  }

  #[test]
  fn credentials_never_in_debug() {
    let app = YourApp {
      app_id: None,
      auth_credentials: Some(json!({"k": "s3cr3t"}).as_object().unwrap().clone()),
    };
    assert!(!format!("{app:?}").contains("s3cr3t"));
  }
}

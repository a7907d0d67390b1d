//! Fiskil's end users, as linked accounts: an end user's id is its `linked_account_id`, and
//! Fiskil's fields (`email`, `name`, `phone`, `abn`) live on the account. Pure rules: parsing,
//! validation (E.164 phones, the ABN checksum) and what an update changes. SQL lives in
//! `store::end_users`.
//!
//! As at Fiskil, nothing makes emails unique: one email may belong to several end users.

use serde_json::{Map, Value};

use crate::accounts::{Account, EndUserFields, Patch, MAX_NAME_CHARS};
use crate::error::{Error, Result};
use crate::identities::{normalize_email, parse_email, MAX_EMAIL_CHARS};

/// The fields `createEndUser` and `updateEndUser` accept.
pub const FIELDS: &[&str] = &["email", "name", "phone", "abn"];
/// E.164: a `+`, a non-zero digit and at most 14 more digits.
pub const MAX_PHONE_DIGITS: usize = 15;

/// A validated `createEndUser` / `updateEndUser` body. On create, `Clear` reads as not set.
#[derive(Clone, Debug, PartialEq)]
pub struct EndUserPatch {
  pub email: Patch<String>,
  pub name: Patch<String>,
  pub phone: Patch<String>,
  pub abn: Patch<String>,
}

/// `{ id, email?, name?, phone?, abn? }` (Fiskil's end-user object).
#[derive(Clone, Debug, PartialEq)]
pub struct EndUser {
  pub id: String,
  pub email: Option<String>,
  pub name: Option<String>,
  pub phone: Option<String>,
  pub abn: Option<String>,
}

impl From<Account> for EndUser {
  fn from(a: Account) -> Self {
    EndUser {
      id: a.account_id,
      email: a.end_user.email,
      name: a.name,
      phone: a.end_user.phone,
      abn: a.end_user.abn,
    }
  }
}

/// A phone number in E.164 (`+61412345678`): no spaces, no punctuation.
pub fn parse_phone(v: &Value) -> Result<String> {
  let bad = || {
    Error::validation(
      "phone",
      "phone must be in E.164 form: '+' then the country code and number, at most 15 digits, no spaces (e.g. '+61412345678')",
    )
  };
  let Value::String(s) = v else {
    return Err(bad());
  };
  let digits = s.strip_prefix('+').ok_or_else(bad)?;
  let ok = (2..=MAX_PHONE_DIGITS).contains(&digits.len())
    && digits.bytes().all(|b| b.is_ascii_digit())
    && !digits.starts_with('0');
  if ok {
    Ok(s.clone())
  } else {
    Err(bad())
  }
}

/// Whether 11 digits form a valid Australian Business Number: subtract 1 from the first digit,
/// weight the digits by 10, 1, 3, 5, …, 19, and the sum must be a multiple of 89.
pub fn abn_checksum_ok(digits: &[u8; 11]) -> bool {
  const WEIGHTS: [u32; 11] = [10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19];
  if digits[0] == 0 {
    return false;
  }
  let sum: u32 = digits
    .iter()
    .zip(WEIGHTS)
    .enumerate()
    .map(|(i, (d, w))| (u32::from(*d) - u32::from(i == 0)) * w)
    .sum();
  sum.is_multiple_of(89)
}

/// An ABN: 11 digits (spaces between groups, as in `51 824 753 556`, are dropped) with a valid
/// checksum. Stored and returned as the 11 digits.
pub fn parse_abn(v: &Value) -> Result<String> {
  let Value::String(s) = v else {
    return Err(Error::validation(
      "abn",
      "abn must be a string of 11 digits",
    ));
  };
  let compact: String = s.chars().filter(|c| *c != ' ').collect();
  let mut digits = [0u8; 11];
  if compact.len() != 11 || !compact.bytes().all(|b| b.is_ascii_digit()) {
    return Err(Error::validation("abn", "abn must be 11 digits"));
  }
  for (d, b) in digits.iter_mut().zip(compact.bytes()) {
    *d = b - b'0';
  }
  if !abn_checksum_ok(&digits) {
    return Err(Error::validation(
      "abn",
      "abn is not a valid Australian Business Number (its checksum fails)",
    ));
  }
  Ok(compact)
}

fn parse_name(v: &Value) -> Result<String> {
  match v {
    Value::String(s) if s.chars().count() <= MAX_NAME_CHARS => Ok(s.clone()),
    Value::String(_) => Err(Error::validation(
      "name",
      format!("name must be at most {MAX_NAME_CHARS} characters"),
    )),
    _ => Err(Error::validation("name", "name must be a string")),
  }
}

fn field(
  m: &Map<String, Value>,
  key: &str,
  parse: impl Fn(&Value) -> Result<String>,
) -> Result<Patch<String>> {
  match m.get(key) {
    None => Ok(Patch::Keep),
    Some(Value::Null) => Ok(Patch::Clear),
    Some(v) => parse(v).map(Patch::Set),
  }
}

/// Parses `{ email?, name?, phone?, abn? }`. `null` clears a field (on update); an unknown key
/// is refused, naming it (Fiskil's `session_id` on update has no meaning here).
pub fn parse_fields(v: Option<&Value>) -> Result<EndUserPatch> {
  let empty = Map::new();
  let m = match v {
    None | Some(Value::Null) => &empty,
    Some(Value::Object(m)) => m,
    Some(_) => return Err(Error::validation("end_user", "end_user must be an object")),
  };
  if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
    let field = if k.is_empty() { "end_user" } else { k.as_str() };
    return Err(Error::validation(
      field,
      format!(
        "{k:?} is not an end-user field (allowed: {})",
        FIELDS.join(", ")
      ),
    ));
  }
  Ok(EndUserPatch {
    email: field(m, "email", |v| {
      parse_email(v, "email").map(|e| e.trim().to_string())
    })?,
    name: field(m, "name", parse_name)?,
    phone: field(m, "phone", parse_phone)?,
    abn: field(m, "abn", parse_abn)?,
  })
}

/// The `email` of `getEndUsers({ email })`, normalized as identity linking compares emails.
pub fn parse_email_query(v: Option<&Value>) -> Result<String> {
  let email = match v {
    Some(Value::Object(m)) => {
      if let Some(k) = m.keys().find(|k| k.as_str() != "email") {
        return Err(Error::validation(
          k.as_str(),
          format!("{k:?} is not a filter of getEndUsers (allowed: email)"),
        ));
      }
      m.get("email").filter(|e| !e.is_null())
    }
    None | Some(Value::Null) => None,
    Some(_) => {
      return Err(Error::validation(
        "query",
        "query must be an object { email }",
      ))
    }
  };
  let email =
    email.ok_or_else(|| Error::validation("email", "email is required (Fiskil's get by email)"))?;
  if email
    .as_str()
    .is_some_and(|s| s.chars().count() > MAX_EMAIL_CHARS)
  {
    return Err(Error::validation(
      "email",
      format!("email must be at most {MAX_EMAIL_CHARS} characters"),
    ));
  }
  Ok(normalize_email(&parse_email(email, "email")?))
}

/// The stored end-user state of an account: its name and Fiskil fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stored {
  pub name: Option<String>,
  pub fields: EndUserFields,
}

impl EndUserPatch {
  /// The state after this patch, and the names of the fields it changed (in a fixed order).
  pub fn apply(&self, old: &Stored) -> (Stored, Vec<&'static str>) {
    fn one(p: &Patch<String>, old: &Option<String>) -> Option<String> {
      match p {
        Patch::Keep => old.clone(),
        Patch::Clear => None,
        Patch::Set(v) => Some(v.clone()),
      }
    }
    let new = Stored {
      name: one(&self.name, &old.name),
      fields: EndUserFields {
        email: one(&self.email, &old.fields.email),
        phone: one(&self.phone, &old.fields.phone),
        abn: one(&self.abn, &old.fields.abn),
      },
    };
    let mut changed = Vec::new();
    if new.fields.email != old.fields.email {
      changed.push("email");
    }
    if new.name != old.name {
      changed.push("name");
    }
    if new.fields.phone != old.fields.phone {
      changed.push("phone");
    }
    if new.fields.abn != old.fields.abn {
      changed.push("abn");
    }
    (new, changed)
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  #[test]
  fn abn_checksum() {
    // The ATO's published example, with and without its spaces.
    assert_eq!(parse_abn(&json!("51 824 753 556")).unwrap(), "51824753556");
    assert_eq!(parse_abn(&json!("51824753556")).unwrap(), "51824753556");
    for bad in [
      json!("51824753557"),
      json!("5182475355"),
      json!("518247535566"),
      json!("5182475355a"),
      json!("01824753556"),
      json!(51824753556u64),
    ] {
      let e = parse_abn(&bad).unwrap_err();
      assert_eq!(e.field.as_deref(), Some("abn"), "{bad}");
    }
  }

  #[test]
  fn phones_are_e164() {
    for ok in ["+61412345678", "+14155552671", "+12"] {
      assert_eq!(parse_phone(&json!(ok)).unwrap(), ok);
    }
    for bad in [
      json!("0412345678"),
      json!("+61 412 345 678"),
      json!("+0412345678"),
      json!("+1234567890123456"),
      json!("+"),
      json!("+1"),
      json!(61412345678u64),
    ] {
      assert_eq!(
        parse_phone(&bad).unwrap_err().field.as_deref(),
        Some("phone"),
        "{bad}"
      );
    }
  }

  #[test]
  fn fields_parse_and_name_the_bad_one() {
    let p = parse_fields(Some(
      &json!({"email": " user@example.com ", "name": "John Doe"}),
    ))
    .unwrap();
    assert_eq!(p.email, Patch::Set("user@example.com".into()));
    assert_eq!(p.phone, Patch::Keep);
    assert_eq!(parse_fields(None).unwrap().name, Patch::Keep);
    let p = parse_fields(Some(&json!({"phone": null}))).unwrap();
    assert_eq!(p.phone, Patch::Clear);
    for (v, f) in [
      (json!({"email": "nope"}), "email"),
      (json!({"email": 3}), "email"),
      (json!({"name": 3}), "name"),
      (json!({"name": "n".repeat(1025)}), "name"),
      (json!({"phone": "123"}), "phone"),
      (json!({"abn": "123"}), "abn"),
      (json!({"session_id": "x"}), "session_id"),
      (json!({"": 1}), "end_user"),
      (json!([]), "end_user"),
    ] {
      assert_eq!(
        parse_fields(Some(&v)).unwrap_err().field.as_deref(),
        Some(f),
        "{v}"
      );
    }
  }

  #[test]
  fn email_query_is_normalized_and_required() {
    assert_eq!(
      parse_email_query(Some(&json!({"email": " Ann@X.com"}))).unwrap(),
      "ann@x.com"
    );
    for (v, f) in [
      (json!({}), "email"),
      (json!({"email": null}), "email"),
      (json!({"email": "x"}), "email"),
      (json!({"mail": "a@b.c"}), "mail"),
      (json!("a@b.c"), "query"),
    ] {
      assert_eq!(
        parse_email_query(Some(&v)).unwrap_err().field.as_deref(),
        Some(f),
        "{v}"
      );
    }
  }

  #[test]
  fn apply_reports_changed_fields() {
    let old = Stored {
      name: Some("A".into()),
      fields: EndUserFields {
        email: Some("a@x.io".into()),
        phone: None,
        abn: None,
      },
    };
    let p = parse_fields(Some(
      &json!({"email": "a@x.io", "phone": "+61412345678", "name": null}),
    ))
    .unwrap();
    let (new, changed) = p.apply(&old);
    assert_eq!(changed, vec!["name", "phone"]);
    assert_eq!(new.name, None);
    assert_eq!(new.fields.email.as_deref(), Some("a@x.io"));
    let (same, none) = parse_fields(None).unwrap().apply(&new);
    assert_eq!(same, new);
    assert!(none.is_empty());
  }
}

//! Reading loosely typed input (a JSON object from JavaScript) into typed values, with a
//! `VALIDATION_ERROR` that names the field for every wrong type. `undefined` and `null` both read
//! as "not given" unless a caller asks for the difference.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// An input object with its field path prefix (e.g. `your_app.`) for error messages.
pub struct Fields<'a> {
  map: Option<&'a Map<String, Value>>,
  prefix: &'a str,
}

impl<'a> Fields<'a> {
  /// `value` must be an object, `null` or absent (then every field reads as absent).
  pub fn new(value: Option<&'a Value>, name: &'a str) -> Result<Self> {
    match value {
      None | Some(Value::Null) => Ok(Fields {
        map: None,
        prefix: name,
      }),
      Some(Value::Object(m)) => Ok(Fields {
        map: Some(m),
        prefix: name,
      }),
      Some(_) => Err(Error::validation(name, format!("{name} must be an object"))),
    }
  }

  pub fn path(&self, key: &str) -> String {
    if self.prefix.is_empty() || self.prefix == "options" || self.prefix == "payload" {
      key.to_string()
    } else {
      format!("{}.{key}", self.prefix)
    }
  }

  /// The raw value; `null` included.
  pub fn raw(&self, key: &str) -> Option<&'a Value> {
    self.map.and_then(|m| m.get(key))
  }

  /// Absent or `null` → None.
  pub fn get(&self, key: &str) -> Option<&'a Value> {
    self.raw(key).filter(|v| !v.is_null())
  }

  pub fn str(&self, key: &str) -> Result<Option<&'a str>> {
    match self.get(key) {
      None => Ok(None),
      Some(Value::String(s)) => no_nul(&self.path(key), s).map(Some),
      Some(_) => Err(Error::validation(
        self.path(key),
        format!("{} must be a string", self.path(key)),
      )),
    }
  }

  pub fn bool(&self, key: &str) -> Result<Option<bool>> {
    match self.get(key) {
      None => Ok(None),
      Some(Value::Bool(b)) => Ok(Some(*b)),
      Some(_) => Err(Error::validation(
        self.path(key),
        format!("{} must be a boolean", self.path(key)),
      )),
    }
  }

  /// An integer within `[min, max]`.
  pub fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>> {
    match self.get(key) {
      None => Ok(None),
      Some(v) => {
        let n = v.as_i64().or_else(|| {
          v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
            .map(|f| f as i64)
        });
        match n {
          Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
          _ => Err(Error::validation(
            self.path(key),
            format!("{} must be an integer from {min} to {max}", self.path(key)),
          )),
        }
      }
    }
  }

  pub fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
    match self.get(key) {
      None => Ok(None),
      Some(Value::Object(m)) => Ok(Some(m)),
      Some(_) => Err(Error::validation(
        self.path(key),
        format!("{} must be an object", self.path(key)),
      )),
    }
  }

  /// An array of strings.
  pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
    match self.get(key) {
      None => Ok(None),
      Some(Value::Array(items)) => {
        let list = items
          .iter()
          .map(|v| v.as_str().map(str::to_owned))
          .collect::<Option<Vec<_>>>()
          .ok_or_else(|| {
            Error::validation(
              self.path(key),
              format!("{} must be an array of strings", self.path(key)),
            )
          })?;
        for item in &list {
          no_nul(&self.path(key), item)?;
        }
        Ok(Some(list))
      }
      Some(_) => Err(Error::validation(
        self.path(key),
        format!("{} must be an array of strings", self.path(key)),
      )),
    }
  }
}

/// `s` unless it holds a NUL character: text is stored as text on every engine, and
/// PostgreSQL's text cannot hold U+0000 (refused on SQLite too, so that both stores accept the
/// same input). Inside JSON values (UDF values, profile data) NUL is kept, escaped.
pub fn no_nul<'s>(field: &str, s: &'s str) -> Result<&'s str> {
  if s.contains('\0') {
    return Err(Error::validation(
      field,
      format!("{field} must not contain NUL characters (U+0000)"),
    ));
  }
  Ok(s)
}

/// A required, non-empty string id of at most `max` characters, without NUL.
pub fn id(value: Option<&Value>, field: &str, max: usize) -> Result<String> {
  match value {
    Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => {
      no_nul(field, s).map(str::to_owned)
    }
    Some(Value::String(s)) if s.is_empty() => {
      Err(Error::validation(field, format!("{field} is required")))
    }
    Some(Value::String(_)) => Err(Error::validation(
      field,
      format!("{field} must be at most {max} characters"),
    )),
    None | Some(Value::Null) => Err(Error::validation(field, format!("{field} is required"))),
    Some(_) => Err(Error::validation(
      field,
      format!("{field} must be a string"),
    )),
  }
}

//! Reading JS values as JSON for `js::json_arg` (see the notes below). Kept apart from `js.rs`
//! so that the promise plumbing there can change independently.

use napi::bindgen_prelude::{FromNapiValue, Unknown};
use napi::{JsValue, ValueType};
use serde_json::{Map, Value};

use crate::error::Error;

// A small converter of its own (instead of serde_json's `FromNapiValue`), so that what reaches
// the core is exactly what the caller sent, or a `VALIDATION_ERROR` naming the field:
// - strings are read as UTF-8, and when the result holds U+FFFD they are read again as UTF-16:
//   a lone surrogate (which the UTF-8 conversion silently replaces) is refused instead of
//   changed;
// - nesting is limited (128 levels) and so is the total size (1,000,000 values), without
//   recursion deep enough to overflow the stack;
// - only own enumerable string keys are read (as `JSON.stringify` does), never inherited ones;
//   a `__proto__` key is refused (it would come back as the object's prototype, not as data);
// - a getter or proxy that throws becomes a `VALIDATION_ERROR` (the exception is cleared);
// - a `Date` reads as its ISO 8601 string (as `JSON.stringify` does); functions, symbols,
//   bigints, binary data and `undefined` array items are refused.

const MAX_JSON_DEPTH: usize = 128;
const MAX_JSON_NODES: usize = 1_000_000;

struct JsonReader {
  env: napi::sys::napi_env,
  /// Values still allowed in this conversion.
  budget: usize,
  /// The path inside the argument, for messages (rendered only on error).
  path: Vec<String>,
}

impl JsonReader {
  fn new(env: napi::sys::napi_env) -> Self {
    JsonReader {
      env,
      budget: MAX_JSON_NODES,
      path: Vec::new(),
    }
  }

  fn where_(&self, field: &str) -> String {
    let mut s = field.to_string();
    // A path thousands of levels deep is shortened to its first and last steps.
    let n = self.path.len();
    for (i, p) in self.path.iter().enumerate() {
      if n > 12 && (6..n - 3).contains(&i) {
        if i == 6 {
          s.push_str(&format!("…({} levels)…", n - 9));
        }
        continue;
      }
      if p.starts_with('[') {
        s.push_str(p);
      } else {
        s.push('.');
        s.push_str(p);
      }
    }
    s
  }

  fn fail(&self, field: &str, what: &str) -> Error {
    Error::validation(field, format!("{} {what}", self.where_(field)))
  }

  /// Turns a failed napi call into a validation error, clearing a pending JS exception (thrown
  /// by a getter or a proxy trap) so that the rejection can still be delivered.
  fn check(&self, status: napi::sys::napi_status, field: &str) -> Result<(), Error> {
    if status == napi::sys::Status::napi_ok {
      return Ok(());
    }
    let mut pending = false;
    // SAFETY: plain N-API calls on the current call's env.
    unsafe {
      napi::sys::napi_is_exception_pending(self.env, &mut pending);
      if pending {
        let mut ex = std::ptr::null_mut();
        napi::sys::napi_get_and_clear_last_exception(self.env, &mut ex);
      }
    }
    Err(self.fail(
      field,
      if pending {
        "could not be read: a getter or proxy threw"
      } else {
        "could not be read"
      },
    ))
  }

  fn type_of(&self, v: napi::sys::napi_value, field: &str) -> Result<ValueType, Error> {
    let mut t = 0;
    // SAFETY: `v` is a live value of this env.
    self.check(
      unsafe { napi::sys::napi_typeof(self.env, v, &mut t) },
      field,
    )?;
    Ok(ValueType::from(t))
  }

  fn flag(
    &self,
    f: unsafe fn(napi::sys::napi_env, napi::sys::napi_value, *mut bool) -> napi::sys::napi_status,
    v: napi::sys::napi_value,
    field: &str,
  ) -> Result<bool, Error> {
    let mut b = false;
    // SAFETY: `v` is a live value of this env.
    self.check(unsafe { f(self.env, v, &mut b) }, field)?;
    Ok(b)
  }

  /// A JS string, exactly: refused if it holds a lone UTF-16 surrogate.
  fn string(&self, v: napi::sys::napi_value, field: &str) -> Result<String, Error> {
    // SAFETY: `v` was checked to be a string.
    let s = unsafe { String::from_napi_value(self.env, v) }
      .map_err(|_| self.fail(field, "could not be read as a string"))?;
    if s.contains('\0') {
      // Both stores keep text as text, and PostgreSQL's cannot hold U+0000.
      return Err(self.fail(
        field,
        "contains a NUL character (U+0000), which cannot be stored",
      ));
    }
    if !s.contains('\u{FFFD}') {
      return Ok(s);
    }
    // The UTF-8 conversion writes U+FFFD for a lone surrogate: look at the UTF-16 itself.
    let mut len = 0usize;
    // SAFETY: a length query, then a read into a buffer of that length plus the terminator.
    self.check(
      unsafe {
        napi::sys::napi_get_value_string_utf16(self.env, v, std::ptr::null_mut(), 0, &mut len)
      },
      field,
    )?;
    let mut units = zeroize::Zeroizing::new(vec![0u16; len + 1]);
    let mut written = 0usize;
    self.check(
      unsafe {
        napi::sys::napi_get_value_string_utf16(
          self.env,
          v,
          units.as_mut_ptr(),
          len + 1,
          &mut written,
        )
      },
      field,
    )?;
    let units = units.get(..written).unwrap_or(&[]);
    if let Some(bad) = char::decode_utf16(units.iter().copied()).find_map(|c| c.err()) {
      return Err(self.fail(
        field,
        &format!(
          "contains a lone UTF-16 surrogate (U+{:04X}); strings must be well-formed Unicode",
          bad.unpaired_surrogate()
        ),
      ));
    }
    Ok(s)
  }

  fn number(&self, v: napi::sys::napi_value, field: &str) -> Result<Value, Error> {
    let mut n = 0f64;
    // SAFETY: `v` was checked to be a number.
    self.check(
      unsafe { napi::sys::napi_get_value_double(self.env, v, &mut n) },
      field,
    )?;
    // Integers become integers (as serde_json's own conversion does); NaN and ±Infinity have no
    // JSON form.
    let num = if n.trunc() == n && n >= 0.0 && n <= f64::from(u32::MAX) {
      Some(serde_json::Number::from(n as u32))
    } else if n.trunc() == n && n < 0.0 && n >= f64::from(i32::MIN) {
      Some(serde_json::Number::from(n as i32))
    } else {
      serde_json::Number::from_f64(n)
    };
    num.map(Value::Number).ok_or_else(|| {
      self.fail(
        field,
        "must be a finite number (NaN and Infinity are not JSON)",
      )
    })
  }

  fn value(&mut self, v: napi::sys::napi_value, field: &str, depth: usize) -> Result<Value, Error> {
    if self.budget == 0 {
      return Err(self.fail(
        field,
        &format!("is too large (over {MAX_JSON_NODES} values)"),
      ));
    }
    self.budget -= 1;
    match self.type_of(v, field)? {
      ValueType::Null => Ok(Value::Null),
      ValueType::Boolean => {
        let mut b = false;
        // SAFETY: `v` was checked to be a boolean.
        self.check(
          unsafe { napi::sys::napi_get_value_bool(self.env, v, &mut b) },
          field,
        )?;
        Ok(Value::Bool(b))
      }
      ValueType::Number => self.number(v, field),
      ValueType::String => self.string(v, field).map(Value::String),
      ValueType::Object => {
        if depth >= MAX_JSON_DEPTH {
          return Err(self.fail(
            field,
            &format!("is nested too deeply (more than {MAX_JSON_DEPTH} levels)"),
          ));
        }
        if self.flag(napi::sys::napi_is_array, v, field)? {
          self.array(v, field, depth)
        } else if self.flag(napi::sys::napi_is_date, v, field)? {
          let mut ms = 0f64;
          // SAFETY: `v` was checked to be a Date.
          self.check(
            unsafe { napi::sys::napi_get_date_value(self.env, v, &mut ms) },
            field,
          )?;
          if !ms.is_finite() {
            return Err(self.fail(field, "is an invalid Date"));
          }
          Ok(Value::String(crate::clock::iso8601(ms as i64)))
        } else if self.flag(napi::sys::napi_is_typedarray, v, field)?
          || self.flag(napi::sys::napi_is_arraybuffer, v, field)?
          || self.flag(napi::sys::napi_is_dataview, v, field)?
        {
          Err(self.fail(field, "is binary data, which is not JSON"))
        } else {
          self.object(v, field, depth).map(Value::Object)
        }
      }
      ValueType::Undefined => Err(self.fail(field, "is undefined, which is not JSON")),
      ValueType::Function => Err(self.fail(field, "is a function, which is not JSON")),
      ValueType::Symbol => Err(self.fail(field, "is a symbol, which is not JSON")),
      ValueType::BigInt => Err(self.fail(
        field,
        "is a bigint, which is not JSON (use a number or a string)",
      )),
      _ => Err(self.fail(field, "is not a JSON value")),
    }
  }

  fn array(&mut self, v: napi::sys::napi_value, field: &str, depth: usize) -> Result<Value, Error> {
    let mut len = 0u32;
    // SAFETY: `v` was checked to be an array.
    self.check(
      unsafe { napi::sys::napi_get_array_length(self.env, v, &mut len) },
      field,
    )?;
    let mut out = Vec::new();
    for i in 0..len {
      let mut item = std::ptr::null_mut();
      self.path.push(format!("[{i}]"));
      // SAFETY: index access on a live array (a getter may throw: checked).
      let r = self
        .check(
          unsafe { napi::sys::napi_get_element(self.env, v, i, &mut item) },
          field,
        )
        .and_then(|_| self.value(item, field, depth + 1));
      self.path.pop();
      out.push(r?);
    }
    Ok(Value::Array(out))
  }

  /// An object's own enumerable string keys (as JS strings to look them up with, and as text),
  /// refusing `__proto__`, which would come back as a prototype rather than as data.
  fn own_keys(
    &mut self,
    v: napi::sys::napi_value,
    field: &str,
  ) -> Result<Vec<(String, napi::sys::napi_value)>, Error> {
    let mut names = std::ptr::null_mut();
    // SAFETY: `v` was checked to be an object.
    self.check(
      unsafe {
        napi::sys::napi_get_all_property_names(
          self.env,
          v,
          napi::sys::KeyCollectionMode::own_only,
          napi::sys::KeyFilter::enumerable | napi::sys::KeyFilter::skip_symbols,
          napi::sys::KeyConversion::numbers_to_strings,
          &mut names,
        )
      },
      field,
    )?;
    let mut len = 0u32;
    self.check(
      unsafe { napi::sys::napi_get_array_length(self.env, names, &mut len) },
      field,
    )?;
    let mut keys = Vec::with_capacity(len as usize);
    for i in 0..len {
      let mut key = std::ptr::null_mut();
      self.check(
        unsafe { napi::sys::napi_get_element(self.env, names, i, &mut key) },
        field,
      )?;
      let name = self.string(key, field)?;
      if name == "__proto__" {
        return Err(self.fail(field, "has a __proto__ key, which is not allowed"));
      }
      keys.push((name, key));
    }
    Ok(keys)
  }

  /// Own enumerable string-keyed properties; `undefined` ones are left out.
  fn object(
    &mut self,
    v: napi::sys::napi_value,
    field: &str,
    depth: usize,
  ) -> Result<Map<String, Value>, Error> {
    let mut map = Map::new();
    for (name, key) in self.own_keys(v, field)? {
      let mut prop = std::ptr::null_mut();
      self.path.push(name);
      let r = self
        .check(
          unsafe { napi::sys::napi_get_property(self.env, v, key, &mut prop) },
          field,
        )
        .and_then(|_| match self.type_of(prop, field)? {
          ValueType::Undefined => Ok(None),
          _ => self.value(prop, field, depth + 1).map(Some),
        });
      let name = self.path.pop().unwrap_or_default();
      if let Some(value) = r? {
        map.insert(name, value);
      }
    }
    Ok(map)
  }
}

/// Reads an argument as JSON. `undefined` reads as `null`. An object is read one property at a
/// time, so an unsupported value (a function, `NaN`, a lone surrogate, nesting deeper than 128)
/// is reported under its own property name (the message gives the full path);
/// `undefined` properties are left out, as `JSON.stringify` does.
pub fn arg(arg: Option<Unknown<'_>>, field: &str) -> Result<Value, Error> {
  let Some(v) = arg else { return Ok(Value::Null) };
  let mut reader = JsonReader::new(v.value().env);
  let ty = reader.type_of(v.raw(), field)?;
  match ty {
    ValueType::Undefined | ValueType::Null => Ok(Value::Null),
    ValueType::Object
      if !reader.flag(napi::sys::napi_is_array, v.raw(), field)?
        && !reader.flag(napi::sys::napi_is_date, v.raw(), field)? =>
    {
      // Each top-level property is reported under its own name.
      let mut map = Map::new();
      for (name, key) in reader.own_keys(v.raw(), field)? {
        let mut prop = std::ptr::null_mut();
        reader.check(
          unsafe { napi::sys::napi_get_property(reader.env, v.raw(), key, &mut prop) },
          &name,
        )?;
        if reader.type_of(prop, &name)? == ValueType::Undefined {
          continue;
        }
        let value = reader.value(prop, &name, 1)?;
        map.insert(name, value);
      }
      Ok(Value::Object(map))
    }
    _ => reader.value(v.raw(), field, 0),
  }
}

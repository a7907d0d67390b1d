//! The bridge between core results and JavaScript: promises whose rejections carry `code`,
//! `status` and `field`, and JS values read as JSON with errors that name the field.
//!
//! napi-rs `async fn`s cannot reject with custom properties, so every async method is a plain
//! method that returns `env.spawn_future_with_callback(...)`: the future awaits the core's
//! [`Pending`] (answered by the storage threads, never blocking Node), and the callback, which
//! runs on Node's thread, builds either the value or a real JS `Error` with its properties set.

use napi::bindgen_prelude::{JsObjectValue, PromiseRaw, ToNapiValue, Unknown};
use napi::{Env, JsValue, Status};
use serde_json::Value;

use crate::error::Error;
use crate::store::Pending;

/// A JS `Error` with `code`, `status` and (for validation errors) `field`.
pub fn js_error(env: &Env, e: &Error) -> napi::Error {
  let build = || -> napi::Result<napi::Error> {
    let mut obj = env.create_error(napi::Error::new(Status::GenericFailure, e.message.clone()))?;
    obj.set_named_property("code", e.code())?;
    obj.set_named_property("status", u32::from(e.status()))?;
    if let Some(field) = &e.field {
      obj.set_named_property("field", field.as_str())?;
    }
    Ok(napi::Error::from(obj.to_unknown()))
  };
  build().unwrap_or_else(|_| {
    napi::Error::new(
      Status::GenericFailure,
      format!("{}: {}", e.code(), e.message),
    )
  })
}

/// A promise for `pending`, resolved with `map(value)` or rejected with the mapped error.
pub fn promise<'e, T, V, M>(
  env: &'e Env,
  pending: Pending<T>,
  map: M,
) -> napi::Result<PromiseRaw<'e, V>>
where
  T: Send + 'static,
  V: ToNapiValue,
  M: FnOnce(T) -> V + 'static,
{
  env.spawn_future_with_callback(async move { Ok(pending.await) }, move |env, r| match r {
    Ok(v) => Ok(map(v)),
    Err(e) => Err(js_error(env, &e)),
  })
}

/// A promise rejected with `e` (for input that fails before any work starts).
pub fn rejected<'e, V: ToNapiValue + Send + 'static>(
  env: &'e Env,
  e: Error,
) -> napi::Result<PromiseRaw<'e, V>> {
  promise(env, Pending::<V>::ready(Err(e)), |v| v)
}

/// Reads an argument as JSON. `undefined` reads as `null`. An object is read one property at a
/// time, so an unsupported value (a function, `NaN`, a lone surrogate, nesting deeper than 128)
/// is reported under its own property name; `undefined` properties are left out, as
/// `JSON.stringify` does. Strings are exact: one with a lone UTF-16 surrogate is refused rather
/// than silently changed. The conversion itself is in `binding::json`.
pub fn json_arg(arg: Option<Unknown<'_>>, field: &str) -> Result<Value, Error> {
  super::json::arg(arg, field)
}

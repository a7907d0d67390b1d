//! The bridge between core results and JavaScript: promises whose rejections carry `code`,
//! `status` and `field`, and JS values read as JSON with errors that name the field.
//!
//! napi-rs `async fn`s cannot reject with custom properties, and a runtime future per call
//! costs a wake-up of the event loop per call. So every async method is a plain method that
//! creates its promise itself ([`promise`]) and hands the core's [`Pending`] a callback. The
//! storage thread that answers runs the callback, which only queues the result; the queue is
//! drained on Node's thread through one threadsafe function per JS thread ([`Bridge`]), so the
//! 64 writes of one group commit cost one wake-up, not 64. There the value is converted, or a
//! real JS `Error` is built with its `code`, `status` and `field`, and the promise settles.
//! A result that is already there when the method returns (a point read served on Node's
//! thread, `store::read_point`; refused input) settles its promise at once instead.

use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use napi::bindgen_prelude::{JsObjectValue, Object, PromiseRaw, ToNapiValue, Unknown};
use napi::{check_status, sys, Env, JsValue, Status};
use serde_json::Value;

use crate::error::Error;
use crate::store::Pending;

/// Builds the JS `Error` object for `e`: `message`, `code`, `status` and (for validation
/// errors) `field`.
pub(crate) fn error_object<'e>(env: &'e Env, e: &Error) -> napi::Result<Object<'e>> {
  let mut obj = env.create_error(napi::Error::new(Status::GenericFailure, e.message.clone()))?;
  obj.set_named_property("code", e.code())?;
  obj.set_named_property("status", u32::from(e.status()))?;
  if let Some(field) = &e.field {
    obj.set_named_property("field", field.as_str())?;
  }
  Ok(obj)
}

/// A JS `Error` with `code`, `status` and (for validation errors) `field`, to throw from a
/// synchronous method.
pub fn js_error(env: &Env, e: &Error) -> napi::Error {
  match error_object(env, e) {
    Ok(obj) => napi::Error::from(obj.to_unknown()),
    Err(_) => napi::Error::new(
      Status::GenericFailure,
      format!("{}: {}", e.code(), e.message),
    ),
  }
}

/// Work to run on Node's thread: settles one promise.
type Completion = Box<dyn FnOnce(sys::napi_env) + Send>;

struct RawTsfn(sys::napi_threadsafe_function);
// SAFETY: a threadsafe function handle is meant to be used from any thread.
unsafe impl Send for RawTsfn {}
unsafe impl Sync for RawTsfn {}

struct RawDeferred(sys::napi_deferred);
// SAFETY: the deferred is only moved through other threads; it is used on Node's thread only.
unsafe impl Send for RawDeferred {}

/// Settles promises on one JS thread (the main thread or a worker) for results delivered by
/// storage threads. It keeps the event loop alive only while calls are in flight, so a process
/// that forgets `close()` still exits.
struct Bridge {
  tsfn: OnceLock<RawTsfn>,
  /// Completions to run, each marked whether it settles a promise counted in `inflight`.
  queue: Mutex<Vec<(bool, Completion)>>,
  /// Set by the threadsafe function's finalizer when the JS environment goes away; from then on
  /// results are dropped (there is nobody left to receive them).
  closed: RwLock<bool>,
  /// Promises created and not yet settled. Touched on the JS thread only.
  inflight: AtomicUsize,
}

thread_local! {
  static BRIDGE: RefCell<Option<Arc<Bridge>>> = const { RefCell::new(None) };
}

unsafe extern "C" fn bridge_call_js(
  env: sys::napi_env,
  _cb: sys::napi_value,
  context: *mut c_void,
  _data: *mut c_void,
) {
  if env.is_null() || context.is_null() {
    return;
  }
  // SAFETY: `context` points at the Bridge kept alive by the finalize data until finalization.
  let bridge = unsafe { &*(context as *const Bridge) };
  bridge.drain(env);
}

unsafe extern "C" fn bridge_finalize(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
  if data.is_null() {
    return;
  }
  // SAFETY: `data` is the `Arc` leaked in `Bridge::create`; this is its only release.
  let bridge = unsafe { Arc::from_raw(data as *const Bridge) };
  if let Ok(mut closed) = bridge.closed.write() {
    *closed = true;
  }
  // Nobody is left to receive these results.
  let dropped = bridge.queue.lock().map(|mut q| std::mem::take(&mut *q));
  drop(dropped);
}

impl Bridge {
  /// The bridge of the current JS thread, created on first use.
  fn current(env: sys::napi_env) -> napi::Result<Arc<Bridge>> {
    BRIDGE.with(|slot| {
      if let Some(b) = slot.borrow().as_ref() {
        if !b.closed.read().map(|c| *c).unwrap_or(true) {
          return Ok(b.clone());
        }
      }
      let b = Bridge::create(env)?;
      *slot.borrow_mut() = Some(b.clone());
      Ok(b)
    })
  }

  fn create(env: sys::napi_env) -> napi::Result<Arc<Bridge>> {
    let bridge = Arc::new(Bridge {
      tsfn: OnceLock::new(),
      queue: Mutex::new(Vec::new()),
      closed: RwLock::new(false),
      inflight: AtomicUsize::new(0),
    });
    let name = "linkvault";
    let mut raw_name = ptr::null_mut();
    check_status!(unsafe {
      sys::napi_create_string_utf8(
        env,
        name.as_ptr().cast(),
        name.len() as isize,
        &mut raw_name,
      )
    })?;
    let owned = Arc::into_raw(bridge.clone()) as *mut c_void;
    let mut tsfn = ptr::null_mut();
    let status = unsafe {
      sys::napi_create_threadsafe_function(
        env,
        ptr::null_mut(),
        ptr::null_mut(),
        raw_name,
        0,
        1,
        owned,
        Some(bridge_finalize),
        Arc::as_ptr(&bridge) as *mut c_void,
        Some(bridge_call_js),
        &mut tsfn,
      )
    };
    if status != sys::Status::napi_ok {
      // SAFETY: creation failed, so the finalizer will never release `owned`.
      drop(unsafe { Arc::from_raw(owned as *const Bridge) });
      return Err(napi::Error::new(
        Status::GenericFailure,
        "cannot create the promise bridge",
      ));
    }
    // Idle: do not keep the event loop alive until a call is in flight.
    check_status!(unsafe { sys::napi_unref_threadsafe_function(env, tsfn) })?;
    let _ = bridge.tsfn.set(RawTsfn(tsfn));
    Ok(bridge)
  }

  fn raw(&self) -> sys::napi_threadsafe_function {
    self.tsfn.get().map(|t| t.0).unwrap_or(ptr::null_mut())
  }

  /// A call started (JS thread): keep the loop alive while any call is in flight.
  fn begin(&self, env: sys::napi_env) {
    if self.inflight.fetch_add(1, Ordering::Relaxed) == 0 {
      unsafe { sys::napi_ref_threadsafe_function(env, self.raw()) };
    }
  }

  /// Queues a promise's completion (any thread) and wakes the JS thread if the queue was empty.
  fn push(&self, c: Completion) {
    self.enqueue(true, c)
  }

  /// Queues work that settles no promise (a progress callback), in order with the completions.
  fn push_untracked(&self, c: Completion) {
    self.enqueue(false, c)
  }

  fn enqueue(&self, settles: bool, c: Completion) {
    let Ok(closed) = self.closed.read() else {
      return;
    };
    if *closed {
      return;
    }
    let was_empty = match self.queue.lock() {
      Ok(mut q) => {
        let empty = q.is_empty();
        q.push((settles, c));
        empty
      }
      Err(_) => return,
    };
    if was_empty {
      // Holding the read lock keeps the finalizer (a writer) from freeing the function now.
      unsafe {
        sys::napi_call_threadsafe_function(
          self.raw(),
          ptr::null_mut(),
          sys::ThreadsafeFunctionCallMode::nonblocking,
        )
      };
    }
  }

  /// Settles every queued promise (JS thread).
  fn drain(&self, env: sys::napi_env) {
    let batch = match self.queue.lock() {
      Ok(mut q) => std::mem::take(&mut *q),
      Err(_) => return,
    };
    let n = batch.iter().filter(|(settles, _)| *settles).count();
    for (_, completion) in batch {
      let mut scope = ptr::null_mut();
      unsafe { sys::napi_open_handle_scope(env, &mut scope) };
      // A panic must not unwind into Node.
      let _ = catch_unwind(AssertUnwindSafe(|| completion(env)));
      unsafe { sys::napi_close_handle_scope(env, scope) };
    }
    if n > 0 && self.inflight.fetch_sub(n, Ordering::Relaxed) == n {
      unsafe { sys::napi_unref_threadsafe_function(env, self.raw()) };
    }
  }
}

/// Resolves or rejects `deferred` with `r` (JS thread).
fn settle<V: ToNapiValue>(env: sys::napi_env, deferred: RawDeferred, r: crate::Result<V>) {
  let js_env = Env::from_raw(env);
  let rejection = |e: &Error| -> sys::napi_value {
    match error_object(&js_env, e) {
      Ok(obj) => obj.raw(),
      Err(_) => ptr::null_mut(),
    }
  };
  let (ok, value) = match r {
    Ok(v) => match unsafe { V::to_napi_value(env, v) } {
      Ok(val) => (true, val),
      Err(e) => (
        false,
        rejection(&Error::storage(format!(
          "cannot convert the result: {}",
          e.reason
        ))),
      ),
    },
    Err(e) => (false, rejection(&e)),
  };
  unsafe {
    if ok {
      sys::napi_resolve_deferred(env, deferred.0, value);
    } else {
      let mut value = value;
      if value.is_null() {
        sys::napi_get_undefined(env, &mut value);
      }
      sys::napi_reject_deferred(env, deferred.0, value);
    }
  }
}

/// A promise for `pending`, resolved with `map(value)` or rejected with the mapped error.
/// `map` runs on the storage thread that answers (formatting stays off Node's thread); only the
/// conversion to JS values runs on Node's thread.
pub fn promise<'e, T, V, M>(
  env: &'e Env,
  pending: Pending<T>,
  map: M,
) -> napi::Result<PromiseRaw<'e, V>>
where
  T: Send + 'static,
  V: ToNapiValue + Send + 'static,
  M: FnOnce(T) -> V + Send + 'static,
{
  let raw_env = env.raw();
  let mut deferred = ptr::null_mut();
  let mut promise = ptr::null_mut();
  let pending = match pending.try_take() {
    // Already answered (a point read served on this thread, refused input): settled now, with
    // no trip through the bridge. Still a promise: callers `await` it as any other.
    Ok(r) => {
      check_status!(unsafe { sys::napi_create_promise(raw_env, &mut deferred, &mut promise) })?;
      settle(raw_env, RawDeferred(deferred), r.map(map));
      return Ok(PromiseRaw::new(raw_env, promise));
    }
    Err(pending) => pending,
  };
  let bridge = Bridge::current(raw_env)?;
  check_status!(unsafe { sys::napi_create_promise(raw_env, &mut deferred, &mut promise) })?;
  bridge.begin(raw_env);
  let deferred = RawDeferred(deferred);
  let target = bridge.clone();
  pending.on_ready(move |r| {
    let r = r.map(map);
    target.push(Box::new(move |env| settle(env, deferred, r)));
  });
  Ok(PromiseRaw::new(raw_env, promise))
}

/// A result serialized to JSON text on the storage thread and turned into JS values with
/// `JSON.parse` on Node's thread. For nested results (accounts with their UDF rows and
/// identities, pages of them) that is several times cheaper for Node's thread than creating
/// each object property by property through Node-API.
pub struct Json(String);

impl Json {
  pub fn of<T: serde::Serialize>(value: &T) -> Json {
    // Our result types have string keys and finite numbers only, so this cannot fail.
    Json(serde_json::to_string(value).unwrap_or_else(|_| "null".to_string()))
  }
}

thread_local! {
  /// `JSON` and `JSON.parse` of this thread's JS environment, kept as references: looking them up
  /// on every result was a measurable share of a token verification.
  static JSON_PARSE: std::cell::Cell<Option<(sys::napi_env, sys::napi_ref, sys::napi_ref)>> =
    const { std::cell::Cell::new(None) };
}

unsafe fn json_parse_fn(env: sys::napi_env) -> napi::Result<(sys::napi_value, sys::napi_value)> {
  if let Some((cached_env, json_ref, parse_ref)) = JSON_PARSE.with(|c| c.get()) {
    if cached_env == env {
      let (mut json, mut parse) = (ptr::null_mut(), ptr::null_mut());
      check_status!(unsafe { sys::napi_get_reference_value(env, json_ref, &mut json) })?;
      check_status!(unsafe { sys::napi_get_reference_value(env, parse_ref, &mut parse) })?;
      if !json.is_null() && !parse.is_null() {
        return Ok((json, parse));
      }
    }
  }
  let mut global = ptr::null_mut();
  check_status!(unsafe { sys::napi_get_global(env, &mut global) })?;
  let mut json = ptr::null_mut();
  check_status!(unsafe { sys::napi_get_named_property(env, global, c"JSON".as_ptr(), &mut json) })?;
  let mut parse = ptr::null_mut();
  check_status!(unsafe { sys::napi_get_named_property(env, json, c"parse".as_ptr(), &mut parse) })?;
  let (mut json_ref, mut parse_ref) = (ptr::null_mut(), ptr::null_mut());
  check_status!(unsafe { sys::napi_create_reference(env, json, 1, &mut json_ref) })?;
  check_status!(unsafe { sys::napi_create_reference(env, parse, 1, &mut parse_ref) })?;
  JSON_PARSE.with(|c| c.set(Some((env, json_ref, parse_ref))));
  Ok((json, parse))
}

impl ToNapiValue for Json {
  unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
    let (json, parse) = unsafe { json_parse_fn(env) }?;
    let mut text = ptr::null_mut();
    check_status!(unsafe {
      sys::napi_create_string_utf8(env, val.0.as_ptr().cast(), val.0.len() as isize, &mut text)
    })?;
    let mut out = ptr::null_mut();
    check_status!(unsafe { sys::napi_call_function(env, json, parse, 1, &text, &mut out) })?;
    Ok(out)
  }
}

/// Reads `arg` as JSON (`json_arg`) and hands it to `call`; a bad argument becomes the
/// operation's (rejected) result.
pub fn with_json<T>(
  arg: Option<Unknown<'_>>,
  field: &str,
  call: impl FnOnce(&Value) -> Pending<T>,
) -> Pending<T> {
  match json_arg(arg, field) {
    Ok(v) => call(&v),
    Err(e) => Pending::ready(Err(e)),
  }
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

struct RawRef(sys::napi_ref);
// SAFETY: the reference is only moved through other threads; it is used on its JS thread only.
unsafe impl Send for RawRef {}
unsafe impl Sync for RawRef {}

/// A reference to a JS function that is deleted on its JS thread once the last handle to it is
/// dropped (on any thread).
struct FunctionRef {
  bridge: Arc<Bridge>,
  raw: Option<RawRef>,
}

impl Drop for FunctionRef {
  fn drop(&mut self) {
    if let Some(r) = self.raw.take() {
      self.bridge.push_untracked(Box::new(move |env| {
        let r = r;
        unsafe { sys::napi_delete_reference(env, r.0) };
      }));
    }
  }
}

/// A JS function that other threads call with `{ done, total }` (an `onProgress` option). Calls
/// go through the same queue as promise results, so every call made before an operation answers
/// runs before its promise settles. An exception thrown by the function is an uncaught
/// exception, as with an `EventEmitter` listener.
#[derive(Clone)]
pub struct ProgressCallback(Arc<FunctionRef>);

impl ProgressCallback {
  /// `value` must be a function (checked by the caller).
  pub fn new(env: &Env, value: &Unknown<'_>) -> napi::Result<Self> {
    let bridge = Bridge::current(env.raw())?;
    let mut raw = ptr::null_mut();
    check_status!(unsafe { sys::napi_create_reference(env.raw(), value.raw(), 1, &mut raw) })?;
    Ok(ProgressCallback(Arc::new(FunctionRef {
      bridge,
      raw: Some(RawRef(raw)),
    })))
  }

  /// Queues a call `f({ done, total })` (any thread).
  pub fn report(&self, done: u64, total: u64) {
    let handle = self.0.clone();
    self.0.bridge.push_untracked(Box::new(move |env| {
      let Some(r) = handle.raw.as_ref() else { return };
      let js_env = Env::from_raw(env);
      let call = || -> napi::Result<()> {
        let mut func = ptr::null_mut();
        check_status!(unsafe { sys::napi_get_reference_value(env, r.0, &mut func) })?;
        let mut arg = Object::new(&js_env)?;
        arg.set_named_property("done", done as f64)?;
        arg.set_named_property("total", total as f64)?;
        let mut undefined = ptr::null_mut();
        check_status!(unsafe { sys::napi_get_undefined(env, &mut undefined) })?;
        let mut out = ptr::null_mut();
        let argv = [arg.raw()];
        let status =
          unsafe { sys::napi_call_function(env, undefined, func, 1, argv.as_ptr(), &mut out) };
        if status == sys::Status::napi_pending_exception {
          let mut exception = ptr::null_mut();
          unsafe {
            sys::napi_get_and_clear_last_exception(env, &mut exception);
            sys::napi_fatal_exception(env, exception);
          }
        }
        Ok(())
      };
      let _ = call();
    }));
  }
}

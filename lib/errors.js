'use strict'
// LinkvaultError: the one error class of the package, and the conversion of the native
// binding's errors into it.

/** Every `code` a LinkvaultError can carry (the core's codes, src/error.rs, plus BINARY_NOT_FOUND). */
const CODES = new Set([
  'VALIDATION_ERROR',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'VERSION_CONFLICT',
  'CLIENT_CLOSED',
  'DECRYPTION_FAILED',
  'STORAGE_ERROR',
  'INVALID_TOKEN',
  'TOKEN_EXPIRED',
  'TOKEN_REVOKED',
  'IDENTITY_ALREADY_LINKED',
  'AUTH_SESSION_ALREADY_USED',
  'AUTH_SESSION_EXPIRED',
  'BINARY_NOT_FOUND',
])

class LinkvaultError extends Error {
  /**
   * @param {string} message
   * @param {{ code: string, status: number, field?: string, cause?: unknown }} details
   */
  constructor(message, { code, status, field, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause })
    this.code = code
    this.status = status
    if (field !== undefined) this.field = field
  }
}
Object.defineProperty(LinkvaultError.prototype, 'name', {
  value: 'LinkvaultError',
  writable: true,
  configurable: true,
})

/**
 * The LinkvaultError for an error thrown or rejected by the native binding. The new error's
 * stack starts at the caller of `above` (and, for a rejection converted after `await` or in a
 * promise reaction, includes the awaiting callers through V8's async stack traces).
 */
function fromNative(e, above) {
  let err
  if (e !== null && typeof e === 'object' && CODES.has(e.code) && typeof e.status === 'number') {
    err = new LinkvaultError(e.message, { code: e.code, status: e.status, field: e.field })
  } else if (e instanceof LinkvaultError) {
    return e
  } else {
    // Not one of the core's errors: misuse seen by V8 or napi-rs (a method called on something
    // that is not a Client, an argument napi-rs could not convert).
    const message = e !== null && typeof e === 'object' && typeof e.message === 'string' ? e.message : String(e)
    err = new LinkvaultError(message, { code: 'VALIDATION_ERROR', status: 400, cause: e })
  }
  Error.captureStackTrace(err, above)
  return err
}

/** A promise rejection handler that converts to a LinkvaultError. */
function rethrow(e) {
  throw fromNative(e, rethrow)
}

/**
 * Wraps a native function or method: synchronous throws and promise rejections become
 * LinkvaultErrors whose stack shows the caller. On success it costs one promise reaction for
 * an async method and nothing for a synchronous one.
 */
function wrap(fn) {
  const wrapped = function (...args) {
    let result
    try {
      result = Reflect.apply(fn, this, args)
    } catch (e) {
      throw fromNative(e, wrapped)
    }
    if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
      // A promise of another realm (the addon's, seen from a Jest test's realm) is adopted by
      // this realm's Promise first: `await` registers on a foreign promise only a microtask
      // later, and a promise that is already rejected (a point read answered on this thread)
      // would otherwise be converted before the awaiting frames are known to V8.
      return (result instanceof Promise ? result : Promise.resolve(result)).then(undefined, rethrow)
    }
    return result
  }
  Object.defineProperty(wrapped, 'name', { value: fn.name, configurable: true })
  Object.defineProperty(wrapped, 'length', { value: fn.length, configurable: true })
  return wrapped
}

module.exports = { LinkvaultError, CODES, fromNative, wrap }

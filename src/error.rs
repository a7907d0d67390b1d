//! The one error type of the crate. Every failure a user can see has a stable, greppable
//! `code` and an HTTP-like `status`; validation errors also name the offending `field`.
//! Messages never contain secrets: callers pass only ids and field names into them.

use std::fmt;

/// What went wrong, as a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
  Validation,
  NotFound,
  AlreadyExists,
  VersionConflict,
  ClientClosed,
  DecryptionFailed,
  Storage,
  /// The database server cannot be reached (down, restarting, refusing the login): code
  /// `STORAGE_ERROR` like any storage failure, status 503 because retrying later can work.
  Unavailable,
  InvalidToken,
  TokenExpired,
  TokenRevoked,
  IdentityAlreadyLinked,
  AuthSessionAlreadyUsed,
  AuthSessionExpired,
}

impl ErrorKind {
  /// The stable code users match on (`err.code`).
  pub fn code(self) -> &'static str {
    match self {
      ErrorKind::Validation => "VALIDATION_ERROR",
      ErrorKind::NotFound => "NOT_FOUND",
      ErrorKind::AlreadyExists => "ALREADY_EXISTS",
      ErrorKind::VersionConflict => "VERSION_CONFLICT",
      ErrorKind::ClientClosed => "CLIENT_CLOSED",
      ErrorKind::DecryptionFailed => "DECRYPTION_FAILED",
      ErrorKind::Storage | ErrorKind::Unavailable => "STORAGE_ERROR",
      ErrorKind::InvalidToken => "INVALID_TOKEN",
      ErrorKind::TokenExpired => "TOKEN_EXPIRED",
      ErrorKind::TokenRevoked => "TOKEN_REVOKED",
      ErrorKind::IdentityAlreadyLinked => "IDENTITY_ALREADY_LINKED",
      ErrorKind::AuthSessionAlreadyUsed => "AUTH_SESSION_ALREADY_USED",
      ErrorKind::AuthSessionExpired => "AUTH_SESSION_EXPIRED",
    }
  }

  /// The HTTP-like status (`err.status`).
  pub fn status(self) -> u16 {
    match self {
      ErrorKind::Validation | ErrorKind::ClientClosed => 400,
      ErrorKind::InvalidToken | ErrorKind::TokenExpired | ErrorKind::TokenRevoked => 401,
      ErrorKind::NotFound => 404,
      ErrorKind::AlreadyExists | ErrorKind::VersionConflict | ErrorKind::IdentityAlreadyLinked => {
        409
      }
      ErrorKind::AuthSessionAlreadyUsed => 409,
      ErrorKind::AuthSessionExpired => 410,
      ErrorKind::DecryptionFailed | ErrorKind::Storage => 500,
      ErrorKind::Unavailable => 503,
    }
  }
}

/// A failure with a code, a human message and, for validation errors, the field at fault.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
  pub kind: ErrorKind,
  pub message: String,
  pub field: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
  pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
    Error {
      kind,
      message: message.into(),
      field: None,
    }
  }

  /// A `VALIDATION_ERROR` naming `field`.
  pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
    Error {
      kind: ErrorKind::Validation,
      message: message.into(),
      field: Some(field.into()),
    }
  }

  pub fn not_found(message: impl Into<String>) -> Self {
    Error::new(ErrorKind::NotFound, message)
  }

  pub fn closed() -> Self {
    Error::new(ErrorKind::ClientClosed, "client is closed")
  }

  pub fn storage(message: impl Into<String>) -> Self {
    Error::new(ErrorKind::Storage, message)
  }

  /// `STORAGE_ERROR` with status 503: the database server cannot be reached.
  pub fn unavailable(message: impl Into<String>) -> Self {
    Error::new(ErrorKind::Unavailable, message)
  }

  pub fn decryption() -> Self {
    Error::new(
      ErrorKind::DecryptionFailed,
      "stored secret could not be decrypted: wrong encryption key or tampered data",
    )
  }

  pub fn code(&self) -> &'static str {
    self.kind.code()
  }

  pub fn status(&self) -> u16 {
    self.kind.status()
  }
}

impl fmt::Debug for Error {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{}: {}", self.code(), self.message)?;
    if let Some(field) = &self.field {
      write!(f, " (field {field})")?;
    }
    Ok(())
  }
}

impl fmt::Display for Error {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&self.message)
  }
}

impl std::error::Error for Error {}

//! Where a PostgreSQL store connects: the `url` option (libpq's URL form), the schema, TLS per
//! `sslmode`, and connecting with a timeout.
//!
//! TLS follows libpq: `disable` never encrypts; `prefer` (the default) encrypts when the server
//! offers it; `require` refuses a server that does not, and (as libpq does without a root
//! certificate) encrypts without verifying the server's certificate. The handshake is rustls
//! (no OpenSSL to install).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// Default wait for a connection (libpq's `connect_timeout` in the URL overrides it).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS stream of a connection (rustls; unused with `sslmode=disable`).
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// A connection to the server and the future that drives its I/O.
pub type Connected = (Client, Connection<Socket, TlsStream>);

/// A parsed `url` and schema.
#[derive(Clone)]
pub struct Target {
  config: Config,
  schema: String,
  display: String,
  tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Target {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    // Never the password.
    f.debug_struct("Target")
      .field("server", &self.display)
      .field("schema", &self.schema)
      .finish_non_exhaustive()
  }
}

fn bad_url(message: &str) -> Error {
  Error::validation("url", message)
}

impl Target {
  /// Parses a `postgres://` or `postgresql://` URL. Errors name `url` and never repeat it (it
  /// may hold a password).
  pub fn parse(url: &str, schema: &str) -> Result<Target> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
      return Err(bad_url(
        "url must be a PostgreSQL connection URL: postgres://user:password@host:5432/database",
      ));
    }
    let mut config = Config::from_str(url).map_err(|_| {
      bad_url(
        "url is not a valid PostgreSQL connection URL (postgres://user:password@host:port/database\
         ?sslmode=disable|prefer|require)",
      )
    })?;
    if !matches!(
      config.get_ssl_mode(),
      SslMode::Disable | SslMode::Prefer | SslMode::Require
    ) {
      return Err(bad_url("sslmode must be disable, prefer or require"));
    }
    if config.get_hosts().is_empty() {
      config.host("localhost");
    }
    // libpq's defaults for what the URL leaves out.
    if config.get_user().is_none() {
      let user = std::env::var("PGUSER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "postgres".to_string());
      config.user(&user);
    }
    if config.get_password().is_none() {
      if let Ok(p) = std::env::var("PGPASSWORD") {
        config.password(p);
      }
    }
    if config.get_connect_timeout().is_none() {
      config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
      config.application_name("linkvault");
    }
    config.keepalives(true);
    let display = display(&config);
    Ok(Target {
      config,
      schema: schema.to_string(),
      display,
      tls: MakeRustlsConnect::new(tls_config()?),
    })
  }

  pub fn schema(&self) -> &str {
    &self.schema
  }

  /// `host:port` (or the socket directory), for messages. Never the password.
  pub fn display(&self) -> &str {
    &self.display
  }

  /// Connects; the caller drives the returned connection.
  pub async fn connect_raw(&self) -> Result<Connected> {
    let limit = self
      .config
      .get_connect_timeout()
      .copied()
      .unwrap_or(CONNECT_TIMEOUT);
    // The driver's own timeout covers each attempt; this one the whole (TLS, login included).
    match tokio::time::timeout(
      limit + Duration::from_secs(1),
      self.config.connect(self.tls.clone()),
    )
    .await
    {
      Ok(Ok(c)) => Ok(c),
      Ok(Err(e)) => {
        // The driver's own text ("error connecting to server") and its cause ("Connection
        // refused"); neither holds the password.
        let cause = std::error::Error::source(&e)
          .map(|c| format!("{e}: {c}"))
          .unwrap_or_else(|| e.to_string());
        Err(self.connect_error(&cause, e.as_db_error().map(|d| d.message())))
      }
      Err(_) => Err(self.connect_error("timed out", None)),
    }
  }

  fn connect_error(&self, driver: &str, server: Option<&str>) -> Error {
    let reason = server.unwrap_or(driver);
    Error::unavailable(format!(
      "storage error: cannot connect to the PostgreSQL server at {}: {reason}",
      self.display
    ))
  }
}

fn display(config: &Config) -> String {
  let port = config.get_ports().first().copied().unwrap_or(5432);
  match config.get_hosts().first() {
    Some(Host::Tcp(h)) => format!("{h}:{port}"),
    Some(Host::Unix(dir)) => format!("{}:{port} (unix socket)", dir.display()),
    None => format!("localhost:{port}"),
  }
}

fn provider() -> Arc<CryptoProvider> {
  Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config() -> Result<rustls::ClientConfig> {
  let provider = provider();
  Ok(
    rustls::ClientConfig::builder_with_provider(provider.clone())
      .with_safe_default_protocol_versions()
      .map_err(|e| Error::storage(format!("cannot set up TLS: {e}")))?
      .dangerous()
      .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
      .with_no_client_auth(),
  )
}

/// libpq's `sslmode=require`: the connection is encrypted and the handshake's signatures are
/// checked against the certificate the server presents, but that certificate is not checked
/// against any authority (libpq verifies only with `verify-ca`/`verify-full`).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
  fn verify_server_cert(
    &self,
    _end_entity: &CertificateDer<'_>,
    _intermediates: &[CertificateDer<'_>],
    _server_name: &ServerName<'_>,
    _ocsp_response: &[u8],
    _now: UnixTime,
  ) -> std::result::Result<ServerCertVerified, rustls::Error> {
    Ok(ServerCertVerified::assertion())
  }

  fn verify_tls12_signature(
    &self,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
  ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls12_signature(
      message,
      cert,
      dss,
      &self.0.signature_verification_algorithms,
    )
  }

  fn verify_tls13_signature(
    &self,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
  ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(
      message,
      cert,
      dss,
      &self.0.signature_verification_algorithms,
    )
  }

  fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
    self.0.signature_verification_algorithms.supported_schemes()
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn urls_are_checked_without_being_echoed() {
    for bad in [
      "mysql://u:hunter2@h/db",
      "http://u:hunter2@h/db",
      "postgres://u:hunter2@h/db?sslmode=verify-full",
      "postgres://u:hunter2@h/db?sslmode=bogus",
      "postgres://u:hunter2@h:notaport/db",
    ] {
      let e = Target::parse(bad, "linkvault").unwrap_err();
      assert_eq!(
        (e.code(), e.field.as_deref()),
        ("VALIDATION_ERROR", Some("url")),
        "{bad}"
      );
      assert!(!e.message.contains("hunter2"), "{bad}");
    }
    let t = Target::parse(
      "postgresql://u:hunter2@db.example:6543/app?sslmode=require",
      "s",
    )
    .unwrap();
    assert_eq!(t.display(), "db.example:6543");
    assert!(!format!("{t:?}").contains("hunter2"));
    let t = Target::parse("postgres://u@localhost/app", "s").unwrap();
    assert_eq!(t.display(), "localhost:5432");
  }
}

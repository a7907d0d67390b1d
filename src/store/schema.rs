//! Schema migrations, versioned in code and recorded in `PRAGMA user_version`. Each entry runs
//! once, in order, in the same transaction as the version bump. A file whose version is newer
//! than this code knows is refused rather than touched.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// (version, SQL). Append only; never edit a released entry.
const MIGRATIONS: &[(i64, &str)] = &[
  (
    1,
    r#"
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE scopes (
  id          INTEGER PRIMARY KEY,
  org_id      TEXT NOT NULL,
  environment TEXT NOT NULL,
  UNIQUE (org_id, environment)
);

-- pk is AUTOINCREMENT so keyset cursors never see a reused position.
CREATE TABLE accounts (
  pk          INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id    INTEGER NOT NULL REFERENCES scopes(id),
  account_id  TEXT NOT NULL,
  oid         TEXT NOT NULL,
  name        TEXT,
  has_app     INTEGER NOT NULL DEFAULT 0,
  app_id      TEXT,
  credentials BLOB,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  version     INTEGER NOT NULL DEFAULT 0,
  UNIQUE (scope_id, account_id)
);

CREATE TABLE udf (
  account_pk INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  key        TEXT NOT NULL,
  pos        INTEGER NOT NULL,
  value      TEXT NOT NULL,
  oid        TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (account_pk, key)
) WITHOUT ROWID;

CREATE TABLE events (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id          INTEGER NOT NULL,
  type              TEXT NOT NULL,
  linked_account_id TEXT,
  data              TEXT NOT NULL,
  created_at        INTEGER NOT NULL
);
CREATE INDEX events_scope ON events (scope_id, id);
"#,
  ),
  (
    2,
    r#"
-- Session tokens (src/store/tokens.rs). Times: *_at in ms; iat/exp/expires_at/cutoff in s.
-- Signing keys, secrets sealed (AAD: scope + kid). The newest live key signs.
CREATE TABLE signing_keys (
  pk         INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id   INTEGER NOT NULL REFERENCES scopes(id),
  kid        TEXT NOT NULL,
  secret     BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  retired_at INTEGER,
  UNIQUE (scope_id, kid)
);
CREATE INDEX signing_keys_live ON signing_keys (scope_id, pk) WHERE retired_at IS NULL;

-- One row per mint; refreshed tokens stay in their family. expires_at: when its last token
-- or refresh token expires (then the family and its rows are pruned).
CREATE TABLE token_families (
  pk         INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id   INTEGER NOT NULL REFERENCES scopes(id),
  account_pk INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  scopes     TEXT,
  ttl        INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE INDEX token_families_account ON token_families (account_pk);
CREATE INDEX token_families_expiry ON token_families (expires_at);

-- Claims of issued tokens (never the token itself).
CREATE TABLE session_tokens (
  jti        TEXT PRIMARY KEY,
  family_pk  INTEGER NOT NULL REFERENCES token_families(pk) ON DELETE CASCADE,
  account_pk INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  kid        TEXT NOT NULL,
  iat        INTEGER NOT NULL,
  exp        INTEGER NOT NULL,
  revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX session_tokens_account ON session_tokens (account_pk, exp);
CREATE INDEX session_tokens_family ON session_tokens (family_pk);
CREATE INDEX session_tokens_expiry ON session_tokens (exp);

-- SHA-256 of refresh tokens (never the token), single use.
CREATE TABLE refresh_tokens (
  hash       BLOB PRIMARY KEY,
  family_pk  INTEGER NOT NULL REFERENCES token_families(pk) ON DELETE CASCADE,
  jti        TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at    INTEGER,
  revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_pk);
CREATE INDEX refresh_tokens_jti ON refresh_tokens (jti);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- Append-only revocation log read incrementally by verifiers (no cascade: revocations outlive
-- deleted accounts). kind 'jti': value = jti, expires_at = its exp. kind 'account':
-- value = linked_account_id, tokens with iat < cutoff are revoked.
CREATE TABLE token_revocations (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id   INTEGER NOT NULL,
  kind       TEXT NOT NULL CHECK (kind IN ('jti', 'account')),
  value      TEXT NOT NULL,
  cutoff     INTEGER,
  expires_at INTEGER
);
CREATE INDEX token_revocations_scope ON token_revocations (scope_id, seq);
CREATE INDEX token_revocations_value ON token_revocations (scope_id, kind, value);
CREATE INDEX token_revocations_expiry ON token_revocations (expires_at) WHERE kind = 'jti';

-- Bumped with every revocation and key change of a scope.
CREATE TABLE token_epochs (
  scope_id INTEGER PRIMARY KEY,
  epoch    INTEGER NOT NULL
);

-- Tokens consumed once for a purpose.
CREATE TABLE token_uses (
  scope_id   INTEGER NOT NULL,
  purpose    TEXT NOT NULL,
  jti        TEXT NOT NULL,
  used_at    INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (scope_id, purpose, jti)
) WITHOUT ROWID;
CREATE INDEX token_uses_expiry ON token_uses (expires_at);
"#,
  ),
  (
    3,
    r#"
-- Merge records: the full pre-merge state of each secondary merged away by linkAccounts, so
-- unlinkIdentity can restore it. They belong to the account that holds the merged identities
-- now (moved along when that account is itself merged) and are deleted with it.
CREATE TABLE account_merges (
  pk           INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id     INTEGER NOT NULL REFERENCES scopes(id),
  primary_pk   INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  oid          TEXT NOT NULL,
  secondary_id TEXT NOT NULL,
  -- JSON: linked_account_id, _id, name, udf rows with values, your_app (app_id), timestamps,
  -- __v and the identities it had. Never credentials.
  state        TEXT NOT NULL,
  -- The secondary's credentials, sealed under this record's own associated data.
  credentials  BLOB,
  policy       TEXT NOT NULL,
  merged_at    INTEGER NOT NULL,
  restored_at  INTEGER,
  restored_as  TEXT
);
CREATE INDEX account_merges_primary ON account_merges (primary_pk);

CREATE TABLE identities (
  pk             INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id       INTEGER NOT NULL REFERENCES scopes(id),
  account_pk     INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  provider       TEXT NOT NULL,
  user_id        TEXT NOT NULL,
  connection     TEXT,
  is_social      INTEGER NOT NULL DEFAULT 0,
  email          TEXT,
  -- trim + Unicode lowercase of email, for case-insensitive look-ups
  email_norm     TEXT,
  email_verified INTEGER NOT NULL DEFAULT 0,
  profile_data   TEXT,
  linked_at      INTEGER NOT NULL,
  -- The merge that brought this identity to its account, if any.
  merge_pk       INTEGER REFERENCES account_merges(pk) ON DELETE SET NULL
);
-- One identity is on at most one account in a scope, whatever races happen.
CREATE UNIQUE INDEX identities_provider_user ON identities (scope_id, provider, user_id);
CREATE INDEX identities_account ON identities (account_pk);
CREATE INDEX identities_email ON identities (scope_id, email_norm) WHERE email_norm IS NOT NULL;
CREATE INDEX identities_merge ON identities (merge_pk) WHERE merge_pk IS NOT NULL;
"#,
  ),
  (
    4,
    r#"
-- Auth sessions (Fiskil-style): single use, for one linked account (end user). The session id
-- is a bearer secret: only its SHA-256 is stored; `oid` is the public record id.
CREATE TABLE auth_sessions (
  pk             INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id       INTEGER NOT NULL REFERENCES scopes(id),
  oid            TEXT NOT NULL,
  session_hash   BLOB NOT NULL UNIQUE,
  account_pk     INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  redirect_uri   TEXT NOT NULL,
  cancel_uri     TEXT NOT NULL,
  institution_id TEXT,
  permissions    TEXT,
  arrangement_id TEXT,
  state          TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'completed', 'cancelled')),
  error_type     TEXT,
  consent_id     TEXT,
  created_at     INTEGER NOT NULL,
  expires_at     INTEGER NOT NULL,
  finished_at    INTEGER
);
CREATE INDEX auth_sessions_account ON auth_sessions (account_pk);

-- Consents outlive their account: deleting the account ends them ('account_deleted') and sets
-- account_pk to NULL, keeping the record (and end_user_id as text) for audit.
CREATE TABLE consents (
  pk                 INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id           INTEGER NOT NULL REFERENCES scopes(id),
  arrangement_id     TEXT NOT NULL,
  account_pk         INTEGER REFERENCES accounts(pk) ON DELETE SET NULL,
  end_user_id        TEXT NOT NULL,
  institution_id     TEXT NOT NULL,
  institution_name   TEXT,
  account_ids        TEXT NOT NULL,
  permissions        TEXT NOT NULL,
  duration           INTEGER NOT NULL,
  created_at         INTEGER NOT NULL,
  last_consent       INTEGER NOT NULL,
  expires_at         INTEGER NOT NULL,
  active             INTEGER NOT NULL DEFAULT 1,
  termination_reason TEXT CHECK (termination_reason IN ('revoked', 'expired', 'account_deleted')),
  terminated_at      INTEGER,
  updated_at         INTEGER NOT NULL,
  UNIQUE (scope_id, arrangement_id)
);
CREATE INDEX consents_account ON consents (account_pk);
CREATE INDEX consents_due ON consents (scope_id, expires_at) WHERE active = 1;

CREATE INDEX events_account ON events (scope_id, linked_account_id, id);
"#,
  ),
  (
    5,
    r#"
-- Lists walk a scope in insertion order: without this index SQLite sorts the whole scope for
-- every page (keyset and offset pages alike).
CREATE INDEX accounts_scope_pk ON accounts (scope_id, pk);
"#,
  ),
  (
    7,
    r#"
-- API keys of the HTTP server (src/apikeys.rs). Not read within a scope: a key's look-up
-- decides the scope. Only SHA-256 digests of the secrets are stored.
CREATE TABLE api_keys (
  pk          INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id    INTEGER NOT NULL REFERENCES scopes(id),
  client_id   TEXT NOT NULL UNIQUE,
  key_hash    BLOB NOT NULL UNIQUE,
  secret_hash BLOB NOT NULL,
  -- prefix and last 4 characters of the API key, to recognise it in a list
  key_hint    TEXT NOT NULL,
  name        TEXT,
  created_at  INTEGER NOT NULL,
  revoked_at  INTEGER
);
CREATE INDEX api_keys_scope ON api_keys (scope_id);

-- Access tokens issued for client credentials (digests only; expires_at in seconds).
CREATE TABLE api_access_tokens (
  hash       BLOB PRIMARY KEY,
  key_pk     INTEGER NOT NULL REFERENCES api_keys(pk) ON DELETE CASCADE,
  audience   TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX api_access_tokens_key ON api_access_tokens (key_pk);
CREATE INDEX api_access_tokens_expiry ON api_access_tokens (expires_at);
"#,
  ),
  (
    8,
    r#"
-- Webhooks (src/store/webhooks.rs). secret: sealed (AAD: scope + id). cursor: the last event id
-- of the scope turned into delivery records. Times in ms.
CREATE TABLE webhooks (
  pk         INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id   INTEGER NOT NULL REFERENCES scopes(id),
  id         TEXT NOT NULL UNIQUE,
  url        TEXT NOT NULL,
  events     TEXT,
  secret     BLOB NOT NULL,
  cursor     INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX webhooks_scope ON webhooks (scope_id);

-- One row per (webhook, event). ordering_key: the end user ('' for events without one); only
-- the oldest pending row of a (webhook, ordering_key) line is handed out. lease_until: an
-- attempt is in flight until then.
CREATE TABLE webhook_deliveries (
  pk              INTEGER PRIMARY KEY AUTOINCREMENT,
  webhook_pk      INTEGER NOT NULL REFERENCES webhooks(pk) ON DELETE CASCADE,
  event_id        INTEGER NOT NULL,
  event_type      TEXT NOT NULL,
  end_user_id     TEXT,
  ordering_key    TEXT NOT NULL,
  body            TEXT NOT NULL,
  state           TEXT NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  lease_until     INTEGER NOT NULL DEFAULT 0,
  last_attempt_at INTEGER,
  last_status     INTEGER,
  last_error      TEXT,
  finished_at     INTEGER,
  created_at      INTEGER NOT NULL,
  UNIQUE (webhook_pk, event_id)
);
CREATE INDEX webhook_deliveries_line ON webhook_deliveries (webhook_pk, ordering_key, event_id)
  WHERE state = 'pending';
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
  WHERE state = 'pending';
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at)
  WHERE state <> 'pending';
"#,
  ),
];

pub fn latest_version() -> i64 {
  MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Brings the schema up to date inside one immediate transaction, so two processes opening a
/// new file at once do not both migrate it.
pub fn migrate(conn: &mut Connection) -> Result<()> {
  let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
  let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
  let latest = latest_version();
  if current > latest {
    return Err(Error::storage(format!(
      "database schema version {current} is newer than this linkvault supports ({latest}); upgrade linkvault"
    )));
  }
  for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
    tx.execute_batch(sql)?;
    tx.pragma_update(None, "user_version", version)?;
  }
  tx.commit()?;
  Ok(())
}

/// For a file opened read-only: its schema must be the current one (it cannot be migrated).
pub fn check_current(conn: &Connection) -> Result<()> {
  let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
  let latest = latest_version();
  if current != latest {
    return Err(Error::storage(format!(
      "storage error: the database is read-only and its schema (version {current}) is not the one \
       this linkvault uses ({latest}); it cannot be upgraded without write access"
    )));
  }
  Ok(())
}

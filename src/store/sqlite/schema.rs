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
    6,
    r#"
-- Fiskil end-user fields on linked accounts (email_norm: trim + Unicode lowercase, for
-- case-insensitive look-ups, as identities' emails).
ALTER TABLE accounts ADD COLUMN email TEXT;
ALTER TABLE accounts ADD COLUMN email_norm TEXT;
ALTER TABLE accounts ADD COLUMN phone TEXT;
ALTER TABLE accounts ADD COLUMN abn TEXT;
CREATE INDEX accounts_email ON accounts (scope_id, email_norm) WHERE email_norm IS NOT NULL;

-- Auth0's connection_id of a linked identity.
ALTER TABLE identities ADD COLUMN connection_id TEXT;

-- Fiskil's consent fields: the institution's logo and type (from the grant) and when data was
-- last accessed under the consent (recordConsentAccess).
ALTER TABLE consents ADD COLUMN institution_logo TEXT;
ALTER TABLE consents ADD COLUMN institution_type TEXT NOT NULL DEFAULT 'banking'
  CHECK (institution_type IN ('banking', 'energy'));
ALTER TABLE consents ADD COLUMN last_accessed INTEGER;

-- Auth sessions without redirect_uri / cancel_uri (Fiskil's Link SDK flow): the URIs become
-- optional, and stay given together. SQLite cannot drop NOT NULL in place, so the table is
-- rebuilt (nothing references it).
CREATE TABLE auth_sessions_v6 (
  pk             INTEGER PRIMARY KEY AUTOINCREMENT,
  scope_id       INTEGER NOT NULL REFERENCES scopes(id),
  oid            TEXT NOT NULL,
  session_hash   BLOB NOT NULL UNIQUE,
  account_pk     INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  redirect_uri   TEXT,
  cancel_uri     TEXT,
  institution_id TEXT,
  permissions    TEXT,
  arrangement_id TEXT,
  state          TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'completed', 'cancelled')),
  error_type     TEXT,
  consent_id     TEXT,
  created_at     INTEGER NOT NULL,
  expires_at     INTEGER NOT NULL,
  finished_at    INTEGER,
  CHECK ((redirect_uri IS NULL) = (cancel_uri IS NULL))
);
INSERT INTO auth_sessions_v6 (pk, scope_id, oid, session_hash, account_pk, redirect_uri, cancel_uri,
    institution_id, permissions, arrangement_id, state, error_type, consent_id, created_at,
    expires_at, finished_at)
  SELECT pk, scope_id, oid, session_hash, account_pk, redirect_uri, cancel_uri, institution_id,
    permissions, arrangement_id, state, error_type, consent_id, created_at, expires_at, finished_at
  FROM auth_sessions;
DROP TABLE auth_sessions;
ALTER TABLE auth_sessions_v6 RENAME TO auth_sessions;
CREATE INDEX auth_sessions_account ON auth_sessions (account_pk);

-- Every merge is now restorable through the secondary's own identity (src/users.rs), which the
-- merge puts on the primary. Merges recorded before this version whose secondary had no
-- identity left nothing to unlink: give each its own identity now (when free), so that no merge
-- record is beyond reach. Own identity: `provider|user_id` ids (provider of [A-Za-z0-9._-],
-- 1–64 characters, not 'linkvault') split at the first '|'; any other id is
-- ('linkvault', id).
INSERT OR IGNORE INTO identities (scope_id, account_pk, provider, user_id, connection, is_social,
    email, email_norm, email_verified, profile_data, linked_at, merge_pk)
  SELECT m.scope_id, m.primary_pk, o.provider, o.user_id, NULL, 0, NULL, NULL, 0, NULL,
    m.merged_at, m.pk
  FROM account_merges m
  JOIN (
    SELECT pk,
      CASE WHEN split_ok THEN substr(secondary_id, 1, bar - 1) ELSE 'linkvault' END AS provider,
      CASE WHEN split_ok THEN substr(secondary_id, bar + 1) ELSE secondary_id END AS user_id
    FROM (
      SELECT pk, secondary_id, instr(secondary_id, '|') AS bar,
        ((instr(secondary_id, '|') BETWEEN 2 AND 65)
          AND length(secondary_id) > instr(secondary_id, '|')
          AND substr(secondary_id, 1, instr(secondary_id, '|') - 1) NOT GLOB '*[^A-Za-z0-9._-]*'
          AND substr(secondary_id, 1, instr(secondary_id, '|') - 1) <> 'linkvault') AS split_ok
      FROM account_merges
    )
  ) o ON o.pk = m.pk
  WHERE m.restored_at IS NULL
    AND NOT EXISTS (SELECT 1 FROM identities i WHERE i.merge_pk = m.pk);
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
  (
    9,
    r#"
-- Fewer b-trees written per mint (issue 14): 5 instead of 12.
-- * Rows expire with their family: a family's expires_at covers each of its tokens (plus the
--   revocation margin) and refresh tokens, so pruning deletes families (their rows go by
--   cascade) and the per-token expiry indexes are gone. A family kept alive by refreshing
--   drops its own expired rows when it is refreshed (src/domain/tokens/families.rs). Families
--   have no expiry index either: pruning sweeps them in pk order (src/store/sqlite/tokens.rs).
-- * session_tokens is keyed by (family_pk, jti): the family index is the key itself, and a
--   token is found by its family or, for revokeSessionToken, through its account's families
--   (the jti and account of an authenticated token), so neither a jti nor an account index is
--   needed; the account column goes (tokens reach their account through the family).
-- * refresh_tokens_jti and refresh_tokens_expiry go: a token's refresh tokens are found
--   through its family.
-- * token_families loses AUTOINCREMENT (no sqlite_sequence write per mint): a family's rows
--   are deleted with it, so a reused pk can never meet a stale row.
-- Tables are rebuilt (SQLite cannot change a primary key in place): renamed, copied, dropped.
ALTER TABLE refresh_tokens RENAME TO refresh_tokens_v8;
ALTER TABLE session_tokens RENAME TO session_tokens_v8;
ALTER TABLE token_families RENAME TO token_families_v8;
DROP INDEX token_families_account;
DROP INDEX token_families_expiry;
DROP INDEX session_tokens_account;
DROP INDEX session_tokens_family;
DROP INDEX session_tokens_expiry;
DROP INDEX refresh_tokens_family;
DROP INDEX refresh_tokens_jti;
DROP INDEX refresh_tokens_expiry;

CREATE TABLE token_families (
  pk         INTEGER PRIMARY KEY,
  scope_id   INTEGER NOT NULL REFERENCES scopes(id),
  account_pk INTEGER NOT NULL REFERENCES accounts(pk) ON DELETE CASCADE,
  scopes     TEXT,
  ttl        INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE INDEX token_families_account ON token_families (account_pk);

CREATE TABLE session_tokens (
  family_pk  INTEGER NOT NULL REFERENCES token_families(pk) ON DELETE CASCADE,
  jti        TEXT NOT NULL,
  kid        TEXT NOT NULL,
  iat        INTEGER NOT NULL,
  exp        INTEGER NOT NULL,
  revoked_at INTEGER,
  PRIMARY KEY (family_pk, jti)
) WITHOUT ROWID;

CREATE TABLE refresh_tokens (
  hash       BLOB PRIMARY KEY,
  family_pk  INTEGER NOT NULL REFERENCES token_families(pk) ON DELETE CASCADE,
  jti        TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at    INTEGER,
  revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_pk);

INSERT INTO token_families (pk, scope_id, account_pk, scopes, ttl, created_at, expires_at, revoked_at)
  SELECT pk, scope_id, account_pk, scopes, ttl, created_at, expires_at, revoked_at
  FROM token_families_v8;
INSERT INTO session_tokens (family_pk, jti, kid, iat, exp, revoked_at)
  SELECT family_pk, jti, kid, iat, exp, revoked_at FROM session_tokens_v8;
INSERT INTO refresh_tokens (hash, family_pk, jti, expires_at, used_at, revoked_at)
  SELECT hash, family_pk, jti, expires_at, used_at, revoked_at FROM refresh_tokens_v8;
DROP TABLE refresh_tokens_v8;
DROP TABLE session_tokens_v8;
DROP TABLE token_families_v8;
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

/// The SQL of migration `version` (tests rebuild files of earlier versions with it).
#[cfg(test)]
pub(crate) fn migration_sql(version: i64) -> &'static str {
  MIGRATIONS
    .iter()
    .find(|m| m.0 == version)
    .map(|m| m.1)
    .unwrap_or("")
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

#[cfg(test)]
mod tests {
  use super::*;

  /// Migration 6 on a file of version 5: accounts, identities and sessions keep their data; an
  /// unrestored merge record without identities (left by an earlier linkvault) gets its
  /// secondary's own identity, so unlink can reach it.
  #[test]
  fn migration_6_keeps_data_and_reaches_old_merge_records() {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 <= 5) {
      conn.execute_batch(sql).unwrap();
      conn.pragma_update(None, "user_version", version).unwrap();
    }
    conn
      .execute_batch(
        "INSERT INTO scopes (id, org_id, environment) VALUES (1, 'o', 'test');
         INSERT INTO accounts (pk, scope_id, account_id, oid, created_at, updated_at)
           VALUES (1, 1, 'A', 'oa', 0, 0);
         INSERT INTO auth_sessions (scope_id, oid, session_hash, account_pk, redirect_uri, cancel_uri,
           created_at, expires_at) VALUES (1, 's', x'00', 1, 'https://a/ok', 'https://a/no', 0, 1);
         INSERT INTO account_merges (pk, scope_id, primary_pk, oid, secondary_id, state, policy, merged_at)
           VALUES (1, 1, 1, 'm1', 'B', '{}', 'primary_wins', 5),
                  (2, 1, 1, 'm2', 'github|9', '{}', 'primary_wins', 6),
                  (3, 1, 1, 'm3', 'linkvault|x', '{}', 'primary_wins', 7),
                  (4, 1, 1, 'm4', 'C', '{}', 'primary_wins', 8);
         INSERT INTO identities (scope_id, account_pk, provider, user_id, linked_at, merge_pk)
           VALUES (1, 1, 'p', 'c', 8, 4);",
      )
      .unwrap();
    migrate(&mut conn).unwrap();
    let rows: Vec<(String, String, i64, i64)> = conn
      .prepare("SELECT provider, user_id, merge_pk, linked_at FROM identities ORDER BY merge_pk")
      .unwrap()
      .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
      .unwrap()
      .collect::<rusqlite::Result<_>>()
      .unwrap();
    let expect = |p: &str, u: &str, m: i64, t: i64| (p.to_string(), u.to_string(), m, t);
    assert_eq!(
      rows,
      vec![
        expect("linkvault", "B", 1, 5),
        expect("github", "9", 2, 6),
        expect("linkvault", "linkvault|x", 3, 7),
        expect("p", "c", 4, 8),
      ]
    );
    // Sessions survived the rebuild; URIs are now optional but given together.
    let uri: String = conn
      .query_row("SELECT redirect_uri FROM auth_sessions", [], |r| r.get(0))
      .unwrap();
    assert_eq!(uri, "https://a/ok");
    assert!(conn
      .execute(
        "INSERT INTO auth_sessions (scope_id, oid, session_hash, account_pk, redirect_uri,
           created_at, expires_at) VALUES (1, 't', x'01', 1, 'https://a/ok', 0, 1)",
        [],
      )
      .is_err());
    conn
      .execute(
        "INSERT INTO auth_sessions (scope_id, oid, session_hash, account_pk, created_at, expires_at)
         VALUES (1, 't', x'01', 1, 0, 1)",
        [],
      )
      .unwrap();
    let version: i64 = conn
      .query_row("PRAGMA user_version", [], |r| r.get(0))
      .unwrap();
    assert_eq!(version, latest_version());
  }
}

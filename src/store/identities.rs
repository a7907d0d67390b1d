//! SQL for identities, merges and unlinks. Each function runs inside one job of the engine (one
//! transaction): a function returning `Err` leaves nothing behind.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::accounts::{self, AccountRow, ROW_COLUMNS};
use super::sqlite::{events, SqliteTx};
use super::{IdentityStore, Pending, Scope, SqliteStore};
use crate::accounts::{Account, UdfRow};
use crate::clock::now_ms;
use crate::crypto::{self, Sealer};
use crate::domain::events::types;
use crate::error::{Error, ErrorKind, Result};
use crate::identities::{
  self, Holder, Identity, IdentityInput, LinkAction, LinkSuggestion, LinkTarget, OwnIdentityPlan,
  OwnRow, UdfPolicy,
};
use crate::users;

const ID_COLUMNS: &str =
  "i.provider, i.user_id, i.connection, i.is_social, i.email, i.email_verified, i.profile_data, i.linked_at,
   i.connection_id";

/// Reads the `ID_COLUMNS` starting at column `at`.
fn read_identity(r: &Row<'_>, at: usize) -> rusqlite::Result<Identity> {
  let profile: Option<String> = r.get(at + 6)?;
  Ok(Identity {
    provider: r.get(at)?,
    user_id: r.get(at + 1)?,
    connection: r.get(at + 2)?,
    is_social: r.get(at + 3)?,
    email: r.get(at + 4)?,
    email_verified: r.get(at + 5)?,
    profile_data: profile.and_then(|p| match serde_json::from_str(&p) {
      Ok(Value::Object(m)) => Some(m),
      _ => None,
    }),
    linked_at: r.get(at + 7)?,
    connection_id: r.get(at + 8)?,
  })
}

/// The identities of one account, in the order they joined it.
pub(super) fn load(conn: &Connection, account_pk: i64) -> Result<Vec<Identity>> {
  let sql = format!(
    "SELECT {ID_COLUMNS} FROM identities i WHERE i.account_pk = ?1 ORDER BY i.linked_at, i.pk"
  );
  let mut stmt = conn.prepare_cached(&sql)?;
  let rows = stmt.query_map([account_pk], |r| read_identity(r, 0))?;
  Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The identities of many accounts in one query (one cached statement whatever the count).
pub(super) fn load_many(conn: &Connection, pks: &[i64]) -> Result<HashMap<i64, Vec<Identity>>> {
  let mut out: HashMap<i64, Vec<Identity>> = HashMap::new();
  match pks {
    [] => return Ok(out),
    [one] => {
      out.insert(*one, load(conn, *one)?);
      return Ok(out);
    }
    _ => {}
  }
  let sql = format!(
    "SELECT i.account_pk, {ID_COLUMNS} FROM identities i
     WHERE i.account_pk IN (SELECT value FROM json_each(?1))
     ORDER BY i.account_pk, i.linked_at, i.pk"
  );
  let list = serde_json::to_string(pks).map_err(|e| Error::storage(e.to_string()))?;
  let mut stmt = conn.prepare_cached(&sql)?;
  let rows = stmt.query_map([list], |r| Ok((r.get::<_, i64>(0)?, read_identity(r, 1)?)))?;
  for row in rows {
    let (pk, identity) = row?;
    out.entry(pk).or_default().push(identity);
  }
  Ok(out)
}

/// An identity row as found by `(provider, user_id)`.
struct Found {
  pk: i64,
  account_pk: i64,
  merge_pk: Option<i64>,
  identity: Identity,
}

fn find(conn: &Connection, scope: &Scope, provider: &str, user_id: &str) -> Result<Option<Found>> {
  let sql = format!(
    "SELECT i.pk, i.account_pk, i.merge_pk, {ID_COLUMNS} FROM identities i
     WHERE i.scope_id = ?1 AND i.provider = ?2 AND i.user_id = ?3"
  );
  Ok(
    conn
      .prepare_cached(&sql)?
      .query_row(params![scope.id, provider, user_id], |r| {
        Ok(Found {
          pk: r.get(0)?,
          account_pk: r.get(1)?,
          merge_pk: r.get(2)?,
          identity: read_identity(r, 3)?,
        })
      })
      .optional()?,
  )
}

fn profile_text(identity: &Identity) -> Option<String> {
  identity
    .profile_data
    .as_ref()
    .map(|p| Value::Object(p.clone()).to_string())
}

fn insert_identity(
  conn: &Connection,
  scope: &Scope,
  account_pk: i64,
  identity: &Identity,
  merge_pk: Option<i64>,
) -> rusqlite::Result<usize> {
  conn
    .prepare_cached(
      "INSERT INTO identities (scope_id, account_pk, provider, user_id, connection, is_social, email,
         email_norm, email_verified, profile_data, linked_at, merge_pk, connection_id)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
      scope.id,
      account_pk,
      identity.provider,
      identity.user_id,
      identity.connection,
      identity.is_social,
      identity.email,
      identity.email.as_deref().map(identities::normalize_email),
      identity.email_verified,
      profile_text(identity),
      identity.linked_at,
      merge_pk,
      identity.connection_id,
    ])
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
  matches!(e, rusqlite::Error::SqliteFailure(f, _)
    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
      || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn already_linked(provider: &str, user_id: &str) -> Error {
  Error::new(
    ErrorKind::IdentityAlreadyLinked,
    format!("identity {provider}|{user_id} is already linked to another account"),
  )
}

/// Marks an account as changed (its identities are part of what every read returns).
fn touch(conn: &Connection, pk: i64, now: i64) -> Result<()> {
  conn
    .prepare_cached("UPDATE accounts SET version = version + 1, updated_at = ?2 WHERE pk = ?1")?
    .execute(params![pk, now])?;
  Ok(())
}

fn find_account(conn: &Connection, scope: &Scope, id: &str) -> Result<AccountRow> {
  accounts::find_row(conn, scope, id)?.ok_or_else(|| accounts::not_found(scope, id))
}

/// Rewrites a stored identity's profile fields.
fn update_identity(conn: &Connection, pk: i64, updated: &Identity) -> Result<()> {
  conn
    .prepare_cached(
      "UPDATE identities SET connection = ?2, is_social = ?3, email = ?4, email_norm = ?5,
         email_verified = ?6, profile_data = ?7, connection_id = ?8
       WHERE pk = ?1",
    )?
    .execute(params![
      pk,
      updated.connection,
      updated.is_social,
      updated.email,
      updated.email.as_deref().map(identities::normalize_email),
      updated.email_verified,
      profile_text(updated),
      updated.connection_id,
    ])?;
  Ok(())
}

/// Who holds `(provider, user_id)`, seen from the account `pk`.
fn holder(found: &Option<Found>, pk: i64) -> Holder {
  match found {
    None => Holder::Nobody,
    Some(f) if f.account_pk == pk => Holder::ThisAccount,
    Some(_) => Holder::Another,
  }
}

/// `linkIdentity`: attaches the identity, refreshes it when the account holds it already, or,
/// when it is the own identity of another existing account, merges that account in (Auth0's
/// link of an existing user; `identities::link_action` decides). The UNIQUE index on (scope,
/// provider, user_id) still guards the insert.
pub(super) fn link(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  account_id: &str,
  input: IdentityInput,
  now: i64,
) -> Result<Vec<Identity>> {
  let account = find_account(conn, scope, account_id)?;
  let found = find(conn, scope, &input.provider, &input.user_id)?;
  let owner = users::account_of_identity(&input.provider, &input.user_id);
  let owner_exists = owner != account_id && exists(conn, scope, &owner)?;
  let action = identities::link_action(
    account_id,
    &input.provider,
    &input.user_id,
    holder(&found, account.pk),
    owner_exists,
  )?;
  let changed = match (action, found) {
    (LinkAction::Merge(secondary_id), _) => {
      let secondary = find_account(conn, scope, &secondary_id)?;
      merge_rows(
        conn,
        sealer,
        scope,
        &account,
        &secondary,
        UdfPolicy::default(),
        Some(&input),
        now,
      )?;
      return load(conn, account.pk);
    }
    (LinkAction::Refresh, Some(found)) => {
      let updated = input.apply(Some(&found.identity), now);
      if updated != found.identity {
        update_identity(conn, found.pk, &updated)?;
      }
      updated != found.identity
    }
    _ => {
      match insert_identity(conn, scope, account.pk, &input.apply(None, now), None) {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
          return Err(already_linked(&input.provider, &input.user_id))
        }
        Err(e) => return Err(e.into()),
      }
      true
    }
  };
  if changed {
    touch(conn, account.pk, now)?;
    events::append(
      conn,
      scope.id,
      types::IDENTITY_LINKED,
      Some(account_id),
      &json!({ "provider": input.provider, "user_id": input.user_id }),
      now,
    )?;
  }
  load(conn, account.pk)
}

/// A secondary's pre-merge state, as kept in its merge record (credentials apart, sealed).
#[derive(Serialize, Deserialize)]
struct MergedState {
  linked_account_id: String,
  #[serde(rename = "_id")]
  oid: String,
  name: Option<String>,
  udf: Vec<MergedUdf>,
  has_app: bool,
  app_id: Option<String>,
  created_at: i64,
  updated_at: i64,
  #[serde(rename = "__v")]
  version: i64,
  identities: Vec<MergedIdentity>,
  // Added in schema 6; absent from older records.
  #[serde(default, skip_serializing_if = "Option::is_none")]
  email: Option<String>,
  #[serde(default, skip_serializing_if = "Option::is_none")]
  phone: Option<String>,
  #[serde(default, skip_serializing_if = "Option::is_none")]
  abn: Option<String>,
  /// Merge records the secondary held (earlier merges into it), by pk: a whole restore takes
  /// them back.
  #[serde(default)]
  merges: Vec<i64>,
  /// The secondary's consents (arrangement ids), which moved to the primary.
  #[serde(default)]
  consents: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct MergedUdf {
  key: String,
  /// Canonical JSON text of the value.
  value: String,
  #[serde(rename = "_id")]
  oid: String,
  created_at: i64,
  updated_at: i64,
}

#[derive(Serialize, Deserialize)]
struct MergedIdentity {
  provider: String,
  user_id: String,
  connection: Option<String>,
  #[serde(rename = "isSocial")]
  is_social: bool,
  email: Option<String>,
  email_verified: bool,
  #[serde(rename = "profileData")]
  profile_data: Option<Map<String, Value>>,
  #[serde(rename = "linkedAt")]
  linked_at: i64,
  #[serde(default, skip_serializing_if = "Option::is_none")]
  connection_id: Option<String>,
}

impl From<&Identity> for MergedIdentity {
  fn from(i: &Identity) -> Self {
    MergedIdentity {
      provider: i.provider.clone(),
      user_id: i.user_id.clone(),
      connection: i.connection.clone(),
      is_social: i.is_social,
      email: i.email.clone(),
      email_verified: i.email_verified,
      profile_data: i.profile_data.clone(),
      linked_at: i.linked_at,
      connection_id: i.connection_id.clone(),
    }
  }
}

/// Binds a merge record's sealed credentials to that record.
pub(super) fn merge_aad(scope: &Scope, merge_oid: &str) -> Vec<u8> {
  crate::domain::keys::merge_aad(scope.id, merge_oid)
}

/// Opens credentials sealed under `from_aad` and seals them again under `to_aad`. The plaintext
/// exists only in memory, only for this call.
fn reseal(sealer: &Sealer, sealed: &[u8], from_aad: &[u8], to_aad: &[u8]) -> Result<Vec<u8>> {
  let plain = zeroize::Zeroizing::new(sealer.open(sealed, from_aad)?);
  sealer.seal(&plain, to_aad)
}

/// INTEGRATION POINT for `{ link_with }` (issue 3, session tokens): resolves the secondary
/// account a session token was minted for, inside the merge transaction.
///
/// TODO(tokens): the tokens module must provide, for a token of this scope:
///   1. verify (signature, not expired, not revoked, minted for this org/environment; anything
///      else → `INVALID_TOKEN` / `TOKEN_EXPIRED`), returning its `linked_account_id` and `iat`;
///   2. its `iat` no older than `identities::LINK_WITH_MAX_AGE_MS` (10 minutes) → else
///      `INVALID_TOKEN`;
///   3. consume-once: mark it used for linking in this same transaction, so a second use
///      fails with `TOKEN_REVOKED` (a rolled-back merge leaves it unused).
///
/// Until then every `link_with` is refused.
pub(crate) fn resolve_link_with(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  skew: i64,
  now: i64,
) -> Result<String> {
  // Verified against this scope, revocation included, and consumed for linking in this same
  // transaction: if the merge fails, the savepoint rolls the consumption back too.
  let claims = crate::domain::tokens::revocation::consume_once(
    &mut SqliteTx::new(conn),
    sealer,
    scope,
    token,
    LINK_WITH_PURPOSE,
    None,
    skew,
    now,
  )?;
  if now / 1000 - claims.iat > LINK_WITH_MAX_AGE_SECS {
    return Err(Error::new(
      ErrorKind::InvalidToken,
      "link_with token is more than 10 minutes old; mint a fresh one for the secondary account",
    ));
  }
  Ok(claims.linked_account_id)
}

const LINK_WITH_PURPOSE: &str = "link_with";
/// A `link_with` token proves recent control of the secondary account: at most 10 minutes old.
const LINK_WITH_MAX_AGE_SECS: i64 = 600;

/// INTEGRATION POINT for what else belongs to a merged secondary (issues 3 and 5). Runs inside
/// the merge transaction after the identities moved and BEFORE the secondary's row is deleted
/// (rows referencing it with ON DELETE CASCADE disappear with it).
fn on_secondary_merged(
  conn: &Connection,
  scope: &Scope,
  secondary: &AccountRow,
  primary: &AccountRow,
  now: i64,
) -> Result<()> {
  // The secondary's session tokens stop verifying once the merge commits.
  crate::domain::tokens::revocation::revoke_account(
    &mut SqliteTx::new(conn),
    scope,
    secondary.pk,
    &secondary.account_id,
    "account_merged",
    now,
  )?;
  // The secondary's consents and pending auth sessions now belong to the primary.
  crate::domain::consents::move_consents(
    &mut SqliteTx::new(conn),
    scope,
    secondary.pk,
    primary.pk,
    now,
  )?;
  Ok(())
}

fn write_udf(conn: &Connection, pk: i64, udf: &[UdfRow]) -> Result<()> {
  conn
    .prepare_cached("DELETE FROM udf WHERE account_pk = ?1")?
    .execute([pk])?;
  for (pos, row) in udf.iter().enumerate() {
    accounts::insert_udf(conn, pk, pos as i64, row)?;
  }
  Ok(())
}

/// `linkAccounts`: every identity of the secondary moves to the primary, UDF merge by policy,
/// the secondary's pre-merge state goes into a merge record and the secondary is deleted.
#[allow(clippy::too_many_arguments)]
pub(super) fn merge(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  primary_id: &str,
  target: &LinkTarget,
  policy: UdfPolicy,
  token_skew: i64,
  now: i64,
) -> Result<Account> {
  let primary = find_account(conn, scope, primary_id)?;
  let (secondary_id, field) = match target {
    LinkTarget::Account(id) => (id.clone(), "secondary_id"),
    LinkTarget::Token(token) => (
      resolve_link_with(conn, sealer, scope, token, token_skew, now)?,
      "link_with",
    ),
  };
  if secondary_id == primary_id {
    return Err(Error::validation(
      field,
      "an account cannot be linked to itself",
    ));
  }
  let secondary = find_account(conn, scope, &secondary_id)?;
  merge_rows(conn, sealer, scope, &primary, &secondary, policy, None, now)?;
  accounts::get(conn, scope, primary_id)
}

fn strings(conn: &Connection, sql: &str, pk: i64) -> Result<Vec<String>> {
  let mut stmt = conn.prepare_cached(sql)?;
  let rows = stmt.query_map([pk], |r| r.get(0))?;
  Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Merges `secondary` into `primary` (both rows of `scope`). `own_input`: the `linkIdentity`
/// body when the merge comes from linking the secondary's own identity; its profile fields go on
/// that identity.
#[allow(clippy::too_many_arguments)]
fn merge_rows(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  primary: &AccountRow,
  secondary: &AccountRow,
  policy: UdfPolicy,
  own_input: Option<&IdentityInput>,
  now: i64,
) -> Result<()> {
  let secondary_udf = accounts::load_udf(conn, secondary.pk)?;
  let secondary_identities = load(conn, secondary.pk)?;
  let (own_provider, own_user_id) = users::own_identity(&secondary.account_id);
  let own_found = find(conn, scope, &own_provider, &own_user_id)?;
  let own_plan =
    identities::own_identity_plan(&secondary.account_id, holder(&own_found, secondary.pk))?;

  // The merge record: the secondary's whole state, credentials re-sealed to the record.
  let merge_oid = crypto::object_id(now)?;
  let sealed = secondary
    .credentials
    .as_deref()
    .map(|c| {
      reseal(
        sealer,
        c,
        &accounts::credentials_aad(scope, &secondary.account_id),
        &merge_aad(scope, &merge_oid),
      )
    })
    .transpose()?;
  let held_merges: Vec<i64> = conn
    .prepare_cached("SELECT pk FROM account_merges WHERE primary_pk = ?1 ORDER BY pk")?
    .query_map([secondary.pk], |r| r.get(0))?
    .collect::<rusqlite::Result<_>>()?;
  let consents = strings(
    conn,
    "SELECT arrangement_id FROM consents WHERE account_pk = ?1 ORDER BY pk",
    secondary.pk,
  )?;
  let state = MergedState {
    linked_account_id: secondary.account_id.clone(),
    oid: secondary.oid.clone(),
    name: secondary.name.clone(),
    udf: secondary_udf
      .iter()
      .map(|u| MergedUdf {
        key: u.key.clone(),
        value: u.json.clone(),
        oid: u.oid.clone(),
        created_at: u.created_at,
        updated_at: u.updated_at,
      })
      .collect(),
    has_app: secondary.has_app,
    app_id: secondary.app_id.clone(),
    created_at: secondary.created_at,
    updated_at: secondary.updated_at,
    version: secondary.version,
    identities: secondary_identities
      .iter()
      .map(MergedIdentity::from)
      .collect(),
    email: secondary.end_user.email.clone(),
    phone: secondary.end_user.phone.clone(),
    abn: secondary.end_user.abn.clone(),
    merges: held_merges,
    consents,
  };
  let state_text =
    serde_json::to_string(&state).map_err(|e| Error::storage(format!("merge record: {e}")))?;
  conn
    .prepare_cached(
      "INSERT INTO account_merges (scope_id, primary_pk, oid, secondary_id, state, credentials, policy, merged_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
      scope.id,
      primary.pk,
      merge_oid,
      secondary.account_id,
      state_text,
      sealed,
      policy.as_str(),
      now
    ])?;
  let merge_pk = conn.last_insert_rowid();
  // Records of earlier merges into the secondary follow their identities to the primary.
  conn
    .prepare_cached("UPDATE account_merges SET primary_pk = ?2 WHERE primary_pk = ?1")?
    .execute(params![secondary.pk, primary.pk])?;
  // The secondary's own identities remember this merge; those it got by an earlier merge keep
  // theirs. Then they all move.
  conn
    .prepare_cached(
      "UPDATE identities SET merge_pk = ?2 WHERE account_pk = ?1 AND merge_pk IS NULL",
    )?
    .execute(params![secondary.pk, merge_pk])?;
  let mut moved = conn
    .prepare_cached("UPDATE identities SET account_pk = ?2, linked_at = ?3 WHERE account_pk = ?1")?
    .execute(params![secondary.pk, primary.pk, now])?;
  // The secondary's own identity joins the primary too (as Auth0 lists the linked user's
  // identity), and unlinking it undoes this merge.
  let own_now = |old: Option<&Identity>| -> Identity {
    let bare = IdentityInput {
      provider: own_provider.clone(),
      user_id: own_user_id.clone(),
      connection: crate::accounts::Patch::Keep,
      connection_id: crate::accounts::Patch::Keep,
      is_social: None,
      email: crate::accounts::Patch::Keep,
      email_verified: None,
      profile_data: crate::accounts::Patch::Keep,
    };
    own_input.unwrap_or(&bare).apply(old, now)
  };
  match (own_plan, own_found) {
    (OwnIdentityPlan::AddToPrimary, _) => {
      insert_identity(conn, scope, primary.pk, &own_now(None), Some(merge_pk))?;
      moved += 1;
    }
    (OwnIdentityPlan::MovesWithSecondary, Some(found)) if own_input.is_some() => {
      update_identity(conn, found.pk, &own_now(Some(&found.identity)))?;
    }
    (OwnIdentityPlan::MovesWithSecondary, _) => {}
  }

  on_secondary_merged(conn, scope, secondary, primary, now)?;

  let mut udf = accounts::load_udf(conn, primary.pk)?;
  let changed_keys = identities::merge_udf_by_policy(&mut udf, &secondary_udf, policy, now)?;
  if !changed_keys.is_empty() {
    write_udf(conn, primary.pk, &udf)?;
  }
  conn
    .prepare_cached("DELETE FROM accounts WHERE pk = ?1")?
    .execute([secondary.pk])?;
  touch(conn, primary.pk, now)?;
  events::append(
    conn,
    scope.id,
    types::ACCOUNTS_MERGED,
    Some(&primary.account_id),
    &json!({
      "secondary_id": secondary.account_id,
      "identities_moved": moved,
      "udf_policy": policy.as_str(),
      "udf_changed": changed_keys,
      "merge_id": merge_oid,
    }),
    now,
  )?;
  Ok(())
}

fn exists(conn: &Connection, scope: &Scope, id: &str) -> Result<bool> {
  Ok(
    conn
      .prepare_cached("SELECT 1 FROM accounts WHERE scope_id = ?1 AND account_id = ?2")?
      .query_row(params![scope.id, id], |_| Ok(()))
      .optional()?
      .is_some(),
  )
}

/// An unrestored merge record: (pk, oid, state, sealed credentials).
type Record = (i64, String, MergedState, Option<Vec<u8>>);

fn unrestored_record(conn: &Connection, merge_pk: Option<i64>) -> Result<Option<Record>> {
  let Some(mpk) = merge_pk else {
    return Ok(None);
  };
  conn
    .prepare_cached(
      "SELECT oid, state, credentials FROM account_merges WHERE pk = ?1 AND restored_at IS NULL",
    )?
    .query_row([mpk], |r| {
      Ok((
        r.get::<_, String>(0)?,
        r.get::<_, String>(1)?,
        r.get::<_, Option<Vec<u8>>>(2)?,
      ))
    })
    .optional()?
    .map(|(oid, text, creds)| {
      serde_json::from_str::<MergedState>(&text)
        .map(|state| (mpk, oid, state, creds))
        .map_err(|e| Error::storage(format!("merge record is unreadable: {e}")))
    })
    .transpose()
}

/// Moves one identity row to `to_pk`, as a linked identity of that account.
fn move_identity(conn: &Connection, pk: i64, to_pk: i64, linked_at: i64) -> Result<()> {
  conn
    .prepare_cached(
      "UPDATE identities SET account_pk = ?2, merge_pk = NULL, linked_at = ?3 WHERE pk = ?1",
    )?
    .execute(params![pk, to_pk, linked_at])?;
  Ok(())
}

/// `unlinkIdentity`: the identity leaves as a standalone account. If it arrived by a merge whose
/// record was not restored yet, that account comes back from the record (`identities::
/// restore_plan`: its original id when free; the whole merge undone when the identity is the
/// merged account's own); otherwise the account whose own identity it is is created.
pub(super) fn unlink(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  account_id: &str,
  provider: &str,
  user_id: &str,
  now: i64,
) -> Result<Vec<Identity>> {
  let account = find_account(conn, scope, account_id)?;
  if users::is_own(account_id, provider, user_id) {
    identities::standalone_id(account_id, provider, user_id)?;
  }
  let found = find(conn, scope, provider, user_id)?
    .filter(|f| f.account_pk == account.pk)
    .ok_or_else(|| {
      Error::not_found(format!(
        "identity {provider}|{user_id} is not linked to linked account {account_id}"
      ))
    })?;
  let record = unrestored_record(conn, found.merge_pk)?;
  let restored = match record {
    None => {
      let target = identities::standalone_id(account_id, provider, user_id)?;
      if exists(conn, scope, &target)? {
        return Err(identities::taken(&target, None));
      }
      conn
        .prepare_cached(
          "INSERT INTO accounts (scope_id, account_id, oid, name, has_app, app_id, credentials, created_at, updated_at, version)
           VALUES (?1, ?2, ?3, NULL, 0, NULL, NULL, ?4, ?4, 0)",
        )?
        .execute(params![scope.id, target, crypto::object_id(now)?, now])?;
      move_identity(conn, found.pk, conn.last_insert_rowid(), now)?;
      (target, 0, None)
    }
    Some(record) => {
      let (target, version) = restore(conn, sealer, scope, &account, &found, &record, now)?;
      (target, version, Some(record.1))
    }
  };
  let (target, version, merge_oid) = restored;
  touch(conn, account.pk, now)?;
  events::append(
    conn,
    scope.id,
    types::IDENTITY_UNLINKED,
    Some(account_id),
    &json!({ "provider": provider, "user_id": user_id, "linked_account_id": target }),
    now,
  )?;
  events::append(
    conn,
    scope.id,
    types::ACCOUNT_CREATED,
    Some(&target),
    &json!({
      "__v": version,
      "unlinked_from": account_id,
      "restored_from_merge": merge_oid,
    }),
    now,
  )?;
  load(conn, account.pk)
}

/// Restores the account of merge record `record` as `unlink` unlinks `found` from `primary`;
/// returns the restored account's id and `__v`.
fn restore(
  conn: &Connection,
  sealer: &Sealer,
  scope: &Scope,
  primary: &AccountRow,
  found: &Found,
  record: &Record,
  now: i64,
) -> Result<(String, i64)> {
  let (mpk, merge_oid, state, creds) = (record.0, &record.1, &record.2, record.3.as_deref());
  let held: Vec<(String, String)> = state
    .identities
    .iter()
    .map(|i| (i.provider.clone(), i.user_id.clone()))
    .collect();
  let (provider, user_id) = (&found.identity.provider, &found.identity.user_id);
  let plan = identities::restore_plan(&state.linked_account_id, &held, provider, user_id, |id| {
    Ok(!exists(conn, scope, id)?)
  })?;
  let sealed = creds
    .map(|c| {
      reseal(
        sealer,
        c,
        &merge_aad(scope, merge_oid),
        &accounts::credentials_aad(scope, &plan.id),
      )
    })
    .transpose()?;
  let udf = state
    .udf
    .iter()
    .map(|u| UdfRow {
      key: u.key.clone(),
      value: serde_json::from_str(&u.value).unwrap_or(Value::Null),
      json: u.value.clone(),
      oid: u.oid.clone(),
      created_at: u.created_at,
      updated_at: u.updated_at,
    })
    .collect::<Vec<_>>();
  // Under its original id the account keeps its `_id`, `createdAt` and a `__v` one past the
  // merged one (so an `ifVersion` writer notices); under another id it is a new record.
  let (oid, created_at, version) = if plan.original {
    (state.oid.clone(), state.created_at, state.version + 1)
  } else {
    (crypto::object_id(now)?, now, 0)
  };
  conn
    .prepare_cached(
      "INSERT INTO accounts (scope_id, account_id, oid, name, has_app, app_id, credentials, created_at,
         updated_at, version, email, email_norm, phone, abn)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
      scope.id,
      plan.id,
      oid,
      state.name,
      state.has_app,
      state.app_id,
      sealed,
      created_at,
      now,
      version,
      state.email,
      state.email.as_deref().map(identities::normalize_email),
      state.phone,
      state.abn
    ])?;
  let new_pk = conn.last_insert_rowid();
  write_udf(conn, new_pk, &udf)?;

  // Identities go back with their original `linkedAt`.
  let linked_at = |p: &str, u: &str| {
    state
      .identities
      .iter()
      .find(|i| i.provider == p && i.user_id == u)
      .map_or(now, |i| i.linked_at)
  };
  let (own_provider, own_user_id) = users::own_identity(&state.linked_account_id);
  let rows_of = |merge_pk: i64| -> Result<Vec<(i64, String, String)>> {
    let mut stmt = conn.prepare_cached(
      "SELECT pk, provider, user_id FROM identities WHERE account_pk = ?1 AND merge_pk = ?2 ORDER BY pk",
    )?;
    let rows = stmt.query_map(params![primary.pk, merge_pk], |r| {
      Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
  };
  let is_own_row = |p: &str, u: &str| p == own_provider && u == own_user_id;
  if plan.whole {
    for (pk, p, u) in rows_of(mpk)? {
      if is_own_row(&p, &u) && plan.own_row == OwnRow::Drop {
        conn
          .prepare_cached("DELETE FROM identities WHERE pk = ?1")?
          .execute([pk])?;
      } else {
        move_identity(conn, pk, new_pk, linked_at(&p, &u))?;
      }
    }
    // Merges the secondary had absorbed go back with it, with their identities.
    for held_merge in &state.merges {
      let moved = conn
        .prepare_cached(
          "UPDATE account_merges SET primary_pk = ?3
           WHERE pk = ?1 AND primary_pk = ?2 AND restored_at IS NULL",
        )?
        .execute(params![held_merge, primary.pk, new_pk])?;
      if moved == 1 {
        for (pk, p, u) in rows_of(*held_merge)? {
          conn
            .prepare_cached("UPDATE identities SET account_pk = ?2, linked_at = ?3 WHERE pk = ?1")?
            .execute(params![pk, new_pk, linked_at(&p, &u)])?;
        }
      }
    }
  } else {
    move_identity(conn, found.pk, new_pk, linked_at(provider, user_id))?;
    if plan.own_row != OwnRow::Keep {
      for (pk, p, u) in rows_of(mpk)? {
        if !is_own_row(&p, &u) {
          continue;
        }
        if plan.own_row == OwnRow::Drop {
          conn
            .prepare_cached("DELETE FROM identities WHERE pk = ?1")?
            .execute([pk])?;
        } else {
          move_identity(conn, pk, new_pk, linked_at(&p, &u))?;
        }
      }
    }
  }
  // The secondary's consents still on the primary follow it back.
  crate::domain::consents::move_listed_consents(
    &mut SqliteTx::new(conn),
    scope,
    &state.consents,
    primary.pk,
    new_pk,
    "account_restored",
    now,
  )?;
  conn
    .prepare_cached("UPDATE account_merges SET restored_at = ?2, restored_as = ?3 WHERE pk = ?1")?
    .execute(params![mpk, now, plan.id])?;
  Ok((plan.id, version))
}

/// `getLinkedAccountsByEmail` / `getUsersByEmail`: accounts whose end-user email or one of whose
/// identities' emails matches, normalized.
pub(super) fn by_email(conn: &Connection, scope: &Scope, email_norm: &str) -> Result<Vec<Account>> {
  let sql = format!(
    "SELECT {ROW_COLUMNS} FROM accounts a
     WHERE a.pk IN (SELECT i.account_pk FROM identities i WHERE i.scope_id = ? AND i.email_norm = ?
                    UNION SELECT e.pk FROM accounts e WHERE e.scope_id = ? AND e.email_norm = ?)
     ORDER BY a.pk"
  );
  let (scope_id, email) = (json!(scope.id), json!(email_norm));
  accounts::load_accounts(
    conn,
    scope,
    &sql,
    &[scope_id.clone(), email.clone(), scope_id, email],
  )
}

/// `getLinkSuggestions`: other accounts sharing an email verified on both sides.
pub(super) fn suggestions(
  conn: &Connection,
  scope: &Scope,
  account_id: &str,
) -> Result<Vec<LinkSuggestion>> {
  let account = find_account(conn, scope, account_id)?;
  let mut stmt = conn.prepare_cached(
    "SELECT DISTINCT a.account_id, o.email_norm, a.pk
     FROM identities m
     JOIN identities o ON o.scope_id = m.scope_id AND o.email_norm = m.email_norm
       AND o.email_verified = 1 AND o.account_pk != m.account_pk
     JOIN accounts a ON a.pk = o.account_pk
     WHERE m.account_pk = ?1 AND m.email_verified = 1 AND m.email_norm IS NOT NULL
     ORDER BY a.pk, o.email_norm",
  )?;
  let rows = stmt.query_map([account.pk], |r| {
    Ok(LinkSuggestion {
      linked_account_id: r.get(0)?,
      email: r.get(1)?,
    })
  })?;
  Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

impl IdentityStore for SqliteStore {
  fn link_identity(
    &self,
    scope: &Scope,
    id: String,
    input: IdentityInput,
  ) -> Pending<Vec<Identity>> {
    let (scope, sealer) = (scope.clone(), self.sealer());
    self.write(move |conn| {
      // A link may merge an account (its credentials are re-sealed): see store::keys.
      crate::domain::keys::sync(&mut SqliteTx::new(conn), &sealer)?;
      link(conn, &sealer, &scope, &id, input, now_ms())
    })
  }

  fn link_accounts(
    &self,
    scope: &Scope,
    primary: String,
    target: LinkTarget,
    policy: UdfPolicy,
    token_skew: i64,
  ) -> Pending<Account> {
    let (scope, sealer) = (scope.clone(), self.sealer());
    self.write(move |conn| {
      // Seal under the file's key (it may have been rotated): see domain::keys.
      crate::domain::keys::sync(&mut SqliteTx::new(conn), &sealer)?;
      merge(
        conn,
        &sealer,
        &scope,
        &primary,
        &target,
        policy,
        token_skew,
        now_ms(),
      )
    })
  }

  fn unlink_identity(
    &self,
    scope: &Scope,
    id: String,
    provider: String,
    user_id: String,
  ) -> Pending<Vec<Identity>> {
    let (scope, sealer) = (scope.clone(), self.sealer());
    self.write(move |conn| {
      // Seal under the file's key (it may have been rotated): see domain::keys.
      crate::domain::keys::sync(&mut SqliteTx::new(conn), &sealer)?;
      unlink(conn, &sealer, &scope, &id, &provider, &user_id, now_ms())
    })
  }

  fn accounts_by_email(&self, scope: &Scope, email_norm: String) -> Pending<Vec<Account>> {
    let scope = scope.clone();
    self.read(move |conn| by_email(conn, &scope, &email_norm))
  }

  fn link_suggestions(&self, scope: &Scope, id: String) -> Pending<Vec<LinkSuggestion>> {
    let scope = scope.clone();
    self.read(move |conn| suggestions(conn, &scope, &id))
  }
}

#[cfg(test)]
mod tests {
  use std::collections::{BTreeMap, BTreeSet};

  use serde_json::json;

  use crate::client::{OpenOptions, Vault};
  use crate::crypto::Key;
  use crate::error::ErrorKind;

  fn open(path: &str) -> Vault {
    let mut o = OpenOptions::parse(Some(&json!({"path": path, "orgId": "org_1"}))).unwrap();
    o.encryption_key = Some(Key::from_bytes([5; 32]));
    Vault::open(o).wait().unwrap()
  }

  fn temp() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.db").to_string_lossy().to_string();
    (dir, path)
  }

  fn upsert(v: &Vault, payload: serde_json::Value) {
    v.upsert_linked_account(&payload, None).wait().unwrap();
  }

  fn link(v: &Vault, id: &str, identity: serde_json::Value) -> crate::Result<Vec<super::Identity>> {
    v.link_identity(&json!(id), &identity).wait()
  }

  fn kind<T: std::fmt::Debug>(r: crate::Result<T>) -> ErrorKind {
    r.unwrap_err().kind
  }

  fn count(path: &str, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
  }

  #[test]
  fn link_is_idempotent_and_unique_per_scope() {
    let (_d, path) = temp();
    let v = open(&path);
    upsert(&v, json!({"linked_account_id": "a"}));
    upsert(&v, json!({"linked_account_id": "b"}));
    let ids = link(
      &v,
      "a",
      json!({"provider": "github", "user_id": 9, "email": "Ann@X.com", "isSocial": true}),
    )
    .unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].user_id, "9");
    assert!(ids[0].is_social && !ids[0].email_verified);
    let v0 = v
      .get_linked_account_by_id(&json!("a"))
      .wait()
      .unwrap()
      .version;
    // Same identity, same account, string form: refreshes the profile, no duplicate.
    let ids = link(
      &v,
      "a",
      json!({"provider": "github", "user_id": "9", "email_verified": true, "profileData": {"login": "ann"}}),
    )
    .unwrap();
    assert_eq!(ids.len(), 1);
    assert!(ids[0].email_verified);
    assert_eq!(ids[0].email.as_deref(), Some("Ann@X.com"));
    assert_eq!(ids[0].profile_data.as_ref().unwrap()["login"], "ann");
    let a = v.get_linked_account_by_id(&json!("a")).wait().unwrap();
    assert_eq!(a.version, v0 + 1);
    // Nothing changed: no new version, no event.
    let events_before = count(
      &path,
      "SELECT count(*) FROM events WHERE type = 'identity.linked'",
    );
    link(&v, "a", json!({"provider": "github", "user_id": "9"})).unwrap();
    assert_eq!(
      v.get_linked_account_by_id(&json!("a"))
        .wait()
        .unwrap()
        .version,
      v0 + 1
    );
    assert_eq!(
      count(
        &path,
        "SELECT count(*) FROM events WHERE type = 'identity.linked'"
      ),
      events_before
    );
    // Held by another account.
    assert_eq!(
      kind(link(&v, "b", json!({"provider": "github", "user_id": 9}))),
      ErrorKind::IdentityAlreadyLinked
    );
    assert!(v
      .get_linked_account_by_id(&json!("b"))
      .wait()
      .unwrap()
      .identities
      .is_empty());
    assert_eq!(
      kind(link(
        &v,
        "nope",
        json!({"provider": "github", "user_id": 1})
      )),
      ErrorKind::NotFound
    );
    // Every read carries identities.
    let page = v.get_all_linked_accounts(None).wait().unwrap();
    assert_eq!(page.docs[0].identities.len(), 1);
    let list = v.list_linked_accounts(None).wait().unwrap();
    assert_eq!(list.docs[0].identities.len(), 1);
    let up = v
      .upsert_linked_account(&json!({"linked_account_id": "a", "name": "Ann"}), None)
      .wait()
      .unwrap();
    assert_eq!(up.account.identities.len(), 1);
    // Another environment of the same file is another scope.
    v.close().wait().unwrap();
    let mut o = OpenOptions::parse(Some(
      &json!({"path": path, "orgId": "org_1", "environment": "production"}),
    ))
    .unwrap();
    o.encryption_key = Some(Key::from_bytes([5; 32]));
    let prod = Vault::open(o).wait().unwrap();
    upsert(&prod, json!({"linked_account_id": "a"}));
    link(&prod, "a", json!({"provider": "github", "user_id": 9})).unwrap();
    prod.close().wait().unwrap();
  }

  #[test]
  fn merge_then_unlink_restores_the_secondary() {
    let (_d, path) = temp();
    let v = open(&path);
    upsert(
      &v,
      json!({"linked_account_id": "A", "name": "Primary", "udf": {"plan": "pro", "a": 1}}),
    );
    upsert(
      &v,
      json!({"linked_account_id": "B", "name": "Second", "udf": {"plan": "free", "b": {"x": [1, 2]}},
             "your_app": {"app_id": "app1", "auth_credentials": {"Authorization": "Bearer s3cr3t-b"}}}),
    );
    link(&v, "A", json!({"provider": "auth0", "user_id": "a1"})).unwrap();
    link(
      &v,
      "B",
      json!({"provider": "github", "user_id": 9, "email": "b@x.io"}),
    )
    .unwrap();
    link(
      &v,
      "B",
      json!({"provider": "google-oauth2", "user_id": "g2"}),
    )
    .unwrap();
    assert_eq!(
      kind(v.link_accounts(&json!("A"), &json!("A"), None).wait()),
      ErrorKind::Validation
    );
    assert_eq!(
      kind(v.link_accounts(&json!("A"), &json!("nope"), None).wait()),
      ErrorKind::NotFound
    );
    assert_eq!(
      kind(v.link_accounts(&json!("nope"), &json!("B"), None).wait()),
      ErrorKind::NotFound
    );
    let merged = v
      .link_accounts(&json!("A"), &json!("B"), None)
      .wait()
      .unwrap();
    // B's two identities and B's own identity (unlinking it would undo the whole merge).
    assert_eq!(merged.identities.len(), 4);
    assert!(merged
      .identities
      .iter()
      .any(|i| (i.provider.as_str(), i.user_id.as_str()) == ("linkvault", "B")));
    let udf: BTreeMap<_, _> = merged
      .udf
      .iter()
      .map(|u| (u.key.clone(), u.value.clone()))
      .collect();
    assert_eq!(udf["plan"], json!("pro"));
    assert_eq!(udf["b"], json!({"x": [1, 2]}));
    assert_eq!(merged.name.as_deref(), Some("Primary"));
    assert_eq!(
      kind(v.get_linked_account_by_id(&json!("B")).wait()),
      ErrorKind::NotFound
    );
    assert_eq!(
      kind(v.link_accounts(&json!("A"), &json!("B"), None).wait()),
      ErrorKind::NotFound
    );
    assert_eq!(count(&path, "SELECT count(*) FROM account_merges"), 1);
    assert_eq!(
      count(
        &path,
        "SELECT count(*) FROM events WHERE type = 'linked_accounts.merged'"
      ),
      1
    );
    // Unlink one identity of B: B comes back, by value, with its credentials.
    let remaining = v
      .unlink_identity(&json!("A"), &json!("github"), &json!(9))
      .wait()
      .unwrap();
    assert_eq!(remaining.len(), 2);
    let b = v.get_linked_account_by_id(&json!("B")).wait().unwrap();
    assert_eq!(b.name.as_deref(), Some("Second"));
    let budf: BTreeMap<_, _> = b
      .udf
      .iter()
      .map(|u| (u.key.clone(), u.value.clone()))
      .collect();
    assert_eq!(budf["plan"], json!("free"));
    assert_eq!(budf["b"], json!({"x": [1, 2]}));
    assert_eq!(b.your_app, Some(Some("app1".to_string())));
    assert_eq!(b.identities.len(), 1);
    assert_eq!(b.identities[0].email.as_deref(), Some("b@x.io"));
    let creds = v
      .get_linked_account_credentials(&json!("B"))
      .wait()
      .unwrap()
      .unwrap();
    assert_eq!(creds.auth_credentials["Authorization"], "Bearer s3cr3t-b");
    // The record was used; the other identity of B leaves as a bare provider|user_id account.
    v.unlink_identity(&json!("A"), &json!("google-oauth2"), &json!("g2"))
      .wait()
      .unwrap();
    let g = v
      .get_linked_account_by_id(&json!("google-oauth2|g2"))
      .wait()
      .unwrap();
    assert!(g.udf.is_empty() && g.name.is_none() && g.your_app.is_none());
    assert_eq!(
      kind(
        v.unlink_identity(&json!("A"), &json!("github"), &json!("9"))
          .wait()
      ),
      ErrorKind::NotFound
    );
    // Every change has its event, in the same transaction; no email or profile in them.
    for (ty, n) in [
      ("identity.linked", 3),
      ("linked_accounts.merged", 1),
      ("identity.unlinked", 2),
      ("linked_account.created", 4),
    ] {
      assert_eq!(
        count(
          &path,
          &format!("SELECT count(*) FROM events WHERE type = '{ty}'")
        ),
        n,
        "{ty}"
      );
    }
    assert_eq!(
      count(&path, "SELECT count(*) FROM events WHERE data LIKE '%@%'"),
      0
    );
    // No credential in clear anywhere on disk.
    v.close().wait().unwrap();
    for entry in std::fs::read_dir(std::path::Path::new(&path).parent().unwrap()).unwrap() {
      let bytes = std::fs::read(entry.unwrap().path()).unwrap();
      assert!(!bytes.windows(8).any(|w| w == b"s3cr3t-b"));
    }
  }

  #[test]
  fn unlink_falls_back_then_refuses() {
    let (_d, path) = temp();
    let v = open(&path);
    upsert(&v, json!({"linked_account_id": "A"}));
    upsert(
      &v,
      json!({"linked_account_id": "B", "name": "Bee", "your_app": {"auth_credentials": {"k": "v-secret"}}}),
    );
    link(&v, "B", json!({"provider": "github", "user_id": "1"})).unwrap();
    link(&v, "B", json!({"provider": "github", "user_id": "2"})).unwrap();
    v.link_accounts(
      &json!("A"),
      &json!("B"),
      Some(&json!({"udf": "secondary_wins"})),
    )
    .wait()
    .unwrap();
    // Someone takes B's id and the fallback id of github|2.
    upsert(&v, json!({"linked_account_id": "B"}));
    upsert(&v, json!({"linked_account_id": "github|2"}));
    let before = v.get_linked_account_by_id(&json!("A")).wait().unwrap();
    assert_eq!(
      kind(
        v.unlink_identity(&json!("A"), &json!("github"), &json!("2"))
          .wait()
      ),
      ErrorKind::AlreadyExists
    );
    assert_eq!(
      v.get_linked_account_by_id(&json!("A")).wait().unwrap(),
      before
    );
    // github|1 falls back to its own id, with B's metadata re-sealed under the new row.
    v.unlink_identity(&json!("A"), &json!("github"), &json!(1))
      .wait()
      .unwrap();
    let restored = v
      .get_linked_account_by_id(&json!("github|1"))
      .wait()
      .unwrap();
    assert_eq!(restored.name.as_deref(), Some("Bee"));
    let creds = v
      .get_linked_account_credentials(&json!("github|1"))
      .wait()
      .unwrap()
      .unwrap();
    assert_eq!(creds.auth_credentials["k"], "v-secret");
    assert!(v
      .get_linked_account_by_id(&json!("B"))
      .wait()
      .unwrap()
      .name
      .is_none());
    // An identity linked directly leaves as provider|user_id.
    link(&v, "A", json!({"provider": "samlp", "user_id": "x"})).unwrap();
    v.unlink_identity(&json!("A"), &json!("samlp"), &json!("x"))
      .wait()
      .unwrap();
    assert_eq!(
      v.get_linked_account_by_id(&json!("samlp|x"))
        .wait()
        .unwrap()
        .identities
        .len(),
      1
    );
  }

  #[test]
  fn nested_merges_restore_the_right_account() {
    let v = open(":memory:");
    for (id, name) in [("A", "a"), ("B", "b"), ("C", "c")] {
      upsert(&v, json!({"linked_account_id": id, "name": name}));
      link(&v, id, json!({"provider": "p", "user_id": id})).unwrap();
    }
    v.link_accounts(&json!("B"), &json!("C"), None)
      .wait()
      .unwrap();
    v.link_accounts(&json!("A"), &json!("B"), None)
      .wait()
      .unwrap();
    // p|A, p|B, p|C and the own identities of B and C.
    assert_eq!(
      v.get_linked_account_by_id(&json!("A"))
        .wait()
        .unwrap()
        .identities
        .len(),
      5
    );
    v.unlink_identity(&json!("A"), &json!("p"), &json!("C"))
      .wait()
      .unwrap();
    assert_eq!(
      v.get_linked_account_by_id(&json!("C"))
        .wait()
        .unwrap()
        .name
        .as_deref(),
      Some("c")
    );
    v.unlink_identity(&json!("A"), &json!("p"), &json!("B"))
      .wait()
      .unwrap();
    assert_eq!(
      v.get_linked_account_by_id(&json!("B"))
        .wait()
        .unwrap()
        .name
        .as_deref(),
      Some("b")
    );
  }

  #[test]
  fn merge_respects_the_udf_key_limit() {
    let v = open(":memory:");
    let many = |p: &str, n: usize| -> serde_json::Map<String, serde_json::Value> {
      (0..n).map(|i| (format!("{p}{i}"), json!(i))).collect()
    };
    upsert(&v, json!({"linked_account_id": "A", "udf": many("a", 150)}));
    upsert(&v, json!({"linked_account_id": "B", "udf": many("b", 60)}));
    link(&v, "B", json!({"provider": "p", "user_id": "1"})).unwrap();
    let err = v
      .link_accounts(&json!("A"), &json!("B"), None)
      .wait()
      .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("udf"));
    // Nothing changed.
    assert_eq!(
      v.get_linked_account_by_id(&json!("B"))
        .wait()
        .unwrap()
        .identities
        .len(),
      1
    );
    assert_eq!(
      v.get_linked_account_by_id(&json!("A"))
        .wait()
        .unwrap()
        .udf
        .len(),
      150
    );
  }

  #[test]
  fn email_lookup_and_suggestions() {
    let v = open(":memory:");
    for id in ["A", "B", "C", "D"] {
      upsert(&v, json!({"linked_account_id": id}));
    }
    link(
      &v,
      "A",
      json!({"provider": "auth0", "user_id": "a", "email": " Ann@X.com ", "email_verified": true}),
    )
    .unwrap();
    link(&v, "B", json!({"provider": "google-oauth2", "user_id": "b", "email": "ann@x.com", "email_verified": true})).unwrap();
    link(
      &v,
      "C",
      json!({"provider": "github", "user_id": "c", "email": "ANN@x.COM"}),
    )
    .unwrap();
    link(
      &v,
      "D",
      json!({"provider": "github", "user_id": "d", "email": "ÄNN@x.com", "email_verified": true}),
    )
    .unwrap();
    let found = v
      .get_linked_accounts_by_email(&json!("ann@X.com"))
      .wait()
      .unwrap();
    let ids: Vec<_> = found.iter().map(|a| a.account_id.as_str()).collect();
    assert_eq!(ids, ["A", "B", "C"]);
    let umlaut = v
      .get_linked_accounts_by_email(&json!("änn@X.COM"))
      .wait()
      .unwrap();
    assert_eq!(umlaut.len(), 1);
    assert_eq!(
      v.get_linked_accounts_by_email(&json!("zed@x.com"))
        .wait()
        .unwrap()
        .len(),
      0
    );
    assert_eq!(
      v.get_linked_accounts_by_email(&json!("nope"))
        .wait()
        .unwrap_err()
        .field
        .as_deref(),
      Some("email")
    );
    let s = v.get_link_suggestions(&json!("A")).wait().unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
      (s[0].linked_account_id.as_str(), s[0].email.as_str()),
      ("B", "ann@x.com")
    );
    // C's email is unverified: C gets no suggestion and is suggested to nobody.
    assert!(v
      .get_link_suggestions(&json!("C"))
      .wait()
      .unwrap()
      .is_empty());
    assert_eq!(
      kind(v.get_link_suggestions(&json!("Z")).wait()),
      ErrorKind::NotFound
    );
  }

  fn ids_of(v: &Vault, id: &str) -> Vec<(String, String)> {
    v.get_linked_account_by_id(&json!(id))
      .wait()
      .unwrap()
      .identities
      .into_iter()
      .map(|i| (i.provider, i.user_id))
      .collect()
  }

  fn pair(p: &str, u: &str) -> (String, String) {
    (p.to_string(), u.to_string())
  }

  /// Auth0: linking `{ provider, user_id }` that is another existing account's own identity
  /// merges that account; unlinking it brings the account back as it was.
  #[test]
  fn linking_an_own_identity_merges_and_unlinking_it_restores() {
    let (_d, path) = temp();
    let v = open(&path);
    upsert(
      &v,
      json!({"linked_account_id": "auth0|primary", "name": "P"}),
    );
    upsert(
      &v,
      json!({"linked_account_id": "google-oauth2|1034", "name": "G", "udf": {"plan": "free"},
             "your_app": {"auth_credentials": {"Authorization": "Bearer g-secret"}}}),
    );
    link(
      &v,
      "google-oauth2|1034",
      json!({"provider": "github", "user_id": 9}),
    )
    .unwrap();
    let before = v
      .get_linked_account_by_id(&json!("google-oauth2|1034"))
      .wait()
      .unwrap();
    // Linking its own identity (user_id as a number is the same identity) merges it.
    let ids = link(
      &v,
      "auth0|primary",
      json!({"provider": "google-oauth2", "user_id": 1034, "connection_id": "con_0123456789abcdef",
             "profileData": {"given_name": "Gee"}}),
    )
    .unwrap();
    let pairs: Vec<_> = ids
      .iter()
      .map(|i| (i.provider.clone(), i.user_id.clone()))
      .collect();
    assert_eq!(pairs.len(), 2);
    assert!(pairs.contains(&pair("google-oauth2", "1034")));
    assert!(pairs.contains(&pair("github", "9")));
    let own = ids.iter().find(|i| i.provider == "google-oauth2").unwrap();
    assert_eq!(own.connection_id.as_deref(), Some("con_0123456789abcdef"));
    assert_eq!(own.profile_data.as_ref().unwrap()["given_name"], "Gee");
    assert_eq!(
      kind(
        v.get_linked_account_by_id(&json!("google-oauth2|1034"))
          .wait()
      ),
      ErrorKind::NotFound
    );
    let primary = v
      .get_linked_account_by_id(&json!("auth0|primary"))
      .wait()
      .unwrap();
    assert_eq!(primary.udf[0].value, json!("free"));
    // Linking it again now refreshes it (it is on this account).
    link(
      &v,
      "auth0|primary",
      json!({"provider": "google-oauth2", "user_id": "1034"}),
    )
    .unwrap();
    // Its own identity cannot be linked to itself, nor unlinked from itself.
    assert_eq!(
      kind(link(
        &v,
        "auth0|primary",
        json!({"provider": "auth0", "user_id": "primary"})
      )),
      ErrorKind::Validation
    );
    assert_eq!(
      kind(
        v.unlink_identity(&json!("auth0|primary"), &json!("auth0"), &json!("primary"))
          .wait()
      ),
      ErrorKind::Validation
    );
    // Unlinking the merged account's own identity undoes the whole merge.
    let rest = v
      .unlink_identity(
        &json!("auth0|primary"),
        &json!("google-oauth2"),
        &json!("1034"),
      )
      .wait()
      .unwrap();
    assert!(rest.is_empty());
    let after = v
      .get_linked_account_by_id(&json!("google-oauth2|1034"))
      .wait()
      .unwrap();
    assert_eq!(after.oid, before.oid);
    assert_eq!(after.name, before.name);
    assert_eq!(after.udf, before.udf);
    assert_eq!(after.your_app, before.your_app);
    assert_eq!(after.created_at, before.created_at);
    assert_eq!(after.identities, before.identities);
    assert_eq!(after.version, before.version + 1);
    let creds = v
      .get_linked_account_credentials(&json!("google-oauth2|1034"))
      .wait()
      .unwrap()
      .unwrap();
    assert_eq!(creds.auth_credentials["Authorization"], "Bearer g-secret");
    // The primary has no identity left (its own is implied by its id).
    assert_eq!(ids_of(&v, "auth0|primary"), Vec::<(String, String)>::new());
    v.close().wait().unwrap();
  }

  /// No merge leaves data that unlink cannot bring back: a secondary without identities is
  /// restored through its own identity, with its consents.
  #[test]
  fn a_merged_account_without_identities_is_restorable() {
    let v = open(":memory:");
    upsert(&v, json!({"linked_account_id": "A"}));
    upsert(
      &v,
      json!({"linked_account_id": "B", "name": "Bee", "udf": {"b": 1}}),
    );
    let s = v
      .create_auth_session(&json!({"end_user_id": "B"}))
      .wait()
      .unwrap();
    let consent = v
      .complete_auth_session(
        &json!(s.session_id),
        &json!({"institution_id": "bank", "account_ids": ["acc"], "permissions": ["accounts"],
                "duration_seconds": 3600}),
      )
      .wait()
      .unwrap();
    let merged = v
      .link_accounts(&json!("A"), &json!("B"), None)
      .wait()
      .unwrap();
    assert_eq!(
      merged
        .identities
        .iter()
        .map(|i| (i.provider.clone(), i.user_id.clone()))
        .collect::<Vec<_>>(),
      vec![pair("linkvault", "B")]
    );
    let moved = v
      .get_consent(&json!(consent.arrangement_id))
      .wait()
      .unwrap();
    assert_eq!(moved.end_user_id, "A");
    v.unlink_identity(&json!("A"), &json!("linkvault"), &json!("B"))
      .wait()
      .unwrap();
    let b = v.get_linked_account_by_id(&json!("B")).wait().unwrap();
    assert_eq!(b.name.as_deref(), Some("Bee"));
    assert!(b.identities.is_empty());
    assert!(ids_of(&v, "A").is_empty());
    let back = v
      .get_consent(&json!(consent.arrangement_id))
      .wait()
      .unwrap();
    assert_eq!(back.end_user_id, "B");
    assert!(back.active);
  }

  /// Unlinking a merged account's own identity takes back everything it brought, merges it had
  /// absorbed included; unlinking another of its identities brings it back with that one only.
  #[test]
  fn whole_and_partial_restores() {
    let v = open(":memory:");
    for id in ["A", "B", "C"] {
      upsert(&v, json!({"linked_account_id": id, "name": id}));
      link(&v, id, json!({"provider": "p", "user_id": id})).unwrap();
    }
    v.link_accounts(&json!("B"), &json!("C"), None)
      .wait()
      .unwrap();
    let b_before = ids_of(&v, "B");
    v.link_accounts(&json!("A"), &json!("B"), None)
      .wait()
      .unwrap();
    assert_eq!(ids_of(&v, "A").len(), 5);
    v.unlink_identity(&json!("A"), &json!("linkvault"), &json!("B"))
      .wait()
      .unwrap();
    assert_eq!(ids_of(&v, "A"), vec![pair("p", "A")]);
    assert_eq!(ids_of(&v, "B"), b_before);
    // C's merge went back with B: unlinking C's own identity from B restores C.
    v.unlink_identity(&json!("B"), &json!("linkvault"), &json!("C"))
      .wait()
      .unwrap();
    assert_eq!(ids_of(&v, "C"), vec![pair("p", "C")]);
    assert_eq!(ids_of(&v, "B"), vec![pair("p", "B")]);
    // Partial: B's other identity brings B back with it alone; B's own identity row goes.
    link(&v, "B", json!({"provider": "q", "user_id": "1"})).unwrap();
    v.link_accounts(&json!("A"), &json!("B"), None)
      .wait()
      .unwrap();
    v.unlink_identity(&json!("A"), &json!("q"), &json!("1"))
      .wait()
      .unwrap();
    assert_eq!(ids_of(&v, "B"), vec![pair("q", "1")]);
    assert_eq!(ids_of(&v, "A"), vec![pair("p", "A"), pair("p", "B")]);
    // The record is used: p|B now leaves as the account whose own identity it is.
    v.unlink_identity(&json!("A"), &json!("p"), &json!("B"))
      .wait()
      .unwrap();
    assert_eq!(ids_of(&v, "p|B"), vec![pair("p", "B")]);
  }

  /// A merge whose secondary's own identity is held by a third account is refused: without it
  /// the merge could not be undone.
  #[test]
  fn a_merge_that_could_not_be_undone_is_refused() {
    let v = open(":memory:");
    upsert(&v, json!({"linked_account_id": "A"}));
    upsert(&v, json!({"linked_account_id": "C"}));
    // C holds github/9 before any account github|9 exists; then one is created.
    link(&v, "C", json!({"provider": "github", "user_id": "9"})).unwrap();
    upsert(&v, json!({"linked_account_id": "github|9"}));
    let e = v
      .link_accounts(&json!("A"), &json!("github|9"), None)
      .wait()
      .unwrap_err();
    assert_eq!(e.kind, ErrorKind::IdentityAlreadyLinked);
    v.get_linked_account_by_id(&json!("github|9"))
      .wait()
      .unwrap();
    // And linking that identity to A names it as taken.
    assert_eq!(
      kind(link(&v, "A", json!({"provider": "github", "user_id": 9}))),
      ErrorKind::IdentityAlreadyLinked
    );
  }

  #[test]
  fn deleting_a_primary_deletes_its_identities_and_records() {
    let (_d, path) = temp();
    let v = open(&path);
    upsert(&v, json!({"linked_account_id": "A"}));
    upsert(&v, json!({"linked_account_id": "B"}));
    link(&v, "A", json!({"provider": "p", "user_id": "1"})).unwrap();
    link(&v, "B", json!({"provider": "p", "user_id": "2"})).unwrap();
    v.link_accounts(&json!("A"), &json!("B"), None)
      .wait()
      .unwrap();
    v.delete_linked_account(&json!("A")).wait().unwrap();
    assert_eq!(count(&path, "SELECT count(*) FROM identities"), 0);
    assert_eq!(count(&path, "SELECT count(*) FROM account_merges"), 0);
    upsert(&v, json!({"linked_account_id": "C"}));
    link(&v, "C", json!({"provider": "p", "user_id": "2"})).unwrap();
  }

  /// A tiny deterministic generator (xorshift64*), enough to drive random operation sequences.
  struct Rng(u64);
  impl Rng {
    fn next(&mut self) -> u64 {
      self.0 ^= self.0 >> 12;
      self.0 ^= self.0 << 25;
      self.0 ^= self.0 >> 27;
      self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
      (self.next() % n as u64) as usize
    }
  }

  /// One step of a random identity workload; indices are taken modulo the live sizes.
  #[derive(Clone, Debug)]
  enum IdOp {
    Link { ident: usize, acc: usize },
    Merge { i: usize, j: usize },
    Unlink { acc: usize },
  }

  /// Runs `ops` on 8 fresh accounts named `<prefix>acc<i>` and checks after every step: the set
  /// of identities only grows by successful links, no operation loses or duplicates one, each
  /// is on exactly one account, and every account the model knows still exists. Returns the
  /// counts of [steps, links, merges, unlinks] that succeeded.
  fn run_identity_ops(v: &Vault, prefix: &str, ops: &[IdOp]) -> [usize; 4] {
    let mut done = [0usize; 4];
    let mut accounts: Vec<String> = (0..8).map(|i| format!("{prefix}acc{i}")).collect();
    for id in &accounts {
      upsert(v, json!({"linked_account_id": id, "udf": {"k": id}}));
    }
    let provider = prefix.trim_end_matches('-').to_string();
    let mut linked: BTreeSet<String> = BTreeSet::new();
    for op in ops {
      done[0] += 1;
      match op {
        IdOp::Link { ident, acc } => {
          let ident = format!("{}", ident % 30);
          let acc = accounts[acc % accounts.len()].clone();
          match link(v, &acc, json!({"provider": provider, "user_id": ident})) {
            Ok(_) => {
              linked.insert(ident);
              done[1] += 1;
            }
            Err(e) => {
              assert_eq!(e.kind, ErrorKind::IdentityAlreadyLinked);
              assert!(linked.contains(&ident));
            }
          }
        }
        IdOp::Merge { i, j } => {
          let (i, j) = (i % accounts.len(), j % accounts.len());
          let k_of = |id: &str| {
            let a = v.get_linked_account_by_id(&json!(id)).wait().unwrap();
            a.udf.iter().find(|u| u.key == "k").map(|u| u.value.clone())
          };
          let (pk, sk) = (k_of(&accounts[i]), k_of(&accounts[j]));
          let r = v
            .link_accounts(&json!(accounts[i]), &json!(accounts[j]), None)
            .wait();
          match r {
            Ok(merged) => {
              // UDF: the primary keeps its own value (primary_wins); a key only the secondary
              // had comes along.
              let k = merged
                .udf
                .iter()
                .find(|u| u.key == "k")
                .map(|u| u.value.clone());
              assert_eq!(k, pk.or(sk), "udf k after merging");
              accounts.remove(j);
              done[2] += 1;
            }
            Err(e) => assert!(i == j && e.kind == ErrorKind::Validation, "{e:?}"),
          }
        }
        IdOp::Unlink { acc: pick } => {
          let acc = accounts[pick % accounts.len()].clone();
          let a = v.get_linked_account_by_id(&json!(acc)).wait().unwrap();
          if !a.identities.is_empty() {
            let ident = a.identities[(pick / 8) % a.identities.len()].clone();
            let r = v
              .unlink_identity(&json!(acc), &json!(ident.provider), &json!(ident.user_id))
              .wait();
            match r {
              Ok(rest) => {
                assert!(rest.len() < a.identities.len());
                assert!(!rest
                  .iter()
                  .any(|x| x.user_id == ident.user_id && x.provider == ident.provider));
                let restored = if ident.provider == crate::users::OWN_PROVIDER {
                  // A merged account's own identity: the whole merge is undone.
                  ident.user_id.clone()
                } else {
                  // The new standalone account is whichever account now holds it.
                  let page = v
                    .get_all_linked_accounts(Some(&json!({"limit": 1000})))
                    .wait()
                    .unwrap();
                  page
                    .docs
                    .iter()
                    .find(|d| {
                      d.identities
                        .iter()
                        .any(|x| x.user_id == ident.user_id && x.provider == ident.provider)
                    })
                    .unwrap()
                    .account_id
                    .clone()
                };
                assert_ne!(restored, acc);
                v.get_linked_account_by_id(&json!(restored)).wait().unwrap();
                accounts.push(restored);
                done[3] += 1;
              }
              // An account's own identity (`s1|5` holds `s1/5`) cannot be unlinked.
              Err(e) if crate::users::is_own(&acc, &ident.provider, &ident.user_id) => {
                assert_eq!(e.kind, ErrorKind::Validation)
              }
              Err(e) => assert_eq!(e.kind, ErrorKind::AlreadyExists),
            }
          }
        }
      }
      // Invariants, through the API: every identity of the workload's provider is on exactly
      // one account, none lost or invented; every account of the workload either exists or is
      // restorable, its own identity held by exactly one account.
      let mut seen: Vec<String> = Vec::new();
      let mut own_held: Vec<String> = Vec::new();
      for id in &accounts {
        let a = v.get_linked_account_by_id(&json!(id)).wait().unwrap();
        for x in &a.identities {
          if x.provider == provider {
            seen.push(x.user_id.clone());
          } else if x.provider == crate::users::OWN_PROVIDER {
            own_held.push(x.user_id.clone());
          }
        }
      }
      seen.sort();
      let unique: BTreeSet<String> = seen.iter().cloned().collect();
      assert_eq!(seen.len(), unique.len(), "an identity is on two accounts");
      assert_eq!(unique, linked, "identities lost or invented ({prefix})");
      own_held.sort();
      let mut gone: Vec<String> = (0..8)
        .map(|i| format!("{prefix}acc{i}"))
        .filter(|id| !accounts.contains(id))
        .collect();
      gone.sort();
      assert_eq!(
        own_held, gone,
        "a merged account is not restorable ({prefix})"
      );
    }
    // No orphan row, every index consistent.
    let integrity = v.check_integrity().wait().unwrap();
    assert!(integrity.ok, "{integrity:?}");
    done
  }

  /// Random sequences of link / merge / unlink from a fixed set of seeds (see
  /// `run_identity_ops` for the invariants).
  #[test]
  fn random_operations_conserve_identities() {
    let (_d, path) = temp();
    let v = open(&path);
    let mut ops = [0usize; 4];
    for seed in 1..=12u64 {
      let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
      let steps: Vec<IdOp> = (0..120)
        .map(|_| match rng.below(10) {
          0..=4 => IdOp::Link {
            ident: rng.below(30),
            acc: rng.below(64),
          },
          5..=6 => IdOp::Merge {
            i: rng.below(64),
            j: rng.below(64),
          },
          _ => IdOp::Unlink { acc: rng.below(64) },
        })
        .collect();
      let done = run_identity_ops(&v, &format!("s{seed}-"), &steps);
      for (t, d) in ops.iter_mut().zip(done) {
        *t += d;
      }
    }
    assert!(ops[1] > 100 && ops[2] > 20 && ops[3] > 20, "{ops:?}");
    eprintln!("steps, links, merges, unlinks: {ops:?}");
    let total = count(&path, "SELECT count(*) FROM identities");
    let distinct = count(
      &path,
      "SELECT count(DISTINCT scope_id || '/' || provider || '/' || user_id) FROM identities",
    );
    assert_eq!(total, distinct);
  }

  /// The same invariants on sequences proptest generates (and shrinks on failure), each on a
  /// fresh in-memory database. Budget: `LINKVAULT_FUZZ_CASES` (see `crate::fuzz`).
  #[test]
  fn fuzz_identity_merge_unlink_invariants() {
    use proptest::prelude::*;
    let op = prop_oneof![
      5 => (0usize..30, 0usize..64).prop_map(|(ident, acc)| IdOp::Link { ident, acc }),
      2 => (0usize..64, 0usize..64).prop_map(|(i, j)| IdOp::Merge { i, j }),
      3 => (0usize..64).prop_map(|acc| IdOp::Unlink { acc }),
    ];
    crate::fuzz::check(
      "identity merge/unlink vs model",
      16,
      proptest::collection::vec(op, 1..80),
      |ops| {
        let v = open(":memory:");
        run_identity_ops(&v, "f-", &ops);
        v.close().wait().unwrap();
        Ok(())
      },
    );
  }

  /// Compares loading a list page's identities in one query (what the list methods do) with one
  /// cached statement per account. Run with
  /// `cargo test --release -- --ignored --nocapture identity_loading_strategies`.
  #[test]
  #[ignore]
  fn identity_loading_strategies() {
    use std::time::Instant;
    let (_d, path) = temp();
    let v = open(&path);
    let accounts = 5000;
    for chunk in 0..(accounts / 500) {
      let pending: Vec<_> = (0..500)
        .map(|i| {
          let id = format!("acc{}", chunk * 500 + i);
          v.upsert_linked_account(
            &json!({"linked_account_id": id, "udf": {"plan": "pro"}}),
            None,
          )
        })
        .collect();
      for p in pending {
        p.wait().unwrap();
      }
      let pending: Vec<_> = (0..500)
        .flat_map(|i| {
          let id = format!("acc{}", chunk * 500 + i);
          [
            v.link_identity(
              &json!(id),
              &json!({"provider": "github", "user_id": id, "email": format!("{id}@x.io")}),
            ),
            v.link_identity(
              &json!(id),
              &json!({"provider": "google-oauth2", "user_id": id, "profileData": {"n": 1}}),
            ),
          ]
        })
        .collect();
      for p in pending {
        p.wait().unwrap();
      }
    }
    v.close().wait().unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.set_prepared_statement_cache_capacity(128);
    let pks: Vec<i64> = conn
      .prepare("SELECT pk FROM accounts ORDER BY pk")
      .unwrap()
      .query_map([], |r| r.get(0))
      .unwrap()
      .collect::<rusqlite::Result<_>>()
      .unwrap();
    // Readers run each read inside one read transaction; measure the same way.
    conn.execute_batch("BEGIN").unwrap();
    for limit in [10usize, 100, 1000] {
      let rounds = 20;
      let t = Instant::now();
      let mut n = 0;
      for _ in 0..rounds {
        for page in pks.chunks(limit) {
          n += super::load_many(&conn, page)
            .unwrap()
            .values()
            .map(Vec::len)
            .sum::<usize>();
        }
      }
      let batched = t.elapsed();
      let t = Instant::now();
      let mut m = 0;
      for _ in 0..rounds {
        for page in pks.chunks(limit) {
          for pk in page {
            m += super::load(&conn, *pk).unwrap().len();
          }
        }
      }
      let per_account = t.elapsed();
      assert_eq!(n, m);
      let pages = rounds * pks.len().div_ceil(limit);
      eprintln!(
        "limit {limit:>4}: one query per page {:>8.1} us/page, one cached query per account {:>8.1} us/page",
        batched.as_secs_f64() * 1e6 / pages as f64,
        per_account.as_secs_f64() * 1e6 / pages as f64
      );
    }
  }
}

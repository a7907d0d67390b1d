//! `linkAccounts`: merges a secondary account into a primary in one transaction. The
//! secondary's whole pre-merge state goes into a merge record (its credentials re-sealed to the
//! record), so that `unlinkIdentity` can bring it back (`unlink`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{holder, insert, update, Holder, IdentityTx, NewMerge};
use crate::accounts::{Account, Patch, UdfRow, MAX_UDF_KEYS};
use crate::crypto::{self, Sealer};
use crate::domain::accounts::{self, AccountRow};
use crate::domain::events::types;
use crate::domain::keys;
use crate::domain::Scope;
use crate::error::{Error, ErrorKind, Result};
use crate::identities::{Identity, IdentityInput, LinkTarget, UdfPolicy};
use crate::users;

/// Merges the secondary's UDF rows into the primary's. Keys only one side has are kept (rows
/// moved from the secondary keep their `_id` and `createdAt`); a key on both sides keeps the
/// winner's value. Fails with `VALIDATION_ERROR` (`udf`) when the union would exceed the key
/// limit, so that nothing of the secondary is dropped. Returns the keys that changed.
pub fn merge_udf_by_policy(
  primary: &mut Vec<UdfRow>,
  secondary: &[UdfRow],
  policy: UdfPolicy,
  now: i64,
) -> Result<Vec<String>> {
  let added = secondary
    .iter()
    .filter(|s| !primary.iter().any(|p| p.key == s.key))
    .count();
  if primary.len() + added > MAX_UDF_KEYS {
    return Err(Error::validation(
      "udf",
      format!(
        "merging would give the primary {} udf keys; the limit is {MAX_UDF_KEYS} (remove keys first)",
        primary.len() + added
      ),
    ));
  }
  let mut changed = Vec::new();
  for s in secondary {
    match primary.iter_mut().find(|p| p.key == s.key) {
      Some(p) => {
        if policy == UdfPolicy::SecondaryWins && p.json != s.json {
          p.value = s.value.clone();
          p.json = s.json.clone();
          p.updated_at = now;
          changed.push(s.key.clone());
        }
      }
      None => {
        let mut row = s.clone();
        row.updated_at = now;
        primary.push(row);
        changed.push(s.key.clone());
      }
    }
  }
  Ok(changed)
}

/// Where a merged secondary's own identity goes. Every merge puts it on the primary, so that
/// unlinking it undoes the merge: no merge leaves data that unlink cannot bring back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnIdentityPlan {
  /// The secondary holds it as a linked identity already: it moves with the others.
  MovesWithSecondary,
  /// Nobody holds it: the merge adds it to the primary.
  AddToPrimary,
}

/// `holder` is seen from the secondary (`ThisAccount` = the secondary holds it).
pub fn own_identity_plan(secondary_id: &str, holder: Holder) -> Result<OwnIdentityPlan> {
  match holder {
    Holder::ThisAccount => Ok(OwnIdentityPlan::MovesWithSecondary),
    Holder::Nobody => Ok(OwnIdentityPlan::AddToPrimary),
    Holder::Another => {
      let (p, u) = users::own_identity(secondary_id);
      Err(Error::new(
        ErrorKind::IdentityAlreadyLinked,
        format!(
          "cannot merge {secondary_id}: its own identity {p}|{u} is linked to another account \
           (unlink it first), and without it the merge could not be undone"
        ),
      ))
    }
  }
}

/// A secondary's pre-merge state, as kept in its merge record (credentials apart, sealed).
#[derive(Serialize, Deserialize)]
pub(super) struct MergedState {
  pub linked_account_id: String,
  #[serde(rename = "_id")]
  pub oid: String,
  pub name: Option<String>,
  pub udf: Vec<MergedUdf>,
  pub has_app: bool,
  pub app_id: Option<String>,
  pub created_at: i64,
  pub updated_at: i64,
  #[serde(rename = "__v")]
  pub version: i64,
  pub identities: Vec<MergedIdentity>,
  // Added in schema 6; absent from older records.
  #[serde(default, skip_serializing_if = "Option::is_none")]
  pub email: Option<String>,
  #[serde(default, skip_serializing_if = "Option::is_none")]
  pub phone: Option<String>,
  #[serde(default, skip_serializing_if = "Option::is_none")]
  pub abn: Option<String>,
  /// Merge records the secondary held (earlier merges into it), by pk: a whole restore takes
  /// them back.
  #[serde(default)]
  pub merges: Vec<i64>,
  /// The secondary's consents (arrangement ids), which moved to the primary.
  #[serde(default)]
  pub consents: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct MergedUdf {
  pub key: String,
  /// Canonical JSON text of the value.
  pub value: String,
  #[serde(rename = "_id")]
  pub oid: String,
  pub created_at: i64,
  pub updated_at: i64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct MergedIdentity {
  pub provider: String,
  pub user_id: String,
  pub connection: Option<String>,
  #[serde(rename = "isSocial")]
  pub is_social: bool,
  pub email: Option<String>,
  pub email_verified: bool,
  #[serde(rename = "profileData")]
  pub profile_data: Option<Map<String, Value>>,
  #[serde(rename = "linkedAt")]
  pub linked_at: i64,
  #[serde(default, skip_serializing_if = "Option::is_none")]
  pub connection_id: Option<String>,
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
  keys::merge_aad(scope.id, merge_oid)
}

/// Opens credentials sealed under `from_aad` and seals them again under `to_aad`. The plaintext
/// exists only in memory, only for this call.
pub(super) fn reseal(
  sealer: &Sealer,
  sealed: &[u8],
  from_aad: &[u8],
  to_aad: &[u8],
) -> Result<Vec<u8>> {
  let plain = zeroize::Zeroizing::new(sealer.open(sealed, from_aad)?);
  sealer.seal(&plain, to_aad)
}

const LINK_WITH_PURPOSE: &str = "link_with";
/// A `link_with` token proves recent control of the secondary account: at most 10 minutes old.
const LINK_WITH_MAX_AGE_SECS: i64 = 600;

/// `{ link_with }`: the secondary account a session token was minted for, verified against this
/// scope (revocation included) and consumed for linking in this same transaction, so a second
/// use fails with `TOKEN_REVOKED` and a failed merge leaves it unused.
fn resolve_link_with(
  tx: &mut (impl IdentityTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  token: &str,
  skew: i64,
  now: i64,
) -> Result<String> {
  let claims = crate::domain::tokens::revocation::consume_once(
    tx,
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

/// `linkAccounts`: every identity of the secondary moves to the primary, UDF merge by policy,
/// the secondary's pre-merge state goes into a merge record and the secondary is deleted.
/// Returns the merged primary. `token_skew`: the clock skew (seconds) allowed when a
/// `link_with` token is verified.
#[allow(clippy::too_many_arguments)]
pub fn link_accounts(
  tx: &mut (impl IdentityTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  primary_id: &str,
  target: &LinkTarget,
  policy: UdfPolicy,
  token_skew: i64,
  now: i64,
) -> Result<Account> {
  // Seal under the database's key (it may have been rotated): see domain::keys.
  keys::sync(tx, sealer)?;
  let primary = accounts::find(tx, scope, primary_id)?;
  let (secondary_id, field) = match target {
    LinkTarget::Account(id) => (id.clone(), "secondary_id"),
    LinkTarget::Token(token) => (
      resolve_link_with(tx, sealer, scope, token, token_skew, now)?,
      "link_with",
    ),
  };
  if secondary_id == primary_id {
    return Err(Error::validation(
      field,
      "an account cannot be linked to itself",
    ));
  }
  let secondary = accounts::find(tx, scope, &secondary_id)?;
  merge_rows(tx, sealer, scope, &primary, &secondary, policy, None, now)?;
  accounts::get(tx, scope, primary_id)
}

/// Merges `secondary` into `primary` (both rows of `scope`). `own_input`: the `linkIdentity`
/// body when the merge comes from linking the secondary's own identity; its profile fields go on
/// that identity.
#[allow(clippy::too_many_arguments)]
pub(super) fn merge_rows(
  tx: &mut (impl IdentityTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  primary: &AccountRow,
  secondary: &AccountRow,
  policy: UdfPolicy,
  own_input: Option<&IdentityInput>,
  now: i64,
) -> Result<()> {
  let secondary_udf = tx.load_udf(secondary.pk)?;
  let secondary_identities = tx.identities_of(secondary.pk)?;
  let (own_provider, own_user_id) = users::own_identity(&secondary.account_id);
  let own_found = tx.find_identity(scope.id, &own_provider, &own_user_id)?;
  let own_plan = own_identity_plan(&secondary.account_id, holder(&own_found, secondary.pk))?;

  // What else belongs to the secondary, before its row goes: its session tokens stop verifying
  // once the merge commits; its consents and pending auth sessions now belong to the primary.
  crate::domain::tokens::revocation::revoke_account(
    tx,
    scope,
    secondary.pk,
    &secondary.account_id,
    "account_merged",
    now,
  )?;
  let consents = tx.move_consents_of_merged_account(scope, secondary.pk, primary.pk, now)?;

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
  let held_merges = tx.merges_of(secondary.pk)?;
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
  let merge_pk = tx.insert_merge(
    scope.id,
    &NewMerge {
      primary_pk: primary.pk,
      oid: &merge_oid,
      secondary_id: &secondary.account_id,
      state: &state_text,
      credentials: sealed.as_deref(),
      policy: policy.as_str(),
      merged_at: now,
    },
  )?;
  // Records of earlier merges into the secondary follow their identities to the primary.
  tx.move_merges(secondary.pk, primary.pk)?;
  // The secondary's own identities remember this merge; those it got by an earlier merge keep
  // theirs. Then they all move.
  tx.stamp_merge(secondary.pk, merge_pk)?;
  tx.move_identities(secondary.pk, primary.pk, now)?;
  let mut moved = secondary_identities.len();
  // The secondary's own identity joins the primary too (as Auth0 lists the linked user's
  // identity), and unlinking it undoes this merge.
  let own_now = |old: Option<&Identity>| -> Identity {
    let bare = IdentityInput {
      provider: own_provider.clone(),
      user_id: own_user_id.clone(),
      connection: Patch::Keep,
      connection_id: Patch::Keep,
      is_social: None,
      email: Patch::Keep,
      email_verified: None,
      profile_data: Patch::Keep,
    };
    own_input.unwrap_or(&bare).apply(old, now)
  };
  match (own_plan, own_found) {
    (OwnIdentityPlan::AddToPrimary, _) => {
      insert(tx, scope.id, primary.pk, &own_now(None), Some(merge_pk))?;
      moved += 1;
    }
    (OwnIdentityPlan::MovesWithSecondary, Some(found)) if own_input.is_some() => {
      update(tx, found.pk, &own_now(Some(&found.identity)))?;
    }
    (OwnIdentityPlan::MovesWithSecondary, _) => {}
  }

  let mut udf = tx.load_udf(primary.pk)?;
  let changed_keys = merge_udf_by_policy(&mut udf, &secondary_udf, policy, now)?;
  if !changed_keys.is_empty() {
    tx.delete_all_udf(primary.pk)?;
    for (pos, row) in udf.iter().enumerate() {
      tx.insert_udf(primary.pk, pos as i64, row)?;
    }
  }
  tx.delete_account(secondary.pk)?;
  tx.touch_account(primary.pk, now)?;
  tx.append_event(
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

//! `unlinkIdentity`: the identity leaves as a standalone account, or brings back the account it
//! came from by a merge, from that merge's record.

use serde_json::{json, Value};

use super::merge::{merge_aad, reseal, MergedState};
use super::{exists, IdentityRow, IdentityTx, MergeRecord};
use crate::accounts::{EndUserFields, UdfRow};
use crate::crypto::{self, Sealer};
use crate::domain::accounts::{self, AccountRow};
use crate::domain::events::types;
use crate::domain::keys;
use crate::domain::Scope;
use crate::error::{Error, ErrorKind, Result};
use crate::identities::{normalize_email, Identity};
use crate::users;

/// What happens to the secondary's own identity row when its merge is restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnRow {
  /// The merge added it: it goes (the restored account's id implies it).
  Drop,
  /// The secondary held it before the merge: it goes back with the account.
  MoveBack,
  /// The account comes back under another id: the row stays where it is.
  Keep,
}

/// How `unlinkIdentity` restores a merged account from its merge record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePlan {
  /// The restored account's id.
  pub id: String,
  /// Whether it is the secondary's original id (then with its `_id` and `createdAt` too).
  pub original: bool,
  /// Unlinking the secondary's own identity undoes the whole merge: every identity and merge
  /// record it brought that is still on the primary goes back with it. Unlinking another of its
  /// identities brings the account back with that identity only.
  pub whole: bool,
  pub own_row: OwnRow,
}

/// Decides a restore. `secondary_id` and `held` (the identities it had) come from the merge
/// record; `(provider, user_id)` is the identity unlinked; `free` says whether an id is unused.
pub fn restore_plan(
  secondary_id: &str,
  held: &[(String, String)],
  provider: &str,
  user_id: &str,
  mut free: impl FnMut(&str) -> Result<bool>,
) -> Result<RestorePlan> {
  let own = users::own_identity(secondary_id);
  let whole = own.0 == provider && own.1 == user_id;
  let own_held = held.contains(&own);
  let (id, original) = if free(secondary_id)? {
    (secondary_id.to_string(), true)
  } else {
    let fallback = users::account_of_identity(provider, user_id);
    if !free(&fallback)? {
      return Err(taken(&fallback, Some(secondary_id)));
    }
    (fallback, false)
  };
  let own_row = match (original, own_held) {
    (false, _) if !whole => OwnRow::Keep,
    (_, true) => OwnRow::MoveBack,
    (_, false) => OwnRow::Drop,
  };
  Ok(RestorePlan {
    id,
    original,
    whole,
    own_row,
  })
}

/// `ALREADY_EXISTS` for an unlink whose standalone account id is taken.
pub fn taken(id: &str, restored: Option<&str>) -> Error {
  Error::new(
    ErrorKind::AlreadyExists,
    format!(
      "cannot unlink into {id}: linked account {id} already exists{}",
      restored
        .filter(|r| *r != id)
        .map(|r| format!(" and so does {r}"))
        .unwrap_or_default()
    ),
  )
}

/// The standalone account of an unlinked identity that came by no merge: the account whose own
/// identity it is. The account's own identity itself cannot be unlinked (Auth0 refuses to remove
/// the main identity).
pub fn standalone_id(account_id: &str, provider: &str, user_id: &str) -> Result<String> {
  if users::is_own(account_id, provider, user_id) {
    return Err(Error::validation(
      "user_id",
      format!("{provider}|{user_id} is the own identity of {account_id} and cannot be unlinked"),
    ));
  }
  let id = users::account_of_identity(provider, user_id);
  if id.chars().count() > crate::accounts::MAX_ID_CHARS {
    return Err(Error::validation(
      "user_id",
      format!(
        "the standalone account id {provider}|user_id would exceed {} characters",
        crate::accounts::MAX_ID_CHARS
      ),
    ));
  }
  Ok(id)
}

/// An unrestored merge record, its state read.
struct Record {
  pk: i64,
  oid: String,
  state: MergedState,
  credentials: Option<Vec<u8>>,
}

fn unrestored_record(
  tx: &mut (impl IdentityTx + ?Sized),
  merge_pk: Option<i64>,
) -> Result<Option<Record>> {
  let Some(mpk) = merge_pk else {
    return Ok(None);
  };
  tx.unrestored_merge(mpk)?
    .map(
      |MergeRecord {
         pk,
         oid,
         state,
         credentials,
       }| {
        serde_json::from_str::<MergedState>(&state)
          .map(|state| Record {
            pk,
            oid,
            state,
            credentials,
          })
          .map_err(|e| Error::storage(format!("merge record is unreadable: {e}")))
      },
    )
    .transpose()
}

/// `unlinkIdentity`: the identity leaves as a standalone account. If it arrived by a merge whose
/// record was not restored yet, that account comes back from the record ([`restore_plan`]: its
/// original id when free; the whole merge undone when the identity is the merged account's
/// own); otherwise the account whose own identity it is is created. Returns the identities left.
pub fn unlink(
  tx: &mut (impl IdentityTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  account_id: &str,
  provider: &str,
  user_id: &str,
  now: i64,
) -> Result<Vec<Identity>> {
  // Seal under the database's key (it may have been rotated): see domain::keys.
  keys::sync(tx, sealer)?;
  let account = accounts::find(tx, scope, account_id)?;
  if users::is_own(account_id, provider, user_id) {
    standalone_id(account_id, provider, user_id)?;
  }
  let found = tx
    .find_identity(scope.id, provider, user_id)?
    .filter(|f| f.account_pk == account.pk)
    .ok_or_else(|| {
      Error::not_found(format!(
        "identity {provider}|{user_id} is not linked to linked account {account_id}"
      ))
    })?;
  let (target, version, merge_oid) = match unrestored_record(tx, found.merge_pk)? {
    None => {
      let target = standalone_id(account_id, provider, user_id)?;
      if exists(tx, scope.id, &target)? {
        return Err(taken(&target, None));
      }
      let row = AccountRow {
        pk: 0,
        oid: crypto::object_id(now)?,
        name: None,
        has_app: false,
        app_id: None,
        credentials: None,
        created_at: now,
        updated_at: now,
        version: 0,
        account_id: target.clone(),
        end_user: EndUserFields::default(),
      };
      let pk = tx.insert_account(scope.id, &row)?;
      tx.move_identity(found.pk, pk, now)?;
      (target, 0, None)
    }
    Some(record) => {
      let (target, version) = restore(tx, sealer, scope, &account, &found, &record, now)?;
      (target, version, Some(record.oid))
    }
  };
  tx.touch_account(account.pk, now)?;
  tx.append_event(
    scope.id,
    types::IDENTITY_UNLINKED,
    Some(account_id),
    &json!({ "provider": provider, "user_id": user_id, "linked_account_id": target }),
    now,
  )?;
  tx.append_event(
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
  tx.identities_of(account.pk)
}

/// Restores the account of merge record `record` as `unlink` unlinks `found` from `primary`;
/// returns the restored account's id and `__v`.
fn restore(
  tx: &mut (impl IdentityTx + ?Sized),
  sealer: &Sealer,
  scope: &Scope,
  primary: &AccountRow,
  found: &IdentityRow,
  record: &Record,
  now: i64,
) -> Result<(String, i64)> {
  let state = &record.state;
  let held: Vec<(String, String)> = state
    .identities
    .iter()
    .map(|i| (i.provider.clone(), i.user_id.clone()))
    .collect();
  let (provider, user_id) = (&found.identity.provider, &found.identity.user_id);
  let plan = restore_plan(&state.linked_account_id, &held, provider, user_id, |id| {
    Ok(!exists(tx, scope.id, id)?)
  })?;
  let sealed = record
    .credentials
    .as_deref()
    .map(|c| {
      reseal(
        sealer,
        c,
        &merge_aad(scope, &record.oid),
        &accounts::credentials_aad(scope, &plan.id),
      )
    })
    .transpose()?;
  // Under its original id the account keeps its `_id`, `createdAt` and a `__v` one past the
  // merged one (so an `ifVersion` writer notices); under another id it is a new record.
  let (oid, created_at, version) = if plan.original {
    (state.oid.clone(), state.created_at, state.version + 1)
  } else {
    (crypto::object_id(now)?, now, 0)
  };
  let end_user = EndUserFields {
    email: state.email.clone(),
    phone: state.phone.clone(),
    abn: state.abn.clone(),
  };
  let row = AccountRow {
    pk: 0,
    oid,
    name: state.name.clone(),
    has_app: state.has_app,
    app_id: state.app_id.clone(),
    credentials: sealed,
    created_at,
    updated_at: now,
    version,
    account_id: plan.id.clone(),
    end_user: EndUserFields::default(),
  };
  let new_pk = tx.insert_account(scope.id, &row)?;
  if end_user != EndUserFields::default() {
    let norm = end_user.email.as_deref().map(normalize_email);
    tx.set_end_user_fields(new_pk, &end_user, norm.as_deref())?;
  }
  for (pos, u) in state.udf.iter().enumerate() {
    let udf = UdfRow {
      key: u.key.clone(),
      value: serde_json::from_str(&u.value).unwrap_or(Value::Null),
      json: u.value.clone(),
      oid: u.oid.clone(),
      created_at: u.created_at,
      updated_at: u.updated_at,
    };
    tx.insert_udf(new_pk, pos as i64, &udf)?;
  }

  // Identities go back with their original `linkedAt`.
  let linked_at = |p: &str, u: &str| {
    state
      .identities
      .iter()
      .find(|i| i.provider == p && i.user_id == u)
      .map_or(now, |i| i.linked_at)
  };
  let (own_provider, own_user_id) = users::own_identity(&state.linked_account_id);
  let is_own_row = |p: &str, u: &str| p == own_provider && u == own_user_id;
  if plan.whole {
    for (pk, p, u) in tx.identities_of_merge(primary.pk, record.pk)? {
      if is_own_row(&p, &u) && plan.own_row == OwnRow::Drop {
        tx.delete_identity(pk)?;
      } else {
        tx.move_identity(pk, new_pk, linked_at(&p, &u))?;
      }
    }
    // Merges the secondary had absorbed go back with it, with their identities.
    for held_merge in &state.merges {
      if tx.move_held_merge(*held_merge, primary.pk, new_pk)? {
        for (pk, p, u) in tx.identities_of_merge(primary.pk, *held_merge)? {
          tx.move_merged_identity(pk, new_pk, linked_at(&p, &u))?;
        }
      }
    }
  } else {
    tx.move_identity(found.pk, new_pk, linked_at(provider, user_id))?;
    if plan.own_row != OwnRow::Keep {
      for (pk, p, u) in tx.identities_of_merge(primary.pk, record.pk)? {
        if !is_own_row(&p, &u) {
          continue;
        }
        if plan.own_row == OwnRow::Drop {
          tx.delete_identity(pk)?;
        } else {
          tx.move_identity(pk, new_pk, linked_at(&p, &u))?;
        }
      }
    }
  }
  // The secondary's consents still on the primary follow it back.
  tx.move_listed_consents(
    scope,
    &state.consents,
    primary.pk,
    new_pk,
    "account_restored",
    now,
  )?;
  tx.mark_restored(record.pk, now, &plan.id)?;
  Ok((plan.id, version))
}

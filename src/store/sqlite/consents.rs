//! The auth_sessions and consents tables on SQLite (schema: migrations 4 and 6). Rows only; the
//! rules are in `domain::consents`. Lists (permissions, account ids) are stored as JSON text.

use rusqlite::{params, OptionalExtension, Row};
use serde_json::Value;

use super::SqliteTx;
use crate::consents::{Consent, InstitutionType, SessionState, Termination};
use crate::domain::consents::{ConsentRow, ConsentRows, SessionRow};
use crate::error::Result;

fn json_list(text: Option<String>) -> Option<Vec<String>> {
  text.and_then(|t| serde_json::from_str(&t).ok())
}

fn to_json_text(list: &[String]) -> String {
  Value::from(list.to_vec()).to_string()
}

const SESSION_COLUMNS: &str = "s.pk, s.account_pk, s.oid, a.account_id, s.redirect_uri, s.cancel_uri, s.institution_id,
   s.permissions, s.arrangement_id, s.state, s.error_type, s.consent_id, s.created_at, s.expires_at, s.finished_at";

fn read_session(r: &Row<'_>) -> rusqlite::Result<SessionRow> {
  let state: String = r.get(9)?;
  Ok(SessionRow {
    pk: r.get(0)?,
    account_pk: r.get(1)?,
    oid: r.get(2)?,
    linked_account_id: r.get(3)?,
    redirect_uri: r.get(4)?,
    cancel_uri: r.get(5)?,
    institution_id: r.get(6)?,
    permissions: json_list(r.get(7)?),
    arrangement_id: r.get(8)?,
    // The CHECK constraint allows nothing else.
    state: SessionState::parse(&state).unwrap_or(SessionState::Cancelled),
    error_type: r.get(10)?,
    consent_id: r.get(11)?,
    created_at: r.get(12)?,
    expires_at: r.get(13)?,
    finished_at: r.get(14)?,
  })
}

const CONSENT_COLUMNS: &str =
  "c.account_pk, c.arrangement_id, c.end_user_id, c.institution_id, c.institution_name,
   c.account_ids, c.permissions, c.duration, c.created_at, c.last_consent, c.expires_at, c.active,
   c.termination_reason, c.institution_logo, c.institution_type, c.last_accessed,
   (SELECT e.email FROM accounts e WHERE e.pk = c.account_pk), c.pk";

fn read_consent(r: &Row<'_>) -> rusqlite::Result<ConsentRow> {
  let reason: Option<String> = r.get(12)?;
  Ok(ConsentRow {
    pk: r.get(17)?,
    account_pk: r.get(0)?,
    consent: Consent {
      arrangement_id: r.get(1)?,
      end_user_id: r.get(2)?,
      institution_id: r.get(3)?,
      institution_name: r.get(4)?,
      account_ids: json_list(r.get(5)?).unwrap_or_default(),
      permissions: json_list(r.get(6)?).unwrap_or_default(),
      duration: r.get(7)?,
      created_at: r.get(8)?,
      last_consent: r.get(9)?,
      expires_at: r.get(10)?,
      active: r.get(11)?,
      termination_reason: reason.as_deref().and_then(Termination::parse),
      institution_logo: r.get(13)?,
      institution_type: r
        .get::<_, String>(14)
        .ok()
        .as_deref()
        .and_then(InstitutionType::parse)
        .unwrap_or_default(),
      last_accessed: r.get(15)?,
      end_user_email: r.get(16)?,
    },
  })
}

impl ConsentRows for SqliteTx<'_> {
  fn find_session(&mut self, scope_id: i64, session_hash: &[u8]) -> Result<Option<SessionRow>> {
    let sql = format!(
      "SELECT {SESSION_COLUMNS} FROM auth_sessions s JOIN accounts a ON a.pk = s.account_pk
       WHERE s.session_hash = ?1 AND s.scope_id = ?2"
    );
    Ok(
      self
        .conn
        .prepare_cached(&sql)?
        .query_row(params![session_hash, scope_id], read_session)
        .optional()?,
    )
  }

  fn insert_session(&mut self, scope_id: i64, session_hash: &[u8], row: &SessionRow) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO auth_sessions (scope_id, oid, session_hash, account_pk, redirect_uri, cancel_uri,
           institution_id, permissions, arrangement_id, state, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
      )?
      .execute(params![
        scope_id,
        row.oid,
        session_hash,
        row.account_pk,
        row.redirect_uri,
        row.cancel_uri,
        row.institution_id,
        row.permissions.as_deref().map(to_json_text),
        row.arrangement_id,
        row.state.as_str(),
        row.created_at,
        row.expires_at
      ])?;
    Ok(())
  }

  fn finish_session(
    &mut self,
    pk: i64,
    to: SessionState,
    error_type: Option<&str>,
    consent_id: Option<&str>,
    now: i64,
  ) -> Result<bool> {
    let changed = self
      .conn
      .prepare_cached(
        "UPDATE auth_sessions SET state = ?2, error_type = ?3, consent_id = ?4, finished_at = ?5
         WHERE pk = ?1 AND state = 'pending'",
      )?
      .execute(params![pk, to.as_str(), error_type, consent_id, now])?;
    Ok(changed == 1)
  }

  fn find_consent(&mut self, scope_id: i64, arrangement_id: &str) -> Result<Option<ConsentRow>> {
    let sql = format!(
      "SELECT {CONSENT_COLUMNS} FROM consents c WHERE c.scope_id = ?1 AND c.arrangement_id = ?2"
    );
    Ok(
      self
        .conn
        .prepare_cached(&sql)?
        .query_row(params![scope_id, arrangement_id], read_consent)
        .optional()?,
    )
  }

  fn insert_consent(&mut self, scope_id: i64, account_pk: i64, c: &Consent) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "INSERT INTO consents (scope_id, arrangement_id, account_pk, end_user_id, institution_id,
           institution_name, account_ids, permissions, duration, created_at, last_consent, expires_at,
           active, updated_at, institution_logo, institution_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 1, ?10, ?13, ?14)",
      )?
      .execute(params![
        scope_id,
        c.arrangement_id,
        account_pk,
        c.end_user_id,
        c.institution_id,
        c.institution_name,
        to_json_text(&c.account_ids),
        to_json_text(&c.permissions),
        c.duration,
        c.created_at,
        c.last_consent,
        c.expires_at,
        c.institution_logo,
        c.institution_type.as_str(),
      ])?;
    Ok(())
  }

  fn renew_consent(&mut self, pk: i64, c: &Consent, now: i64) -> Result<bool> {
    let changed = self
      .conn
      .prepare_cached(
        "UPDATE consents SET institution_name = ?2, account_ids = ?3, permissions = ?4, duration = ?5,
           last_consent = ?6, expires_at = ?7, updated_at = ?10, institution_logo = ?8,
           institution_type = ?9
         WHERE pk = ?1 AND active = 1",
      )?
      .execute(params![
        pk,
        c.institution_name,
        to_json_text(&c.account_ids),
        to_json_text(&c.permissions),
        c.duration,
        c.last_consent,
        c.expires_at,
        c.institution_logo,
        c.institution_type.as_str(),
        now,
      ])?;
    Ok(changed == 1)
  }

  fn end_consent(
    &mut self,
    scope_id: i64,
    arrangement_id: &str,
    reason: &str,
    ended_at: i64,
    now: i64,
  ) -> Result<bool> {
    let changed = self
      .conn
      .prepare_cached(
        "UPDATE consents SET active = 0, termination_reason = ?3, terminated_at = ?4, updated_at = ?5
         WHERE scope_id = ?1 AND arrangement_id = ?2 AND active = 1",
      )?
      .execute(params![scope_id, arrangement_id, reason, ended_at, now])?;
    Ok(changed == 1)
  }

  fn due_consents(
    &mut self,
    scope_id: i64,
    account_pk: Option<i64>,
    now: i64,
  ) -> Result<Vec<String>> {
    let ids = self
      .conn
      .prepare_cached(
        "SELECT arrangement_id FROM consents
         WHERE scope_id = ?1 AND active = 1 AND expires_at <= ?2 AND (?3 IS NULL OR account_pk = ?3)
         ORDER BY expires_at, pk",
      )?
      .query_map(params![scope_id, now, account_pk], |r| r.get(0))?
      .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
  }

  fn list_consents(
    &mut self,
    scope_id: i64,
    account_pk: Option<i64>,
    active: Option<bool>,
    now: i64,
  ) -> Result<Vec<ConsentRow>> {
    let sql = format!(
      "SELECT {CONSENT_COLUMNS} FROM consents c
       WHERE c.scope_id = ?1 AND (?2 IS NULL OR c.account_pk = ?2)
         AND (?3 IS NULL
              OR (?3 = 1 AND c.active = 1 AND c.expires_at > ?4)
              OR (?3 = 0 AND (c.active = 0 OR c.expires_at <= ?4)))
       ORDER BY c.pk"
    );
    let rows = self
      .conn
      .prepare_cached(&sql)?
      .query_map(
        params![scope_id, account_pk, active.map(i64::from), now],
        read_consent,
      )?
      .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
  }

  fn consents_of(
    &mut self,
    scope_id: i64,
    account_pk: i64,
    active_only: bool,
  ) -> Result<Vec<String>> {
    let sql = if active_only {
      "SELECT arrangement_id FROM consents WHERE scope_id = ?1 AND account_pk = ?2 AND active = 1
       ORDER BY pk"
    } else {
      "SELECT arrangement_id FROM consents WHERE scope_id = ?1 AND account_pk = ?2 ORDER BY pk"
    };
    let ids = self
      .conn
      .prepare_cached(sql)?
      .query_map(params![scope_id, account_pk], |r| r.get(0))?
      .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
  }

  fn move_all_consents(
    &mut self,
    scope_id: i64,
    from_pk: i64,
    to_pk: i64,
    to_id: &str,
    now: i64,
  ) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE consents SET account_pk = ?3, end_user_id = ?4, updated_at = ?5
         WHERE scope_id = ?1 AND account_pk = ?2",
      )?
      .execute(params![scope_id, from_pk, to_pk, to_id, now])?;
    self
      .conn
      .prepare_cached(
        "UPDATE auth_sessions SET account_pk = ?3 WHERE scope_id = ?1 AND account_pk = ?2",
      )?
      .execute(params![scope_id, from_pk, to_pk])?;
    Ok(())
  }

  fn move_consent(
    &mut self,
    scope_id: i64,
    arrangement_id: &str,
    from_pk: i64,
    to_pk: i64,
    to_id: &str,
    now: i64,
  ) -> Result<bool> {
    let changed = self
      .conn
      .prepare_cached(
        "UPDATE consents SET account_pk = ?4, end_user_id = ?5, updated_at = ?6
         WHERE scope_id = ?1 AND arrangement_id = ?2 AND account_pk = ?3",
      )?
      .execute(params![
        scope_id,
        arrangement_id,
        from_pk,
        to_pk,
        to_id,
        now
      ])?;
    Ok(changed == 1)
  }

  fn set_last_accessed(&mut self, scope_id: i64, arrangement_id: &str, now: i64) -> Result<()> {
    self
      .conn
      .prepare_cached(
        "UPDATE consents SET last_accessed = ?3 WHERE scope_id = ?1 AND arrangement_id = ?2",
      )?
      .execute(params![scope_id, arrangement_id, now])?;
    Ok(())
  }
}

#[cfg(test)]
mod tests {
  use rusqlite::Connection;
  use serde_json::Value;

  use super::SqliteTx;
  use crate::domain::consents::tests::{self as rules, Harness};
  use crate::store::Tx;

  struct Sqlite<'c> {
    conn: &'c Connection,
    tx: SqliteTx<'c>,
  }

  impl Harness for Sqlite<'_> {
    fn tx(&mut self) -> &mut dyn Tx {
      &mut self.tx
    }

    fn events(&mut self) -> Vec<(String, Value)> {
      self
        .conn
        .prepare("SELECT type, data FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| {
          let data: String = r.get(1)?;
          Ok((r.get(0)?, serde_json::from_str(&data).unwrap()))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }
  }

  fn run(body: fn(&mut dyn Harness)) {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    super::super::schema::migrate(&mut conn).unwrap();
    body(&mut Sqlite {
      conn: &conn,
      tx: SqliteTx::new(&conn),
    });
  }

  #[test]
  fn consent_rules_on_sqlite() {
    run(rules::a_refused_completion_changes_nothing);
    run(rules::session_state_machine);
    run(rules::consent_lifecycle_revoke_expire_renew);
    run(rules::renewal_of_a_consent_that_ended_meanwhile_creates_a_new_one);
    run(rules::account_deletion_and_merge);
  }
}

//! The auth_sessions and consents tables on PostgreSQL. Rows only; the rules are in
//! `domain::consents`. Lists (permissions, account ids) are stored as JSON text, as on SQLite.
//!
//! Every change of state the rules check (`finish_session`, `renew_consent`, `end_consent`,
//! `move_consent`) runs at once and answers its row count. Two transactions racing on one row
//! (two completions of a session, two sweeps of one lapsed consent) cannot both change it:
//! SERIALIZABLE fails the second (40001) and the engine runs its job again, which then finds
//! the row already finished and answers as SQLite would (`AUTH_SESSION_ALREADY_USED`, or
//! nothing left to record). Writes whose result no rule needs are queued.

use serde_json::Value;
use tokio_postgres::Row;

use super::conn::PgTx;
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

fn read_session(r: &Row) -> SessionRow {
  let state: String = r.get(9);
  SessionRow {
    pk: r.get(0),
    account_pk: r.get(1),
    oid: r.get(2),
    linked_account_id: r.get(3),
    redirect_uri: r.get(4),
    cancel_uri: r.get(5),
    institution_id: r.get(6),
    permissions: json_list(r.get(7)),
    arrangement_id: r.get(8),
    // The CHECK constraint allows nothing else.
    state: SessionState::parse(&state).unwrap_or(SessionState::Cancelled),
    error_type: r.get(10),
    consent_id: r.get(11),
    created_at: r.get(12),
    expires_at: r.get(13),
    finished_at: r.get(14),
  }
}

const CONSENT_COLUMNS: &str =
  "c.account_pk, c.arrangement_id, c.end_user_id, c.institution_id, c.institution_name,
   c.account_ids, c.permissions, c.duration, c.created_at, c.last_consent, c.expires_at, c.active,
   c.termination_reason, c.institution_logo, c.institution_type, c.last_accessed,
   (SELECT e.email FROM accounts e WHERE e.pk = c.account_pk), c.pk";

fn read_consent(r: &Row) -> ConsentRow {
  let reason: Option<String> = r.get(12);
  let kind: String = r.get(14);
  ConsentRow {
    pk: r.get(17),
    account_pk: r.get(0),
    consent: Consent {
      arrangement_id: r.get(1),
      end_user_id: r.get(2),
      institution_id: r.get(3),
      institution_name: r.get(4),
      account_ids: json_list(r.get(5)).unwrap_or_default(),
      permissions: json_list(r.get(6)).unwrap_or_default(),
      duration: r.get(7),
      created_at: r.get(8),
      last_consent: r.get(9),
      expires_at: r.get(10),
      active: r.get(11),
      termination_reason: reason.as_deref().and_then(Termination::parse),
      institution_logo: r.get(13),
      institution_type: InstitutionType::parse(&kind).unwrap_or_default(),
      last_accessed: r.get(15),
      end_user_email: r.get(16),
    },
  }
}

impl ConsentRows for PgTx<'_> {
  fn find_session(&mut self, scope_id: i64, session_hash: &[u8]) -> Result<Option<SessionRow>> {
    Ok(
      self
        .query_opt(
          &format!(
            "SELECT {SESSION_COLUMNS} FROM auth_sessions s JOIN accounts a ON a.pk = s.account_pk
             WHERE s.session_hash = $1 AND s.scope_id = $2"
          ),
          &[&session_hash, &scope_id],
        )?
        .as_ref()
        .map(read_session),
    )
  }

  fn insert_session(&mut self, scope_id: i64, session_hash: &[u8], row: &SessionRow) -> Result<()> {
    self.defer(
      "INSERT INTO auth_sessions (scope_id, oid, session_hash, account_pk, redirect_uri, cancel_uri,
         institution_id, permissions, arrangement_id, state, created_at, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
      vec![
        Box::new(scope_id),
        Box::new(row.oid.clone()),
        Box::new(session_hash.to_vec()),
        Box::new(row.account_pk),
        Box::new(row.redirect_uri.clone()),
        Box::new(row.cancel_uri.clone()),
        Box::new(row.institution_id.clone()),
        Box::new(row.permissions.as_deref().map(to_json_text)),
        Box::new(row.arrangement_id.clone()),
        Box::new(row.state.as_str()),
        Box::new(row.created_at),
        Box::new(row.expires_at),
      ],
    );
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
    let changed = self.execute(
      "UPDATE auth_sessions SET state = $2, error_type = $3, consent_id = $4, finished_at = $5
       WHERE pk = $1 AND state = 'pending'",
      &[&pk, &to.as_str(), &error_type, &consent_id, &now],
    )?;
    Ok(changed == 1)
  }

  fn find_consent(&mut self, scope_id: i64, arrangement_id: &str) -> Result<Option<ConsentRow>> {
    Ok(
      self
        .query_opt(
          &format!(
            "SELECT {CONSENT_COLUMNS} FROM consents c WHERE c.scope_id = $1 AND c.arrangement_id = $2"
          ),
          &[&scope_id, &arrangement_id],
        )?
        .as_ref()
        .map(read_consent),
    )
  }

  fn insert_consent(&mut self, scope_id: i64, account_pk: i64, c: &Consent) -> Result<()> {
    self.defer(
      "INSERT INTO consents (scope_id, arrangement_id, account_pk, end_user_id, institution_id,
         institution_name, account_ids, permissions, duration, created_at, last_consent, expires_at,
         active, updated_at, institution_logo, institution_type)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, TRUE, $10, $13, $14)",
      vec![
        Box::new(scope_id),
        Box::new(c.arrangement_id.clone()),
        Box::new(account_pk),
        Box::new(c.end_user_id.clone()),
        Box::new(c.institution_id.clone()),
        Box::new(c.institution_name.clone()),
        Box::new(to_json_text(&c.account_ids)),
        Box::new(to_json_text(&c.permissions)),
        Box::new(c.duration),
        Box::new(c.created_at),
        Box::new(c.last_consent),
        Box::new(c.expires_at),
        Box::new(c.institution_logo.clone()),
        Box::new(c.institution_type.as_str()),
      ],
    );
    Ok(())
  }

  fn renew_consent(&mut self, pk: i64, c: &Consent, now: i64) -> Result<bool> {
    let changed = self.execute(
      "UPDATE consents SET institution_name = $2, account_ids = $3, permissions = $4, duration = $5,
         last_consent = $6, expires_at = $7, updated_at = $10, institution_logo = $8,
         institution_type = $9
       WHERE pk = $1 AND active",
      &[
        &pk,
        &c.institution_name,
        &to_json_text(&c.account_ids),
        &to_json_text(&c.permissions),
        &c.duration,
        &c.last_consent,
        &c.expires_at,
        &c.institution_logo,
        &c.institution_type.as_str(),
        &now,
      ],
    )?;
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
    let changed = self.execute(
      "UPDATE consents SET active = FALSE, termination_reason = $3, terminated_at = $4, updated_at = $5
       WHERE scope_id = $1 AND arrangement_id = $2 AND active",
      &[&scope_id, &arrangement_id, &reason, &ended_at, &now],
    )?;
    Ok(changed == 1)
  }

  fn due_consents(
    &mut self,
    scope_id: i64,
    account_pk: Option<i64>,
    now: i64,
  ) -> Result<Vec<String>> {
    let rows = self.query(
      "SELECT arrangement_id FROM consents
       WHERE scope_id = $1 AND active AND expires_at <= $2
         AND ($3::bigint IS NULL OR account_pk = $3)
       ORDER BY expires_at, pk",
      &[&scope_id, &now, &account_pk],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
  }

  fn list_consents(
    &mut self,
    scope_id: i64,
    account_pk: Option<i64>,
    active: Option<bool>,
    now: i64,
  ) -> Result<Vec<ConsentRow>> {
    let rows = self.query(
      &format!(
        "SELECT {CONSENT_COLUMNS} FROM consents c
         WHERE c.scope_id = $1 AND ($2::bigint IS NULL OR c.account_pk = $2)
           AND ($3::boolean IS NULL
                OR ($3 AND c.active AND c.expires_at > $4)
                OR (NOT $3 AND (NOT c.active OR c.expires_at <= $4)))
         ORDER BY c.pk"
      ),
      &[&scope_id, &account_pk, &active, &now],
    )?;
    Ok(rows.iter().map(read_consent).collect())
  }

  fn consents_of(
    &mut self,
    scope_id: i64,
    account_pk: i64,
    active_only: bool,
  ) -> Result<Vec<String>> {
    let rows = self.query(
      "SELECT arrangement_id FROM consents
       WHERE scope_id = $1 AND account_pk = $2 AND (active OR NOT $3)
       ORDER BY pk",
      &[&scope_id, &account_pk, &active_only],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
  }

  fn move_all_consents(
    &mut self,
    scope_id: i64,
    from_pk: i64,
    to_pk: i64,
    to_id: &str,
    now: i64,
  ) -> Result<()> {
    self.defer(
      "UPDATE consents SET account_pk = $3, end_user_id = $4, updated_at = $5
       WHERE scope_id = $1 AND account_pk = $2",
      vec![
        Box::new(scope_id),
        Box::new(from_pk),
        Box::new(to_pk),
        Box::new(to_id.to_string()),
        Box::new(now),
      ],
    );
    self.defer(
      "UPDATE auth_sessions SET account_pk = $3 WHERE scope_id = $1 AND account_pk = $2",
      vec![Box::new(scope_id), Box::new(from_pk), Box::new(to_pk)],
    );
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
    let changed = self.execute(
      "UPDATE consents SET account_pk = $4, end_user_id = $5, updated_at = $6
       WHERE scope_id = $1 AND arrangement_id = $2 AND account_pk = $3",
      &[&scope_id, &arrangement_id, &from_pk, &to_pk, &to_id, &now],
    )?;
    Ok(changed == 1)
  }

  fn set_last_accessed(&mut self, scope_id: i64, arrangement_id: &str, now: i64) -> Result<()> {
    self.defer(
      "UPDATE consents SET last_accessed = $3 WHERE scope_id = $1 AND arrangement_id = $2",
      vec![
        Box::new(scope_id),
        Box::new(arrangement_id.to_string()),
        Box::new(now),
      ],
    );
    Ok(())
  }
}

#[cfg(test)]
mod tests {
  use serde_json::Value;

  use super::super::conn::{Mode, PgConn, PgTx};
  use super::super::tests::{server_url, unique_schema};
  use super::super::{schema, Target};
  use crate::domain::consents::tests::{self as rules, Harness};
  use crate::store::Tx;

  struct Pg<'c> {
    tx: PgTx<'c>,
  }

  impl Harness for Pg<'_> {
    fn tx(&mut self) -> &mut dyn Tx {
      &mut self.tx
    }

    fn events(&mut self) -> Vec<(String, Value)> {
      self
        .tx
        .query("SELECT type, data FROM events ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| {
          let data: String = r.get(1);
          (r.get(0), serde_json::from_str(&data).unwrap())
        })
        .collect()
    }
  }

  /// Runs `body` in a write transaction of a fresh schema, then rolls it back.
  fn run(body: fn(&mut dyn Harness)) {
    let target = Target::parse(&server_url(), &unique_schema()).unwrap();
    let mut conn = PgConn::connect(&target).unwrap();
    schema::migrate(&mut conn).unwrap();
    let mut h = Pg {
      tx: PgTx::new(&mut conn, Mode::Write),
    };
    body(&mut h);
    h.tx.rollback();
  }

  #[test]
  fn consent_rules_on_postgres() {
    run(rules::a_refused_completion_changes_nothing);
    run(rules::session_state_machine);
    run(rules::consent_lifecycle_revoke_expire_renew);
    run(rules::renewal_of_a_consent_that_ended_meanwhile_creates_a_new_one);
    run(rules::account_deletion_and_merge);
  }
}

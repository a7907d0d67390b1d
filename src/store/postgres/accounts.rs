//! The accounts and udf tables on PostgreSQL (and the identities an account read returns).
//! Rows only; the rules are in `domain::accounts` and `domain::end_users`.
//!
//! Writes whose result no rule needs (updates, UDF rows) are queued and go with the next read
//! or the commit. An insert of an id another transaction inserted at the same time must fail as
//! a serialization failure, not a unique violation: a plain `INSERT` reports 23505 when the
//! rules' look-up did not lock the index entry, but `ON CONFLICT DO NOTHING` under
//! `SERIALIZABLE` reports a conflicting row its snapshot cannot see as 40001. The engine then
//! runs the job again, which finds the row: the loser of a create race gets `ALREADY_EXISTS`,
//! of an upsert race updates the winner's row.

use std::collections::HashMap;

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::conn::PgTx;
use crate::accounts::{EndUserFields, ListFilter, UdfRow};
use crate::domain::accounts::{AccountPieces, AccountRow, AccountRows};
use crate::error::{Error, Result};
use crate::identities::Identity;

pub(super) const ROW_COLUMNS: &str =
  "a.pk, a.oid, a.name, a.has_app, a.app_id, a.credentials, a.created_at, a.updated_at, a.version, a.account_id,
   a.email, a.phone, a.abn";

const UDF_COLUMNS: &str = "u.key, u.value, u.oid, u.created_at, u.updated_at";

pub(super) const ID_COLUMNS: &str =
  "i.provider, i.user_id, i.connection, i.is_social, i.email, i.email_verified, i.profile_data, i.linked_at,
   i.connection_id";

pub(super) fn read_row(r: &Row) -> AccountRow {
  AccountRow {
    pk: r.get(0),
    oid: r.get(1),
    name: r.get(2),
    has_app: r.get(3),
    app_id: r.get(4),
    credentials: r.get(5),
    created_at: r.get(6),
    updated_at: r.get(7),
    version: r.get(8),
    account_id: r.get(9),
    end_user: EndUserFields {
      email: r.get(10),
      phone: r.get(11),
      abn: r.get(12),
    },
  }
}

/// The `UDF_COLUMNS` starting at column `at`.
fn read_udf(r: &Row, at: usize) -> UdfRow {
  let json: String = r.get(at + 1);
  UdfRow {
    key: r.get(at),
    value: serde_json::from_str(&json).unwrap_or(Value::Null),
    json,
    oid: r.get(at + 2),
    created_at: r.get(at + 3),
    updated_at: r.get(at + 4),
  }
}

/// The `ID_COLUMNS` starting at column `at`.
pub(super) fn read_identity(r: &Row, at: usize) -> Identity {
  let profile: Option<String> = r.get(at + 6);
  Identity {
    provider: r.get(at),
    user_id: r.get(at + 1),
    connection: r.get(at + 2),
    is_social: r.get(at + 3),
    email: r.get(at + 4),
    email_verified: r.get(at + 5),
    profile_data: profile.and_then(|p| match serde_json::from_str(&p) {
      Ok(Value::Object(m)) => Some(m),
      _ => None,
    }),
    linked_at: r.get(at + 7),
    connection_id: r.get(at + 8),
  }
}

/// An account with its UDF rows and identities in one statement (so in one snapshot, with or
/// without a transaction): each column of the UDF rows and identities as an array in their order
/// (NULL when there are none), after `ROW_COLUMNS`.
static PIECES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
  format!(
    "SELECT {ROW_COLUMNS},
       u.keys, u.vals, u.oids, u.created, u.updated,
       i.providers, i.user_ids, i.connections, i.socials, i.emails, i.verified, i.profiles,
       i.linked, i.connection_ids
     FROM accounts a
     CROSS JOIN LATERAL (
       SELECT array_agg(u.key ORDER BY u.pos) AS keys, array_agg(u.value ORDER BY u.pos) AS vals,
              array_agg(u.oid ORDER BY u.pos) AS oids,
              array_agg(u.created_at ORDER BY u.pos) AS created,
              array_agg(u.updated_at ORDER BY u.pos) AS updated
       FROM udf u WHERE u.account_pk = a.pk) u
     CROSS JOIN LATERAL (
       SELECT array_agg(i.provider ORDER BY i.linked_at, i.pk) AS providers,
              array_agg(i.user_id ORDER BY i.linked_at, i.pk) AS user_ids,
              array_agg(i.connection ORDER BY i.linked_at, i.pk) AS connections,
              array_agg(i.is_social ORDER BY i.linked_at, i.pk) AS socials,
              array_agg(i.email ORDER BY i.linked_at, i.pk) AS emails,
              array_agg(i.email_verified ORDER BY i.linked_at, i.pk) AS verified,
              array_agg(i.profile_data ORDER BY i.linked_at, i.pk) AS profiles,
              array_agg(i.linked_at ORDER BY i.linked_at, i.pk) AS linked,
              array_agg(i.connection_id ORDER BY i.linked_at, i.pk) AS connection_ids
       FROM identities i WHERE i.account_pk = a.pk) i
     WHERE a.scope_id = $1 AND a.account_id = $2"
  )
});

/// The row, UDF rows and identities of a [`PIECES_SQL`] row.
fn read_pieces(r: &Row) -> AccountPieces {
  const AT: usize = 13;
  let keys: Vec<String> = r.get::<_, Option<_>>(AT).unwrap_or_default();
  let vals: Vec<String> = r.get::<_, Option<_>>(AT + 1).unwrap_or_default();
  let oids: Vec<String> = r.get::<_, Option<_>>(AT + 2).unwrap_or_default();
  let created: Vec<i64> = r.get::<_, Option<_>>(AT + 3).unwrap_or_default();
  let updated: Vec<i64> = r.get::<_, Option<_>>(AT + 4).unwrap_or_default();
  let udf = keys
    .into_iter()
    .zip(vals)
    .zip(oids)
    .zip(created.into_iter().zip(updated))
    .map(|(((key, json), oid), (created_at, updated_at))| UdfRow {
      key,
      value: serde_json::from_str(&json).unwrap_or(Value::Null),
      json,
      oid,
      created_at,
      updated_at,
    })
    .collect();
  const ID: usize = AT + 5;
  let providers: Vec<String> = r.get::<_, Option<_>>(ID).unwrap_or_default();
  let user_ids: Vec<String> = r.get::<_, Option<_>>(ID + 1).unwrap_or_default();
  let mut connections: Vec<Option<String>> = r.get::<_, Option<_>>(ID + 2).unwrap_or_default();
  let socials: Vec<bool> = r.get::<_, Option<_>>(ID + 3).unwrap_or_default();
  let mut emails: Vec<Option<String>> = r.get::<_, Option<_>>(ID + 4).unwrap_or_default();
  let verified: Vec<bool> = r.get::<_, Option<_>>(ID + 5).unwrap_or_default();
  let mut profiles: Vec<Option<String>> = r.get::<_, Option<_>>(ID + 6).unwrap_or_default();
  let linked: Vec<i64> = r.get::<_, Option<_>>(ID + 7).unwrap_or_default();
  let mut connection_ids: Vec<Option<String>> = r.get::<_, Option<_>>(ID + 8).unwrap_or_default();
  let identities = providers
    .into_iter()
    .zip(user_ids)
    .enumerate()
    .map(|(n, (provider, user_id))| Identity {
      provider,
      user_id,
      connection: connections.get_mut(n).and_then(Option::take),
      is_social: socials.get(n).copied().unwrap_or_default(),
      email: emails.get_mut(n).and_then(Option::take),
      email_verified: verified.get(n).copied().unwrap_or_default(),
      profile_data: profiles.get_mut(n).and_then(Option::take).and_then(|p| {
        match serde_json::from_str(&p) {
          Ok(Value::Object(m)) => Some(m),
          _ => None,
        }
      }),
      linked_at: linked.get(n).copied().unwrap_or_default(),
      connection_id: connection_ids.get_mut(n).and_then(Option::take),
    })
    .collect();
  AccountPieces {
    row: read_row(r),
    udf,
    identities,
  }
}

type Arg = Box<dyn ToSql + Sync + Send>;

thread_local! {
  /// Whether the server of this thread's connection has ICU's root collation (see [`Fold`]).
  /// Each engine thread owns one connection, to one server.
  static HAS_ICU: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// How `search` lowercases the columns it matches: `search` itself is lowercased in Rust (all of
/// Unicode), and `lower()` folds as the database's `LC_CTYPE` does, which under `C` is ASCII
/// only. With ICU (most builds) the root collation folds all of Unicode, as SQLite does.
#[derive(Clone, Copy)]
enum Fold {
  Icu,
  Ctype,
}

impl Fold {
  fn lower(self, column: &str) -> String {
    match self {
      Fold::Icu => format!("lower({column} COLLATE \"und-x-icu\")"),
      Fold::Ctype => format!("lower({column})"),
    }
  }
}

/// `WHERE` clause and arguments for a list filter (`$1`, `$2`, ...).
fn filter_sql(scope_id: i64, filter: &ListFilter, fold: Fold) -> (String, Vec<Arg>) {
  let mut args: Vec<Arg> = vec![Box::new(scope_id)];
  let mut sql = String::from("a.scope_id = $1");
  if let Some(needle) = &filter.search {
    args.push(Box::new(needle.clone()));
    let n = args.len();
    sql.push_str(&format!(
      " AND (strpos({}, ${n}) > 0 OR strpos({}, ${n}) > 0)",
      fold.lower("a.account_id"),
      fold.lower("a.name")
    ));
  }
  for (key, value) in &filter.udf {
    args.push(Box::new(key.clone()));
    args.push(Box::new(value.clone()));
    let (k, v) = (args.len() - 1, args.len());
    sql.push_str(&format!(
      " AND EXISTS (SELECT 1 FROM udf u WHERE u.account_pk = a.pk AND u.key = ${k} AND u.value = ${v})"
    ));
  }
  (sql, args)
}

fn refs(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
  args
    .iter()
    .map(|a| a.as_ref() as &(dyn ToSql + Sync))
    .collect()
}

impl PgTx<'_> {
  /// The filter's SQL, asking the server once per thread whether it has ICU when a search needs
  /// it.
  fn filter(&mut self, scope_id: i64, filter: &ListFilter) -> Result<(String, Vec<Arg>)> {
    let mut fold = Fold::Ctype;
    if filter.search.is_some() {
      let icu = match HAS_ICU.with(|h| h.get()) {
        Some(known) => known,
        None => {
          let known = self
            .query_opt(
              "SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')",
              &[],
            )?
            .is_some_and(|r| r.get(0));
          HAS_ICU.with(|h| h.set(Some(known)));
          known
        }
      };
      if icu {
        fold = Fold::Icu;
      }
    }
    Ok(filter_sql(scope_id, filter, fold))
  }

  fn account_rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<AccountRow>> {
    Ok(self.query(sql, &refs(args))?.iter().map(read_row).collect())
  }
}

impl AccountRows for PgTx<'_> {
  fn find_account(&mut self, scope_id: i64, account_id: &str) -> Result<Option<AccountRow>> {
    Ok(
      self
        .query_opt(
          &format!(
            "SELECT {ROW_COLUMNS} FROM accounts a WHERE a.scope_id = $1 AND a.account_id = $2"
          ),
          &[&scope_id, &account_id],
        )?
        .as_ref()
        .map(read_row),
    )
  }

  fn find_account_pieces(
    &mut self,
    scope_id: i64,
    account_id: &str,
  ) -> Result<Option<AccountPieces>> {
    Ok(
      self
        .query_opt(&PIECES_SQL, &[&scope_id, &account_id])?
        .as_ref()
        .map(read_pieces),
    )
  }

  fn account_by_pk(&mut self, scope_id: i64, pk: i64) -> Result<Option<AccountRow>> {
    Ok(
      self
        .query_opt(
          &format!("SELECT {ROW_COLUMNS} FROM accounts a WHERE a.pk = $1 AND a.scope_id = $2"),
          &[&pk, &scope_id],
        )?
        .as_ref()
        .map(read_row),
    )
  }

  fn insert_account(&mut self, scope_id: i64, row: &AccountRow) -> Result<i64> {
    let inserted = self.query_opt(
      "INSERT INTO accounts (scope_id, account_id, oid, name, has_app, app_id, credentials, created_at, updated_at, version)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
       ON CONFLICT (scope_id, account_id) DO NOTHING RETURNING pk",
      &[
        &scope_id,
        &row.account_id,
        &row.oid,
        &row.name,
        &row.has_app,
        &row.app_id,
        &row.credentials,
        &row.created_at,
        &row.updated_at,
        &row.version,
      ],
    )?;
    inserted
      .map(|r| r.get(0))
      .ok_or_else(|| Error::storage("storage error: the account was inserted concurrently"))
  }

  fn update_account(&mut self, row: &AccountRow) -> Result<()> {
    self.defer(
      "UPDATE accounts SET name = $2, has_app = $3, app_id = $4, credentials = $5, updated_at = $6, version = $7
       WHERE pk = $1",
      vec![
        Box::new(row.pk),
        Box::new(row.name.clone()),
        Box::new(row.has_app),
        Box::new(row.app_id.clone()),
        Box::new(row.credentials.clone()),
        Box::new(row.updated_at),
        Box::new(row.version),
      ],
    );
    Ok(())
  }

  fn set_end_user_fields(
    &mut self,
    pk: i64,
    f: &EndUserFields,
    email_norm: Option<&str>,
  ) -> Result<()> {
    self.defer(
      "UPDATE accounts SET email = $2, email_norm = $3, phone = $4, abn = $5 WHERE pk = $1",
      vec![
        Box::new(pk),
        Box::new(f.email.clone()),
        Box::new(email_norm.map(str::to_string)),
        Box::new(f.phone.clone()),
        Box::new(f.abn.clone()),
      ],
    );
    Ok(())
  }

  fn delete_account(&mut self, pk: i64) -> Result<()> {
    self.defer("DELETE FROM accounts WHERE pk = $1", vec![Box::new(pk)]);
    Ok(())
  }

  fn load_udf(&mut self, pk: i64) -> Result<Vec<UdfRow>> {
    Ok(
      self
        .query(
          &format!("SELECT {UDF_COLUMNS} FROM udf u WHERE u.account_pk = $1 ORDER BY u.pos"),
          &[&pk],
        )?
        .iter()
        .map(|r| read_udf(r, 0))
        .collect(),
    )
  }

  fn load_udf_of(&mut self, pks: &[i64]) -> Result<HashMap<i64, Vec<UdfRow>>> {
    let mut out: HashMap<i64, Vec<UdfRow>> = HashMap::new();
    if pks.is_empty() {
      return Ok(out);
    }
    let pks = pks.to_vec();
    let rows = self.query(
      &format!(
        "SELECT u.account_pk, {UDF_COLUMNS} FROM udf u WHERE u.account_pk = ANY($1)
         ORDER BY u.account_pk, u.pos"
      ),
      &[&pks],
    )?;
    for r in &rows {
      out.entry(r.get(0)).or_default().push(read_udf(r, 1));
    }
    Ok(out)
  }

  fn insert_udf(&mut self, pk: i64, pos: i64, row: &UdfRow) -> Result<()> {
    self.defer(
      "INSERT INTO udf (account_pk, key, pos, value, oid, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
      vec![
        Box::new(pk),
        Box::new(row.key.clone()),
        Box::new(pos),
        Box::new(row.json.clone()),
        Box::new(row.oid.clone()),
        Box::new(row.created_at),
        Box::new(row.updated_at),
      ],
    );
    Ok(())
  }

  fn update_udf(&mut self, pk: i64, row: &UdfRow) -> Result<()> {
    self.defer(
      "UPDATE udf SET value = $3, updated_at = $4 WHERE account_pk = $1 AND key = $2",
      vec![
        Box::new(pk),
        Box::new(row.key.clone()),
        Box::new(row.json.clone()),
        Box::new(row.updated_at),
      ],
    );
    Ok(())
  }

  fn delete_udf(&mut self, pk: i64, key: &str) -> Result<()> {
    self.defer(
      "DELETE FROM udf WHERE account_pk = $1 AND key = $2",
      vec![Box::new(pk), Box::new(key.to_string())],
    );
    Ok(())
  }

  fn delete_all_udf(&mut self, pk: i64) -> Result<()> {
    self.defer("DELETE FROM udf WHERE account_pk = $1", vec![Box::new(pk)]);
    Ok(())
  }

  fn next_udf_pos(&mut self, pk: i64) -> Result<i64> {
    Ok(
      self
        .query_opt(
          "SELECT coalesce(max(pos) + 1, 0)::bigint FROM udf WHERE account_pk = $1",
          &[&pk],
        )?
        .map_or(0, |r| r.get(0)),
    )
  }

  fn append_udf(&mut self, pk: i64, rows: &[&UdfRow]) -> Result<()> {
    if rows.is_empty() {
      return Ok(());
    }
    let col = |f: fn(&UdfRow) -> String| rows.iter().map(|r| f(r)).collect::<Vec<String>>();
    let times = |f: fn(&UdfRow) -> i64| rows.iter().map(|r| f(r)).collect::<Vec<i64>>();
    // One statement, queued: the positions follow the last one as the statement finds it.
    self.defer(
      "INSERT INTO udf (account_pk, key, pos, value, oid, created_at, updated_at)
       SELECT $1, n.key, p.next + n.ord - 1, n.value, n.oid, n.created_at, n.updated_at
       FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
              WITH ORDINALITY AS n(key, value, oid, created_at, updated_at, ord),
            (SELECT coalesce(max(pos) + 1, 0)::bigint AS next FROM udf WHERE account_pk = $1) p",
      vec![
        Box::new(pk),
        Box::new(col(|r| r.key.clone())),
        Box::new(col(|r| r.json.clone())),
        Box::new(col(|r| r.oid.clone())),
        Box::new(times(|r| r.created_at)),
        Box::new(times(|r| r.updated_at)),
      ],
    );
    Ok(())
  }

  fn count_accounts(&mut self, scope_id: i64, filter: &ListFilter) -> Result<i64> {
    let (cond, args) = self.filter(scope_id, filter)?;
    Ok(
      self
        .query_opt(
          &format!("SELECT count(*) FROM accounts a WHERE {cond}"),
          &refs(&args),
        )?
        .map_or(0, |r| r.get(0)),
    )
  }

  fn accounts_page(
    &mut self,
    scope_id: i64,
    filter: &ListFilter,
    offset: i64,
    limit: i64,
  ) -> Result<Vec<AccountRow>> {
    let (cond, mut args) = self.filter(scope_id, filter)?;
    args.push(Box::new(limit));
    args.push(Box::new(offset));
    let (l, o) = (args.len() - 1, args.len());
    let sql = format!(
      "SELECT {ROW_COLUMNS} FROM accounts a WHERE {cond} ORDER BY a.pk LIMIT ${l} OFFSET ${o}"
    );
    self.account_rows(&sql, &args)
  }

  fn accounts_after(
    &mut self,
    scope_id: i64,
    filter: &ListFilter,
    after: i64,
    limit: i64,
  ) -> Result<Vec<AccountRow>> {
    let (cond, mut args) = self.filter(scope_id, filter)?;
    args.push(Box::new(after));
    args.push(Box::new(limit));
    let (a, l) = (args.len() - 1, args.len());
    let sql = format!(
      "SELECT {ROW_COLUMNS} FROM accounts a WHERE {cond} AND a.pk > ${a} ORDER BY a.pk LIMIT ${l}"
    );
    self.account_rows(&sql, &args)
  }

  fn accounts_by_end_user_email(
    &mut self,
    scope_id: i64,
    email_norm: &str,
  ) -> Result<Vec<AccountRow>> {
    let sql = format!(
      "SELECT {ROW_COLUMNS} FROM accounts a WHERE a.scope_id = $1 AND a.email_norm = $2 ORDER BY a.pk"
    );
    let args: Vec<Arg> = vec![Box::new(scope_id), Box::new(email_norm.to_string())];
    self.account_rows(&sql, &args)
  }

  fn identities_of(&mut self, pk: i64) -> Result<Vec<Identity>> {
    Ok(
      self
        .query(
          &format!(
            "SELECT {ID_COLUMNS} FROM identities i WHERE i.account_pk = $1 ORDER BY i.linked_at, i.pk"
          ),
          &[&pk],
        )?
        .iter()
        .map(|r| read_identity(r, 0))
        .collect(),
    )
  }

  fn identities_of_many(&mut self, pks: &[i64]) -> Result<HashMap<i64, Vec<Identity>>> {
    let mut out: HashMap<i64, Vec<Identity>> = HashMap::new();
    if pks.is_empty() {
      return Ok(out);
    }
    let pks = pks.to_vec();
    let rows = self.query(
      &format!(
        "SELECT i.account_pk, {ID_COLUMNS} FROM identities i WHERE i.account_pk = ANY($1)
         ORDER BY i.account_pk, i.linked_at, i.pk"
      ),
      &[&pks],
    )?;
    for r in &rows {
      out.entry(r.get(0)).or_default().push(read_identity(r, 1));
    }
    Ok(out)
  }
}

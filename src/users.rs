//! Auth0's view of linked accounts: every account is a user whose `user_id` is its
//! `linked_account_id`, and whose **own identity** comes first in `identities`, as Auth0 always
//! lists the primary identity at index 0.
//!
//! An id of the form `provider|user_id` (Auth0's `google-oauth2|1034`) has that provider and
//! user id as its own identity; any other id `x` has `{ provider: 'linkvault', user_id: x }`.
//! The mapping is one-to-one both ways ([`own_identity`], [`account_of_identity`]), which is
//! what lets linking `{ provider, user_id }` find the account it is the own identity of, and
//! merge it, as Auth0 does when linking an existing user. Pure rules, no storage.

use serde_json::{Map, Value};

use crate::accounts::Account;
use crate::identities::{normalize_email, parse_provider, Identity};

/// The provider of own identities of ids not of the form `provider|user_id`.
pub const OWN_PROVIDER: &str = "linkvault";

/// `(provider, user_id)` of an account's own identity.
pub fn own_identity(account_id: &str) -> (String, String) {
  if let Some((provider, user_id)) = account_id.split_once('|') {
    let valid = parse_provider(Some(&Value::String(provider.to_string()))).is_ok();
    if valid && provider != OWN_PROVIDER && !user_id.is_empty() {
      return (provider.to_string(), user_id.to_string());
    }
  }
  (OWN_PROVIDER.to_string(), account_id.to_string())
}

/// The id of the account whose own identity `(provider, user_id)` is (it may not exist).
pub fn account_of_identity(provider: &str, user_id: &str) -> String {
  if provider == OWN_PROVIDER {
    user_id.to_string()
  } else {
    format!("{provider}|{user_id}")
  }
}

/// Whether `identity` is the own identity of `account_id`.
pub fn is_own(account_id: &str, provider: &str, user_id: &str) -> bool {
  let (p, u) = own_identity(account_id);
  p == provider && u == user_id
}

/// The connection an identity reports: the one it was linked with, else its provider's name
/// (Auth0's connection names for social providers are the provider names).
pub fn connection_of(identity: &Identity) -> String {
  identity
    .connection
    .clone()
    .unwrap_or_else(|| identity.provider.clone())
}

/// Auth0's user object for an account.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
  pub user_id: String,
  pub email: Option<String>,
  pub email_verified: bool,
  pub name: Option<String>,
  pub created_at: i64,
  pub updated_at: i64,
  /// The own identity first, then the linked ones in the order they joined.
  pub identities: Vec<Identity>,
  /// The account's UDF as an object, in row order.
  pub app_metadata: Map<String, Value>,
}

/// The own identity as listed at index 0: the stored one when the account holds it (an account
/// created by an unlink, `github|9`, keeps that identity's profile), else a bare one.
fn own_first(account: &Account) -> Vec<Identity> {
  let (provider, user_id) = own_identity(&account.account_id);
  let mut rest = account.identities.clone();
  let own = match rest
    .iter()
    .position(|i| i.provider == provider && i.user_id == user_id)
  {
    Some(at) => rest.remove(at),
    None => Identity {
      connection: None,
      connection_id: None,
      is_social: false,
      email: None,
      email_verified: false,
      profile_data: None,
      linked_at: account.created_at,
      provider,
      user_id,
    },
  };
  let mut out = Vec::with_capacity(rest.len() + 1);
  out.push(own);
  out.extend(rest);
  out
}

impl From<&Account> for User {
  /// `email`: the end-user email (`createEndUser` / `updateEndUser`) when set, verified when an
  /// identity holds the same address verified; else the first identity with an email (own
  /// identity first) and its verification. Auth0 takes the root email from the primary identity.
  fn from(a: &Account) -> Self {
    let identities = own_first(a);
    let (email, email_verified) = match &a.end_user.email {
      Some(e) => {
        let norm = normalize_email(e);
        let verified = identities.iter().any(|i| {
          i.email_verified && i.email.as_deref().map(normalize_email).as_deref() == Some(&norm)
        });
        (Some(e.clone()), verified)
      }
      None => identities
        .iter()
        .find_map(|i| i.email.clone().map(|e| (Some(e), i.email_verified)))
        .unwrap_or((None, false)),
    };
    User {
      user_id: a.account_id.clone(),
      email,
      email_verified,
      name: a.name.clone(),
      created_at: a.created_at,
      updated_at: a.updated_at,
      identities,
      app_metadata: a
        .udf
        .iter()
        .map(|u| (u.key.clone(), u.value.clone()))
        .collect(),
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::accounts::{EndUserFields, UdfRow};
  use serde_json::json;

  #[test]
  fn own_identities_map_one_to_one() {
    let cases = [
      ("google-oauth2|1034", ("google-oauth2", "1034")),
      ("auth0|abc|def", ("auth0", "abc|def")),
      ("user_42", ("linkvault", "user_42")),
      ("linkvault|x", ("linkvault", "linkvault|x")),
      ("|x", ("linkvault", "|x")),
      ("bad provider|x", ("linkvault", "bad provider|x")),
      ("github|", ("linkvault", "github|")),
    ];
    for (id, (p, u)) in cases {
      assert_eq!(own_identity(id), (p.to_string(), u.to_string()), "{id}");
      assert_eq!(account_of_identity(p, u), id, "{id}");
      assert!(is_own(id, p, u));
    }
  }

  fn identity(provider: &str, user_id: &str, email: Option<&str>, verified: bool) -> Identity {
    Identity {
      provider: provider.into(),
      user_id: user_id.into(),
      connection: None,
      connection_id: None,
      is_social: true,
      email: email.map(str::to_string),
      email_verified: verified,
      profile_data: None,
      linked_at: 7,
    }
  }

  fn account(id: &str, identities: Vec<Identity>, email: Option<&str>) -> Account {
    Account {
      oid: "o".into(),
      org_id: "org".into(),
      account_id: id.into(),
      environment: "test".into(),
      name: Some("Ann".into()),
      udf: vec![UdfRow {
        key: "plan".into(),
        value: json!({"tier": "pro"}),
        json: "{}".into(),
        oid: "u".into(),
        created_at: 1,
        updated_at: 1,
      }],
      your_app: None,
      created_at: 1,
      updated_at: 2,
      version: 0,
      identities,
      end_user: EndUserFields {
        email: email.map(str::to_string),
        ..Default::default()
      },
    }
  }

  #[test]
  fn users_list_their_own_identity_first() {
    let a = account(
      "user_42",
      vec![identity("github", "9", Some("Ann@X.io"), true)],
      None,
    );
    let u = User::from(&a);
    assert_eq!(u.identities.len(), 2);
    assert_eq!(
      (
        u.identities[0].provider.as_str(),
        u.identities[0].user_id.as_str()
      ),
      ("linkvault", "user_42")
    );
    assert_eq!(connection_of(&u.identities[0]), "linkvault");
    assert_eq!(u.email.as_deref(), Some("Ann@X.io"));
    assert!(u.email_verified);
    assert_eq!(u.app_metadata["plan"], json!({"tier": "pro"}));
    // The stored own identity is listed once, first.
    let b = account(
      "github|9",
      vec![
        identity("google", "1", None, false),
        identity("github", "9", Some("b@x.io"), false),
      ],
      None,
    );
    let u = User::from(&b);
    assert_eq!(u.identities.len(), 2);
    assert_eq!(u.identities[0].provider, "github");
    assert!(u.identities[0].is_social);
    // The end-user email wins, verified only when an identity verified the same address.
    let c = account(
      "c",
      vec![identity("github", "9", Some("ANN@x.io "), true)],
      Some("ann@x.io"),
    );
    let u = User::from(&c);
    assert_eq!(u.email.as_deref(), Some("ann@x.io"));
    assert!(u.email_verified);
    let d = account("d", vec![], Some("d@x.io"));
    assert!(!User::from(&d).email_verified);
    assert_eq!(User::from(&account("e", vec![], None)).email, None);
  }
}

//! Webhook calls of a client (`createWebhook`, `listWebhooks`, `deleteWebhook`,
//! `listWebhookDeliveries`, `claimWebhookDeliveries`, `recordWebhookAttempt`) and the consent
//! page's `locateAuthSession`; the rules are in `domain::webhooks`.

use serde_json::Value;

use super::Vault;
use crate::clock::now_ms;
use crate::domain::webhooks::{
  self, parse_claim, parse_delivery_query, parse_filter, parse_id, parse_input, parse_outcome,
  Claimed, CreatedWebhook, Delivery, DeliveryPage, Webhook,
};
use crate::error::Error;
use crate::input;
use crate::store::{self, Pending};

impl Vault {
  /// `createWebhook`: a webhook of this client's scope; its secret is returned this once.
  pub fn create_webhook(&self, options: &Value) -> Pending<CreatedWebhook> {
    Pending::flatten(parse_input(options, &self.scope.environment).map(|input| {
      let (sealer, scope) = (self.sealer.clone(), self.scope.clone());
      store::write(&*self.store, move |tx| {
        webhooks::create(tx, &sealer, &scope, &input, now_ms())
      })
    }))
  }

  /// `listWebhooks`: webhooks of every scope of the store, filtered.
  pub fn list_webhooks(&self, options: Option<&Value>) -> Pending<Vec<Webhook>> {
    Pending::flatten(
      parse_filter(options)
        .map(|filter| store::read(&*self.store, move |tx| tx.list_webhooks(&filter))),
    )
  }

  /// `deleteWebhook`: by id, in any scope; resolves with the webhook as it was.
  pub fn delete_webhook(&self, id: &Value) -> Pending<Webhook> {
    Pending::flatten(
      parse_id(id).map(|id| store::write(&*self.store, move |tx| webhooks::delete(tx, &id))),
    )
  }

  pub fn list_webhook_deliveries(
    &self,
    id: &Value,
    query: Option<&Value>,
  ) -> Pending<DeliveryPage> {
    Pending::flatten((|| {
      let id = parse_id(id)?;
      let q = parse_delivery_query(query)?;
      Ok(store::read(&*self.store, move |tx| {
        webhooks::deliveries(tx, &id, &q)
      }))
    })())
  }

  /// Looks first with a read: an idle dispatcher polling costs no write transaction.
  pub fn claim_webhook_deliveries(&self, options: Option<&Value>) -> Pending<Vec<Claimed>> {
    Pending::flatten(parse_claim(options).map(|options| {
      let (engine, sealer) = (self.store.clone(), self.sealer.clone());
      let (answer, result) = Pending::channel();
      store::read(&*self.store, |tx| webhooks::has_work(tx, now_ms())).on_ready(move |work| {
        match work {
          Ok(true) => store::write(&*engine, move |tx| {
            webhooks::claim(tx, &sealer, options, now_ms())
          })
          .on_ready(move |r| {
            let _ = answer.send(r);
          }),
          Ok(false) => {
            let _ = answer.send(Ok(Vec::new()));
          }
          Err(e) => {
            let _ = answer.send(Err(e));
          }
        }
      });
      result
    }))
  }

  pub fn record_webhook_attempt(&self, id: &Value, outcome: &Value) -> Pending<Delivery> {
    Pending::flatten((|| {
      let id = match id {
        Value::Number(n) => n.as_i64().filter(|n| *n > 0),
        _ => None,
      }
      .ok_or_else(|| Error::validation("id", "id must be a delivery id (a positive integer)"))?;
      let outcome = parse_outcome(outcome)?;
      Ok(store::write(&*self.store, move |tx| {
        webhooks::record(tx, id, &outcome, now_ms())
      }))
    })())
  }

  /// The (org, environment) an auth session belongs to, from its `session_id`, in any scope of
  /// the store: how the consent page finds the client to act with. None if unknown.
  pub fn locate_auth_session(&self, session_id: &Value) -> Pending<Option<(String, String)>> {
    Pending::flatten(input::id(Some(session_id), "session_id", 256).map(|s| {
      store::read(&*self.store, move |tx| {
        webhooks::locate_auth_session(tx, &s)
      })
    }))
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::client::testing::{event, fresh, open, until_listed, On, BOTH};
  use crate::domain::events::types::{ACCOUNT_CREATED, ACCOUNT_DELETED, ACCOUNT_UPDATED};
  use crate::domain::webhooks::DeliveryState;
  use serde_json::json;

  fn claim(v: &Vault) -> Vec<Claimed> {
    v.claim_webhook_deliveries(Some(&json!({"limit": 100, "lease_ms": 60_000})))
      .wait()
      .unwrap()
  }

  fn answer(v: &Vault, c: &Claimed, status: i64) -> Delivery {
    v.record_webhook_attempt(
      &json!(c.id),
      &json!({"attempt": c.attempt, "status": status, "retry_base_ms": 1}),
    )
    .wait()
    .unwrap()
  }

  fn user_of(c: &Claimed) -> String {
    let body: Value = serde_json::from_str(&c.body).unwrap();
    body["data"]["end_user_id"]
      .as_str()
      .unwrap_or("")
      .to_string()
  }

  fn signed_by(c: &Claimed, secret: &str) -> bool {
    let t = c
      .signature
      .split(['=', ','])
      .nth(1)
      .unwrap()
      .parse::<i64>()
      .unwrap();
    crate::domain::webhook::verify(c.body.as_bytes(), &c.signature, secret.as_bytes(), 0, t)
      .unwrap()
  }

  #[test]
  fn delivers_in_order_per_end_user_and_retries() {
    for on in BOTH {
      in_order_and_retried(on);
    }
  }

  fn in_order_and_retried(on: On) {
    let v = open(&fresh(on), json!({"orgId": "org_1"}), 7);
    event(&v, ACCOUNT_CREATED, Some("before"));
    let created = v
      .create_webhook(&json!({"url": "https://h.example/hook"}))
      .wait()
      .unwrap();
    assert!(created.secret.as_str().starts_with("whsec_"));
    assert!(!format!("{created:?}").contains(created.secret.as_str()));
    // Events before the webhook existed are not its.
    assert!(claim(&v).is_empty(), "{on:?}");
    for u in ["u0", "u1", "u2"] {
      event(&v, ACCOUNT_CREATED, Some(u));
    }
    event(&v, ACCOUNT_UPDATED, Some("u0"));
    until_listed(&v, 5);
    let first = claim(&v);
    // One head per end user: u0's update waits for its creation.
    let mut users: Vec<String> = first.iter().map(user_of).collect();
    users.sort();
    assert_eq!(users, vec!["u0", "u1", "u2"], "{on:?}");
    for c in &first {
      assert_eq!(c.attempt, 1);
      let body: Value = serde_json::from_str(&c.body).unwrap();
      assert_eq!(c.message_id, body["message_id"]);
      assert!(signed_by(c, created.secret.as_str()));
    }
    // Leased: nothing more is handed out while they are in flight.
    assert!(claim(&v).is_empty());
    let u0 = first.iter().find(|c| user_of(c) == "u0").unwrap();
    let d = answer(&v, u0, 500);
    assert_eq!(
      (d.state, d.last_status),
      (DeliveryState::Pending, Some(500))
    );
    // u0 failed: its retry (same message, same bytes) comes before its second event.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let again = claim(&v);
    assert_eq!(again.len(), 1, "{on:?}");
    assert_eq!(
      (&again[0].message_id, &again[0].body, again[0].attempt),
      (&u0.message_id, &u0.body, 2)
    );
    // A stale outcome (attempt 1) changes nothing.
    assert_eq!(answer(&v, u0, 200).attempts, 2);
    assert_eq!(answer(&v, &again[0], 204).state, DeliveryState::Delivered);
    let next = claim(&v);
    assert_eq!(next.len(), 1);
    assert_eq!(user_of(&next[0]), "u0");
    assert!(next[0].message_id.parse::<i64>().unwrap() > u0.message_id.parse::<i64>().unwrap());
    let list = v.list_webhooks(None).wait().unwrap();
    assert_eq!((list.len(), list[0].pending), (1, 3));
    let page = v
      .list_webhook_deliveries(
        &json!(created.webhook.id),
        Some(&json!({"state": "delivered"})),
      )
      .wait()
      .unwrap();
    assert_eq!(page.deliveries.len(), 1);
    assert_eq!(page.deliveries[0].attempts, 2);
    v.close().wait().unwrap();
  }

  #[test]
  fn fails_after_five_attempts_then_the_line_moves_on() {
    for on in BOTH {
      five_attempts(on);
    }
  }

  fn five_attempts(on: On) {
    let v = open(&fresh(on), json!({"orgId": "org_1"}), 7);
    let w = v
      .create_webhook(&json!({"url": "http://h.example/x", "events": ["linked_account.created", "linked_account.updated"]}))
      .wait()
      .unwrap();
    event(&v, ACCOUNT_CREATED, Some("u1"));
    event(&v, ACCOUNT_UPDATED, Some("u1"));
    event(&v, ACCOUNT_DELETED, Some("u1"));
    until_listed(&v, 3);
    let mut last = None;
    for attempt in 1..=5 {
      std::thread::sleep(std::time::Duration::from_millis(20));
      let c = claim(&v);
      assert_eq!(c.len(), 1, "{on:?} attempt {attempt}");
      assert_eq!(c[0].attempt, attempt);
      last = Some(
        v.record_webhook_attempt(
          &json!(c[0].id),
          &json!({"attempt": attempt, "error": "connect ECONNREFUSED", "retry_base_ms": 1}),
        )
        .wait()
        .unwrap(),
      );
    }
    let last = last.unwrap();
    assert_eq!(last.state, DeliveryState::Failed);
    assert_eq!(last.last_error.as_deref(), Some("connect ECONNREFUSED"));
    // The line moves on to the update; the deletion is filtered out.
    let c = claim(&v);
    assert_eq!(c.len(), 1);
    let body: Value = serde_json::from_str(&c[0].body).unwrap();
    assert_eq!(body["data"]["event"], "linked_account.updated");
    answer(&v, &c[0], 200);
    assert!(claim(&v).is_empty());
    let all = v
      .list_webhook_deliveries(&json!(w.webhook.id), Some(&json!({"limit": 1})))
      .wait()
      .unwrap();
    assert_eq!(all.deliveries.len(), 1);
    let older = v
      .list_webhook_deliveries(&json!(w.webhook.id), Some(&json!({"before": all.next})))
      .wait()
      .unwrap();
    assert_eq!((older.deliveries.len(), older.next), (1, None));
    assert_eq!(v.list_webhooks(None).wait().unwrap()[0].failed, 1);
    // Deleting drops the records; later outcomes of its deliveries are NOT_FOUND.
    v.delete_webhook(&json!(w.webhook.id)).wait().unwrap();
    let code = |p: Pending<Delivery>| p.wait().unwrap_err().code();
    assert_eq!(
      code(v.record_webhook_attempt(&json!(c[0].id), &json!({"attempt": 1, "status": 200}))),
      "NOT_FOUND"
    );
    assert_eq!(
      v.delete_webhook(&json!(w.webhook.id))
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    assert_eq!(
      v.list_webhook_deliveries(&json!(w.webhook.id), None)
        .wait()
        .unwrap_err()
        .code(),
      "NOT_FOUND"
    );
    v.close().wait().unwrap();
  }

  #[test]
  fn sealed_secret_survives_a_restart_and_a_key_rotation() {
    for on in BOTH {
      secret_survives(on);
    }
  }

  fn secret_survives(on: On) {
    let at = fresh(on);
    let v = open(&at, json!({"orgId": "org_1"}), 7);
    let w = v
      .create_webhook(&json!({"url": "https://h.example/hook"}))
      .wait()
      .unwrap();
    let secret = w.secret.as_str().to_string();
    event(&v, ACCOUNT_CREATED, Some("a"));
    assert_eq!(claim(&v).len(), 1);
    // A crash mid-delivery: the process goes away without recording anything.
    v.close().wait().unwrap();
    let v = open(&at, json!({"orgId": "org_1"}), 7);
    // The lease has not run out: not handed out twice at once.
    assert!(claim(&v).is_empty());
    // Other scopes see the webhook in lists (store-wide) but not its events.
    let prod = open(
      &at,
      json!({"orgId": "org_1", "environment": "production"}),
      7,
    );
    event(&prod, ACCOUNT_CREATED, Some("p"));
    assert_eq!(prod.list_webhooks(None).wait().unwrap().len(), 1);
    let filtered = prod
      .list_webhooks(Some(&json!({"environment": "production"})))
      .wait()
      .unwrap();
    assert!(filtered.is_empty());
    let e = prod
      .create_webhook(&json!({"url": "http://h.example"}))
      .wait()
      .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("url"));
    prod.close().wait().unwrap();
    // A key rotation reseals the secret: a client holding only the new key signs with it.
    let r = v
      .rotate_encryption_key(&json!(crate::crypto::hex_encode(&[9; 32])))
      .wait()
      .unwrap();
    assert!(r.resealed >= 1);
    assert!(v.check_integrity().wait().unwrap().ok);
    v.close().wait().unwrap();
    let v = open(&at, json!({"orgId": "org_1"}), 9);
    event(&v, ACCOUNT_CREATED, Some("b"));
    let c = claim(&v);
    let b = c.iter().find(|c| user_of(c) == "b").unwrap();
    assert!(signed_by(b, &secret));
    v.close().wait().unwrap();
  }
}

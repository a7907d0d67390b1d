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

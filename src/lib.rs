//! linkvault: linked accounts, identity linking and session tokens on embedded SQLite.
//!
//! Layers, with imports running one way (domain <- store <- client <- binding):
//! - `domain`: the rules in plain Rust (no SQL, no napi), with the row traits they need.
//! - `store`: engines that only persist (`store::sqlite`), implementing those traits.
//! - `client`: `Vault`, one client: parses input and runs each call as a job on its store.
//! - `binding`: the thin Node-API layer that converts JS values, calls the client and turns
//!   errors into JS errors.
//!
//! `accounts`, `identities` and `consents` are still organised the older way (input parsing and
//! client methods in the top-level modules, SQL and part of the rules in `store`).
#![deny(clippy::all)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::await_holding_lock)]

pub mod accounts;
pub mod client;
pub mod clock;
pub mod consents;
pub mod crypto;
pub mod domain;
pub mod end_users;
pub mod error;
pub mod identities;
pub mod input;
pub mod scoped;
pub mod store;
pub mod users;

mod binding;
#[cfg(test)]
mod fuzz;

pub use error::{Error, ErrorKind, Result};

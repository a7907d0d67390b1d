//! linkvault: linked accounts, identity linking and session tokens on embedded SQLite.
//!
//! The crate has two layers. Everything outside `binding` is plain Rust with no napi types
//! (domain rules, crypto, storage) and is tested with `cargo test`; `binding` is the thin
//! Node-API layer that converts JS values, calls the core and turns core errors into JS errors.
#![deny(clippy::all)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::await_holding_lock)]

pub mod accounts;
pub mod admin;
pub mod apikeys;
pub mod clock;
pub mod consents;
pub mod crypto;
pub mod end_users;
pub mod error;
pub mod events;
pub mod identities;
pub mod input;
pub mod keys;
pub mod scoped;
pub mod store;
pub mod tokens;
pub mod users;
pub mod vault;
pub mod webhook;
pub mod webhooks;

mod binding;
#[cfg(test)]
mod fuzz;

pub use error::{Error, ErrorKind, Result};

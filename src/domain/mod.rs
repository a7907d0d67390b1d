//! The rules of linkvault, in plain Rust: types, validation, decisions, and the operations that
//! run them inside one transaction. No SQL and no napi here.
//!
//! What an operation needs from storage is a small trait next to it (`tokens::FamilyRows`,
//! `keys::MetaRows`, `events::EventLog`, ...): loads and saves of rows, nothing else. Each
//! storage engine implements them (`store::sqlite`, `store::postgres`), so a rule is written
//! once whatever the engine. Nothing in `domain` imports `store`, `client` or `binding`.
//!
//! Every operation that takes a transaction (`tx`) may be run again from the start on a fresh
//! transaction when the engine retries after a conflict: it reads what it needs from `tx`,
//! changes nothing outside it, and appends its events through it.

pub mod accounts;
pub mod admin;
pub mod apikeys;
pub mod consents;
pub mod end_users;
pub mod events;
pub mod identities;
pub mod keys;
pub mod scope;
pub mod tokens;
pub mod webhook;
pub mod webhooks;

pub use scope::Scope;

/// Longest `linked_account_id` (characters).
pub const MAX_ACCOUNT_ID_CHARS: usize = 256;

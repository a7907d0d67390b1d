//! The Node-API layer: converts JS input, calls the core, and maps core errors to JS errors
//! with `code`, `status` and `field`. Nothing here holds domain rules.

mod accounts;
mod admin;
mod apikeys;
mod client;
mod consents;
mod end_users;
mod events;
mod identities;
mod js;
mod json;
mod reliability;
mod scoped;
mod tokens;
mod users;
mod webhooks;

//! The Node-API layer: converts JS input, calls the core, and maps core errors to JS errors
//! with `code`, `status` and `field`. Nothing here holds domain rules.

mod accounts;
mod apikeys;
mod client;
mod consents;
mod events;
mod identities;
mod js;
mod json;
mod reliability;
mod scoped;
mod tokens;
mod webhooks;

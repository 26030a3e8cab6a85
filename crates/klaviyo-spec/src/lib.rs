//! Klaviyo's API as klsync uses it, written down once and shared by the client, the plan's cost
//! model and the emulator, so that they can never disagree:
//!
//! - [`operations`]: every operation klsync sends, with its method, path, rate limits and scopes.
//! - [`limits`]: Klaviyo's published limits and profile field names.
//! - [`types`]: resources and the JSON:API documents they travel in.
//!
//! Pure data and serde: no I/O, no async runtime.

// Library crates document every public item (issue 14); the workspace lints cover the rest.
#![warn(missing_docs)]

pub mod limits;
pub mod operations;
pub mod types;

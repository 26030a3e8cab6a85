//! Everything that talks to Klaviyo. Only `client` imports reqwest.

pub mod operations;

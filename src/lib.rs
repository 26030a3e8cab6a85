//! klsync: Klaviyo configuration as code.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! manifest (load + validate YAML)  ──▶ model::DesiredState
//! klaviyo (client, paced reads)    ──▶ model::LiveState      ──▶ plan::diff ──▶ Plan
//! Plan ──▶ render (text, markdown, JSON) ──▶ apply (journaled writes) ──▶ state (audit)
//! ```
//!
//! `manifest`, `model`, `plan` and `render` are pure: no network, database, clock or randomness.
//! Side effects live in `klaviyo` (HTTP), `state` (SQL) and `run` (the composition root that
//! builds clients and pools). The `emulator` is a faithful stand-in for Klaviyo used by the tests,
//! the benchmarks and `klsync demo`.

pub mod apply;
pub mod cli;
pub mod commands;
pub mod context;
pub mod crashpoint;
#[cfg(feature = "emulator")]
pub use klsync_emulator as emulator;
pub mod error;
pub mod interrupt;
pub mod klaviyo;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod progress;
mod run;
pub mod settings;
pub mod sql;
pub mod state;
pub mod sync;

// The pure core (crates/klsync-core), re-exported under the paths it always had.
pub use klsync_core::{data, drift, duration, import, model, plan, render};

pub use error::{Error, ExitStatus};
pub use run::{Output, main_entry, run};

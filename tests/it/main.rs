//! Every integration test of klsync, in one test binary: each file here was a binary of its own,
//! and each binary linked the whole crate (most of a 2-core CI run's build time went on those
//! links). Run one file's tests with `cargo test --test it <file>::`, e.g.
//! `cargo test --test it apply_cli::`.
//!
//! Tests share this process, so none may change process-wide state (the environment, the current
//! directory, a global tracing subscriber): the `klsync` binary runs as a child process with its
//! own environment, and a test that captures logs installs its subscriber for its own thread.

// A test binary has no public API: `pub` in its modules only means "shared between test files".
#![allow(unreachable_pub)]

mod plan_common;
mod support;

mod apply_cli;
mod ci_pr_comment;
mod ci_workflow_steps;
mod ci_workflows;
mod client_contract;
mod client_emulator;
mod client_hostile;
mod client_secrets;
mod client_wiremock;
mod conformance;
mod contract_spec_selftest;
mod contract_wire;
mod convergence;
mod emulator_api;
mod emulator_contract;
mod emulator_ops;
mod fuzz;
mod import_drift;
mod init_cli;
mod job_delay;
mod lifecycle_cli;
mod official_sdk;
mod ops_cli;
mod plan_diff;
mod plan_props;
mod plan_render;
mod record_http;
mod reliability;
mod scopes;
mod secrets_cli;
mod segment_examples;
mod sql_errors_cli;
mod sql_mysql;
mod sql_query_cli;
mod sql_query_manager;
mod sql_values;
mod state_store;
mod sync_engine;
mod target_resync;
mod validate_corpus;
mod validate_schema_cli;

//! klsync's pure core: no network, database, file system or async runtime. Everything here is a
//! function of its inputs, tested without I/O; the `klsync` package feeds it what it reads and
//! carries out what it decides. `.ci/run` fails if this crate's normal dependencies ever reach
//! tokio, reqwest, sqlx, axum or hyper.

// Library crates document every public item (issue 14); the workspace lints cover the rest.
#![warn(missing_docs)]

pub mod data;
pub mod drift;
pub mod duration;
pub mod import;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod ratelimit;
pub mod render;
pub mod sql_statement;

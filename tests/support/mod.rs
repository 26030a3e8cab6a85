//! Helpers shared by the integration tests. Each test binary uses a different part of it.
#![allow(dead_code, unused_macros, unused_imports)]

pub mod backend;
pub mod openapi;
pub mod project;
pub mod recorder;
pub mod scenario;

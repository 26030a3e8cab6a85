//! Helpers shared by the integration tests (the modules of the `it` test binary).
#![allow(dead_code, unused_macros, unused_imports)]

pub mod backend;
pub mod openapi;
pub mod project;
pub mod recorder;
pub mod scenario;
pub mod source;

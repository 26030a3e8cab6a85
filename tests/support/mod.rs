//! Helpers shared by the integration tests. Each test binary uses a different part of it.
#![allow(dead_code)]

pub mod openapi;
pub mod project;
pub mod recorder;

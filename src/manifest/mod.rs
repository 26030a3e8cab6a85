//! The manifest language: load YAML files, validate them, report every problem at once.

pub mod types;
pub mod yaml;

pub use types::*;

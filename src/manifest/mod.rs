//! The manifest language: load YAML files, validate them, report every problem at once.

pub mod diagnostic;
pub mod schema;
pub mod settings;
pub mod types;
pub mod yaml;

pub use diagnostic::{Diagnostic, Related, Severity};
pub use schema::{manifest_schema, settings_schema};
pub use settings::ProjectSettings;
pub use types::*;

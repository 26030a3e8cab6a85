//! One module per subcommand: each turns parsed arguments into work and an exit status.

pub mod apply;
pub mod demo;
pub mod docs;
pub mod drift;
pub mod emulator;
pub mod history;
pub mod import;
pub mod init;
pub mod plan;
pub mod query;
pub mod schema;
pub mod state;
pub mod validate;

//! One module per subcommand: each turns parsed arguments into work and an exit status.

pub mod docs;
pub mod emulator;
pub mod history;
pub mod query;
pub mod schema;
pub mod validate;

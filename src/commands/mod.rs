//! One module per subcommand: each turns parsed arguments into work and an exit status.

pub mod emulator;
pub mod query;
pub mod schema;
pub mod validate;

//! The `klsync` binary: parse the command line and hand over to the library.

/// mimalloc instead of the system allocator: a data sync allocates and frees a few small
/// values per row on two threads (the query reader and the planner), a pattern glibc's malloc
/// handles several times slower (see docs/BENCHMARKS.md, "Data syncs").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    klsync::main_entry()
}

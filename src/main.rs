//! The `baton` binary: glue over the crates (`baton-cli` parses the
//! command line and runs it).

use std::process::ExitCode;

// mimalloc serves the proxy's small per-request allocations from its
// fast path (glibc's tcache holds only 7 chunks per size); without
// transparent huge pages its idle RSS stays near glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    baton_cli::main()
}

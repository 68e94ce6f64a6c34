//! The `baton` binary: glue over the library.

use std::process::ExitCode;

// mimalloc serves the proxy's small per-request allocations from its
// fast path (glibc's tcache holds only 7 chunks per size); without
// transparent huge pages its idle RSS stays near glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(baton::supervisor::reaper::REAPER_ARG) {
        baton::supervisor::reaper::run_helper();
        return ExitCode::SUCCESS;
    }
    baton::cli::main()
}

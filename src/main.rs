//! The `baton` binary: glue over the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(baton::supervisor::reaper::REAPER_ARG) {
        baton::supervisor::reaper::run_helper();
        return ExitCode::SUCCESS;
    }
    baton::cli::main()
}

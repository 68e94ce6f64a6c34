//! `baton probe`: load through a URL, counting what failed.

use crate::{runtime, Failure};

/// Runs the probe; fails past `--max-failures`.
pub(crate) fn probe(args: &crate::probe::ProbeArgs) -> Result<(), Failure> {
    let (ok, failed, total) = runtime()?
        .block_on(crate::probe::run_and_report(args.clone()))
        .map_err(Failure::usage)?;
    if ok {
        return Ok(());
    }
    Err(Failure::failed(format!(
        "{failed} failures in {total} (allowed: {})",
        args.max_failures
    )))
}

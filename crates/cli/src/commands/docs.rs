//! `baton completions SHELL` and `baton man`: the command line described
//! from its own schema.

use std::io::Write;

use crate::{Cli, Failure};

/// Completions for `shell`, on stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "baton", &mut std::io::stdout());
    Ok(())
}

/// The man page, on stdout.
pub(crate) fn man() -> Result<(), Failure> {
    let command = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut out)
        .map_err(Failure::failed)?;
    // A page for each subcommand, after the main one, as `git help`
    // has them in one place.
    for sub in <Cli as clap::CommandFactory>::command().get_subcommands() {
        let name = format!("baton-{}", sub.get_name());
        clap_mangen::Man::new(sub.clone())
            .title(name)
            .render(&mut out)
            .map_err(Failure::failed)?;
    }
    std::io::stdout().write_all(&out).map_err(Failure::failed)?;
    Ok(())
}

//! Which daemon a command talks to, and about which app: as git finds its
//! repository, the CLI walks up from the current folder to the app's
//! baton.toml, then on up to a server file whose `[server] apps` lists it.
//! `--server` (or `BATON_SERVER`) names the server file, `--app` the app.

use std::path::{Path, PathBuf};

use super::{Cli, Failure};
use crate::config::{self, Setup};

/// The daemon and the app a command is for.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The daemon's state directory (its control socket).
    pub state_dir: PathBuf,
    /// The app, by name; none: the daemon's only app, or every app.
    pub app: Option<String>,
    /// The command was given at a server file, for no app in particular.
    pub at_server: bool,
}

/// Finds the daemon and the app for `cli`.
///
/// # Errors
/// A file that does not load (its error), or no baton.toml at all.
pub(crate) fn target(cli: &Cli) -> Result<Target, Failure> {
    if let Some(server) = &cli.server {
        let setup = Setup::load(server).map_err(Failure::usage)?;
        let app = cli.app.clone().or_else(|| app_of(&setup, &cli.config));
        return Ok(Target {
            state_dir: cli.state_dir.clone().unwrap_or_else(|| setup.state_dir()),
            at_server: app.is_none(),
            app,
        });
    }
    let file = nearest_config(&cli.config);
    if config::is_server_file(&file) {
        let setup = Setup::load(&file).map_err(Failure::usage)?;
        return Ok(Target {
            state_dir: cli.state_dir.clone().unwrap_or_else(|| setup.state_dir()),
            at_server: cli.app.is_none(),
            app: cli.app.clone(),
        });
    }
    if let Some(setup) = server_listing(&file) {
        let app = cli.app.clone().or_else(|| app_of(&setup, &file));
        return Ok(Target {
            state_dir: cli.state_dir.clone().unwrap_or_else(|| setup.state_dir()),
            at_server: false,
            app,
        });
    }
    Ok(Target {
        state_dir: super::state_dir(cli, &file)?,
        at_server: false,
        app: cli.app.clone(),
    })
}

/// `config` itself when it exists; else, for a relative name, the nearest
/// file of that name in the current folder or above it.
fn nearest_config(config: &Path) -> PathBuf {
    if config.exists() || config.is_absolute() {
        return config.to_path_buf();
    }
    let Ok(here) = std::env::current_dir() else {
        return config.to_path_buf();
    };
    here.ancestors()
        .map(|dir| dir.join(config))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| config.to_path_buf())
}

/// The server whose `[server] apps` lists the app file `file`: the nearest
/// baton.toml with a `[server]` above the app's folder.
fn server_listing(file: &Path) -> Option<Setup> {
    let file = file.canonicalize().ok()?;
    let app_dir = file.parent()?;
    for dir in app_dir.ancestors().skip(1) {
        let candidate = dir.join("baton.toml");
        if !config::is_server_file(&candidate) {
            continue;
        }
        let setup = Setup::load(&candidate).ok()?;
        if setup
            .apps
            .iter()
            .any(|a| a.path.canonicalize().ok().as_deref() == Some(&file))
        {
            return Some(setup);
        }
    }
    None
}

/// The name of the app of `setup` whose file is `file`.
fn app_of(setup: &Setup, file: &Path) -> Option<String> {
    let file = nearest_config(file).canonicalize().ok()?;
    (setup.apps.iter())
        .find(|a| a.path.canonicalize().ok().as_deref() == Some(&file))
        .map(|a| a.config.app.name.clone())
}

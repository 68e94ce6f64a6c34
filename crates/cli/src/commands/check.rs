//! `baton check`: a file (an app's or a server's) loaded and validated,
//! its errors naming file, line and field.

use std::path::Path;

use crate::config::{self, Setup};
use crate::{Cli, Failure};

pub(crate) fn check(cli: &Cli, json: bool) -> Result<(), Failure> {
    let path = cli.server.as_ref().unwrap_or(&cli.config);
    if config::is_server_file(path) {
        return check_server(path, json);
    }
    match config::load(&cli.config) {
        Ok(l) => {
            let c = &l.config;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "file": l.path, "app": c.app.name, "instances": c.web.instance_count(), "listen": c.proxy.listen_addrs()})
                );
            } else {
                println!(
                    "{}: ok (app {}, {} web instance{}, listening on {})",
                    l.path.display(),
                    c.app.name,
                    c.web.instance_count(),
                    crate::protocol::plural(c.web.instance_count() as usize),
                    c.proxy
                        .listen_addrs()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(())
        }
        Err(e) => Err(config_failure(e, json)),
    }
}

/// `baton check`'s answer to a configuration that does not load: the
/// error as JSON too with `--json`, exit 2.
fn config_failure(e: config::ConfigError, json: bool) -> Failure {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "file": e.file, "line": e.line, "field": e.field, "message": e.message})
        );
    }
    Failure::usage(e)
}

/// `baton check` on a server file: the server and every app it lists.
fn check_server(path: &Path, json: bool) -> Result<(), Failure> {
    match Setup::load(path) {
        Ok(setup) => {
            let apps: Vec<&str> = setup
                .apps
                .iter()
                .map(|a| a.config.app.name.as_str())
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "file": setup.path, "apps": apps, "listen": setup.proxy.listen_addrs()})
                );
            } else {
                println!(
                    "{}: ok (server of {} app{}: {})",
                    setup.path.display(),
                    apps.len(),
                    crate::protocol::plural(apps.len()),
                    apps.join(", ")
                );
            }
            Ok(())
        }
        Err(e) => Err(config_failure(e, json)),
    }
}

//! `baton systemd`: the unit files that run this app's daemon under systemd,
//! as `pm2 startup` writes one. The service is `Type=notify`; the socket unit
//! holds the public addresses, so that restarting Baton itself (to upgrade
//! it) refuses no connection.

use std::fmt::Write;
use std::path::Path;

use crate::config::Setup;

/// The service and socket units for `setup` (an app, or a server of
/// several), run by the binary `exe` as the user running this command, with
/// this command's `PATH` (systemd's own lacks a node installed under a home
/// folder, as pm2 knows).
pub(crate) fn units(setup: &Setup, exe: &Path) -> String {
    let apps: Vec<&str> = setup
        .apps
        .iter()
        .map(|a| a.config.app.name.as_str())
        .collect();
    let title = match setup.server {
        false => apps[0].to_owned(),
        true => (setup.base_dir.file_name())
            .map_or("server".into(), |n| n.to_string_lossy().into_owned()),
    };
    let name = format!("baton-{title}");
    let described = apps.join(", ");
    let config_path = std::path::absolute(&setup.path).unwrap_or(setup.path.clone());
    let dir = std::path::absolute(&setup.base_dir).unwrap_or(setup.base_dir.clone());
    // A stop lets open connections finish, then stops the instances.
    let kill_timeout = (setup.apps.iter())
        .map(|a| a.config.web.kill_timeout)
        .max()
        .unwrap_or_default();
    let stop_within =
        crate::daemon::SHUTDOWN_GRACE + kill_timeout + std::time::Duration::from_secs(5);
    let mut addresses = setup.proxy.listen_addrs();
    addresses.extend(setup.proxy.https_addrs());
    for app in &setup.apps {
        addresses.extend(app.config.tcp.values().map(|svc| svc.addr()));
    }

    let mut out = String::new();
    let _ = writeln!(out, "# /etc/systemd/system/{name}.service");
    let _ = writeln!(out, "[Unit]");
    let _ = writeln!(out, "Description=Baton: {described}");
    let _ = writeln!(out, "After=network.target {name}.socket");
    let _ = writeln!(out, "Requires={name}.socket");
    let _ = writeln!(out);
    let _ = writeln!(out, "[Service]");
    let _ = writeln!(out, "Type=notify");
    if let Some(user) = user() {
        let _ = writeln!(out, "User={user}");
    }
    if let Ok(path) = std::env::var("PATH") {
        let _ = writeln!(out, "Environment=PATH={path}");
    }
    let _ = writeln!(
        out,
        "WorkingDirectory={}",
        dir.display().to_string().replace('%', "%%")
    );
    let _ = writeln!(
        out,
        "ExecStart={} up --config {}",
        quoted(exe),
        quoted(&config_path)
    );
    let _ = writeln!(out, "ExecReload=/bin/kill -HUP $MAINPID");
    let _ = writeln!(out, "KillMode=mixed");
    let _ = writeln!(out, "TimeoutStopSec={}", stop_within.as_secs());
    let _ = writeln!(out, "Restart=on-failure");
    let _ = writeln!(out);
    let _ = writeln!(out, "[Install]");
    let _ = writeln!(out, "WantedBy=multi-user.target");
    let _ = writeln!(out);
    let _ = writeln!(out, "# /etc/systemd/system/{name}.socket");
    let _ = writeln!(out, "[Unit]");
    let _ = writeln!(out, "Description=Baton's public addresses for {described}");
    let _ = writeln!(out);
    let _ = writeln!(out, "[Socket]");
    for addr in &addresses {
        let _ = writeln!(out, "ListenStream={addr}");
    }
    // Baton's own IPv6 sockets are IPv6-only, so that 0.0.0.0 and [::] can
    // be listed side by side; systemd's must be too.
    if addresses.iter().any(std::net::SocketAddr::is_ipv6) {
        let _ = writeln!(out, "BindIPv6Only=ipv6-only");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "[Install]");
    let _ = writeln!(out, "WantedBy=sockets.target");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "# then: systemctl daemon-reload && systemctl enable --now {name}.socket {name}.service"
    );
    out
}

/// A path as one argument of an `ExecStart=` line: `%` is systemd's
/// specifier sign, and spaces split arguments unless quoted.
fn quoted(path: &Path) -> String {
    let text = path.display().to_string().replace('%', "%%");
    if text.contains(char::is_whitespace) || text.contains(['"', '\\']) {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        text
    }
}

/// The user running this command, unless root (a unit runs as root
/// without a `User=` line).
fn user() -> Option<String> {
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        return None;
    }
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(test)]
mod tests {
    use super::quoted;
    use std::path::Path;

    #[test]
    fn exec_start_arguments_are_quoted_when_they_must_be() {
        assert_eq!(quoted(Path::new("/usr/bin/baton")), "/usr/bin/baton");
        assert_eq!(
            quoted(Path::new("/srv/my app/baton.toml")),
            "\"/srv/my app/baton.toml\""
        );
        assert_eq!(
            quoted(Path::new("/srv/100%/baton.toml")),
            "/srv/100%%/baton.toml"
        );
    }
}

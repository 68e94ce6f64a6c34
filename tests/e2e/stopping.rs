//! How instances are asked to stop (`stop_signal`, `stop_to`, kill_timeout):
//! process managers such as egg-scripts get the signal once, through their
//! main process, and shut their app down cleanly.

use std::time::Duration;

use crate::common::*;

/// An Egg app started by egg-scripts through npx: four processes above
/// the app's workers, each a wrapper of the next.
fn egg_web(version: &str, stop_to: &str) -> String {
    format!(
        "[web]\n\
         command = \"npx egg-scripts start --port=$PORT --workers=1 --title=baton-egg-$BATON_INSTANCE\"\n\
         instances = 1\n\
         kill_timeout = \"20s\"\n\
         watch_after_switch = \"1s\"\n\
         {stop_to}\n\
         env = {{ APP_VERSION = \"{version}\" }}\n\
         [web.readiness]\nkind = \"http\"\npath = \"/\"\n"
    )
}

/// A daemon in a copy of tests/apps/egg, its node_modules linked.
fn egg_daemon(config: &str) -> Daemon {
    let app = installed_node_app("egg");
    let d = Daemon::prepare(config);
    copy_tree(&app, d.dir.path());
    std::os::unix::fs::symlink(app.join("node_modules"), d.path("node_modules")).unwrap();
    d.up()
}

/// Seed 000's Egg app under egg-scripts, deployed under load: 0 failed,
/// one switch, and the old egg master gets SIGTERM once (from egg-scripts,
/// which passes it on) and closes its workers: "close done, exiting with
/// code:0", never SIGKILL. Signalled as a group, egg-scripts passes the
/// signal on to a master that already had it; egg's master handles only
/// the first (`process.once`) and dies on the second, mid-shutdown.
#[test]
fn an_egg_app_under_egg_scripts_deploys_and_stops_once() {
    let d = egg_daemon(&egg_web("v1", ""));
    d.wait_ready(1);
    let report = d.across_switch(&["--concurrency", "4"], || {
        d.rewrite(&egg_web("v2", ""));
        let out = d.baton(&["deploy"]);
        assert!(out.status.success(), "{}\n{}", text(&out), d.output());
    });
    assert_clean_switch(&report, "v1", "v2");
    wait_until_or_show(
        Duration::from_secs(20),
        "the old egg master to close",
        || {
            d.output()
                .contains("[master] close done, exiting with code:0")
        },
        || d.output(),
    );
    let log = d.output();
    assert_eq!(
        log.matches("[master] master is killed by signal SIGTERM")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("sending SIGKILL"), "{log}");
}

/// A main process that does not pass the signal on (a shell with a trap
/// of its own): with `stop_to = "main"`, the default, only the shell gets
/// it, so its app is killed at kill_timeout; with `"group"` the app gets
/// it too and exits at once.
#[test]
fn stop_to_main_signals_the_main_process_and_group_signals_all() {
    let web = |stop_to: &str| {
        format!(
            "[web]\ncommand = \"trap : TERM; node server.js\"\nkill_timeout = \"1s\"\n{stop_to}\n"
        )
    };
    for (stop_to, killed) in [("", true), ("stop_to = \"group\"", false)] {
        let mut d = Daemon::start(&web(stop_to));
        d.wait_ready(1);
        assert!(d.stop().success());
        let log = d.output();
        assert_eq!(
            log.contains("still running 1s after SIGTERM; sending SIGKILL"),
            killed,
            "{stop_to:?}: {log}"
        );
    }
}

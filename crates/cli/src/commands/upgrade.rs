//! `baton upgrade`: asks the daemon to replace itself with this binary (or
//! the one named) and follows it until the new daemon serves.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::Method;

use crate::client::ApiClient;
use crate::protocol::plural;
use crate::protocol::State;
use crate::protocol::{Route, StatusReport, UpgradeReport, UpgradeRequest};
use crate::Failure;

/// How long the new daemon gets to have every web instance ready.
const READY_WITHIN: Duration = Duration::from_secs(600);

/// Runs the upgrade and prints what happened.
///
/// # Errors
/// A refused binary (exit 1, nothing changed), or a daemon that does not
/// come back ready.
pub(crate) async fn run(
    client: &ApiClient,
    binary: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    let exe = match binary {
        Some(b) => std::path::absolute(b),
        None => std::env::current_exe(),
    }
    .map_err(Failure::failed)?;
    let before: StatusReport = daemon_status(client).await?;
    if !json {
        eprintln!("checking {}", exe.display());
    }
    let request = UpgradeRequest {
        exe: exe.to_string_lossy().into_owned(),
    };
    let body = serde_json::to_value(&request).map_err(Failure::failed)?;
    let answer = client
        .send(Method::POST, &Route::Upgrade.url(None, &[]), Some(body))
        .await?;
    let report: UpgradeReport = crate::client::read_json(answer).await?;
    if !json {
        eprintln!(
            "{}: the daemon (pid {}) stops its instances and runs it; \
             the public sockets stay open, clients wait meanwhile",
            report.version, before.pid
        );
    }
    let after = match wait_for_new_daemon(client, &before).await {
        Ok(after) => after,
        Err(NotServing::Exited) => return Err(go_back(client, &report, &before).await),
        Err(NotServing::Failed(failure)) => return Err(failure),
    };
    if json {
        let out = serde_json::json!({
            "pid": after.pid,
            "from": before.version,
            "to": after.version,
            "exe": exe,
            "started": after.started,
            "ready": ready(&after),
        });
        println!("{out}");
    } else {
        let ready = ready(&after);
        println!(
            "upgraded: baton {} -> {} ({}), {ready} instance{} ready",
            before.version,
            after.version,
            exe.display(),
            plural(ready)
        );
    }
    Ok(())
}

fn ready(status: &StatusReport) -> usize {
    status
        .instances
        .iter()
        .filter(|i| i.state == State::Ready)
        .count()
}

/// Every web instance is ready, and there is one.
fn serving(status: &StatusReport) -> bool {
    let mut web = status.instances.iter().filter(|i| i.process.is_web());
    let first = web.next();
    first.is_some_and(|i| i.state == State::Ready) && web.all(|i| i.state == State::Ready)
}

/// Why the new daemon does not serve.
enum NotServing {
    /// Its process is gone: it failed to start.
    Exited,
    /// Anything else, said for a person.
    Failed(Failure),
}

/// The daemon as one report: the first app's, with every app's instances
/// (a server of several apps is upgraded whole).
async fn daemon_status(client: &ApiClient) -> Result<StatusReport, crate::client::ClientError> {
    let mut all: Vec<StatusReport> = client.get(&Route::Apps.url(None, &[])).await?;
    let rest: Vec<StatusReport> = all.drain(1.min(all.len())..).collect();
    let mut first = (all.pop())
        .ok_or_else(|| crate::client::ClientError::Daemon("the daemon runs no app".into()))?;
    first
        .instances
        .extend(rest.into_iter().flat_map(|s| s.instances));
    Ok(first)
}

/// Polls until a daemon started after `before` answers with every web
/// instance ready.
async fn wait_for_new_daemon(
    client: &ApiClient,
    before: &StatusReport,
) -> Result<StatusReport, NotServing> {
    let deadline = Instant::now() + READY_WITHIN;
    let mut said_started = false;
    loop {
        // Errors are expected while the socket is gone between the two.
        if let Ok(now) = daemon_status(client).await {
            if now.started != before.started {
                if !said_started {
                    said_started = true;
                    eprintln!("new daemon started; starting instances");
                }
                if serving(&now) {
                    return Ok(now);
                }
            }
        }
        // The same process runs the new binary: if it is gone, the new
        // daemon failed to start.
        if !crate::supervisor::procfs::is_running(before.pid) {
            return Err(NotServing::Exited);
        }
        if Instant::now() > deadline {
            return Err(NotServing::Failed(Failure::failed(format!(
                "no ready instance {READY_WITHIN:?} after the upgrade: see `baton logs` and {}",
                log_hint(client.state_dir()).display()
            ))));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The new daemon failed to start: starts the copy of the previous Baton
/// that the daemon kept, as `baton up --detach` would, and waits until it
/// serves. Under systemd, which starts the service again by itself, only
/// says where the copy is. Always a failure: the upgrade did not happen.
async fn go_back(client: &ApiClient, report: &UpgradeReport, before: &StatusReport) -> Failure {
    let exited = format!(
        "the new daemon exited during the upgrade; its log says why ({} when started \
         with --detach)",
        log_hint(client.state_dir()).display()
    );
    let (Some(previous), Some(config)) = (&report.previous, &report.config) else {
        return Failure::failed(exited);
    };
    if report.systemd {
        return Failure::failed(format!(
            "{exited}. systemd starts the service again with the binary it names; \
             the previous Baton ({}) is kept at {previous}",
            before.version
        ));
    }
    eprintln!(
        "{exited}; starting the previous Baton ({}) again",
        before.version
    );
    let started = tokio::process::Command::new(previous)
        .args(["up", "--detach", "--config", config, "--state-dir"])
        .arg(client.state_dir())
        .stdin(Stdio::null())
        // stdout is for the result alone (--json).
        .stdout(std::io::stderr())
        .status()
        .await;
    match started {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return Failure::failed(format!(
                "{exited}; the previous Baton did not start either ({status})"
            ))
        }
        Err(e) => {
            return Failure::failed(format!("{exited}; cannot run {previous}: {e}"));
        }
    }
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(now) = daemon_status(client).await {
            if serving(&now) {
                let ready = ready(&now);
                return Failure::failed(format!(
                    "{exited}. The previous Baton ({}) serves again: pid {}, {ready} instance{} ready",
                    now.version,
                    now.pid,
                    plural(ready)
                ));
            }
        }
        if Instant::now() > deadline {
            return Failure::failed(format!(
                "{exited}; the previous Baton started again, but no instance is ready \
                 {READY_WITHIN:?} later: see `baton logs`"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_hint(state_dir: &Path) -> PathBuf {
    state_dir.join("logs").join("daemon.log")
}

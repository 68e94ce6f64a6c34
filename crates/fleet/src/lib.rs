//! `baton fleet deploy|rollback|status`: one release rolled across servers
//! behind a load balancer (seeds 001 and 003), with the engines a team
//! already has: the balancer's health checks on each Baton's `/health`,
//! and OpenSSH. Baton grows no cluster of its own.
//!
//! For each batch of hosts, at once within the batch:
//!
//! ```text
//! baton offline ─▶ quiet (--lb-wait passed, nothing in flight, the request
//! count still) ─▶ ship (scp, a tarball made once) ─▶ baton deploy (its
//! progress streamed, prefixed with the host) ─▶ baton online ─▶ receiving
//! (the request count moves, or --lb-wait passed)
//! ```
//!
//! The first failure stops the rollout: that host goes online again on its
//! old release (Baton never switched it), the hosts after it are not
//! touched, and the report says which host runs what.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use baton_protocol as protocol;

pub(crate) mod ssh;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use self::ssh::{Host, Ssh};

/// How often a host's counters are read while waiting on its balancer.
const POLL: Duration = Duration::from_millis(250);
/// How much longer than `--lb-wait` a host may keep receiving requests
/// after `baton offline` before the rollout goes on anyway (a balancer that
/// never looks at /health: Baton's own deploy still drops nothing).
const QUIET_GRACE: Duration = Duration::from_secs(60);

/// The hosts of `--hosts a,b` (each in `default_dir`), or of a hosts file:
/// one `DESTINATION [REMOTE_DIR]` per line, `#` comments.
///
/// # Errors
/// An unreadable or empty list.
pub fn hosts(list: &[String], file: Option<&Path>, default_dir: &str) -> Result<Vec<Host>, String> {
    let mut hosts: Vec<Host> = list
        .iter()
        .filter(|d| !d.is_empty())
        .map(|d| Host {
            destination: d.clone(),
            dir: default_dir.to_string(),
        })
        .collect();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let Some(destination) = words.next() else {
                continue;
            };
            hosts.push(Host {
                destination: destination.to_string(),
                dir: words.next().unwrap_or(default_dir).to_string(),
            });
        }
    }
    if hosts.is_empty() {
        return Err("no hosts: give --hosts web1,web2 or --hosts-file FILE".into());
    }
    Ok(hosts)
}

/// What a host runs, as `baton status --json` there says.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostState {
    /// Its ssh destination.
    pub host: String,
    /// The app's folder there.
    pub dir: String,
    /// The release serving.
    pub release: Option<String>,
    /// Whether its `/health` tells a balancer to send traffic.
    pub online: bool,
    /// Ready instances.
    pub ready: usize,
    /// Requests answered since its daemon started.
    pub served: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reads `host`'s state.
pub(crate) async fn read(ssh: &Ssh, host: &Host) -> HostState {
    let mut state = HostState {
        host: host.destination.clone(),
        dir: host.dir.clone(),
        ..HostState::default()
    };
    let ran = match ssh.run(host, &["status", "--json"]).await {
        Ok(ran) => ran,
        Err(e) => {
            state.error = Some(format!("cannot run ssh: {e}"));
            return state;
        }
    };
    // `status` exits 3 or 4 for a degraded or down app, with its report.
    let Ok(report) = serde_json::from_str::<crate::protocol::StatusReport>(&ran.stdout) else {
        state.error = Some(last_words(&ran.stderr, &ran.stdout));
        return state;
    };
    state.release = report.release.clone();
    state.online = report.online;
    state.ready = (report.instances.iter())
        .filter(|i| i.state == crate::protocol::State::Ready)
        .count();
    state.served = report.instances.iter().map(|i| i.counts.served).sum();
    state.in_flight = (report.instances.iter())
        .map(|i| i.counts.in_flight as u64)
        .sum();
    state
}

/// Every host's state, read at once.
pub async fn status(ssh: &Ssh, hosts: &[Host]) -> Vec<HostState> {
    futures_util::future::join_all(hosts.iter().map(|h| read(ssh, h))).await
}

/// What the rollout does on each host.
#[derive(Debug, Clone)]
pub enum Change {
    /// `baton deploy` of a tarball shipped to each host, or of the app
    /// folder there in place.
    Deploy {
        /// The local tarball to ship (made once from SOURCE).
        tarball: Option<PathBuf>,
    },
    /// `baton rollback` (to a release id, or the previous one).
    Rollback {
        /// The release id.
        to: Option<String>,
    },
}

/// A rollout's settings.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The hosts, in order.
    pub hosts: Vec<Host>,
    /// Hosts changed at once.
    pub batch: usize,
    /// How long the balancer takes to notice /health.
    pub lb_wait: Duration,
    /// How hosts are reached.
    pub ssh: Ssh,
    /// Events as JSON lines instead of text.
    pub json: bool,
}

/// One thing that happened on one host, for the progress stream.
#[derive(Debug, Serialize)]
struct Event<'a> {
    event: &'a str,
    host: &'a str,
    at_ms: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
}

/// The rollout's end: every host's state, and the host that failed.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// `done` or `failed`.
    pub event: &'static str,
    /// Why it stopped, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every host, as it is now.
    pub hosts: Vec<HostState>,
}

impl Rollout {
    fn say(&self, began: Instant, host: &Host, event: &str, message: &str) {
        if self.json {
            let e = Event {
                event,
                host: &host.destination,
                at_ms: began.elapsed().as_millis() as u64,
                message,
            };
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
        } else if event == "output" {
            println!("{} | {message}", host.destination);
        } else {
            println!("{}: {message}", host.destination);
        }
    }

    /// Rolls `change` across the hosts, a batch at a time; stops at the
    /// first failure.
    pub async fn run(&self, change: &Change) -> Outcome {
        let began = Instant::now();
        let mut error = None;
        for batch in self.hosts.chunks(self.batch.max(1)) {
            let done = futures_util::future::join_all(
                batch.iter().map(|h| self.one_host(began, h, change)),
            )
            .await;
            let failed: Vec<String> = done.into_iter().filter_map(Result::err).collect();
            if !failed.is_empty() {
                error = Some(failed.join("; "));
                break;
            }
        }
        Outcome {
            event: if error.is_some() { "failed" } else { "done" },
            error,
            hosts: status(&self.ssh, &self.hosts).await,
        }
    }

    /// One host's turn; on a failure after `baton offline`, the host goes
    /// online again (on its old release: Baton never switched it).
    async fn one_host(&self, began: Instant, host: &Host, change: &Change) -> Result<(), String> {
        self.say(
            began,
            host,
            "offline",
            "baton offline: its /health answers 503",
        );
        self.baton(host, &["offline"]).await?;
        let changed = self.quiet_then_change(began, host, change).await;
        self.say(
            began,
            host,
            "online",
            "baton online: its /health answers 200",
        );
        let online = self.baton(host, &["online"]).await;
        let (Ok(()), Ok(())) = (&changed, &online) else {
            let why = [changed.err(), online.err()].into_iter().flatten();
            return Err(format!(
                "{}: {}",
                host.destination,
                why.collect::<Vec<_>>().join("; ")
            ));
        };
        self.wait_receiving(began, host).await;
        Ok(())
    }

    /// Waits until the balancer stopped sending, then makes the change.
    async fn quiet_then_change(
        &self,
        began: Instant,
        host: &Host,
        change: &Change,
    ) -> Result<(), String> {
        self.wait_quiet(began, host).await?;
        match change {
            Change::Deploy { tarball: None } => self.stream(began, host, &["deploy"]).await,
            Change::Deploy {
                tarball: Some(local),
            } => {
                let remote = format!(
                    "/tmp/baton-fleet-{}-{}.tgz",
                    std::process::id(),
                    host.destination
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                );
                self.say(
                    began,
                    host,
                    "ship",
                    &format!("copying the release to {remote}"),
                );
                self.ssh.copy(host, local, &remote).await?;
                let deployed = self.stream(began, host, &["deploy", &remote]).await;
                let _ = self.ssh.remove(host, &remote).await;
                deployed
            }
            Change::Rollback { to } => {
                let mut args = vec!["rollback"];
                args.extend(to.as_deref());
                self.stream(began, host, &args).await
            }
        }
    }

    /// `baton ARGS` on `host`, which must exit 0.
    async fn baton(&self, host: &Host, args: &[&str]) -> Result<(), String> {
        let ran = (self.ssh.run(host, args).await).map_err(|e| format!("cannot run ssh: {e}"))?;
        if ran.code == Some(0) {
            Ok(())
        } else {
            Err(format!(
                "`baton {}` failed: {}",
                args.join(" "),
                last_words(&ran.stderr, &ran.stdout)
            ))
        }
    }

    /// `baton ARGS` on `host` with its output streamed, which must exit 0.
    async fn stream(&self, began: Instant, host: &Host, args: &[&str]) -> Result<(), String> {
        let mut last = String::new();
        let code = self
            .ssh
            .stream(host, args, |line| {
                self.say(began, host, "output", line);
                last = line.to_string();
            })
            .await
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        if code == Some(0) {
            Ok(())
        } else {
            Err(format!("`baton {}` failed: {last}", args.join(" ")))
        }
    }

    /// After `baton offline`: at least `lb_wait`, then until nothing is in
    /// flight and the request count stood still between two readings.
    async fn wait_quiet(&self, began: Instant, host: &Host) -> Result<(), String> {
        let since = Instant::now();
        let mut last: Option<u64> = None;
        let mut ticks = tokio::time::interval(POLL);
        loop {
            ticks.tick().await;
            let state = read(&self.ssh, host).await;
            if let Some(e) = state.error {
                return Err(e);
            }
            let still = last == Some(state.served) && state.in_flight == 0;
            if since.elapsed() >= self.lb_wait && still {
                self.say(
                    began,
                    host,
                    "quiet",
                    &format!(
                        "the balancer stopped sending after {:.1}s",
                        since.elapsed().as_secs_f64()
                    ),
                );
                return Ok(());
            }
            if since.elapsed() >= self.lb_wait + QUIET_GRACE {
                self.say(
                    began,
                    host,
                    "quiet",
                    "still receiving requests past --lb-wait; going on (Baton's deploy drops none)",
                );
                return Ok(());
            }
            last = Some(state.served);
        }
    }

    /// After `baton online`: until its request count moves, or `lb_wait`.
    async fn wait_receiving(&self, began: Instant, host: &Host) {
        let since = Instant::now();
        let first = read(&self.ssh, host).await.served;
        let mut ticks = tokio::time::interval(POLL);
        while since.elapsed() < self.lb_wait {
            ticks.tick().await;
            if read(&self.ssh, host).await.served > first {
                self.say(
                    began,
                    host,
                    "receiving",
                    "the balancer sends it requests again",
                );
                return;
            }
        }
        self.say(
            began,
            host,
            "receiving",
            "no request within --lb-wait after online (is it behind the balancer?)",
        );
    }
}

/// The last line a failed command printed, for a report.
fn last_words(stderr: &str, stdout: &str) -> String {
    (stderr.lines().chain(stdout.lines()))
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// A `.tar.gz` of `source` in a new temporary folder: a tarball as is, a
/// directory packed once (without its `.baton` state and `.git`).
///
/// # Errors
/// When it cannot be read or written.
pub fn tarball(source: &Path) -> Result<(tempfile::TempDir, PathBuf), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = dir.path().join("release.tgz");
    if source.is_file() {
        std::fs::copy(source, &out).map_err(|e| format!("{}: {e}", source.display()))?;
        return Ok((dir, out));
    }
    let file = std::fs::File::create(&out).map_err(|e| e.to_string())?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    pack(&mut tar, source, Path::new("")).map_err(|e| format!("{}: {e}", source.display()))?;
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| e.to_string())?;
    Ok((dir, out))
}

fn pack<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        if rel.as_os_str().is_empty() && (name == ".baton" || name == ".git") {
            continue;
        }
        let path = rel.join(&name);
        if entry.file_type()?.is_dir() {
            tar.append_dir(&path, root.join(&path))?;
            pack(tar, root, &path)?;
        } else {
            tar.append_path_with_name(root.join(&path), &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_the_list_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts.txt");
        std::fs::write(
            &file,
            "# web servers\nweb2 /srv/other\n\ndeploy@web3  # the third\n",
        )
        .unwrap();
        let got = hosts(&["web1".into()], Some(&file), "/srv/shop").unwrap();
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|h| (h.destination.as_str(), h.dir.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("web1", "/srv/shop"),
                ("web2", "/srv/other"),
                ("deploy@web3", "/srv/shop")
            ]
        );
        assert!(hosts(&[], None, "/srv").unwrap_err().contains("no hosts"));
    }

    #[test]
    fn a_folder_is_packed_without_its_state() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("server.js"), "x").unwrap();
        std::fs::create_dir_all(src.path().join(".baton/releases")).unwrap();
        std::fs::create_dir_all(src.path().join("lib")).unwrap();
        std::fs::write(src.path().join("lib/a.js"), "y").unwrap();
        let (_keep, tgz) = tarball(src.path()).unwrap();
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(tgz).unwrap());
        let mut names: Vec<String> = tar::Archive::new(gz)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["lib", "lib/a.js", "server.js"]);
    }
}

//! `baton fleet`: three Baton nodes on 127.0.0.2, 127.0.0.3 and 127.0.0.4,
//! each its own folder and state, behind a real HAProxy that checks each
//! one's `/health`, reached through a real sshd on a loopback port with a
//! key made here. Needs `haproxy` and `sshd` (apt-get install haproxy
//! openssh-server).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const NODES: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
/// HAProxy checks each node's /health this often, and takes one failed
/// check as down (`inter`, `fall 1`).
const CHECK_MS: u64 = 300;

/// A test fleet: sshd, HAProxy and three nodes, stopped on drop.
struct Fleet {
    dir: tempfile::TempDir,
    app_port: u16,
    lb_port: u16,
    children: Vec<Child>,
}

fn need(tool: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(tool);
        if path.exists() {
            return path;
        }
    }
    panic!("{tool} is missing: apt-get install {package}");
}

impl Fleet {
    /// Starts the nodes (v1; `node_extra(n)` appended to node n's file),
    /// sshd and HAProxy, and waits until HAProxy sees every node up.
    fn start(node_extra: impl Fn(usize) -> String) -> Fleet {
        let sshd = need("sshd", "openssh-server");
        let haproxy = need("haproxy", "haproxy");
        let dir = tempfile::Builder::new()
            .prefix("baton-fleet")
            .tempdir()
            .unwrap();
        let mut fleet = Fleet {
            app_port: free_port(),
            lb_port: free_port(),
            children: Vec::new(),
            dir,
        };
        let admin_port = free_port();
        // The balancer and sshd take their loopback ports before the nodes'
        // instances take any: a port found free is only free until then.
        fleet.start_sshd(&sshd);
        fleet.start_haproxy(&haproxy, admin_port);
        for (n, ip) in NODES.iter().enumerate() {
            let folder = fleet.node(n);
            std::fs::create_dir_all(&folder).unwrap();
            write_app(&folder, "v1");
            std::fs::write(
                folder.join("baton.toml"),
                format!(
                    "[app]\nname = \"shop\"\n[proxy]\nlisten = \"{ip}:{}\"\n\
                     [daemon]\nmetrics_listen = \"{ip}:{admin_port}\"\n\
                     [web]\ncommand = \"node server.js\"\ninstances = 2\nwatch_after_switch = \"1s\"\n\
                     [web.readiness]\nkind = \"http\"\npath = \"/health\"\n{}",
                    fleet.app_port,
                    node_extra(n)
                ),
            )
            .unwrap();
            let log = std::fs::File::create(folder.join("daemon.out")).unwrap();
            let child = Command::new(bin())
                .arg("up")
                .current_dir(&folder)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            fleet.children.push(child);
        }
        for n in 0..NODES.len() {
            wait_until(Duration::from_secs(30), "a node's instances", || {
                fleet.status(n)["instances"]
                    .as_array()
                    .is_some_and(|i| i.iter().filter(|i| i["state"] == "ready").count() == 2)
            });
        }
        wait_until_or_show(
            Duration::from_secs(20),
            "HAProxy to see every node up",
            || fleet.all_up(),
            || {
                format!(
                    "{:?}\n{}",
                    fleet.servers(),
                    std::fs::read_to_string(fleet.path("haproxy.log")).unwrap_or_default()
                )
            },
        );
        fleet
    }

    /// Whether HAProxy answers and sees every node up.
    fn all_up(&self) -> bool {
        let servers = self.servers();
        servers.len() == NODES.len() && servers.iter().all(|(_, up)| *up)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Node `n`'s folder.
    fn node(&self, n: usize) -> PathBuf {
        self.path(&format!("node{}", n + 2))
    }

    /// `baton ARGS` in node `n`'s folder, here (not over ssh).
    fn baton(&self, n: usize, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .current_dir(self.node(n))
            .output()
            .unwrap()
    }

    fn status(&self, n: usize) -> Value {
        serde_json::from_slice(&self.baton(n, &["status", "--json"]).stdout).unwrap_or(Value::Null)
    }

    /// A user key, a host key, and sshd on a loopback port taking the key;
    /// an ssh config naming the nodes n2, n3 and n4; a hosts file with
    /// each node's folder.
    fn start_sshd(&mut self, sshd: &Path) {
        let port = free_port();
        for key in ["host_key", "user_key"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(self.path(key))
                .output()
                .expect("ssh-keygen (apt-get install openssh-client)");
            assert!(out.status.success(), "{}", text(&out));
        }
        std::fs::copy(self.path("user_key.pub"), self.path("authorized_keys")).unwrap();
        // sshd's privilege separation folder, which its package makes at boot.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nPidFile {}\nSubsystem sftp internal-sftp\n",
            self.path("host_key").display(),
            self.path("authorized_keys").display(),
            self.path("sshd.pid").display()
        );
        std::fs::write(self.path("sshd_config"), config).unwrap();
        let log = std::fs::File::create(self.path("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(self.path("sshd_config"))
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        let user =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        let mut ssh_config = String::new();
        let mut hosts = String::new();
        for n in 0..NODES.len() {
            ssh_config.push_str(&format!(
                "Host n{}\n  HostName 127.0.0.1\n  Port {port}\n  User {}\n  IdentityFile {}\n  \
                 IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                n + 2,
                user.trim(),
                self.path("user_key").display()
            ));
            hosts.push_str(&format!("n{} {}\n", n + 2, self.node(n).display()));
        }
        std::fs::write(self.path("ssh_config"), ssh_config).unwrap();
        std::fs::write(self.path("hosts.txt"), hosts).unwrap();
        wait_until(Duration::from_secs(10), "sshd to take the key", || {
            Command::new("ssh")
                .arg("-F")
                .arg(self.path("ssh_config"))
                .args(["n2", "true"])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// HAProxy in front of the nodes, checking each one's /health on its
    /// admin port.
    fn start_haproxy(&mut self, haproxy: &Path, admin_port: u16) {
        let mut config = format!(
            "global\n  stats socket {} mode 600 level admin\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
             \n  retries 3\n  option redispatch\n\
             listen shop\n  bind 127.0.0.1:{}\n  balance roundrobin\n\
             \n  option httpchk GET /health\n  http-check expect status 200\n\
             \n  default-server inter {CHECK_MS}ms fall 1 rise 1\n",
            self.path("haproxy.sock").display(),
            self.lb_port
        );
        for (n, ip) in NODES.iter().enumerate() {
            config.push_str(&format!(
                "  server n{} {ip}:{} check port {admin_port}\n",
                n + 2,
                self.app_port
            ));
        }
        std::fs::write(self.path("haproxy.cfg"), config).unwrap();
        let log = std::fs::File::create(self.path("haproxy.log")).unwrap();
        let child = Command::new(haproxy)
            .args(["-db", "-f"])
            .arg(self.path("haproxy.cfg"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// HAProxy's view: each server and whether it is up, from its stats
    /// socket.
    fn servers(&self) -> Vec<(String, bool)> {
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.path("haproxy.sock")) else {
            return Vec::new();
        };
        let _ = s.write_all(b"show stat\n");
        let mut csv = String::new();
        let _ = s.read_to_string(&mut csv);
        csv.lines()
            .filter(|l| l.starts_with("shop,n"))
            .map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                (fields[1].to_string(), fields[17].starts_with("UP"))
            })
            .collect()
    }

    /// `baton fleet ARGS` with the test's ssh config, hosts and baton.
    fn fleet(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .arg("fleet")
            .args(args)
            .arg("--hosts-file")
            .arg(self.path("hosts.txt"))
            .arg("--ssh-config")
            .arg(self.path("ssh_config"))
            .args(["--remote-baton", bin()])
            .output()
            .unwrap()
    }

    /// `baton probe` through HAProxy.
    fn probe(&self) -> Probe {
        Probe::of(
            Command::new(bin())
                .arg("probe")
                .arg(format!("http://127.0.0.1:{}/", self.lb_port))
                .args(["--json", "--version-header", "x-version"])
                .args(["--duration", "300s", "--concurrency", "4"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// Once `probe`'s requests reach every node through HAProxy, `baton
    /// fleet deploy` of v2 with a 1 s `--lb-wait` and JSON events.
    fn deploy_v2_under(&self, _probe: &Probe) -> std::process::Output {
        wait_until(Duration::from_secs(20), "load through HAProxy", || {
            (0..NODES.len()).all(|n| {
                self.status(n)["instances"]
                    .as_array()
                    .is_some_and(|i| i.iter().any(|i| i["served"].as_u64() > Some(5)))
            })
        });
        let v2 = release("v2");
        self.fleet(&[
            "deploy",
            v2.path().to_str().unwrap(),
            "--lb-wait",
            "1s",
            "--json",
        ])
    }

    /// The version node `n` answers directly.
    fn version(&self, n: usize) -> String {
        let request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answer = raw_at(NODES[n], self.app_port, request).unwrap();
        answer.header("x-version").unwrap_or_default().to_string()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// A folder with the test app answering `version` (no baton.toml: each
/// node keeps its own).
fn release(version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), version);
    dir
}

/// The JSON events of a fleet run, and its outcome (the last line).
fn events(out: &std::process::Output) -> (Vec<Value>, Value) {
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let outcome = lines.pop().expect("an outcome");
    (lines, outcome)
}

/// When each host went offline and online again, from the events.
fn offline_windows(events: &[Value]) -> Vec<(String, u64, u64)> {
    let at = |host: &str, event: &str| {
        events
            .iter()
            .find(|e| e["host"] == host && e["event"] == event)
            .and_then(|e| e["at_ms"].as_u64())
    };
    let mut hosts: Vec<String> = events
        .iter()
        .filter_map(|e| e["host"].as_str().map(String::from))
        .collect();
    hosts.dedup();
    hosts
        .into_iter()
        .filter_map(|h| Some((h.clone(), at(&h, "offline")?, at(&h, "online")?)))
        .collect()
}

/// `baton fleet deploy` through HAProxy under load: every node switches to
/// v2, one at a time (no two offline at once), `fleet rollback` brings v1
/// back the same way, and the probe through the balancer sees 0 failed.
/// `fleet status` says what runs where; an offline node is out of HAProxy
/// within a few checks, and back after `online`.
#[test]
fn a_fleet_deploy_rolls_one_node_at_a_time_with_zero_failed() {
    let f = Fleet::start(|_| String::new());
    let probe = f.probe();
    let out = f.deploy_v2_under(&probe);
    assert!(out.status.success(), "{}", text(&out));
    let (events, outcome) = events(&out);
    assert_eq!(outcome["event"], "done", "{outcome:#}");
    let windows = offline_windows(&events);
    assert_eq!(windows.len(), 3, "{events:#?}");
    for pair in windows.windows(2) {
        assert!(
            pair[0].2 <= pair[1].1,
            "{} went offline before {} was online again: {windows:?}",
            pair[1].0,
            pair[0].0
        );
    }
    assert!(
        events.iter().any(|e| e["event"] == "output"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("serves all traffic")),
        "the deploys' progress is streamed: {events:#?}"
    );
    for n in 0..3 {
        assert_eq!(f.version(n), "v2", "node {n}");
    }
    let hosts = outcome["hosts"].as_array().unwrap();
    assert!(
        hosts.iter().all(|h| h["online"] == true && h["ready"] == 2),
        "{outcome:#}"
    );
    // And back, the same way.
    let out = f.fleet(&["rollback", "--lb-wait", "1s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("n4 | "),
        "progress by host: {}",
        text(&out)
    );
    for n in 0..3 {
        assert_eq!(f.version(n), "v1", "node {n}");
    }
    let r = probe.stop();
    assert_eq!(r["failed"], 0, "{r:#}");
    let last = (r["versions"].as_array().unwrap().iter())
        .max_by_key(|v| v["last_ms"].as_u64())
        .unwrap()
        .clone();
    assert_eq!(last["version"], "v1", "{r:#}");
    assert_eq!(r["versions"].as_array().unwrap().len(), 2, "{r:#}");

    let status = f.fleet(&["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status));
    let states: Value = serde_json::from_slice(&status.stdout).unwrap();
    let releases: Vec<&str> = (states.as_array().unwrap().iter())
        .map(|s| s["release"].as_str().unwrap())
        .collect();
    assert_eq!(releases.len(), 3);

    // Offline: HAProxy takes the node out at its next check.
    assert!(f.baton(0, &["offline"]).status.success());
    wait_until(
        Duration::from_millis(CHECK_MS * 10),
        "HAProxy to mark n2 down",
        || f.servers().iter().any(|(name, up)| name == "n2" && !up),
    );
    assert!(f.baton(0, &["online"]).status.success());
    wait_until(Duration::from_millis(CHECK_MS * 10), "n2 up again", || {
        f.all_up()
    });
}

/// A release that fails on the second host stops the rollout: the first
/// host runs the new release, the second and third the old one, every
/// host is online, `fleet deploy` exits 1, and the probe saw 0 failed.
#[test]
fn a_failure_on_the_second_host_stops_the_rollout() {
    // The second node builds every release, and its build fails.
    let f = Fleet::start(|n| {
        if n == 1 {
            "[releases]\nbuild = \"echo no space left; exit 3\"\n".into()
        } else {
            String::new()
        }
    });
    let before: Vec<String> = (0..3)
        .map(|n| f.status(n)["release"].as_str().unwrap().to_string())
        .collect();
    let probe = f.probe();
    let out = f.deploy_v2_under(&probe);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (events, outcome) = events(&out);
    assert_eq!(outcome["event"], "failed", "{outcome:#}");
    assert!(
        outcome["error"].as_str().unwrap().contains("n3"),
        "{outcome:#}"
    );
    assert!(
        !events.iter().any(|e| e["host"] == "n4"),
        "the third host was touched: {events:#?}"
    );
    assert_eq!(f.version(0), "v2");
    assert_eq!(f.version(1), "v1");
    assert_eq!(f.version(2), "v1");
    assert_ne!(f.status(0)["release"], before[0].as_str());
    assert_eq!(f.status(1)["release"], before[1].as_str());
    for h in outcome["hosts"].as_array().unwrap() {
        assert_eq!(h["online"], true, "{outcome:#}");
    }
    wait_until(
        Duration::from_millis(CHECK_MS * 10),
        "every node up in HAProxy",
        || f.all_up(),
    );
    let r = probe.stop();
    assert_eq!(r["failed"], 0, "{r:#}");
}

//! Automatic certificates against a real ACME server: Pebble (Debian's
//! `pebble` package, with `pebble-challtestsrv` as its DNS server, which
//! answers 127.0.0.1 for every name). Pebble's checks connect to Baton's
//! own listeners: the plain one for HTTP-01, the TLS one for TLS-ALPN-01.
//!
//! Each test starts its own Pebble, on its own ports, with a CA made here
//! for Pebble's own HTTPS (Baton trusts it through `[tls] acme_ca`), and
//! reads back the root Pebble signs with, for the clients to trust.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::{free_port, text, wait_until, Daemon};

const INSTALL: &str = "apt-get install pebble (it ships pebble and pebble-challtestsrv)";

/// Pebble and its DNS server (once run), killed when dropped.
struct Pebble {
    dir: tempfile::TempDir,
    port: u16,
    management: u16,
    dns: u16,
    dns_management: u16,
    children: Vec<Child>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Pebble {
    /// Pebble's files, for validating on `http_port` (HTTP-01) and
    /// `tls_port` (TLS-ALPN-01) and issuing certificates valid for
    /// `validity` seconds; not running yet.
    fn new(http_port: u16, tls_port: u16, validity: u64) -> Pebble {
        let dir = tempfile::Builder::new().prefix("pebble").tempdir().unwrap();
        let (port, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        // A CA for Pebble's own HTTPS, and its certificate for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "pebble listener CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity,
            }
        });
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        Pebble {
            dir,
            port,
            management,
            dns,
            dns_management,
            children: Vec::new(),
        }
    }

    /// Starts Pebble and its DNS server, and waits until Pebble answers.
    fn run(&mut self) {
        let (dir, dns, dns_management) = (self.dir.path(), self.dns, self.dns_management);
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv6",
                "",
            ])
            .stdout(log("challtestsrv.out"))
            .stderr(Stdio::from(log("challtestsrv.err")))
            .spawn()
            .unwrap_or_else(|e| panic!("pebble-challtestsrv: {e}; {INSTALL}"));
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No random pauses before validations; the 5 % of nonces Pebble
            // rejects by default stay (a client must retry them).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log("pebble.out"))
            .stderr(Stdio::from(log("pebble.err")))
            .spawn()
            .unwrap_or_else(|e| panic!("pebble: {e}; {INSTALL}"));
        self.children = vec![dns_server, pebble];
        wait_until(Duration::from_secs(20), "Pebble to answer", || {
            self.fetch(self.port, "/dir").is_some()
        });
        // Pebble's issuing root, for the clients of Baton to trust.
        let root = self
            .fetch(self.management, "/roots/0")
            .expect("Pebble's root");
        std::fs::write(self.path("roots.pem"), root).unwrap();
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// GET over HTTPS from Pebble, trusting the CA made for it.
    fn fetch(&self, port: u16, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sSf", "--max-time", "5", "--cacert"])
            .arg(self.path("ca.pem"))
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .expect("curl runs (apt-get install curl)");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn kill(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

/// A daemon with `hosts`, `[tls]` with `tls_extra`, metrics, and a Pebble
/// that validates on its ports and issues certificates valid for
/// `validity` seconds; neither started.
fn with_pebble(hosts: &[&str], tls_extra: &str, validity: u64) -> (Daemon, Pebble, u16) {
    let d = Daemon::prepare(
        "[web]\ncommand = \"node server.js\"\ninstances = 2\nenv = { APP_VERSION = \"v1\" }\n\
         [web.readiness]\nkind = \"http\"\npath = \"/health\"\n",
    );
    let (https_port, metrics_port) = (free_port(), free_port());
    let pebble = Pebble::new(d.port, https_port, validity);
    let hosts = serde_json::to_string(hosts).unwrap();
    let tls = format!(
        "[tls]\nacme_email = \"ops@shop.test\"\nacme_directory = {:?}\nacme_ca = {:?}\n{tls_extra}\n\
         [daemon]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n",
        pebble.directory(),
        pebble.path("ca.pem")
    );
    d.edit_config(|c| {
        let c = c.replace(
            "name = \"e2e\"",
            &format!("name = \"e2e\"\nhosts = {hosts}"),
        );
        let c = c.replace(
            "[web]",
            &format!("https_listen = \"127.0.0.1:{https_port}\"\n\n[web]"),
        );
        format!("{c}{tls}")
    });
    (d, pebble, https_port)
}

/// The `baton_certificate_expiry_timestamp_seconds` of `name`, from the
/// daemon's /metrics.
fn expiry_metric(d: &Daemon, name: &str) -> Option<u64> {
    let metrics = metrics_text(d);
    let prefix =
        format!("baton_certificate_expiry_timestamp_seconds{{name=\"{name}\",source=\"acme\"}} ");
    let line = metrics.lines().find(|l| l.starts_with(&prefix))?;
    line[prefix.len()..].trim().parse().ok()
}

/// The daemon's /metrics.
fn metrics_text(d: &Daemon) -> String {
    let config = std::fs::read_to_string(d.path("baton.toml")).unwrap();
    let at = config.find("metrics_listen = \"").unwrap() + "metrics_listen = \"".len();
    let addr = &config[at..at + config[at..].find('"').unwrap()];
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    common::get(port, "/metrics").expect("/metrics").body
}

/// curl `https://<name>:<port>/` trusting only `roots`; (exit code,
/// status, body and errors, the certificate's serial).
fn curl(name: &str, port: u16, roots: &Path, path: &str) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "40", "--cacert"])
        .arg(roots)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .expect("curl runs (apt-get install curl)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        out.status.code().unwrap_or(-1),
        status.to_string(),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// [`curl`] of `/`, which must answer 200; its body. `log` (the daemon's
/// output) is read for the message only when it does not.
fn served(name: &str, port: u16, roots: &Path, log: impl Fn() -> String) -> String {
    let (code, status, body) = curl(name, port, roots, "/");
    assert_eq!(
        (code, status.as_str()),
        (0, "200"),
        "{name}: {body}\n{}",
        log()
    );
    body
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The one ACME certificate in `baton status --json`.
fn acme_status(d: &Daemon) -> serde_json::Value {
    let status = d.status();
    let certificates = status["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    certificates
        .into_iter()
        .find(|c| c["source"] == "acme")
        .unwrap_or_else(|| panic!("no ACME certificate in status: {status:#}"))
}

/// TLS-ALPN-01: a client that comes before the first certificate waits for
/// it (here Baton starts before the ACME server, fails once, and tries
/// again 10 s later); one order covers both names; the certificate is
/// stored 0600 in a 0700 folder and served again after a restart without
/// the ACME server.
#[test]
fn a_certificate_is_issued_over_tls_alpn_01_and_kept_across_restarts() {
    let (d, mut pebble, https_port) = with_pebble(
        &["shop.test", "www.shop.test"],
        "acme_challenge = \"tls-alpn-01\"",
        3600,
    );
    let mut d = d.up();
    wait_until(Duration::from_secs(10), "the first attempt to fail", || {
        acme_status(&d)["state"] == "failing"
    });
    // A client now: no certificate exists, so its handshake waits. (Its
    // trust root is made only when Pebble starts: -k here; the one
    // certificate it can be served is the one issued.)
    let early = std::thread::spawn(move || {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "40", "-o", "/dev/null"])
            .args(["-w", "%{http_code}"])
            .args(["--resolve", &format!("shop.test:{https_port}:127.0.0.1")])
            .arg(format!("https://shop.test:{https_port}/"))
            .output()
            .expect("curl runs (apt-get install curl)");
        (out.status.code(), text(&out))
    });
    pebble.run();
    let (code, said) = early.join().unwrap();
    assert_eq!(code, Some(0), "{said}\n{}", d.output());
    assert!(said.starts_with("200"), "{said}");
    let roots = pebble.path("roots.pem");
    let body = served("shop.test", https_port, &roots, || d.output());
    assert!(body.starts_with("version=v1"), "{body}");
    served("www.shop.test", https_port, &roots, String::new);
    let cert = acme_status(&d);
    assert_eq!(cert["state"], "serving", "{cert}");
    assert_eq!(
        cert["names"],
        serde_json::json!(["shop.test", "www.shop.test"])
    );
    assert!(
        cert["not_after"].as_u64().unwrap() > cert["renew_at"].as_u64().unwrap(),
        "{cert}"
    );
    // Stored for the owner only.
    let acme = d.path(".baton/acme");
    assert_eq!(mode(&acme), 0o700);
    for file in ["account.json", "shop.test.crt", "shop.test.key"] {
        assert_eq!(mode(&acme.join(file)), 0o600, "{file}");
    }
    assert_eq!(
        expiry_metric(&d, "www.shop.test"),
        cert["not_after"].as_u64(),
        "/metrics: the expiry of each name"
    );
    let issued = std::fs::read(acme.join("shop.test.crt")).unwrap();
    // Restarted with Pebble gone: the stored certificate serves.
    d.stop();
    pebble.kill();
    let d = d.up();
    served("shop.test", https_port, &roots, || d.output());
    assert_eq!(std::fs::read(acme.join("shop.test.crt")).unwrap(), issued);
    assert_eq!(acme_status(&d)["state"], "serving");
}

/// HTTP-01: Pebble's check reaches Baton over plain HTTP, which answers it
/// itself even though plain HTTP is otherwise redirected to HTTPS.
#[test]
fn a_certificate_is_issued_over_http_01_past_the_redirect() {
    let (d, mut pebble, https_port) = with_pebble(
        &["blog.test"],
        "acme_challenge = \"http-01\"\nredirect_http = true",
        3600,
    );
    pebble.run();
    let d = d.up();
    let roots = pebble.path("roots.pem");
    served("blog.test", https_port, &roots, || d.output());
    // Any other plain request is still redirected.
    let plain = common::raw(
        d.port,
        "GET /x HTTP/1.1\r\nHost: blog.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(plain.status, 308, "{:?}", plain.body);
    assert_eq!(acme_status(&d)["state"], "serving");
}

/// Node's https client, a new connection (and handshake) per request, for
/// `ms` milliseconds, trusting `roots`; counts failures and the serials of
/// the certificates it was served.
const LOAD_JS: &str = r#"
const https = require('https');
const fs = require('fs');
const [port, roots, ms] = process.argv.slice(2);
const ca = fs.readFileSync(roots);
const until = Date.now() + Number(ms);
let ok = 0, failed = 0;
const errors = [], serials = {};
function one() {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, servername: 'shop.test', path: '/', ca,
                            agent: false, headers: { host: 'shop.test' } }, (res) => {
      const serial = res.socket.getPeerCertificate().serialNumber;
      serials[serial] = (serials[serial] || 0) + 1;
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 200) ok++; else { failed++; errors.push(res.statusCode); }
        resolve();
      });
    });
    req.on('error', (e) => { failed++; errors.push(e.message); resolve(); });
  });
}
async function worker() { while (Date.now() < until) await one(); }
Promise.all([worker(), worker(), worker(), worker()]).then(() => {
  console.log(JSON.stringify({ ok, failed, serials, errors: errors.slice(0, 5) }));
});
"#;

/// A short-lived certificate is renewed two thirds into its life while
/// clients make new connections all along: none fails, and they are
/// served the old certificate, then the new. Then a renewal that cannot
/// reach the ACME server keeps the old certificate serving, and shows in
/// `baton status` and /metrics.
#[test]
fn a_short_lived_certificate_is_renewed_under_load_and_a_failed_renewal_keeps_it() {
    let (d, mut pebble, https_port) =
        with_pebble(&["shop.test"], "acme_challenge = \"tls-alpn-01\"", 24);
    pebble.run();
    let d = d.up();
    let roots = pebble.path("roots.pem");
    served("shop.test", https_port, &roots, || d.output());
    let first = acme_status(&d);
    let renew_at = first["renew_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Load from now until 5 s past the renewal.
    let ms = (renew_at.saturating_sub(now) + 5) * 1000;
    let script = d.path("load.js");
    std::fs::write(&script, LOAD_JS).unwrap();
    let load = Command::new("node")
        .arg(&script)
        .arg(https_port.to_string())
        .arg(&roots)
        .arg(ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let done = load.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&done.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&done.stdout)));
    assert_eq!(report["failed"], 0, "{report}\n{}", d.output());
    assert!(report["ok"].as_u64().unwrap() > 50, "{report}");
    let serials = report["serials"].as_object().unwrap();
    assert_eq!(
        serials.len(),
        2,
        "the old certificate, then the renewed one: {report}"
    );
    let renewed = acme_status(&d);
    assert_eq!(renewed["state"], "serving", "{renewed}");
    assert!(
        renewed["not_after"].as_u64() > first["not_after"].as_u64(),
        "{first} then {renewed}"
    );

    // The ACME server goes away: the next renewal fails, and the
    // certificate in use goes on serving.
    pebble.kill();
    wait_until(Duration::from_secs(30), "the renewal to fail", || {
        acme_status(&d)["state"] == "failing"
    });
    let failing = acme_status(&d);
    assert!(
        failing["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failing}"
    );
    assert!(failing["next_try"].as_u64().is_some(), "{failing}");
    assert_eq!(failing["not_after"], renewed["not_after"], "{failing}");
    served("shop.test", https_port, &roots, String::new);
    let metrics = metrics_text(&d);
    assert!(
        metrics.contains("baton_certificate_acme_failing{name=\"shop.test\"} 1"),
        "{metrics}"
    );
    assert!(
        d.output().contains("the certificate in use (valid until"),
        "{}",
        d.output()
    );
}

/// A server of several apps with `[tls] acme_email`: a certificate per app
/// for its hosts; an app added by `baton reload` at the server gets its
/// own too.
#[test]
fn a_server_gets_a_certificate_per_app_and_for_an_app_added_later() {
    let dir = tempfile::Builder::new()
        .prefix("baton-acme-server")
        .tempdir()
        .unwrap();
    let (http_port, https_port) = (free_port(), free_port());
    let mut pebble = Pebble::new(http_port, https_port, 3600);
    pebble.run();
    let app = |name: &str| {
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(common::app_js(), folder.join("server.js")).unwrap();
        let toml = format!(
            "[app]\nname = \"{name}\"\nhosts = [\"{name}.test\", \"www.{name}.test\"]\n\
             [web]\ncommand = \"node server.js\"\nenv = {{ APP_VERSION = \"{name}\" }}\n\
             [web.readiness]\nkind = \"http\"\npath = \"/health\"\n"
        );
        std::fs::write(folder.join("baton.toml"), toml).unwrap();
    };
    let server = |apps: &[&str]| {
        let list: Vec<String> = apps.iter().map(|a| format!("\"{a}/baton.toml\"")).collect();
        let toml = format!(
            "[server]\napps = [{}]\n[proxy]\nlisten = \"127.0.0.1:{http_port}\"\n\
             https_listen = \"127.0.0.1:{https_port}\"\n[tls]\nacme_email = \"ops@shop.test\"\n\
             acme_directory = {:?}\nacme_ca = {:?}\n",
            list.join(", "),
            pebble.directory(),
            pebble.path("ca.pem")
        );
        std::fs::write(dir.path().join("baton.toml"), toml).unwrap();
    };
    app("shop");
    app("blog");
    server(&["shop", "blog"]);
    let out = std::fs::File::create(dir.path().join("daemon.out")).unwrap();
    let mut child = Command::new(common::bin())
        .arg("up")
        .current_dir(dir.path())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("daemon.out")).unwrap_or_default();
    wait_until(Duration::from_secs(20), "the server to answer", || {
        let out = Command::new(common::bin())
            .args(["apps"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        common::answered(&out)
    });
    let roots = pebble.path("roots.pem");
    for name in ["shop.test", "www.blog.test"] {
        served(name, https_port, &roots, log);
    }
    app("news");
    server(&["shop", "blog", "news"]);
    let reload = Command::new(common::bin())
        .args(["reload", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(reload.status.success(), "{}", text(&reload));
    let body = served("news.test", https_port, &roots, log);
    assert!(body.starts_with("version=news"), "{body}");
    let status = Command::new(common::bin())
        .args(["status", "--json", "--app", "news"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let names: Vec<&str> = (status["certificates"].as_array().unwrap().iter())
        .flat_map(|c| {
            c["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
        })
        .collect();
    for name in ["shop.test", "www.blog.test", "news.test"] {
        assert!(names.contains(&name), "{name} in {status:#}");
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

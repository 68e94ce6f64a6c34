//! HTTPS at the edge, with real clients: curl over HTTP/1.1 and HTTP/2
//! (ALPN), the certificate chosen by SNI, X-Forwarded-Proto, Node's https
//! client through a deploy, and the errors for unusable certificates.
//! Certificates are made here with rcgen, one self-signed pair per name.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common;
use crate::common::{free_port, text, wait_until, Daemon, Probe};

/// A self-signed certificate for `name`, written as `<name>.pem` and
/// `<name>.key` (0600) in `dir`.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

/// `c` with `https_listen` on `port` added to its `[proxy]` section.
fn with_https(c: &str, port: u16) -> String {
    let at = c.find("listen = ").expect("a [proxy] listen line");
    let end = at + c[at..].find('\n').expect("a line end");
    format!(
        "{}\nhttps_listen = \"127.0.0.1:{port}\"{}",
        &c[..end],
        &c[end..]
    )
}

fn web(env: &str) -> String {
    format!(
        "[web]\ncommand = \"node server.js\"\ninstances = 2\nenv = {{ {env} }}\n\
         [web.readiness]\nkind = \"http\"\npath = \"/health\"\n"
    )
}

/// A daemon serving HTTPS on its own port with certificates for `a.test`
/// and `b.test`, and plain HTTP as ever.
struct Https {
    d: Daemon,
    port: u16,
}

fn start_https(env: &str, tls_extra: &str) -> Https {
    let (d, port) = prepare_https(env, tls_extra);
    let d = d.up();
    d.wait_ready(2);
    Https { d, port }
}

/// The files of [`start_https`], not started; the HTTPS port.
fn prepare_https(env: &str, tls_extra: &str) -> (Daemon, u16) {
    let d = Daemon::prepare("");
    let port = free_port();
    let (a_cert, a_key) = certificate(d.dir.path(), "a.test");
    let (b_cert, b_key) = certificate(d.dir.path(), "b.test");
    let tls = format!(
        "[tls]\ncert = {a_cert:?}\nkey = {a_key:?}\ncertificates = [{{ cert = {b_cert:?}, key = {b_key:?} }}]\n{tls_extra}\n"
    );
    let web = web(env);
    d.edit_config(|c| format!("{}{web}{tls}", with_https(&c, port)));
    (d, port)
}

impl Https {
    /// curl to `https://<name>:<port><path>` trusting `ca`'s certificate
    /// only; `(exit code, "<http_version> <status> <hsts>", body)`.
    fn curl(&self, name: &str, ca: &str, path: &str, version: &str) -> (i32, String, String) {
        let out = Command::new("curl")
            .args(["-sS", version, "--max-time", "10"])
            .arg("--cacert")
            .arg(self.d.path(&format!("{ca}.pem")))
            .arg("--resolve")
            .arg(format!("{name}:{}:127.0.0.1", self.port))
            .args([
                "-w",
                "\n%{http_version} %{http_code} %header{strict-transport-security}",
            ])
            .arg(format!("https://{name}:{}{path}", self.port))
            .output()
            .expect("curl runs (apt-get install curl)");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (
            out.status.code().unwrap_or(-1),
            status.trim().to_string(),
            format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
        )
    }
}

/// HTTP/1.1 and HTTP/2 over TLS, each name with its own certificate, the
/// instance told the request came over https, and HSTS on every answer.
#[test]
fn https_over_http1_and_h2_with_the_certificate_for_each_name() {
    let h = start_https("APP_VERSION = \"v1\"", "hsts = \"max-age=60\"");
    let (code, status, body) = h.curl("a.test", "a.test", "/", "--http1.1");
    assert_eq!((code, status.as_str()), (0, "1.1 200 max-age=60"), "{body}");
    assert!(body.starts_with("version=v1"), "{body}");
    let (code, status, body) = h.curl("a.test", "a.test", "/", "--http2");
    assert_eq!(
        (code, status.as_str()),
        (0, "2 200 max-age=60"),
        "ALPN h2: {body}"
    );
    // SNI: b.test gets b.test's certificate, which a.test's would not pass.
    let (code, status, body) = h.curl("b.test", "b.test", "/", "--http1.1");
    assert_eq!((code, status.as_str()), (0, "1.1 200 max-age=60"), "{body}");
    let (code, _, body) = h.curl("b.test", "a.test", "/", "--http1.1");
    assert_eq!(
        code, 60,
        "b.test must not be served a.test's certificate: {body}"
    );
    // The instance learns the scheme, on both HTTP versions.
    for version in ["--http1.1", "--http2"] {
        let (code, _, body) = h.curl("a.test", "a.test", "/echo-headers", version);
        assert_eq!(code, 0, "{body}");
        let headers: serde_json::Value =
            serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(
            headers["x-forwarded-proto"], "https",
            "{version}: {headers}"
        );
    }
}

/// Plain HTTP is sent to HTTPS (308, same host and target, the HTTPS
/// port), except ACME's challenges; with `redirect_http = false` it is
/// served, and told it came over http.
#[test]
fn plain_http_is_redirected_to_https_unless_told_not_to() {
    let h = start_https("", "");
    let answer = common::raw(
        h.d.port,
        "GET /echo-headers?x=1 HTTP/1.1\r\nHost: a.test:80\r\n\r\n",
    )
    .unwrap();
    assert_eq!(answer.status, 308, "{:?}", answer.headers);
    let want = format!("https://a.test:{}/echo-headers?x=1", h.port);
    assert_eq!(answer.header("location"), Some(want.as_str()));
    let challenge = common::raw(
        h.d.port,
        "GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .unwrap();
    assert_eq!(challenge.status, 200, "{:?}", challenge.headers);
    // h2c (served by hyper, not Baton's own HTTP/1.1 server) too.
    let out = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "10"])
        .args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code} %{redirect_url}",
        ])
        .arg(format!("http://a.test:{}/x?y=2", h.d.port))
        .args(["--resolve", &format!("a.test:{}:127.0.0.1", h.d.port)])
        .output()
        .expect("curl");
    let want = format!("2 308 https://a.test:{}/x?y=2", h.port);
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{}", text(&out));

    let h = start_https("", "redirect_http = false");
    let plain = common::get(h.d.port, "/echo-headers").unwrap();
    assert_eq!(plain.status, 200);
    assert!(
        plain.body.contains("\"x-forwarded-proto\":\"http\""),
        "{}",
        plain.body
    );
}

/// Node's https client, keep-alive, through a deploy: every request is
/// answered, the last ones by the new release.
#[test]
fn a_deploy_over_https_under_load_fails_no_request() {
    let h = start_https("APP_VERSION = \"v1\"", "");
    let script = h.d.path("load.js");
    std::fs::write(
        &script,
        r#"
const https = require('https');
const fs = require('fs');
const [port, ca, ms] = process.argv.slice(2);
const agent = new https.Agent({ keepAlive: true, maxSockets: 4, ca: fs.readFileSync(ca) });
const until = Date.now() + Number(ms);
let ok = 0, failed = 0, last = '';
const errors = [];
function one() {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, servername: 'a.test', path: '/', agent,
                            headers: { host: 'a.test' } }, (res) => {
      let body = '';
      res.on('data', (d) => body += d);
      res.on('end', () => {
        if (res.statusCode === 200) { ok++; last = body.split(' ')[0]; } else { failed++; errors.push(res.statusCode); }
        resolve();
      });
    });
    req.on('error', (e) => { failed++; errors.push(e.message); resolve(); });
  });
}
async function worker() { while (Date.now() < until) await one(); }
Promise.all([worker(), worker(), worker(), worker()]).then(() => {
  console.log(JSON.stringify({ ok, failed, last, errors: errors.slice(0, 5) }));
  agent.destroy();
});
"#,
    )
    .unwrap();
    let load = Command::new("node")
        .arg(&script)
        .arg(h.port.to_string())
        .arg(h.d.path("a.test.pem"))
        .arg("6000")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    // Under load before the deploy starts.
    wait_until(Duration::from_secs(10), "the load's first answers", || {
        h.d.total("served") >= 20
    });
    h.d.edit_config(|c| c.replace("APP_VERSION = \"v1\"", "APP_VERSION = \"v2\""));
    let out = h.d.baton(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    let done = load.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&done.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&done.stdout)));
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["ok"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["last"], "version=v2", "{report}");
}

/// HTTPS without a certificate, and a key that is not the certificate's:
/// clear errors naming the field or the files, and nothing served.
#[test]
fn unusable_certificates_are_clear_errors() {
    let d = Daemon::prepare(&web(""));
    let port = free_port();
    d.edit_config(|c| with_https(&c, port));
    let out = d.baton(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("proxy.https_listen: needs a certificate"),
        "{}",
        text(&out)
    );

    // ACME without the names to get certificates for.
    let without_hosts = format!(
        "{}[tls]\nacme_email = \"ops@a.test\"\n",
        std::fs::read_to_string(d.path("baton.toml")).unwrap()
    );
    std::fs::write(d.path("acme.toml"), without_hosts).unwrap();
    let out = d.baton(&["check", "--config", "acme.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("acme.toml:16: tls.acme_email: needs [app] hosts"),
        "{}",
        text(&out)
    );

    let (a_cert, a_key) = certificate(d.dir.path(), "a.test");
    let (_, b_key) = certificate(d.dir.path(), "b.test");
    let up = || {
        Command::new(common::bin())
            .arg("up")
            .current_dir(d.dir.path())
            .output()
            .unwrap()
    };
    let base = std::fs::read_to_string(d.path("baton.toml")).unwrap();
    std::fs::write(
        d.path("baton.toml"),
        format!("{base}[tls]\ncert = {a_cert:?}\nkey = {b_key:?}\n"),
    )
    .unwrap();
    let out = up();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a mismatched key: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("the key does not match the certificate")
            && text(&out).contains("a.test.pem"),
        "{}",
        text(&out)
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // A key that cannot be read (root reads any mode: a missing file).
    let missing = d.path("gone.key");
    std::fs::write(
        d.path("baton.toml"),
        format!("{base}[tls]\ncert = {a_cert:?}\nkey = {missing:?}\n"),
    )
    .unwrap();
    let out = up();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("gone.key: No such file"),
        "{}",
        text(&out)
    );

    // The HTTPS port in use: named, with its field; nothing started.
    std::fs::write(
        d.path("baton.toml"),
        format!("{base}[tls]\ncert = {a_cert:?}\nkey = {a_key:?}\n"),
    )
    .unwrap();
    let taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = up();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "baton.toml: proxy.https_listen: cannot listen on 127.0.0.1:{port}"
        )),
        "{}",
        text(&out)
    );
    drop(taken);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", d.port)).is_err(),
        "the plain port was left open"
    );
}

/// A renewed certificate (new files moved over the old ones, as certbot
/// does) is served from the next handshake on, without a restart; a broken
/// file is named in the log, and the certificate in use goes on serving.
#[test]
fn changed_certificate_files_are_served_without_a_restart() {
    let h = start_https("", "");
    let pid = h.d.pid();
    let elsewhere = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(elsewhere.path(), "a.test");
    std::fs::copy(&cert, h.d.path("fresh.pem")).unwrap();
    let (code, _, body) = h.curl("a.test", "fresh", "/", "--http1.1");
    assert_eq!(code, 60, "the fresh certificate is not served yet: {body}");
    std::fs::rename(&key, h.d.path("a.test.key")).unwrap();
    std::fs::rename(&cert, h.d.path("a.test.pem")).unwrap();
    wait_until(Duration::from_secs(10), "the renewed certificate", || {
        h.curl("a.test", "fresh", "/", "--http1.1").0 == 0
    });
    assert_eq!(h.d.pid(), pid, "the daemon was restarted");

    std::fs::write(h.d.path("a.test.pem"), "not a certificate\n").unwrap();
    wait_until(
        Duration::from_secs(10),
        "the broken file in the log",
        || {
            h.d.output()
                .contains("a.test.pem: no PEM certificate in it")
        },
    );
    let (code, status, body) = h.curl("a.test", "fresh", "/", "--http1.1");
    assert_eq!((code, status.as_str()), (0, "1.1 200"), "{body}");
}

/// `baton systemd` puts the HTTPS address in the socket unit, and a daemon
/// given that socket (systemd's socket activation) serves HTTPS on it: it
/// could not bind the address itself, which this test holds.
#[test]
fn systemd_passes_the_https_socket() {
    let (d, port) = prepare_https("", "");
    let out = d.baton(&["systemd"]);
    assert!(out.status.success(), "{}", text(&out));
    let units = String::from_utf8(out.stdout).unwrap();
    let line = format!("ListenStream=127.0.0.1:{port}");
    assert!(units.lines().any(|l| l == line), "no {line:?} in\n{units}");
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let d = d.up_activated(&listener);
    d.wait_ready(2);
    let h = Https { d, port };
    let (code, status, body) = h.curl("a.test", "a.test", "/", "--http2");
    assert_eq!((code, status.as_str()), (0, "2 200"), "{body}");
}

/// `baton probe` over HTTPS (HTTP/1.1 and HTTP/2 by ALPN) and wss://,
/// with `--cacert` and `--resolve` as curl's, through a deploy: no request
/// fails, the version switches once, and every WebSocket is drained with
/// close 1001 and reconnects to v2. A probe that does not trust the
/// certificate fails every request.
#[test]
fn probe_over_https_and_wss_through_a_deploy() {
    let (d, port) = prepare_https("APP_VERSION = \"v1\"", "");
    d.edit_config(|c| {
        c.replace(
            "[web]\n",
            "[web]\nconnection_drain_timeout = \"2s\"\nwatch_after_switch = \"1s\"\n",
        )
    });
    let d = d.up();
    d.wait_ready(2);
    let resolve = format!("a.test:{port}:127.0.0.1");
    let ca = d.path("a.test.pem");
    let probe = |url: &str, extra: &[&str]| {
        Command::new(common::bin())
            .arg("probe")
            .arg(url)
            .arg("--cacert")
            .arg(&ca)
            .args([
                "--resolve",
                &resolve,
                "--json",
                "--version-prefix",
                "version=",
            ])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("baton probe")
    };
    let https = format!("https://a.test:{port}/");
    let before = d.instance_ids();
    let h1 = probe(&https, &["--duration", "300s", "--concurrency", "4"]);
    let h2 = probe(
        &https,
        &["--duration", "300s", "--concurrency", "4", "--http2"],
    );
    let wss = probe(
        &format!("wss://a.test:{port}/ws"),
        &[
            "--duration",
            "300s",
            "--concurrency",
            "10",
            "--interval",
            "100ms",
        ],
    );
    wait_until(
        Duration::from_secs(20),
        "10 WebSockets and requests",
        || d.total("connections") == 10 && d.total("served") >= 100,
    );
    d.edit_config(|c| c.replace("APP_VERSION = \"v1\"", "APP_VERSION = \"v2\""));
    let out = d.baton(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        Duration::from_secs(60),
        "v2 holds the 10 WebSockets",
        || d.total_of_new(&before, "connections") == 10,
    );
    // Each WebSocket sends at once on connecting; by the time v2 has
    // answered 40 more requests, every one has had its echo from v2.
    let served = d.total_of_new(&before, "served");
    wait_until(Duration::from_secs(60), "v2 answers", || {
        d.total_of_new(&before, "served") >= served + 40
    });
    for probe in [h1, h2] {
        common::assert_clean_switch(&Probe::of(probe).stop(), "v1", "v2");
    }
    let r = Probe::of(wss).stop();
    assert_eq!(r["failed_connects"], 0, "{r:#}");
    assert_eq!(r["abnormal_closes"], 0, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["close_codes"]["1001"], 10, "{r:#}");
    assert_eq!(r["last_versions"]["v2"], 10, "{r:#}");

    // b.test's name with a.test's certificate as the only root: refused.
    let refused = Command::new(common::bin())
        .arg("probe")
        .arg(format!("https://b.test:{port}/"))
        .arg("--cacert")
        .arg(&ca)
        .args(["--resolve", &format!("b.test:{port}:127.0.0.1")])
        .args(["--json", "--requests", "3", "--concurrency", "1"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let r: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(r["failed"], 3, "{r:#}");
}

/// `baton upgrade` keeps the HTTPS listener open through the exec: clients
/// making a new TLS connection per request, and clients keeping theirs,
/// see no failure, and the new binary serves HTTPS.
#[test]
fn an_upgrade_keeps_https_serving() {
    let h = start_https("APP_VERSION = \"v1\"", "");
    let install = tempfile::tempdir().unwrap();
    let next = install.path().join("baton-next");
    std::fs::copy(common::bin(), &next).unwrap();
    let probe = |extra: &[&str]| {
        Command::new(common::bin())
            .arg("probe")
            .arg(format!("https://a.test:{}/", h.port))
            .arg("--cacert")
            .arg(h.d.path("a.test.pem"))
            .args(["--resolve", &format!("a.test:{}:127.0.0.1", h.port)])
            .args(["--json", "--duration", "4s"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("baton probe")
    };
    let kept = probe(&["--concurrency", "4"]);
    let new_each_time = probe(&["--concurrency", "2", "--keepalive=false"]);
    wait_until(Duration::from_secs(20), "the probes' first answers", || {
        h.d.total("served") >= 20
    });
    let out = Command::new(&next)
        .args(["upgrade", "--json"])
        .current_dir(h.d.path("."))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for child in [kept, new_each_time] {
        let out = child.wait_with_output().unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        assert_eq!(report["failed"], 0, "{report:#}\n{}", h.d.output());
        assert!(report["requests"].as_u64().unwrap() > 0, "{report:#}");
    }
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", h.d.pid())).unwrap(),
        next.canonicalize().unwrap(),
        "the daemon runs the new binary"
    );
    assert!(h.d.total("served") > 0, "the new daemon served HTTPS");
    let (code, status, body) = h.curl("a.test", "a.test", "/", "--http2");
    assert_eq!((code, status.as_str()), (0, "2 200"), "{body}");
}

/// Static files over HTTPS: Baton's own HTTP/1.1 server (which cannot use
/// sendfile under TLS and reads the file instead) and h2 (through hyper)
/// both send a large file whole, a range of it, and HSTS.
#[test]
fn static_files_over_https_on_http1_and_h2() {
    let (d, port) = prepare_https("APP_VERSION = \"v1\"", "hsts = \"max-age=60\"");
    d.edit_config(|c| format!("{c}\n[static]\n"));
    let public = d.path("public");
    std::fs::create_dir_all(&public).unwrap();
    let large: String = (0..40_000).map(|i| format!("{:07}\n", i)).collect();
    std::fs::write(public.join("big.0123abcd.txt"), &large).unwrap();
    let h = Https { d: d.up(), port };
    h.d.wait_ready(2);
    for version in ["--http1.1", "--http2"] {
        let (code, status, body) = h.curl("a.test", "a.test", "/static/big.0123abcd.txt", version);
        let expected = if version == "--http2" { "2" } else { "1.1" };
        assert_eq!(
            (code, status.as_str()),
            (0, format!("{expected} 200 max-age=60").as_str()),
            "{version}"
        );
        assert!(
            body == large,
            "{version}: the file came back altered ({} bytes of {})",
            body.len(),
            large.len()
        );
    }
    let out = Command::new("curl")
        .args(["-sS", "--http1.1", "-r", "160000-160015", "--cacert"])
        .arg(h.d.path("a.test.pem"))
        .arg("--resolve")
        .arg(format!("a.test:{port}:127.0.0.1"))
        .arg(format!("https://a.test:{port}/static/big.0123abcd.txt"))
        .output()
        .expect("curl runs (apt-get install curl)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0020000\n0020001\n");
}

//! One daemon, several apps: a server file lists each app's own file; one
//! port routes by host name and path prefix; each app deploys alone, with
//! the others untouched; apps come and go with `baton reload`; the CLI
//! finds the server from inside an app's folder.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::{answered, bin, free_port, h2_exchange, raw, text, wait_until, Answer, H2Body};
use percent_encoding::percent_decode_str;
use serde_json::Value;

/// A server folder: `baton.toml` with `[server]`, and one folder per app.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// tests/apps/express with its node_modules.
fn express_app() -> PathBuf {
    common::installed_node_app("express")
}

/// An app's baton.toml: `name`, `hosts` (TOML array text), extra `[app]`
/// lines, and its version; `command` runs it.
fn app_file(name: &str, hosts: &str, extra: &str, version: &str) -> String {
    app_file_running(name, hosts, extra, version, "node server.js")
}

fn app_file_running(name: &str, hosts: &str, extra: &str, version: &str, command: &str) -> String {
    format!(
        "[app]\nname = \"{name}\"\nhosts = {hosts}\n{extra}\n\
         [web]\ncommand = \"{command}\"\ninstances = 2\nenv = {{ APP_VERSION = \"{version}\" }}\n\
         watch_after_switch = \"1s\"\nconnection_drain_timeout = \"2s\"\n\
         [web.readiness]\nkind = \"http\"\npath = \"/health\"\n"
    )
}

impl Server {
    /// shop (shop.test, an Express app), api (shop.test under /api,
    /// stripped), blog (blog.test and *.blog.test, with WebSockets) and, by
    /// a glob, tenants/t1 (t1.test).
    fn new(rest: &str) -> Server {
        let server = Server::blank();
        server.add_express("shop", "[\"shop.test\"]", "shop-v1");
        server.add_app(
            "api",
            "[\"shop.test\"]",
            "path_prefix = \"/api\"\nstrip_prefix = true",
            "api-v1",
        );
        server.add_app("blog", "[\"blog.test\", \"*.blog.test\"]", "", "blog-v1");
        server.add_app("tenants/t1", "[\"t1.test\"]", "", "t1-v1");
        server.write_server(
            "[\"shop/baton.toml\", \"api/baton.toml\", \"blog/baton.toml\", \"tenants/*/baton.toml\"]",
            rest,
        );
        server
    }

    /// A server folder with no app yet, on a free port.
    fn blank() -> Server {
        let dir = tempfile::Builder::new()
            .prefix("baton-server")
            .tempdir()
            .unwrap();
        Server {
            dir,
            port: free_port(),
            child: None,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes an app folder `folder` with its baton.toml and the test app.
    fn add_app(&self, folder: &str, hosts: &str, extra: &str, version: &str) {
        let name = folder.rsplit('/').next().unwrap();
        let dir = self.path(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(common::app_js(), dir.join("server.js")).unwrap();
        std::fs::write(
            dir.join("baton.toml"),
            app_file(name, hosts, extra, version),
        )
        .unwrap();
    }

    /// An app folder running tests/apps/express.
    fn add_express(&self, folder: &str, hosts: &str, version: &str) {
        let dir = self.path(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let express = express_app();
        std::fs::copy(express.join("app.js"), dir.join("app.js")).unwrap();
        std::os::unix::fs::symlink(express.join("node_modules"), dir.join("node_modules")).unwrap();
        let file = app_file_running(folder, hosts, "", version, "node app.js");
        std::fs::write(dir.join("baton.toml"), file).unwrap();
    }

    fn write_server(&self, apps: &str, rest: &str) {
        let toml = format!(
            "[server]\napps = {apps}\n\n[proxy]\nlisten = \"127.0.0.1:{}\"\n{rest}\n",
            self.port
        );
        std::fs::write(self.path("baton.toml"), toml).unwrap();
    }

    fn up(mut self) -> Server {
        let out = std::fs::File::create(self.path("daemon.out")).unwrap();
        let child = Command::new(bin())
            .arg("up")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(Duration::from_secs(30), "the server to answer", || {
            answered(&self.baton_in(".", &["status"]))
        });
        self
    }

    /// `baton ARGS` run in the folder `at` of the server.
    fn baton_in(&self, at: &str, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .current_dir(self.path(at))
            .env_remove("BATON_SERVER")
            .output()
            .unwrap()
    }

    fn json_in(&self, at: &str, args: &[&str]) -> Value {
        let out = self.baton_in(at, args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    /// Requests answered by `app`'s instances whose pids are not in `before`.
    fn served_by_new(&self, app: &str, before: &[i64]) -> u64 {
        let status = self.json_in(".", &["status", "--json", "--app", app]);
        (status["instances"].as_array().unwrap().iter())
            .filter(|i| !i["pid"].as_i64().is_some_and(|pid| before.contains(&pid)))
            .map(|i| i["served"].as_u64().unwrap_or(0))
            .sum()
    }

    /// GET `path` with `Host: host`.
    fn get(&self, host: &str, path: &str) -> Answer {
        raw(
            self.port,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .unwrap()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.path("daemon.out")).unwrap_or_default()
    }

    /// The pids of an app's instances.
    fn pids(&self, app: &str) -> Vec<i64> {
        let status = self.json_in(".", &["status", "--json", "--app", app]);
        let mut pids: Vec<i64> = (status["instances"].as_array().unwrap().iter())
            .filter_map(|i| i["pid"].as_i64())
            .collect();
        pids.sort();
        pids
    }

    /// `baton probe` of `http://<host>:<port><path>`, dialling 127.0.0.1.
    fn probe(&self, host: &str, path: &str, extra: &[&str]) -> Child {
        self.probe_scheme("http", host, path, extra)
    }

    /// [`Server::probe`] with another scheme (`ws`).
    fn probe_scheme(&self, scheme: &str, host: &str, path: &str, extra: &[&str]) -> Child {
        Command::new(bin())
            .arg("probe")
            .arg(format!("{scheme}://{host}:{}{path}", self.port))
            .args(["--resolve", &format!("{host}:{}:127.0.0.1", self.port)])
            .args(["--json", "--version-prefix", "version="])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn wait_ready(&self) {
        wait_until(Duration::from_secs(30), "every app ready", || {
            let out = self.baton_in(".", &["status", "--json"]);
            let Ok(all) = serde_json::from_slice::<Value>(&out.stdout) else {
                return false;
            };
            all.as_array().is_some_and(|apps| {
                apps.iter().all(|a| {
                    a["instances"]
                        .as_array()
                        .is_some_and(|i| i.iter().filter(|i| i["state"] == "ready").count() == 2)
                })
            })
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

/// Ends a probe now (Ctrl-C) and reads its report.
fn stop(child: Child) -> Value {
    common::Probe::of(child).stop()
}

fn report(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn version(answer: &Answer) -> &str {
    answer
        .body
        .strip_prefix("version=")
        .and_then(|b| b.split_whitespace().next())
        .unwrap_or(&answer.body)
}

/// Exact hosts, a wildcard, the longest prefix (cut off for the app), a
/// glob of app files, an unknown host; the CLI at the server lists every
/// app, and inside an app's folder (or a subfolder) acts on that app.
#[test]
fn apps_share_one_port_by_host_and_path_prefix() {
    let s = Server::new("").up();
    s.wait_ready();
    let shop = s.get("shop.test", "/");
    assert_eq!(version(&shop), "shop-v1");
    assert!(
        shop.body.contains("express=/"),
        "the Express app answered: {shop:?}"
    );
    assert_eq!(version(&s.get("SHOP.test:80", "/apix")), "shop-v1");
    assert_eq!(version(&s.get("shop.test", "/api/x")), "api-v1");
    // Stripped: the app is asked for /env/APP_VERSION.
    assert_eq!(s.get("shop.test", "/api/env/APP_VERSION").body, "api-v1");
    assert_eq!(version(&s.get("blog.test", "/")), "blog-v1");
    assert_eq!(version(&s.get("www.blog.test", "/")), "blog-v1");
    assert_eq!(version(&s.get("t1.test", "/")), "t1-v1");
    let unknown = s.get("nobody.test", "/");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.body.contains("404"), "{unknown:?}");

    let apps = s.json_in(".", &["apps", "--json"]);
    let names: Vec<&str> = (apps.as_array().unwrap().iter())
        .map(|a| a["app"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop", "api", "blog", "t1"]);
    assert_eq!(apps[1]["path_prefix"], "/api");
    assert_eq!(
        apps[2]["hosts"],
        serde_json::json!(["blog.test", "*.blog.test"])
    );
    let table = text(&s.baton_in(".", &["apps"]));
    assert!(table.contains("blog.test,*.blog.test"), "{table}");

    // Inside an app's folder, and below it: that app.
    std::fs::create_dir_all(s.path("blog/views/partials")).unwrap();
    for at in ["blog", "blog/views/partials"] {
        let status = s.json_in(at, &["status", "--json"]);
        assert_eq!(status["app"], "blog", "at {at}: {status}");
    }
    // From anywhere, by name.
    let status = s.json_in("shop", &["status", "--json", "--app", "t1"]);
    assert_eq!(status["app"], "t1");
    let out = s.baton_in(".", &["status", "--app", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no app named \"nope\""),
        "{}",
        text(&out)
    );
    // Logs and releases are the app's own.
    let releases = s.json_in("api", &["releases", "--json"]);
    assert_eq!(releases.as_array().unwrap().len(), 1, "{releases}");
    // A reload of the app, its hosts edited: routed from then on.
    assert_eq!(s.get("news.test", "/").status, 404);
    let blog = s.path("blog/baton.toml");
    let config = std::fs::read_to_string(&blog).unwrap();
    std::fs::write(
        &blog,
        config.replace("\"blog.test\", ", "\"blog.test\", \"news.test\", "),
    )
    .unwrap();
    let out = s.baton_in("blog", &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(version(&s.get("news.test", "/")), "blog-v1");
}

/// A deploy of one app under load on all of them: no failed request
/// anywhere, the deployed app switches once, and the others keep their
/// processes.
#[test]
fn a_deploy_of_one_app_leaves_the_others_alone() {
    let s = Server::new("").up();
    s.wait_ready();
    let before = [s.pids("api"), s.pids("blog"), s.pids("t1")];
    let shop_before = s.pids("shop");
    let load = ["--duration", "300s", "--concurrency", "4"];
    let shop = s.probe("shop.test", "/", &load);
    let api = s.probe("shop.test", "/api/", &load);
    let blog = s.probe("blog.test", "/", &load);
    let ws = s.probe_scheme(
        "ws",
        "blog.test",
        "/ws",
        &[
            "--duration",
            "300s",
            "--concurrency",
            "5",
            "--interval",
            "100ms",
        ],
    );
    wait_until(Duration::from_secs(20), "load on every app", || {
        s.json_in(".", &["status", "--json"])
            .as_array()
            .is_some_and(|apps| {
                apps.iter().take(3).all(|a| {
                    a["instances"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|i| i["served"].as_u64() > Some(0))
                })
            })
    });
    let file = s.path("shop/baton.toml");
    let config = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, config.replace("shop-v1", "shop-v2")).unwrap();
    let out = s.baton_in("shop", &["deploy"]);
    assert!(out.status.success(), "{}\n{}", text(&out), s.output());
    wait_until(Duration::from_secs(60), "shop-v2 answers", || {
        s.served_by_new("shop", &shop_before) >= 20
    });
    common::assert_clean_switch(&stop(shop), "shop-v1", "shop-v2");
    for (name, probe) in [("api", api), ("blog", blog)] {
        let r = stop(probe);
        assert_eq!(r["failed"], 0, "{name}: {r:#}");
        assert!(
            r["switches"].as_array().unwrap().is_empty(),
            "{name}: {r:#}"
        );
    }
    let ws = stop(ws);
    assert_eq!(ws["abnormal_closes"], 0, "{ws:#}");
    assert_eq!(
        ws["close_codes"],
        serde_json::json!({}),
        "no WebSocket of blog closed: {ws:#}"
    );
    assert_eq!(
        [s.pids("api"), s.pids("blog"), s.pids("t1")],
        before,
        "the other apps' instances were touched"
    );
}

/// `baton reload` at the server, after its `[server] apps` changed: the
/// new app starts, the removed one drains and stops, the others keep
/// their processes and serve throughout.
#[test]
fn apps_come_and_go_with_a_reload_at_the_server() {
    let s = Server::new("").up();
    s.wait_ready();
    let shop_pids = s.pids("shop");
    let blog_pids = s.pids("blog");
    s.add_app("extra", "[\"extra.test\"]", "", "extra-v1");
    s.write_server(
        "[\"shop/baton.toml\", \"api/baton.toml\", \"extra/baton.toml\", \"tenants/*/baton.toml\"]",
        "",
    );
    let shop = s.probe(
        "shop.test",
        "/",
        &["--duration", "4s", "--concurrency", "4"],
    );
    let out = s.baton_in(".", &["reload", "--json"]);
    assert!(out.status.success(), "{}\n{}", text(&out), s.output());
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["added"], serde_json::json!(["extra"]), "{done}");
    assert_eq!(done["removed"], serde_json::json!(["blog"]), "{done}");
    assert_eq!(version(&s.get("extra.test", "/")), "extra-v1");
    assert_eq!(s.get("blog.test", "/").status, 404);
    for pid in blog_pids {
        assert!(
            !common::alive(pid as i32),
            "blog's instance {pid} still runs"
        );
    }
    let r = report(shop);
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(s.pids("shop"), shop_pids, "shop's instances were touched");
    let names: Vec<String> = (s
        .json_in(".", &["apps", "--json"])
        .as_array()
        .unwrap()
        .iter())
    .map(|a| a["app"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(names, ["shop", "api", "extra", "t1"]);
    // SIGHUP (systemctl reload) does the same: blog comes back.
    s.write_server(
        "[\"shop/baton.toml\", \"api/baton.toml\", \"extra/baton.toml\", \"blog/baton.toml\", \"tenants/*/baton.toml\"]",
        "",
    );
    let pid = s.child.as_ref().unwrap().id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_until(Duration::from_secs(30), "blog back after SIGHUP", || {
        s.get("blog.test", "/").status == 200
    });
    assert_eq!(s.pids("shop"), shop_pids, "shop's instances were touched");
}

/// An app with no ready instance (it crashes at every start) holds its own
/// requests for its own hold_timeout, then answers 503; another app's are
/// answered meanwhile.
#[test]
fn an_app_without_a_ready_instance_does_not_hold_up_another() {
    let s = Server::new("");
    s.add_app("down", "[\"down.test\"]", "", "down-v1");
    let down = s.path("down/baton.toml");
    let config = std::fs::read_to_string(&down).unwrap();
    std::fs::write(
        &down,
        config
            .replace(
                "APP_VERSION = \"down-v1\"",
                "APP_VERSION = \"down-v1\", CRASH_AT_START = \"1\"",
            )
            .replace("[web]", "[proxy]\nhold_timeout = \"4s\"\n[web]"),
    )
    .unwrap();
    s.write_server(
        "[\"shop/baton.toml\", \"down/baton.toml\"]",
        "hold_timeout = \"60s\"",
    );
    let s = s.up();
    wait_until(Duration::from_secs(30), "shop ready", || {
        s.json_in(".", &["status", "--json", "--app", "shop"])["instances"]
            .as_array()
            .is_some_and(|i| i.iter().filter(|i| i["state"] == "ready").count() == 2)
    });
    let port = s.port;
    let held = std::thread::spawn(move || {
        raw(
            port,
            "GET / HTTP/1.1\r\nHost: down.test\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
    });
    wait_until(Duration::from_secs(5), "down's request held", || {
        s.json_in(".", &["status", "--json", "--app", "down"])["held"] == 1
    });
    for _ in 0..20 {
        let quick = s.get("shop.test", "/");
        assert_eq!(quick.status, 200, "{quick:?}");
        assert!(!held.is_finished(), "down's request should still be held");
    }
    // down's own hold_timeout (4 s), not the server's (60 s), ends it.
    wait_until(Duration::from_secs(20), "down's hold_timeout", || {
        held.is_finished()
    });
    let held = held.join().unwrap();
    assert_eq!(held.status, 503, "{held:?}");
}

/// With `default = true`, an app answers the hosts no other claims; two
/// defaults, a host claimed twice, or `listen` in an app file are errors
/// naming the file and field.
#[test]
fn the_default_app_and_server_file_errors() {
    let s = Server::new("");
    let t1 = s.path("tenants/t1/baton.toml");
    let config = std::fs::read_to_string(&t1).unwrap();
    std::fs::write(
        &t1,
        config.replace(
            "hosts = [\"t1.test\"]",
            "hosts = [\"t1.test\"]\ndefault = true",
        ),
    )
    .unwrap();
    let out = s.baton_in(".", &["check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("server of 4 apps"), "{}", text(&out));

    let blog = s.path("blog/baton.toml");
    let config = std::fs::read_to_string(&blog).unwrap();
    std::fs::write(
        &blog,
        config.replace("[web]", "[proxy]\nlisten = \"127.0.0.1:1\"\n[web]"),
    )
    .unwrap();
    let out = s.baton_in(".", &["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("blog/baton.toml:")
            && text(&out).contains("proxy.listen: the server's listeners"),
        "{}",
        text(&out)
    );
    std::fs::write(&blog, config.replace("blog.test\", ", "shop.test\", ")).unwrap();
    let out = s.baton_in(".", &["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("both claim shop.test"),
        "{}",
        text(&out)
    );
    std::fs::write(&blog, config).unwrap();

    let s = s.up();
    s.wait_ready();
    assert_eq!(version(&s.get("nobody.test", "/")), "t1-v1");
    assert_eq!(version(&s.get("shop.test", "/")), "shop-v1");
}

/// HTTPS at a server: a certificate per host from `[tls] certificates`,
/// chosen by SNI, each host routed to its app.
#[test]
fn https_serves_each_host_with_its_certificate() {
    let https = free_port();
    let s = Server::new("");
    let mut pairs = Vec::new();
    for name in ["shop.test", "blog.test"] {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let (cert, key) = (
            s.path(&format!("{name}.pem")),
            s.path(&format!("{name}.key")),
        );
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        pairs.push(format!("{{ cert = {cert:?}, key = {key:?} }}"));
    }
    s.write_server(
        "[\"shop/baton.toml\", \"api/baton.toml\", \"blog/baton.toml\", \"tenants/*/baton.toml\"]",
        &format!(
            "https_listen = \"127.0.0.1:{https}\"\n[tls]\ncertificates = [{}]\nredirect_http = false\n",
            pairs.join(", ")
        ),
    );
    let s = s.up();
    s.wait_ready();
    let curl = |name: &str, ca: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "10", "--cacert"])
            .arg(s.path(&format!("{ca}.pem")))
            .args(["--resolve", &format!("{name}:{https}:127.0.0.1")])
            .arg(format!("https://{name}:{https}/"))
            .output()
            .expect("curl runs (apt-get install curl)");
        (out.status.code(), text(&out))
    };
    let (code, body) = curl("shop.test", "shop.test");
    assert_eq!(code, Some(0), "{body}");
    assert!(body.starts_with("version=shop-v1"), "{body}");
    let (code, body) = curl("blog.test", "blog.test");
    assert_eq!(code, Some(0), "{body}");
    assert!(body.starts_with("version=blog-v1"), "{body}");
    // blog.test is not served shop.test's certificate.
    let (code, body) = curl("blog.test", "shop.test");
    assert_eq!(code, Some(60), "{body}");
}

/// `baton upgrade` at a server replaces the daemon for every app, keeping
/// the port open: no request to any app fails; `baton systemd` at the
/// server writes one unit for all of them.
#[test]
fn an_upgrade_at_a_server_keeps_every_app_serving() {
    let s = Server::new("").up();
    s.wait_ready();
    let units = text(&s.baton_in(".", &["systemd"]));
    assert!(
        units.contains("Description=Baton: shop, api, blog, t1"),
        "{units}"
    );
    assert!(
        units.contains(&format!("ListenStream=127.0.0.1:{}", s.port)),
        "{units}"
    );
    let install = tempfile::tempdir().unwrap();
    let next = install.path().join("baton-next");
    std::fs::copy(bin(), &next).unwrap();
    let load = [
        "--duration",
        "5s",
        "--concurrency",
        "2",
        "--keepalive=false",
    ];
    let shop = s.probe("shop.test", "/", &load);
    let blog = s.probe("blog.test", "/", &load);
    wait_until(Duration::from_secs(20), "load on both", || {
        let apps = s.json_in(".", &["status", "--json"]);
        ["shop", "blog"].iter().all(|name| {
            apps.as_array().unwrap().iter().any(|a| {
                a["app"] == *name
                    && a["instances"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|i| i["served"].as_u64() > Some(0))
            })
        })
    });
    let out = Command::new(&next)
        .args(["upgrade", "--json"])
        .current_dir(s.path("."))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), s.output());
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["ready"], 8, "every app's instances ready: {done}");
    for (name, probe) in [("shop", shop), ("blog", blog)] {
        let r = report(probe);
        assert_eq!(r["failed"], 0, "{name}: {r:#}\n{}", s.output());
    }
    let pid = s.child.as_ref().unwrap().id();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        next.canonicalize().unwrap()
    );
}

/// An app of a running server cannot be started a second time by `baton
/// up` in its own folder: its state directory is locked.
#[test]
fn an_app_of_a_server_cannot_be_run_twice() {
    let s = Server::new("").up();
    s.wait_ready();
    let out = Command::new(bin())
        .args(["up"])
        .current_dir(s.path("blog"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already running"), "{}", text(&out));
    assert_eq!(version(&s.get("blog.test", "/")), "blog-v1");
}

/// nginx on a free port, answering which location a target chose and the
/// path it routed on (`$uri`, normalised and decoded): `shop /x`.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Locations as Baton's `shop` at `/` and `api` at `path_prefix = "/api"`.
    fn start() -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n\
             server {{\n  listen 127.0.0.1:{port};\n  default_type text/plain;\n\
             location / {{ return 200 \"shop $uri\"; }}\n\
             location = /api {{ return 200 \"api $uri\"; }}\n\
             location /api/ {{ return 200 \"api $uri\"; }}\n }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx, to compare with (apt-get install nginx)");
        let child = Command::new(binary)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        wait_until(Duration::from_secs(10), "nginx to answer", || {
            raw(
                port,
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .is_ok()
        });
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 32: the path is normalised once, before routing (RFC 3986 §5.2.4
/// and §6.2.2), so a path prefix is a boundary: `/api/../x` is shop's
/// `/x`, not api's. Each target's expected app and path come from the
/// RFC; Baton's choice, the path its app got, and nginx's location and
/// `$uri` are put side by side and must all agree, but where the case
/// names nginx's own answer (an encoded slash, which nginx decodes).
#[test]
fn paths_are_normalised_before_routing_as_nginx_does() {
    let s = Server::blank();
    s.add_app("shop", "[\"shop.test\"]", "", "shop");
    s.add_app("api", "[\"shop.test\"]", "path_prefix = \"/api\"", "api");
    s.write_server("[\"shop/baton.toml\", \"api/baton.toml\"]", "");
    let s = s.up();
    s.wait_ready();
    let nginx = Nginx::start();
    // (target, Some((app, path)) or None for 400, nginx's when it differs)
    type Expected = Option<(&'static str, &'static str)>;
    let cases: &[(&str, Expected, Option<Expected>)] = &[
        ("/api/x", Some(("api", "/api/x")), None),
        ("/api/../x", Some(("shop", "/x")), None),
        ("/api/%2e%2e/x", Some(("shop", "/x")), None),
        ("/api/%2E%2e/admin", Some(("shop", "/admin")), None),
        ("/api/.%2e/x", Some(("shop", "/x")), None),
        ("/api/./x", Some(("api", "/api/x")), None),
        ("/api/x/..", Some(("api", "/api/")), None),
        ("/api/..", Some(("shop", "/")), None),
        ("/api/.", Some(("api", "/api/")), None),
        ("/a/b/../../api/y", Some(("api", "/api/y")), None),
        ("/%61pi/x", Some(("api", "/api/x")), None),
        ("//api//x", Some(("api", "/api/x")), None),
        ("/apix", Some(("shop", "/apix")), None),
        ("/api/x?next=/../admin", Some(("api", "/api/x")), None),
        ("/../../etc/passwd", None, None),
        ("/api/../../x", None, None),
        ("/%2e%2e/x", None, None),
        ("/x/%zz", None, None),
        // An encoded slash is data, not a separator (RFC 3986 §2.2):
        // Baton keeps it; nginx decodes it before choosing a location.
        (
            "/api%2Fx",
            Some(("shop", "/api%2Fx")),
            Some(Some(("api", "/api/x"))),
        ),
    ];
    let owned = |e: Expected| e.map(|(app, path)| (app.to_string(), path.to_string()));
    let mut wrong = Vec::new();
    for &(target, want, nginx_differs) in cases {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n");
        // Baton: the app that answered, and the path it got.
        let a = raw(s.port, &request).unwrap();
        let baton = (a.status == 200).then(|| {
            let got = a.header("x-path").unwrap_or_default();
            let path = got.split('?').next().unwrap_or_default();
            (version(&a).to_string(), path.to_string())
        });
        // nginx: its location, and its $uri.
        let n = raw(nginx.port, &request).unwrap();
        let by_nginx = (n.status == 200).then(|| {
            let (app, path) = n.body.trim().split_once(' ').unwrap_or_default();
            (app.to_string(), path.to_string())
        });
        for (who, status) in [("Baton", a.status), ("nginx", n.status)] {
            if status != 200 && status != 400 {
                wrong.push(format!("{target}: {who} answered {status}"));
            }
        }
        if baton != owned(want) {
            wrong.push(format!("{target}: Baton {baton:?}, the RFC {want:?}"));
        }
        // nginx's $uri is decoded whole.
        let nginx_want = owned(nginx_differs.unwrap_or(want)).map(|(app, path)| {
            let uri = percent_decode_str(&path).decode_utf8_lossy().into_owned();
            (app, uri)
        });
        if by_nginx != nginx_want {
            wrong.push(format!(
                "{target}: nginx {by_nginx:?}, expected {nginx_want:?}"
            ));
        }
    }
    // h2 (hyper's server) routes on the same normalised path.
    let requests = (cases.iter())
        .map(|(target, ..)| {
            http::Request::get(format!("http://shop.test{target}"))
                .body(H2Body::default())
                .unwrap()
        })
        .collect();
    for ((target, want, _), (status, body)) in cases.iter().zip(h2_exchange(s.port, requests)) {
        let app = String::from_utf8_lossy(&body);
        let app = app
            .strip_prefix("version=")
            .and_then(|b| b.split_whitespace().next());
        let got = (status == 200).then_some(app).flatten();
        if got != want.map(|(app, _)| app) || !matches!(status, 200 | 400) {
            wrong.push(format!(
                "{target} over h2: {status} {got:?}, the RFC {want:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

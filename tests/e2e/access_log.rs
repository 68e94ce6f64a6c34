//! Issue 25: access logs as nginx users expect them: `combined` (nginx's
//! line, then Baton's fields) or JSON, for answers from instances and from
//! Baton itself, over HTTP/1.1 and h2, switched by a reload, rotated.

use std::time::Duration;

use crate::common::*;

const WEB: &str =
    "[web]\ncommand = \"node server.js\"\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n";

fn start(proxy_lines: &str, extra: &str) -> Daemon {
    let d = Daemon::prepare(&format!("{extra}\n[static]\n{WEB}"));
    let listen = format!("listen = \"127.0.0.1:{}\"\n", d.port);
    d.edit_config(|c| c.replacen(&listen, &format!("{listen}{proxy_lines}\n"), 1));
    std::fs::create_dir_all(d.path("public")).unwrap();
    std::fs::write(d.path("public/app.1a2b3c4d.js"), "let a = 1;\n").unwrap();
    let d = d.up();
    d.wait_ready(1);
    d
}

fn log_lines(d: &Daemon, n: usize) -> Vec<String> {
    let path = d.path("logs/access.log");
    wait_until(
        Duration::from_secs(10),
        &format!("{n} access log lines"),
        || {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count()
                >= n
        },
    );
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines().map(str::to_string).collect()
}

/// nginx's combined line, then request time, instance, release, retries
/// and held: for an instance's answer, a static file, a 404 of Baton's,
/// and an h2 request.
#[test]
fn combined_lines_say_who_answered_with_what() {
    let d = start("access_log = \"logs/access.log\"", "");
    let release = d.status()["release"].as_str().unwrap().to_string();
    let page = raw(
        d.port,
        "GET /page?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: probe/1 \"quoted\"\r\nReferer: http://a/\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let asset = get(d.port, "/static/app.1a2b3c4d.js").unwrap();
    let missing = get(d.port, "/static/none.js").unwrap();
    let h2 = h2_exchange(
        d.port,
        vec![http::Request::get("http://a/h2")
            .body(H2Body::default())
            .unwrap()],
    );
    let lines = log_lines(&d, 4);
    let re = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+) "([^"]*)" "([^"]*)" (\d+\.\d{3}) (\S+) (\S+) (\d+) (\S+)$"#,
    )
    .unwrap();
    let parsed: Vec<regex::Captures> = lines
        .iter()
        .map(|l| {
            re.captures(l)
                .unwrap_or_else(|| panic!("not a combined line: {l}"))
        })
        .collect();
    let field = |i: usize, n: usize| parsed[i].get(n).unwrap().as_str().to_string();
    // The instance's answer: its body length, its instance and release.
    assert_eq!(
        (field(0, 1), field(0, 2), field(0, 3), field(0, 4)),
        (
            "GET".into(),
            "/page?x=1".into(),
            "HTTP/1.1".into(),
            "200".into()
        )
    );
    assert_eq!(field(0, 5), page.body.len().to_string());
    assert_eq!(field(0, 6), "http://a/");
    assert_eq!(field(0, 7), "probe/1 \\x22quoted\\x22");
    assert_eq!(
        (field(0, 9), field(0, 10)),
        ("web#1".into(), release.clone())
    );
    assert_eq!((field(0, 11), field(0, 12)), ("0".into(), "-".into()));
    // The static file: Baton answered, from the release.
    assert_eq!(
        (field(1, 4), field(1, 5)),
        ("200".into(), asset.body.len().to_string())
    );
    assert_eq!((field(1, 9), field(1, 10)), ("-".into(), release.clone()));
    assert_eq!(
        (field(2, 4), field(2, 5)),
        ("404".into(), missing.body.len().to_string())
    );
    // h2, through hyper.
    assert_eq!(
        (field(3, 2), field(3, 3), field(3, 4)),
        ("/h2".into(), "HTTP/2.0".into(), "200".into())
    );
    assert_eq!(field(3, 5), h2[0].1.len().to_string());
}

/// `access_log_format = "json"` after a reload: the next lines are JSON
/// objects with the same facts.
#[test]
fn json_lines_after_a_reload() {
    let d = start("access_log = \"logs/access.log\"", "");
    get(d.port, "/one").unwrap();
    log_lines(&d, 1);
    d.edit_config(|c| {
        c.replace(
            "access_log = \"logs/access.log\"",
            "access_log = \"logs/access.log\"\naccess_log_format = \"json\"",
        )
    });
    let out = d.baton(&["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    // The sites take the new configuration as the deploy ends; a request
    // after that is logged as JSON.
    let path = d.path("logs/access.log");
    let mut last = String::new();
    wait_until(Duration::from_secs(10), "a JSON line", || {
        get(d.port, "/two").unwrap();
        last = std::fs::read_to_string(&path).unwrap_or_default();
        last = last.lines().last().unwrap_or_default().to_string();
        last.starts_with('{')
    });
    let v: serde_json::Value =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(v["method"], "GET");
    assert_eq!(v["target"], "/two");
    assert_eq!(v["status"], 200);
    assert_eq!(v["held"], false);
    assert!(v["instance"].as_str().unwrap().starts_with("web#"), "{v}");
    assert!(v["duration_ms"].as_f64().is_some(), "{v}");
}

/// The access log rotates as the app log does: `log_max_size`, `log_keep`.
#[test]
fn the_access_log_rotates() {
    let d = start(
        "access_log = \"logs/access.log\"",
        "[daemon]\nlog_max_size = \"2KB\"\nlog_keep = 2\n",
    );
    let r = d
        .probe("/", &["--requests", "100", "--concurrency", "2"])
        .report();
    assert_eq!(r["failed"], 0, "{r:#}");
    wait_until(Duration::from_secs(10), "two generations", || {
        d.path("logs/access.log.1").exists() && d.path("logs/access.log.2").exists()
    });
    assert!(!d.path("logs/access.log.3").exists());
}

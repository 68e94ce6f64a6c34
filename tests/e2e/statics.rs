//! Issue 24: static files served by Baton, and skew protection: pages
//! rendered by an old release keep loading their hashed assets after a
//! deploy, for `keep_for`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WEB: &str = "[web]\ncommand = \"node server.js\"\ninstances = 2\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n";

const V1_ASSET: &str = "/static/app.1a2b3c4d.js";
const V2_ASSET: &str = "/static/app.5e6f7a8b.js";
const V1_CODE: &str = "console.log('v1 chunk');\n";
const V2_CODE: &str = "console.log('v2 chunk');\n";

/// The files a version's build leaves in `public/`: its hashed chunk, a
/// name without a hash, and a stylesheet with a gzip sibling.
fn write_public(dir: &Path, version: &str) {
    let public = dir.join("public");
    std::fs::create_dir_all(&public).unwrap();
    let (asset, code) = match version {
        "v1" => (V1_ASSET, V1_CODE),
        _ => (V2_ASSET, V2_CODE),
    };
    std::fs::write(public.join(&asset["/static/".len()..]), code).unwrap();
    std::fs::write(public.join("logo.txt"), format!("{version} logo\n")).unwrap();
    let css = format!("body {{ color: red }} /* {version} */\n").repeat(50);
    std::fs::write(public.join("style.css"), &css).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(css.as_bytes()).unwrap();
    std::fs::write(public.join("style.css.gz"), gz.finish().unwrap()).unwrap();
}

/// A tarball of version `version` of the app: its server and `public/`.
fn release_tarball(version: &str, into: &Path) -> std::path::PathBuf {
    let src = tempfile::tempdir().unwrap();
    write_app(src.path(), version);
    write_public(src.path(), version);
    let out = into.join(format!("{version}.tgz"));
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(src.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    out
}

/// A daemon running v1 in place, with `[static]` and `extra` config.
fn start(statics: &str, extra: &str) -> Daemon {
    let d = Daemon::prepare(&format!(
        "{extra}\n[static]\ndir = \"public\"\nprefix = \"/static\"\n{statics}\n{WEB}"
    ));
    write_public(d.dir.path(), "v1");
    let d = d.up();
    d.wait_ready(2);
    d
}

/// `GET path` with extra header lines.
fn get_with(port: u16, path: &str, headers: &str) -> Answer {
    raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{headers}Connection: close\r\n\r\n"),
    )
    .unwrap()
}

fn serving(d: &Daemon) -> String {
    d.status()["release"].as_str().unwrap().to_string()
}

fn deploy(d: &Daemon, source: &Path) {
    let out = d.baton(&["deploy", source.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The answer's header, which must be there.
fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.header(name)
        .unwrap_or_else(|| panic!("no {name} in {} {:?}", a.status, a.headers))
}

/// v1's page asks for its chunk all through a deploy of v2 (which lacks
/// it): every request is answered 200 with v1's bytes, by v1's release,
/// cached as immutable; v2's own chunk comes from v2; a rollback serves
/// v1's files again and keeps v2's reachable. Retention keeps v1's folder
/// past `keep` while its files are served, and `baton releases` says so.
#[test]
fn old_pages_keep_their_assets_through_a_deploy_and_a_rollback() {
    let d = start("keep_for = \"1h\"", "[releases]\nkeep = 1\n");
    let v1 = serving(&d);
    d.wait_for_copy(&v1);
    let a = get(d.port, V1_ASSET).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body, V1_CODE);
    assert_eq!(header(&a, "x-baton-release"), v1);
    assert_eq!(
        header(&a, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(header(&a, "content-type").starts_with("text/javascript"));

    let work = tempfile::tempdir().unwrap();
    let v2_tgz = release_tarball("v2", work.path());
    let before = d.instance_ids();
    let pages = d.probe("/", &["--duration", "300s", "--concurrency", "4"]);
    let assets = asset_probe(&d, V1_ASSET);
    wait_until(Duration::from_secs(10), "load", || {
        d.status()["instances"][0]["served"].as_u64().unwrap_or(0) > 20
    });
    deploy(&d, &v2_tgz);
    let v2 = serving(&d);
    assert_ne!(v1, v2);
    let pages = pages.stop_once_new_served(&d, &before, 20);
    let assets = assets.stop();
    assert_clean_switch(&pages, "v1", "v2");
    assert_eq!(assets["failed"], 0, "the old chunk failed: {assets:#}");
    assert!(assets["requests"].as_u64().unwrap() > 0);
    assert_eq!(
        assets["switches"].as_array().unwrap().len(),
        0,
        "v1's chunk came from v1 all along: {assets:#}"
    );

    let a = get(d.port, V1_ASSET).unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, V1_CODE));
    assert_eq!(header(&a, "x-baton-release"), v1);
    assert_eq!(
        header(&a, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    let a = get(d.port, V2_ASSET).unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, V2_CODE));
    assert_eq!(header(&a, "x-baton-release"), v2);
    // A name both have comes from the serving release, briefly cached.
    let a = get(d.port, "/static/logo.txt").unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, "v2 logo\n"));
    assert_eq!(header(&a, "cache-control"), "public, max-age=60");
    // Neither has it: Baton's 404, the app is not asked.
    let a = get(d.port, "/static/missing.js").unwrap();
    assert_eq!((a.status, a.body.as_str()), (404, "not found\n"));
    assert!(a.header("x-version").is_none(), "the app answered: {a:?}");

    // keep = 1 would remove v1's copy; its files are still served.
    let v3_tgz = release_tarball("v3", work.path());
    deploy(&d, &v3_tgz);
    let v3 = serving(&d);
    let a = get(d.port, V1_ASSET).unwrap();
    assert_eq!(
        (a.status, header(&a, "x-baton-release")),
        (200, v1.as_str())
    );
    let releases: serde_json::Value =
        serde_json::from_slice(&d.baton(&["releases", "--json"]).stdout).unwrap();
    let v1_entry = releases
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == v1.as_str())
        .unwrap_or_else(|| panic!("v1 was pruned: {releases:#}"));
    assert!(
        v1_entry["assets_until"].as_str().is_some(),
        "no reason shown: {v1_entry:#}"
    );
    let table = text(&d.baton(&["releases"]));
    assert!(table.contains("static files until"), "{table}");

    // A rollback to v2: v2 serves its files, v3's and v1's stay reachable.
    let out = d.baton(&["rollback", &v2]);
    assert!(out.status.success(), "{}", text(&out));
    let a = get(d.port, "/static/logo.txt").unwrap();
    assert_eq!(
        (a.body.as_str(), header(&a, "x-baton-release")),
        ("v2 logo\n", v2.as_str())
    );
    let a = get(d.port, V1_ASSET).unwrap();
    assert_eq!(
        (a.status, header(&a, "x-baton-release")),
        (200, v1.as_str())
    );
    let a = get(d.port, "/static/logo.txt?x=1").unwrap();
    assert_eq!(header(&a, "x-baton-release"), v2);
    assert_ne!(v3, v2);
}

/// Past `keep_for`, an old release's files are gone (404) without a
/// deploy, and the next deploy prunes its folder as `keep` says.
#[test]
fn an_old_release_s_files_go_after_keep_for() {
    let d = start("keep_for = \"2s\"", "[releases]\nkeep = 1\n");
    let v1 = serving(&d);
    d.wait_for_copy(&v1);
    let work = tempfile::tempdir().unwrap();
    deploy(&d, &release_tarball("v2", work.path()));
    wait_until(Duration::from_secs(20), "v1's chunk to go", || {
        get(d.port, V1_ASSET).unwrap().status == 404
    });
    assert_eq!(get(d.port, V2_ASSET).unwrap().status, 200);
    deploy(&d, &release_tarball("v3", work.path()));
    let kept = std::fs::read_dir(d.path(".baton/releases")).unwrap();
    let kept: Vec<String> = kept
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!kept.contains(&v1), "v1 kept past keep_for: {kept:?}");
}

/// The answers a browser and a CDN rely on: 304 for a validator that
/// holds, 206 for a range, 416 past the end, a gzip sibling for a client
/// that takes it (with Vary), HEAD, and 405 for other methods.
#[test]
fn validators_ranges_and_precompressed_siblings() {
    let d = start("", "");
    let a = get(d.port, V1_ASSET).unwrap();
    let etag = header(&a, "etag").to_string();
    let modified = header(&a, "last-modified").to_string();
    assert_eq!(header(&a, "accept-ranges"), "bytes");

    let a = get_with(d.port, V1_ASSET, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((a.status, a.body.as_str()), (304, ""));
    assert_eq!(header(&a, "etag"), etag);
    let a = get_with(
        d.port,
        V1_ASSET,
        &format!("If-Modified-Since: {modified}\r\n"),
    );
    assert_eq!(a.status, 304);
    let a = get_with(d.port, V1_ASSET, "If-None-Match: \"other\"\r\n");
    assert_eq!((a.status, a.body.as_str()), (200, V1_CODE));

    let a = get_with(d.port, V1_ASSET, "Range: bytes=0-6\r\n");
    assert_eq!((a.status, a.body.as_str()), (206, "console"));
    assert_eq!(
        header(&a, "content-range"),
        format!("bytes 0-6/{}", V1_CODE.len())
    );
    let a = get_with(d.port, V1_ASSET, "Range: bytes=1000-\r\n");
    assert_eq!(a.status, 416);
    assert_eq!(
        header(&a, "content-range"),
        format!("bytes */{}", V1_CODE.len())
    );

    let plain = get(d.port, "/static/style.css").unwrap();
    assert_eq!(plain.status, 200);
    assert!(plain.header("content-encoding").is_none());
    assert_eq!(header(&plain, "vary"), "accept-encoding");
    let zipped = raw_bytes(
        d.port,
        "GET /static/style.css HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, br;q=0\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = split_answer(&zipped);
    assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
    assert!(head.contains("vary: accept-encoding\r\n"), "{head}");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain.body);

    let a = raw(
        d.port,
        &format!("HEAD {V1_ASSET} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(header(&a, "content-length"), V1_CODE.len().to_string());
    assert_eq!(a.body, "");
    // A HEAD for a missing file: the 404's fields, no body, and the
    // connection goes on to the next request.
    let two = raw_bytes(
        d.port,
        "HEAD /static/missing.js HTTP/1.1\r\nHost: a\r\n\r\nGET /static/logo.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let (head, rest) = split_answer(&two);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(
        rest.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&two)
    );
    let a = raw(
        d.port,
        &format!(
            "POST {V1_ASSET} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .unwrap();
    assert_eq!(a.status, 405);
    assert_eq!(header(&a, "allow"), "GET, HEAD");
}

/// Paths that would leave the folder are refused in every spelling, and a
/// symlink pointing out is not followed; a hidden file is not served.
/// A dot-segment is resolved before anything is routed (issue 32): the
/// `/static/../baton.toml` spellings are the app's `/baton.toml`, which
/// the app gets as that path and the shelf never sees; one that climbs
/// above the root is 400.
#[test]
fn paths_cannot_leave_the_static_folder() {
    let d = start("", "");
    std::os::unix::fs::symlink("../baton.toml", d.path("public/config.js")).unwrap();
    std::os::unix::fs::symlink(d.path("baton.toml"), d.path("public/abs.js")).unwrap();
    std::fs::write(d.path("public/.env"), "SECRET=1\n").unwrap();
    for target in [
        "/static/../baton.toml",
        "/static/%2e%2e/baton.toml",
        "/static/%2E%2E/baton.toml",
        "/static/./../baton.toml",
    ] {
        let a = get(d.port, target).unwrap();
        assert_eq!(
            (a.status, a.header("x-path")),
            (200, Some("/baton.toml")),
            "{target}: {a:?}"
        );
        assert!(!a.body.contains("[app]"), "{target} leaked baton.toml");
    }
    for (target, status) in [
        ("/static/../../baton.toml", 400),
        ("/static/%2e%2e/%2e%2e/baton.toml", 400),
        ("/static/..%2fbaton.toml", 400),
        ("/static/..%2Fbaton.toml", 400),
        ("/static/..%5cbaton.toml", 400),
        ("/static/app.1a2b3c4d.js%00.txt", 400),
        ("/static/config.js", 404),
        ("/static/abs.js", 404),
        ("/static/.env", 404),
        ("/static/%2eenv", 404),
    ] {
        let a = get(d.port, target).unwrap();
        assert_eq!(a.status, status, "{target}: {a:?}");
        assert!(!a.body.contains("[app]"), "{target} leaked baton.toml");
        assert!(!a.body.contains("SECRET"), "{target} leaked .env");
    }
    // The folder itself: no listing, no index by default.
    assert_eq!(get(d.port, "/static/").unwrap().status, 404);
}

/// `baton probe` on a static file, counting answers by the release that
/// served them.
fn asset_probe(d: &Daemon, path: &str) -> Probe {
    let child = Command::new(bin())
        .arg("probe")
        .arg(format!("http://127.0.0.1:{}{path}", d.port))
        .args(["--json", "--version-header", "x-baton-release"])
        .args(["--duration", "300s", "--concurrency", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn probe");
    Probe::of(child)
}

/// A raw request's whole answer, as bytes.
fn raw_bytes(port: u16, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// The head (as text, lower-case names as Baton writes them) and the body.
fn split_answer(bytes: &[u8]) -> (String, &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    (
        String::from_utf8_lossy(&bytes[..end + 2]).into_owned(),
        &bytes[end + 4..],
    )
}

/// Version pinning: while v1's instance still drains (it holds a request
/// that never ends), requests that say they come from a v1 page
/// (`x-deployment-id`, or `?dpl=`) are answered by it, the rest by v2;
/// once it is gone, such requests get v2's instances, and v1's files.
#[test]
fn a_page_s_requests_go_to_its_own_release_while_it_drains() {
    let d = Daemon::prepare(
        "[static]\n[web]\ncommand = \"node server.js\"\ndrain_timeout = \"60s\"\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n",
    );
    write_public(d.dir.path(), "v1");
    let d = d.up();
    d.wait_ready(1);
    let v1 = serving(&d);
    d.wait_for_copy(&v1);
    let mut hung = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    hung.write_all(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the hung request in flight",
        || d.total("in_flight") == 1,
    );
    let work = tempfile::tempdir().unwrap();
    let v2_tgz = release_tarball("v2", work.path());
    let mut deploy = Command::new(bin());
    deploy
        .args(["deploy", v2_tgz.to_str().unwrap()])
        .current_dir(d.dir.path());
    let deploying = std::thread::spawn(move || deploy.output());
    wait_until(Duration::from_secs(30), "v2 serving, v1 draining", || {
        serving(&d) != v1 && d.count_in("draining") == 1
    });
    let version_of = |a: &Answer| a.body.split_whitespace().next().unwrap_or("").to_string();
    let pinned = get_with(d.port, "/", &format!("x-deployment-id: {v1}\r\n"));
    assert_eq!(version_of(&pinned), "version=v1", "{pinned:?}");
    let pinned = get(d.port, &format!("/page?dpl={v1}")).unwrap();
    assert_eq!(version_of(&pinned), "version=v1", "{pinned:?}");
    assert_eq!(version_of(&get(d.port, "/").unwrap()), "version=v2");
    let other = get_with(d.port, "/", "x-deployment-id: nosuchrelease\r\n");
    assert_eq!(version_of(&other), "version=v2");

    // The hung request ends: v1's drain is over, its instance stops.
    drop(hung);
    let out = deploying.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let late = get_with(d.port, "/", &format!("x-deployment-id: {v1}\r\n"));
    assert_eq!((late.status, version_of(&late)), (200, "version=v2".into()));
    // v2 has a logo of its own; a v1 page gets v1's.
    let logo = get_with(
        d.port,
        "/static/logo.txt",
        &format!("x-deployment-id: {v1}\r\n"),
    );
    assert_eq!(
        (logo.body.as_str(), header(&logo, "x-baton-release")),
        ("v1 logo\n", v1.as_str())
    );
    let logo = get(d.port, &format!("/static/logo.txt?dpl={v1}")).unwrap();
    assert_eq!(logo.body, "v1 logo\n");
    assert_eq!(get(d.port, "/static/logo.txt").unwrap().body, "v2 logo\n");
}

/// A file larger than what goes out with its head is sent with sendfile
/// on plain HTTP: whole, and a range from its middle; h2c (through hyper)
/// sends the same bytes.
#[test]
fn large_files_whole_and_in_part_over_http1_and_h2c() {
    let d = start("", "");
    let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.path("public/big.bin"), &large).unwrap();
    let whole = raw_bytes(
        d.port,
        "GET /static/big.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = split_answer(&whole);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/octet-stream\r\n"),
        "{head}"
    );
    assert!(
        body == large.as_slice(),
        "{} bytes of {}",
        body.len(),
        large.len()
    );
    let part = raw_bytes(
        d.port,
        "GET /static/big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=100000-199999\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = split_answer(&part);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(
        head.contains("content-range: bytes 100000-199999/300000\r\n"),
        "{head}"
    );
    assert!(body == &large[100_000..200_000], "{} bytes", body.len());

    let request = |path: &str| {
        http::Request::get(format!("http://a{path}"))
            .body(H2Body::default())
            .unwrap()
    };
    let answers = h2_exchange(
        d.port,
        vec![
            request("/static/big.bin"),
            request(V1_ASSET),
            request("/static/nope"),
        ],
    );
    assert_eq!(answers[0].0, 200);
    assert!(
        answers[0].1 == large.as_slice(),
        "h2: {} bytes",
        answers[0].1.len()
    );
    assert_eq!((answers[1].0, &answers[1].1[..]), (200, V1_CODE.as_bytes()));
    assert_eq!(answers[2].0, 404);
}

//! Issue 5: releases on disk: sources, build hook, shared paths, retention,
//! rollback, the inbox, hostile tarballs, and crash consistency.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const WEB: &str = "[web]\ncommand = \"node server.js\"\ninstances = 2\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n";

/// An app folder whose server answers `version`.
fn app_dir(version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), version);
    dir
}

/// `tar` of a folder; gzip when the name says so.
fn tarball(from: &Path, out: &Path) {
    let flag = if out.to_string_lossy().ends_with(".tar") {
        "-cf"
    } else {
        "-czf"
    };
    let ok = Command::new("tar")
        .arg(flag)
        .arg(out)
        .arg("-C")
        .arg(from)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
}

fn release_dirs(d: &Daemon) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(d.path(".baton/releases"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The names of the release folders, in order.
fn release_ids(d: &Daemon) -> Vec<String> {
    let names = release_dirs(d)
        .into_iter()
        .map(|dir| dir.file_name().unwrap().to_string_lossy().into_owned());
    names.collect()
}

fn version(d: &Daemon) -> String {
    get(d.port, "/")
        .unwrap()
        .body
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A .tar.gz, a plain .tar and a git ref each become a release with a
/// RELEASE file, and `current` points at the serving one.
#[test]
fn each_source_kind() {
    let d = Daemon::start(WEB);
    d.wait_ready(2);
    let work = tempfile::tempdir().unwrap();

    let v2 = app_dir("v2");
    let tgz = work.path().join("shop-2.tar.gz");
    tarball(v2.path(), &tgz);
    let out = d.baton(&["deploy", tgz.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(version(&d), "version=v2");
    let release = d.status()["release"].as_str().unwrap().to_string();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path(&format!(".baton/releases/{release}/RELEASE"))).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["id"], release.as_str());
    assert_eq!(meta["status"], "ready");
    assert_eq!(meta["checksum"].as_str().unwrap().len(), 64);
    assert!(
        release.ends_with(&meta["checksum"].as_str().unwrap()[..6]),
        "{release}"
    );
    assert!(meta["source"].as_str().unwrap().ends_with("shop-2.tar.gz"));
    let code_size = std::fs::metadata(v2.path().join("server.js"))
        .unwrap()
        .len();
    assert_eq!(meta["size"], code_size, "the release holds server.js alone");
    let listed: serde_json::Value =
        serde_json::from_slice(&d.baton(&["releases", "--json"]).stdout).unwrap();
    let current = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "current")
        .unwrap();
    assert_eq!(current["size"], code_size);
    assert_eq!(
        std::fs::read_link(d.path(".baton/current")).unwrap(),
        d.path(&format!(".baton/releases/{release}"))
    );

    // A .tgz that is really an uncompressed tar: the magic bytes decide.
    let v3 = app_dir("v3");
    let tar = work.path().join("shop-3.tar");
    tarball(v3.path(), &tar);
    let renamed = work.path().join("shop-3.tgz");
    std::fs::rename(&tar, &renamed).unwrap();
    let out = d.baton(&["deploy", renamed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(version(&d), "version=v3");

    // git: the app folder is a repository; release a tag.
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.email=t@t", "-c", "user.name=t"])
            .args(args)
            .current_dir(d.dir.path())
            .output()
            .unwrap();
        assert!(ok.status.success(), "git {args:?}: {}", text(&ok));
    };
    git(&["init", "-q"]);
    let code = std::fs::read_to_string(d.path("server.js")).unwrap();
    std::fs::write(
        d.path("server.js"),
        code.replace("env.APP_VERSION || 'v1'", "'v4'"),
    )
    .unwrap();
    std::fs::write(d.path(".gitignore"), ".baton/\ndaemon.out\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "v4"]);
    git(&["tag", "v4"]);
    let out = d.baton(&["deploy", "--git", "v4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(version(&d), "version=v4");
    let rels = text(&d.baton(&["releases"]));
    assert!(rels.contains("git v4"), "{rels}");
}

/// A failing build marks the release failed; traffic stays on the old one.
/// A passing build's output is streamed and the result is in the release.
#[test]
fn build_hook_failure_and_success() {
    let d = Daemon::start(&format!(
        "[releases]\nbuild = \"echo building now; test -f ok || exit 3\"\n{WEB}"
    ));
    d.wait_ready(2);
    let before = d.status()["release"].clone();
    let v2 = app_dir("v2");
    let probe = d.probe("/", &["--duration", "2s", "--concurrency", "2"]);
    let out = d.baton(&["deploy", v2.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("build failed, traffic was not touched"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("build | building now"),
        "the build output is streamed: {}",
        text(&out)
    );
    let r = probe.report();
    assert_eq!(r["failed"], 0);
    assert_eq!(d.status()["release"], before);
    assert_eq!(version(&d), "version=v1");
    let rels = text(&d.baton(&["releases"]));
    assert!(rels.contains("failed"), "{rels}");

    std::fs::write(v2.path().join("ok"), "").unwrap();
    let out = d.baton(&["deploy", v2.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(version(&d), "version=v2");
    let release = d.status()["release"].as_str().unwrap().to_string();
    let meta =
        std::fs::read_to_string(d.path(&format!(".baton/releases/{release}/RELEASE"))).unwrap();
    assert!(meta.contains("build.log"), "{meta}");
}

/// Shared paths are symlinked into every release; the first release that
/// ships one seeds it.
#[test]
fn shared_paths_are_linked() {
    let d = Daemon::start(&format!(
        "[releases]\nshared = [\"logs\", \"config/app.env\"]\n{WEB}"
    ));
    d.wait_ready(2);
    let v2 = app_dir("v2");
    std::fs::create_dir_all(v2.path().join("config")).unwrap();
    std::fs::write(v2.path().join("config/app.env"), "SECRET=1\n").unwrap();
    assert!(d
        .baton(&["deploy", v2.path().to_str().unwrap()])
        .status
        .success());
    let release = d.status()["release"].as_str().unwrap().to_string();
    let rel = d.path(&format!(".baton/releases/{release}"));
    assert_eq!(
        std::fs::read_link(rel.join("logs")).unwrap(),
        d.path(".baton/shared/logs")
    );
    assert_eq!(
        std::fs::read_to_string(rel.join("config/app.env")).unwrap(),
        "SECRET=1\n"
    );
    assert!(d.path(".baton/shared/config/app.env").is_file());
}

/// Only the newest `keep` successful releases stay on disk, never the
/// current one; rollback reuses a folder and is zero-downtime.
#[test]
fn retention_and_rollback_under_load() {
    let d = Daemon::start(&format!("[releases]\nkeep = 2\n{WEB}"));
    d.wait_ready(2);
    let work = tempfile::tempdir().unwrap();
    for v in ["v2", "v3", "v4", "v5"] {
        let src = app_dir(v);
        let tgz = work.path().join(format!("{v}.tgz"));
        tarball(src.path(), &tgz);
        let out = d.baton(&["deploy", tgz.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let dirs = release_dirs(&d);
    assert_eq!(dirs.len(), 3, "keep = 2, plus current: {dirs:?}");
    assert_eq!(version(&d), "version=v5");
    let releases: serde_json::Value =
        serde_json::from_slice(&d.baton(&["releases", "--json"]).stdout).unwrap();
    let ids: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(!ids.is_empty());

    let r = d.across_switch(&["--concurrency", "4"], || {
        let out = d.baton(&["rollback"]);
        assert!(out.status.success(), "{}", text(&out));
    });
    assert_clean_switch(&r, "v5", "v4");
    assert_eq!(
        release_dirs(&d),
        dirs,
        "rollback reuses the folder, nothing rebuilt"
    );
    let current = std::fs::read_link(d.path(".baton/current")).unwrap();
    assert!(current
        .to_string_lossy()
        .contains(d.status()["release"].as_str().unwrap()));
}

/// A tarball written slowly into the inbox is deployed only once it
/// settled, exactly once, and the outcome is written beside it.
#[test]
fn inbox_takes_a_slow_upload_once_it_settles() {
    let inbox = tempfile::tempdir().unwrap();
    let d = Daemon::start(&format!(
        "[releases]\ninbox = \"{}\"\nsettle = \"1s\"\n{WEB}",
        inbox.path().display()
    ));
    d.wait_ready(2);
    let src = app_dir("v2");
    let work = tempfile::tempdir().unwrap();
    let tgz = work.path().join("shop.tar.gz");
    tarball(src.path(), &tgz);
    let bytes = std::fs::read(&tgz).unwrap();
    // Upload in pieces, 300 ms apart: each pause is shorter than settle.
    let target = inbox.path().join("shop.tar.gz");
    let mut f = std::fs::File::create(&target).unwrap();
    use std::io::Write;
    let piece = bytes.len() / 5 + 1;
    for chunk in bytes.chunks(piece) {
        f.write_all(chunk).unwrap();
        f.sync_all().unwrap();
        assert_eq!(
            version(&d),
            "version=v1",
            "nothing is taken while the upload goes on"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(f);
    let result = inbox
        .path()
        .join(format!("shop.tar.gz.{}.result", hostname()));
    wait_until(Duration::from_secs(20), "the inbox deploy", || {
        result.exists()
    });
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(version(&d), "version=v2");
    let releases = || {
        serde_json::from_slice::<serde_json::Value>(&d.baton(&["releases", "--json"]).stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let after_first = releases();
    // A `.done` marker skips the settle time.
    let v3 = app_dir("v3");
    tarball(v3.path(), &inbox.path().join("next.tgz"));
    std::fs::write(inbox.path().join("next.tgz.done"), "").unwrap();
    let result = inbox.path().join(format!("next.tgz.{}.result", hostname()));
    wait_until(Duration::from_secs(20), "the second inbox deploy", || {
        result.exists()
    });
    assert_eq!(version(&d), "version=v3");
    // The scans in between passed over shop.tar.gz, still in the inbox,
    // without taking it again.
    assert_eq!(releases(), after_first + 1);
    assert_eq!(
        d.output().matches("inbox: deploying shop.tar.gz").count(),
        1,
        "{}",
        d.output()
    );
}

fn hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

/// Raw tar entries, so that hostile names can be written as they are.
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &[u8],
    kind: tar::EntryType,
    link: Option<&[u8]>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            gnu.linkname[..l.len()].copy_from_slice(l);
        }
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    builder.append(&h, data).unwrap();
}

/// One crafted entry: name, kind, link target, data.
type Crafted<'a> = (&'a [u8], tar::EntryType, Option<&'a [u8]>, &'a [u8]);

fn hostile(entries: &[Crafted]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        b"server.js",
        tar::EntryType::Regular,
        None,
        b"// fine\n",
    );
    for (name, kind, link, data) in entries {
        raw_entry(&mut b, name, *kind, *link, data);
    }
    b.into_inner().unwrap()
}

/// Hostile tarballs are refused with a clear error; nothing is written
/// outside the release folder, no partial folder is left, v1 keeps serving.
#[test]
fn hostile_tarballs_are_refused() {
    use tar::EntryType::*;
    let d = Daemon::start(&format!("[releases]\nmax_unpacked_size = \"1MB\"\n{WEB}"));
    d.wait_ready(2);
    let before = release_dirs(&d);
    assert_eq!(before.len(), 1, "the copy kept of the first release");
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let abs = format!("{}/abs.txt", outside.display());
    let abs_link = outside.display().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            hostile(&[(b"../../../../escape.txt", Regular, None, b"x")]),
            "climbs out",
        ),
        (
            "absolute",
            hostile(&[(abs.as_bytes(), Regular, None, b"x")]),
            "absolute path",
        ),
        (
            "symlink-out",
            hostile(&[(b"link", Symlink, Some(abs_link.as_bytes()), b"")]),
            "points outside",
        ),
        (
            "symlink-up",
            hostile(&[(b"a/link", Symlink, Some(b"../../.."), b"")]),
            "points outside",
        ),
        (
            "through-symlink",
            hostile(&[
                (b"ok", Symlink, Some(b"."), b""),
                (b"ok/../x", Regular, None, b"x"),
            ]),
            "climbs out",
        ),
        (
            "hardlink-out",
            hostile(&[(b"hard", Link, Some(abs.as_bytes()), b"")]),
            "outside",
        ),
        (
            "device",
            hostile(&[(b"dev", Char, None, b"")]),
            "device file",
        ),
        (
            "fifo",
            hostile(&[(b"pipe", Fifo, None, b"")]),
            "device file or FIFO",
        ),
    ];
    let mut cases = cases;
    // A decompression bomb: 8 MB of zeros, a few kB gzipped, over the 1 MB limit.
    let mut bomb = tar::Builder::new(Vec::new());
    let zeros = vec![0u8; 8 << 20];
    raw_entry(&mut bomb, b"zeros.bin", Regular, None, &zeros);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    use std::io::Write;
    gz.write_all(&bomb.into_inner().unwrap()).unwrap();
    cases.push(("bomb.gz", gz.finish().unwrap(), "max_unpacked_size"));

    for (name, bytes, expect) in cases {
        let path = work.path().join(format!("{name}.tar"));
        std::fs::write(&path, bytes).unwrap();
        let out = d.baton(&["deploy", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        assert!(text(&out).contains("refused"), "{name}: {}", text(&out));
        assert!(
            text(&out).contains(expect),
            "{name}: want {expect:?} in {}",
            text(&out)
        );
        assert_eq!(
            release_dirs(&d),
            before,
            "{name}: left a folder besides the first release's"
        );
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{name} wrote outside"
        );
        assert!(!d.path(".baton/escape.txt").exists() && !work.path().join("escape.txt").exists());
    }
    assert_eq!(version(&d), "version=v1");
    assert_eq!(d.count_in("ready"), 2);
}

/// A crash between unpack and switch leaves a consistent state: after a
/// restart the incomplete folders are gone and `current` still serves.
#[test]
fn crash_between_unpack_and_switch_recovers() {
    let mut d = Daemon::start(WEB);
    d.wait_ready(2);
    let v2 = app_dir("v2");
    assert!(d
        .baton(&["deploy", v2.path().to_str().unwrap()])
        .status
        .success());
    let serving = d.status()["release"].as_str().unwrap().to_string();
    // What a crash mid-deploy leaves: a staging folder and an unfinished
    // release (no RELEASE file: the build never ended).
    std::fs::create_dir_all(d.path(".baton/releases/.staging-20990101T000000Z-aaaaaa/x")).unwrap();
    std::fs::create_dir_all(d.path(".baton/releases/20990101T000000Z-bbbbbb")).unwrap();
    std::fs::write(
        d.path(".baton/releases/20990101T000000Z-bbbbbb/server.js"),
        "process.exit(1)",
    )
    .unwrap();
    d.kill9();
    let d = d.up();
    d.wait_ready(2);
    assert_eq!(
        d.status()["release"],
        serving.as_str(),
        "the current release comes back"
    );
    assert_eq!(version(&d), "version=v2");
    let dirs = release_dirs(&d);
    assert_eq!(
        dirs.len(),
        2,
        "the first, in-place release and v2: {dirs:?}"
    );
    assert!(dirs.iter().any(|dir| dir.ends_with(&serving)), "{dirs:?}");
    // And the history survives: the first release ran the app folder in
    // place, and the copy kept of it brings it back after the restart.
    let rels = text(&d.baton(&["releases"]));
    assert!(rels.contains(&serving), "{rels}");
    let out = d.baton(&["rollback"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(version(&d), "version=v1");
}

/// Out of space while unpacking (a file size limit on the daemon makes
/// writes fail with EFBIG, as a full disk fails them with ENOSPC): the
/// release fails, the partial folder is removed, `current` is untouched.
#[test]
fn out_of_space_during_unpack_fails_cleanly() {
    let d = Daemon::start(WEB);
    d.wait_ready(2);
    let v2 = app_dir("v2");
    assert!(d
        .baton(&["deploy", v2.path().to_str().unwrap()])
        .status
        .success());
    let current = std::fs::read_link(d.path(".baton/current")).unwrap();
    let before = release_dirs(&d);

    let big = app_dir("v3");
    let noise: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(big.path().join("assets.bin"), noise).unwrap();
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("big.tar");
    tarball(big.path(), &tar);
    crate::common::sys::limit_file_size(d.pid(), 1 << 20).expect("prlimit");

    let out = d.baton(&["deploy", tar.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("File too large"), "{}", text(&out));
    assert_eq!(release_dirs(&d), before, "the partial folder is gone");
    assert_eq!(
        std::fs::read_link(d.path(".baton/current")).unwrap(),
        current
    );
    assert_eq!(version(&d), "version=v2");
}

/// A release folder may ship its own baton.toml; `baton deploy` without a
/// source still releases the app folder in place, with the app's config.
#[test]
fn release_with_its_own_config_then_in_place_deploy() {
    let d = Daemon::start(WEB);
    d.wait_ready(2);
    let v2 = app_dir("v2");
    let own = std::fs::read_to_string(d.path("baton.toml"))
        .unwrap()
        .replace("instances = 2", "instances = 1");
    std::fs::write(v2.path().join("baton.toml"), own).unwrap();
    assert!(d
        .baton(&["deploy", v2.path().to_str().unwrap()])
        .status
        .success());
    assert_eq!(version(&d), "version=v2");
    assert_eq!(
        d.status()["instances"].as_array().unwrap().len(),
        1,
        "the release's own config"
    );
    let out = d.baton(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(version(&d), "version=v1", "the app folder, in place");
    assert_eq!(
        d.status()["instances"].as_array().unwrap().len(),
        2,
        "the app's config"
    );
}

/// A state folder inside the app under another name is never copied into a
/// release (it holds the releases themselves and the control socket), nor
/// is the inbox, and the copy kept of the in-place release links the app's
/// `node_modules` and shared paths instead of copying them.
#[test]
fn copies_leave_the_state_folder_out_and_link_node_modules() {
    let d = Daemon::prepare(&format!(
        "[daemon]\nstate_dir = \"state\"\n[releases]\nshared = [\"logs\"]\nignore = [\"daemon.out\"]\ninbox = \"incoming\"\n{WEB}"
    ));
    std::fs::create_dir_all(d.path("node_modules/dep")).unwrap();
    std::fs::write(d.path("node_modules/dep/index.js"), "").unwrap();
    std::fs::create_dir_all(d.path("logs")).unwrap();
    std::fs::write(d.path("logs/app.log"), "a line\n").unwrap();
    std::fs::create_dir_all(d.path("incoming")).unwrap();
    std::fs::write(d.path("incoming/shop-1.0.tar.gz.partial"), "uploading").unwrap();
    let d = d.up();
    d.wait_ready(2);
    let first = d.status()["release"].as_str().unwrap().to_string();
    d.wait_for_copy(&first);
    let kept = d.path(&format!("state/releases/{first}"));
    assert!(kept.join("server.js").exists(), "{}", kept.display());
    assert!(!kept.join("state").exists(), "the state folder was copied");
    assert!(!kept.join("incoming").exists(), "the inbox was copied");
    for linked in ["node_modules", "logs"] {
        assert_eq!(
            std::fs::read_link(kept.join(linked)).unwrap(),
            d.path(linked),
            "{linked}"
        );
    }

    // An in-place deploy of unchanged files reuses the copy.
    let out = d.baton(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.status()["release"], first.as_str());
    let kept_copies = std::fs::read_dir(d.path("state/releases")).unwrap().count();
    assert_eq!(kept_copies, 1);

    let out = d.baton(&["deploy", "."]);
    assert!(out.status.success(), "{}", text(&out));
    let second = d.status()["release"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let folder = d.path(&format!("state/releases/{second}"));
    assert!(folder.join("server.js").exists());
    assert!(
        !folder.join("state").exists(),
        "the state folder was copied"
    );
    assert!(!folder.join("incoming").exists(), "the inbox was copied");
    assert_eq!(version(&d), "version=v1");
}

/// Whether the test app's files last changed over a second ago: a survey
/// fingerprints only files older than that (see `copy::Survey`).
fn files_settled(d: &Daemon) -> bool {
    use std::os::unix::fs::MetadataExt;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    ["server.js", "baton.toml"].iter().all(|file| {
        let meta = std::fs::metadata(d.path(file)).unwrap();
        let changed = meta.ctime() as f64 + meta.ctime_nsec() as f64 / 1e9;
        now - changed > 1.1
    })
}

/// A start runs the app directory first and copies it for rollback after,
/// while the instances start: a changed app directory is read whole, and
/// nobody is served until an instance is ready. A restart with the same
/// files reuses the copy and its id; one after the files were only
/// rewritten renames the copy of the same content to the new id; one after
/// an edit makes a new copy, and a rollback brings the old code back.
#[test]
fn a_start_runs_the_app_before_copying_it_and_reuses_unchanged_copies() {
    let d = Daemon::prepare(&format!("[releases]\nignore = [\"daemon.out\"]\n{WEB}"));
    let settle = |d: &Daemon| {
        wait_until(Duration::from_secs(5), "the files to settle", || {
            files_settled(d)
        })
    };
    settle(&d);
    let mut d = d.up();
    d.wait_ready(2);
    let first = d.status()["release"].as_str().unwrap().to_string();
    d.wait_for_copy(&first);
    let out = d.output();
    let starting = out.find(&format!("release {first}: starting 2 instances"));
    let kept = out.find(&format!("release {first}: the app directory, kept in"));
    assert!(starting.is_some() && starting < kept, "{out}");
    assert_eq!(release_ids(&d), [first.as_str()]);

    d.stop();
    let mut d = d.up();
    d.wait_ready(2);
    assert_eq!(
        d.status()["release"],
        first.as_str(),
        "same files, same release"
    );
    let reused = format!("release {first}: the app directory, unchanged since its copy");
    assert!(d.output().contains(&reused), "{}", d.output());
    assert_eq!(release_ids(&d), [first.as_str()]);

    let code = std::fs::read_to_string(d.path("server.js")).unwrap();
    std::fs::write(d.path("server.js"), &code).unwrap();
    settle(&d);
    d.stop();
    let mut d = d.up();
    d.wait_ready(2);
    let second = d.status()["release"].as_str().unwrap().to_string();
    assert_ne!(second, first, "a rewritten file is a change to the survey");
    d.wait_for_copy(&second);
    let renamed = format!("release {first} had the same files; its copy is release {second}'s now");
    assert!(d.output().contains(&renamed), "{}", d.output());
    assert_eq!(release_ids(&d), [second.as_str()]);
    let listed = text(&d.baton(&["releases"]));
    assert!(!listed.contains(&first), "{listed}");

    let edited = code.replace("env.APP_VERSION || 'v1'", "'v2'");
    assert_ne!(edited, code, "the test app's version line moved");
    std::fs::write(d.path("server.js"), edited).unwrap();
    d.stop();
    let d = d.up();
    d.wait_ready(2);
    let third = d.status()["release"].as_str().unwrap().to_string();
    d.wait_for_copy(&third);
    let mut both = [second.as_str(), third.as_str()];
    // Ids sort by time, to the second; within one, in any order.
    both.sort();
    assert_eq!(release_ids(&d), both);
    assert_eq!(version(&d), "version=v2");
    let out = d.baton(&["rollback"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.status()["release"], second.as_str());
    assert_eq!(version(&d), "version=v1");
}

/// An app directory larger than `max_copy_size` holds data, not just
/// code: no copy of it is kept. Its deploy still goes ahead, and a rollback
/// to it is refused with the reason while the current release serves on.
#[test]
fn no_copy_is_kept_of_a_large_app_directory() {
    let d = Daemon::prepare(&format!("[releases]\nmax_copy_size = \"1MB\"\n{WEB}"));
    std::fs::write(d.path("data.bin"), vec![0u8; 1_500_000]).unwrap();
    let d = d.up();
    d.wait_ready(2);
    let first = d.status()["release"].as_str().unwrap().to_string();
    assert!(release_dirs(&d).is_empty(), "{:?}", release_dirs(&d));

    let code = std::fs::read_to_string(d.path("server.js")).unwrap();
    std::fs::write(
        d.path("server.js"),
        code.replace("env.APP_VERSION || 'v1'", "'v2'"),
    )
    .unwrap();
    let out = d.baton(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no copy kept") && text(&out).contains("max_copy_size"),
        "{}",
        text(&out)
    );
    assert_eq!(version(&d), "version=v2");

    let out = d.baton(&["rollback"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "release {first} ran the app directory in place and no copy of it was kept"
        )),
        "{}",
        text(&out)
    );
    assert_eq!(version(&d), "version=v2");
    assert_eq!(d.count_in("ready"), 2);
}

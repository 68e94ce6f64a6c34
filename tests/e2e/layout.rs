//! What the compiler cannot check about the code's shape (ARCHITECTURE.md,
//! Invariants): no source file over 900 lines; every sleep in the crates'
//! own code listed here with the reason it is no synchronisation; no
//! lint that guards an invariant switched off.

use std::path::{Path, PathBuf};

/// Where a source file may stop.
const MAX_LINES: usize = 900;

/// Every sleep outside tests: (file under crates/, what the line says,
/// why it is no wait for a condition). A sleep not listed fails; so does
/// a listed one that is gone.
const SLEEPS: &[(&str, &str, &str)] = &[
    (
        "supervisor/src/instance/task.rs",
        "sleep(backoff)",
        "restart backoff after a crash",
    ),
    (
        "supervisor/src/instance/task.rs",
        "sleep(self.spec.run.start_timeout)",
        "start_timeout, a deadline raced against readiness",
    ),
    (
        "supervisor/src/readiness.rs",
        "sleep(pause_after_failure(",
        "the pause between health checks: an app's health has no event",
    ),
    (
        "supervisor/src/readiness.rs",
        "sleep(pause)",
        "the readiness check interval",
    ),
    (
        "probe/src/ws.rs",
        "sleep(args.interval)",
        "the probe's pace (--interval)",
    ),
    (
        "probe/src/lib.rs",
        "sleep(Duration::from_millis(500))",
        "the probe's progress line, twice a second",
    ),
    (
        "daemon/src/app/memory.rs",
        "sleep(pause)",
        "max_memory readings from /proc, which has no event",
    ),
    (
        "daemon/src/app/inbox.rs",
        "sleep(SCAN_EVERY)",
        "the inbox folder scan",
    ),
    (
        "daemon/src/app/inbox.rs",
        "sleep(Duration::from_millis(wait))",
        "a file still being written is looked at again",
    ),
    (
        "daemon/src/app/inbox.rs",
        "sleep(SCAN_EVERY)",
        "the inbox folder scan, while a deploy runs",
    ),
    (
        "daemon/src/schedule/mod.rs",
        "sleep(wait)",
        "the next cron tick: a time, not a condition",
    ),
    (
        "cli/src/watch.rs",
        "sleep(EVERY)",
        "status --watch redraws once a second",
    ),
    (
        "cli/src/commands/up.rs",
        "sleep(Duration::from_millis(20))",
        "polls the detached daemon's first start: another process has no event",
    ),
    (
        "cli/src/commands/control.rs",
        "sleep(Duration::from_millis(20))",
        "polls another process's exit (baton stop)",
    ),
    (
        "cli/src/commands/upgrade.rs",
        "sleep(Duration::from_millis(20))",
        "polls the old daemon's exit",
    ),
    (
        "cli/src/commands/upgrade.rs",
        "sleep(Duration::from_millis(20))",
        "polls the new daemon's answer",
    ),
    (
        "proxy/src/listener.rs",
        "sleep(ACCEPT_BACKOFF)",
        "accept backoff when out of fds",
    ),
    (
        "proxy/src/lib.rs",
        "sleep(pause)",
        "passive health: fail_timeout out of rotation",
    ),
    (
        "proxy/src/lib.rs",
        "sleep(Duration::from_millis(100))",
        "passive health: an unreachable instance's port is tried again",
    ),
    (
        "proxy/src/access.rs",
        "sleep(BATCH)",
        "the access log writer's batch",
    ),
    (
        "proxy/src/h1/server/mod.rs",
        "sleep(header_read_timeout)",
        "header_read_timeout, a deadline",
    ),
    (
        "proxy/src/h1/mod.rs",
        "sleep(limit)",
        "response_timeout and read_timeout, deadlines",
    ),
    (
        "tls/src/acme/mod.rs",
        "sleep(wait)",
        "the renewal time, or the backoff after a failed order",
    ),
    (
        "tls/src/certificates.rs",
        "sleep(WATCH_EVERY)",
        "the certificate files' watch",
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources(under: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in under {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 100, "found only {} files", files.len());
    files
}

/// A file's lines before its unit tests (`#[cfg(test)]` then `mod`).
fn code_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = (lines.windows(2))
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

#[test]
fn no_source_file_is_over_900_lines() {
    let long: Vec<String> = sources(&["crates", "src", "tests"])
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn every_sleep_is_listed_with_its_reason() {
    let crates = root().join("crates");
    let mut found: Vec<(String, String)> = Vec::new();
    for file in sources(&["crates"]) {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&crates).unwrap().display().to_string();
        for line in code_lines(&text) {
            let line = line.trim();
            if !line.starts_with("//") && line.contains("sleep(") {
                found.push((name.clone(), line.to_owned()));
            }
        }
    }
    let mut unlisted = found.clone();
    for (file, says, why) in SLEEPS {
        assert!(!why.is_empty());
        let at = unlisted
            .iter()
            .position(|(f, l)| f == file && l.contains(says));
        match at {
            Some(at) => {
                unlisted.remove(at);
            }
            None => panic!("listed but gone: {file}: {says} ({why}); take it off SLEEPS"),
        }
    }
    assert!(
        unlisted.is_empty(),
        "a sleep is no way to wait for a condition: wait on the condition with a deadline, \
         or list it in SLEEPS with why it is not one: {unlisted:#?}"
    );
}

/// The lints that guard an invariant stay on: a std lock guard held
/// across an await (clippy's await_holding_lock), and dead code, which
/// `pub(crate)` by default makes visible.
#[test]
fn no_invariant_lint_is_switched_off() {
    let mut off = Vec::new();
    for file in sources(&["crates", "src"]) {
        let text = std::fs::read_to_string(&file).unwrap();
        for lint in ["await_holding_lock", "dead_code", "unsafe_code"] {
            if text.contains(&format!("allow(clippy::{lint})"))
                || text.contains(&format!("allow({lint})"))
            {
                off.push(format!("{}: {lint}", file.display()));
            }
        }
    }
    assert!(off.is_empty(), "switched off: {off:?}");
}

/// Every unsafe block is in a crate's `sys` module, with a SAFETY note.
#[test]
fn unsafe_lives_in_sys_modules_with_safety_notes() {
    let mut stray = Vec::new();
    for file in sources(&["crates", "src", "tests"]) {
        if file.ends_with("tests/e2e/layout.rs") {
            continue; // its own patterns
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if !(code.contains("unsafe {") || code.contains("unsafe fn")) {
                continue;
            }
            let in_sys = file.file_name().is_some_and(|n| n == "sys.rs");
            let noted = lines[at.saturating_sub(3)..at]
                .iter()
                .any(|l| l.contains("SAFETY:"))
                || line.contains("SAFETY:");
            if !in_sys || !noted {
                stray.push(format!("{}:{}", file.display(), at + 1));
            }
        }
    }
    assert!(
        stray.is_empty(),
        "unsafe outside a sys module or without SAFETY: {stray:?}"
    );
}

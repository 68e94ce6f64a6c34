//! `baton completions` and `baton man`: what a shell and `man` get.

use std::process::Command;

use crate::common::{bin, text};

fn baton(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// bash loads the script and completes `baton de` to `deploy`; zsh and
/// fish scripts name the subcommands too.
#[test]
fn completions_complete_subcommands() {
    let script = baton(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baton.bash");
    std::fs::write(&file, script).unwrap();
    // What bash offers for `baton de<TAB>`, through the script's function.
    let probe = format!(
        "source {:?}; COMP_WORDS=(baton de); COMP_CWORD=1; COMP_LINE='baton de'; COMP_POINT=8; \
         _baton baton de baton; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    assert_eq!(offered.trim(), "deploy", "{}", text(&out));
    for shell in ["zsh", "fish"] {
        let script = baton(&["completions", shell]);
        for word in ["deploy", "rollback", "apps", "probe"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
    }
}

/// One page for baton and one for each subcommand, with their help.
#[test]
fn the_man_page_covers_every_subcommand() {
    let page = baton(&["man"]);
    for title in [
        ".TH baton 1",
        ".TH baton-deploy 1",
        ".TH baton-apps 1",
        ".TH baton-probe 1",
    ] {
        assert!(page.contains(title), "{title}");
    }
    assert!(page.contains("Deploy a new release with zero downtime"));
}

/// `baton init` in the Express app's folder writes a baton.toml that
/// `baton check` accepts (its start, its lock file's build, its /health),
/// and never overwrites one.
#[test]
fn init_writes_a_config_for_a_node_app_and_keeps_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    let express = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/express");
    for file in ["app.js", "package.json", "package-lock.json"] {
        std::fs::copy(express.join(file), dir.path().join(file)).unwrap();
    }
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["init"]);
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(dir.path().join("baton.toml")).unwrap();
    assert!(written.contains("command = \"node app.js\""), "{written}");
    assert!(
        written.contains("build = \"npm ci --omit=dev\""),
        "{written}"
    );
    assert!(written.contains("path = \"/health\""), "{written}");
    let out = run(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("app baton-test-express"),
        "{}",
        text(&out)
    );
    let out = run(&["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("does not overwrite"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("baton.toml")).unwrap(),
        written
    );
}

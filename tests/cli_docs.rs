//! `baton completions` and `baton man`: what a shell and `man` get.

mod common;

use std::process::Command;

use common::{bin, text};

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

use super::*;

fn parse_err(text: &str) -> ConfigError {
    parse(text, Path::new("baton.toml")).expect_err("config should be rejected")
}

/// The line and field a rejected config is blamed on.
fn located(text: &str) -> (Option<usize>, Option<String>) {
    let e = parse_err(text);
    (e.line, e.field)
}

#[test]
fn a_bad_port_range_is_blamed_on_its_line() {
    for range in ["90-80", "20000", "80-90", "a-b"] {
        let text = format!(
            "[app]\nname = \"a\"\n[daemon]\nport_range = \"{range}\"\n[web]\ncommand = \"x\"\n"
        );
        assert_eq!(
            located(&text),
            (Some(4), Some("daemon.port_range".into())),
            "{range}"
        );
    }
    let text =
        "[app]\nname = \"a\"\n[daemon]\nport_range = \"20000-20009\"\n[web]\ncommand = \"x\"\n";
    let loaded = parse(text, Path::new("baton.toml")).unwrap();
    assert_eq!(loaded.daemon.port_range(), Ok(Some(20000..=20009)));
}

/// ACME needs hosts without wildcards, an HTTPS listener, an email and
/// an https directory; each mistake is blamed on its line and field.
#[test]
fn acme_settings_are_checked() {
    let file = |hosts: &str, https: &str, tls: &str| {
        format!(
            "[app]\nname = \"shop\"\n{hosts}\n[proxy]\nlisten = \"127.0.0.1:80\"\n{https}\n\
             [web]\ncommand = \"node s.js\"\n[tls]\n{tls}\n"
        )
    };
    let https = "https_listen = \"127.0.0.1:443\"";
    let email = "acme_email = \"ops@shop.test\"";
    let hosts = "hosts = [\"shop.test\", \"www.shop.test\"]";
    let ok = parse(&file(hosts, https, email), Path::new("baton.toml")).expect("valid");
    assert_eq!(ok.app.hosts(), ["shop.test", "www.shop.test"]);
    assert!(ok.tls.acme_challenge.is_none());
    assert_eq!(
        located(&file("", https, email)),
        (Some(10), Some("tls.acme_email".into())),
        "no hosts"
    );
    assert_eq!(
        located(&file(hosts, "", email)),
        (Some(10), Some("tls.acme_email".into())),
        "no https_listen"
    );
    assert_eq!(
        located(&file("hosts = [\"*.shop.test\"]", https, email)),
        (Some(3), Some("app.hosts".into())),
        "a wildcard needs DNS-01"
    );
    assert_eq!(
        located(&file("hosts = [\"shop test\"]", https, email)),
        (Some(3), Some("app.hosts".into())),
        "not a host name"
    );
    assert_eq!(
        located(&file(hosts, https, "acme_email = \"ops\"")),
        (Some(10), Some("tls.acme_email".into())),
    );
    let plain_directory = format!("{email}\nacme_directory = \"http://ca.test/dir\"");
    assert_eq!(
        located(&file(hosts, https, &plain_directory)),
        (Some(11), Some("tls.acme_directory".into())),
    );
    let unknown = format!("{email}\nacme_challenge = \"dns-01\"");
    assert_eq!(located(&file(hosts, https, &unknown)).0, Some(11));
    // Wildcards are fine in hosts when no ACME is asked for.
    parse(
        &file("hosts = [\"*.shop.test\"]", "", ""),
        Path::new("baton.toml"),
    )
    .expect("a wildcard host without ACME");
}

/// The three-line file from the README is enough.
#[test]
fn minimal_config_gets_defaults() {
    let c = parse(
        "[app]\nname = \"hello\"\n[web]\ncommand = \"node server.js\"\n",
        Path::new("baton.toml"),
    )
    .expect("minimal config parses");
    assert_eq!(c.web.instance_count(), 1);
    assert_eq!(
        c.proxy.listen_addrs(),
        vec!["127.0.0.1:8080".parse().unwrap()]
    );
    assert_eq!(c.web.kill_timeout, Duration::from_secs(5));
    assert_eq!(c.web.readiness.kind, ReadinessKind::Http);
}

/// An unknown field names its line and dotted field.
#[test]
fn unknown_field_is_located() {
    let e = parse_err("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ninstancez = 2\n");
    assert_eq!(e.line, Some(5));
    assert_eq!(e.field.as_deref(), Some("web.instancez"));
    assert!(e.message.contains("unknown field"), "{}", e.message);
}

/// A value of the wrong type names its line and field.
#[test]
fn wrong_type_is_located() {
    let e = parse_err("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\nkill_timeout = 5\n");
    assert_eq!(e.line, Some(5));
    assert_eq!(e.field.as_deref(), Some("web.kill_timeout"));
}

/// Impossible values are refused with their line.
#[test]
fn impossible_values_are_located() {
    assert_eq!(
        located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ninstances = 0\n"),
        (Some(5), Some("web.instances".into()))
    );
    assert_eq!(
        located("[app]\nname = \"x\"\n[proxy]\nlisten = \"nowhere\"\n[web]\ncommand = \"x\"\n"),
        (Some(4), Some("proxy.listen".into()))
    );
    assert_eq!(
        located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\nstop_signal = \"SIGNOPE\"\n"),
        (Some(5), Some("web.stop_signal".into()))
    );
    assert_eq!(
        located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ninstances = \"lots\"\n"),
        (Some(5), Some("web.instances".into()))
    );
}

/// Sizes read with units; a bad one names its line.
#[test]
fn sizes() {
    assert_eq!(parse_size("512MB"), Some(512 << 20));
    assert_eq!(parse_size("2GiB"), Some(2 << 30));
    assert_eq!(parse_size("100"), Some(100));
    assert_eq!(parse_size("lots"), None);
    assert_eq!(
        located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\nmax_memory = 0\n"),
        (Some(5), Some("web.max_memory".into()))
    );
    assert_eq!(located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\n[releases]\nmax_unpacked_size = \"huge\"\n"), (Some(6), Some("releases.max_unpacked_size".into())));
}

/// A bad cron pattern (of a job or of `cron_restart`) or a singleton
/// named `web` is refused with its line.
#[test]
fn cron_and_process_validation() {
    assert_eq!(located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\n[cron.clean]\nschedule = \"every day\"\ncommand = \"x\"\n"), (Some(6), Some("cron.clean.schedule".into())));
    assert_eq!(
        located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\n[process.web]\ncommand = \"y\"\n"),
        (Some(6), Some("process.web".into()))
    );
    assert_eq!(
        located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ncron_restart = \"soon\"\n"),
        (Some(5), Some("web.cron_restart".into()))
    );
    let singleton =
        "[app]\nname = \"x\"\n[web]\ncommand = \"x\"\n[process.jobs]\ncommand = \"y\"\n";
    assert_eq!(
        located(&format!("{singleton}cron_restart = \"soon\"\n")),
        (Some(7), Some("process.jobs.cron_restart".into()))
    );
    assert_eq!(
        located(&format!("{singleton}max_memory = 0\n")),
        (Some(7), Some("process.jobs.max_memory".into()))
    );
    assert!(parse_cron("0 4 * * *").is_ok());
    assert!(parse_cron("*/5 * * * * *").is_ok());
}

/// `"max"` means one instance per CPU and durations read as humantime.
#[test]
fn max_instances_and_durations() {
    let c = parse(
        "[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ninstances = \"max\"\nkill_timeout = \"500ms\"\n",
        Path::new("baton.toml"),
    )
    .unwrap();
    assert!(c.web.instance_count() >= 1);
    assert_eq!(c.web.kill_timeout, Duration::from_millis(500));
}

mod readme {
    /// The README's full configuration reference is a valid baton.toml.
    #[test]
    fn readme_reference_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("Every field, with its default:")
            .expect("reference section");
        let block = &readme[start..];
        let open = block.find("```toml\n").expect("toml block") + "```toml\n".len();
        let close = block[open..].find("```").expect("block end");
        let text = &block[open..open + close];
        let c =
            super::parse(text, std::path::Path::new("README.md")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.tcp.len(), 1);
        assert_eq!(c.releases.keep, 5);
        assert!(c.web.drain_notice.is_some());
        assert!(c
            .statics
            .is_some_and(|s| s.keep_for.as_secs() == 7 * 24 * 3600));
    }

    /// Every recipe (Egg, Express, Next) is a valid baton.toml.
    #[test]
    fn readme_recipes_parse() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("## Recipes").expect("recipes section");
        let end = start + readme[start..].find("\n## ").expect("a next section");
        let mut recipes = 0;
        for block in readme[start..end].split("```toml\n").skip(1) {
            let text = &block[..block.find("```").expect("block end")];
            super::parse(text, std::path::Path::new("README.md"))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            recipes += 1;
        }
        assert_eq!(recipes, 3);
    }
}

//! What a file must satisfy beyond its schema, each failure naming
//! its line and field.

use super::*;

/// HTTPS needs a certificate, and a certificate its key.
pub(super) fn check_tls(
    c: &Config,
    err: impl Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let tls = &c.tls;
    match (&tls.cert, &tls.key) {
        (Some(cert), None) => {
            return Err(err(
                cert.span(),
                "tls.key",
                "[tls] cert needs its key".into(),
            ));
        }
        (None, Some(key)) => {
            return Err(err(
                key.span(),
                "tls.cert",
                "[tls] key needs its cert".into(),
            ));
        }
        _ => {}
    }
    if let Some(hsts) = &tls.hsts {
        if http::HeaderValue::from_str(hsts.get_ref()).is_err() {
            return Err(err(
                hsts.span(),
                "tls.hsts",
                "not a valid header value".into(),
            ));
        }
    }
    if let Some(hosts) = &c.app.hosts {
        if let Some(bad) = hosts.get_ref().iter().find(|h| !is_host_name(h)) {
            return Err(err(
                hosts.span(),
                "app.hosts",
                format!(
                    "{bad:?} is not a host name (letters, digits, '-' and '.', or '*.' and a name)"
                ),
            ));
        }
    }
    check_acme(c, &err)?;
    if let Some(https) = &c.proxy.https_listen {
        if tls.cert.is_none() && tls.certificates.is_empty() && tls.acme_email.is_none() {
            return Err(err(
                https.span(),
                "proxy.https_listen",
                "needs a certificate: [tls] cert and key, [tls] certificates, or [tls] acme_email"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Automatic certificates need names to issue for, a listener to answer
/// the challenges on and to serve them, and an HTTPS directory.
pub(super) fn check_acme(
    c: &Config,
    err: &impl Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let tls = &c.tls;
    let Some(email) = &tls.acme_email else {
        return Ok(());
    };
    if !email.get_ref().contains('@') {
        return Err(err(
            email.span(),
            "tls.acme_email",
            "not an email address".into(),
        ));
    }
    let hosts = c.app.hosts();
    if hosts.is_empty() {
        return Err(err(
            email.span(),
            "tls.acme_email",
            "needs [app] hosts: the names to get certificates for".into(),
        ));
    }
    if let Some(wildcard) = hosts.iter().find(|h| h.starts_with("*.")) {
        let span = c.app.hosts.as_ref().map(Spanned::span).unwrap_or(0..0);
        return Err(err(
            span,
            "app.hosts",
            format!(
                "{wildcard}: a wildcard certificate needs the DNS-01 challenge, which Baton does \
                 not answer; give its certificate in [tls] certificates"
            ),
        ));
    }
    if c.proxy.https_listen.is_none() {
        return Err(err(
            email.span(),
            "tls.acme_email",
            "certificates are for [proxy] https_listen, which is not set".into(),
        ));
    }
    if let Some(directory) = &tls.acme_directory {
        if !directory.get_ref().starts_with("https://") {
            return Err(err(
                directory.span(),
                "tls.acme_directory",
                "an ACME directory is an https:// URL (RFC 8555 §6.1)".into(),
            ));
        }
    }
    Ok(())
}

/// A DNS name as `[app] hosts` takes it: labels of letters, digits and
/// '-', or `*.` before such a name.
pub(super) fn is_host_name(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    name.len() <= 253
        && name.contains(|c: char| c.is_ascii_alphabetic())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The `max_memory` of `section` (`web`, or `process.<name>`), which means
/// the same in both; `err` locates an error.
pub(super) fn check_max_memory(
    section: &str,
    max_memory: Option<&Spanned<Size>>,
    err: impl Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if let Some(max) = max_memory {
        if max.get_ref().0 == 0 {
            return Err(err(
                max.span(),
                &format!("{section}.max_memory"),
                "must be more than 0".into(),
            ));
        }
    }
    Ok(())
}

pub(super) fn validate(c: &Config, text: &str, file: &Path) -> Result<(), ConfigError> {
    let err = |span: Range<usize>, field: &str, message: String| ConfigError {
        file: file.to_path_buf(),
        line: (span.end > 0).then(|| line_of(text, span.start)),
        field: Some(field.to_string()),
        message,
    };
    let listen = &c.proxy.listen;
    if listen.get_ref().as_slice().is_empty() {
        return Err(err(
            listen.span(),
            "proxy.listen",
            "needs at least one address".into(),
        ));
    }
    if c.web.command.get_ref().trim().is_empty() {
        return Err(err(
            c.web.command.span(),
            "web.command",
            "must not be empty".into(),
        ));
    }
    if *c.web.instances.get_ref() == Instances::Count(0) {
        return Err(err(
            c.web.instances.span(),
            "web.instances",
            "must be at least 1".into(),
        ));
    }
    if *c.web.max_surge.get_ref() == 0 {
        return Err(err(
            c.web.max_surge.span(),
            "web.max_surge",
            "must be at least 1".into(),
        ));
    }
    for (name, p) in &c.process {
        if name == "web" {
            return Err(err(
                p.command.span(),
                "process.web",
                "`web` is the [web] section's name".into(),
            ));
        }
        check_max_memory(&format!("process.{name}"), p.max_memory.as_ref(), err)?;
    }
    check_max_memory("web", c.web.max_memory.as_ref(), err)?;
    check_tls(c, err)?;
    if let Err(message) = c.daemon.port_range() {
        let span = c.daemon.port_range.as_ref().map_or(0..0, Spanned::span);
        return Err(err(span, "daemon.port_range", message));
    }
    if let Some(statics) = &c.statics {
        statics::check(statics, err)?;
    }
    if let Some(prefix) = &c.app.path_prefix {
        if !prefix.starts_with('/') || prefix.len() > 1 && prefix.ends_with('/') {
            return Err(err(
                find_key(text, "app", "path_prefix"),
                "app.path_prefix",
                "a path such as \"/api\": starts with '/', does not end with one".into(),
            ));
        }
    }
    for name in c.tcp.keys() {
        if !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            return Err(err(
                0..0,
                &format!("tcp.{name}"),
                "names are letters, digits and _ (they become PORT_<NAME>)".into(),
            ));
        }
    }
    if c.releases.max_unpacked_size.get_ref().0 == 0 {
        return Err(err(
            c.releases.max_unpacked_size.span(),
            "releases.max_unpacked_size",
            "must be more than 0".into(),
        ));
    }
    if c.web.readiness.kind == ReadinessKind::Http && !c.web.readiness.path.starts_with('/') {
        return Err(err(
            find_key(text, "readiness", "path"),
            "web.readiness.path",
            "must start with '/'".into(),
        ));
    }
    Ok(())
}

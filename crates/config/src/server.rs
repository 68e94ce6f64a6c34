//! What a daemon runs: one app (a baton.toml with `[app]` and `[web]`), or
//! a server of several (a baton.toml with `[server] apps`, listing each
//! app's own file). The listeners, TLS and the control socket are the
//! server's; everything else is each app's.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{
    find_key, from_toml, line_of, load_text, read, ConfigError, DaemonConfig, Loaded, ProxyConfig,
    TlsConfig,
};

/// A server file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// `[server]`: the apps.
    pub server: ServerSection,
    /// `[proxy]`: the public side, for every app.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// `[tls]`: certificates for every app's hosts.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `[daemon]`: where the server keeps its state.
    #[serde(default)]
    pub daemon: DaemonConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// The apps' files: paths or globs, relative to the server file.
    pub apps: Spanned<Vec<String>>,
}

/// What a daemon runs: its edge (from the server file, or from the one
/// app's file) and its apps.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The file `baton up` was given.
    pub path: PathBuf,
    /// Its folder; the edge's relative paths start here.
    pub base_dir: PathBuf,
    /// The public side.
    pub proxy: ProxyConfig,
    /// Certificates.
    pub tls: TlsConfig,
    /// State directory, metrics, threads.
    pub daemon: DaemonConfig,
    /// The apps, in the order listed.
    pub apps: Vec<Loaded>,
    /// Whether `path` is a server file (else it is the one app's file).
    pub server: bool,
}

impl Setup {
    /// Reads `path`: a server file and the app files it lists, or an app
    /// file (a server of one app).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, line and field of the first
    /// problem, in the server file or in an app's.
    pub fn load(path: &Path) -> Result<Setup, ConfigError> {
        let text = read(path)?;
        if !is_server_file(&text) {
            return Ok(Setup::single(load_text(&text, path)?));
        }
        let file: ServerFile = from_toml(&text, path)?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let err = |field: &str, line: Option<usize>, message: String| ConfigError {
            file: path.clone(),
            line,
            field: Some(field.to_owned()),
            message,
        };
        let apps_line = Some(line_of(&text, file.server.apps.span().start));
        let mut apps: Vec<Loaded> = Vec::new();
        for pattern in file.server.apps.get_ref() {
            let files =
                app_files(&base_dir, pattern).map_err(|why| err("server.apps", apps_line, why))?;
            for app_file in files {
                let app = load_app(&app_file)?;
                if let Some(same) = apps
                    .iter()
                    .find(|a| a.config.app.name == app.config.app.name)
                {
                    return Err(err(
                        "server.apps",
                        apps_line,
                        format!(
                            "two apps are named {:?}: {} and {}",
                            app.config.app.name,
                            same.path.display(),
                            app.path.display()
                        ),
                    ));
                }
                apps.push(app);
            }
        }
        if apps.is_empty() {
            return Err(err("server.apps", apps_line, "lists no app file".into()));
        }
        check_routes(&apps).map_err(|why| err("server.apps", apps_line, why))?;
        let setup = Setup {
            path: path.clone(),
            base_dir,
            proxy: file.proxy,
            tls: file.tls,
            daemon: file.daemon,
            apps,
            server: true,
        };
        setup.check_tls(&text)?;
        if let Err(message) = setup.daemon.port_range() {
            let span = find_key(&text, "daemon", "port_range");
            return Err(ConfigError {
                file: setup.path.clone(),
                line: (span.end > 0).then(|| line_of(&text, span.start)),
                field: Some("daemon.port_range".into()),
                message,
            });
        }
        Ok(setup)
    }

    /// A server of one app, whose own file says where it listens (the one
    /// app answers every host).
    pub fn single(app: Loaded) -> Setup {
        Setup {
            path: app.path.clone(),
            base_dir: app.base_dir.clone(),
            proxy: app.config.proxy.clone(),
            tls: app.config.tls.clone(),
            daemon: app.config.daemon.clone(),
            server: false,
            apps: vec![app],
        }
    }

    /// The server's state directory (control socket, lock, ACME): the one
    /// app's own, or `[daemon] state_dir` of the server file (default
    /// `.baton` beside it).
    pub fn state_dir(&self) -> PathBuf {
        match (&self.daemon.state_dir, self.server) {
            (_, false) => self.apps[0].state_dir(),
            (Some(p), true) => self.base_dir.join(p),
            (None, true) => self.base_dir.join(".baton"),
        }
    }

    /// The `[tls]` certificate files, `(cert, key)`.
    pub fn cert_pairs(&self) -> Vec<(PathBuf, PathBuf)> {
        let tls = &self.tls;
        let first = tls.cert.as_ref().zip(tls.key.as_ref());
        let first = first.map(|(c, k)| (c.get_ref().clone(), k.get_ref().clone()));
        let more = tls
            .certificates
            .iter()
            .map(|p| (p.cert.clone(), p.key.clone()));
        first
            .into_iter()
            .chain(more)
            .map(|(c, k)| (self.base_dir.join(c), self.base_dir.join(k)))
            .collect()
    }

    /// A server's HTTPS needs a certificate source; ACME needs hosts.
    fn check_tls(&self, text: &str) -> Result<(), ConfigError> {
        let err = |table: &str, key: &str, message: String| {
            let span = find_key(text, table, key);
            ConfigError {
                file: self.path.clone(),
                line: (span.end > 0).then(|| line_of(text, span.start)),
                field: Some(format!("{table}.{key}")),
                message,
            }
        };
        let tls = &self.tls;
        let hosts: Vec<String> = self
            .apps
            .iter()
            .flat_map(|a| a.config.app.hosts())
            .collect();
        if tls.acme_email.is_some() {
            if hosts.is_empty() {
                return Err(err(
                    "tls",
                    "acme_email",
                    "no app has [app] hosts: the names to get certificates for".into(),
                ));
            }
            if self.proxy.https_listen.is_none() {
                return Err(err(
                    "tls",
                    "acme_email",
                    "certificates are for [proxy] https_listen, which is not set".into(),
                ));
            }
        }
        if self.proxy.https_listen.is_some()
            && tls.cert.is_none()
            && tls.certificates.is_empty()
            && tls.acme_email.is_none()
        {
            return Err(err(
                "proxy",
                "https_listen",
                "needs a certificate: [tls] cert and key, [tls] certificates, or [tls] acme_email"
                    .into(),
            ));
        }
        if (tls.cert.is_some()) != (tls.key.is_some()) {
            return Err(err("tls", "cert", "[tls] cert and key go together".into()));
        }
        Ok(())
    }
}

/// Whether the file at `path` is a server file (has a `[server]` table).
pub fn is_server_file_at(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| is_server_file(&text))
}

/// Whether a file's text is a server file: a `[server]` table.
fn is_server_file(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "[server]")
}

/// The files one `[server] apps` entry names, in order.
fn app_files(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = base.join(pattern);
    if !pattern.contains(['*', '?', '[']) {
        return Ok(vec![full]);
    }
    let full = full.to_string_lossy().to_string();
    let mut files: Vec<PathBuf> = glob::glob(&full)
        .map_err(|e| format!("{pattern:?}: {e}"))?
        .filter_map(Result::ok)
        .collect();
    files.sort();
    Ok(files)
}

/// An app's file in a server: as any app file, but the listeners and TLS
/// are the server's, so setting them there is an error.
fn load_app(path: &Path) -> Result<Loaded, ConfigError> {
    let text = read(path)?;
    let loaded = load_text(&text, path)?;
    for (table, key) in [("proxy", "listen"), ("proxy", "https_listen")] {
        let span = find_key(&text, table, key);
        if span.end > 0 {
            return Err(ConfigError {
                file: loaded.path.clone(),
                line: Some(line_of(&text, span.start)),
                field: Some(format!("{table}.{key}")),
                message: "the server's listeners serve every app: set it in the server file".into(),
            });
        }
    }
    if let Some(at) = text.lines().position(|l| l.trim() == "[tls]") {
        return Err(ConfigError {
            file: loaded.path.clone(),
            line: Some(at + 1),
            field: Some("tls".into()),
            message: "certificates are the server's: set [tls] in the server file".into(),
        });
    }
    Ok(loaded)
}

/// No two apps claim the same host and path prefix, and at most one is the
/// default.
fn check_routes(apps: &[Loaded]) -> Result<(), String> {
    let defaults: Vec<&str> = (apps.iter())
        .filter(|a| a.config.app.default)
        .map(|a| a.config.app.name.as_str())
        .collect();
    if defaults.len() > 1 {
        return Err(format!(
            "more than one app is the default: {}",
            defaults.join(", ")
        ));
    }
    let mut claimed: Vec<(String, String, &str)> = Vec::new();
    for app in apps {
        let prefix = app.config.app.path_prefix.clone().unwrap_or_default();
        for host in app.config.app.hosts() {
            let name = app.config.app.name.as_str();
            if let Some((_, _, other)) = claimed.iter().find(|(h, p, _)| *h == host && *p == prefix)
            {
                return Err(format!(
                    "{other} and {name} both claim {host}{prefix}: give one a different path_prefix"
                ));
            }
            claimed.push((host, prefix.clone(), name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server folder with `apps` (folder, extra `[app]` lines) and the
    /// server file listing `list`.
    fn folder(apps: &[(&str, &str)], list: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, extra) in apps {
            let app = dir.path().join(name);
            std::fs::create_dir_all(&app).unwrap();
            let short = name.rsplit('/').next().unwrap();
            std::fs::write(
                app.join("baton.toml"),
                format!("[app]\nname = \"{short}\"\n{extra}\n[web]\ncommand = \"node s.js\"\n"),
            )
            .unwrap();
        }
        std::fs::write(
            dir.path().join("baton.toml"),
            format!("[server]\napps = {list}\n[proxy]\nlisten = \"127.0.0.1:8080\"\n"),
        )
        .unwrap();
        dir
    }

    fn error(dir: &tempfile::TempDir) -> ConfigError {
        Setup::load(&dir.path().join("baton.toml")).expect_err("refused")
    }

    #[test]
    fn globs_expand_in_order_and_a_single_app_file_is_a_server_of_one() {
        let dir = folder(
            &[("shop", ""), ("t/b", ""), ("t/a", "")],
            "[\"shop/baton.toml\", \"t/*/baton.toml\"]",
        );
        let setup = Setup::load(&dir.path().join("baton.toml")).unwrap();
        let names: Vec<&str> = setup
            .apps
            .iter()
            .map(|a| a.config.app.name.as_str())
            .collect();
        assert_eq!(names, ["shop", "a", "b"]);
        assert!(setup.server);
        assert_eq!(setup.state_dir(), dir.path().join(".baton"));
        let one = Setup::load(&dir.path().join("shop/baton.toml")).unwrap();
        assert!(!one.server);
        assert_eq!(one.state_dir(), dir.path().join("shop/.baton"));
    }

    #[test]
    fn a_server_file_names_what_is_wrong() {
        let dir = folder(
            &[("a", "default = true"), ("b", "default = true")],
            "[\"a/baton.toml\", \"b/baton.toml\"]",
        );
        let e = error(&dir);
        assert_eq!((e.line, e.field.as_deref()), (Some(2), Some("server.apps")));
        assert!(
            e.message.contains("more than one app is the default"),
            "{e}"
        );

        let dir = folder(
            &[("a", ""), ("x/a", "")],
            "[\"a/baton.toml\", \"x/a/baton.toml\"]",
        );
        assert!(error(&dir).message.contains("two apps are named \"a\""));

        let dir = folder(&[("a", "")], "[\"none/*/baton.toml\"]");
        assert!(error(&dir).message.contains("lists no app file"));

        let dir = folder(&[("a", "")], "[\"a/baton.toml\"]");
        let app = dir.path().join("a/baton.toml");
        let text = std::fs::read_to_string(&app).unwrap();
        std::fs::write(
            &app,
            format!("{text}[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n"),
        )
        .unwrap();
        let e = error(&dir);
        assert_eq!(e.file, app.canonicalize().unwrap_or(app.clone()));
        assert_eq!((e.line, e.field.as_deref()), (Some(6), Some("tls")));
    }
}

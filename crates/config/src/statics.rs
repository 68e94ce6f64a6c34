//! `[static]`: the app's static files, served by Baton itself from the
//! serving release and, for open pages, from releases that served until
//! lately (skew protection).

use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::ConfigError;

/// `[static]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// The folder served, inside the release folder.
    #[serde(default = "default_dir")]
    pub dir: Spanned<PathBuf>,
    /// The URL prefix Baton answers itself; the app never sees it.
    #[serde(default = "default_prefix")]
    pub prefix: Spanned<String>,
    /// File names matching this pattern are cached for a year as
    /// immutable; others briefly. The default matches webpack's and
    /// Vite's content hashes (`app.1a2b3c4d.js`, `index-4f2a9c1e.css`).
    #[serde(default = "default_immutable")]
    pub immutable: Spanned<String>,
    /// A release's files stay reachable this long after it stopped
    /// serving, and its folder is kept that long whatever `keep` says.
    #[serde(default = "default_keep_for", with = "humantime_serde")]
    pub keep_for: Duration,
    /// `index.html` answers a request for its folder (off by default, as
    /// a prefix of hashed assets has no pages).
    #[serde(default)]
    pub index: bool,
}

fn default_dir() -> Spanned<PathBuf> {
    Spanned::new(0..0, PathBuf::from("public"))
}

fn default_prefix() -> Spanned<String> {
    Spanned::new(0..0, "/static".into())
}

/// The default `immutable` pattern.
pub const HASHED_NAME: &str = r"[.-][0-9a-f]{8,}\.";

fn default_immutable() -> Spanned<String> {
    Spanned::new(0..0, HASHED_NAME.into())
}

fn default_keep_for() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl StaticConfig {
    /// The prefix as served: `/static` (a trailing `/` is dropped).
    pub fn prefix(&self) -> &str {
        let prefix = self.prefix.get_ref().as_str();
        match prefix.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => prefix,
        }
    }

    /// The served folder inside a release folder.
    pub fn dir_in(&self, release: &Path) -> PathBuf {
        release.join(self.dir.get_ref())
    }
}

/// Checks `[static]`.
pub(super) fn check(
    s: &StaticConfig,
    err: impl Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let dir = s.dir.get_ref();
    let inside = dir
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside || dir.as_os_str().is_empty() {
        return Err(err(
            s.dir.span(),
            "static.dir",
            "a folder inside the release, such as \"public\" (no '..', not absolute)".into(),
        ));
    }
    let prefix = s.prefix.get_ref();
    if !prefix.starts_with('/') || prefix.contains(['?', '#', '%', '\\']) {
        return Err(err(
            s.prefix.span(),
            "static.prefix",
            "a URL path such as \"/static\": starts with '/', no '?', '#', '%' or '\\'".into(),
        ));
    }
    if let Err(e) = regex::Regex::new(s.immutable.get_ref()) {
        return Err(err(
            s.immutable.span(),
            "static.immutable",
            format!("not a regular expression: {e}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn located(statics: &str) -> (Option<usize>, Option<String>, String) {
        let text = format!("[app]\nname = \"a\"\n[web]\ncommand = \"x\"\n[static]\n{statics}\n");
        let e = super::super::parse(&text, Path::new("baton.toml"))
            .expect_err("config should be rejected");
        (e.line, e.field, e.message)
    }

    #[test]
    fn a_bad_static_section_is_blamed_on_its_line_and_field() {
        let (line, field, _) = located("prefix = \"static\"");
        assert_eq!((line, field.as_deref()), (Some(6), Some("static.prefix")));
        let (line, field, _) = located("dir = \"../shared\"");
        assert_eq!((line, field.as_deref()), (Some(6), Some("static.dir")));
        let (line, field, _) = located("dir = \"/srv/public\"");
        assert_eq!((line, field.as_deref()), (Some(6), Some("static.dir")));
        let (line, field, message) = located("immutable = \"[0-9\"");
        assert_eq!(
            (line, field.as_deref()),
            (Some(6), Some("static.immutable"))
        );
        assert!(message.contains("regular expression"), "{message}");
        let (line, field, _) = located("keep_for = \"a week\"");
        assert_eq!((line, field.as_deref()), (Some(6), Some("static.keep_for")));
    }

    #[test]
    fn defaults_serve_public_under_static_for_a_week() {
        let text = "[app]\nname = \"a\"\n[web]\ncommand = \"x\"\n[static]\n";
        let loaded = super::super::parse(text, Path::new("baton.toml")).unwrap();
        let statics = loaded.statics.expect("[static] is there");
        assert_eq!(statics.prefix(), "/static");
        assert_eq!(statics.dir.get_ref(), Path::new("public"));
        assert_eq!(statics.keep_for.as_secs(), 7 * 24 * 3600);
        assert!(regex::Regex::new(statics.immutable.get_ref())
            .unwrap()
            .is_match("app.1a2b3c4d.js"));
        assert!(!statics.index);
    }
}

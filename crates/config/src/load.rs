//! Reading a file: the error that names its file, line and field, and
//! [`Loaded`], a configuration with where it came from.

use super::*;

/// A configuration error that points at the place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted field name, when known (`web.instances`).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded configuration together with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed, validated configuration.
    pub config: Config,
    /// The baton.toml path.
    pub path: PathBuf,
    /// The folder that holds baton.toml; relative paths start here.
    pub base_dir: PathBuf,
}

impl Loaded {
    /// The state directory: `[daemon] state_dir` or `.baton` beside baton.toml.
    pub fn state_dir(&self) -> PathBuf {
        match &self.config.daemon.state_dir {
            Some(p) => self.base_dir.join(p),
            None => self.base_dir.join(".baton"),
        }
    }

    /// The app's log file.
    pub fn app_log(&self) -> PathBuf {
        match &self.config.daemon.app_log {
            Some(p) => self.base_dir.join(p),
            None => self.state_dir().join("logs").join("web.log"),
        }
    }

    /// How its log files are rotated.
    pub fn log_rotation(&self) -> crate::logs::Rotation {
        let default = crate::logs::Rotation::default();
        let daemon = &self.config.daemon;
        crate::logs::Rotation {
            max_size: daemon
                .log_max_size
                .as_ref()
                .map_or(default.max_size, |s| s.0),
            keep: daemon.log_keep.unwrap_or(default.keep),
        }
    }

    /// The folder holding release folders.
    pub fn releases_root(&self) -> PathBuf {
        self.state_dir().join(&self.config.releases.root)
    }
}

/// Reads and validates a baton.toml.
///
/// # Errors
/// A [`ConfigError`] naming the file, line and field of the first problem.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_text(&read(path)?, path)
}

/// A config file's text, or the error naming the file.
pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        field: None,
        message: format!("cannot read: {e}"),
    })
}

/// [`load`] of text already read from `path`.
pub(super) fn load_text(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let config = parse(text, path)?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Loaded {
        config,
        path,
        base_dir,
    })
}

/// Parses and validates configuration text; `file` is used in errors only.
///
/// # Errors
/// A [`ConfigError`] naming the file, line and field of the first problem.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let config: Config = from_toml(text, file)?;
    validate(&config, text, file)?;
    Ok(config)
}

/// TOML text deserialized, or the error at its line and field.
pub(super) fn from_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let span = e.span();
        let (line, field) = match &span {
            Some(span) => (
                Some(line_of(text, span.start)),
                field_at(text, span.clone()),
            ),
            None => (None, None),
        };
        ConfigError {
            file: file.to_path_buf(),
            line,
            field,
            message: e.message().trim().to_string(),
        }
    })
}

/// 1-based line number of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted name of the key on the line holding `span`, with the table
/// header above it: `web.instances`.
pub(super) fn field_at(text: &str, span: Range<usize>) -> Option<String> {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() {
        return table;
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// The span of `key = ...` inside a table whose header ends with `table`.
pub(super) fn find_key(text: &str, table: &str, key: &str) -> Range<usize> {
    let mut offset = 0;
    let mut in_table = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t.trim_matches(|c| c == '[' || c == ']').ends_with(table);
        } else if in_table && t.split('=').next().map(str::trim) == Some(key) {
            return offset..offset + line.len();
        }
        offset += line.len();
    }
    0..0
}

//! `[releases]`: where release folders live and how many are kept.

use super::*;

/// `[releases]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReleasesConfig {
    /// Folder of release folders; relative to the state directory.
    pub root: PathBuf,
    /// Successful releases kept besides the current one.
    pub keep: usize,
    /// Shell command run in a new release folder before any instance starts.
    pub build: Option<String>,
    /// A build running longer than this fails.
    #[serde(with = "humantime_serde")]
    pub build_timeout: Duration,
    /// Folders and files shared by every release (symlinked in, as Capistrano).
    pub shared: Vec<String>,
    /// Copy `node_modules` when releasing a directory.
    pub keep_node_modules: bool,
    /// Names never copied from a directory (besides `.git` and `.baton`).
    pub ignore: Vec<String>,
    /// Largest unpacked size of a tarball, such as "2GB".
    pub max_unpacked_size: Spanned<Size>,
    /// Largest app directory of which a copy is kept at an in-place release
    /// (for its rollback); 0 keeps none.
    pub max_copy_size: Size,
    /// A folder watched for new tarballs to deploy.
    pub inbox: Option<PathBuf>,
    /// A tarball is taken once its size and mtime held still this long.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Random wait, up to this, before an inbox deploy, so that servers
    /// sharing one inbox do not all restart at once.
    #[serde(with = "humantime_serde")]
    pub stagger: Duration,
}

impl Default for ReleasesConfig {
    fn default() -> Self {
        ReleasesConfig {
            root: PathBuf::from("releases"),
            keep: 5,
            build: None,
            build_timeout: Duration::from_secs(600),
            shared: Vec::new(),
            keep_node_modules: false,
            ignore: Vec::new(),
            max_unpacked_size: Spanned::new(0..0, Size(2 << 30)),
            max_copy_size: Size(256 << 20),
            inbox: None,
            settle: Duration::from_secs(2),
            stagger: Duration::ZERO,
        }
    }
}

/// A byte size: a whole number of bytes, or a string such as "512MB", "2GiB".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!("{s:?} is not a size like \"512MB\" or \"2GiB\""))
            }),
        }
    }
}

pub(super) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

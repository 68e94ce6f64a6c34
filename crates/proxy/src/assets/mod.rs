//! Static files, served by Baton itself under an app's `[static] prefix`,
//! from the serving release and, for pages rendered before a deploy, from
//! releases that stopped serving less than `keep_for` ago (skew
//! protection).
//!
//! - [`target`]: the request target → a relative path of plain names.
//! - [`open`]: opening it beneath a release's folder, and nowhere else.
//! - [`reply`]: validators, conditions, ranges, the answer's fields.
//! - [`body`]: sending the file: `sendfile(2)` on plain TCP, reads on TLS
//!   and h2.
//!
//! An app publishes its [`Shelf`] (which releases, in which order) into
//! its [`Assets`] whenever the serving release changes; a request reads it
//! without a lock.

pub(crate) mod body;
pub(crate) mod open;
pub(crate) mod reply;
pub(crate) mod target;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::StatusCode;

use self::open::{Folder, Found};
pub(crate) use self::reply::Ask;
use self::reply::{Chosen, Coding};
use self::target::Refused;
use crate::phases::{OwnAnswer as Answer, Payload};

/// One app's static files: the shelf in force, swapped whole.
#[derive(Debug, Default)]
pub struct Assets {
    shelf: ArcSwap<Option<Shelf>>,
}

/// The releases whose files are served, and how.
#[derive(Debug)]
pub struct Shelf {
    /// `[static] prefix`, without a trailing `/`.
    prefix: Box<str>,
    immutable: regex::Regex,
    index: bool,
    /// The serving release first, then those that served before, the
    /// latest to stop first.
    roots: Vec<Root>,
}

/// One release's served folder.
#[derive(Debug)]
pub(crate) struct Root {
    /// The release id, as `x-baton-release` says it.
    release: HeaderValue,
    folder: Folder,
    /// Served until then; `None` while it serves.
    until: Option<SystemTime>,
}

/// A release's folder to serve from, as an app describes it.
#[derive(Debug, Clone)]
pub struct Shelved {
    /// Its id.
    pub release: String,
    /// The `[static] dir` inside the release's folder.
    pub dir: PathBuf,
    /// Served until then (it stopped serving `keep_for` before); `None`
    /// for the serving release.
    pub until: Option<SystemTime>,
}

impl Shelf {
    /// The shelf for `[static]` over `releases` (serving first). A release
    /// without the folder is left out.
    pub fn new(config: &crate::config::StaticConfig, releases: &[Shelved]) -> Shelf {
        let roots = releases
            .iter()
            .filter_map(|r| {
                let folder = Folder::open(&r.dir).ok()?;
                Some(Root {
                    release: HeaderValue::try_from(r.release.as_str()).ok()?,
                    folder,
                    until: r.until,
                })
            })
            .collect();
        Shelf {
            prefix: config.prefix().into(),
            // Checked when the configuration was loaded.
            immutable: regex::Regex::new(config.immutable.get_ref())
                .unwrap_or_else(|_| regex::Regex::new(crate::config::HASHED_NAME).expect("valid")),
            index: config.index,
            roots,
        }
    }

    /// Whether `path` is under the prefix: `/static` takes `/static`,
    /// `/static/x` and `/static?q`, not `/staticx`.
    pub(crate) fn takes(&self, path: &[u8]) -> bool {
        let prefix = self.prefix.as_bytes();
        path.starts_with(prefix)
            && matches!(path.get(prefix.len()), None | Some(b'/' | b'?' | b'#'))
    }

    /// The answer to a request under the prefix. A HEAD gets the fields
    /// of the GET's answer and no body, Baton's own texts included.
    pub(crate) fn answer(&self, ask: &Ask<'_>) -> Answer {
        let mut answer = self.answer_get(ask);
        if ask.method == b"HEAD" {
            answer.body = Payload::Empty;
        }
        answer
    }

    fn answer_get(&self, ask: &Ask<'_>) -> Answer {
        if !ask.is_read() {
            return Answer::not_allowed();
        }
        let relative = match target::relative(ask.target, &self.prefix) {
            Ok(Some(path)) => path,
            Ok(None) if self.index => PathBuf::from(INDEX),
            Ok(None) | Err(Refused::Hidden) => return not_found(),
            Err(Refused::Malformed) => {
                return Answer::text(StatusCode::BAD_REQUEST, "bad path\n");
            }
        };
        let pinned = ask
            .deployment
            .or_else(|| crate::http1::query_value(ask.target, b"dpl"))
            .and_then(|id| self.roots.iter().position(|r| r.release.as_bytes() == id));
        let now = SystemTime::now();
        // A page's own release first, when it says which.
        let others = (0..self.roots.len()).filter(|&i| Some(i) != pinned);
        for root in pinned.into_iter().chain(others).map(|i| &self.roots[i]) {
            if root.until.is_some_and(|until| until <= now) {
                continue;
            }
            match self.find(root, &relative, ask) {
                Ok(Some(answer)) => return answer,
                Ok(None) => {}
                Err(Stop(answer)) => return answer,
            }
        }
        not_found()
    }

    /// The answer from `root`, if it has the file.
    fn find(&self, root: &Root, relative: &Path, ask: &Ask<'_>) -> Result<Option<Answer>, Stop> {
        let (opened, relative) = match root.folder.find(relative) {
            Ok(Found::File(opened)) => (opened, relative.to_path_buf()),
            Ok(Found::Dir) if self.index => {
                let index = relative.join(INDEX);
                match root.folder.find(&index) {
                    Ok(Found::File(opened)) => (opened, index),
                    _ => return Ok(None),
                }
            }
            Ok(Found::Dir | Found::Missing) => return Ok(None),
            // A symlink out of the folder: refused, not looked for elsewhere.
            Ok(Found::Outside) => return Err(Stop(not_found())),
            Err(e) => return Err(Stop(open_failed(&e))),
        };
        let kind = content_type(&relative);
        let varies = kind.compressible;
        let (opened, coding) = if varies {
            precompressed(root, &relative, ask.accept_encoding)
                .unwrap_or((opened, Coding::Identity))
        } else {
            (opened, Coding::Identity)
        };
        let immutable = relative
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|name| self.immutable.is_match(name));
        Ok(Some(reply::file_answer(
            ask,
            Chosen {
                opened,
                coding,
                content_type: kind.value,
                varies,
                immutable,
                release: &root.release,
            },
        )))
    }
}

/// An answer that ends the search.
struct Stop(Answer);

const INDEX: &str = "index.html";

fn not_found() -> Answer {
    Answer::text(StatusCode::NOT_FOUND, "not found\n")
}

/// A file that exists and could not be opened: 403 when not readable,
/// 503 when Baton is out of descriptors (it passes), else 500.
fn open_failed(e: &std::io::Error) -> Answer {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => Answer::text(StatusCode::FORBIDDEN, "forbidden\n"),
        Some(libc::EMFILE | libc::ENFILE) => {
            Answer::text(StatusCode::SERVICE_UNAVAILABLE, "busy, try again\n")
        }
        _ => Answer::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not read the file\n",
        ),
    }
}

/// The `.br` or `.gz` sibling of `relative` in the same release, when the
/// client takes that coding: brotli first (smaller), then gzip.
fn precompressed(
    root: &Root,
    relative: &Path,
    accept_encoding: Option<&[u8]>,
) -> Option<(open::Opened, Coding)> {
    [Coding::Brotli, Coding::Gzip]
        .into_iter()
        .find_map(|coding| {
            if !reply::acceptable(accept_encoding, coding) {
                return None;
            }
            let mut name = relative.as_os_str().to_owned();
            name.push(coding.suffix());
            match root.folder.find(Path::new(&name)) {
                Ok(Found::File(opened)) => Some((opened, coding)),
                _ => None,
            }
        })
}

/// A media type, and whether it is worth a precompressed sibling.
struct Kind {
    value: HeaderValue,
    compressible: bool,
}

/// The type by extension (mime_guess's table); text gets `charset=utf-8`,
/// as bundlers write UTF-8.
fn content_type(path: &Path) -> Kind {
    let raw = mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let value = match raw {
        "text/html" => "text/html; charset=utf-8",
        "text/css" => "text/css; charset=utf-8",
        "text/javascript" | "application/javascript" => "text/javascript; charset=utf-8",
        "text/plain" => "text/plain; charset=utf-8",
        "text/csv" => "text/csv; charset=utf-8",
        "text/markdown" => "text/markdown; charset=utf-8",
        other => other,
    };
    let compressible = raw.starts_with("text/")
        || matches!(
            raw,
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
                | "application/vnd.ms-fontobject"
                | "font/ttf"
                | "font/otf"
        );
    Kind {
        value: HeaderValue::from_static(value),
        compressible,
    }
}

impl Assets {
    /// Puts `shelf` in force (`None`: no `[static]`).
    pub fn publish(&self, shelf: Option<Shelf>) {
        self.shelf.store(Arc::new(shelf));
    }

    /// The shelf in force.
    pub(crate) fn shelf(&self) -> arc_swap::Guard<Arc<Option<Shelf>>> {
        self.shelf.load()
    }
}

//! Log capture: every line an instance writes is prefixed with the time, the
//! process and the instance, then written to the daemon's output, to the
//! process's log file (rotated by size), and to live followers.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::broadcast;

/// A log file is rotated to `<file>.1` past this size.
const ROTATE_BYTES: u64 = 16 * 1024 * 1024;
/// Lines kept per instance for failure reports.
const TAIL_LINES: usize = 40;

/// Where one process's lines go. Cloneable; all clones share the file.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<SinkFile>>,
    live: broadcast::Sender<String>,
    echo: bool,
}

struct SinkFile {
    path: PathBuf,
    file: Option<File>,
    written: u64,
}

impl LogSink {
    /// A sink writing to the file `path`; `echo` also prints to stdout.
    pub fn new(path: &Path, echo: bool) -> LogSink {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        let written = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        LogSink {
            inner: Arc::new(Mutex::new(SinkFile {
                path,
                file,
                written,
            })),
            live: broadcast::channel(1024).0,
            echo,
        }
    }

    /// The current log file.
    pub fn path(&self) -> PathBuf {
        self.inner.lock().expect("log lock poisoned").path.clone()
    }

    /// Live lines, for `baton logs --follow`.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.live.subscribe()
    }

    /// Writes one already-prefixed line.
    pub fn write_line(&self, line: &str) {
        if self.echo {
            println!("{line}");
        }
        let _ = self.live.send(line.to_string());
        let mut sink = self.inner.lock().expect("log lock poisoned");
        if sink.written > ROTATE_BYTES {
            let mut rotated = sink.path.clone().into_os_string();
            rotated.push(".1");
            let _ = std::fs::rename(&sink.path, rotated);
            sink.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&sink.path)
                .ok();
            sink.written = 0;
        }
        if let Some(f) = sink.file.as_mut() {
            if writeln!(f, "{line}").is_ok() {
                sink.written += line.len() as u64 + 1;
            }
        }
    }
}

/// The last lines of one instance, for failure reasons.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut q = self.0.lock().expect("tail lock poisoned");
        if q.len() == TAIL_LINES {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        let q = self.0.lock().expect("tail lock poisoned");
        q.iter().skip(q.len().saturating_sub(n)).cloned().collect()
    }
}

/// Formats the prefix Baton puts before every app line.
pub fn prefix(instance: &str, stream: &str) -> String {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    format!("{now} {instance} {stream} |")
}

/// Copies `reader` line by line into `sink` and `tail` until it closes.
pub async fn capture<R: AsyncRead + Unpin>(
    reader: R,
    instance: String,
    stream: &'static str,
    sink: LogSink,
    tail: Tail,
) {
    let mut lines = BufReader::new(reader).split(b'\n');
    while let Ok(Some(raw)) = lines.next_segment().await {
        let text = String::from_utf8_lossy(&raw);
        let line = text.trim_end_matches('\r');
        sink.write_line(&format!("{} {line}", prefix(&instance, stream)));
        tail.push(line.to_string());
    }
}

//! Log capture: every line an instance writes is prefixed with the time, the
//! process and the instance, then written to the daemon's output, to the
//! process's log file (rotated by size), and to live followers.
//!
//! Logging never stops serving. The daemon's output is written by a thread
//! of its own from a bounded queue, so a stdout nobody reads (a full pipe)
//! blocks no task, and a line that does not fit in the queue is dropped and
//! counted. A write that fails (a closed pipe, a full disk) is counted in
//! [`LOG_HEALTH`], shown by `baton status` and `/metrics`, and the next
//! line tries again; a log file that cannot be opened is tried again every
//! few seconds.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::broadcast;

/// Lines kept per instance for failure reports.
const TAIL_LINES: usize = 40;
/// Lines waiting for the daemon's output; past this they are dropped (and
/// counted) rather than held in memory or waited for.
const ECHO_QUEUE: usize = 8192;
/// A log file that cannot be opened is tried again after this long.
const REOPEN_AFTER: Duration = Duration::from_secs(5);

/// Failed log writes since the daemon started.
#[derive(Default)]
pub struct LogHealth {
    /// Lines of the daemon's own log (stderr) that were lost: the write
    /// failed or stderr was not read fast enough.
    pub stderr_lost: AtomicU64,
    /// Lines the daemon's output did not take (its write failed).
    pub stdout_errors: AtomicU64,
    /// Lines dropped because the daemon's output was not read fast enough.
    pub stdout_dropped: AtomicU64,
    /// Lines a log file did not take (it could not be opened or written).
    pub file_errors: AtomicU64,
    /// The last failure while writes there keep failing, for `baton
    /// status`, and where it was.
    last: Mutex<Option<(Target, String)>>,
}

/// Where a log line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Stdout,
    File,
}

impl LogHealth {
    /// Counts a failed line; the first failure after a success is logged.
    fn failed(&self, target: Target, counter: &AtomicU64, what: std::fmt::Arguments<'_>) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().expect("log health lock poisoned");
        if last.is_none() {
            let text = what.to_string();
            tracing::warn!("log write failed: {text} (counted in `baton status` and /metrics)");
            *last = Some((target, text));
        }
    }

    /// A write to `target` worked: a failure there is over.
    fn recovered(&self, target: Target) {
        let mut last = self.last.lock().expect("log health lock poisoned");
        if last.as_ref().is_some_and(|(t, _)| *t == target) {
            *last = None;
        }
    }

    /// The last failure, while writes still fail.
    pub fn last(&self) -> Option<String> {
        self.last
            .lock()
            .expect("log health lock poisoned")
            .as_ref()
            .map(|(_, why)| why.clone())
    }

    /// Every line that failed or was dropped.
    pub fn total(&self) -> u64 {
        self.stderr_lost.load(Ordering::Relaxed)
            + self.stdout_errors.load(Ordering::Relaxed)
            + self.stdout_dropped.load(Ordering::Relaxed)
            + self.file_errors.load(Ordering::Relaxed)
    }
}

/// Failed log writes, for status and metrics.
pub static LOG_HEALTH: LazyLock<LogHealth> = LazyLock::new(LogHealth::default);

/// The daemon's own log (tracing's events) goes to stderr the way app
/// lines go to stdout: through a bounded queue to a thread of its own, so
/// that a stderr that is full, closed or not read never blocks a task and
/// never panics one (tracing's default writer reports its own failures
/// with `eprintln!`, which panics when stderr fails). Lost lines are only
/// counted: reporting them through tracing would loop.
#[derive(Clone, Copy, Default)]
pub struct QueuedStderr;

/// One event's bytes, queued whole when the event is written.
pub struct StderrLine(Vec<u8>);

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for StderrLine {
    fn drop(&mut self) {
        static QUEUE: OnceLock<Option<SyncSender<Vec<u8>>>> = OnceLock::new();
        let queue = QUEUE.get_or_init(|| {
            writer_thread("baton-stderr", std::io::stderr, |written| {
                if written.is_err() {
                    LOG_HEALTH.stderr_lost.fetch_add(1, Ordering::Relaxed);
                }
            })
        });
        let line = std::mem::take(&mut self.0);
        let sent = queue.as_ref().is_some_and(|q| q.try_send(line).is_ok());
        if !sent {
            LOG_HEALTH.stderr_lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedStderr {
    type Writer = StderrLine;

    fn make_writer(&'a self) -> StderrLine {
        StderrLine(Vec::with_capacity(256))
    }
}

/// A bounded queue of lines and the thread, called `name`, that writes
/// them to `output` one at a time and tells `written` how each went.
/// `None` when the thread cannot be started.
fn writer_thread<W: Write + 'static>(
    name: &str,
    output: fn() -> W,
    written: fn(std::io::Result<()>),
) -> Option<SyncSender<Vec<u8>>> {
    let (send, lines) = sync_channel::<Vec<u8>>(ECHO_QUEUE);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut out = output();
            for line in lines {
                written(out.write_all(&line).and_then(|()| out.flush()));
            }
        })
        .ok()
        .map(|_| send)
}

/// Queues a line for the daemon's output, which a thread of its own writes.
fn echo(line: String) {
    static QUEUE: OnceLock<Option<SyncSender<Vec<u8>>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        writer_thread("baton-stdout", std::io::stdout, |written| match written {
            Ok(()) => LOG_HEALTH.recovered(Target::Stdout),
            Err(e) => LOG_HEALTH.failed(
                Target::Stdout,
                &LOG_HEALTH.stdout_errors,
                format_args!("stdout: {e}"),
            ),
        })
    });
    let mut bytes = line.into_bytes();
    bytes.push(b'\n');
    match queue.as_ref().map(|q| q.try_send(bytes)) {
        Some(Ok(())) => {}
        Some(Err(TrySendError::Full(_))) => LOG_HEALTH.failed(
            Target::Stdout,
            &LOG_HEALTH.stdout_dropped,
            format_args!("stdout is not read fast enough; lines dropped"),
        ),
        Some(Err(TrySendError::Disconnected(_))) | None => LOG_HEALTH.failed(
            Target::Stdout,
            &LOG_HEALTH.stdout_errors,
            format_args!("stdout: the log writer thread is gone"),
        ),
    }
}

/// Where one process's lines go. Cloneable; all clones share the file.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<SinkFile>>,
    live: broadcast::Sender<String>,
    echo: bool,
}

struct SinkFile {
    path: PathBuf,
    rotation: Rotation,
    file: Option<File>,
    written: u64,
    /// When opening the file last failed.
    failed_at: Option<Instant>,
}

/// Opens a log file for appending, its folder made first.
fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// When a log file is rotated, and how many old ones are kept
/// (`[daemon] log_max_size`, `log_keep`): past `max_size`, `<file>` becomes
/// `<file>.1`, `.1` becomes `.2`, and so on; the one past `keep` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Bytes written before a rotation.
    pub max_size: u64,
    /// Old files kept (`<file>.1` … `<file>.<keep>`); 0 keeps none.
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: 16 * 1024 * 1024,
            keep: 5,
        }
    }
}

impl Rotation {
    /// Shifts `path`'s generations up by one and moves `path` to `.1`.
    pub fn rotate(self, path: &Path) {
        let generation = |n: u32| {
            let mut p = path.as_os_str().to_owned();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(path);
            return;
        }
        let _ = std::fs::remove_file(generation(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(generation(n), generation(n + 1));
        }
        let _ = std::fs::rename(path, generation(1));
    }
}

impl LogSink {
    /// A sink writing to the file `path`; `echo` also prints to stdout.
    pub fn new(path: &Path, echo: bool, rotation: Rotation) -> LogSink {
        let path = path.to_path_buf();
        let opened = open_log(&path);
        if let Err(e) = &opened {
            LOG_HEALTH.failed(
                Target::File,
                &LOG_HEALTH.file_errors,
                format_args!("{}: {e}", path.display()),
            );
        }
        let file = opened.ok();
        let written = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        LogSink {
            inner: Arc::new(Mutex::new(SinkFile {
                failed_at: file.is_none().then(Instant::now),
                path,
                rotation,
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

    /// Writes one already-prefixed line. It never fails and never waits on
    /// the daemon's output (see the module's notes).
    pub fn write_line(&self, line: &str) {
        if self.echo {
            echo(line.to_string());
        }
        let _ = self.live.send(line.to_string());
        let mut sink = self.inner.lock().expect("log lock poisoned");
        let sink = &mut *sink;
        if sink.written > sink.rotation.max_size {
            sink.rotation.rotate(&sink.path);
            sink.file = None;
            sink.failed_at = None;
            sink.written = 0;
        }
        if sink.file.is_none() {
            if sink.failed_at.is_some_and(|t| t.elapsed() < REOPEN_AFTER) {
                LOG_HEALTH.file_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match open_log(&sink.path) {
                Ok(f) => {
                    sink.file = Some(f);
                    sink.failed_at = None;
                }
                Err(e) => {
                    sink.failed_at = Some(Instant::now());
                    LOG_HEALTH.failed(
                        Target::File,
                        &LOG_HEALTH.file_errors,
                        format_args!("{}: {e}", sink.path.display()),
                    );
                    return;
                }
            }
        }
        if let Some(f) = sink.file.as_mut() {
            match writeln!(f, "{line}") {
                Ok(()) => {
                    sink.written += line.len() as u64 + 1;
                    LOG_HEALTH.recovered(Target::File);
                }
                Err(e) => LOG_HEALTH.failed(
                    Target::File,
                    &LOG_HEALTH.file_errors,
                    format_args!("{}: {e}", sink.path.display()),
                ),
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

//! Access logs, as nginx writes them: one line per answered request, in
//! nginx's `combined` format (with Baton's own fields after it) or as JSON.
//!
//! The request path only fills a [`Record`] and hands it to a bounded
//! queue; a thread of the log's own formats the lines and writes them in
//! batches (one write when the queue runs dry), and rotates the file by
//! size. A full queue or a failing disk costs log lines, counted with the
//! other lost log lines (`baton status`), never a request.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};

use http::HeaderValue;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::logs::{Rotation, LOG_HEALTH};

/// Records waiting for the writer; past this they are dropped and counted.
const QUEUE: usize = 65_536;

pub(crate) use crate::config::AccessFormat as Format;

/// What one request leaves in the log.
#[derive(Debug)]
pub(crate) struct Record {
    /// When the answer ended.
    pub time: SystemTime,
    /// The client's address.
    pub client: HeaderValue,
    /// The request line's parts.
    pub method: Cow<'static, str>,
    /// The target as the client sent it.
    pub target: Box<str>,
    /// `HTTP/1.1`, `HTTP/2.0`, …
    pub protocol: &'static str,
    /// The answer's status.
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// From the request head read to the answer's end.
    pub duration: Duration,
    /// The instance that answered; none for Baton's own answers.
    pub instance: Option<Arc<str>>,
    /// Its release; a static file's release.
    pub release: Option<Arc<str>>,
    /// Attempts after the first.
    pub retries: u32,
    /// It waited for a ready instance.
    pub held: bool,
    /// `Referer`.
    pub referer: Option<Box<str>>,
    /// `User-Agent`.
    pub user_agent: Option<Box<str>>,
}

/// What a request's head gives its record, captured while the head is at
/// hand.
#[derive(Debug)]
pub(crate) struct Opening {
    /// When the head was read.
    pub started: std::time::Instant,
    /// The request method.
    pub method: Cow<'static, str>,
    /// The target as the client sent it.
    pub target: Box<str>,
    /// `HTTP/1.1`, …
    pub protocol: &'static str,
    /// `Referer`.
    pub referer: Option<Box<str>>,
    /// `User-Agent`.
    pub user_agent: Option<Box<str>>,
}

impl Opening {
    /// The opening of a request with these parts (bytes as sent; any that
    /// are not UTF-8 are written lossily).
    pub(crate) fn new(
        method: &[u8],
        target: &[u8],
        protocol: &'static str,
        referer: Option<&[u8]>,
        user_agent: Option<&[u8]>,
    ) -> Opening {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned().into_boxed_str();
        // The usual methods without an allocation.
        let method = match method {
            b"GET" => Cow::Borrowed("GET"),
            b"HEAD" => Cow::Borrowed("HEAD"),
            b"POST" => Cow::Borrowed("POST"),
            b"PUT" => Cow::Borrowed("PUT"),
            b"DELETE" => Cow::Borrowed("DELETE"),
            b"PATCH" => Cow::Borrowed("PATCH"),
            b"OPTIONS" => Cow::Borrowed("OPTIONS"),
            other => Cow::Owned(String::from_utf8_lossy(other).into_owned()),
        };
        Opening {
            started: std::time::Instant::now(),
            method,
            target: text(target),
            protocol,
            referer: referer.map(text),
            user_agent: user_agent.map(text),
        }
    }

    /// The record, once the answer ended.
    pub(crate) fn close(
        self,
        client: &HeaderValue,
        status: u16,
        bytes: u64,
        answered: Answered,
    ) -> Record {
        Record {
            time: SystemTime::now(),
            client: client.clone(),
            method: self.method,
            target: self.target,
            protocol: self.protocol,
            status,
            bytes,
            duration: self.started.elapsed(),
            instance: answered.instance,
            release: answered.release,
            retries: answered.retries,
            held: answered.held,
            referer: self.referer,
            user_agent: self.user_agent,
        }
    }
}

/// A request on its way, and the log its record goes to.
#[derive(Debug)]
pub(crate) struct Pending {
    log: Arc<AccessLog>,
    opening: Opening,
}

impl Pending {
    /// A request for `log`.
    pub(crate) fn new(log: Arc<AccessLog>, opening: Opening) -> Box<Pending> {
        Box::new(Pending { log, opening })
    }

    /// Logs the request, answered.
    pub(crate) fn finish(self, client: &HeaderValue, status: u16, bytes: u64, answered: Answered) {
        let record = self.opening.close(client, status, bytes, answered);
        self.log.log(record);
    }
}

/// Who answered, for a record.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    /// The instance; none for Baton's own answers.
    pub instance: Option<Arc<str>>,
    /// Its release, or a static file's.
    pub release: Option<Arc<str>>,
    /// Attempts after the first.
    pub retries: u32,
    /// It waited for a ready instance.
    pub held: bool,
}

impl Answered {
    /// `upstream` answered, after `retries` other attempts.
    pub(crate) fn by(upstream: &super::upstream::Upstream, retries: u32, held: bool) -> Answered {
        Answered {
            instance: Some(upstream.id.clone()),
            release: Some(upstream.release.clone()),
            retries,
            held,
        }
    }
}

/// One app's access log: the queue to its writer thread.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<Record>,
    /// The file and the format, to tell whether a new configuration needs
    /// a new log.
    pub path: PathBuf,
    /// See [`Format`].
    pub format: Format,
}

impl AccessLog {
    /// A log writing to `path` from a thread of its own, which ends when
    /// the log is dropped (after writing what was queued).
    pub fn start(path: &Path, format: Format, rotation: Rotation) -> AccessLog {
        let (queue, records) = sync_channel(QUEUE);
        let file = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("baton-access-log".into())
            .spawn(move || write_records(&file, format, rotation, &records));
        if let Err(e) = spawned {
            tracing::warn!("access log {}: no thread to write it: {e}", path.display());
        }
        AccessLog {
            queue,
            path: path.to_path_buf(),
            format,
        }
    }

    /// Queues a record; never waits.
    pub(crate) fn log(&self, record: Record) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(record)
        {
            LOG_HEALTH.file_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer thread. While requests come, it wakes every [`BATCH`],
/// writes what queued meanwhile and flushes it: a sender never wakes it
/// (no futex per request), and the file gets one write per batch. When a
/// batch finds nothing it blocks until the next record.
fn write_records(path: &Path, format: Format, rotation: Rotation, records: &Receiver<Record>) {
    let mut file = LogFile {
        path,
        rotation,
        out: None,
        written: std::fs::metadata(path).map_or(0, |m| m.len()),
        line: String::with_capacity(512),
        clock: Clock::default(),
    };
    'idle: while let Ok(first) = records.recv() {
        file.write(&first, format);
        loop {
            loop {
                match records.try_recv() {
                    Ok(record) => file.write(&record, format),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'idle,
                }
            }
            file.flush();
            std::thread::sleep(BATCH);
            match records.try_recv() {
                Ok(record) => file.write(&record, format),
                Err(TryRecvError::Empty) => continue 'idle,
                Err(TryRecvError::Disconnected) => break 'idle,
            }
        }
    }
    file.flush();
}

/// How long records gather before they are written.
const BATCH: Duration = Duration::from_millis(50);

/// The access log's file, as the writer thread holds it.
struct LogFile<'a> {
    path: &'a Path,
    rotation: Rotation,
    out: Option<BufWriter<File>>,
    written: u64,
    line: String,
    clock: Clock,
}

impl LogFile<'_> {
    fn write(&mut self, record: &Record, format: Format) {
        self.line.clear();
        render(record, format, &mut self.clock, &mut self.line);
        if self.written > self.rotation.max_size {
            self.flush();
            self.out = None;
            self.rotation.rotate(self.path);
            self.written = 0;
        }
        if self.out.is_none() {
            self.out = open(self.path).map(|f| BufWriter::with_capacity(64 * 1024, f));
        }
        match self.out.as_mut().map(|o| o.write_all(self.line.as_bytes())) {
            Some(Ok(())) => self.written += self.line.len() as u64,
            _ => {
                LOG_HEALTH.file_errors.fetch_add(1, Ordering::Relaxed);
                self.out = None;
            }
        }
    }

    fn flush(&mut self) {
        if let Some(Err(_)) = self.out.as_mut().map(BufWriter::flush) {
            LOG_HEALTH.file_errors.fetch_add(1, Ordering::Relaxed);
            self.out = None;
        }
    }
}

/// nginx's `$time_local` of the current second, formatted once a second.
#[derive(Default)]
pub(crate) struct Clock {
    second: u64,
    text: String,
}

impl Clock {
    fn local(&mut self, time: SystemTime) -> &str {
        let second = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            let time = chrono::DateTime::<chrono::Utc>::from(time);
            self.text = time.format("%d/%b/%Y:%H:%M:%S %z").to_string();
        }
        &self.text
    }
}

fn open(path: &Path) -> Option<File> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Err(e) = &opened {
        tracing::warn!("access log {}: {e}", path.display());
    }
    opened.ok()
}

/// One line for `record`, newline included.
pub(crate) fn render(record: &Record, format: Format, clock: &mut Clock, out: &mut String) {
    use std::fmt::Write as _;
    match format {
        Format::Combined => {
            out.push_str(record.client.to_str().unwrap_or("-"));
            out.push_str(" - - [");
            out.push_str(clock.local(record.time));
            out.push_str("] \"");
            escaped(out, &record.method);
            out.push(' ');
            escaped(out, &record.target);
            let mut digits = itoa::Buffer::new();
            out.push(' ');
            out.push_str(record.protocol);
            out.push_str("\" ");
            out.push_str(digits.format(record.status));
            out.push(' ');
            out.push_str(digits.format(record.bytes));
            out.push_str(" \"");
            escaped(out, record.referer.as_deref().unwrap_or("-"));
            out.push_str("\" \"");
            escaped(out, record.user_agent.as_deref().unwrap_or("-"));
            out.push_str("\" ");
            // Seconds to the millisecond, rounded, as nginx's $request_time.
            let millis = (record.duration.as_micros() + 500) / 1000;
            out.push_str(digits.format(millis / 1000));
            let _ = write!(out, ".{:03} ", millis % 1000);
            out.push_str(record.instance.as_deref().unwrap_or("-"));
            out.push(' ');
            out.push_str(record.release.as_deref().unwrap_or("-"));
            out.push(' ');
            out.push_str(digits.format(record.retries));
            out.push_str(if record.held { " held\n" } else { " -\n" });
        }
        Format::Json => {
            let value = serde_json::json!({
                "time": humantime::format_rfc3339_millis(record.time).to_string(),
                "client": record.client.to_str().unwrap_or("-"),
                "method": &*record.method,
                "target": &*record.target,
                "protocol": record.protocol,
                "status": record.status,
                "bytes": record.bytes,
                "duration_ms": (record.duration.as_secs_f64() * 1e6).round() / 1e3,
                "instance": record.instance.as_deref(),
                "release": record.release.as_deref(),
                "retries": record.retries,
                "held": record.held,
                "referer": record.referer.as_deref(),
                "user_agent": record.user_agent.as_deref(),
            });
            let _ = writeln!(out, "{value}");
        }
    }
}

/// A field inside quotes, as nginx escapes it: `"`, `\` and bytes outside
/// printable ASCII become `\xHH`, so a line cannot be forged.
fn escaped(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    let plain = |b: u8| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b);
    if text.bytes().all(plain) {
        out.push_str(text);
        return;
    }
    for b in text.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

/// A response body that logs its request when it ends (or is dropped,
/// when the client leaves first), with the bytes it sent: for the answers
/// hyper writes (h2, upgrades).
pub(crate) struct LoggedBody<B> {
    inner: B,
    sent: u64,
    ending: Option<(Box<Pending>, HeaderValue, u16, Answered)>,
}

impl<B> LoggedBody<B> {
    /// `inner`, logged as `status` for `client`, answered by `answered`.
    pub(crate) fn new(
        inner: B,
        pending: Box<Pending>,
        client: &HeaderValue,
        status: u16,
        answered: Answered,
    ) -> LoggedBody<B> {
        let client = client.clone();
        LoggedBody {
            inner,
            sent: 0,
            ending: Some((pending, client, status, answered)),
        }
    }

    fn finish(&mut self) {
        if let Some((pending, client, status, answered)) = self.ending.take() {
            pending.finish(&client, status, self.sent, answered);
        }
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B> http_body::Body for LoggedBody<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                self.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            std::task::Poll::Ready(None) => self.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            time: humantime::parse_rfc3339("2026-12-01T21:45:00Z").unwrap(),
            client: HeaderValue::from_static("127.0.0.1"),
            method: "GET".into(),
            target: "/a?b=\"c\"".into(),
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 58,
            duration: Duration::from_micros(2500),
            instance: Some("web#1".into()),
            release: Some("20261201T214500Z-abcdef".into()),
            retries: 1,
            held: true,
            referer: None,
            user_agent: Some("curl/8.5.0\n".into()),
        }
    }

    #[test]
    fn combined_is_nginx_s_line_then_baton_s_fields() {
        let mut line = String::new();
        render(
            &record(),
            Format::Combined,
            &mut Clock::default(),
            &mut line,
        );
        assert_eq!(
            line,
            "127.0.0.1 - - [01/Dec/2026:21:45:00 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 58 \"-\" \"curl/8.5.0\\x0A\" 0.003 web#1 20261201T214500Z-abcdef 1 held\n"
        );
    }

    #[test]
    fn json_is_one_object_a_line() {
        let mut line = String::new();
        render(&record(), Format::Json, &mut Clock::default(), &mut line);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["target"], "/a?b=\"c\"");
        assert_eq!(v["duration_ms"], 2.5);
        assert_eq!(v["held"], true);
        assert_eq!(v["referer"], serde_json::Value::Null);
    }
}

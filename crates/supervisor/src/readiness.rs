//! The four readiness checks: `http`, `tcp`, `node-ipc` and `notify`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UnixDatagram, UnixStream};
use tokio::sync::mpsc;

use crate::config::{Readiness, ReadinessKind};

/// One attempt of an `http` or `tcp` check may take at most this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The shortest pause between two failing checks. A refused connect on
/// loopback costs microseconds, so checking this often while an app boots
/// is cheap.
const FIRST_PAUSE: Duration = Duration::from_millis(5);

/// What an instance's channel to Baton said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The app says it is ready (`process.send('ready')` or `READY=1`).
    Ready,
}

/// The daemon's end of the readiness channel the child was given, if any.
pub(crate) enum Channel {
    /// Nothing to hold: `http` and `tcp` checks poll the port.
    None,
    /// Node IPC: the daemon's end of the socketpair, and the child's end to
    /// pass as fd 3.
    NodeIpc {
        /// Daemon side, for reading; taken by [`Channel::listen`].
        reader: Option<OwnedReadHalf>,
        /// Daemon side, for messages to the app (the drain notice).
        writer: OwnedWriteHalf,
        /// Child side, closed in the daemon once the child is spawned.
        theirs: Option<OwnedFd>,
    },
    /// sd_notify: a datagram socket at `path`.
    Notify {
        /// Bound socket; taken by [`Channel::listen`].
        socket: Option<UnixDatagram>,
        /// Its path, removed when the channel is dropped.
        path: PathBuf,
    },
}

impl Drop for Channel {
    fn drop(&mut self) {
        if let Channel::Notify { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Channel {
    /// Opens the channel a readiness kind needs. `notify_path` is where an
    /// sd_notify socket is bound.
    ///
    /// # Errors
    /// When the socketpair or socket cannot be made.
    pub(crate) fn open(kind: ReadinessKind, notify_path: &Path) -> io::Result<Channel> {
        match kind {
            ReadinessKind::Http | ReadinessKind::Tcp | ReadinessKind::None => Ok(Channel::None),
            ReadinessKind::NodeIpc => {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
                ours.set_nonblocking(true)?;
                let (reader, writer) = UnixStream::from_std(ours)?.into_split();
                Ok(Channel::NodeIpc {
                    reader: Some(reader),
                    writer,
                    theirs: Some(OwnedFd::from(theirs)),
                })
            }
            ReadinessKind::Notify => {
                let _ = std::fs::remove_file(notify_path);
                Ok(Channel::Notify {
                    socket: Some(UnixDatagram::bind(notify_path)?),
                    path: notify_path.to_path_buf(),
                })
            }
        }
    }

    /// Starts reading what the child sends, for as long as it lives; each
    /// readiness message arrives on the returned receiver.
    pub(crate) fn listen(&mut self) -> mpsc::UnboundedReceiver<Signal> {
        let (tx, rx) = mpsc::unbounded_channel();
        match self {
            Channel::None => {}
            Channel::NodeIpc { reader, .. } => {
                if let Some(r) = reader.take() {
                    tokio::spawn(read_node_ipc(r, tx));
                }
            }
            Channel::Notify { socket, .. } => {
                if let Some(s) = socket.take() {
                    tokio::spawn(read_notify(s, tx));
                }
            }
        }
        rx
    }
}

/// Node's JSON serialization sends one JSON value per line. `'ready'` arrives
/// as `"ready"`; Node's own internal messages carry a `cmd` starting `NODE_`.
async fn read_node_ipc(stream: OwnedReadHalf, tx: mpsc::UnboundedSender<Signal>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let ready = match &value {
            serde_json::Value::String(s) => s == "ready",
            serde_json::Value::Object(o) => {
                o.get("type").and_then(|t| t.as_str()) == Some("ready")
                    || o.get("status").and_then(|t| t.as_str()) == Some("ready")
            }
            _ => false,
        };
        if ready {
            let _ = tx.send(Signal::Ready);
        }
    }
}

/// sd_notify datagrams are newline-separated `KEY=VALUE` assignments.
async fn read_notify(socket: UnixDatagram, tx: mpsc::UnboundedSender<Signal>) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf).await {
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.lines().any(|l| l.trim() == "READY=1") {
            let _ = tx.send(Signal::Ready);
        }
        if tx.is_closed() {
            break;
        }
    }
}

/// Resolves once the instance on `port` passes its readiness check. The
/// caller races this with the child's exit and with `start_timeout`.
pub(crate) async fn wait_ready(
    check: &Readiness,
    port: u16,
    signals: &mut mpsc::UnboundedReceiver<Signal>,
) {
    match check.kind {
        ReadinessKind::None => {}
        ReadinessKind::NodeIpc | ReadinessKind::Notify => loop {
            match signals.recv().await {
                Some(Signal::Ready) => return,
                // The channel closed: the child can no longer say it is
                // ready; wait for its exit or the timeout to decide.
                None => std::future::pending::<()>().await,
            }
        },
        ReadinessKind::Tcp => {
            let started = Instant::now();
            loop {
                let attempt =
                    tokio::time::timeout(ATTEMPT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)));
                if let Ok(Ok(_)) = attempt.await {
                    return;
                }
                tokio::time::sleep(pause_after_failure(started.elapsed(), check.interval)).await;
            }
        }
        ReadinessKind::Http => {
            let started = Instant::now();
            let mut passed = 0;
            loop {
                let ok = tokio::time::timeout(ATTEMPT_TIMEOUT, http_ok(port, &check.path))
                    .await
                    .unwrap_or(false);
                passed = if ok { passed + 1 } else { 0 };
                if passed >= check.successes {
                    return;
                }
                // Consecutive passes stay `interval` apart: `successes = 3`
                // means healthy across two whole intervals.
                let pause = if ok {
                    check.interval
                } else {
                    pause_after_failure(started.elapsed(), check.interval)
                };
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// How long to wait after a failed check, `elapsed` after the first one.
/// Checks come every few milliseconds at first and slow down to `interval`,
/// so an app is seen ready at most a tenth of its start time late (and never
/// more than `interval`): a fixed 50 ms interval added 25 ms on average to
/// an app that starts in 70 ms.
fn pause_after_failure(elapsed: Duration, interval: Duration) -> Duration {
    (elapsed / 10).clamp(FIRST_PAUSE.min(interval), interval)
}

/// One health request: `GET path` answered with 2xx.
pub(crate) async fn http_ok(port: u16, path: &str) -> bool {
    async fn attempt(
        port: u16,
        path: &str,
    ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, format!("127.0.0.1:{port}"))
            .header(http::header::CONNECTION, "close")
            .header(http::header::USER_AGENT, "baton-health")
            .body(Empty::<Bytes>::new())?;
        let res = sender.send_request(req).await?;
        Ok(res.status().is_success())
    }
    attempt(port, path).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_start_often_and_slow_down_to_the_interval() {
        let ms = Duration::from_millis;
        let interval = ms(50);
        assert_eq!(pause_after_failure(ms(0), interval), ms(5));
        assert_eq!(pause_after_failure(ms(70), interval), ms(7));
        assert_eq!(pause_after_failure(ms(300), interval), ms(30));
        assert_eq!(pause_after_failure(ms(10_000), interval), interval);
        // An interval shorter than the first pause is kept as it is.
        assert_eq!(pause_after_failure(ms(0), ms(2)), ms(2));
        assert_eq!(pause_after_failure(ms(10_000), ms(2)), ms(2));
    }
}

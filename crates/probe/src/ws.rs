//! WebSocket mode: hold N connections, send a message on each every
//! interval, and count echo round-trips, closes by code, abnormal ends and
//! reconnects. A connection closed with a close frame reconnects at once,
//! as a browser client would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::target::Target;
use super::ProbeArgs;

/// The WebSocket report. Its JSON form is a stable interface.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct WsReport {
    /// Target URL.
    pub url: String,
    /// Wall time, ms.
    pub duration_ms: u64,
    /// Connections opened (first ones and reconnects).
    pub connections: u64,
    /// Reconnects after a close.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub failed_connects: u64,
    /// Messages sent.
    pub sent: u64,
    /// Echoes received.
    pub echoes: u64,
    /// Echoes that did not come back within the timeout.
    pub lost: u64,
    /// Close frames received, by code.
    pub close_codes: BTreeMap<String, u64>,
    /// Connections that ended without a close frame (reset, EOF, error).
    pub abnormal_closes: u64,
    /// The first close (of any kind), ms since the start.
    pub first_close_ms: Option<u64>,
    /// Echo round-trip percentiles, ms.
    pub latency_ms: super::report::Latency,
    /// Echoes per version (with `--version-prefix`).
    pub versions: BTreeMap<String, u64>,
    /// The version each connection talked to last.
    pub last_versions: BTreeMap<String, u64>,
}

impl WsReport {
    /// Failures for the exit code: abnormal closes, failed connects, lost echoes.
    pub(crate) fn failures(&self) -> u64 {
        self.abnormal_closes + self.failed_connects + self.lost
    }

    /// The human report.
    pub(crate) fn render(&self) -> String {
        let codes: Vec<String> = self
            .close_codes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(
            "probe {} for {:.1}s\n  connections {}  reconnects {}  failed connects {}\n  sent {}  echoes {}  lost {}\n  close codes {}  abnormal closes {}\n  echo latency p50 {:.2}ms  p99 {:.2}ms  max {:.2}ms\n  versions {}\n",
            self.url,
            self.duration_ms as f64 / 1000.0,
            self.connections,
            self.reconnects,
            self.failed_connects,
            self.sent,
            self.echoes,
            self.lost,
            if codes.is_empty() { "-".into() } else { codes.join("  ") },
            self.abnormal_closes,
            self.latency_ms.p50,
            self.latency_ms.p99,
            self.latency_ms.max,
            if versions.is_empty() { "-".into() } else { versions.join("  ") },
        )
    }
}

#[derive(Default)]
struct Tally {
    report: WsReport,
    rtts: Vec<Duration>,
}

/// Runs the WebSocket probe.
///
/// # Errors
/// A URL, `--resolve` entry or CA file that cannot be used.
pub(crate) async fn run(args: ProbeArgs) -> Result<WsReport, String> {
    let uri: http::Uri = (args.url.parse()).map_err(|e| format!("bad url {:?}: {e}", args.url))?;
    let target = Target::new(&uri, &args.resolve, args.cacert.as_deref(), &[b"http/1.1"])?;
    let start = Instant::now();
    let deadline = start + args.duration;
    // The run ends at the deadline or at Ctrl-C (SIGINT), whichever comes
    // first; each connection then closes normally.
    let (end, ended) = tokio::sync::watch::channel(false);
    let ender = tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = end.send(true);
    });
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|n| {
            let (args, target, tally) = (args.clone(), target.clone(), tally.clone());
            tokio::spawn(worker(n, args, target, start, ended.clone(), tally))
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    ender.abort();
    let mut t = std::mem::take(&mut *tally.lock().expect("tally lock poisoned"));
    t.rtts.sort();
    t.report.latency_ms = super::report::Latency::of(&t.rtts);
    t.report.url = args.url;
    t.report.duration_ms = start.elapsed().as_millis() as u64;
    Ok(t.report)
}

async fn worker(
    n: usize,
    args: ProbeArgs,
    target: Target,
    start: Instant,
    mut ended: tokio::sync::watch::Receiver<bool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut first = true;
    let mut last_version: Option<String> = None;
    let mut seq = 0u64;
    while !*ended.borrow() {
        let connect = tokio::time::timeout(args.timeout, async {
            let io = target.connect().await.map_err(|_| ())?;
            tokio_tungstenite::client_async(args.url.as_str(), io)
                .await
                .map_err(|_| ())
        })
        .await;
        let mut ws = match connect {
            Ok(Ok((ws, _))) => ws,
            _ => {
                tally
                    .lock()
                    .expect("tally lock poisoned")
                    .report
                    .failed_connects += 1;
                // Not a busy loop: wait one interval before the next try.
                tokio::time::sleep(args.interval).await;
                continue;
            }
        };
        {
            let mut t = tally.lock().expect("tally lock poisoned");
            t.report.connections += 1;
            if !first {
                t.report.reconnects += 1;
            }
        }
        first = false;
        // One connection's life: send, wait for the echo, repeat.
        let mut ticker = tokio::time::interval(args.interval);
        let closed = loop {
            tokio::select! {
                _ = ended.changed() => {
                    let _ = ws.close(None).await;
                    break None;
                }
                _ = ticker.tick() => {}
            }
            seq += 1;
            let sent_at = Instant::now();
            if ws
                .send(Message::text(format!("probe {n} {seq}")))
                .await
                .is_err()
            {
                break Some(None);
            }
            tally.lock().expect("tally lock poisoned").report.sent += 1;
            let reply = tokio::time::timeout(args.timeout, async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                        Some(Ok(Message::Close(frame))) => {
                            return Err(Some(frame.map_or(1005, |f| u16::from(f.code))))
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return Err(None),
                    }
                }
            })
            .await;
            match reply {
                Ok(Ok(text)) => {
                    let mut t = tally.lock().expect("tally lock poisoned");
                    t.report.echoes += 1;
                    t.rtts.push(sent_at.elapsed());
                    if let Some(v) = super::version_in(&text, &args) {
                        *t.report.versions.entry(v.clone()).or_insert(0) += 1;
                        last_version = Some(v);
                    }
                }
                Ok(Err(code)) => break Some(code),
                Err(_) => {
                    tally.lock().expect("tally lock poisoned").report.lost += 1;
                    break Some(None);
                }
            }
        };
        let Some(code) = closed else { break };
        let mut t = tally.lock().expect("tally lock poisoned");
        t.report
            .first_close_ms
            .get_or_insert(start.elapsed().as_millis() as u64);
        match code {
            Some(code) => *t.report.close_codes.entry(code.to_string()).or_insert(0) += 1,
            None => t.report.abnormal_closes += 1,
        }
    }
    if let Some(v) = last_version {
        *tally
            .lock()
            .expect("tally lock poisoned")
            .report
            .last_versions
            .entry(v)
            .or_insert(0) += 1;
    }
}

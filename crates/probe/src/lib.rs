//! `baton probe`: the load-and-verify client that proves a deploy dropped
//! nothing. Closed loop (`--concurrency`) or open loop (`--rate`, latency
//! measured from the scheduled time so that coordinated omission does not
//! hide stalls); keep-alive or a new connection per request; HTTP/1.1 or
//! HTTP/2 (h2c, or ALPN over TLS); http://, https://, ws:// and wss://.
//! Exits 1 when more than `--max-failures` requests failed.
//!
//! - [`report`]: the samples, the report and its stable JSON form.
//! - [`target`]: where to connect (`--resolve`) and the TLS (`--cacert`).
//! - [`ws`]: WebSocket mode.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub(crate) mod chart;
pub(crate) mod report;
pub(crate) mod target;
pub(crate) mod ws;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use self::report::{Outcome, Report, Sample};

/// `baton probe` options.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Target, such as http://127.0.0.1:8080/
    pub url: String,
    /// How long to run, such as 30s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests (whichever comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Closed loop: this many requests at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Open loop: this many requests per second, whatever the latency.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Reuse connections (`--keepalive=false` opens one per request).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub keepalive: bool,
    /// Speak HTTP/2: h2c (prior knowledge) on http://, ALPN h2 on https://.
    #[arg(long)]
    pub http2: bool,
    /// Trust the certificates in this PEM file (https://, wss://) instead
    /// of the system's.
    #[arg(long)]
    pub cacert: Option<std::path::PathBuf>,
    /// `HOST:PORT:ADDRESS`: connect there for HOST:PORT, as curl's
    /// `--resolve` (the URL's host still goes in Host and SNI); repeatable.
    #[arg(long)]
    pub resolve: Vec<String>,
    /// Request method.
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// Extra header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    pub body: Option<String>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Response header that names the answering version.
    #[arg(long)]
    pub version_header: Option<String>,
    /// Body marker: the first word after this prefix is the version.
    #[arg(long, conflicts_with = "version_regex")]
    pub version_prefix: Option<String>,
    /// Body regex: its first capture group (or the whole match) is the version.
    #[arg(long, value_parser = parse_regex)]
    pub version_regex: Option<regex::Regex>,
    /// Exit 1 only when more than this many requests failed.
    #[arg(long, default_value_t = 0)]
    pub max_failures: u64,
    /// WebSocket mode: time between two messages on a connection.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Also draw the run into this file: `deploy.html` (a page with the
    /// chart and the JSON report) or `deploy.svg` (the chart alone).
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| e.to_string())
}

/// The version a body names, by `--version-prefix` or `--version-regex`.
pub(crate) fn version_in(body: &str, args: &ProbeArgs) -> Option<String> {
    if let Some(re) = &args.version_regex {
        let caps = re.captures(body)?;
        return caps
            .get(1)
            .or_else(|| caps.get(0))
            .map(|m| m.as_str().to_string());
    }
    let prefix = args.version_prefix.as_ref()?;
    let rest = &body[body.find(prefix.as_str())? + prefix.len()..];
    rest.split(|c: char| c.is_whitespace() || c == ',' || c == ')' || c == '"')
        .find(|w| !w.is_empty())
        .map(String::from)
}

/// Everything a worker needs.
struct Plan {
    uri: Uri,
    target: target::Target,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    args: ProbeArgs,
    start: Instant,
    deadline: Instant,
    /// Ctrl-C (SIGINT): no more requests; the report covers what was sent.
    interrupted: std::sync::atomic::AtomicBool,
    issued: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    samples: Mutex<Vec<Sample>>,
}

impl Plan {
    /// Claims the right to send one more request.
    fn claim(&self) -> bool {
        if Instant::now() >= self.deadline || self.interrupted.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        self.args.requests.is_none_or(|max| n < max)
    }

    fn record(&self, at: Duration, latency: Duration, outcome: Outcome) {
        if outcome.ok() {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.samples
            .lock()
            .expect("samples lock poisoned")
            .push(Sample {
                at,
                latency,
                outcome,
            });
    }
}

/// One reusable connection.
enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }
}

/// Runs the probe and returns its report.
///
/// # Errors
/// When the URL or a header cannot be understood.
pub(crate) async fn run(args: ProbeArgs) -> Result<Report, String> {
    let uri: Uri = args
        .url
        .parse()
        .map_err(|e| format!("bad url {:?}: {e}", args.url))?;
    let alpn: &[&[u8]] = if args.http2 { &[b"h2"] } else { &[b"http/1.1"] };
    let target = target::Target::new(&uri, &args.resolve, args.cacert.as_deref(), alpn)?;
    let method: Method = args
        .method
        .parse()
        .map_err(|_| format!("bad method {:?}", args.method))?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("bad header {h:?}; expected `Name: value`"))?;
        headers.push((
            HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| format!("bad header {h:?}: {e}"))?,
            HeaderValue::from_str(value.trim()).map_err(|e| format!("bad header {h:?}: {e}"))?,
        ));
    }
    let start = Instant::now();
    let plan = Arc::new(Plan {
        uri,
        target,
        method,
        headers,
        body: Bytes::from(args.body.clone().unwrap_or_default()),
        deadline: start + args.duration,
        interrupted: Default::default(),
        start,
        issued: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
        args,
    });
    let progress =
        (!plan.args.quiet && !plan.args.json).then(|| tokio::spawn(show_progress(plan.clone())));
    // Ctrl-C ends the run early with a report, as a duration would.
    let stopper = {
        let plan = plan.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                plan.interrupted.store(true, Ordering::Relaxed);
            }
        })
    };
    match plan.args.rate {
        Some(rate) => open_loop(plan.clone(), rate).await,
        None => {
            let workers: Vec<_> = (0..plan.args.concurrency.max(1))
                .map(|_| tokio::spawn(closed_loop_worker(plan.clone())))
                .collect();
            for w in workers {
                let _ = w.await;
            }
        }
    }
    stopper.abort();
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let elapsed = start.elapsed();
    let samples = std::mem::take(&mut *plan.samples.lock().expect("samples lock poisoned"));
    Ok(Report::build(&plan.args.url, samples, elapsed))
}

async fn show_progress(plan: Arc<Plan>) {
    let mut last = (0u64, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ok = plan.ok.load(Ordering::Relaxed);
        let failed = plan.failed.load(Ordering::Relaxed);
        let now = Instant::now();
        let rps = (ok + failed - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
        last = (ok + failed, now);
        eprint!(
            "\r{:>6.1}s  requests {}  ok {}  failed {}  {:.0} req/s   ",
            plan.start.elapsed().as_secs_f64(),
            ok + failed,
            ok,
            failed,
            rps
        );
        let _ = std::io::stderr().flush();
    }
}

async fn closed_loop_worker(plan: Arc<Plan>) {
    let mut conn: Option<Conn> = None;
    while plan.claim() {
        let at = plan.start.elapsed();
        let outcome = one_request(&plan, &mut conn).await;
        plan.record(at, plan.start.elapsed() - at, outcome);
        if !plan.args.keepalive {
            conn = None;
        }
    }
}

async fn open_loop(plan: Arc<Plan>, rate: f64) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut n: u32 = 0;
    loop {
        let due = plan.start + interval * n;
        tokio::time::sleep_until(due).await;
        if !plan.claim() {
            break;
        }
        n += 1;
        let plan = plan.clone();
        let idle = idle.clone();
        tasks.spawn(async move {
            let at = due - plan.start;
            let mut conn = if plan.args.keepalive {
                idle.lock().expect("pool lock poisoned").pop()
            } else {
                None
            };
            let outcome = one_request(&plan, &mut conn).await;
            plan.record(at, plan.start.elapsed() - at, outcome);
            if let (true, Some(c)) = (plan.args.keepalive, conn) {
                idle.lock().expect("pool lock poisoned").push(c);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Adds the user's `-H` headers to `req`. A header the probe set itself
/// (Host, Connection) is replaced by the user's, as curl does, not sent
/// twice: two Host lines are a request any strict server refuses. Over h2
/// a Host becomes the `:authority`.
fn with_user_headers<B>(req: &mut Request<B>, user: &[(HeaderName, HeaderValue)]) {
    for (name, _) in user {
        req.headers_mut().remove(name);
    }
    for (name, value) in user {
        req.headers_mut().append(name.clone(), value.clone());
    }
    if req.uri().authority().is_none() {
        return;
    }
    let host = req.headers().get(http::header::HOST);
    let Some(authority) = host.and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
    else {
        return;
    };
    let mut parts = req.uri().clone().into_parts();
    parts.authority = Some(authority);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
        req.headers_mut().remove(http::header::HOST);
    }
}

/// Sends one request on `conn` (connecting first if needed) and classifies
/// how it ended. A broken connection is dropped so the next one reconnects.
async fn one_request(plan: &Plan, conn: &mut Option<Conn>) -> Outcome {
    // A kept connection that the server has closed since (it said
    // `Connection: close`, or closed it while idle) is not used, as no client
    // would: the request goes on a new one, so nothing failed.
    if conn.as_ref().is_some_and(Conn::is_closed) {
        *conn = None;
    }
    let attempt = async {
        if conn.is_none() {
            *conn = Some(connect(plan).await?);
        }
        let mut req = Request::builder()
            .method(plan.method.clone())
            .uri(if plan.args.http2 {
                plan.uri.clone()
            } else {
                plan.uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .parse()
                    .unwrap_or_default()
            });
        if !plan.args.http2 {
            req = req.header(http::header::HOST, plan.target.authority.as_str());
            if !plan.args.keepalive {
                req = req.header(http::header::CONNECTION, "close");
            }
        }
        let mut req = req
            .body(Full::new(plan.body.clone()))
            .map_err(|_| "other")?;
        with_user_headers(&mut req, &plan.headers);
        let res = match conn.as_mut().expect("connected above") {
            Conn::H1(s) => {
                s.ready().await.map_err(classify_hyper)?;
                s.send_request(req).await
            }
            Conn::H2(s) => {
                s.ready().await.map_err(classify_hyper)?;
                s.send_request(req).await
            }
        }
        .map_err(classify_hyper)?;
        let status = res.status().as_u16();
        let closing = res
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("close")));
        let header_version = plan
            .args
            .version_header
            .as_ref()
            .and_then(|h| res.headers().get(h.as_str()))
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(classify_hyper)?
            .to_bytes();
        let version =
            header_version.or_else(|| version_in(&String::from_utf8_lossy(&body), &plan.args));
        if closing {
            *conn = None;
        }
        Ok::<_, &'static str>(Outcome::Answered { status, version })
    };
    match tokio::time::timeout(plan.args.timeout, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(kind)) => {
            *conn = None;
            Outcome::Error(kind)
        }
        Err(_) => {
            *conn = None;
            Outcome::Error("timeout")
        }
    }
}

async fn connect(plan: &Plan) -> Result<Conn, &'static str> {
    let io = TokioIo::new(plan.target.connect().await?);
    if plan.args.http2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(classify_hyper)?;
        tokio::spawn(conn);
        Ok(Conn::H2(sender))
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(classify_hyper)?;
        tokio::spawn(conn);
        Ok(Conn::H1(sender))
    }
}

fn classify_hyper(e: hyper::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => "reset",
                std::io::ErrorKind::ConnectionRefused => "refused",
                std::io::ErrorKind::TimedOut => "timeout",
                _ => "other",
            };
        }
        source = err.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        "reset"
    } else {
        "other"
    }
}

/// Runs the probe the URL's scheme asks for, prints its report, and says
/// whether failures stayed within `--max-failures`.
///
/// # Errors
/// When the URL or a header cannot be understood.
pub async fn run_and_report(args: ProbeArgs) -> Result<(bool, u64, u64), String> {
    // A file that cannot be drawn is refused before the run, not after.
    let picture = args.report.as_deref().map(chart::Format::of).transpose()?;
    if args.url.starts_with("ws://") || args.url.starts_with("wss://") {
        if picture.is_some() {
            return Err(
                "--report draws HTTP probes; a WebSocket probe has no per-request series".into(),
            );
        }
        let report = ws::run(args.clone()).await?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        } else {
            print!("{}", report.render());
        }
        let failures = report.failures();
        return Ok((failures <= args.max_failures, failures, report.connections));
    }
    let report = run(args.clone()).await?;
    let within = finish(&report, &args);
    if let (Some(path), Some(format)) = (&args.report, picture) {
        std::fs::write(path, chart::render(&report, format))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok((within, report.failed, report.requests))
}

/// Prints the report and decides the exit: `Ok` when failures are within
/// `--max-failures`.
pub(crate) fn finish(report: &Report, args: &ProbeArgs) -> bool {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{}", report.render());
    }
    report.failed <= args.max_failures
}

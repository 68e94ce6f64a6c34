//! The data plane: Baton owns the public port and routes each request to a
//! ready instance, holding requests while none is ready and retrying what is
//! safe to retry.
//!
//! - [`listener`]: accepting connections, HTTP/1.1 + h2c, slowloris guard.
//! - [`phases`]: a request's phases, for both servers: request filters,
//!   route, upstream (attempt, retry decision), response filters, log;
//!   [`filters`] holds the filters, a file each.
//! - [`activation`]: listening sockets passed in by systemd.
//! - [`h1`]: Baton's own HTTP/1.1, both sides: the server for every
//!   HTTP/1 request but an upgrade (which hyper serves, as it serves h2c)
//!   and the client for the pooled connections to instances ([`pool`]).
//! - [`router`]: the atomically swapped route table and the hold queue.
//! - [`upstream`]: one instance's address and in-flight counts.
//! - [`framing`]: the one decision of how a message is framed and which
//!   host it is for, on every path (request smuggling is refused here).
//! - [`normalise`]: a request's path, normalised once before it is routed
//!   (dot-segments, escapes, merged slashes).
//! - [`headers`]: hop-by-hop stripping and X-Forwarded-*.
//! - [`body`]: replayable request bodies and counted response bodies.
//! - [`tunnel`]: upgraded (WebSocket) connections.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use baton_config as config;
use baton_logs as logs;
use baton_protocol as protocol;
use baton_tls as tls;

pub mod access;
pub mod activation;
pub mod assets;
pub(crate) mod body;
pub(crate) mod edge;
pub(crate) mod filters;
pub mod h1;
pub mod listener;
pub(crate) mod phases;
pub(crate) mod pool;
pub mod router;
pub mod sites;
pub mod split;
mod sys;
pub mod tcp;
pub(crate) mod tunnel;
pub mod upstream;
pub(crate) mod websocket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, COOKIE, HOST};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use self::body::{InstanceBody, Parked, ProxyBody};
pub use self::edge::Edge;
use self::framing::{BodyFraming, Protocol, Rejection};
use self::phases::upstream::{self as path, AttemptError, Forwarded, Refusal};
use self::phases::{Arrival, Log, Routed};
use self::router::Router;
use self::sites::{Site, Sites};
use self::upstream::Upstream;
use crate::config::ProxyConfig;
pub(crate) use baton_http1::{self as http1, framing, headers, normalise, Proto};

/// How a request's protocol is written in an access log.
fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Adds one to a total unless forgotten (`std::mem::forget`).
struct CountOnDrop<'a>(&'a AtomicU64);

impl Drop for CountOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Totals for metrics.
#[derive(Default)]
pub struct ProxyStats {
    /// Requests answered, by class: 1xx..5xx at 1..5.
    pub responses: [AtomicU64; 6],
    /// Attempts retried on another instance.
    pub retries: AtomicU64,
    /// Requests whose client left before the answer came (nginx logs these
    /// as 499).
    pub abandoned: AtomicU64,
    /// Failed accepts (out of fds, most often).
    pub accept_errors: AtomicU64,
}

/// An instance that stays bad (out of rotation twice in a row for
/// timeouts), for its app to replace.
#[derive(Debug, Clone)]
pub struct StaysBad {
    /// The app.
    pub app: Arc<str>,
    /// The instance.
    pub instance: Arc<str>,
}

/// The proxy: configuration, the apps' sites, totals. Upgraded and TCP
/// connections are counted per instance (`Upstream::connections`), which
/// is what a drain waits on, and closed through `closing` at shutdown.
pub struct Proxy {
    /// Proxy settings.
    pub config: ProxyConfig,
    /// Redirects and HSTS.
    pub edge: Edge,
    /// Which app a request is for, and each app's route table.
    pub sites: Sites,
    /// Totals for metrics.
    pub stats: ProxyStats,
    /// Closes every tunnel at shutdown.
    pub closing: CancellationToken,
    /// Instances that stay bad, for the daemon to replace.
    stays_bad: tokio::sync::mpsc::UnboundedSender<StaysBad>,
    /// The other end, taken once by the daemon.
    stays_bad_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<StaysBad>>>,
}

impl Proxy {
    /// A proxy serving no app yet.
    pub fn new(config: ProxyConfig, edge: Edge) -> Arc<Proxy> {
        let (stays_bad, stays_bad_rx) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Proxy {
            sites: Sites::default(),
            stays_bad,
            stays_bad_rx: std::sync::Mutex::new(Some(stays_bad_rx)),
            config,
            edge,
            stats: ProxyStats::default(),
            closing: CancellationToken::new(),
        })
    }

    /// A request that came through hyper: prepared here, then taken along
    /// [`path::pass`] (as Baton's own HTTP/1.1 server does with its
    /// requests), then answered.
    ///
    /// The preparation runs at once, when hyper hands the request over, and
    /// leaves nothing of the request behind but an encoded head: the parts
    /// hold slices of hyper's read buffer, and hyper reads ahead for the next
    /// request before it first polls this future. Freed by then, the buffer
    /// is reused instead of a new one being allocated per request.
    pub(crate) fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        client: HeaderValue,
        proto: Proto,
    ) -> impl std::future::Future<Output = Response<ProxyBody>> + Send + 'static {
        use futures_util::future::Either;
        let ready = |resp| Either::Left(std::future::ready(resp));
        // Read the request, as hyper parsed it.
        let version = req.version();
        let upgrade = version == Version::HTTP_11 && headers::is_upgrade(req.headers());
        let websocket = upgrade && websocket::is_websocket(req.headers());
        let mut client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // The client's target, for the log; what is routed and sent on is
        // normalised (by `prepare`).
        let original = parts.uri.clone();
        let framing = match prepare(&mut parts, self.config.body_limit()) {
            Ok(framing) => framing,
            Err(rejection) => return ready(self.reject(rejection, parts.version)),
        };
        // Phases 1 and 2: the request filters, the route.
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let arrival = Arrival {
            method: parts.method.as_str().as_bytes(),
            host: parts.headers.get(HOST).map(HeaderValue::as_bytes),
            target: target.as_bytes(),
            raw_target: original
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
            version: protocol_name(version),
            proto,
            fields: &parts.headers,
        };
        if let Some(answer) = phases::request_filters(&self, &arrival) {
            return ready(self.own(proto, &client, Log::none(), answer));
        }
        let (site, log) = match phases::route(&self, &arrival) {
            Routed::Own(answer, log) => return ready(self.own(proto, &client, log, answer)),
            Routed::Site { site, target, log } => {
                // Only a stripped prefix changes the target (no copy else).
                if site.strip_prefix {
                    if let Ok(uri) = Uri::try_from(target.into_owned()) {
                        parts.uri = uri;
                    }
                }
                (site, log)
            }
        };
        // Phase 3 takes the body as h2 delimits it.
        let rewrite = self.rewrite(&client, proto);
        // A length over max_body_size was refused with the head; a body
        // with none (h2) is held to it as it comes.
        let body = match (framing, self.config.body_limit()) {
            (BodyFraming::None, Some(max)) => Parked::new(http_body_util::Limited::new(
                body,
                usize::try_from(max).unwrap_or(usize::MAX),
            )),
            _ => Parked::new(body),
        };
        let framing = match framing {
            // h2 delimits a body by its stream: one without a length goes
            // chunked.
            BodyFraming::None if !body.is_empty() => match body.attempt().size_hint().exact() {
                Some(n) => BodyFraming::Length(n),
                None => BodyFraming::Chunked,
            },
            // An empty chunked body: the instance must not wait for chunks
            // that will never be written.
            BodyFraming::Chunked if body.is_empty() => BodyFraming::Length(0),
            framing => framing,
        };
        if !upgrade {
            // Encoded once for every attempt; see RequestHead::encode for
            // why the parts go with it.
            let head = h1::RequestHead::encode(parts, &rewrite, framing);
            return Either::Right(Either::Left(async move {
                // Phase 3, the upstream.
                let Forwarded { reply, served } =
                    match path::pass(&self, &site, &head, &body, &client).await {
                        Ok(forwarded) => forwarded,
                        Err(refusal) => return self.own(proto, &client, log, refusal.answer()),
                    };
                // Phases 4 and 5: the response filters; the log when the
                // body ends.
                let event_stream = reply.head.is_event_stream();
                let (mut parts, body) = reply.into_response().into_parts();
                let body = InstanceBody::Pooled(body);
                let status = parts.status;
                let reply = phases::Reply {
                    status,
                    head: &mut parts.headers,
                    body,
                    event_stream,
                };
                let responding = phases::respond(&self, proto, served, reply, &log);
                let body = match log.into_pending() {
                    Some(pending) => access::LoggedBody::new(
                        responding.body,
                        pending,
                        &client,
                        responding.status,
                        responding.by,
                    )
                    .boxed(),
                    None => responding.body.boxed(),
                };
                Response::from_parts(parts, body)
            }));
        }
        let upgrade = path::Upgrade { parts, proto };
        Either::Right(Either::Right(async move {
            let Forwarded { reply, served } =
                match path::pass(&self, &site, &upgrade, &body, &client).await {
                    Ok(forwarded) => forwarded,
                    Err(refusal) => return self.own(proto, &client, log, refusal.answer()),
                };
            let upstream = served.upstream.clone();
            let (mut parts, body) = reply.into_parts();
            let status = parts.status;
            let body = InstanceBody::Upgrade(body);
            let reply = phases::Reply {
                status,
                head: &mut parts.headers,
                body,
                event_stream: false,
            };
            let responding = phases::respond(&self, proto, served, reply, &log);
            // An upgrade is logged as it switches (or is refused by the
            // instance): what follows is a tunnel, not a body.
            log.answered(&client, responding.status, 0, responding.by);
            let mut resp = Response::from_parts(parts, responding.body.boxed());
            if status == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_side) = client_upgrade.take() {
                    tunnel::spawn(
                        self.clone(),
                        client_side,
                        hyper::upgrade::on(&mut resp),
                        upstream,
                        websocket,
                    );
                }
            } else {
                // An upgrade refused: hyper's client leaves the hop-by-hop
                // headers in (Baton's own strips them). The connection
                // closes after it, so that no HTTP/1 head after it is
                // parsed anywhere but in Baton's own server.
                headers::strip_hop_by_hop(resp.headers_mut());
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }))
    }

    /// Phases 4 and 5 for Baton's own answer, as hyper sends it.
    fn own(
        &self,
        proto: Proto,
        client: &HeaderValue,
        log: Log,
        answer: phases::OwnAnswer,
    ) -> Response<ProxyBody> {
        phases::own_answer(self, proto, client, log, answer).into_response()
    }

    /// Answers a request refused before any instance saw it; an HTTP/1
    /// connection closes after it, since what follows it on the
    /// connection cannot be trusted to start a request.
    fn reject(&self, rejection: Rejection, version: Version) -> Response<ProxyBody> {
        rejection.log();
        self.count(rejection.status);
        let refusal = Refusal::failed(rejection.status, rejection.why.to_string());
        let mut resp = refusal.answer().into_response();
        if version != Version::HTTP_2 {
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// How this proxy rewrites the headers of a request from `client`.
    fn rewrite<'a>(&self, client: &'a HeaderValue, proto: Proto) -> headers::Rewrite<'a> {
        headers::Rewrite {
            client,
            proto,
            trust: self.config.trust_forwarded,
        }
    }

    fn count(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).min(5) as usize;
        self.stats.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Passive health after a failed attempt: see [`Proxy::report_slow`]
    /// and [`Proxy::report_unreachable`]. The client's own failures say
    /// nothing about the instance.
    fn passive_health(&self, site: &Site, upstream: &Arc<Upstream>, failure: &AttemptError) {
        match failure {
            AttemptError::Connect(..) | AttemptError::Exchange(..) => {
                self.report_unreachable(&site.router, upstream);
            }
            AttemptError::TimedOut(..) => self.report_slow(site, upstream),
            AttemptError::ClientBody(..) => {}
        }
    }

    /// The instances that stay bad, as the proxy finds them (see
    /// [`Proxy::report_slow`]); `None` after the first call.
    pub fn take_stays_bad(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<StaysBad>> {
        self.stays_bad_rx
            .lock()
            .expect("stays_bad lock poisoned")
            .take()
    }

    /// Passive health for an instance that timed out: `max_fails`
    /// timeouts within `fail_timeout` take it out of rotation for
    /// `fail_timeout`, then it is tried again (nginx's `max_fails` and
    /// `fail_timeout`). A hung process still accepts connections, so its
    /// port says nothing; only time tells.
    fn report_slow(&self, site: &Site, upstream: &Arc<Upstream>) {
        let config = &self.config;
        if !upstream.record_failure(config.max_fails, config.fail_timeout) {
            return;
        }
        if upstream.set_down(true) {
            return;
        }
        // Benched a second time with no good answer between: it stays bad,
        // and the daemon gives it a fresh process (as for max_memory).
        if upstream.bench() >= 2 {
            let _ = self.stays_bad.send(StaysBad {
                app: site.app.clone(),
                instance: upstream.id.clone(),
            });
        }
        tracing::warn!(
            instance = %upstream.id,
            "timed out {} times within {}; out of rotation for {}",
            config.max_fails,
            humantime::format_duration(config.fail_timeout),
            humantime::format_duration(config.fail_timeout)
        );
        let upstream = upstream.clone();
        let router = site.router.clone();
        let pause = config.fail_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            upstream.set_down(false);
            router.republish();
        });
    }

    /// Passive health: an instance that refused a connection or broke an
    /// exchange leaves rotation at once, and comes back when its port
    /// accepts again (or when the supervisor replaces it).
    fn report_unreachable(&self, router: &Arc<Router>, upstream: &Arc<Upstream>) {
        if upstream.set_down(true) {
            return;
        }
        tracing::warn!(instance = %upstream.id, "failed an exchange; out of rotation until it accepts again");
        let upstream = upstream.clone();
        let router = router.clone();
        tokio::spawn(async move {
            // Bounded: an instance that never comes back is replaced by its
            // supervisor, whose new upstream starts healthy.
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !router
                    .table()
                    .instances
                    .iter()
                    .any(|u| Arc::ptr_eq(u, &upstream))
                {
                    return;
                }
                if tokio::net::TcpStream::connect(upstream.addr).await.is_ok() {
                    upstream.set_down(false);
                    router.republish();
                    return;
                }
            }
        });
    }
}

/// Checks a request that came through hyper and makes its parts what the
/// instance gets: Host set to the request's host (one line, the
/// absolute-form target's authority or h2's `:authority` first), h2 cookie
/// crumbs joined, the target in origin form with its path normalised
/// ([`normalise`]). Returns the body's framing.
fn prepare(
    parts: &mut http::request::Parts,
    max_body: Option<u64>,
) -> Result<BodyFraming, Rejection> {
    let protocol = match parts.version {
        Version::HTTP_2 => Protocol::Http2,
        Version::HTTP_10 | Version::HTTP_09 => Protocol::Http10,
        _ => Protocol::Http11,
    };
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    // The authority form (`host:port`) is CONNECT's alone, and CONNECT is
    // refused below.
    let authority_form = protocol != Protocol::Http2
        && parts.uri.scheme().is_none()
        && authority.is_some()
        && parts.method != http::Method::CONNECT;
    if authority_form || (authority.is_none() && !parts.uri.path().starts_with('/')) {
        // The asterisk form, as Baton's own server refuses it (nginx too).
        return Err(Rejection {
            status: http::StatusCode::BAD_REQUEST,
            why: "a target that is neither a path nor an absolute URI",
        });
    }
    let method = parts.method.as_str().as_bytes();
    let facts = framing::check_request(protocol, method, authority, &parts.headers)?;
    let host = facts.host.map(HeaderValue::from_bytes);
    let body = facts.body;
    if let (BodyFraming::Length(n), Some(max)) = (body, max_body) {
        if n > max {
            return Err(Rejection {
                status: http::StatusCode::PAYLOAD_TOO_LARGE,
                why: "the request body is larger than max_body_size",
            });
        }
    }
    match host {
        Some(Ok(host)) => {
            parts.headers.insert(HOST, host);
        }
        Some(Err(_)) => unreachable!("check_request allows only valid host bytes"),
        None => {}
    }
    if protocol == Protocol::Http2 {
        join_cookie_crumbs(&mut parts.headers);
    }
    parts.version = Version::HTTP_11;
    // Instances get the origin form (`/path?query`), as from any client;
    // an absolute URI (h2's, or an HTTP/1.1 absolute-form target) is
    // narrowed to it.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = match parts.uri.path_and_query() {
            Some(p) if p.as_str().starts_with('/') => Uri::from(p.clone()),
            // `http://host?q`: the path is empty, the origin form's is "/".
            Some(p) => Uri::try_from(format!("/{}", p.as_str())).map_err(|_| Rejection {
                status: http::StatusCode::BAD_REQUEST,
                why: "an invalid target",
            })?,
            None => Uri::from_static("/"),
        };
    }
    normalise_uri(&mut parts.uri)?;
    Ok(body)
}

/// Makes `uri`'s path normal (see [`normalise`]) before anything is routed
/// on it; a path above the root or with a bad escape is a 400.
fn normalise_uri(uri: &mut Uri) -> Result<(), Rejection> {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let normal = match normalise::normalise(target.as_bytes()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
        Ok(std::borrow::Cow::Owned(normal)) => normal,
        Err(bad) => return Err(bad.into()),
    };
    // Made of the bytes of a valid URI, less some: valid too.
    *uri = Uri::try_from(normal).map_err(|_| normalise::BadPath::BadEscape)?;
    Ok(())
}

/// h2 may split the Cookie field into crumbs; an HTTP/1.1 message carries
/// one line, the crumbs joined with "; " (RFC 9113 §8.2.3).
fn join_cookie_crumbs(headers: &mut http::HeaderMap) {
    let mut crumbs = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (crumbs.next(), crumbs.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for crumb in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

/// Whether a request with `method` may be sent again once it reached an
/// instance (RFC 9110 §9.2.2: the idempotent methods). Any other is sent
/// again only when no byte of it reached one.
pub(crate) fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"
    )
}

/// An error with its sources, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

//! Phase 3, the upstream: for a request an app's instances answer,
//!
//! pick (a ready instance, or hold while one may come)
//! → attempt (send, read the answer's head)
//! → retry decision ([`AttemptError::next`]: another instance, or a refusal)
//!
//! until an answer or Baton's [`Refusal`].

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::OwnAnswer;
use crate::body::Parked;
use crate::router::NoInstance;
use crate::sites::Site;
use crate::split::{self, Ask};
use crate::upstream::{RequestGuard, Upstream};
use crate::{h1, pool, tunnel, CountOnDrop, Proto, Proxy};

/// What is sent to an instance at each attempt, and what comes back.
pub(crate) trait Attempt: Sync {
    /// The instance's answer.
    type Reply: Send;
    /// Sends to `upstream` and reads the answer's head.
    fn send<'a>(
        &'a self,
        proxy: &'a Proxy,
        upstream: &'a Arc<Upstream>,
        body: &'a Parked,
        client: &'a HeaderValue,
    ) -> impl Future<Output = Result<Self::Reply, AttemptError>> + Send + 'a;
    /// The answer's status.
    fn status(reply: &Self::Reply) -> StatusCode;
    /// Whether the request asked to switch protocols (a 101 is its answer,
    /// not an instance's error).
    const UPGRADE: bool;
    /// The release the client's page came from, when it says.
    fn deployment(&self) -> Option<&[u8]>;
    /// What it says about its side of a canary.
    fn canary(&self) -> Ask;
    /// Whether its method is idempotent: it may go to another instance
    /// after it reached one (RFC 9110 §9.2.2).
    fn idempotent(&self) -> bool;
}

/// A plain request, encoded once for every attempt, sent on a pooled
/// connection by Baton's own client.
impl Attempt for h1::RequestHead {
    type Reply = h1::Answer;

    async fn send<'a>(
        &'a self,
        proxy: &'a Proxy,
        upstream: &'a Arc<Upstream>,
        body: &'a Parked,
        _client: &'a HeaderValue,
    ) -> Result<h1::Answer, AttemptError> {
        pool::send(upstream, self, body, &proxy.config.exchange_limits()).await
    }

    fn status(reply: &h1::Answer) -> StatusCode {
        reply.head.status()
    }

    const UPGRADE: bool = false;

    fn deployment(&self) -> Option<&[u8]> {
        self.deployment.as_deref()
    }

    fn canary(&self) -> Ask {
        self.canary
    }

    fn idempotent(&self) -> bool {
        self.idempotent
    }
}

/// An upgrade (WebSocket), sent through hyper's client on a connection of
/// its own.
pub(crate) struct Upgrade {
    pub(crate) parts: http::request::Parts,
    /// For X-Forwarded-Proto.
    pub(crate) proto: Proto,
}

impl Attempt for Upgrade {
    type Reply = Response<Incoming>;

    async fn send<'a>(
        &'a self,
        proxy: &'a Proxy,
        upstream: &'a Arc<Upstream>,
        body: &'a Parked,
        client: &'a HeaderValue,
    ) -> Result<Response<Incoming>, AttemptError> {
        let mut out = Request::from_parts(self.parts.clone(), body.attempt());
        proxy
            .rewrite(client, self.proto)
            .apply(out.headers_mut(), true);
        // Boxed: rare, and its future is large.
        Box::pin(tunnel::send_upgrade(out, upstream)).await
    }

    fn status(reply: &Response<Incoming>) -> StatusCode {
        reply.status()
    }

    const UPGRADE: bool = true;

    fn deployment(&self) -> Option<&[u8]> {
        let header = self.parts.headers.get("x-deployment-id");
        let target = self
            .parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().as_bytes());
        let query = || crate::http1::query_value(target?, b"dpl");
        header.map(HeaderValue::as_bytes).or_else(query)
    }

    fn canary(&self) -> Ask {
        let headers = &self.parts.headers;
        Ask::of(
            headers.get(split::HEADER).map(HeaderValue::as_bytes),
            headers
                .get_all(http::header::COOKIE)
                .iter()
                .map(HeaderValue::as_bytes),
        )
    }

    fn idempotent(&self) -> bool {
        crate::is_idempotent(self.parts.method.as_str().as_bytes())
    }
}

/// Why one attempt at an instance failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// The instance refused or did not accept: nothing was sent.
    #[error("cannot connect to {0}: {1}")]
    Connect(Arc<str>, String),
    /// The exchange broke after the request went out.
    #[error("{0} broke the exchange: {1}")]
    Exchange(Arc<str>, String),
    /// The client's request body failed on the way: not the instance's
    /// fault, and nothing to retry. The client gets the status.
    #[error("the request body failed: {0}")]
    ClientBody(String, StatusCode),
    /// The instance was silent past `response_timeout` or `read_timeout`.
    #[error("{0} timed out: {1}")]
    TimedOut(Arc<str>, String),
}

/// What a request still allows when an attempt fails.
#[derive(Debug, Clone, Copy)]
struct Chances {
    /// Retries are left and the body was not touched.
    left: bool,
    /// Its method is idempotent: it may be sent again after it reached an
    /// instance. Any other (a POST, with a body or without: `POST /logout`,
    /// `POST /orders/42/pay`) goes again only when none of it did.
    idempotent: bool,
    /// An earlier attempt timed out already.
    timed_out_before: bool,
}

/// After a failed attempt (pingora's `RetryType`).
enum Next {
    /// Another instance may take it.
    Retry,
    /// The client gets this.
    Refuse(Refusal),
}

impl AttemptError {
    /// What this failure allows: always another instance when nothing was
    /// sent; when the method is idempotent, after an exchange broke, and
    /// after one timeout (nginx's `proxy_next_upstream timeout`: a request
    /// that hangs everywhere should not take retries × the timeout).
    fn next(&self, chances: Chances) -> Next {
        let retry = match self {
            AttemptError::Connect(..) => chances.left,
            AttemptError::Exchange(..) => chances.left && chances.idempotent,
            AttemptError::TimedOut(..) => {
                chances.left && chances.idempotent && !chances.timed_out_before
            }
            AttemptError::ClientBody(..) => false,
        };
        if retry {
            return Next::Retry;
        }
        let status = match self {
            AttemptError::Connect(..) | AttemptError::Exchange(..) => StatusCode::BAD_GATEWAY,
            AttemptError::TimedOut(..) => StatusCode::GATEWAY_TIMEOUT,
            AttemptError::ClientBody(_, status) => *status,
        };
        Next::Refuse(Refusal::failed(status, self.to_string()))
    }
}

/// Baton's own answer when no instance gave one.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) why: String,
    /// No instance was ready: the client may come back in a second.
    pub(crate) retry_after: bool,
    /// The client's connection closes after it: what the instance did
    /// (switch protocols unasked) leaves it out of step.
    pub(crate) close: bool,
}

impl Refusal {
    pub(crate) fn failed(status: StatusCode, why: String) -> Refusal {
        Refusal {
            status,
            why,
            retry_after: false,
            close: false,
        }
    }

    fn no_instance(why: NoInstance) -> Refusal {
        let why = match why {
            NoInstance::HoldTimeout => "no instance became ready within hold_timeout",
            NoInstance::HoldFull => "too many requests are waiting for an instance",
            NoInstance::NoneComing => "every instance has failed and none is starting",
        };
        Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            why: why.to_string(),
            retry_after: true,
            close: false,
        }
    }

    /// The answer the client gets: the status, for a human reading it.
    pub(crate) fn answer(&self) -> OwnAnswer {
        let text = format!(
            "{} {}\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("")
        );
        let mut answer = OwnAnswer::with_body(self.status, "text/plain", Bytes::from(text));
        if self.retry_after {
            (answer.fields).push((RETRY_AFTER, HeaderValue::from_static("1")));
        }
        answer.close = self.close;
        answer
    }
}

/// The answer the path settled on, and who gave it.
pub(crate) struct Forwarded<R> {
    pub(crate) reply: R,
    pub(crate) served: Served,
}

/// Who answered, with the instance's in-flight count, which lasts until
/// the answer's body ends.
pub struct Served {
    pub(crate) guard: RequestGuard,
    pub(crate) upstream: Arc<Upstream>,
    /// Attempts before the one that answered.
    pub(crate) retries: u32,
    /// It waited for a ready instance.
    pub(crate) held: bool,
    /// A fresh client's canary bucket, for the answer's Set-Cookie.
    pub(crate) sticky: Option<u16>,
}

/// Takes one request to an app's instances: an instance's answer, or
/// Baton's refusal (logged as a warning; phase 5 counts either). A client
/// that leaves first drops this future, which counts the request as
/// abandoned (nginx's 499).
pub(crate) async fn pass<A: Attempt>(
    proxy: &Proxy,
    site: &Site,
    attempt: &A,
    body: &Parked,
    client: &HeaderValue,
) -> Result<Forwarded<A::Reply>, Refusal> {
    let abandoned = CountOnDrop(&proxy.stats.abandoned);
    let forwarded = forward(proxy, site, attempt, body, client).await;
    std::mem::forget(abandoned);
    let refusal = match forwarded {
        // The client asked for no upgrade: it cannot follow one.
        Ok(f) if !A::UPGRADE && A::status(&f.reply) == StatusCode::SWITCHING_PROTOCOLS => Refusal {
            close: true,
            ..Refusal::failed(
                StatusCode::BAD_GATEWAY,
                format!("{} switched protocols unasked", f.served.upstream.id),
            )
        },
        Ok(f) => return Ok(f),
        Err(refusal) => refusal,
    };
    tracing::warn!(status = refusal.status.as_u16(), "{}", refusal.why);
    Err(refusal)
}

/// Chooses an instance (holding while none is ready) and sends, trying
/// another instance while the failure allows it ([`AttemptError::next`]),
/// and when a draining instance answered 503 (seed 003's apps do: it has
/// not handled the request) to an idempotent request. A 503 says nothing
/// of what the app did before it answered, so a POST gets it as sent.
async fn forward<A: Attempt>(
    proxy: &Proxy,
    site: &Site,
    attempt: &A,
    body: &Parked,
    client: &HeaderValue,
) -> Result<Forwarded<A::Reply>, Refusal> {
    let mut tried: Vec<Arc<str>> = Vec::new();
    let mut timed_out_before = false;
    let mut held = false;
    // One side for the whole request, retries included: a canary's own
    // failures reach only its share.
    let (side, sticky) = site.router.side(attempt.canary());
    loop {
        // Holding is the rare case: its future is boxed so that the
        // common one stays small (this future is moved per request).
        // A page's own release answers it while that release drains
        // (a failed attempt there goes on to the serving instances).
        let pinned = (attempt.deployment()).and_then(|id| site.router.pick_draining(id, &tried));
        let picked = match pinned.or_else(|| site.router.pick_on(side, &tried)) {
            Some(u) => Ok(u),
            None => {
                held = true;
                Box::pin(site.router.pick_or_hold(&tried, site.hold_timeout)).await
            }
        };
        let upstream = picked.map_err(Refusal::no_instance)?;
        let guard = upstream.begin_request();
        let began = std::time::Instant::now();
        let sent = attempt.send(proxy, &upstream, body, client).await;
        let failed = match &sent {
            Ok(reply) => A::status(reply).is_server_error(),
            Err(e) => !matches!(e, AttemptError::ClientBody(..)),
        };
        site.router.score(&upstream, failed, began.elapsed());
        let chances = Chances {
            left: tried.len() < site.retries as usize && body.untouched(),
            idempotent: attempt.idempotent(),
            timed_out_before,
        };
        match sent {
            Ok(reply)
                if A::status(&reply) == StatusCode::SERVICE_UNAVAILABLE
                    && upstream.is_draining()
                    && chances.left
                    && chances.idempotent => {}
            Ok(reply) => {
                upstream.answered();
                let served = Served {
                    guard,
                    upstream,
                    retries: tried.len() as u32,
                    held,
                    sticky,
                };
                return Ok(Forwarded { reply, served });
            }
            Err(e) => {
                proxy.passive_health(site, &upstream, &e);
                timed_out_before |= matches!(e, AttemptError::TimedOut(..));
                if let Next::Refuse(refusal) = e.next(chances) {
                    return Err(refusal);
                }
            }
        }
        drop(guard);
        tried.push(upstream.id.clone());
        proxy.stats.retries.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chances(left: bool, idempotent: bool, timed_out_before: bool) -> Chances {
        Chances {
            left,
            idempotent,
            timed_out_before,
        }
    }

    /// An upgrade (a WebSocket) names its page's release as any request
    /// does: `x-deployment-id`, or `?dpl=` in its target.
    #[test]
    fn an_upgrade_names_its_release_by_header_or_query() {
        let upgrade = |target: &str, header: Option<&str>| {
            let mut request = http::Request::get(target);
            if let Some(id) = header {
                request = request.header("x-deployment-id", id);
            }
            let (parts, ()) = request.body(()).unwrap().into_parts();
            Upgrade {
                parts,
                proto: Proto::Http,
            }
        };
        assert_eq!(upgrade("/ws?dpl=r1", None).deployment(), Some(&b"r1"[..]));
        assert_eq!(upgrade("/ws", Some("r2")).deployment(), Some(&b"r2"[..]));
        assert_eq!(upgrade("/ws", None).deployment(), None);
    }

    fn retries(e: &AttemptError, c: Chances) -> bool {
        matches!(e.next(c), Next::Retry)
    }

    /// Nothing was sent: any request may go to another instance, while
    /// retries are left.
    #[test]
    fn a_refused_connection_is_retried_for_any_method() {
        let e = AttemptError::Connect("web#1".into(), "refused".into());
        assert!(retries(&e, chances(true, false, false)));
        assert!(!retries(&e, chances(false, true, false)));
        assert!(
            matches!(e.next(chances(false, true, false)), Next::Refuse(r) if r.status == StatusCode::BAD_GATEWAY)
        );
    }

    /// A broken exchange may have been acted on: only an idempotent
    /// request goes again (RFC 9110 §9.2.2).
    #[test]
    fn a_broken_exchange_is_retried_only_when_idempotent() {
        let e = AttemptError::Exchange("web#1".into(), "reset".into());
        assert!(retries(&e, chances(true, true, false)));
        assert!(!retries(&e, chances(true, false, false)));
    }

    /// One timeout of an idempotent request is retried, a second is the
    /// client's 504; a POST's first is.
    #[test]
    fn one_timeout_is_retried_not_two() {
        let e = AttemptError::TimedOut("web#1".into(), "response_timeout".into());
        assert!(retries(&e, chances(true, true, false)));
        assert!(!retries(&e, chances(true, false, false)));
        assert!(
            matches!(e.next(chances(true, true, true)), Next::Refuse(r) if r.status == StatusCode::GATEWAY_TIMEOUT)
        );
    }

    /// The client's own body failing is never the instance's fault: no
    /// retry, and the client gets the status it earned.
    #[test]
    fn a_failed_client_body_is_never_retried() {
        let e = AttemptError::ClientBody("too large".into(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            matches!(e.next(chances(true, true, false)), Next::Refuse(r) if r.status == StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}

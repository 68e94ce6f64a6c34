//! Body wrappers: one that can be handed back if it was never read (so a
//! failed connect can be retried with the same body), and one that holds an
//! instance's in-flight count until the response has been sent in full.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use hyper::client::conn::http1::SendRequest;

use std::future::Future;

use tokio_util::sync::WaitForCancellationFutureOwned;

use super::upstream::{ConnectionGuard, RequestGuard, Upstream};

/// The body type the proxy answers with.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A small complete body, for Baton's own answers (503, 502, ...).
pub fn full(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The client's request body, parked until an attempt first reads it.
#[derive(Clone)]
pub struct Parked(Arc<Mutex<Option<Incoming>>>);

impl Parked {
    /// Parks `body`.
    pub fn new(body: Incoming) -> Parked {
        Parked(Arc::new(Mutex::new(Some(body))))
    }

    /// True while no attempt has read from the body, so it can be sent again.
    pub fn untouched(&self) -> bool {
        self.0.lock().expect("parked body lock poisoned").is_some()
    }

    /// A body for one attempt; it takes the parked body on its first poll.
    pub fn attempt(&self) -> TakeOnPoll {
        TakeOnPoll {
            parked: self.clone(),
            body: None,
            end: self.is_empty(),
        }
    }

    /// True when the client sent no body at all.
    pub fn is_empty(&self) -> bool {
        self.0
            .lock()
            .expect("parked body lock poisoned")
            .as_ref()
            .is_none_or(|b| b.is_end_stream())
    }
}

/// See [`Parked::attempt`].
pub struct TakeOnPoll {
    parked: Parked,
    body: Option<Incoming>,
    end: bool,
}

impl Body for TakeOnPoll {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.end {
            return Poll::Ready(None);
        }
        if self.body.is_none() {
            let taken = self
                .parked
                .0
                .lock()
                .expect("parked body lock poisoned")
                .take();
            match taken {
                Some(b) => self.body = Some(b),
                None => return Poll::Ready(None),
            }
        }
        let body = self.body.as_mut().expect("just set");
        Pin::new(body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.end || self.body.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(b) => b.size_hint(),
            None => self
                .parked
                .0
                .lock()
                .expect("parked body lock poisoned")
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
        }
    }
}

/// The connection a response came on, to go back to its instance's idle
/// list once the response has been read in full.
pub struct Reusable {
    /// Whose connection.
    pub upstream: Arc<Upstream>,
    /// The connection.
    pub sender: SendRequest<TakeOnPoll>,
}

/// A response body that keeps its instance's in-flight count until it ends,
/// then hands its connection back for reuse.
pub struct Counted {
    inner: Incoming,
    guard: Option<RequestGuard>,
    reusable: Option<Reusable>,
    finished: bool,
    stream: Option<LongLived>,
}

/// A response that streams for as long as it likes (SSE): it counts as a
/// connection, not a request in flight, so a deploy's request drain does
/// not wait for it; the connection drain ends it instead.
struct LongLived {
    _counted: ConnectionGuard,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Counted {
    /// Wraps `inner`; `guard` is released at the end of the body, and
    /// `reusable` returned to its pool if the body was read to the end.
    pub fn new(inner: Incoming, guard: RequestGuard, reusable: Option<Reusable>) -> Counted {
        Counted {
            inner,
            guard: Some(guard),
            reusable,
            finished: false,
            stream: None,
        }
    }

    /// Makes this an event stream of `upstream`: counted as one of its
    /// connections, and ended (cleanly, so clients reconnect) when its
    /// connection drain ends.
    pub fn long_lived(mut self, upstream: &Arc<Upstream>) -> Counted {
        self.guard.take();
        self.stream = Some(LongLived {
            _counted: upstream.begin_connection(),
            closing: Box::pin(upstream.connections_closing().clone().cancelled_owned()),
        });
        self
    }

    fn release(&mut self) {
        if let Some(r) = self.reusable.take() {
            if self.finished {
                r.upstream.pool.put(r.sender);
            }
        }
        self.guard.take();
        self.stream = None;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finished |= self.inner.is_end_stream();
        self.release();
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(stream) = self.stream.as_mut() {
            if stream.closing.as_mut().poll(cx).is_ready() {
                self.stream = None;
                self.release();
                return Poll::Ready(None);
            }
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                self.finished = true;
                self.release();
            }
            Poll::Ready(Some(Err(_))) => self.release(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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

use std::future::Future;

use tokio_util::sync::WaitForCancellationFutureOwned;

use super::h1::ResponseBody;
use super::upstream::{ConnectionGuard, RequestGuard, Upstream};

/// Any error a body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the proxy answers with.
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// A small complete body, for Baton's own answers (503, 502, ...).
pub(crate) fn full(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A client's request body, from hyper or from Baton's own HTTP/1.1 server.
pub(crate) type RequestBody = BoxBody<Bytes, BoxError>;

/// The client's request body, parked until an attempt first reads it.
/// Most requests have none, and then nothing is allocated (the default).
#[derive(Clone, Default)]
pub(crate) struct Parked(Option<Arc<Mutex<Option<RequestBody>>>>);

impl Parked {
    /// Parks `body`.
    pub(crate) fn new<B>(body: B) -> Parked
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Parked(
            (!body.is_end_stream())
                .then(|| Arc::new(Mutex::new(Some(body.map_err(Into::into).boxed())))),
        )
    }

    fn slot(&self) -> Option<std::sync::MutexGuard<'_, Option<RequestBody>>> {
        self.0
            .as_ref()
            .map(|m| m.lock().expect("parked body lock poisoned"))
    }

    /// True while no attempt has read from the body, so it can be sent again.
    pub(crate) fn untouched(&self) -> bool {
        self.slot().is_none_or(|b| b.is_some())
    }

    /// A body for one attempt; it takes the parked body on its first poll.
    pub(crate) fn attempt(&self) -> TakeOnPoll {
        TakeOnPoll {
            parked: self.clone(),
            body: None,
            end: self.is_empty(),
        }
    }

    /// True when the client sent no body at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.slot()
            .is_none_or(|b| b.as_ref().is_none_or(|b| b.is_end_stream()))
    }
}

/// See [`Parked::attempt`].
pub(crate) struct TakeOnPoll {
    parked: Parked,
    body: Option<RequestBody>,
    end: bool,
}

impl Body for TakeOnPoll {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.end {
            return Poll::Ready(None);
        }
        if self.body.is_none() {
            let taken = self.parked.slot().and_then(|mut b| b.take());
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
                .slot()
                .and_then(|b| b.as_ref().map(|b| b.size_hint()))
                .unwrap_or_else(|| SizeHint::with_exact(0)),
        }
    }
}

/// A response body as it comes from an instance.
// The large variant is the common one: boxing it would cost an allocation
// per response to save space in the rare one.
#[allow(clippy::large_enum_variant)]
pub(crate) enum InstanceBody {
    /// Read by Baton's own client from a pooled connection.
    Pooled(ResponseBody),
    /// The (empty) body of an upgrade's answer, from hyper's client.
    Upgrade(Incoming),
}

impl Body for InstanceBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            InstanceBody::Pooled(b) => Pin::new(b).poll_frame(cx),
            InstanceBody::Upgrade(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InstanceBody::Pooled(b) => b.is_end_stream(),
            InstanceBody::Upgrade(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            InstanceBody::Pooled(b) => b.size_hint(),
            InstanceBody::Upgrade(b) => b.size_hint(),
        }
    }
}

/// A response body that keeps its instance's in-flight count until it ends.
pub(crate) struct Counted<B> {
    inner: B,
    guard: Option<RequestGuard>,
    stream: Option<LongLived>,
}

/// A response that streams for as long as it likes (SSE): it counts as a
/// connection, not a request in flight, so a deploy's request drain does
/// not wait for it; the connection drain ends it instead.
struct LongLived {
    _counted: ConnectionGuard,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<B> Counted<B> {
    /// Wraps `inner`; `guard` is released at the end of the body. An
    /// `event_stream` (SSE) streams for as long as it likes: it counts as
    /// one of `upstream`'s connections instead, and is ended (cleanly, so
    /// clients reconnect) when its connection drain ends.
    pub(crate) fn new(
        inner: B,
        guard: RequestGuard,
        upstream: &Arc<Upstream>,
        event_stream: bool,
    ) -> Counted<B> {
        let (guard, stream) = if event_stream {
            let stream = LongLived {
                _counted: upstream.begin_connection(),
                closing: Box::pin(upstream.connections_closing().clone().cancelled_owned()),
            };
            (None, Some(stream))
        } else {
            (Some(guard), None)
        };
        Counted {
            inner,
            guard,
            stream,
        }
    }

    fn release(&mut self) {
        self.guard.take();
        self.stream = None;
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(stream) = self.stream.as_mut() {
            if stream.closing.as_mut().poll(cx).is_ready() {
                self.stream = None;
                self.release();
                return Poll::Ready(None);
            }
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) => {
                self.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.release();
                Poll::Ready(Some(Err(e.into())))
            }
            other => other.map(|f| f.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

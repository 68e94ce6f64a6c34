//! A request body read from the client's connection as the instance
//! takes it, through the reading side the connection lends it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncRead;

use super::BODY_CHUNK;
use crate::h1::decode::{Decoding, Step};
use crate::h1::Silence;

/// A request body read from the client's connection as the instance takes
/// it. The connection lends it its reading side and its buffer meanwhile,
/// and takes both back after the answer; what the client sent after the
/// body (a pipelined request) stays in the buffer.
pub(super) struct ClientBody<R>(pub(super) Arc<Mutex<Lent<R>>>);

/// What the connection lends a request body.
pub(super) struct Lent<R> {
    pub(super) reader: Option<R>,
    pub(super) read: BytesMut,
    /// Where the body is in its framing.
    pub(super) decoding: Decoding,
    /// `max_body_size`, which a chunked body is held to as it comes (a
    /// length over it was refused with the head).
    pub(super) limit: Option<u64>,
    /// Body bytes read so far.
    pub(super) received: u64,
    /// Longest silence of the client in the middle of its body.
    pub(super) body_timeout: Duration,
    pub(super) silence: Silence,
}

impl<R> Lent<R> {
    /// Whether the body has been read to its end.
    pub(super) fn is_done(&self) -> bool {
        self.decoding == Decoding::Done
    }
}

pub(super) fn lock<R>(lent: &Mutex<Lent<R>>) -> std::sync::MutexGuard<'_, Lent<R>> {
    lent.lock().expect("lent body lock poisoned")
}

impl<R: AsyncRead + Unpin + Send + 'static> Body for ClientBody<R> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let mut lent = lock(&self.0);
        let lent = &mut *lent;
        loop {
            match lent.decoding.step(&mut lent.read) {
                Ok(Step::Frame(frame)) => {
                    lent.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if lent.limit.is_some_and(|max| lent.received > max) {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::FileTooLarge,
                            "the request body is larger than max_body_size",
                        ))));
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        e.to_string(),
                    ))))
                }
            }
            let Some(reader) = lent.reader.as_mut() else {
                return Poll::Ready(Some(Err(io::ErrorKind::NotConnected.into())));
            };
            lent.read.reserve(BODY_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(reader), cx, &mut lent.read) {
                Poll::Pending if lent.silence.expired(lent.body_timeout, cx) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client sent nothing of its body for {}",
                            humantime::format_duration(lent.body_timeout)
                        ),
                    ))))
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed in the middle of the request body",
                    ))))
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(_)) => lent.silence.heard(lent.body_timeout),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.0).is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match lock(&self.0).decoding {
            Decoding::Length(left) => SizeHint::with_exact(left),
            Decoding::Done => SizeHint::with_exact(0),
            Decoding::Chunked(_) | Decoding::UntilClose => SizeHint::default(),
        }
    }
}

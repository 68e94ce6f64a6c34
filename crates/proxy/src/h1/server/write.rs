//! Writing answers to the client: Baton's own, and an instance's body as
//! it comes (chunked for an HTTP/1.1 client when the instance did not
//! delimit it).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use http_body::Body;
use tokio::io::AsyncWriteExt;

use super::{ClientStream, Connection, FLUSH_AT, INLINE_FILE};
use crate::assets;
use crate::body::Counted;
use crate::h1::{write_date, write_field, write_status_line, Head, ResponseBody};
use crate::headers::Fields;
use crate::phases::{AnswerHead, OwnAnswer, Payload};

/// Whether the client's connection stays open after an answer, and how
/// the answer says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// It closes: the answer says `connection: close`.
    Close,
    /// It stays open, as HTTP/1.1 has it by default.
    KeepAlive,
    /// It stays open for an HTTP/1.0 client, which would close unless the
    /// answer says `connection: keep-alive`.
    KeepAlive10,
}

impl Persistence {
    /// From whether the connection stays open and whether the client
    /// speaks HTTP/1.0.
    pub(crate) fn of(keep_alive: bool, http10: bool) -> Persistence {
        match (keep_alive, http10) {
            (false, _) => Persistence::Close,
            (true, false) => Persistence::KeepAlive,
            (true, true) => Persistence::KeepAlive10,
        }
    }
}

/// An instance's answer head being written, as the response filters add
/// to it: the instance's fields are in `head`, what they add goes to `out`.
pub(super) struct H1Head<'a> {
    pub(super) head: &'a Head,
    pub(super) out: &'a mut Vec<u8>,
}

impl AnswerHead for H1Head<'_> {
    fn has(&self, name: &HeaderName) -> bool {
        self.head.has_field(name.as_str().as_bytes())
    }

    fn add(&mut self, name: HeaderName, value: &HeaderValue) {
        write_field(self.out, name.as_str().as_bytes(), value.as_bytes());
    }
}

impl<S: ClientStream> Connection<S> {
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        let written = self.writer.write_all(&self.out).await;
        self.out.clear();
        written
    }

    /// Baton's own answer: a small body goes out in one write with its
    /// head; a larger file with `sendfile` on plain TCP (no copy through
    /// Baton), in reads otherwise.
    pub(super) async fn write_own(
        &mut self,
        answer: OwnAnswer,
        persistence: Persistence,
    ) -> io::Result<()> {
        write_status_line(&mut self.out, answer.status);
        write_date(&mut self.out);
        for (name, value) in &answer.fields {
            write_field(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
        }
        self.write_connection(persistence);
        self.out.extend_from_slice(b"\r\n");
        let (file, start, len) = match answer.body {
            Payload::Empty => return self.flush().await,
            Payload::Text(text) => {
                self.out.extend_from_slice(&text);
                return self.flush().await;
            }
            Payload::File { file, start, len } => (file, start, len),
        };
        if len <= INLINE_FILE as u64 {
            assets::body::read_into(&file, start, len as usize, &mut self.out)?;
            return self.flush().await;
        }
        self.flush().await?;
        if let Some(socket) = S::zero_copy(&self.writer) {
            return assets::body::send_file(socket, &file, start, len).await;
        }
        let mut at = start;
        let end = start + len;
        while at < end {
            let chunk = (end - at).min(assets::body::CHUNK as u64) as usize;
            assets::body::read_into(&file, at, chunk, &mut self.out)?;
            at += chunk as u64;
            self.flush().await?;
        }
        Ok(())
    }

    /// Answers a bad head with `status`, then closes.
    pub(super) async fn reject(&mut self, status: StatusCode) {
        write_status_line(&mut self.out, status);
        write_date(&mut self.out);
        self.out
            .extend_from_slice(b"connection: close\r\ncontent-length: 0\r\n\r\n");
        if self.flush().await.is_ok() {
            let _ = self.writer.shutdown().await;
        }
    }

    /// The Connection field the client needs, if any.
    pub(super) fn write_connection(&mut self, persistence: Persistence) {
        match persistence {
            Persistence::Close => self.out.extend_from_slice(b"connection: close\r\n"),
            Persistence::KeepAlive => {}
            Persistence::KeepAlive10 => self.out.extend_from_slice(b"connection: keep-alive\r\n"),
        }
    }

    /// Writes the body as the instance sends it: what is ready goes out in
    /// one write with the head before it, and an event stream's events go
    /// out as they come.
    /// Returns the body's length.
    pub(super) async fn send_body(
        &mut self,
        mut body: Counted<ResponseBody>,
        chunked: bool,
    ) -> io::Result<u64> {
        let mut sent = 0;
        loop {
            let ended = poll_fn(|cx| self.gather(&mut body, chunked, &mut sent, cx)).await?;
            self.flush().await?;
            if ended {
                return Ok(sent);
            }
        }
    }

    /// Moves what the body has ready into the output; ready with whether
    /// the body ended once there is something to write.
    fn gather(
        &mut self,
        body: &mut Counted<ResponseBody>,
        chunked: bool,
        sent: &mut u64,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<bool>> {
        while self.out.len() < FLUSH_AT {
            let frame = Pin::new(&mut *body).poll_frame(cx);
            if let Poll::Ready(Some(Ok(frame))) = &frame {
                *sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            match frame {
                Poll::Ready(None) => {
                    if chunked {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    return Poll::Ready(Ok(true));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if chunked => {
                        let mut size = [0u8; 16];
                        self.out.extend_from_slice(hex(data.len(), &mut size));
                        self.out.extend_from_slice(b"\r\n");
                        self.out.extend_from_slice(&data);
                        self.out.extend_from_slice(b"\r\n");
                    }
                    Ok(data) => self.out.extend_from_slice(&data),
                    Err(frame) => {
                        // Trailers end a chunked body; a client that gets it
                        // any other way has nowhere to put them.
                        if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                            self.out.extend_from_slice(b"0\r\n");
                            for (name, value) in trailers.pairs() {
                                write_field(&mut self.out, name, value);
                            }
                            self.out.extend_from_slice(b"\r\n");
                            return Poll::Ready(Ok(true));
                        }
                    }
                },
                Poll::Pending if !self.out.is_empty() => return Poll::Ready(Ok(false)),
                Poll::Pending => {
                    // Nothing to write until the instance sends more: notice
                    // meanwhile a client that goes away (an event stream
                    // would otherwise outlive it).
                    if self.client_gone(cx) {
                        return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                    }
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(false))
    }
}

/// `n` in lowercase hex, written into `buf`.
fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_sizes() {
        let mut buf = [0u8; 16];
        assert_eq!(hex(0, &mut buf), b"0");
        assert_eq!(hex(255, &mut buf), b"ff");
        assert_eq!(hex(16 * 1024, &mut buf), b"4000");
        assert_eq!(hex(usize::MAX, &mut buf), b"ffffffffffffffff");
    }
}

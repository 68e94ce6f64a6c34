//! Decoding a message body out of its framing: a length, chunked, or
//! until the connection closes. One decoder for both directions: request
//! bodies Baton's own server reads from clients, and answers it reads from
//! instances.

use bytes::Bytes;
use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

use crate::framing::{self, is_forwardable_trailer};

/// Largest chunk trailer section.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// A body whose framing broke: what was wrong, for the log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Broken(pub String);

fn broken(why: impl Into<String>) -> Broken {
    Broken(why.into())
}

/// Where the body is in its framing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    /// This many bytes are left (never 0: that is `Done`).
    Length(u64),
    /// Chunked, at this point of a chunk.
    Chunked(Chunk),
    /// Everything until the instance closes (no length, not chunked).
    UntilClose,
    /// Read to its end.
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// In the trailer section after the last chunk.
    Trailers,
}

/// What the buffered bytes yield next.
pub enum Step {
    /// Data, or the trailers.
    Frame(Frame<Bytes>),
    /// More bytes must be read first.
    NeedMore,
    /// The body ended.
    End,
}

impl Decoding {
    /// Decodes the next frame out of `buf`, consuming what it uses.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Broken> {
        loop {
            match self {
                Decoding::Done => return Ok(Step::End),
                Decoding::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = (*left).min(buf.len() as u64);
                    *left -= take;
                    if *left == 0 {
                        *self = Decoding::Done;
                    }
                    return Ok(Step::Frame(Frame::data(
                        buf.split_to(take as usize).freeze(),
                    )));
                }
                Decoding::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Frame(Frame::data(buf.split().freeze())));
                }
                Decoding::Chunked(chunk) => match *chunk {
                    Chunk::Size => match framing::parse_chunk_size(buf) {
                        Ok(Some((used, size))) => {
                            buf.advance(used);
                            *chunk = if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(None) => return Ok(Step::NeedMore),
                        Err(e) => return Err(broken(e.to_string())),
                    },
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Step::NeedMore);
                        }
                        let take = left.min(buf.len() as u64);
                        *chunk = match left - take {
                            0 => Chunk::DataEnd,
                            rest => Chunk::Data(rest),
                        };
                        return Ok(Step::Frame(Frame::data(
                            buf.split_to(take as usize).freeze(),
                        )));
                    }
                    Chunk::DataEnd => {
                        // Refused at the first wrong byte, as hyper
                        // refuses it, not only once two have come.
                        if !b"\r\n".starts_with(&buf[..buf.len().min(2)]) {
                            return Err(broken("chunk data does not end with CRLF"));
                        }
                        if buf.len() < 2 {
                            return Ok(Step::NeedMore);
                        }
                        buf.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        if buf.starts_with(b"\r\n") {
                            buf.advance(2);
                            *self = Decoding::Done;
                            return Ok(Step::End);
                        }
                        let mut fields = [httparse::EMPTY_HEADER; 64];
                        match httparse::parse_headers(buf, &mut fields) {
                            // Trailer lines end in CRLF, as hyper wants
                            // them: no bare LF here.
                            Ok(httparse::Status::Complete((len, _)))
                                if buf[..len].iter().enumerate().any(|(i, &b)| {
                                    b == b'\n' && (i == 0 || buf[i - 1] != b'\r')
                                }) =>
                            {
                                return Err(broken("invalid trailers"))
                            }
                            Ok(httparse::Status::Complete((len, fields))) => {
                                let mut trailers = HeaderMap::new();
                                for f in fields
                                    .iter()
                                    .filter(|f| is_forwardable_trailer(f.name.as_bytes()))
                                {
                                    if let (Ok(name), Ok(value)) = (
                                        HeaderName::from_bytes(f.name.as_bytes()),
                                        HeaderValue::from_bytes(f.value),
                                    ) {
                                        trailers.append(name, value);
                                    }
                                }
                                buf.advance(len);
                                *self = Decoding::Done;
                                return Ok(Step::Frame(Frame::trailers(trailers)));
                            }
                            Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILER_BYTES => {
                                return Ok(Step::NeedMore)
                            }
                            _ => return Err(broken("invalid trailers")),
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunked body ends Done, with what follows it (a pipelined
    /// request) left in the buffer, with or without trailers.
    #[test]
    fn a_chunked_body_ends_done_and_leaves_what_follows() {
        for wire in [
            &b"5\r\nhello\r\n0\r\n\r\nGET /"[..],
            b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\nGET /",
        ] {
            let mut buf = BytesMut::from(wire);
            let mut decoding = Decoding::Chunked(Chunk::Size);
            let mut data = Vec::new();
            loop {
                match decoding.step(&mut buf).unwrap() {
                    Step::Frame(frame) => {
                        if let Ok(d) = frame.into_data() {
                            data.extend_from_slice(&d);
                        }
                    }
                    Step::End => break,
                    Step::NeedMore => panic!("the body is all there"),
                }
                if decoding == Decoding::Done {
                    break;
                }
            }
            assert_eq!(data, b"hello");
            assert_eq!(decoding, Decoding::Done);
            assert_eq!(&buf[..], b"GET /");
        }
    }
}

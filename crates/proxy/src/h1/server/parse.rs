//! Parsing a request head out of the connection's buffer, and phases 1
//! and 2 for it: what this server serves, hands to hyper, or refuses.

use std::mem::MaybeUninit;

use http::header::HeaderValue;
use http::StatusCode;

use super::{Next, Request, Route, H2_PREFACE, STACK_HEADERS};
use crate::framing::{
    check_request, is_valid_target, split_absolute, BodyFraming, Protocol, Rejection,
};
use crate::h1::decode::{Chunk, Decoding};
use crate::h1::RequestHead;
use crate::headers::{connection_options, find, is_upgrade};
use crate::normalise::normalise;
use crate::phases::{self, Arrival, Log, RawFields, Routed};
use crate::{Proto, Proxy};

/// What the bytes at the start of the buffer are.
pub(crate) enum Parsed {
    /// A whole head of this many bytes, and the request made of it.
    Complete(usize, Request),
    Partial,
    Other(Next),
}

/// Parses a request head at the start of `read` and, when it is one this
/// server handles, encodes the instance's request from it.
pub(crate) fn parse_request(
    read: &[u8],
    proxy: &Proxy,
    client: &HeaderValue,
    proto: Proto,
) -> Parsed {
    let max = proxy.config.max_headers;
    let mut stack = [const { MaybeUninit::<httparse::Header>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = if max <= STACK_HEADERS {
        &mut stack[..max]
    } else {
        heap.reserve_exact(max);
        &mut heap.spare_capacity_mut()[..max]
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(read, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Other(Next::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE))
        }
        Err(_) if read.starts_with(H2_PREFACE) => return Parsed::Other(Next::Handoff),
        Err(_) => return Parsed::Other(Next::Reject(StatusCode::BAD_REQUEST)),
    };
    if len > proxy.config.max_header_bytes {
        return Parsed::Other(Next::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Other(Next::Reject(StatusCode::BAD_REQUEST));
    };
    let fields: &[httparse::Header] = req.headers;
    let http10 = version == 0;
    let protocol = if http10 {
        Protocol::Http10
    } else {
        Protocol::Http11
    };
    // A target hyper's URI parser would refuse is refused here too, so
    // that both servers agree on what reaches an instance.
    if method != "CONNECT" && !is_valid_target(target.as_bytes()) {
        return Parsed::Other(Next::Reject(StatusCode::BAD_REQUEST));
    }
    // Origin form, or the absolute form, whose authority is the host
    // (RFC 9112 §3.2.2) and which the instance gets as a path.
    let (target, authority) = if target.starts_with('/') || method == "CONNECT" {
        (target.as_bytes(), None)
    } else if let Some((authority, path)) = split_absolute(target.as_bytes()) {
        (path, Some(authority))
    } else {
        return Parsed::Other(Next::Reject(StatusCode::BAD_REQUEST));
    };
    let facts = match check_request(protocol, method.as_bytes(), authority, fields) {
        Ok(facts) => facts,
        Err(rejection) => {
            rejection.log();
            return Parsed::Other(Next::Reject(rejection.status));
        }
    };
    // Normalised once: what is routed, answered and sent on from here is
    // one path (the log keeps the client's).
    let (raw_target, target) = match normalise(target) {
        Ok(normal) => (target, normal),
        Err(bad) => {
            let rejection = Rejection::from(bad);
            rejection.log();
            return Parsed::Other(Next::Reject(rejection.status));
        }
    };
    let target = &*target;
    if let (BodyFraming::Length(n), Some(max)) = (facts.body, proxy.config.body_limit()) {
        if n > max {
            return Parsed::Other(Next::Reject(StatusCode::PAYLOAD_TOO_LARGE));
        }
    }
    let body = match facts.body {
        BodyFraming::None | BodyFraming::Length(0) => Decoding::Done,
        BodyFraming::Length(n) => Decoding::Length(n),
        BodyFraming::Chunked => Decoding::Chunked(Chunk::Size),
    };
    let arrival = Arrival {
        method: method.as_bytes(),
        host: facts.host,
        target,
        raw_target,
        version: if http10 { "HTTP/1.0" } else { "HTTP/1.1" },
        proto,
        fields: &RawFields(fields),
    };
    // Phase 1; an upgrade that no filter answers goes to hyper, which
    // takes it through the phases itself.
    let filtered = phases::request_filters(proxy, &arrival);
    if filtered.is_none() && is_upgrade(fields) {
        return Parsed::Other(Next::Handoff);
    }
    // A close in any Connection line wins over a keep-alive in another,
    // as hyper reads them.
    let keep_alive = connection_options(fields, true).persists(http10);
    // Phase 2, and the head the instance gets, encoded once.
    let route = match filtered {
        Some(answer) => Route::Own(answer, Log::none()),
        None => match phases::route(proxy, &arrival) {
            Routed::Own(answer, log) => Route::Own(answer, log),
            Routed::Site { site, target, log } => {
                let head = RequestHead::encode_raw(
                    method.as_bytes(),
                    &target,
                    &facts,
                    fields,
                    &proxy.rewrite(client, proto),
                );
                Route::Site(site, head, log)
            }
        },
    };
    Parsed::Complete(
        len,
        Request {
            keep_alive,
            http10,
            body,
            expects_continue: body != Decoding::Done
                && !http10
                && find(fields, b"expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue")),
            route,
        },
    )
}

/// Whether `read` has an empty line (the end of a head) that ends past
/// `from`.
pub(super) fn ends_head(read: &[u8], from: usize) -> bool {
    let tail = &read[from.saturating_sub(3)..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_an_empty_line() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(ends_head(head, 0));
        assert!(ends_head(head, head.len() - 1), "the CRLF before counts");
        assert!(!ends_head(&head[..head.len() - 1], 0));
        assert!(ends_head(b"GET / HTTP/1.0\n\n", 15));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 0));
    }

    fn fields(raw: &'static [u8]) -> Vec<httparse::Header<'static>> {
        let mut slots = vec![httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut slots);
        req.parse(raw).unwrap();
        let n = req.headers.len();
        slots.truncate(n);
        slots
    }

    /// The length of the body Baton's own server reads, or `None` when it
    /// has none (chunked, or refused).
    fn body_length(fields: &[httparse::Header]) -> Option<u64> {
        match check_request(Protocol::Http11, b"POST", Some(b"x"), fields) {
            Ok(facts) => match facts.body {
                BodyFraming::None => Some(0),
                BodyFraming::Length(n) => Some(n),
                BodyFraming::Chunked => None,
            },
            Err(_) => None,
        }
    }

    #[test]
    fn only_a_clear_length_is_a_length_and_upgrades_go_to_hyper() {
        let plain = fields(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(body_length(&plain), Some(0));
        assert!(!is_upgrade(plain.as_slice()));
        let sized = fields(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(body_length(&sized), Some(5));
        let chunked = fields(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(body_length(&chunked), None);
        let both =
            fields(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(body_length(&both), None);
        let conflicting =
            fields(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert_eq!(body_length(&conflicting), None);
        let bad = fields(b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n");
        assert_eq!(body_length(&bad), None);
        let ws = fields(
            b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(is_upgrade(ws.as_slice()));
        let named_only = fields(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n");
        assert!(
            !is_upgrade(named_only.as_slice()),
            "Upgrade without Connection: upgrade is ignored"
        );
    }
}

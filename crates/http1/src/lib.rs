//! HTTP/1 as Baton reads and writes it at the edge, with no state of its
//! own: the framing decision ([`framing`]), the one normalised path
//! ([`normalise`]), hop-by-hop stripping and X-Forwarded-* ([`headers`]),
//! body decoding ([`decode`]), and a connection's scheme ([`Proto`]).
//! Every rule here is a security boundary: see the RFC tests beside each.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod decode;
pub mod framing;
pub mod headers;
pub mod normalise;
mod proto;

pub use self::proto::Proto;

//! ACME's HTTP-01 check (RFC 8555 §8.3): a GET of
//! `/.well-known/acme-challenge/<token>` while an order for the host is
//! open gets the key authorization, whichever app the host routes to.

use bytes::Bytes;
use http::StatusCode;

use crate::phases::{Arrival, OwnAnswer};
use crate::Proxy;

pub(super) fn answer(proxy: &Proxy, arrival: &Arrival<'_>) -> Option<OwnAnswer> {
    if arrival.method != b"GET" {
        return None;
    }
    let key_authorization = proxy.edge.challenges.http_answer(arrival.target)?;
    Some(OwnAnswer::with_body(
        StatusCode::OK,
        "application/octet-stream",
        Bytes::from(key_authorization),
    ))
}

//! `[tls] redirect_http`: a plain HTTP request gets a 308 to the same
//! host and target on HTTPS (ACME's checks stay on HTTP; see
//! `edge::https_location`).

use http::HeaderValue;

use crate::phases::{Arrival, OwnAnswer};
use crate::{edge, Proto, Proxy};

pub(super) fn answer(proxy: &Proxy, arrival: &Arrival<'_>) -> Option<OwnAnswer> {
    let port = (proxy.edge.redirect_to).filter(|_| arrival.proto == Proto::Http)?;
    let location = edge::https_location(arrival.host, arrival.target, port)?;
    Some(OwnAnswer::redirect(
        HeaderValue::from_bytes(&location).ok()?,
    ))
}

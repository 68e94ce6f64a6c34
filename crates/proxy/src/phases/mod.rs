//! A request's phases, in the manner of pingora's `ProxyHttp`: one
//! pipeline that both servers (Baton's own HTTP/1.1 server, and hyper's
//! for h2 and upgrades) call, each only reading and writing its protocol.
//!
//! 1. **Request filters** ([`request_filters`], the list in
//!    [`crate::filters`]): answers at the edge before routing (ACME's
//!    HTTP-01 check, the redirect to HTTPS).
//! 2. **Route** ([`route()`]): the site by host and path; a target under the
//!    site's `[static] prefix` is answered from its shelf here.
//! 3. **Upstream** ([`upstream::pass`]): pick an instance (or hold), attempt,
//!    decide on a retry, until an answer or a refusal.
//! 4. **Response filters** ([`respond`], [`own_answer`]): HSTS, the
//!    canary cookie, on every answer's head; the answer counted by status
//!    class, once; an instance's body counted as its in-flight request
//!    until it ends.
//! 5. **Log** ([`Log`]): the access log record finished (an instance's
//!    when its body ends).

mod log;
mod own;
mod respond;
mod route;
pub(crate) mod upstream;

pub(crate) use self::log::Log;
pub(crate) use self::own::{OwnAnswer, Payload};
pub(crate) use self::respond::{own_answer, respond, AnswerHead, Answering, Reply};
pub(crate) use self::route::{route, Routed};

use http::{HeaderMap, HeaderValue};

use super::{filters, Proto, Proxy};

/// What the request filters and the route see of a request, whichever
/// server read it.
pub(crate) struct Arrival<'a> {
    pub(crate) method: &'a [u8],
    /// As `framing::check_request` found it.
    pub(crate) host: Option<&'a [u8]>,
    /// Normalised (`normalise`): what is routed on.
    pub(crate) target: &'a [u8],
    /// As the client sent it, for the access log.
    pub(crate) raw_target: &'a [u8],
    /// `HTTP/1.1`, `HTTP/2.0`…, for the access log.
    pub(crate) version: &'static str,
    pub(crate) proto: Proto,
    pub(crate) fields: &'a dyn Lookup,
}

/// A request's header fields, looked up by lowercase name: a header map,
/// or the raw fields of a head Baton parsed itself.
pub(crate) trait Lookup {
    /// The first value of `name`.
    fn field(&self, name: &[u8]) -> Option<&[u8]>;
}

impl Lookup for HeaderMap {
    fn field(&self, name: &[u8]) -> Option<&[u8]> {
        // A `&str` is looked up as it is; a HeaderName made of it would
        // copy a name that is not a standard one.
        let name = std::str::from_utf8(name).ok()?;
        self.get(name).map(HeaderValue::as_bytes)
    }
}

/// The raw fields of a head Baton's own server parsed.
pub(crate) struct RawFields<'a, 'h>(pub(crate) &'a [httparse::Header<'h>]);

impl Lookup for RawFields<'_, '_> {
    fn field(&self, name: &[u8]) -> Option<&[u8]> {
        super::headers::find(self.0, name)
    }
}

/// Phase 1: the first request filter that answers, or none.
pub(crate) fn request_filters(proxy: &Proxy, arrival: &Arrival<'_>) -> Option<OwnAnswer> {
    filters::REQUEST
        .iter()
        .find_map(|filter| filter(proxy, arrival))
}

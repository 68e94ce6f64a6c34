//! Filters, in the manner of pingora's `ProxyHttp` hooks: a request filter
//! may answer a request before it is routed; a response filter adds to an
//! answer's head. Each is one function in a file of its own, listed below
//! in the order it runs. Both servers (Baton's own HTTP/1.1 and hyper's
//! h2 and upgrades) run these same lists, through [`crate::phases`],
//! on the protocol-neutral views [`Arrival`] and [`AnswerHead`].
//!
//! A new filter: a file here with one function of the list's type, and
//! its name in the list.

mod acme_challenge;
mod canary_cookie;
mod hsts;
mod https_redirect;

use crate::phases::{AnswerHead, Answering, Arrival, OwnAnswer};
use crate::Proxy;

/// Answers a request at the edge, or lets it go on (`None`).
pub(crate) type RequestFilter = fn(&Proxy, &Arrival<'_>) -> Option<OwnAnswer>;

/// Adds to the head of an answer on its way to the client.
pub(crate) type ResponseFilter = fn(&Proxy, &Answering, &mut dyn AnswerHead);

/// The request filters, in order: the first that answers wins.
pub(crate) const REQUEST: &[RequestFilter] = &[acme_challenge::answer, https_redirect::answer];

/// The response filters, in order. They run on every answer: an
/// instance's, a static file's, and Baton's refusals.
pub(crate) const RESPONSE: &[ResponseFilter] = &[hsts::add, canary_cookie::add];

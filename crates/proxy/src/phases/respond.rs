//! Phase 4: the response filters on an answer's head, the answer
//! counted, and an instance's body counted as its in-flight request.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::upstream::Served;
use super::{Log, OwnAnswer};
use crate::access::Answered;
use crate::body::Counted;
use crate::{filters, Proto, Proxy};

/// What the response filters know of an answer beside its head.
pub(crate) struct Answering {
    pub(crate) proto: Proto,
    /// A fresh client's canary bucket, for its Set-Cookie.
    pub(crate) sticky: Option<u16>,
}

/// An answer's head as the response filters add to it: a header map
/// (hyper), the fields of Baton's own answer, or the head Baton's own
/// server is writing.
pub(crate) trait AnswerHead {
    /// Whether the head has a field `name`.
    fn has(&self, name: &HeaderName) -> bool;
    /// Adds a field (after any of the same name). The value is borrowed:
    /// the head Baton's own server writes copies its bytes, not the value.
    fn add(&mut self, name: HeaderName, value: &HeaderValue);
}

impl AnswerHead for HeaderMap {
    fn has(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }

    fn add(&mut self, name: HeaderName, value: &HeaderValue) {
        self.append(name, value.clone());
    }
}

impl AnswerHead for Vec<(HeaderName, HeaderValue)> {
    fn has(&self, name: &HeaderName) -> bool {
        self.iter().any(|(n, _)| n == name)
    }

    fn add(&mut self, name: HeaderName, value: &HeaderValue) {
        self.push((name, value.clone()));
    }
}

/// Runs the response filters on `head`.
fn filter(proxy: &Proxy, answering: &Answering, head: &mut dyn AnswerHead) {
    for filter in filters::RESPONSE {
        filter(proxy, answering, head);
    }
}

/// Phases 4 and 5 for Baton's own answer: the response filters, the
/// count, the log. Returns it for the server to write.
pub(crate) fn own_answer(
    proxy: &Proxy,
    proto: Proto,
    client: &HeaderValue,
    log: Log,
    mut answer: OwnAnswer,
) -> OwnAnswer {
    let answering = Answering {
        proto,
        sticky: None,
    };
    filter(proxy, &answering, &mut answer.fields);
    proxy.count(answer.status);
    log.own(client, &answer);
    answer
}

/// An instance's answer on its way out: its body, counted until it ends,
/// and what its log record will say.
pub(crate) struct Responding<B> {
    pub(crate) body: Counted<B>,
    pub(crate) status: u16,
    pub(crate) by: Answered,
}

/// An instance's answer as phase 4 takes it: its status, its head as the
/// server writes it, its body.
pub(crate) struct Reply<'h, B> {
    pub(crate) status: StatusCode,
    pub(crate) head: &'h mut dyn AnswerHead,
    pub(crate) body: B,
    /// An event stream: its body is flushed event by event.
    pub(crate) event_stream: bool,
}

/// Phase 4 for an instance's answer: the response filters add to its head,
/// the answer is counted, and its body holds the instance's in-flight
/// count until it ends (a drain waits for it).
pub(crate) fn respond<B>(
    proxy: &Proxy,
    proto: Proto,
    served: Served,
    reply: Reply<'_, B>,
    log: &Log,
) -> Responding<B> {
    let answering = Answering {
        proto,
        sticky: served.sticky,
    };
    filter(proxy, &answering, reply.head);
    proxy.count(reply.status);
    Responding {
        // Who answered, for the log only: no copies when there is none.
        by: match log.is_on() {
            true => Answered::by(&served.upstream, served.retries, served.held),
            false => Answered::default(),
        },
        body: Counted::new(
            reply.body,
            served.guard,
            &served.upstream,
            reply.event_stream,
        ),
        status: reply.status.as_u16(),
    }
}

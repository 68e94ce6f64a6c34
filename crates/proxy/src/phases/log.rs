//! Phase 5: a request's access log record (when the app keeps a log),
//! finished with its answer.

use http::HeaderValue;

use super::{Arrival, OwnAnswer};
use crate::access::{Answered, Opening, Pending};
use crate::sites::Site;

/// A request's access log record in the making, when its app keeps a log.
pub(crate) struct Log(Option<Box<Pending>>);

impl Log {
    /// No record: the request's app keeps no log, or no app serves it.
    pub(crate) fn none() -> Log {
        Log(None)
    }

    /// A record opened as `site` takes the request.
    pub(super) fn open(site: &Site, arrival: &Arrival<'_>) -> Log {
        Log(site.access.as_ref().map(|log| {
            let opening = Opening::new(
                arrival.method,
                arrival.raw_target,
                arrival.version,
                arrival.fields.field(b"referer"),
                arrival.fields.field(b"user-agent"),
            );
            Pending::new(log.clone(), opening)
        }))
    }

    /// Whether a record is being made.
    pub(crate) fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Baton's own answer.
    pub(crate) fn own(self, client: &HeaderValue, answer: &OwnAnswer) {
        if let Some(pending) = self.0 {
            let answered = Answered {
                release: answer.release(),
                ..Answered::default()
            };
            pending.finish(client, answer.status.as_u16(), answer.body_len(), answered);
        }
    }

    /// The client closed before the answer (nginx's 499).
    pub(crate) fn abandoned(self, client: &HeaderValue) {
        if let Some(pending) = self.0 {
            pending.finish(client, 499, 0, Answered::default());
        }
    }

    /// An instance's answer, once its body has ended after `sent` bytes.
    pub(crate) fn answered(self, client: &HeaderValue, status: u16, sent: u64, by: Answered) {
        if let Some(pending) = self.0 {
            pending.finish(client, status, sent, by);
        }
    }

    /// The record, for a body that finishes it as it ends (hyper's).
    pub(crate) fn into_pending(self) -> Option<Box<Pending>> {
        self.0
    }
}

//! Phase 2: which app a request is for (`SiteTable::route`), and a file
//! of its static shelf answered on the way.

use std::borrow::Cow;
use std::sync::Arc;

use super::{Arrival, Log, OwnAnswer};
use crate::assets::Ask;
use crate::phases::upstream::Refusal;
use crate::sites::Site;
use crate::Proxy;

/// Where the route sends a request.
pub(crate) enum Routed<'a> {
    /// To this app's instances, with the target they get (its prefix cut
    /// when the app strips it).
    Site {
        site: Arc<Site>,
        target: Cow<'a, [u8]>,
        log: Log,
    },
    /// Baton answers: a file of the site's shelf, or 404/421 for a host
    /// (and path) no app serves.
    Own(OwnAnswer, Log),
}

/// Phase 2: the site by host and path, and the static shelf's answer
/// when the target is under its prefix.
pub(crate) fn route<'a>(proxy: &Proxy, arrival: &Arrival<'a>) -> Routed<'a> {
    let sites = proxy.sites.load();
    let Some(site) = sites.route(arrival.host, arrival.target) else {
        let status = arrival.proto.no_app_status();
        let refusal = Refusal::failed(status, "no app serves this host".into());
        return Routed::Own(refusal.answer(), Log::none());
    };
    let log = Log::open(site, arrival);
    let target = site.target(arrival.target);
    if let Some(answer) = static_answer(site, arrival, &target) {
        return Routed::Own(answer, log);
    }
    Routed::Site {
        site: site.clone(),
        target,
        log,
    }
}

/// Baton's answer when `target` is under the site's `[static] prefix`.
fn static_answer(site: &Site, arrival: &Arrival<'_>, target: &[u8]) -> Option<OwnAnswer> {
    let shelf = site.assets.shelf();
    let shelf = shelf.as_ref().as_ref()?;
    if !shelf.takes(target) {
        return None;
    }
    let field = |name: &[u8]| arrival.fields.field(name);
    Some(shelf.answer(&Ask {
        method: arrival.method,
        target,
        if_match: field(b"if-match"),
        if_none_match: field(b"if-none-match"),
        if_modified_since: field(b"if-modified-since"),
        if_unmodified_since: field(b"if-unmodified-since"),
        range: field(b"range"),
        if_range: field(b"if-range"),
        accept_encoding: field(b"accept-encoding"),
        deployment: field(b"x-deployment-id"),
    }))
}

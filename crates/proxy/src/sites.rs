//! Which app a request is for: by host (exact names, then one-label
//! wildcards), then by the longest path prefix, else the default app.
//!
//! The table is swapped whole (`ArcSwap`) when apps come and go; a lookup
//! takes no lock and allocates nothing (the host is lower-cased on the
//! stack).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::access::AccessLog;
use super::assets::Assets;
use super::router::Router;

/// One app as the proxy sees it: its route table, and where it is served.
pub struct Site {
    /// The app's name (for logs, metrics and refusals).
    pub app: Arc<str>,
    /// Its instances and hold queue.
    pub router: Arc<Router>,
    /// `path_prefix`, or empty.
    pub prefix: Box<str>,
    /// The app sees the path without the prefix.
    pub strip_prefix: bool,
    /// How long its requests wait for a ready instance (its `[proxy]
    /// hold_timeout`).
    pub hold_timeout: std::time::Duration,
    /// How many times a request is tried on another of its instances.
    pub retries: u32,
    /// Its static files, answered by Baton.
    pub assets: Arc<Assets>,
    /// Its access log, if it keeps one.
    pub access: Option<Arc<AccessLog>>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("app", &self.app)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Site {
    /// Whether `path` is under this site's prefix: `/api` takes `/api`,
    /// `/api/x` and `/api?q`, not `/apix`.
    fn takes(&self, path: &[u8]) -> bool {
        let prefix = self.prefix.as_bytes();
        path.starts_with(prefix) && matches!(path.get(prefix.len()), None | Some(b'/' | b'?'))
            || prefix.is_empty()
    }

    /// The target the app gets: with the prefix cut off when
    /// `strip_prefix` (`/api/x` → `/x`, `/api` → `/`, `/api?q` → `/?q`).
    pub(crate) fn target<'a>(&self, target: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if !self.strip_prefix || self.prefix.is_empty() {
            return target.into();
        }
        let rest = &target[self.prefix.len().min(target.len())..];
        match rest.first() {
            Some(b'/') => rest.into(),
            _ => {
                let mut owned = Vec::with_capacity(rest.len() + 1);
                owned.push(b'/');
                owned.extend_from_slice(rest);
                owned.into()
            }
        }
    }
}

/// Host → sites. Hashed with foldhash: host names are short, and SipHash
/// (the std default, against hash flooding) cost more than the rest of
/// the lookup; the keys are the configured names, not the clients'.
type ByHost = HashMap<Box<str>, Vec<Arc<Site>>, foldhash::fast::FixedState>;

/// The sites by host.
#[derive(Debug, Default)]
pub struct SiteTable {
    /// Exact host → its sites, longest prefix first.
    exact: ByHost,
    /// `*.shop.test` under `shop.test` → its sites, longest prefix first.
    wildcard: ByHost,
    /// The app for hosts no other claims.
    default: Option<Arc<Site>>,
}

/// Longest host name looked up (DNS's limit); longer ones match nothing.
const MAX_HOST: usize = 253;

impl SiteTable {
    /// A table of `sites`, each with the hosts it claims; `default`
    /// answers the rest.
    pub fn new(sites: Vec<(Arc<Site>, Vec<String>)>, default: Option<Arc<Site>>) -> SiteTable {
        let mut table = SiteTable {
            default,
            ..SiteTable::default()
        };
        for (site, hosts) in sites {
            for host in hosts {
                let host = host.to_ascii_lowercase();
                let group = match host.strip_prefix("*.") {
                    Some(parent) => table.wildcard.entry(parent.into()).or_default(),
                    None => table.exact.entry(host.into()).or_default(),
                };
                group.push(site.clone());
            }
        }
        for group in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            group.sort_by_key(|s| std::cmp::Reverse(s.prefix.len()));
        }
        table
    }

    /// The site for a request to `host` (a Host value: a port is ignored)
    /// and `target`.
    pub(crate) fn route(&self, host: Option<&[u8]>, target: &[u8]) -> Option<&Arc<Site>> {
        let path = target;
        let mut buf = [0u8; MAX_HOST];
        let name = host.and_then(|h| lower_name(h, &mut buf));
        if let Some(name) = name {
            if let Some(site) = longest_prefix(self.exact.get(name), path) {
                return Some(site);
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(site) = longest_prefix(self.wildcard.get(parent), path) {
                    return Some(site);
                }
            }
        }
        self.default.as_ref().filter(|s| s.takes(path))
    }
}

/// The site of a host's group (longest prefix first) that takes `path`.
fn longest_prefix<'a>(group: Option<&'a Vec<Arc<Site>>>, path: &[u8]) -> Option<&'a Arc<Site>> {
    group?.iter().find(|s| s.takes(path))
}

/// The host part of a Host value, lower-cased into `buf`: `Shop.Test:8080`
/// → `shop.test`; `[::1]:80` → `[::1]`.
fn lower_name<'b>(host: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let name = match host.iter().rposition(|&b| b == b':') {
        Some(colon) if !host[colon..].contains(&b']') => &host[..colon],
        _ => host,
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    let out = buf.get_mut(..name.len())?;
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// The routing table in use, swapped whole.
#[derive(Debug, Default)]
pub struct Sites(ArcSwap<SiteTable>);

impl Sites {
    /// Serves `table` from the next request on.
    pub fn publish(&self, table: SiteTable) {
        self.0.store(Arc::new(table));
    }

    /// The table now (hold it for the lookup).
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<SiteTable>> {
        self.0.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Balance;

    fn site(app: &str, prefix: &str, strip: bool) -> Arc<Site> {
        Arc::new(Site {
            app: app.into(),
            router: Arc::new(Router::new(Balance::default(), 10)),
            prefix: prefix.into(),
            strip_prefix: strip,
            hold_timeout: std::time::Duration::from_secs(1),
            retries: 0,
            assets: Arc::default(),
            access: None,
        })
    }

    fn routed(table: &SiteTable, host: &str, target: &str) -> Option<String> {
        table
            .route(Some(host.as_bytes()), target.as_bytes())
            .map(|s| s.app.to_string())
    }

    /// Exact names, then wildcards, then the longest prefix; the default
    /// takes the rest; a prefix ends at a segment.
    #[test]
    fn hosts_then_wildcards_then_the_longest_prefix() {
        let shop = site("shop", "", false);
        let api = site("api", "/api", true);
        let tenants = site("tenants", "", false);
        let blog = site("blog", "", false);
        let table = SiteTable::new(
            vec![
                (shop, vec!["shop.test".into()]),
                (api, vec!["shop.test".into()]),
                (tenants, vec!["*.shop.test".into()]),
                (blog.clone(), vec!["blog.test".into()]),
            ],
            None,
        );
        assert_eq!(
            routed(&table, "Shop.Test:8080", "/").as_deref(),
            Some("shop")
        );
        assert_eq!(routed(&table, "shop.test", "/api").as_deref(), Some("api"));
        assert_eq!(
            routed(&table, "shop.test", "/api/x?y").as_deref(),
            Some("api")
        );
        assert_eq!(
            routed(&table, "shop.test", "/api?y").as_deref(),
            Some("api")
        );
        assert_eq!(
            routed(&table, "shop.test", "/apix").as_deref(),
            Some("shop")
        );
        assert_eq!(
            routed(&table, "a.shop.test", "/").as_deref(),
            Some("tenants")
        );
        assert_eq!(routed(&table, "a.b.shop.test", "/"), None);
        assert_eq!(routed(&table, "shop.test.", "/").as_deref(), Some("shop"));
        assert_eq!(routed(&table, "other.test", "/"), None);
        assert_eq!(table.route(None, b"/").map(|s| s.app.clone()), None);
        let with_default = SiteTable::new(vec![], Some(blog));
        assert_eq!(
            routed(&with_default, "other.test", "/").as_deref(),
            Some("blog")
        );
        assert_eq!(
            with_default
                .route(None, b"/")
                .map(|s| s.app.to_string())
                .as_deref(),
            Some("blog")
        );
    }

    #[test]
    fn a_stripped_prefix_leaves_a_path() {
        let api = site("api", "/api", true);
        assert_eq!(&*api.target(b"/api/x?y=1"), b"/x?y=1");
        assert_eq!(&*api.target(b"/api"), b"/");
        assert_eq!(&*api.target(b"/api?y"), b"/?y");
        let kept = site("api", "/api", false);
        assert_eq!(&*kept.target(b"/api/x"), b"/api/x");
    }
}

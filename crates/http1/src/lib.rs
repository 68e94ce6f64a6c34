//! HTTP/1 as Baton reads and writes it at the edge, with no state of its
//! own: the framing decision ([`framing`]), the one normalised path
//! ([`normalise`]), hop-by-hop stripping and X-Forwarded-* ([`headers`]),
//! body decoding ([`decode`]), a connection's scheme ([`Proto`]), and a
//! target's query ([`query_value`]).
//! Every rule here is a security boundary: see the RFC tests beside each.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod decode;
pub mod framing;
pub mod headers;
pub mod normalise;
mod proto;

pub use self::proto::Proto;

/// `name=value` in the target's query.
pub fn query_value<'a>(target: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let start = target.iter().position(|&b| b == b'?')? + 1;
    let query = &target[start..];
    let query = query.split(|&b| b == b'#').next().unwrap_or(query);
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        (key == name).then_some(&value[1..])
    })
}

#[cfg(test)]
mod tests {
    use super::query_value;

    /// A value is found by its name in the query, not in the path or the
    /// fragment; a target without a query has none.
    #[test]
    fn query_values_come_from_the_query() {
        assert_eq!(query_value(b"/a?dpl=r1&x=2", b"dpl"), Some(&b"r1"[..]));
        assert_eq!(query_value(b"/a?x=2&dpl=r1#f", b"dpl"), Some(&b"r1"[..]));
        assert_eq!(query_value(b"/dpl=r1", b"dpl"), None);
        assert_eq!(query_value(b"/a?xdpl=r1", b"dpl"), None);
        assert_eq!(query_value(b"/a", b"dpl"), None);
    }
}

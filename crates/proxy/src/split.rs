//! A canary split: a share of the clients goes to a second release that
//! runs beside the stable one, and both sides' answers are scored over the
//! same window, so that the deploy can judge the canary.
//!
//! A client is sticky by a cookie holding a bucket (0..1000) drawn at its
//! first request: buckets below the share go to the canary. A share that
//! grows (5 %, then 25 %) keeps every client that was on the canary there.
//! Testers force a side with `x-baton-canary: always|never`, or the same
//! words in the cookie.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::upstream::Upstream;
pub use crate::protocol::Score;

/// The cookie that keeps a client on its side.
pub(crate) const COOKIE: &str = "baton_canary";
/// The header that forces a side.
pub(crate) const HEADER: &str = "x-baton-canary";
/// Buckets a share is counted in: a share of 10 % is 100 buckets.
pub const BUCKETS: u16 = 1000;

/// Which release takes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The release serving before the canary.
    Stable,
    /// The release being tried.
    Canary,
}

/// What a request says about its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Ask {
    /// Nothing: a fresh client, given a bucket now.
    #[default]
    Fresh,
    /// Its cookie's bucket.
    Bucket(u16),
    /// Forced to the canary (header or cookie `always`).
    Always,
    /// Forced to the stable release (header or cookie `never`).
    Never,
}

impl Ask {
    /// What a request's `x-baton-canary` header and its Cookie lines say;
    /// the header wins.
    pub(crate) fn of<'a>(header: Option<&[u8]>, cookies: impl Iterator<Item = &'a [u8]>) -> Ask {
        let word = |value: &[u8]| match value.trim_ascii() {
            b"always" => Some(Ask::Always),
            b"never" => Some(Ask::Never),
            _ => None,
        };
        if let Some(forced) = header.and_then(word) {
            return forced;
        }
        for line in cookies {
            for pair in line.split(|b| *b == b';') {
                let pair = pair.trim_ascii();
                let Some(value) = pair
                    .strip_prefix(COOKIE.as_bytes())
                    .and_then(|rest| rest.strip_prefix(b"="))
                else {
                    continue;
                };
                if let Some(forced) = word(value) {
                    return forced;
                }
                if let Some(bucket) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u16>().ok())
                    .filter(|b| *b < BUCKETS)
                {
                    return Ask::Bucket(bucket);
                }
            }
        }
        Ask::Fresh
    }
}

/// The canary's instances, its share, and both sides' scores.
#[derive(Debug)]
pub struct Split {
    /// The canary's release.
    pub release: Arc<str>,
    /// Its ready instances.
    pub canary: Vec<Arc<Upstream>>,
    /// Buckets (of [`BUCKETS`]) that go to the canary.
    pub share: u16,
    /// Scores over the current window: `[stable, canary]`.
    pub scores: Arc<[Scorecard; 2]>,
    /// Draws fresh clients' buckets.
    draws: AtomicU64,
}

impl Split {
    /// A split giving `share` buckets to `canary`, scored into `scores`.
    pub fn new(
        release: Arc<str>,
        canary: Vec<Arc<Upstream>>,
        share: u16,
        scores: Arc<[Scorecard; 2]>,
    ) -> Split {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Split {
            release,
            canary,
            share: share.min(BUCKETS),
            scores,
            draws: AtomicU64::new(seed),
        }
    }

    /// The side of a request, and the bucket to give the client in a
    /// cookie when it had none.
    pub(crate) fn side(&self, ask: Ask) -> (Side, Option<u16>) {
        let (bucket, fresh) = match ask {
            Ask::Always => return (Side::Canary, None),
            Ask::Never => return (Side::Stable, None),
            Ask::Bucket(b) => (b, None),
            Ask::Fresh => {
                let b = self.draw();
                (b, Some(b))
            }
        };
        let side = if bucket < self.share {
            Side::Canary
        } else {
            Side::Stable
        };
        (side, fresh)
    }

    /// The scorecard of `side`.
    pub(crate) fn score(&self, side: Side) -> &Scorecard {
        &self.scores[side as usize]
    }

    /// A bucket, uniform over 0..BUCKETS: splitmix64 over a counter, so
    /// concurrent draws never repeat a state and allocate nothing.
    fn draw(&self) -> u16 {
        let mut z = self
            .draws
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % u64::from(BUCKETS)) as u16
    }
}

/// The Set-Cookie value that keeps a client in `bucket` for a day.
pub(crate) fn cookie(bucket: u16) -> String {
    format!("{COOKIE}={bucket}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax")
}

/// Latency buckets: four per doubling from 100 µs, so a p99 is known
/// within 19 %, which is finer than any ratio worth judging on.
const LATENCY_BUCKETS: usize = 96;

/// One side's answers over a window: counted without a lock on the
/// request path.
#[derive(Debug)]
pub struct Scorecard {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for Scorecard {
    fn default() -> Self {
        Scorecard {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Scorecard {
    /// One attempt: `failed` for a 5xx, a reset or a timeout; `took` to
    /// the answer's head (or the failure).
    pub(crate) fn record(&self, failed: bool, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = took.as_micros().max(1) as f64;
        let index = (4.0 * (micros / 100.0).log2()).floor().max(0.0) as usize;
        self.latency[index.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The figures so far.
    pub fn score(&self) -> Score {
        let requests = self.requests.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let counts: Vec<u64> = (self.latency.iter())
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        let mut p99_ms = 0.0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if total > 0 && seen >= rank {
                // The bucket's upper edge.
                p99_ms = 0.1 * 2f64.powf((i + 1) as f64 / 4.0);
                break;
            }
        }
        Score {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p99_ms: (p99_ms * 1000.0).round() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_then_the_cookie_then_a_fresh_bucket() {
        let cookies = |lines: &'static [&'static str]| lines.iter().map(|l| l.as_bytes());
        assert_eq!(
            Ask::of(Some(b"always"), cookies(&["baton_canary=5"])),
            Ask::Always
        );
        assert_eq!(Ask::of(Some(b" never "), cookies(&[])), Ask::Never);
        assert_eq!(
            Ask::of(None, cookies(&["a=1; baton_canary=537; b=2"])),
            Ask::Bucket(537)
        );
        assert_eq!(
            Ask::of(None, cookies(&["x=1", "baton_canary=always"])),
            Ask::Always
        );
        assert_eq!(Ask::of(None, cookies(&["baton_canary=1000"])), Ask::Fresh);
        assert_eq!(Ask::of(None, cookies(&["baton_canaryx=3"])), Ask::Fresh);
        assert_eq!(Ask::of(Some(b"maybe"), cookies(&[])), Ask::Fresh);
    }

    #[test]
    fn buckets_below_the_share_go_to_the_canary_and_fresh_ones_get_a_cookie() {
        let split = Split::new("r2".into(), Vec::new(), 100, Default::default());
        assert_eq!(split.side(Ask::Bucket(99)), (Side::Canary, None));
        assert_eq!(split.side(Ask::Bucket(100)), (Side::Stable, None));
        assert_eq!(split.side(Ask::Always), (Side::Canary, None));
        let mut canary = 0;
        for _ in 0..10_000 {
            let (side, bucket) = split.side(Ask::Fresh);
            let bucket = bucket.expect("a fresh client gets a bucket");
            assert_eq!(side == Side::Canary, bucket < 100);
            canary += usize::from(side == Side::Canary);
        }
        // 10 % of 10 000, within what a fair draw allows (±5 sigma).
        assert!((850..=1150).contains(&canary), "{canary}");
    }

    #[test]
    fn a_score_counts_errors_and_finds_the_p99() {
        let card = Scorecard::default();
        for _ in 0..98 {
            card.record(false, Duration::from_millis(2));
        }
        card.record(true, Duration::from_millis(2));
        card.record(true, Duration::from_millis(400));
        let s = card.score();
        assert_eq!((s.requests, s.errors), (100, 2));
        assert!((s.error_rate - 0.02).abs() < 1e-9);
        // 99 of 100 took 2 ms: the p99 is the 2 ms bucket's edge.
        assert!((2.0..2.5).contains(&s.p99_ms), "{s:?}");
    }
}

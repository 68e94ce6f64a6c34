//! `[canary]`: how `baton deploy --canary` splits traffic and judges the
//! new release against the serving one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[canary]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The share of clients when `--canary` is given without one.
    #[serde(default = "default_share")]
    pub share: Percent,
    /// How long each step is watched before the next (or promotion).
    #[serde(default = "default_duration", with = "humantime_serde")]
    pub duration: Duration,
    /// The canary's error rate (5xx, resets, timeouts) may exceed the
    /// stable release's by this much; more is a rollback.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: Percent,
    /// Canary p99 / stable p99 above this is a rollback (when the two
    /// differ by more than [`P99_SLACK`]: a ratio of two tiny latencies is
    /// noise).
    #[serde(default = "default_max_p99_ratio")]
    pub max_p99_ratio: f64,
    /// No verdict before the canary has answered this many requests in a
    /// step.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

/// Latencies this close are never a reason to roll back, whatever their
/// ratio: 2 ms against 3 ms is noise, not a slow release.
pub const P99_SLACK: Duration = Duration::from_millis(10);

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            share: default_share(),
            duration: default_duration(),
            max_error_rate: default_max_error_rate(),
            max_p99_ratio: default_max_p99_ratio(),
            min_requests: default_min_requests(),
        }
    }
}

fn default_share() -> Percent {
    Percent(10.0)
}
fn default_duration() -> Duration {
    Duration::from_secs(300)
}
fn default_max_error_rate() -> Percent {
    Percent(1.0)
}
fn default_max_p99_ratio() -> f64 {
    1.5
}
fn default_min_requests() -> u64 {
    200
}

/// A percentage, 0 to 100: `"10%"` (or `10`, or `"10"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(into = "String")]
pub struct Percent(pub f64);

impl Percent {
    /// Parses `"10%"`, `"10"` or `"2.5%"`.
    ///
    /// # Errors
    /// Anything else, or a value outside 0..=100.
    pub fn parse(text: &str) -> Result<Percent, String> {
        let number = text.trim().trim_end_matches('%').trim();
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a percentage like \"10%\""))?;
        Percent::new(value)
    }

    fn new(value: f64) -> Result<Percent, String> {
        if (0.0..=100.0).contains(&value) {
            Ok(Percent(value))
        } else {
            Err(format!("{value}% is not between 0% and 100%"))
        }
    }

    /// As a fraction, 0..=1.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl From<Percent> for String {
    fn from(p: Percent) -> String {
        format!("{}%", p.0)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Percent, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Number(f64),
            Text(String),
        }
        match Given::deserialize(d)? {
            Given::Number(n) => Percent::new(n),
            Given::Text(t) => Percent::parse(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_and_stay_in_range() {
        assert_eq!(Percent::parse("10%"), Ok(Percent(10.0)));
        assert_eq!(Percent::parse(" 2.5 % "), Ok(Percent(2.5)));
        assert_eq!(Percent::parse("50"), Ok(Percent(50.0)));
        assert!(Percent::parse("150%").unwrap_err().contains("between"));
        assert!(Percent::parse("ten").unwrap_err().contains("percentage"));
    }

    #[test]
    fn a_canary_section_reads_as_documented() {
        let c: CanaryConfig = toml::from_str(
            "share = \"5%\"\nduration = \"2m\"\nmax_error_rate = 2\nmax_p99_ratio = 2.0\nmin_requests = 50\n",
        )
        .unwrap();
        assert_eq!(c.share, Percent(5.0));
        assert_eq!(c.duration, Duration::from_secs(120));
        assert_eq!(c.max_error_rate, Percent(2.0));
        assert_eq!(c.min_requests, 50);
        let d = CanaryConfig::default();
        assert_eq!((d.share, d.min_requests), (Percent(10.0), 200));
    }
}

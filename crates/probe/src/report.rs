//! What a probe run saw, and the report made of it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An answer with this status; `version` if one was recognised.
    Answered {
        /// HTTP status.
        status: u16,
        /// Version seen in the header or body.
        version: Option<String>,
    },
    /// No answer: the error kind (`refused`, `reset`, `timeout`, `connect`, `other`).
    Error(&'static str),
}

impl Outcome {
    /// 2xx and 3xx answers are successes.
    pub(crate) fn ok(&self) -> bool {
        matches!(self, Outcome::Answered { status, .. } if *status < 400)
    }

    /// The failure kind, for the error table.
    pub(crate) fn failure_kind(&self) -> Option<String> {
        match self {
            Outcome::Answered { status, .. } if *status >= 500 => Some("5xx".into()),
            Outcome::Answered { status, .. } if *status >= 400 => Some("4xx".into()),
            Outcome::Answered { .. } => None,
            Outcome::Error(kind) => Some((*kind).to_string()),
        }
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// When it was due (open loop) or sent (closed loop), since the start.
    pub at: Duration,
    /// Latency from `at` to the end.
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// The report. Its JSON form is a stable interface (see the snapshot test).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Report {
    /// Target URL.
    pub url: String,
    /// Wall time of the run, in ms.
    pub duration_ms: u64,
    /// Requests finished.
    pub requests: u64,
    /// Successes (2xx, 3xx).
    pub ok: u64,
    /// Everything else.
    pub failed: u64,
    /// ok / requests, 0..1.
    pub success_rate: f64,
    /// Requests per second achieved.
    pub rps: f64,
    /// Answers by status code.
    pub status_codes: BTreeMap<String, u64>,
    /// Failures by kind: refused, reset, timeout, connect, 4xx, 5xx, other.
    pub errors: BTreeMap<String, u64>,
    /// Latency percentiles in ms.
    pub latency_ms: Latency,
    /// The longest stretch without a successful answer, in ms.
    pub longest_gap_ms: u64,
    /// When that stretch began, in ms since the start.
    pub longest_gap_start_ms: u64,
    /// Per-second counts.
    pub timeline: Vec<Second>,
    /// Versions that answered, in order of first appearance.
    pub versions: Vec<VersionSeen>,
    /// Each change of the answering version, in time order. Only a request
    /// sent after the current version took over can switch it, so answers
    /// to requests already in flight at a switch do not count as going back.
    pub switches: Vec<Switch>,
}

/// Latency percentiles, ms.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// One second of the timeline: the requests that ended in it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct Second {
    /// Seconds since the start.
    pub second: u64,
    /// Successes that second.
    pub ok: u64,
    /// Failures that second.
    pub failed: u64,
    /// Successes by the version that answered (those with one).
    pub versions: BTreeMap<String, u64>,
    /// The 99th percentile latency of that second's requests, ms.
    pub p99_ms: f64,
}

/// A version that answered.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct VersionSeen {
    /// The version string.
    pub version: String,
    /// How many answers.
    pub count: u64,
    /// How many of them were failures (4xx, 5xx).
    pub failed: u64,
    /// First answer, ms since the start.
    pub first_ms: u64,
    /// Last answer, ms since the start.
    pub last_ms: u64,
}

/// The answering version changed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Switch {
    /// When the first answer of the new version arrived, ms since the start.
    pub at_ms: u64,
    /// When that request was sent (open loop: when it was due), ms since
    /// the start.
    pub sent_ms: u64,
    /// Before.
    pub from: String,
    /// After.
    pub to: String,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Latency {
    /// The percentiles of `sorted` (ascending) latencies.
    pub(crate) fn of(sorted: &[Duration]) -> Latency {
        Latency {
            p50: percentile(sorted, 50.0),
            p90: percentile(sorted, 90.0),
            p99: percentile(sorted, 99.0),
            p999: percentile(sorted, 99.9),
            max: percentile(sorted, 100.0),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let d = sorted[rank.clamp(1, sorted.len()) - 1];
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Report {
    /// Builds the report from every sample of a run of length `elapsed`.
    pub(crate) fn build(url: &str, mut samples: Vec<Sample>, elapsed: Duration) -> Report {
        samples.sort_by_key(|s| s.at + s.latency);
        let requests = samples.len() as u64;
        let ok = samples.iter().filter(|s| s.outcome.ok()).count() as u64;
        let mut status_codes = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut timeline: BTreeMap<u64, (Second, Vec<Duration>)> = BTreeMap::new();
        for s in &samples {
            if let Outcome::Answered { status, .. } = &s.outcome {
                *status_codes.entry(status.to_string()).or_insert(0) += 1;
            }
            if let Some(kind) = s.outcome.failure_kind() {
                *errors.entry(kind).or_insert(0) += 1;
            }
            let (second, latencies) = timeline.entry((s.at + s.latency).as_secs()).or_default();
            latencies.push(s.latency);
            if s.outcome.ok() {
                second.ok += 1;
                if let Outcome::Answered {
                    version: Some(v), ..
                } = &s.outcome
                {
                    *second.versions.entry(v.clone()).or_insert(0) += 1;
                }
            } else {
                second.failed += 1;
            }
        }
        let last_second = elapsed
            .as_secs()
            .max(timeline.keys().last().copied().unwrap_or(0));
        let timeline = (0..=last_second)
            .filter_map(|n| {
                let seen = timeline.remove(&n);
                if seen.is_none() && n >= elapsed.as_secs().max(1) {
                    return None;
                }
                let (mut second, mut latencies) = seen.unwrap_or_default();
                latencies.sort();
                second.second = n;
                second.p99_ms = percentile(&latencies, 99.0);
                Some(second)
            })
            .collect();

        // The longest stretch between two successes (or the run's edges).
        // Samples are in the order they were sent; answers end in another.
        let mut ends: Vec<Duration> = samples
            .iter()
            .filter(|s| s.outcome.ok())
            .map(|s| s.at + s.latency)
            .collect();
        ends.sort();
        let mut gap = (Duration::ZERO, Duration::ZERO);
        let mut last_ok = Duration::ZERO;
        for end in ends {
            if end.saturating_sub(last_ok) > gap.1 {
                gap = (last_ok, end.saturating_sub(last_ok));
            }
            last_ok = end;
        }
        if elapsed.saturating_sub(last_ok) > gap.1 {
            gap = (last_ok, elapsed.saturating_sub(last_ok));
        }

        // A switch is a version answering a request that was sent after the
        // current version took over. An answer from the old version to a
        // request sent before that is a straggler, not a switch back.
        let mut versions: Vec<VersionSeen> = Vec::new();
        let mut switches = Vec::new();
        let mut current: Option<(String, Duration)> = None;
        for s in &samples {
            let Outcome::Answered {
                version: Some(v), ..
            } = &s.outcome
            else {
                continue;
            };
            let done = s.at + s.latency;
            let t = ms(done);
            let failed = u64::from(!s.outcome.ok());
            match versions.iter_mut().find(|x| &x.version == v) {
                Some(x) => {
                    x.count += 1;
                    x.failed += failed;
                    x.last_ms = t;
                }
                None => versions.push(VersionSeen {
                    version: v.clone(),
                    count: 1,
                    failed,
                    first_ms: t,
                    last_ms: t,
                }),
            }
            match &current {
                None => current = Some((v.clone(), done)),
                Some((cur, since)) if cur != v && s.at >= *since => {
                    switches.push(Switch {
                        at_ms: t,
                        sent_ms: ms(s.at),
                        from: cur.clone(),
                        to: v.clone(),
                    });
                    current = Some((v.clone(), done));
                }
                Some(_) => {}
            }
        }

        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort();
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            url: url.to_string(),
            duration_ms: ms(elapsed),
            requests,
            ok,
            failed: requests - ok,
            success_rate: if requests == 0 {
                0.0
            } else {
                ok as f64 / requests as f64
            },
            rps: (requests as f64 / secs * 10.0).round() / 10.0,
            status_codes,
            errors,
            latency_ms: Latency::of(&latencies),
            longest_gap_ms: ms(gap.1),
            longest_gap_start_ms: ms(gap.0),
            timeline,
            versions,
            switches,
        }
    }

    /// The human report.
    pub(crate) fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "probe {} for {:.1}s",
            self.url,
            self.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "  requests {}  ok {}  failed {}  success {:.3}%  {:.1} req/s",
            self.requests,
            self.ok,
            self.failed,
            self.success_rate * 100.0,
            self.rps
        );
        let codes: Vec<String> = self
            .status_codes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            out,
            "  status   {}",
            if codes.is_empty() {
                "-".into()
            } else {
                codes.join("  ")
            }
        );
        let errs: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            out,
            "  errors   {}",
            if errs.is_empty() {
                "none".into()
            } else {
                errs.join("  ")
            }
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "  latency  p50 {:.2}ms  p90 {:.2}ms  p99 {:.2}ms  p99.9 {:.2}ms  max {:.2}ms",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        let _ = writeln!(
            out,
            "  longest gap without success: {} ms (from {} ms)",
            self.longest_gap_ms, self.longest_gap_start_ms
        );
        for v in &self.versions {
            let _ = writeln!(
                out,
                "  version {:<12} {:>8} answers  {} ms .. {} ms",
                v.version, v.count, v.first_ms, v.last_ms
            );
        }
        // A canary alternates versions all along: the first few say it.
        const SHOWN: usize = 6;
        for s in self.switches.iter().take(SHOWN) {
            let _ = writeln!(out, "  switch   {} -> {} at {} ms", s.from, s.to, s.at_ms);
        }
        if self.switches.len() > SHOWN {
            let _ = writeln!(
                out,
                "  switch   … {} more (--json lists them all)",
                self.switches.len() - SHOWN
            );
        }
        let _ = writeln!(out, "  timeline (second: ok/failed)");
        let cells: Vec<String> = self
            .timeline
            .iter()
            .map(|s| format!("{}:{}/{}", s.second, s.ok, s.failed))
            .collect();
        for chunk in cells.chunks(8) {
            let _ = writeln!(out, "    {}", chunk.join("  "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, status: Option<u16>, version: Option<&str>) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            latency: Duration::from_millis(1),
            outcome: match status {
                Some(status) => Outcome::Answered {
                    status,
                    version: version.map(String::from),
                },
                None => Outcome::Error("refused"),
            },
        }
    }

    /// Counts, gaps and switches come out of the samples exactly.
    #[test]
    fn report_counts_gap_and_switch() {
        let mut s = vec![];
        for t in (0..1000).step_by(100) {
            s.push(sample(t, Some(200), Some("v1")));
        }
        for t in (1000..1500).step_by(100) {
            s.push(sample(t, None, None));
        }
        for t in (1500..3000).step_by(100) {
            s.push(sample(t, Some(200), Some("v2")));
        }
        s.push(sample(2950, Some(503), None));
        // Sent at 1400 (before v2 took over at 1501), answered by v1 at 1600:
        // a straggler, not a switch back.
        s.push(Sample {
            at: Duration::from_millis(1400),
            latency: Duration::from_millis(200),
            outcome: Outcome::Answered {
                status: 200,
                version: Some("v1".into()),
            },
        });
        // Sent at 2000 and answered by v1: that is going back.
        s.push(sample(2000, Some(200), Some("v1")));
        let r = Report::build("http://x/", s, Duration::from_secs(3));
        assert_eq!(r.requests, 33);
        assert_eq!(r.failed, 6);
        assert_eq!(r.errors.get("refused"), Some(&5));
        assert_eq!(r.errors.get("5xx"), Some(&1));
        assert_eq!(
            r.longest_gap_ms, 600,
            "from the last v1 answer at 901 to the first v2 at 1501"
        );
        assert_eq!(r.longest_gap_start_ms, 901);
        assert_eq!(r.switches.len(), 3, "{:?}", r.switches);
        assert_eq!(r.switches[0].at_ms, 1501);
        assert_eq!(
            (r.switches[1].to.as_str(), r.switches[1].at_ms),
            ("v1", 2001)
        );
        assert_eq!(r.switches[2].to, "v2");
        assert_eq!(r.versions.len(), 2);
        assert_eq!(r.timeline.len(), 3);
        assert_eq!(
            r.timeline[1],
            Second {
                second: 1,
                ok: 6,
                failed: 5,
                versions: [("v1".to_string(), 1), ("v2".to_string(), 5)].into(),
                p99_ms: 200.0,
            }
        );
    }

    /// A slow answer to an early request does not hide the answers that
    /// ended while it was in flight: the gap is between answers in the
    /// order they ended.
    #[test]
    fn the_longest_gap_is_between_answers_in_the_order_they_ended() {
        let mut s = vec![Sample {
            at: Duration::from_millis(50),
            latency: Duration::from_millis(2950),
            outcome: Outcome::Answered {
                status: 200,
                version: None,
            },
        }];
        for t in (100..2000).step_by(100) {
            s.push(sample(t, Some(200), None));
        }
        let r = Report::build("http://x/", s, Duration::from_secs(3));
        assert_eq!((r.longest_gap_start_ms, r.longest_gap_ms), (1901, 1099));
    }
}

//! `baton deploy --canary`: the new release's instances start beside the
//! serving ones, a share of the clients goes to them (sticky by cookie),
//! and Baton judges them against the serving release over each step:
//! error rate and p99, from the same window. Healthy after the last step
//! (or at `baton promote`), the canary is promoted by an ordinary switch
//! and drain; worse than the thresholds (or at `baton abort`, or when one
//! of its instances dies), its share goes back to the serving release at
//! once, its instances drain and stop, and the deploy fails with the
//! figures that decided it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::phase::Phase;
use super::{first_to_leave, plural, stop_all, wait_drained, Deploy, DeployError, Runtime};
use crate::config::{CanaryConfig, P99_SLACK};
use crate::protocol::{CanaryAsk, CanaryOrder};
use crate::proxy::split::{Score, Scorecard, Side, BUCKETS};
use crate::release::Release;
use crate::supervisor::Instance;

/// A canary as the app runs it, step by step.
#[derive(Clone)]
pub struct Canary {
    /// The release tried.
    pub release: Release,
    /// Its instances, started and ready before the first step.
    pub instances: Vec<Instance>,
    /// Buckets (of [`BUCKETS`]) of clients sent to it.
    pub share: u16,
    /// Both sides' figures over the current step: `[stable, canary]`.
    pub scores: Arc<[Scorecard; 2]>,
    /// The current step, from 1.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
}

/// What a canary deploy does: the shares of its steps, how long each is
/// watched, and what counts as worse.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Buckets per step, in order; promotion follows the last.
    pub steps: Vec<u16>,
    /// How long each step is watched.
    pub step_for: Duration,
    /// The canary's error rate may exceed the stable one's by this.
    pub max_error_rate: f64,
    /// Canary p99 / stable p99 above this is worse.
    pub max_p99_ratio: f64,
    /// No verdict before the canary has answered this many in a step.
    pub min_requests: u64,
}

impl Plan {
    /// The plan `ask` gives, `[canary]` filling what it leaves out.
    pub(crate) fn new(ask: &CanaryAsk, config: &CanaryConfig) -> Plan {
        let buckets =
            |percent: f64| (percent.clamp(0.0, 100.0) * f64::from(BUCKETS) / 100.0).round() as u16;
        let steps = if ask.steps.is_empty() {
            vec![buckets(ask.share.unwrap_or(config.share.0))]
        } else {
            ask.steps.iter().copied().map(buckets).collect()
        };
        Plan {
            steps,
            step_for: ask.step_ms.map_or(config.duration, Duration::from_millis),
            max_error_rate: config.max_error_rate.fraction(),
            max_p99_ratio: config.max_p99_ratio,
            min_requests: config.min_requests,
        }
    }

    /// Why `canary` is worse than `stable`, when it is (and has answered
    /// enough to say).
    pub(crate) fn worse(&self, stable: &Score, canary: &Score) -> Option<String> {
        if canary.requests < self.min_requests {
            return None;
        }
        if canary.error_rate > stable.error_rate + self.max_error_rate {
            return Some(format!(
                "error rate {:.1}% against the stable release's {:.1}% (allowed: {:.1} points more)",
                canary.error_rate * 100.0,
                stable.error_rate * 100.0,
                self.max_error_rate * 100.0
            ));
        }
        let slack = P99_SLACK.as_secs_f64() * 1000.0;
        if stable.p99_ms > 0.0
            && canary.p99_ms > stable.p99_ms * self.max_p99_ratio
            && canary.p99_ms - stable.p99_ms > slack
        {
            return Some(format!(
                "p99 {} ms against the stable release's {} ms (allowed: {}×)",
                canary.p99_ms, stable.p99_ms, self.max_p99_ratio
            ));
        }
        None
    }
}

/// Both sides' figures, for a report.
fn figures(stable: &Score, canary: &Score) -> String {
    format!(
        "canary {} requests, {:.1}% errors, p99 {} ms; stable {} requests, {:.1}% errors, p99 {} ms",
        canary.requests,
        canary.error_rate * 100.0,
        canary.p99_ms,
        stable.requests,
        stable.error_rate * 100.0,
        stable.p99_ms
    )
}

/// How a step ended.
enum StepEnd {
    /// Watched for its time, with enough requests, and not worse.
    Healthy,
    /// `baton promote`.
    Promote,
    /// Worse than the thresholds, dead, or `baton abort`: why.
    Fail(String),
}

impl<R: Runtime> Deploy<R> {
    /// A canary deploy of `release` (see the module).
    pub(super) async fn canary(
        &mut self,
        release: Release,
        plan: Plan,
    ) -> Result<String, DeployError> {
        let count = release.config.config.web.instance_count();
        let fresh = self.start_ready(&release, count).await?;
        let mut orders = self.app.canary_orders();
        let steps = plan.steps.len();
        for (n, share) in plan.steps.iter().copied().enumerate() {
            let scores: Arc<[Scorecard; 2]> = Arc::default();
            self.app.set_canary(Canary {
                release: release.clone(),
                instances: fresh.clone(),
                share,
                scores: scores.clone(),
                step: n + 1,
                steps,
            });
            self.to(
                Phase::Canary,
                format!(
                    "canary step {}/{steps}: {}% of clients on release {} for {}",
                    n + 1,
                    f64::from(share) * 100.0 / f64::from(BUCKETS),
                    release.id,
                    humantime::format_duration(plan.step_for)
                ),
            );
            let end = self.watch_step(&plan, &fresh, &scores, &mut orders).await;
            let (stable, canary) = (
                scores[Side::Stable as usize].score(),
                scores[Side::Canary as usize].score(),
            );
            match end {
                StepEnd::Healthy => self.report.step(
                    Phase::Canary,
                    format!(
                        "step {}/{steps} healthy: {}",
                        n + 1,
                        figures(&stable, &canary)
                    ),
                ),
                StepEnd::Promote => {
                    self.report.step(
                        Phase::Canary,
                        format!("promoted by `baton promote`: {}", figures(&stable, &canary)),
                    );
                    break;
                }
                StepEnd::Fail(why) => {
                    return Err(self
                        .roll_back_canary(&release, &why, &stable, &canary)
                        .await);
                }
            }
        }
        self.report.step(
            Phase::Canary,
            format!("promoting release {}: all clients", release.id),
        );
        self.switch_and_drain(release, fresh).await
    }

    /// Watches one step: its time, with at least `min_requests` answered by
    /// the canary, or a verdict, an order or a death before that.
    async fn watch_step(
        &self,
        plan: &Plan,
        fresh: &[Instance],
        scores: &[Scorecard; 2],
        orders: &mut mpsc::UnboundedReceiver<CanaryOrder>,
    ) -> StepEnd {
        let ends = tokio::time::Instant::now() + plan.step_for;
        let mut judge = tokio::time::interval(Duration::from_millis(250));
        let mut waiting_said = false;
        let died = first_to_leave(fresh);
        tokio::pin!(died);
        loop {
            tokio::select! {
                order = orders.recv() => match order {
                    Some(CanaryOrder::Promote) => return StepEnd::Promote,
                    Some(CanaryOrder::Abort) => return StepEnd::Fail("aborted by `baton abort`".into()),
                    None => {}
                },
                why = &mut died => return StepEnd::Fail(format!("canary instance {why}")),
                _ = self.app.stopping().cancelled() => return StepEnd::Fail("the daemon is stopping".into()),
                _ = judge.tick() => {
                    let (stable, canary) = (scores[0].score(), scores[1].score());
                    if let Some(why) = plan.worse(&stable, &canary) {
                        return StepEnd::Fail(why);
                    }
                    if tokio::time::Instant::now() >= ends {
                        if canary.requests >= plan.min_requests {
                            return StepEnd::Healthy;
                        }
                        if !waiting_said {
                            waiting_said = true;
                            self.report.step(
                                Phase::Canary,
                                format!(
                                    "the step's time is up; waiting until the canary has answered {} requests ({} so far)",
                                    plan.min_requests, canary.requests
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    /// The canary failed: its share goes back to the stable release at
    /// once, its instances drain and stop. Returns the deploy's error.
    async fn roll_back_canary(
        &mut self,
        release: &Release,
        why: &str,
        stable: &Score,
        canary: &Score,
    ) -> DeployError {
        let instances = self.app.end_canary();
        self.report.step(
            Phase::Canary,
            format!(
                "rolling back: all clients on the stable release; draining {} canary instance{}",
                instances.len(),
                plural(instances.len())
            ),
        );
        let drain_timeout = release.config.config.web.drain_timeout;
        wait_drained(&instances, drain_timeout).await;
        stop_all(&instances).await;
        self.machine.advance(Phase::Failed);
        DeployError::NotReady(format!(
            "canary release {} rolled back: {why}; {}; the stable release serves every client",
            release.id,
            figures(stable, canary)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(requests: u64, errors: u64, p99_ms: f64) -> Score {
        Score {
            requests,
            errors,
            error_rate: errors as f64 / requests.max(1) as f64,
            p99_ms,
        }
    }

    fn plan() -> Plan {
        Plan::new(&CanaryAsk::default(), &CanaryConfig::default())
    }

    #[test]
    fn a_plan_takes_what_is_asked_and_the_rest_from_the_config() {
        let p = plan();
        assert_eq!(
            (p.steps.clone(), p.step_for),
            (vec![100], Duration::from_secs(300))
        );
        let ask = CanaryAsk {
            share: Some(20.0),
            step_ms: Some(3000),
            steps: vec![5.0, 25.0, 50.0],
        };
        let p = Plan::new(&ask, &CanaryConfig::default());
        assert_eq!(p.steps, vec![50, 250, 500]);
        assert_eq!(p.step_for, Duration::from_secs(3));
    }

    #[test]
    fn worse_needs_enough_requests_and_a_margin() {
        let p = plan();
        let stable = score(1000, 2, 5.0);
        assert_eq!(
            p.worse(&stable, &score(100, 50, 5.0)),
            None,
            "too few to judge"
        );
        assert!(p
            .worse(&stable, &score(300, 60, 5.0))
            .unwrap()
            .contains("error rate 20.0%"));
        assert_eq!(
            p.worse(&stable, &score(300, 3, 5.0)),
            None,
            "1% within 0.2% + 1"
        );
        assert_eq!(
            p.worse(&stable, &score(300, 0, 9.0)),
            None,
            "slower, but within 10 ms"
        );
        assert!(p
            .worse(&stable, &score(300, 0, 40.0))
            .unwrap()
            .contains("p99 40 ms"));
    }
}

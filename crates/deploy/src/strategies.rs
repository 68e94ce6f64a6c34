//! Starting, switching, draining and stopping: blue-green, rolling,
//! scale, and the revert of a release that dies after the switch.

use crate::config::DrainNotice;
use crate::phase::Phase;
use crate::protocol::plural;
use crate::release::Release;
use crate::runtime::Runtime;
use crate::supervisor::Instance;
use crate::*;
use std::time::Duration;

impl<R: Runtime> Deploy<R> {
    /// Starts `count` instances of `release` and waits until all are ready.
    /// On a failure, stops every one of them and says why.
    pub(crate) async fn start_ready(
        &mut self,
        release: &Release,
        count: u32,
    ) -> Result<Vec<Instance>, DeployError> {
        self.to(
            Phase::Starting,
            format!(
                "starting {count} new instance{} of release {}",
                plural(count as usize),
                release.id
            ),
        );
        let mut started = Vec::new();
        for _ in 0..count {
            match self.app.start_instance(release) {
                Ok(i) => started.push(i),
                Err(e) => {
                    stop_all(&started).await;
                    self.machine.advance(Phase::Failed);
                    return Err(DeployError::NotReady(format!(
                        "cannot start an instance: {e}"
                    )));
                }
            }
        }
        let mut waits: futures_util::stream::FuturesUnordered<_> = started
            .iter()
            .cloned()
            .map(|i| async move { (i.id.clone(), i.wait_ready().await) })
            .collect();
        let mut ready = 0;
        use futures_util::StreamExt;
        while let Some((id, outcome)) = waits.next().await {
            match outcome {
                Ok(()) => {
                    ready += 1;
                    self.report
                        .step(Phase::Starting, format!("ready {ready}/{count} ({id})"));
                }
                Err(status) => {
                    drop(waits);
                    self.report.step(
                        Phase::Starting,
                        format!("{id} did not become ready; stopping the new instances"),
                    );
                    stop_all(&started).await;
                    self.machine.advance(Phase::Failed);
                    let why = status.reason.unwrap_or_else(|| "stopped".into());
                    let tail = started
                        .iter()
                        .find(|i| i.id == id)
                        .map(|i| i.tail(FAILURE_LINES))
                        .unwrap_or_default();
                    let mut msg = format!(
                        "release {} failed: {id} {why}; the previous release keeps serving",
                        release.id
                    );
                    if !why.contains("last lines") && !tail.is_empty() {
                        msg.push_str(&format!("\n  {}", tail.join("\n  ")));
                    }
                    return Err(DeployError::NotReady(msg));
                }
            }
        }
        Ok(started)
    }

    /// Replaces the singletons with `release`'s, and says so.
    pub(crate) async fn hand_over_singletons(&self, release: &Release) {
        hand_over_singletons(&*self.app, release, &self.report).await;
    }

    pub(crate) fn switch(&mut self, release: &Release, serving: Vec<Instance>) -> Vec<Instance> {
        let retired = self.app.swap(release.clone(), serving);
        if let Handover::AtTheSwitch = self.singletons {
            let (app, release, reporter) = (self.app.clone(), release.clone(), self.report.clone());
            self.singletons = Handover::Started(tokio::spawn(async move {
                hand_over_singletons(&*app, &release, &reporter).await;
            }));
        }
        if let Some(notice) = release.config.config.web.drain_notice {
            for i in &retired {
                match notice {
                    DrainNotice::Ipc => i.send_message(serde_json::json!({ "type": "drain" })),
                    DrainNotice::Signal(signal) => i.signal(signal),
                }
            }
        }
        self.to(
            Phase::Switching,
            format!(
                "switched to release {} after {} ms",
                release.id,
                self.began.elapsed().as_millis()
            ),
        );
        retired
    }

    /// Waits until the proxy has seen the last request of `retired` finish
    /// (or `drain_timeout`), then stops them.
    pub(crate) async fn drain_and_stop(&mut self, retired: &[Instance], drain_timeout: Duration) {
        self.to(
            Phase::Draining,
            format!(
                "draining {} in flight on {} old instance{}",
                in_flight(retired),
                retired.len(),
                plural(retired.len())
            ),
        );
        self.stop_drained(retired, drain_timeout).await;
    }

    /// The second half of [`Deploy::drain_and_stop`], once in `Draining`.
    pub(crate) async fn stop_drained(&mut self, retired: &[Instance], drain_timeout: Duration) {
        wait_drained(retired, drain_timeout).await;
        let left = in_flight(retired);
        if left > 0 {
            self.report.step(
                Phase::Draining,
                format!("drain_timeout reached with {left} still in flight"),
            );
        }
        // Instances that still hold WebSocket or TCP connections keep them,
        // in the background, for connection_drain_timeout.
        let (busy, idle): (Vec<Instance>, Vec<Instance>) = retired
            .iter()
            .cloned()
            .partition(|i| i.upstream.connections() > 0);
        self.to(
            Phase::Stopping,
            format!("stopping {} old instance{}", idle.len(), plural(idle.len())),
        );
        stop_all(&idle).await;
        self.app.forget_drained(&idle);
        if busy.is_empty() {
            self.report.step(Phase::Stopping, "old stopped".into());
            return;
        }
        let timeout = self.app.config().config.web.connection_drain_timeout;
        let open: usize = busy.iter().map(|i| i.upstream.connections()).sum();
        self.report.step(
            Phase::Stopping,
            format!(
                "{} old instance{} keep {open} open connection{} for up to {} (connection_drain_timeout), then close them (WebSocket 1001, TCP FIN)",
                busy.len(),
                plural(busy.len()),
                plural(open),
                humantime::format_duration(timeout)
            ),
        );
        tokio::spawn(drain_connections(self.app.clone(), busy, timeout));
    }

    pub(crate) async fn blue_green(&mut self, release: Release) -> Result<String, DeployError> {
        let count = release.config.config.web.instance_count();
        let fresh = self.start_ready(&release, count).await?;
        self.switch_and_drain(release, fresh).await
    }

    /// Makes `fresh` (ready instances of `release`) the serving set, watches
    /// it for `watch_after_switch` (a death hands traffic back), then drains
    /// and stops the old set.
    pub(crate) async fn switch_and_drain(
        &mut self,
        release: Release,
        fresh: Vec<Instance>,
    ) -> Result<String, DeployError> {
        let web = &release.config.config.web;
        let drain_timeout = web.drain_timeout;
        let watch_window = web.watch_after_switch.max(web.min_uptime);
        let previous = self.app.current_release();
        let retired = self.switch(&release, fresh.clone());
        let switch_ms = self.began.elapsed().as_millis();
        if retired.is_empty() {
            return self.done(&release, switch_ms);
        }
        self.to(
            Phase::Draining,
            format!(
                "draining {} in flight on {} old instance{}",
                in_flight(&retired),
                retired.len(),
                plural(retired.len())
            ),
        );
        // The old set keeps running until the new one has stayed up for
        // watch_after_switch, so a release that dies in its first seconds
        // hands traffic straight back.
        self.report.step(
            Phase::Draining,
            format!(
                "watching the new instances for {} (watch_after_switch) before the old ones stop",
                humantime::format_duration(watch_window)
            ),
        );
        if let (Err(why), Some(previous)) = (stays_up(&fresh, watch_window).await, previous) {
            self.app.swap(previous, retired);
            stop_all(&fresh).await;
            self.app.forget_drained(&fresh);
            self.machine.advance(Phase::Failed);
            return Err(DeployError::NotReady(format!(
                "release {} failed after the switch: {why}; traffic went back to the previous release",
                release.id
            )));
        }
        self.stop_drained(&retired, drain_timeout).await;
        self.done(&release, switch_ms)
    }

    pub(crate) async fn rolling(&mut self, release: Release) -> Result<String, DeployError> {
        let web = &release.config.config.web;
        let count = web.instance_count() as usize;
        let surge = (*web.max_surge.get_ref() as usize).max(1);
        let drain_timeout = web.drain_timeout;
        let batch_window = web.min_uptime;
        let watch_window = web.watch_after_switch.max(web.min_uptime);
        let previous = self.app.current_release();
        let mut old = self.app.serving();
        let mut fresh: Vec<Instance> = Vec::new();
        let mut retired_all = Vec::new();
        let mut switch_ms = None;
        while fresh.len() < count {
            let batch = surge.min(count - fresh.len());
            let new = match self.start_ready(&release, batch as u32).await {
                Ok(n) => n,
                Err(e) => {
                    self.revert(previous.as_ref(), &old, &retired_all, &fresh)
                        .await;
                    return Err(e);
                }
            };
            fresh.extend(new.iter().cloned());
            old.drain(..batch.min(old.len()));
            let mut serving = old.clone();
            serving.extend(fresh.iter().cloned());
            retired_all.extend(self.switch(&release, serving));
            switch_ms.get_or_insert(self.began.elapsed().as_millis());
            // A batch must stay up for min_uptime before the next one goes,
            // and the last one for watch_after_switch: the old instances
            // it replaced are still running until the end.
            let window = if fresh.len() < count {
                batch_window
            } else {
                watch_window
            };
            if let Err(why) = stays_up(&fresh, window).await {
                self.revert(previous.as_ref(), &old, &retired_all, &fresh)
                    .await;
                self.machine.advance(Phase::Failed);
                return Err(DeployError::NotReady(format!(
                    "release {} failed after a rolling switch: {why}; traffic went back to the previous release",
                    release.id
                )));
            }
        }
        // Instances beyond the new count (scaling down in the same deploy).
        if !old.is_empty() {
            let serving = fresh.clone();
            retired_all.extend(self.app.swap(release.clone(), serving));
        }
        if !retired_all.is_empty() {
            self.drain_and_stop(&retired_all, drain_timeout).await;
        }
        self.done(&release, switch_ms.unwrap_or(0))
    }

    /// Undoes a rolling deploy's batches: the old instances (the ones not
    /// yet replaced and the retired ones, all still running) serve again,
    /// and the new ones stop.
    pub(crate) async fn revert(
        &self,
        previous: Option<&Release>,
        not_replaced: &[Instance],
        retired: &[Instance],
        fresh: &[Instance],
    ) {
        if fresh.is_empty() {
            return;
        }
        if let Some(previous) = previous {
            let mut back = not_replaced.to_vec();
            back.extend(retired.iter().cloned());
            self.app.swap(previous.clone(), back);
        }
        stop_all(fresh).await;
        self.app.forget_drained(fresh);
    }

    /// Starts a fresh instance of `release`, and once it is ready swaps it
    /// in for `id`, which then drains and stops.
    pub(crate) async fn replace(
        &mut self,
        release: Release,
        id: &str,
        why: &str,
    ) -> Result<String, DeployError> {
        if let Some(singleton) = self.app.singletons().into_iter().find(|i| &*i.id == id) {
            // A singleton takes no traffic, and two must never run at once:
            // handing its role to a fresh process means stopping it first.
            self.to(Phase::Switching, format!("restarting {id}: {why}"));
            let report = &self.report;
            let report = |m| report.step(Phase::Switching, m);
            self.app
                .restart_singleton(&release, &singleton, &report)
                .await;
            let ms = self.began.elapsed().as_millis();
            return self.done(&release, ms);
        }
        let serving = self.app.serving();
        if !serving.iter().any(|i| &*i.id == id) {
            return Err(DeployError::NoTarget(format!("{id} no longer serves")));
        }
        self.report
            .step(Phase::Preparing, format!("replacing {id}: {why}"));
        let fresh = self.start_ready(&release, 1).await?;
        let mut next: Vec<Instance> = serving.into_iter().filter(|i| &*i.id != id).collect();
        next.extend(fresh);
        let retired = self.switch(&release, next);
        let ms = self.began.elapsed().as_millis();
        self.drain_and_stop(&retired, release.config.config.web.drain_timeout)
            .await;
        self.done(&release, ms)
    }

    pub(crate) async fn scale(&mut self, release: Release) -> Result<String, DeployError> {
        let want = release.config.config.web.instance_count() as usize;
        let serving = self.app.serving();
        let drain_timeout = release.config.config.web.drain_timeout;
        if want > serving.len() {
            let added = self
                .start_ready(&release, (want - serving.len()) as u32)
                .await?;
            let mut all = serving;
            all.extend(added);
            self.switch(&release, all);
            let ms = self.began.elapsed().as_millis();
            self.done(&release, ms)
        } else {
            let keep: Vec<Instance> = serving.iter().take(want).cloned().collect();
            let retired = self.switch(&release, keep);
            let ms = self.began.elapsed().as_millis();
            if !retired.is_empty() {
                self.drain_and_stop(&retired, drain_timeout).await;
            }
            self.done(&release, ms)
        }
    }
}

//! An app's canary: the release tried beside the serving one, its share in
//! the route table, and the orders (`baton promote`, `baton abort`) that
//! reach the deploy running it.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::App;
use crate::deploy::canary::Canary;
use crate::protocol::{CanaryOrder, CanaryReport};
use crate::proxy::split::{Side, Split, BUCKETS};
use crate::supervisor::{Instance, State};

impl App {
    /// Runs `canary` beside the serving set, or moves it to its next step;
    /// the route table changes at once.
    pub(crate) fn set_canary(&self, canary: Canary) {
        self.fleet().canary = Some(canary);
        self.publish_routes();
    }

    /// Ends the canary: the split goes from the route table at once, and
    /// its instances are handed back (to be stopped, or to serve).
    pub(crate) fn end_canary(&self) -> Vec<Instance> {
        *self.canary_orders.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let ended = self.fleet().canary.take();
        self.publish_routes();
        ended.map(|c| c.instances).unwrap_or_default()
    }

    /// The orders `baton promote` and `baton abort` give the canary that
    /// the caller runs.
    pub(crate) fn canary_orders(&self) -> mpsc::UnboundedReceiver<CanaryOrder> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.canary_orders.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Passes `order` to the running canary.
    ///
    /// # Errors
    /// When no canary runs.
    pub(crate) fn order_canary(&self, order: CanaryOrder) -> Result<(), String> {
        let orders = self.canary_orders.lock().unwrap_or_else(|e| e.into_inner());
        match orders.as_ref().map(|tx| tx.send(order)) {
            Some(Ok(())) => Ok(()),
            _ => Err(format!("no canary of {} is running", self.name)),
        }
    }

    /// The canary as `baton status` shows it.
    pub(crate) fn canary_report(&self) -> Option<CanaryReport> {
        let fleet = self.fleet();
        let canary = fleet.canary.as_ref()?;
        Some(CanaryReport {
            release: canary.release.id.clone(),
            share_percent: f64::from(canary.share) * 100.0 / f64::from(BUCKETS),
            step: canary.step,
            steps: canary.steps,
            stable: canary.scores[Side::Stable as usize].score(),
            canary: canary.scores[Side::Canary as usize].score(),
        })
    }
}

/// The split the route table carries for a canary: its ready instances,
/// its share and its scores.
pub(super) fn split_of(canary: Option<&Canary>) -> Option<Arc<Split>> {
    let canary = canary?;
    let ready = (canary.instances.iter())
        .filter(|i| matches!(i.status().state, State::Ready))
        .map(|i| i.upstream.clone())
        .collect();
    Some(Arc::new(Split::new(
        canary.release.id.as_str().into(),
        ready,
        canary.share,
        canary.scores.clone(),
    )))
}

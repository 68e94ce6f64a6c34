//! What the deploy machine needs of an app, and nothing more: [`crate::app::App`]
//! is the real one, and the unit tests drive the machine against a fake.

use std::future::Future;
use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::canary::Canary;
use crate::protocol::CanaryOrder;

use crate::config::Loaded;
use crate::release::Release;
use crate::supervisor::Instance;

/// A step report for the progress stream.
pub type Report<'a> = &'a (dyn Fn(String) + Send + Sync);

/// One app as a deploy sees it: its configuration, its instances and its
/// release history.
pub trait Runtime: Send + Sync + 'static {
    /// The configuration in force.
    fn config(&self) -> Loaded;
    /// The app's own baton.toml: what a deploy without a source releases.
    fn config_file(&self) -> PathBuf;
    /// Replaces the configuration in force, after a deploy.
    fn set_config(&self, loaded: Loaded);
    /// The release serving traffic.
    fn current_release(&self) -> Option<Release>;
    /// The instances serving traffic.
    fn serving(&self) -> Vec<Instance>;
    /// The singletons running.
    fn singletons(&self) -> Vec<Instance>;
    /// Starts one web instance of `release`; it takes no traffic until a
    /// swap names it.
    ///
    /// # Errors
    /// When it cannot be started at all (no private port).
    fn start_instance(&self, release: &Release) -> std::io::Result<Instance>;
    /// Makes `instances` the serving set (route table published at once);
    /// returns those that left it, now draining.
    fn swap(&self, release: Release, instances: Vec<Instance>) -> Vec<Instance>;
    /// Drops stopped instances from the draining list.
    fn forget_drained(&self, gone: &[Instance]);
    /// Describes the deploy in progress (None once it ends).
    fn set_deploying(&self, what: Option<String>);
    /// Remembers a release (again: a failed one is marked so).
    fn record_release(&self, release: Release);
    /// Forgets a release whose folder was pruned.
    fn forget_release(&self, id: &str);
    /// A release by id, or the last good one before the current one.
    fn rollback_target(&self, id: Option<&str>) -> Option<Release>;
    /// Replaces the singletons with `release`'s, each old one stopped
    /// before its new one starts.
    fn replace_singletons(
        &self,
        release: &Release,
        report: Report<'_>,
    ) -> impl Future<Output = ()> + Send;
    /// Gives the singleton `old` a fresh process of `release`, stopping it
    /// first.
    fn restart_singleton(
        &self,
        release: &Release,
        old: &Instance,
        report: Report<'_>,
    ) -> impl Future<Output = ()> + Send;
    /// Cancelled when the app stops.
    fn stopping(&self) -> &CancellationToken;
    /// Runs `canary` beside the serving set, or moves it to its next
    /// step; the route table changes at once.
    fn set_canary(&self, canary: Canary);
    /// Ends the canary (its share goes back at once) and hands back its
    /// instances.
    fn end_canary(&self) -> Vec<Instance>;
    /// The orders `baton promote` and `baton abort` give the canary.
    fn canary_orders(&self) -> mpsc::UnboundedReceiver<CanaryOrder>;
}

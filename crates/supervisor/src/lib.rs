//! The supervisor: spawns instances in their own process groups, captures
//! their output, decides when they are ready, restarts crashes with backoff,
//! and stops them (stop signal, then SIGKILL).
//!
//! - [`instance`]: the task that owns one instance's lifecycle, and its handle.
//! - [`readiness`]: the `http`, `tcp`, `node-ipc` and `notify` checks.
//! - [`spawn`]: process group, parent-death signal, Node IPC fd.
//! - [`logs`]: line capture, prefixes, files, followers.
//! - [`limits`]: the fd limit: raised for the daemon, restored for children.
//! - [`oneoff`]: a command run once to its end (cron jobs), spawned as
//!   instances are.
//! - [`ports`]: private port hand-out.
//! - [`reaper`]: the helper that kills orphans if the daemon is killed.
//! - [`procfs`]: everything read from /proc: CPU and memory per instance,
//!   the members of a process group, whether a process runs.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use baton_config as config;
use baton_logs as logs;
use baton_protocol as protocol;
use baton_proxy as proxy;

pub mod instance;
pub mod limits;
pub mod oneoff;
pub mod ports;
pub mod procfs;
pub(crate) mod readiness;
pub mod reaper;
pub(crate) mod spawn;
pub mod sys;

pub use instance::{Context, Instance, InstanceSpec, State, Status};

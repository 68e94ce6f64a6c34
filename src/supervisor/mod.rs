//! The supervisor: spawns instances in their own process groups, captures
//! their output, decides when they are ready, restarts crashes with backoff,
//! and stops them (stop signal, then SIGKILL).
//!
//! - [`instance`]: the task that owns one instance's lifecycle, and its handle.
//! - [`readiness`]: the `http`, `tcp`, `node-ipc` and `notify` checks.
//! - [`spawn`]: process group, parent-death signal, Node IPC fd.
//! - [`logs`]: line capture, prefixes, files, followers.
//! - [`ports`]: private port hand-out.
//! - [`reaper`]: the helper that kills orphans if the daemon is killed.
//! - [`usage`]: CPU and memory per instance, and whether a process runs,
//!   from /proc.

pub mod instance;
pub mod logs;
pub mod ports;
pub mod readiness;
pub mod reaper;
pub mod spawn;
pub mod usage;

pub use instance::{Context, Instance, InstanceSpec, State, Status};

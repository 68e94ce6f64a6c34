//! # Baton
//!
//! Deploys, reloads and rolls back web apps on one server with zero failed
//! requests. Baton owns the public socket; apps listen on private ports it
//! hands them; its proxy decides per request which instance answers.
//!
//! # Layout
//! - [`config`]: `baton.toml`, defaults, and line-numbered errors.
//! - [`supervisor`]: instances as child process groups: spawn, readiness,
//!   restarts, logs, stop.
//! - [`proxy`]: the public listeners, route table, hold queue and retries.
//! - [`release`]: release folders, unpacking, build hook, `current`, inbox.
//! - [`schedule`]: cron jobs run by Baton itself.
//! - [`deploy`]: the deploy / reload / rollback state machine, and the one
//!   task per app that runs deploys.
//! - [`app`]: one app: its instances, releases, configuration and deploy
//!   owner.
//! - [`daemon`]: the long-running process: listeners, signals, the control
//!   API, and the map of apps.
//! - [`protocol`]: the control API's messages, shared by the daemon and
//!   the CLI.
//! - [`probe`]: the load-and-verify client (`baton probe`).
//! - [`cli`]: the `baton` command line, a thin client of the control API.

#![warn(missing_docs, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod fleet;
pub mod logs;
pub mod probe;
pub mod protocol;
pub mod proxy;
pub mod release;
pub mod schedule;
pub mod supervisor;
pub mod tls;

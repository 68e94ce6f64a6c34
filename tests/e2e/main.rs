//! Baton's end-to-end tests, one binary (as ripgrep has them): each
//! module an area, all on the shared harness in `common`, which compiles
//! once. They run the real `baton` binary against real Node apps, curl,
//! nginx, HAProxy, sshd and Pebble.
//!
//! One area: `cargo test --test e2e deploy::`. The fuzz targets' corpus
//! replay is `fuzz::`; `fuzz/run.sh` fuzzes for longer.

mod common;

mod access_log;
mod acme;
mod answer_framing;
mod canary;
mod cli_docs;
mod connections;
mod core;
mod deploy;
mod faults;
mod fleet;
mod framing;
mod fuzz;
mod import;
mod layout;
mod probe;
mod proxy;
mod releases;
mod retries;
mod server;
mod singletons;
mod statics;
mod stopping;
mod tls;
mod upgrade;

//! `GET /status`, `GET /releases`, and Prometheus `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use crate::daemon::protocol::{ReleaseReport, StatusReport};
use crate::daemon::Daemon;
use crate::supervisor::State as InstanceState;

/// Every instance and the release serving.
pub async fn status(State(daemon): State<Arc<Daemon>>) -> Json<StatusReport> {
    Json(daemon.status())
}

/// Known releases.
pub async fn releases(State(daemon): State<Arc<Daemon>>) -> Json<Vec<ReleaseReport>> {
    Json(daemon.releases())
}

/// Prometheus text exposition.
pub async fn metrics(State(daemon): State<Arc<Daemon>>) -> String {
    let status = daemon.status();
    let stats = &daemon.proxy.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP baton_responses_total Responses sent to clients, by status class."
    );
    let _ = writeln!(out, "# TYPE baton_responses_total counter");
    for (class, n) in stats.responses.iter().enumerate().skip(1) {
        let _ = writeln!(
            out,
            "baton_responses_total{{class=\"{class}xx\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP baton_retries_total Requests retried on another instance."
    );
    let _ = writeln!(out, "# TYPE baton_retries_total counter");
    let _ = writeln!(
        out,
        "baton_retries_total {}",
        stats.retries.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP baton_held_total Requests that waited for a ready instance."
    );
    let _ = writeln!(out, "# TYPE baton_held_total counter");
    let _ = writeln!(out, "baton_held_total {}", daemon.proxy.router.held());
    let _ = writeln!(
        out,
        "# HELP baton_instance_in_flight Requests in flight per instance."
    );
    let _ = writeln!(out, "# TYPE baton_instance_in_flight gauge");
    for i in &status.instances {
        let _ = writeln!(
            out,
            "baton_instance_in_flight{{instance=\"{}\",release=\"{}\"}} {}",
            i.instance, i.release, i.counts.in_flight
        );
    }
    let _ = writeln!(
        out,
        "# HELP baton_instance_restarts_total Crash restarts per instance."
    );
    let _ = writeln!(out, "# TYPE baton_instance_restarts_total counter");
    for i in &status.instances {
        let _ = writeln!(
            out,
            "baton_instance_restarts_total{{instance=\"{}\",release=\"{}\"}} {}",
            i.instance, i.release, i.restarts
        );
    }
    let ready = status
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Ready)
        .count();
    let _ = writeln!(
        out,
        "# HELP baton_instances_ready Instances taking traffic."
    );
    let _ = writeln!(out, "# TYPE baton_instances_ready gauge");
    let _ = writeln!(out, "baton_instances_ready {ready}");
    out
}

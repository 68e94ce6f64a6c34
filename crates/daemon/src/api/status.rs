//! `GET /status`, `GET /releases`, and Prometheus `GET /metrics`
//! (prometheus-client's OpenMetrics text).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, AppQuery};
use crate::logs::LOG_HEALTH;
use crate::protocol::{CertificateReport, CertificateState, ReleaseReport, StatusReport};
use crate::supervisor::State as InstanceState;
use crate::Daemon;

/// Every instance of an app and the release serving.
pub(crate) async fn status(
    State(daemon): State<Arc<Daemon>>,
    Query(q): Query<AppQuery>,
) -> Result<Json<StatusReport>, ApiError> {
    let app = daemon.pick(q.app.as_deref())?;
    Ok(Json(daemon.status_with_usage(&app).await))
}

/// Every app's status, in the server file's order.
pub(crate) async fn apps(State(daemon): State<Arc<Daemon>>) -> Json<Vec<StatusReport>> {
    let mut reports = Vec::new();
    for app in daemon.apps() {
        reports.push(daemon.status_with_usage(&app).await);
    }
    Json(reports)
}

/// An app's known releases.
pub(crate) async fn releases(
    State(daemon): State<Arc<Daemon>>,
    Query(q): Query<AppQuery>,
) -> Result<Json<Vec<ReleaseReport>>, ApiError> {
    Ok(Json(daemon.pick(q.app.as_deref())?.releases()))
}

/// A running canary's share and both releases' figures over its step.
fn canaries(registry: &mut Registry, statuses: &[StatusReport]) {
    let share = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "canary_share_ratio",
        "The share of clients sent to a canary release, 0 to 1",
        share.clone(),
    );
    let requests = Family::<Labels, Gauge>::default();
    registry.register(
        "canary_step_requests",
        "Requests answered in the canary's current step, by release and side",
        requests.clone(),
    );
    let errors = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "canary_step_error_ratio",
        "5xx, resets and timeouts per request in the canary's current step, by release and side",
        errors.clone(),
    );
    let p99 = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "canary_step_p99_seconds",
        "99th percentile time to the answer's head in the canary's current step, by release and side",
        p99.clone(),
    );
    for s in statuses {
        let Some(c) = &s.canary else { continue };
        let stable = s.release.clone().unwrap_or_default();
        share
            .get_or_create(&vec![
                ("app".into(), s.app.clone()),
                ("release".into(), c.release.clone()),
            ])
            .set(c.share_percent / 100.0);
        for (side, release, score) in [
            ("stable", &stable, &c.stable),
            ("canary", &c.release, &c.canary),
        ] {
            let labels = vec![
                ("app".into(), s.app.clone()),
                ("release".into(), release.clone()),
                ("side".into(), side.into()),
            ];
            requests
                .get_or_create(&labels)
                .set(i64::try_from(score.requests).unwrap_or(i64::MAX));
            errors.get_or_create(&labels).set(score.error_rate);
            p99.get_or_create(&labels).set(score.p99_ms / 1000.0);
        }
    }
}

/// Prometheus metrics (OpenMetrics text), made from the live counts at
/// each scrape.
pub(crate) async fn metrics(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    let mut statuses = Vec::new();
    for app in daemon.apps() {
        statuses.push(daemon.status_with_usage(&app).await);
    }
    let stats = &daemon.proxy.stats;
    let mut registry = Registry::with_prefix("baton");

    let responses = Family::<Labels, Counter>::default();
    registry.register(
        "responses",
        "Responses sent to clients, by status class",
        responses.clone(),
    );
    for (class, n) in stats.responses.iter().enumerate().skip(1) {
        responses
            .get_or_create(&vec![("class".into(), format!("{class}xx"))])
            .inc_by(n.load(Ordering::Relaxed));
    }
    total(
        &mut registry,
        "retries",
        "Requests retried on another instance",
        stats.retries.load(Ordering::Relaxed),
    );
    total(
        &mut registry,
        "abandoned",
        "Requests whose client left before the answer; the instance's connection was closed (nginx's 499)",
        stats.abandoned.load(Ordering::Relaxed),
    );
    let log_errors = Family::<Labels, Counter>::default();
    registry.register(
        "log_write_errors",
        "Log lines not written: stdout failed, stdout not read fast enough (dropped), or a log file failed",
        log_errors.clone(),
    );
    for (target, n) in [
        ("stderr", &LOG_HEALTH.stderr_lost),
        ("stdout", &LOG_HEALTH.stdout_errors),
        ("stdout_dropped", &LOG_HEALTH.stdout_dropped),
        ("file", &LOG_HEALTH.file_errors),
    ] {
        log_errors
            .get_or_create(&vec![("target".into(), target.into())])
            .inc_by(n.load(Ordering::Relaxed));
    }
    total(
        &mut registry,
        "accept_errors",
        "Failed accepts on the public ports (EMFILE: out of file descriptors)",
        stats.accept_errors.load(Ordering::Relaxed),
    );
    total(
        &mut registry,
        "held",
        "Requests that waited for a ready instance",
        daemon.apps().iter().map(|a| a.router().held()).sum(),
    );

    let in_flight = Family::<Labels, Gauge>::default();
    registry.register(
        "instance_in_flight",
        "Requests in flight per instance",
        in_flight.clone(),
    );
    let connections = Family::<Labels, Gauge>::default();
    registry.register(
        "instance_connections",
        "Upgraded, SSE and TCP connections per instance",
        connections.clone(),
    );
    let restarts = Family::<Labels, Counter>::default();
    registry.register(
        "instance_restarts",
        "Crash restarts per instance",
        restarts.clone(),
    );
    let memory = Family::<Labels, Gauge>::default();
    registry.register(
        "instance_memory_bytes",
        "Resident memory of each instance's process group",
        memory.clone(),
    );
    let cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
    registry.register(
        "instance_cpu_seconds",
        "CPU time used by each instance's process group",
        cpu.clone(),
    );
    let instances = statuses
        .iter()
        .flat_map(|s| s.instances.iter().map(move |i| (&s.app, i)));
    for (app, i) in instances {
        let labels = vec![
            ("app".into(), app.clone()),
            ("instance".into(), i.instance.clone()),
            ("release".into(), i.release.clone()),
        ];
        in_flight
            .get_or_create(&labels)
            .set(i.counts.in_flight as i64);
        connections
            .get_or_create(&labels)
            .set(i.counts.connections as i64);
        restarts
            .get_or_create(&labels)
            .inc_by(u64::from(i.restarts));
        if let (Some(bytes), Some(seconds)) = (i.memory_bytes, i.cpu_seconds) {
            memory
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            cpu.get_or_create(&labels).inc_by(seconds);
        }
    }
    let ready_of = |s: &StatusReport| {
        (s.instances.iter())
            .filter(|i| i.state == InstanceState::Ready)
            .count() as i64
    };
    let ready = Gauge::<i64>::default();
    registry.register("instances_ready", "Instances taking traffic", ready.clone());
    ready.set(statuses.iter().map(ready_of).sum());
    let app_ready = Family::<Labels, Gauge>::default();
    registry.register(
        "app_instances_ready",
        "Instances taking traffic, per app",
        app_ready.clone(),
    );
    for s in &statuses {
        app_ready
            .get_or_create(&vec![("app".into(), s.app.clone())])
            .set(ready_of(s));
    }
    let held = Family::<Labels, Counter>::default();
    registry.register(
        "app_held",
        "Requests that waited for a ready instance, per app",
        held.clone(),
    );
    for app in daemon.apps() {
        held.get_or_create(&vec![("app".into(), app.name.clone())])
            .inc_by(app.router().held());
    }

    canaries(&mut registry, &statuses);
    certificates(&mut registry, &daemon.certificates());

    let mut body = String::new();
    let _ = encode(&mut body, &registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

type Labels = Vec<(String, String)>;

/// Per name: when its certificate expires, and whether ACME fails to
/// renew it (alert on either, as on cert-manager's expiration metric).
fn certificates(registry: &mut Registry, certificates: &[CertificateReport]) {
    let expiry = Family::<Labels, Gauge>::default();
    registry.register(
        "certificate_expiry_timestamp_seconds",
        "When the certificate served for each name expires (seconds since the epoch)",
        expiry.clone(),
    );
    let failing = Family::<Labels, Gauge>::default();
    registry.register(
        "certificate_acme_failing",
        "1 while ACME fails to issue or renew the certificate for a name (retried with a pause)",
        failing.clone(),
    );
    for c in certificates {
        for name in &c.names {
            let labels = vec![
                ("name".into(), name.clone()),
                ("source".into(), c.source.clone()),
            ];
            if let Some(at) = c.not_after {
                expiry
                    .get_or_create(&labels)
                    .set(i64::try_from(at).unwrap_or(i64::MAX));
            }
            if c.source == "acme" {
                let now_failing = c.state == CertificateState::Failing;
                failing
                    .get_or_create(&vec![("name".into(), name.clone())])
                    .set(i64::from(now_failing));
            }
        }
    }
}

/// Registers a counter that stands at `value`.
fn total(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

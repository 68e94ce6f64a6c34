//! Human-readable tables for `status` and `releases`.

use std::fmt::Write;

use crate::protocol::{
    CertificateReport, CertificateState, Health, InstanceReport, ReleaseReport, State, StatusReport,
};

/// `5s`, `3m`, `2h`, `4d`.
pub(crate) fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Rows as columns padded to their widest cell; the first row is the head.
pub(crate) fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// The `baton status` table.
pub(crate) fn status_table(s: &StatusReport) -> String {
    let mut out = format!(
        "{}: release {}, listening on {}, daemon pid {} up {}\n",
        s.app,
        s.release.as_deref().unwrap_or("-"),
        s.listen.join(", "),
        s.pid,
        short_duration(s.uptime_secs)
    );
    if !s.online {
        let _ = writeln!(out, "offline: /health answers 503 (baton online to undo)");
    }
    if let Some(d) = &s.deploying {
        let _ = writeln!(out, "deploying: {d}");
    }
    if let Some(c) = &s.canary {
        let side = |score: &crate::protocol::Score| {
            format!(
                "{} requests, {:.1}% errors, p99 {} ms",
                score.requests,
                score.error_rate * 100.0,
                score.p99_ms
            )
        };
        let _ = writeln!(
            out,
            "canary: release {} on {}% of clients (step {}/{}): {}; stable: {}",
            c.release,
            c.share_percent,
            c.step,
            c.steps,
            side(&c.canary),
            side(&c.stable)
        );
    }
    if s.log_errors > 0 {
        let why = s.log_error.as_deref().unwrap_or("writes work again");
        let _ = writeln!(out, "log lines lost: {} ({why})", s.log_errors);
    }
    let mut rows = vec![[
        "PROCESS",
        "INSTANCE",
        "RELEASE",
        "PID",
        "PORT",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "CPU",
        "MEM",
        "IN-FLIGHT",
        "CONNS",
    ]
    .map(String::from)
    .to_vec()];
    for i in &s.instances {
        let state = serde_json::to_value(i.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        rows.push(vec![
            i.process.to_string(),
            i.instance.clone(),
            i.release.clone(),
            i.pid.map_or("-".into(), |p| p.to_string()),
            i.port.to_string(),
            state,
            i.uptime_secs.map_or("-".into(), short_duration),
            i.restarts.to_string(),
            i.cpu_percent.map_or("-".into(), |p| format!("{p:.1}%")),
            i.memory_bytes.map_or("-".into(), size),
            i.counts.in_flight.to_string(),
            i.counts.connections.to_string(),
        ]);
    }
    out.push_str(&table(rows));
    for i in s.instances.iter().filter(|i| i.reason.is_some()) {
        let _ = writeln!(
            out,
            "{}: {}",
            i.instance,
            i.reason.as_deref().unwrap_or_default()
        );
    }
    for c in &s.certificates {
        let _ = writeln!(out, "{}", certificate_line(c, unix_now()));
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// One certificate: `certificate shop.test, www.shop.test (acme): valid
/// 59d more, renewal in 29d`.
fn certificate_line(c: &CertificateReport, now: u64) -> String {
    let left = |at: u64| short_duration(at.saturating_sub(now));
    let mut line = format!("certificate {} ({})", c.names.join(", "), c.source);
    match c.not_after {
        Some(at) if at <= now => line.push_str(": EXPIRED"),
        Some(at) => {
            let _ = write!(line, ": valid {} more", left(at));
        }
        None => line.push_str(": none yet"),
    }
    match (c.state, c.renew_at) {
        (CertificateState::Issuing, _) => line.push_str(", being issued"),
        (CertificateState::Failing, _) => {
            let _ = write!(
                line,
                ", ACME failing: {} (next try in {})",
                c.error.as_deref().unwrap_or("?"),
                c.next_try.map_or("-".into(), left)
            );
        }
        (CertificateState::Serving, Some(renew)) => {
            let _ = write!(line, ", renewal in {}", left(renew));
        }
        (CertificateState::Serving, None) => {}
    }
    line
}

/// The `baton apps` table: one line per app.
pub(crate) fn apps_table(all: &[StatusReport]) -> String {
    let mut rows = vec![["APP", "HOSTS", "PREFIX", "RELEASE", "READY", "STATE"]
        .map(String::from)
        .to_vec()];
    for s in all {
        let web = s.instances.iter().filter(|i| i.process.is_web());
        let ready = web
            .clone()
            .filter(|i| i.state == crate::protocol::State::Ready)
            .count();
        let state = match (&s.deploying, health(s)) {
            (Some(_), _) => "deploying",
            (None, crate::protocol::Health::Healthy) => "healthy",
            (None, crate::protocol::Health::Degraded) => "degraded",
            (None, crate::protocol::Health::Down) => "down",
        };
        rows.push(vec![
            s.app.clone(),
            match s.hosts.as_slice() {
                [] => "*".into(),
                hosts => hosts.join(","),
            },
            s.path_prefix.clone().unwrap_or_else(|| "/".into()),
            s.release.clone().unwrap_or_else(|| "-".into()),
            format!("{ready}/{}", web.count()),
            state.into(),
        ]);
    }
    table(rows)
}

/// The `baton releases` table.
pub(crate) fn releases_table(r: &[ReleaseReport]) -> String {
    let mut rows = vec![["ID", "CREATED", "STATUS", "SIZE", "SOURCE"]
        .map(String::from)
        .to_vec()];
    for rel in r {
        let status = match &rel.assets_until {
            Some(until) => format!("{}, static files until {until}", rel.status),
            None => rel.status.to_string(),
        };
        rows.push(vec![
            rel.id.clone(),
            rel.created.clone(),
            status,
            rel.size.map_or_else(|| "-".into(), size),
            rel.source.clone(),
        ]);
    }
    table(rows)
}

/// Bytes for a person, in binary units as `du -h` prints them: 512 B, 1.5 KiB.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Whether the app is served in full, in part, or not at all (`baton
/// status` exits 3 or 4 on the last two, as `systemctl status` does). Only
/// the web instances of the serving release count: a singleton is no part
/// of serving, and a draining instance is on its way out.
pub(crate) fn health(report: &StatusReport) -> Health {
    let web: Vec<&InstanceReport> = (report.instances.iter())
        .filter(|i| i.process.is_web() && report.release.as_deref() == Some(i.release.as_str()))
        .filter(|i| i.state != State::Draining)
        .collect();
    let ready = web.iter().filter(|i| i.state == State::Ready).count();
    if ready == 0 {
        Health::Down
    } else if ready < web.len() {
        Health::Degraded
    } else {
        Health::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::{certificate_line, size};
    use crate::protocol::{CertificateReport, CertificateState};

    #[test]
    fn a_certificate_line_says_how_long_it_lasts_and_what_acme_does() {
        let day = 86_400;
        let mut c = CertificateReport {
            names: vec!["shop.test".into(), "www.shop.test".into()],
            source: "acme".into(),
            state: CertificateState::Serving,
            not_after: Some(1000 + 60 * day),
            renew_at: Some(1000 + 30 * day),
            error: None,
            next_try: None,
        };
        assert_eq!(
            certificate_line(&c, 1000),
            "certificate shop.test, www.shop.test (acme): valid 60d more, renewal in 30d"
        );
        c.state = CertificateState::Failing;
        c.error = Some("connection refused".into());
        c.next_try = Some(1600);
        assert_eq!(
            certificate_line(&c, 1000),
            "certificate shop.test, www.shop.test (acme): valid 60d more, ACME failing: connection refused (next try in 10m)"
        );
        c.not_after = None;
        c.state = CertificateState::Issuing;
        assert_eq!(
            certificate_line(&c, 1000),
            "certificate shop.test, www.shop.test (acme): none yet, being issued"
        );
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}

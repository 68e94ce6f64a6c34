//! Human-readable tables for `status` and `releases`.

use std::fmt::Write;

use crate::protocol::{ReleaseReport, StatusReport};

/// `5s`, `3m`, `2h`, `4d`.
pub fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn table(rows: Vec<Vec<String>>) -> String {
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
pub fn status_table(s: &StatusReport) -> String {
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
            i.process.clone(),
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
    out
}

/// The `baton releases` table.
pub fn releases_table(r: &[ReleaseReport]) -> String {
    let mut rows = vec![["ID", "CREATED", "STATUS", "SIZE", "SOURCE"]
        .map(String::from)
        .to_vec()];
    for rel in r {
        rows.push(vec![
            rel.id.clone(),
            rel.created.clone(),
            rel.status.to_string(),
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

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}

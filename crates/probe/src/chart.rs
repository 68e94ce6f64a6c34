//! A picture of a probe run (`baton probe --report deploy.html|.svg`):
//! requests per second stacked by the version that answered, failures in
//! red, each switch of version as a line, and p99 per second on its own
//! axis. One self-contained file: the SVG alone, or an HTML page holding
//! it, a summary, and the JSON report. Every drawn value is also in a
//! `data-` attribute, so a test (or a script) reads the series back.

use std::fmt::Write;

use super::report::Report;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 64.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 44.0;
const PALETTE: [&str; 8] = [
    "#4e79a7", "#59a14f", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
];
const FAILED: &str = "#e15759";
const UNVERSIONED: &str = "#bab0ac";

/// Which file `path` asks for, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// A page with the chart, a summary and the JSON report.
    Html,
    /// The chart alone.
    Svg,
}

impl Format {
    /// The format of a report file, from its extension.
    ///
    /// # Errors
    /// An extension that is neither `.html` (`.htm`) nor `.svg`.
    pub(crate) fn of(path: &std::path::Path) -> Result<Format, String> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("html" | "htm") => Ok(Format::Html),
            Some("svg") => Ok(Format::Svg),
            _ => Err(format!(
                "--report {}: the file must end in .html or .svg",
                path.display()
            )),
        }
    }
}

/// The report drawn in `format`.
pub(crate) fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Svg => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
            svg(report)
        ),
        Format::Html => html(report),
    }
}

/// The page: a title, the summary, the chart and the report as JSON.
fn html(report: &Report) -> String {
    let json = serde_json::to_string_pretty(report)
        .unwrap_or_default()
        // Inside <script>, only "</" could end the element early.
        .replace("</", "<\\/");
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>baton probe: {url}</title>\n\
         <style>body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}\
         h1{{font-size:18px}}p{{margin:4px 0}}svg{{max-width:100%;height:auto}}</style>\n\
         </head>\n<body>\n<h1>baton probe: {url}</h1>\n{summary}\n{svg}\n\
         <script type=\"application/json\" id=\"baton-probe-report\">\n{json}\n</script>\n\
         </body>\n</html>\n",
        url = escape(&report.url),
        summary = summary_html(report),
        svg = svg(report),
    )
}

/// What a reader wants before the chart: counts, latency and switches.
fn summary_html(report: &Report) -> String {
    let mut out = format!(
        "<p>{} requests in {:.1} s ({} req/s): <b>{} failed</b>. Latency p50 {} ms, p99 {} ms, max {} ms.</p>",
        report.requests,
        report.duration_ms as f64 / 1000.0,
        report.rps,
        report.failed,
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.latency_ms.max,
    );
    for s in &report.switches {
        let _ = write!(
            out,
            "\n<p>Switched from {} to {} at {:.2} s.</p>",
            escape(&s.from),
            escape(&s.to),
            s.at_ms as f64 / 1000.0
        );
    }
    out
}

/// The chart.
fn svg(report: &Report) -> String {
    let seconds = report.timeline.len().max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let bar_w = plot_w / seconds as f64;
    let peak = (report.timeline.iter())
        .map(|s| s.ok + s.failed)
        .max()
        .unwrap_or(0);
    let rps_top = nice_ceiling(peak as f64);
    let p99_top = nice_ceiling(
        (report.timeline.iter())
            .map(|s| s.p99_ms)
            .fold(0.0, f64::max),
    );
    let y = |count: f64| TOP + plot_h - count / rps_top * plot_h;
    let y_ms = |ms: f64| TOP + plot_h - ms / p99_top * plot_h;
    let color = |version: &str| {
        (report.versions.iter())
            .position(|v| v.version == version)
            .map_or(UNVERSIONED, |i| PALETTE[i % PALETTE.len()])
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"system-ui,sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        out,
        "<title>baton probe: {}</title>\n<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#fff\"/>",
        escape(&report.url)
    );
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"20\" font-size=\"14\">{} requests, {} failed, p99 {} ms</text>",
        report.requests, report.failed, report.latency_ms.p99
    );
    legend(&mut out, report, &color);
    axes(&mut out, seconds, rps_top, p99_top, bar_w);

    // Bars: each second's answers stacked by version, then those without
    // a version, then the failures on top.
    for s in &report.timeline {
        let x = LEFT + s.second as f64 * bar_w;
        let mut base = 0.0;
        let mut stack = |series: &str, count: u64, fill: &str, out: &mut String| {
            if count == 0 {
                return;
            }
            let top = base + count as f64;
            let _ = writeln!(
                out,
                "<rect class=\"bar\" data-second=\"{}\" data-series=\"{}\" data-count=\"{count}\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{fill}\"><title>{} s: {} {count}</title></rect>",
                s.second,
                escape(series),
                x + bar_w * 0.08,
                y(top),
                bar_w * 0.84,
                y(base) - y(top),
                s.second,
                escape(series),
            );
            base = top;
        };
        for v in &report.versions {
            let count = s.versions.get(&v.version).copied().unwrap_or(0);
            stack(&v.version, count, color(&v.version), &mut out);
        }
        let versioned: u64 = s.versions.values().sum();
        stack(
            "unversioned",
            s.ok.saturating_sub(versioned),
            UNVERSIONED,
            &mut out,
        );
        stack("failed", s.failed, FAILED, &mut out);
        if s.failed > 0 {
            let _ = writeln!(
                out,
                "<text class=\"failure-mark\" data-second=\"{}\" data-failed=\"{}\" x=\"{:.2}\" y=\"{:.2}\" fill=\"{FAILED}\" text-anchor=\"middle\">✗ {}</text>",
                s.second,
                s.failed,
                x + bar_w / 2.0,
                TOP - 4.0,
                s.failed
            );
        }
    }

    // Each switch of version, where it happened.
    let span_ms = (seconds as f64) * 1000.0;
    for s in &report.switches {
        let x = LEFT + s.at_ms as f64 / span_ms * plot_w;
        let _ = writeln!(
            out,
            "<line class=\"switch\" data-at-ms=\"{}\" data-from=\"{}\" data-to=\"{}\" x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"{TOP}\" y2=\"{:.2}\" stroke=\"#222\" stroke-dasharray=\"4 3\"/>\n<text x=\"{:.2}\" y=\"{:.2}\">{} → {} at {:.2} s</text>",
            s.at_ms,
            escape(&s.from),
            escape(&s.to),
            TOP + plot_h,
            x + 4.0,
            TOP + 14.0,
            escape(&s.from),
            escape(&s.to),
            s.at_ms as f64 / 1000.0
        );
    }

    // p99 per second, on the right-hand axis.
    let points: Vec<String> = (report.timeline.iter())
        .map(|s| {
            format!(
                "{:.2},{:.2}",
                LEFT + (s.second as f64 + 0.5) * bar_w,
                y_ms(s.p99_ms)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "<polyline class=\"p99\" points=\"{}\" fill=\"none\" stroke=\"#222\" stroke-width=\"1.5\"/>",
        points.join(" ")
    );
    for s in &report.timeline {
        let _ = writeln!(
            out,
            "<circle class=\"p99-point\" data-second=\"{}\" data-ms=\"{}\" cx=\"{:.2}\" cy=\"{:.2}\" r=\"2.5\" fill=\"#222\"><title>{} s: p99 {} ms</title></circle>",
            s.second,
            s.p99_ms,
            LEFT + (s.second as f64 + 0.5) * bar_w,
            y_ms(s.p99_ms),
            s.second,
            s.p99_ms
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The version colours, failures and the p99 line, across the top.
fn legend(out: &mut String, report: &Report, color: &dyn Fn(&str) -> &'static str) {
    let mut x = LEFT;
    let mut item = |label: &str, fill: &str, out: &mut String| {
        let _ = writeln!(
            out,
            "<rect x=\"{x:.2}\" y=\"32\" width=\"10\" height=\"10\" fill=\"{fill}\"/><text x=\"{:.2}\" y=\"41\">{}</text>",
            x + 14.0,
            escape(label)
        );
        x += 24.0 + 7.0 * label.chars().count() as f64;
    };
    for v in &report.versions {
        item(&v.version, color(&v.version), out);
    }
    item("failed", FAILED, out);
    item("p99 (right axis)", "#222", out);
}

/// Left axis (requests per second), right axis (p99 ms), bottom axis
/// (seconds), with grid lines.
fn axes(out: &mut String, seconds: usize, rps_top: f64, p99_top: f64, bar_w: f64) {
    let plot_h = HEIGHT - TOP - BOTTOM;
    let right = WIDTH - RIGHT;
    let bottom = TOP + plot_h;
    for i in 0..=4 {
        let frac = f64::from(i) / 4.0;
        let y = bottom - frac * plot_h;
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{right}\" y1=\"{y:.2}\" y2=\"{y:.2}\" stroke=\"#eee\"/>\n\
             <text x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"end\">{}</text>\n\
             <text x=\"{:.2}\" y=\"{:.2}\">{} ms</text>",
            LEFT - 6.0,
            y + 4.0,
            short(rps_top * frac),
            right + 6.0,
            y + 4.0,
            short(p99_top * frac)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"14\" y=\"{:.2}\" transform=\"rotate(-90 14 {:.2})\" text-anchor=\"middle\">requests per second</text>",
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let every = (seconds / 12).max(1);
    for s in (0..=seconds).step_by(every) {
        let x = LEFT + s as f64 * bar_w;
        let _ = writeln!(
            out,
            "<text x=\"{x:.2}\" y=\"{:.2}\" text-anchor=\"middle\">{s} s</text>",
            bottom + 18.0
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{right}\" y1=\"{bottom:.2}\" y2=\"{bottom:.2}\" stroke=\"#888\"/>"
    );
}

/// A round number at or above `value`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|v| *v >= value)
        .unwrap_or(10.0 * power)
}

/// An axis label: whole numbers as such, others with one decimal.
fn short(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Text for XML and HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(500.0), 500.0);
    }

    #[test]
    fn the_format_comes_from_the_extension() {
        let of = |p: &str| Format::of(std::path::Path::new(p));
        assert_eq!(of("deploy.html"), Ok(Format::Html));
        assert_eq!(of("a/deploy.svg"), Ok(Format::Svg));
        assert!(of("deploy.png").unwrap_err().contains(".html or .svg"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}

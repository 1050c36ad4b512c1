//! The HTML report: one file that opens anywhere without a network.
//!
//! Charts are SVG drawn by `plotters` and inlined; tables are plain HTML; there is no script,
//! and a Content-Security-Policy forbids the page to fetch anything, so what is in the file
//! is all there is. Every string from the results file is escaped (and its secrets were
//! redacted when it was written). The charts over time have one point per window of the
//! [`Timeline`](crate::timeline::Timeline) (at most 600), the per-host table the 200 busiest
//! hosts, the lists 100 jobs each: a report of 10 million lines is as small as one of ten
//! thousand.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::tally::{JobRow, Tally};
use crate::timeline::Point;
use crate::ReportError;

/// Hosts shown in the page's table, the busiest first (`--csv` has them all).
pub const HOSTS_SHOWN: usize = 200;

/// Chart size in pixels.
const SIZE: (u32, u32) = (960, 320);

/// Bars of the latency histogram.
const BARS: usize = 40;

/// The ids of the charts a page can hold, in page order: jobs per second, latency percentiles
/// over time (both only when the results have `started_at`), the latency histogram (when
/// some job had a response).
pub const CHARTS: [&str; 3] = ["chart-rate", "chart-latency", "chart-histogram"];

/// The report of `tally` as one HTML page; `source` names the results file in its title.
pub fn page(tally: &Tally, source: &str) -> Result<String, ReportError> {
    let summary = tally.summary();
    let mut h = String::with_capacity(256 << 10);
    let title = format!("corral report: {}", esc(source));
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    let (start, end) = match (tally.first_ms(), tally.span()) {
        (Some(first), Some(span)) => (
            Some(rfc3339(first)),
            Some(rfc3339(first.saturating_add(span.as_millis() as i64))),
        ),
        _ => (None, None),
    };
    // Overview.
    h.push_str("<section id=\"overview\"><table class=\"facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    fact("results", summary.jobs_done.to_string());
    fact("ok", summary.ok.to_string());
    fact("failed", summary.failed.to_string());
    fact("retries", summary.retries.to_string());
    fact("breaker openings", summary.breaker_openings.to_string());
    if let (Some(s), Some(e)) = (start, end) {
        fact("first job started", s);
        fact("last job ended", e);
        fact(
            "span",
            format!(
                "{:.2} s ({:.1} jobs/s)",
                summary.elapsed_s, summary.jobs_per_s
            ),
        );
    }
    let percentiles = |l: &corral_engine::summary::Latency| {
        format!(
            "p50 {:.1} ms · p90 {:.1} ms · p99 {:.1} ms · max {:.1} ms",
            l.p50, l.p90, l.p99, l.max
        )
    };
    fact("latency (last attempt)", percentiles(&summary.latency_ms));
    if !tally.ttfb_us().is_empty() {
        let l = corral_engine::summary::Latency::of(tally.ttfb_us());
        fact("time to first byte (the head)", percentiles(&l));
    }
    if !tally.ttfe_us().is_empty() {
        let l = corral_engine::summary::Latency::of(tally.ttfe_us());
        fact("time to first event (streams)", percentiles(&l));
    }
    h.push_str("</table></section>\n");

    // Charts.
    h.push_str("<section id=\"charts\">");
    if tally.has_times() {
        // Whole seconds from the second the first job started in.
        let origin = tally.first_ms().unwrap_or(0).div_euclid(1000) * 1000;
        let points = tally.timeline().points(origin);
        let width = tally.timeline().width().as_secs();
        let x_desc = format!(
            "seconds since {} (one point per {width} s, at the jobs' ends)",
            rfc3339(origin).replace(".000Z", "Z")
        );
        let ok: Vec<(f64, f64)> = points.iter().map(|p| (p.at_s, p.ok_per_s)).collect();
        let failed: Vec<(f64, f64)> = points.iter().map(|p| (p.at_s, p.failed_per_s)).collect();
        figure(
            &mut h,
            CHARTS[0],
            "Jobs finished per second: ok and failed",
            &line_chart(
                CHARTS[0],
                &x_desc,
                "jobs per second",
                &[
                    ("ok", GREEN_DARK, vec![ok]),
                    ("failed", RED_DARK, vec![failed]),
                ],
            )?,
        );
        let pick = |i: usize| segments(&points, |p| p.latency_ms.map(|l| l[i]));
        figure(
            &mut h,
            CHARTS[1],
            "Latency over time: p50, p90, p99 of the jobs finished in each window",
            &line_chart(
                CHARTS[1],
                &x_desc,
                "milliseconds",
                &[
                    ("p50", BLUE_DARK, pick(0)),
                    ("p90", ORANGE, pick(1)),
                    ("p99", RED_DARK, pick(2)),
                ],
            )?,
        );
    } else {
        h.push_str("<p class=\"note\">No result has a <code>started_at</code> (the file was written by an older corral): the charts over time are left out.</p>");
    }
    if !tally.latency_us().is_empty() {
        figure(
            &mut h,
            CHARTS[2],
            "Latency histogram (last attempt of each job with a response)",
            &histogram(tally)?,
        );
    }
    h.push_str("</section>\n");

    // Statuses and error kinds.
    h.push_str("<section id=\"outcomes\"><h2>Statuses and failures</h2><div class=\"pair\"><table><tr><th>status</th><th>jobs</th></tr>");
    for (s, n) in &summary.by_status {
        let _ = write!(h, "<tr><td>{s}</td><td>{n}</td></tr>");
    }
    h.push_str("</table><table><tr><th>failure kind</th><th>jobs</th></tr>");
    for (k, n) in &summary.by_error {
        let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", esc(k));
    }
    h.push_str("</table></div></section>\n");

    // Hosts.
    let hosts = tally.hosts();
    let _ = write!(
        h,
        "<section id=\"hosts\"><h2>Per host</h2><table><tr><th>host</th><th>jobs</th><th>attempts</th><th>attempts/s</th><th>ok</th><th>failed</th><th>retries</th><th>breaker openings</th><th>Retry-After pauses</th><th>mean latency ms</th><th>statuses</th><th>failure kinds</th></tr>"
    );
    for (name, t) in hosts.iter().take(HOSTS_SHOWN) {
        let statuses: Vec<String> = t
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let kinds: Vec<String> = t
            .by_error
            .iter()
            .map(|(k, n)| format!("{}: {n}", esc(k)))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            t.jobs,
            t.attempts,
            t.attempts_per_s(),
            t.ok,
            t.failed,
            t.retries,
            t.breaker_openings,
            t.paused_by_retry_after,
            t.latency_mean_ms(),
            statuses.join(", "),
            kinds.join(", ")
        );
    }
    h.push_str("</table>");
    if hosts.len() > HOSTS_SHOWN {
        let _ = write!(
            h,
            "<p class=\"note\">… and {} more hosts with fewer requests (all of them: <code>corral report --csv</code>).</p>",
            hosts.len() - HOSTS_SHOWN
        );
    }
    h.push_str("</section>\n");

    // Jobs.
    jobs_table(
        &mut h,
        "slowest",
        "The slowest jobs (whole time, retries and waits included)",
        &tally.slowest(),
    );
    let failed: Vec<&JobRow> = tally.failed_jobs().iter().collect();
    jobs_table(
        &mut h,
        "failed",
        &format!(
            "Failed jobs{}",
            if summary.failed > failed.len() as u64 {
                format!(" (the first {} of {})", failed.len(), summary.failed)
            } else {
                String::new()
            }
        ),
        &failed,
    );

    if !summary.notes.is_empty() {
        h.push_str("<section id=\"notes\"><h2>Notes</h2><ul>");
        for n in &summary.notes {
            let _ = write!(h, "<li>{}</li>", esc(n));
        }
        h.push_str("</ul></section>\n");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td{font-variant-numeric:tabular-nums}table.facts th{width:14em}\
.pair{display:flex;gap:2em;flex-wrap:wrap}.note{color:#666}\
figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:.3em}td.url{word-break:break-all;max-width:32em}";

const GREEN_DARK: RGBColor = RGBColor(0x2e, 0x7d, 0x32);
const RED_DARK: RGBColor = RGBColor(0xc6, 0x28, 0x28);
const BLUE_DARK: RGBColor = RGBColor(0x15, 0x65, 0xc0);
const ORANGE: RGBColor = RGBColor(0xef, 0x6c, 0x00);

fn figure(h: &mut String, id: &str, caption: &str, svg: &str) {
    let _ = writeln!(
        h,
        "<figure class=\"chart\" id=\"{id}\"><figcaption>{}</figcaption>{svg}</figure>",
        esc(caption)
    );
}

/// The runs of consecutive points that have a value: a line is broken where a window had
/// none (no job with a response), rather than drawn across it.
fn segments(points: &[Point], value: impl Fn(&Point) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for p in points {
        match value(p) {
            Some(v) => out.last_mut().into_iter().for_each(|s| s.push((p.at_s, v))),
            None if out.last().is_some_and(|s| !s.is_empty()) => out.push(Vec::new()),
            None => {}
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

type Series<'a> = (&'a str, RGBColor, Vec<Vec<(f64, f64)>>);

fn chart_error<E: std::fmt::Display>(chart: &'static str) -> impl Fn(E) -> ReportError {
    move |e| ReportError::Chart {
        chart,
        message: e.to_string(),
    }
}

/// Every chart's margins and label areas.
fn frame<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, plotters::coord::Shift>,
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(root);
    b.margin(12).x_label_area_size(40).y_label_area_size(64);
    b
}

/// A chart of lines over time, as SVG.
fn line_chart(
    id: &'static str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series<'_>],
) -> Result<String, ReportError> {
    let points = || series.iter().flat_map(|s| s.2.iter().flatten());
    let x_max = points().map(|p| p.0).fold(1.0f64, f64::max);
    let y_max = points().map(|p| p.1).fold(0.0f64, f64::max).max(1.0) * 1.1;
    let err = chart_error(id);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = frame(&root)
            .build_cartesian_2d(0f64..x_max * 1.02, 0f64..y_max)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;
        for (name, color, runs) in series {
            let color = *color;
            let mut first = true;
            for run in runs {
                let drawn = chart
                    .draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(2)))
                    .map_err(&err)?;
                if first {
                    drawn.label(*name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                    first = false;
                }
                // A short run's few points are marked, so that even one window shows.
                if run.len() < 30 {
                    chart
                        .draw_series(run.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(&err)?;
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// The latency histogram: jobs per latency bar, bars equally wide on a logarithmic axis.
fn histogram(tally: &Tally) -> Result<String, ReportError> {
    let id = CHARTS[2];
    let err = chart_error(id);
    let us = tally.latency_us();
    let lo = (us.min().max(1) as f64 / 1000.0).max(0.001);
    let hi = (us.max() as f64 / 1000.0).max(lo * 1.5);
    let step = (hi / lo).powf(1.0 / BARS as f64);
    let mut bars = vec![0u64; BARS];
    for v in us.iter_recorded() {
        let ms = v.value_iterated_to() as f64 / 1000.0;
        let i = ((ms / lo).ln() / step.ln())
            .floor()
            .clamp(0.0, (BARS - 1) as f64) as usize;
        bars[i] += v.count_since_last_iteration();
    }
    let top = bars.iter().copied().max().unwrap_or(1).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = frame(&root)
            .build_cartesian_2d((lo..hi * 1.0001).log_scale(), 0u64..top + top / 10 + 1)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("latency, milliseconds (logarithmic)")
            .y_desc("jobs")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;
        chart
            .draw_series(
                bars.iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, n)| {
                        let a = lo * step.powi(i as i32);
                        Rectangle::new([(a, 0), (a * step, *n)], BLUE_DARK.mix(0.75).filled())
                    }),
            )
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

fn jobs_table(h: &mut String, id: &str, title: &str, jobs: &[&JobRow]) {
    let _ = write!(h, "<section id=\"{id}\"><h2>{}</h2>", esc(title));
    if jobs.is_empty() {
        h.push_str("<p class=\"note\">None.</p></section>\n");
        return;
    }
    h.push_str("<table><tr><th>line</th><th>id</th><th>method</th><th>url</th><th>started</th><th>status</th><th>attempts</th><th>latency ms</th><th>time ms</th><th>failure</th></tr>");
    for j in jobs {
        let failure = match (&j.kind, &j.message) {
            (Some(k), Some(m)) => format!("{}: {}", esc(k), esc(m)),
            (Some(k), None) => esc(k),
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"url\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{failure}</td></tr>",
            j.line.map(|l| l.to_string()).unwrap_or_default(),
            esc(&j.id),
            esc(&j.method),
            esc(&j.url),
            esc(j.started_at.as_deref().unwrap_or_default()),
            j.status.map(|s| s.to_string()).unwrap_or_default(),
            j.attempts,
            j.latency_ms.map(|l| format!("{l:.1}")).unwrap_or_default(),
            j.elapsed_ms,
        );
    }
    h.push_str("</table></section>\n");
}

/// `ms` since the Unix epoch as RFC 3339 (UTC, milliseconds).
/// Clamped to what RFC 3339 can write (1970 to 9999, as the results' own writer does): a
/// chart's edge past a result of 9999-12-31 panicked the formatter.
fn rfc3339(ms: i64) -> String {
    const LAST: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms = u64::try_from(ms).unwrap_or(0).min(LAST);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Text made safe for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in HTML (NUL, ESC ... reached the page raw):
            // shown as their Unicode pictures, C1 controls as the replacement character.
            '\t' | '\n' | '\r' => out.push(c),
            '\0'..='\x1f' => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}')),
            '\x7f' => out.push('\u{2421}'),
            '\u{80}'..='\u{9f}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(lines: u64, with_times: bool) -> Tally {
        let mut t = Tally::new().unwrap();
        for i in 0..lines {
            let started = if with_times {
                format!(
                    ",\"started_at\":\"{}\"",
                    rfc3339(1_795_654_920_000 + i as i64 * 50)
                )
            } else {
                String::new()
            };
            let ok = i % 10 != 0;
            let error = if ok {
                ""
            } else {
                r#","error":{"kind":"http_status","message":"<script>alert(1)</script>"}"#
            };
            t.add_line(&format!(
                r#"{{"line":{},"id":"<b>{i}</b>","method":"GET","url":"http://h{}.test/x?a=1&b=2","ok":{ok},"status":{},"attempts":1,"latency_ms":{},"elapsed_ms":{}{started}{error}}}"#,
                i + 1,
                i % 3,
                if ok { 200 } else { 503 },
                5 + i % 50,
                5 + i % 50
            ))
            .unwrap();
        }
        t
    }

    #[test]
    fn a_page_has_every_chart_and_escapes_what_the_file_says() {
        let page = page(&results(200, true), "r<1>.jsonl").unwrap();
        for id in CHARTS {
            let at = page.find(&format!("id=\"{id}\"")).expect(id);
            let svg = &page[at..];
            let end = svg.find("</figure>").unwrap();
            assert!(svg[..end].contains("<svg"), "{id} has an SVG");
        }
        // Two lines in the rate chart with one point per second (10 s of jobs).
        let rate = &page[page.find("id=\"chart-rate\"").unwrap()..];
        let rate = &rate[..rate.find("</figure>").unwrap()];
        let data_lines = rate
            .split("<polyline")
            .skip(1)
            .filter(|p| p.contains("stroke-width=\"2\""))
            .filter(|p| {
                p.split("points=\"")
                    .nth(1)
                    .is_some_and(|pts| pts.split(' ').filter(|x| x.contains(',')).count() > 2)
            })
            .count();
        assert_eq!(data_lines, 2, "{rate}");
        assert!(!page.contains("<script"), "nothing from the file is markup");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;b&gt;10&lt;/b&gt;"));
        assert!(page.contains("r&lt;1&gt;.jsonl"));
        assert!(
            page.contains("default-src 'none'"),
            "the page fetches nothing"
        );
    }

    #[test]
    fn hostile_times_and_control_bytes_make_a_page_not_a_panic() {
        let mut t = Tally::new().unwrap();
        for (n, at) in [
            (1, "9999-12-31T23:59:59.999Z"),
            (2, "9999-12-31T23:59:59.000Z"),
            (3, "1970-01-01T00:00:00.000Z"),
        ] {
            t.add_line(&format!(
                r#"{{"line":{n},"url":"http://h.test/","ok":false,"status":503,"attempts":1,"latency_ms":1,"elapsed_ms":1,"started_at":"{at}","error":{{"kind":"http_status","message":"a\u0000b\u001b[31mc\u0085d"}}}}"#
            ))
            .unwrap();
        }
        let page = page(&t, "r.jsonl").unwrap();
        assert!(page.contains("9999-12-31"), "the last time is shown");
        assert!(!page.contains('\0') && !page.contains('\x1b') && !page.contains('\u{85}'));
        assert!(
            page.contains("a\u{2400}b\u{241b}[31mc\u{fffd}d"),
            "controls are shown"
        );
    }

    /// The latency facts gain time to first byte, and time to first event where streams were.
    #[test]
    fn time_to_first_byte_and_event_are_shown_where_results_have_them() {
        let mut t = Tally::new().unwrap();
        for n in 1..=4 {
            let ttfe = if n % 2 == 0 { r#","ttfe_ms":500"# } else { "" };
            t.add_line(&format!(
                r#"{{"line":{n},"url":"http://h.test/","ok":true,"status":200,"attempts":1,"latency_ms":900,"ttfb_ms":200{ttfe},"elapsed_ms":900}}"#
            ))
            .unwrap();
        }
        let page = page(&t, "r.jsonl").unwrap();
        assert!(
            page.contains("time to first byte (the head)</th><td>p50 200.1 ms"),
            "{page}"
        );
        assert!(
            page.contains("time to first event (streams)</th><td>p50 500.2 ms"),
            "{page}"
        );
        let plain = page_of_plain();
        assert!(
            !plain.contains("time to first"),
            "no such results, no such facts"
        );
    }

    fn page_of_plain() -> String {
        page(&results(5, true), "plain.jsonl").unwrap()
    }

    #[test]
    fn without_times_the_charts_over_time_are_left_out_with_a_note() {
        let page = page(&results(50, false), "old.jsonl").unwrap();
        assert!(!page.contains("id=\"chart-rate\""));
        assert!(!page.contains("id=\"chart-latency\""));
        assert!(page.contains("id=\"chart-histogram\""));
        assert!(page.contains("charts over time are left out"));
    }

    #[test]
    fn latency_gaps_break_the_line() {
        let p = |at_s: f64, l: Option<f64>| Point {
            at_s,
            ok_per_s: 1.0,
            failed_per_s: 0.0,
            latency_ms: l.map(|l| [l, l, l]),
        };
        let points = [
            p(0.0, Some(1.0)),
            p(1.0, Some(2.0)),
            p(2.0, None),
            p(3.0, Some(3.0)),
        ];
        let s = segments(&points, |p| p.latency_ms.map(|l| l[0]));
        assert_eq!(s, vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(3.0, 3.0)]]);
    }
}

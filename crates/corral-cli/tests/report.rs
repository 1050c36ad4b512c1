//! `corral report` and `--report`: the summary read again from a results file says what the
//! run said; CSV and bad input; the HTML page opened by a real browser (Debian's chromium,
//! installed if missing: never skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// Milliseconds since the Unix epoch of an RFC 3339 time with milliseconds in UTC, as
/// results write `started_at` (`2026-11-26T01:02:03.456Z`); `None` for any other shape.
fn parse_started_at(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let shape = b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z';
    if !shape {
        return None;
    }
    let t = humantime::parse_rfc3339(s).ok()?;
    u64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A run against an outage, a rate-limited and a fast host, then `corral report` of its
/// results: the same counts, statuses, kinds, latency percentiles, and per host the same
/// attempts, breaker openings and Retry-After pauses as the run's own summary. Each result has
/// a `started_at` within the run.
#[test]
fn the_report_of_a_results_file_says_what_the_run_said() {
    let mock = Mock::start("outage:0-2,limited:40,fast");
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..240)
        .map(|i| {
            let host = ["outage", "limited", "fast"][i % 3];
            format!(r#"{{"url":"{}/item/{i}"}}"#, mock.url(host))
        })
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let sum = dir.path().join("s.json");
    let page = dir.path().join("report.html");
    let before = now_ms();
    let o = run_quiet(
        &jobs,
        &out,
        &[
            "--retries",
            "10",
            "--breaker-cool-down-s",
            "1",
            "--summary-json",
            path_str(&sum),
            "--report",
            path_str(&page),
        ],
    );
    let after = now_ms();
    assert_exit(&o, 0);
    let rs = results(&out);
    assert_exactly_once(&rs, 240);
    for r in &rs {
        let at = r["started_at"].as_str().expect("started_at");
        let ms = parse_started_at(at).unwrap_or_else(|| panic!("not RFC 3339 with ms: {at}"));
        // The wall clock's second may tick between our reading and the run's: 1 s of slack.
        assert!(
            before.saturating_sub(1000) <= ms && ms <= after,
            "{at} outside the run"
        );
    }

    let run = summary(&sum);
    let o = corral(&["report", path_str(&out), "--json"]);
    assert_exit(&o, 0);
    let rep: Value = serde_json::from_slice(&o.stdout).expect("--json is JSON");
    for key in [
        "jobs_done",
        "ok",
        "failed",
        "retries",
        "breaker_openings",
        "by_status",
        "by_error",
        "latency_ms",
    ] {
        assert_eq!(rep[key], run[key], "{key}: report {rep} run {run}");
    }
    let (outage, limited) = (mock.key("outage"), mock.key("limited"));
    assert!(run["hosts"][&outage]["breaker_openings"].as_u64().unwrap() >= 1);
    assert!(
        run["hosts"][&limited]["paused_by_retry_after"]
            .as_u64()
            .unwrap()
            >= 1
    );
    for host in [outage, limited, mock.key("fast")] {
        for key in ["attempts", "breaker_openings", "paused_by_retry_after"] {
            assert_eq!(
                rep["hosts"][&host][key], run["hosts"][&host][key],
                "{host} {key}"
            );
        }
        assert_eq!(rep["hosts"][&host]["ok"], 80, "{host}");
    }
    // The run's own elapsed time and the span of its results agree to a few hundred ms.
    let (re, ru) = (
        rep["elapsed_s"].as_f64().unwrap(),
        run["elapsed_s"].as_f64().unwrap(),
    );
    assert!(
        (re - ru).abs() < 0.5 && re > 1.0,
        "report {re} s, run {ru} s"
    );

    // The text form is the run's summary.
    let o = corral(&["report", path_str(&out)]);
    assert_exit(&o, 0);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("240 jobs in"), "{text}");
    assert!(text.contains("240 ok, 0 failed"), "{text}");
    assert!(text.contains("per host:"), "{text}");

    // --report wrote the page at the end of the run.
    let html = std::fs::read_to_string(&page).expect("--report wrote the page");
    for id in ["chart-rate", "chart-latency", "chart-histogram"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
    }
}

/// A results file with known answers: 3 hosts over 30 seconds, failures of two kinds, a torn
/// last line.
fn known_results(dir: &Path) -> PathBuf {
    let start = 1_795_654_920_000u64;
    let mut text = String::new();
    for i in 0..600u64 {
        let host = ["a.test", "b.test:8443", "c.test"][(i % 3) as usize];
        let scheme = if host.ends_with("8443") {
            "https"
        } else {
            "http"
        };
        let at = start + i * 50;
        let secs = Duration::from_millis(at);
        let started = format_rfc3339(secs);
        let (ok, status, error) = match i % 20 {
            0 => (
                false,
                "503",
                r#","error":{"kind":"http_status","message":"status 503"}"#,
            ),
            1 => (
                false,
                "null",
                r#","error":{"kind":"timeout","message":"no answer within 2s"}"#,
            ),
            _ => (true, "200", ""),
        };
        let attempts = if ok { 1 } else { 4 };
        let latency = 5 + (i * 37) % 200;
        text += &format!(
            r#"{{"line":{},"id":"job-{i}","method":"GET","url":"{scheme}://{host}/item/{i}","ok":{ok},"status":{status},"attempts":{attempts},"latency_ms":{latency}.5,"elapsed_ms":{latency}.9,"started_at":"{started}"{error}}}"#,
            i + 1
        );
        text.push('\n');
    }
    text += r#"{"line":601,"id":"job-600","ok":tr"#;
    let p = dir.join("results.jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

/// RFC 3339 with milliseconds, UTC, as corral writes `started_at`.
fn format_rfc3339(since_epoch: Duration) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

#[test]
fn csv_notes_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let res = known_results(dir.path());
    let o = corral(&["report", path_str(&res), "--csv"]);
    assert_exit(&o, 0);
    let csv = String::from_utf8(o.stdout).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "host,jobs,attempts,attempts_per_s,ok,failed,retries,breaker_openings,paused_by_retry_after,latency_mean_ms,by_status,by_error");
    assert_eq!(rows.len(), 4, "{csv}");
    // a.test gets i % 3 == 0: i % 20 == 0 for i in 0, 60, ... (10 of 200), i % 20 == 1 for
    // i = 21, 81, ... (10): 20 failed, 60 extra attempts.
    let a = rows
        .iter()
        .find(|r| r.starts_with("a.test:80,"))
        .expect("a.test");
    let cols: Vec<&str> = a.split(',').collect();
    assert_eq!(&cols[1..3], ["200", "260"], "{a}");
    assert_eq!(&cols[4..7], ["180", "20", "60"], "{a}");
    assert_eq!(cols[10], "200=180 503=10", "{a}");
    assert_eq!(cols[11], "http_status=10 timeout=10", "{a}");
    assert!(csv.contains("\nb.test:8443,"), "{csv}");

    // The text summary names the torn line.
    let o = corral(&["report", path_str(&res)]);
    assert_exit(&o, 0);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("600 jobs in 30.1"), "{text}");
    assert!(text.contains("line 601 of the file"), "{text}");

    // Bad input: a missing file, a directory, the page written over the results, both forms.
    let o = corral(&["report", path_str(&dir.path().join("nope.jsonl"))]);
    assert_exit(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.jsonl"));
    let o = corral(&["report", path_str(dir.path())]);
    assert_exit(&o, 2);
    let before = std::fs::read(&res).unwrap();
    let o = corral(&["report", path_str(&res), "--html", path_str(&res)]);
    assert_exit(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is the results file itself"));
    assert_eq!(
        std::fs::read(&res).unwrap(),
        before,
        "the results are untouched"
    );
    let o = corral(&["report", path_str(&res), "--json", "--csv"]);
    assert_exit(&o, 2);
    // --report reads the results file: it needs one.
    let jobs = write_jobs(
        dir.path(),
        &[r#"{"url":"http://127.0.0.1:1/"}"#.to_string()],
    );
    let o = corral(&["run", path_str(&jobs), "--report", "r.html"]);
    assert_exit(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--output"));
}

/// Where chromium is, installing Debian's package when it is missing (the README's test
/// command needs nothing installed by hand). Panics, never skips, when it cannot be had.
fn chromium() -> PathBuf {
    let find = || {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).find_map(|d| {
            ["chromium", "chromium-browser"]
                .iter()
                .map(|n| d.join(n))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = find() {
        return p;
    }
    let install =
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium";
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let status = if root {
        Command::new("sh").args(["-c", install]).status()
    } else {
        Command::new("sudo")
            .args(["-n", "sh", "-c", install])
            .status()
    };
    eprintln!("installing chromium for the browser test: {status:?}");
    find().expect(
        "the browser test needs chromium: `apt-get install chromium` failed (run the tests as root, with sudo, or install it)",
    )
}

/// Runs chromium headless on `page` with `args`, bounded; its stdout and stderr.
fn headless(page: &Path, profile: &Path, args: &[&str]) -> (String, String) {
    let bin = chromium();
    let url = format!("file://{}", page.display());
    let out = Command::new("timeout")
        .arg("120")
        .arg(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Counts, in the page as the browser laid it out, what each chart drew: its size, its data
/// lines (2 px wide, more than 2 points: not an axis, tick or legend) and its filled bars.
const CHECKER: &str = r#"<script>(function () {
  const out = [];
  for (const f of document.querySelectorAll('figure.chart')) {
    const svg = f.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
    let lines = 0, bars = 0;
    if (svg) {
      for (const p of svg.querySelectorAll('polyline')) {
        if (p.getAttribute('stroke-width') === '2' && p.points.numberOfItems > 2) lines++;
      }
      for (const r of svg.querySelectorAll('rect')) {
        const fill = (r.getAttribute('fill') || '').toUpperCase();
        const b = r.getBBox();
        if (fill !== '#FFFFFF' && fill !== 'NONE' && b.width > 0 && b.height > 0) bars++;
      }
    }
    out.push({ id: f.id, width: box.width, height: box.height, lines: lines, bars: bars });
  }
  const pre = document.createElement('pre');
  pre.id = 'check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();</script>"#;

/// The HTML report opened from a file by headless chromium: no console message (the page has
/// no script, and its Content-Security-Policy would report any fetch), every chart laid out
/// with its data drawn; a screenshot is kept in the target directory.
#[test]
fn the_html_report_renders_in_chromium_without_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let res = known_results(dir.path());
    let page = dir.path().join("report.html");
    let o = corral(&["report", path_str(&res), "--html", path_str(&page)]);
    assert_exit(&o, 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("report written to"));

    // The page as written: console messages, and a screenshot.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let (_, log) = headless(
        &page,
        &dir.path().join("profile-1"),
        &[
            "--window-size=1280,3000",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());

    // A copy with the checker (its policy allows that one inline script, still no fetch).
    let html = std::fs::read_to_string(&page).unwrap();
    let policy = "default-src 'none'; style-src 'unsafe-inline'";
    assert!(html.contains(policy), "the page forbids fetching");
    let checked = html
        .replacen(
            policy,
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            1,
        )
        .replacen("</body>", &format!("{CHECKER}</body>"), 1);
    let copy = dir.path().join("checked.html");
    std::fs::write(&copy, checked).unwrap();
    let (dom, log) = headless(&copy, &dir.path().join("profile-2"), &["--dump-dom"]);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let json = dom
        .split("<pre id=\"check\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("the checker ran: {}", &dom[..dom.len().min(2000)]));
    let charts: Vec<Value> = serde_json::from_str(json).expect("checker JSON");
    let ids: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["chart-rate", "chart-latency", "chart-histogram"]);
    for c in &charts {
        assert!(c["width"].as_f64().unwrap() > 100.0, "{c}");
        assert!(c["height"].as_f64().unwrap() > 100.0, "{c}");
    }
    assert!(
        charts[0]["lines"].as_u64().unwrap() >= 2,
        "ok and failed: {}",
        charts[0]
    );
    assert!(
        charts[1]["lines"].as_u64().unwrap() >= 3,
        "p50, p90, p99: {}",
        charts[1]
    );
    assert!(
        charts[2]["bars"].as_u64().unwrap() >= 5,
        "bars: {}",
        charts[2]
    );
}

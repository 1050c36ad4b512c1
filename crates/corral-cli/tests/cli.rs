//! End-to-end tests of the `corral` binary against `corral serve-mock` on 127.0.0.1.
//!
//! These run in real time (a real HTTP stack on loopback) but assert only what must hold
//! whatever the timing: limits seen by the server, exactly-once results, redaction, exit codes.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn per_host_limits_hold_every_job_once_bad_lines_named_secrets_redacted() {
    let mock = Mock::start("fast,slow");
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for i in 0..240 {
        let host = if i % 2 == 0 {
            mock.url("fast")
        } else {
            mock.url("slow")
        };
        lines.push(format!(
            r#"{{"id":"j{i}","url":"{host}/x?latency_ms=15&token=hunter2","headers":{{"Authorization":"Bearer hunter2","X-Api-Key":"hunter2"}},"meta":{{"n":{i}}}}}"#
        ));
    }
    lines[9] = r#"{"url": "http://127.0.0.1:1/broken""#.into();
    lines[99] = r#"{"url": "http://127.0.0.1:1/", "method": "BREW"}"#.into();
    lines[149] = r#"{"url": "not a url"}"#.into();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let o = corral(&[
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--concurrency",
        "32",
        "--per-host-concurrency",
        "3",
        "--per-host-rate",
        "100/s",
        "--per-host-burst",
        "1",
        "--save-headers",
        "--threads",
        "2",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "bad lines make it 'some failed': {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The three bad lines are odd-numbered jobs, all meant for the slow host.
    for (host, requests) in [("fast", 120), ("slow", 117)] {
        let s = mock.stats(host);
        assert_eq!(s["requests"], requests, "{host}: {s}");
        assert!(s["max_in_flight"].as_u64().unwrap() <= 3, "{host}: {s}");
        // 100/s with burst 1 lets at most 1 + 100 start in any second; the server counts by
        // arrival second, so delivery jitter may carry a few of one second's last requests into
        // the next. Unlimited, 3 slots at 15 ms would allow ~200/s.
        assert!(s["max_per_second"].as_u64().unwrap() <= 110, "{host}: {s}");
        // Connections are reused: a connection goes back to its thread's pool before its slot
        // is freed, so 3 slots never need more than 3 connections per thread (+1: this `stats`
        // request's own). Without reuse each of the ~120 requests would open one.
        assert!(
            s["connections"].as_u64().unwrap() <= 3 * 2 + 1,
            "{host}: {s}"
        );
    }
    let rs = results(&out);
    assert_exactly_once(&rs, 240);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("hunter2"), "a secret reached the results");
    assert!(
        !text.contains("mock-secret"),
        "a Set-Cookie value reached the results"
    );
    let by_line: HashMap<u64, &Value> = rs
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r))
        .collect();
    for (line, want) in [
        (10, "line 10: not a valid job object"),
        (100, "unknown method \"BREW\""),
        (150, "line 150: invalid url"),
    ] {
        let e = &by_line[&line]["error"];
        assert_eq!(e["kind"], "invalid_input");
        assert!(e["message"].as_str().unwrap().contains(want), "{e}");
    }
    let ok = by_line[&1];
    assert_eq!(
        (ok["ok"].as_bool(), ok["status"].as_u64(), ok["id"].as_str()),
        (Some(true), Some(200), Some("j0"))
    );
    assert_eq!(ok["meta"]["n"], 0);
    assert_eq!(ok["headers"]["set-cookie"], "REDACTED");
}

#[test]
fn retry_after_pauses_only_that_host_and_is_honoured() {
    let s = Scenario::new("fast,limited").jobs(3, |i, m| match i {
        0 => format!(
            r#"{{"url":"{}/busy?status=429&retry_after=1"}}"#,
            m.url("limited")
        ),
        _ => format!(r#"{{"url":"{}/{i}?latency_ms=200"}}"#, m.url("fast")),
    });
    s.run(&["--retries", "2", "--retry-base-ms", "1"]).exit(1);
    let rs = s.results();
    let busy = rs.iter().find(|r| r["line"] == 1).unwrap();
    assert_eq!(
        (busy["status"].as_u64(), busy["attempts"].as_u64()),
        (Some(429), Some(3))
    );
    assert!(
        busy["elapsed_ms"].as_f64().unwrap() >= 2000.0,
        "two 1 s Retry-After waits: {busy}"
    );
    assert!(
        busy["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attempts exhausted"),
        "{busy}"
    );
    for r in rs.iter().filter(|r| r["line"] != 1) {
        assert!(
            r["elapsed_ms"].as_f64().unwrap() < 1500.0,
            "the other host was paused too: {r}"
        );
    }
    assert_eq!(s.mock.stats("limited")["requests"], 3);
}

#[test]
fn a_fail_fast_breaker_stops_traffic_to_a_dead_host_while_others_proceed() {
    let sc = Scenario::new("fast,slow").jobs(200, |i, m| {
        if i % 2 == 0 {
            format!(r#"{{"url":"{}/dead?status=503"}}"#, m.url("fast"))
        } else {
            format!(r#"{{"url":"{}/alive"}}"#, m.url("slow"))
        }
    });
    sc.run(&[
        "--retries",
        "0",
        "--per-host-concurrency",
        "1",
        "--breaker-min-calls",
        "5",
        "--breaker-window-s",
        "60",
        "--breaker-cool-down-s",
        "60",
        "--breaker-fail-fast",
    ])
    .exit(1);
    assert_eq!(
        sc.mock.stats("fast")["requests"],
        5,
        "the breaker opened after 5 failures"
    );
    let rs = sc.results();
    assert_exactly_once(&rs, 200);
    let alive_ok = rs
        .iter()
        .filter(|r| r["line"].as_u64().unwrap() % 2 == 0 && r["ok"] == true)
        .count();
    assert_eq!(alive_ok, 100, "the healthy host was not affected");
    let open = rs
        .iter()
        .filter(|r| r["error"]["kind"] == "circuit_open")
        .count();
    assert_eq!(open, 95);
    let s = sc.summary();
    assert_eq!(
        (
            s["breaker_openings"].as_u64(),
            s["ok"].as_u64(),
            s["exit_code"].as_u64()
        ),
        (Some(1), Some(100), Some(1))
    );
}

#[test]
fn kill_9_at_random_points_then_resume_leaves_every_job_exactly_once() {
    let mock = Mock::start("fast,slow");
    let dir = tempfile::tempdir().unwrap();
    let n = 5000;
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let host = if i % 3 == 0 {
                mock.url("slow")
            } else {
                mock.url("fast")
            };
            format!(r#"{{"id":"k{i}","url":"{host}/k/{i}?latency_ms=3"}}"#)
        })
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let args = |resume: bool| {
        let mut a = vec![
            "run".to_string(),
            jobs.display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "-q".into(),
            "--rate".into(),
            "800/s".into(),
            "--burst".into(),
            "50".into(),
            "--fsync-interval-ms".into(),
            "5".into(),
        ];
        if resume {
            a.push("--resume".into());
        }
        a
    };
    let mut kills = 0;
    for round in 0..12 {
        let mut child = Command::new(BIN)
            .args(args(round > 0))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + fastrand::u64(0..250)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 10, "only {kills} runs were killed mid-way");
    let before = results(&out).len();
    assert!(
        before > 0 && before < n,
        "the kills should leave partial results: {before}"
    );
    let o = Command::new(BIN).args(args(true)).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_exactly_once(&results(&out), n as u64);
    // Resuming a finished run does nothing and changes nothing.
    let len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(
        Command::new(BIN).args(args(true)).status().unwrap().code(),
        Some(0)
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), len);
}

/// Starts `corral` with `args`, waits (bounded, 10 s) until `out` holds at least `lines`
/// results, so the signal lands mid-run, then sends SIGINT and waits for the process. Returns
/// the results seen before the signal and the process output.
#[cfg(unix)]
fn interrupt_once_written(
    args: &[&str],
    out: &Path,
    lines: usize,
) -> (usize, std::process::Output) {
    let child = Command::new(BIN)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = 0;
    for _ in 0..500 {
        std::thread::sleep(Duration::from_millis(20));
        seen = std::fs::read_to_string(out)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if seen >= lines {
            break;
        }
    }
    assert!(seen >= lines, "the run did not start writing results");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    (seen, child.wait_with_output().unwrap())
}

/// Runs `args` again with `--resume` and checks that it ends well with every one of the `n`
/// jobs in `out` exactly once.
#[cfg(unix)]
fn resume_finishes(args: &[&str], out: &Path, n: u64) {
    let o = Command::new(BIN)
        .args(args)
        .arg("--resume")
        .arg("-q")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_exactly_once(&results(out), n);
}

#[cfg(unix)]
#[test]
fn ctrl_c_drains_in_flight_exits_130_and_resume_finishes() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"url":"{}/s/{i}?latency_ms=400"}}"#, mock.url("fast")))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let base = [
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-c",
        "4",
        "--per-host-concurrency",
        "4",
    ];
    let (seen, o) = interrupt_once_written(&base, &out, 4);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let partial = results(&out);
    // 4 jobs were in flight at the signal (40 jobs of 400 ms, 4 at a time): they are drained.
    assert!(
        partial.len() >= seen + 4 && partial.len() < 40,
        "{seen} before, {} after",
        partial.len()
    );
    assert!(
        partial.iter().all(|r| r["ok"] == true),
        "drained jobs completed normally"
    );
    resume_finishes(&base, &out, 40);
}

#[test]
fn bad_options_and_unreadable_input_exit_2_and_write_nothing() {
    // Each option's refusal is a unit test of the parse/check step (`flags.rs`); here one of
    // them shows the process's side: exit 2, nothing written.
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_jobs(
        dir.path(),
        &[r#"{"url":"http://127.0.0.1:1/"}"#.to_string()],
    );
    let out = dir.path().join("out.jsonl");
    for (args, want) in [
        (
            vec![
                "run",
                "/nonexistent/jobs.jsonl",
                "-o",
                out.to_str().unwrap(),
            ],
            "cannot read jobs file",
        ),
        (
            vec![
                "run",
                jobs.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--concurrency",
                "0",
            ],
            "at least 1",
        ),
        (
            vec![
                "run",
                jobs.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--config",
                "/nonexistent.toml",
            ],
            "cannot read config",
        ),
        (
            vec![
                "run",
                jobs.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--bogus",
            ],
            "unexpected argument",
        ),
    ] {
        let o = corral(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} created the results file");
    }
    std::fs::write(&out, "{\"line\":1}\n").unwrap();
    let o = corral(&["run", jobs.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"line\":1}\n",
        "an existing file was touched"
    );
}

#[test]
fn urls_mode_stdin_and_config_file() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("corral.toml");
    std::fs::write(&cfg, "per_host_concurrency = 2\nretries = 0\nheader = [\"X-From-Config: yes\"]\nsave_body = true\n").unwrap();
    let input = format!(
        "# comment\n{0}/one?size=5\n\n{0}/two?size=3\nftp://nope\n",
        mock.url("fast")
    );
    let mut child = Command::new(BIN)
        .args([
            "run",
            "-",
            "--urls",
            "-q",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let rs: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rs.len(), 3);
    let by_line: HashMap<u64, &Value> = rs
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(by_line[&2]["body"], ".....");
    assert_eq!(by_line[&4]["body"], "...");
    assert!(by_line[&5]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("line 5"));
}

#[test]
fn connections_the_server_closes_are_replaced_without_a_retry() {
    // Every other response closes its connection; the next request on that connection must go
    // out on a fresh one, not fail and not count as a retry.
    let sc = Scenario::new("fast").jobs(300, |i, m| {
        let close = if i % 2 == 0 { "&close=1" } else { "" };
        format!(r#"{{"url":"{}/c?i={i}{close}"}}"#, m.url("fast"))
    });
    sc.run(&[
        "-c",
        "8",
        "--per-host-concurrency",
        "4",
        "--retries",
        "0",
        "--threads",
        "2",
    ])
    .exit(0);
    let rs = sc.results();
    assert_exactly_once(&rs, 300);
    assert!(rs.iter().all(|r| r["ok"] == true && r["attempts"] == 1));
    let s = sc.mock.stats("fast");
    assert_eq!(s["requests"], 300, "{s}");
    // ~150 closed connections were replaced, and the others were reused: far fewer than 300.
    let conns = s["connections"].as_u64().unwrap();
    assert!((150..=230).contains(&conns), "{s}");
}

#[test]
fn global_concurrency_holds_across_worker_threads() {
    let sc = Scenario::new("fast").jobs(100, |i, m| {
        format!(r#"{{"url":"{}/g?i={i}&latency_ms=20"}}"#, m.url("fast"))
    });
    // 5 slots over 3 threads (2 + 2 + 1); the per-host limit is far above, so only the global
    // one can hold the server's count down.
    sc.run(&["-c", "5", "--per-host-concurrency", "50", "--threads", "3"])
        .exit(0);
    assert_exactly_once(&sc.results(), 100);
    let s = sc.mock.stats("fast");
    let max = s["max_in_flight"].as_u64().unwrap();
    // Never above 5; and the slots of all threads were used (one thread alone has at most 2).
    assert!((3..=5).contains(&max), "{s}");
}

#[test]
fn a_slow_host_does_not_hold_up_the_others() {
    // 20 jobs for a host served one at a time, 150 ms each, come first in the input; then 100
    // fast ones. The slow host's waiting jobs hold no global slot, so the fast jobs run while
    // it works through its queue.
    let sc = Scenario::new("fast,slow").jobs(120, |i, m| match i {
        0..20 => format!(
            r#"{{"id":"s{i}","url":"{}/s?i={i}&latency_ms=150"}}"#,
            m.url("slow")
        ),
        _ => format!(r#"{{"id":"f{i}","url":"{}/f?i={i}"}}"#, m.url("fast")),
    });
    sc.run(&["-c", "4", "--per-host-concurrency", "1"]).exit(0);
    let rs = sc.results();
    assert_exactly_once(&rs, 120);
    // Results are written as jobs finish: all 100 fast ones land before the 5th slow one
    // (100 fast requests take well under 4 x 150 ms). Were the slow jobs to hold the global
    // slots while they wait, the fast ones could only start after most slow ones.
    let is_fast = |r: &Value| r["id"].as_str().unwrap().starts_with('f');
    let last_fast = rs.iter().rposition(is_fast).unwrap();
    let slow_before_last_fast = rs[..last_fast].iter().filter(|r| !is_fast(r)).count();
    assert!(
        slow_before_last_fast < 5,
        "{slow_before_last_fast} slow jobs finished before the last fast one"
    );
    assert!(sc.mock.stats("slow")["max_in_flight"].as_u64().unwrap() <= 1);
}

#[cfg(unix)]
#[test]
fn ctrl_c_does_not_start_jobs_still_waiting_for_their_host() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    // One request at a time to this host: the other jobs are taken and wait for it.
    let lines: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"url":"{}/w/{i}?latency_ms=300"}}"#, mock.url("fast")))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let base = [
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-c",
        "4",
        "--per-host-concurrency",
        "1",
    ];
    let (seen, o) = interrupt_once_written(&base, &out, 1);
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The one request under way is drained; the waiting jobs (the drain deadline would let
    // them all run one by one) are left for --resume.
    let partial = results(&out).len();
    assert!(
        partial <= seen + 2,
        "{seen} before the signal, {partial} after"
    );
    resume_finishes(&base, &out, 12);
}

#[test]
fn a_short_input_still_uses_every_threads_slots() {
    let sc = Scenario::new("slow").jobs(8, |i, m| {
        format!(r#"{{"url":"{}/t?i={i}&latency_ms=150"}}"#, m.url("slow"))
    });
    // One slot per thread: were one thread to take the whole (short) input in one chunk, the
    // other would sit idle and the server would never see two requests at once.
    sc.run(&["-c", "2", "--per-host-concurrency", "2", "--threads", "2"])
        .exit(0);
    assert_exactly_once(&sc.results(), 8);
    assert_eq!(sc.mock.stats("slow")["max_in_flight"], 2);
}

#[test]
fn run_serves_prometheus_metrics_while_it_goes() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    // 30 jobs of 100 ms one at a time: three seconds to scrape in.
    let jobs = mock.write_gets(dir.path(), "fast", 30, "?latency_ms=100");
    let out = dir.path().join("out.jsonl");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args([
            "run",
            path_str(&jobs),
            "-o",
            path_str(&out),
            "-q",
            "-c",
            "1",
            "--metrics-addr",
            &addr,
        ])
        .spawn()
        .unwrap();
    let scrape = || -> Option<String> {
        let mut c = std::net::TcpStream::connect(&addr).ok()?;
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut c, &mut text).ok()?;
        Some(text)
    };
    // Bounded: until a scrape shows requests to the host under way.
    let key = mock.key("fast");
    let mut seen = None;
    for _ in 0..100 {
        if let Some(t) = scrape().filter(|t| t.contains(&format!("host=\"{key}\"}}"))) {
            seen = Some(t);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    let text = seen.expect("a scrape during the run showed the host");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    for name in [
        "corral_jobs_done_total",
        "corral_jobs_in_flight",
        "corral_retries_total",
        "corral_host_requests_total",
        "corral_host_breaker_open",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
    }
    assert!(
        !text.contains("corral_jobs_held"),
        "a plain run holds no queue's jobs"
    );
}

/// `--dry-run` sends nothing and opens no results file: it prints each request as it would go,
/// secrets redacted, and a table per host; an invalid line makes it exit 1.
#[test]
fn a_dry_run_prints_the_requests_and_sends_nothing() {
    let sc = Scenario::new("fast").jobs(4, |i, m| match i {
        3 => "not json".to_string(),
        _ => format!(
            r#"{{"url":"{}/d/{i}?api_key=sk-query","headers":{{"Authorization":"Bearer sk-header"}},"cost":10}}"#,
            m.url("fast")
        ),
    });
    let o = corral(&[
        "run",
        path_str(&sc.jobs),
        "-o",
        path_str(&sc.out),
        "--dry-run",
        "--per-host-rate",
        "1/s",
        "-H",
        "X-Api-Key: sk-flag",
    ]);
    assert_exit(&o, 1);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("sk-"), "a secret shown: {text}");
    assert!(
        text.contains("line 1: GET") && text.contains("authorization: REDACTED"),
        "{text}"
    );
    assert!(text.contains("line 4: invalid"), "{text}");
    assert!(
        text.contains(&sc.mock.key("fast")) && text.contains("2.0 s"),
        "{text}"
    );
    assert!(!sc.out.exists(), "no results file");
    assert_eq!(sc.mock.stats("fast")["requests"], 0, "nothing sent");
    // The first N lines only: all valid, exit 0.
    let o = corral(&["run", path_str(&sc.jobs), "--dry-run", "2"]);
    assert_exit(&o, 0);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("line 2:") && !text.contains("line 3:"),
        "{text}"
    );
}

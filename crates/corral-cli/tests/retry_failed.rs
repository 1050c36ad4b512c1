//! End-to-end: `--resume --retry-failed` runs failed jobs again and leaves one line per job,
//! the newest, even when killed half-way and run again. The jobs go to the `second-try` host:
//! each fails with 503 the first time it is asked for, and succeeds the next.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// `corral run` of the scenario, no retries and no breaker, with `extra`.
fn run(s: &Scenario, extra: &[&str]) -> Ran {
    s.run(&[&["--retries", "0", "--no-breaker"][..], extra].concat())
}

#[test]
fn failed_jobs_run_again_and_each_keeps_one_line_the_newest() {
    let s = Scenario::new("second-try").gets("second-try", 200, "");
    run(&s, &[]).exit(1);
    assert!(s.results().iter().all(|r| r["ok"] == false));
    // Without --resume it is refused, before anything is touched.
    run(&s, &["--retry-failed"]).exit(2);
    assert_eq!(s.results().len(), 200);

    run(&s, &["--resume", "--retry-failed"]).exit(0);
    let rs = s.results();
    assert_exactly_once(&rs, 200);
    assert!(
        rs.iter().all(|r| r["ok"] == true),
        "the newest result of each job"
    );
    let retried = std::fs::read_to_string(s.dir.path().join("out.jsonl.retried")).unwrap();
    assert_eq!(
        retried.lines().count(),
        200,
        "the old results are kept aside"
    );
    assert_eq!(s.mock.stats("second-try")["requests"], 400);
    // Nothing failed any more: a second pass sends nothing.
    run(&s, &["--resume", "--retry-failed"]).exit(0);
    assert_eq!(s.mock.stats("second-try")["requests"], 400);
}

#[test]
fn only_the_kinds_asked_for_run_again() {
    let s = Scenario::new("second-try").jobs(40, |i, m| {
        if i % 2 == 0 {
            format!(r#"{{"url":"{}/item/{i}"}}"#, m.url("second-try"))
        } else {
            "{\"url\":\"http://127.0.0.1:1/refused\"}".to_string()
        }
    });
    run(&s, &[]).exit(1);
    // The exit code speaks of the jobs this run ran (as with any --resume): all ok.
    run(&s, &["--resume", "--retry-failed", "http_status"]).exit(0);
    let rs = s.results();
    assert_exactly_once(&rs, 40);
    for r in &rs {
        let even = r["line"].as_u64().unwrap() % 2 == 1;
        assert_eq!(r["ok"] == true, even, "{r}");
        if !even {
            assert_eq!(r["error"]["kind"], "connect");
        }
    }
    let e = run(&s, &["--resume", "--retry-failed", "nonsense"])
        .exit(2)
        .stderr();
    assert!(e.contains("not an error kind"), "{e}");
}

/// Killed with SIGKILL half-way through the pass, then the same command again: every job
/// once, all ok.
#[cfg(unix)]
#[test]
fn a_pass_killed_half_way_and_run_again_still_leaves_one_line_per_job() {
    let s = Scenario::new("second-try").gets("second-try", 300, "?latency_ms=20");
    let (jobs, out) = (&s.jobs, &s.out);
    run(&s, &["-c", "8"]).exit(1);
    let pass = [
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--retries",
        "0",
        "--no-breaker",
        "-c",
        "8",
        "--fsync-interval-ms",
        "10",
        "--resume",
        "--retry-failed",
    ];
    let mut child = Command::new(BIN)
        .args(pass)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until some of the new results are in (the pass took all 300 failures out first).
    let mut seen = 0;
    for _ in 0..500 {
        std::thread::sleep(Duration::from_millis(20));
        seen = std::fs::read_to_string(out)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if (20..300).contains(&seen) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!((20..300).contains(&seen), "killed after {seen} results");
    let o = corral(&pass);
    assert_exit(&o, 0);
    let rs = results(out);
    assert_exactly_once(&rs, 300);
    assert!(rs.iter().all(|r| r["ok"] == true));
}

//! End-to-end: what every request passes, and which results count as ok.

mod common;

use common::*;

/// A host that drops 20 % of connections: requests sent again on a new connection (after a
/// reused one was closed under them) pass the rate gate like any other, so the host never sees
/// more than rate + burst in a second. They used to go around it (79 requests in a second
/// against 60/s, burst 5).
#[test]
fn requests_sent_again_on_a_new_connection_pass_the_rate_gate() {
    let mock = Mock::start("reset:20");
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..400)
        .map(|i| format!(r#"{{"url":"{}/item/{i}"}}"#, mock.url("reset")))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let o = corral(&[
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--per-host-rate",
        "100/s",
        "--per-host-burst",
        "5",
        "--retries",
        "5",
        "--no-breaker",
    ]);
    assert_exit(&o, 0);
    assert_exactly_once(&results(&out), 400);
    let stats = mock.stats("reset");
    let max = stats["max_per_second"].as_u64().unwrap();
    assert!(
        max <= 105,
        "{max} requests in one second: {}",
        stats["per_second"]
    );
}

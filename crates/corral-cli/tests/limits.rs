//! End-to-end: what every request passes, and which results count as ok.

mod common;

use common::*;

/// A host that drops 20 % of connections: requests sent again on a new connection (after a
/// reused one was closed under them) pass the rate gate like any other, so the host never sees
/// more than rate + burst in a second. They used to go around it (79 requests in a second
/// against 60/s, burst 5).
#[test]
fn requests_sent_again_on_a_new_connection_pass_the_rate_gate() {
    let s = Scenario::new("reset:20").gets("reset", 400, "");
    s.run(&[
        "--per-host-rate",
        "100/s",
        "--per-host-burst",
        "5",
        "--retries",
        "5",
        "--no-breaker",
    ])
    .exit(0);
    assert_exactly_once(&s.results(), 400);
    let stats = s.mock.stats("reset");
    let max = stats["max_per_second"].as_u64().unwrap();
    assert!(
        max <= 105,
        "{max} requests in one second: {}",
        stats["per_second"]
    );
}

/// `--accept` says which statuses are ok: a 404 that is an answer, not a failure.
#[test]
fn accepted_statuses_count_as_ok_and_others_fail() {
    let s = Scenario::new("fast").jobs(20, |i, m| {
        let status = if i % 2 == 0 { 200 } else { 404 };
        format!(r#"{{"url":"{}/item/{i}?status={status}"}}"#, m.url("fast"))
    });
    s.run(&["--overwrite", "--accept", "200-299,404"]).exit(0);
    let rs = s.results();
    assert!(rs.iter().all(|r| r["ok"] == true), "404s accepted");
    s.run(&["--overwrite", "--accept", "200"]).exit(1);
    let rs = s.results();
    let failed: Vec<_> = rs.iter().filter(|r| r["ok"] == false).collect();
    assert_eq!(failed.len(), 10);
    assert!(failed
        .iter()
        .all(|r| r["status"] == 404 && r["error"]["kind"] == "http_status"));
}

/// `--halt-after-failures`: the run stops taking jobs, exits 1 saying why, and `--resume`
/// finishes the rest, every job once.
#[test]
fn too_many_failures_halt_the_run_and_resume_finishes_it() {
    let s = Scenario::new("fast").gets("fast", 300, "?status=500");
    let stderr = s
        .run(&[
            "-c",
            "2",
            "--retries",
            "0",
            "--no-breaker",
            "--halt-after-failures",
            "5",
        ])
        .exit(1)
        .stderr();
    assert!(
        stderr.contains("halted") && stderr.contains("--halt-after-failures 5"),
        "{stderr}"
    );
    let done = s.results().len();
    assert!((5..=50).contains(&done), "{done} jobs ran");
    s.run(&["--resume", "--retries", "0", "--no-breaker"])
        .exit(1);
    assert_exactly_once(&s.results(), 300);
}

/// `[hosts."..."]` in the config file: a host takes its own concurrency, rate, headers and
/// retries; the others keep the run's.
#[test]
fn per_host_settings_from_the_config_apply_to_their_host_only() {
    let mock = Mock::start("fast,slow");
    let dir = tempfile::tempdir().unwrap();
    let (fast, slow) = (mock.url("fast"), mock.url("slow"));
    let fast_key = fast.trim_start_matches("http://");
    let config = dir.path().join("corral.toml");
    std::fs::write(
        &config,
        format!(
            r#"
per_host_concurrency = 8
retries = 2

[hosts."{fast_key}"]
concurrency = 1
rate = "50/s"
burst = 1
header = ["X-Tenant: blue"]
retries = 0
"#
        ),
    )
    .unwrap();
    let mut lines = Vec::new();
    for i in 0..60 {
        lines.push(format!(r#"{{"url":"{fast}/f/{i}"}}"#));
        lines.push(format!(r#"{{"url":"{slow}/s/{i}"}}"#));
    }
    lines.push(format!(r#"{{"url":"{fast}/down?status=503"}}"#));
    lines.push(format!(r#"{{"url":"{slow}/down?status=503"}}"#));
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let o = run_quiet(
        &jobs,
        &out,
        &[
            "--no-breaker",
            "--retry-base-ms",
            "1",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert_exit(&o, 1);
    let rs = results(&out);
    assert_exactly_once(&rs, 122);
    let attempts = |host: &str| {
        rs.iter()
            .find(|r| r["url"].as_str().unwrap().starts_with(host) && r["ok"] == false)
            .map(|r| r["attempts"].as_u64().unwrap())
    };
    assert_eq!(attempts(fast), Some(1), "retries = 0 for the fast host");
    assert_eq!(attempts(slow), Some(3), "the run's retries = 2 elsewhere");
    let f = mock.stats("fast");
    let s = mock.stats("slow");
    assert_eq!(f["max_in_flight"], 1, "concurrency = 1");
    assert!(
        f["max_per_second"].as_u64().unwrap() <= 51,
        "{}",
        f["per_second"]
    );
    assert!(
        s["max_in_flight"].as_u64().unwrap() > 1,
        "the slow host keeps 8"
    );
    let tenant = |stats: &serde_json::Value| {
        stats["recent"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["headers"]["x-tenant"] == "blue")
    };
    assert!(tenant(&f), "the fast host's jobs carry its header");
    assert!(
        s["recent"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["headers"]["x-tenant"].is_null()),
        "and no other host's"
    );
}

/// A `[hosts]` table with a key corral does not know is refused, naming it and its line.
#[test]
fn an_unknown_per_host_key_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    std::fs::write(
        &config,
        "retries = 1\n\n[hosts.\"api.example.com\"]\nrate = \"5/s\"\nconcurency = 2\n",
    )
    .unwrap();
    let jobs = write_jobs(
        dir.path(),
        &[r#"{"url":"http://127.0.0.1:1/"}"#.to_string()],
    );
    let out = dir.path().join("out.jsonl");
    let o = corral(&[
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_exit(&o, 2);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("concurency") && e.contains("line 5"), "{e}");
    assert!(!out.exists(), "nothing written");
}

/// `--cost-rate`: the sum of the jobs' `cost` per period holds, as the server sees it.
#[test]
fn a_cost_rate_limits_the_sum_of_costs() {
    let s = Scenario::new("fast").jobs(60, |i, m| {
        format!(r#"{{"url":"{}/c/{i}","cost":50}}"#, m.url("fast"))
    });
    s.run(&["--cost-rate", "1000/s"]).exit(0);
    assert_exactly_once(&s.results(), 60);
    // A bucket of 1000 (20 jobs) at once, then 1000 a second (20 jobs): never more than 40
    // in the first second, 20 (+1 at a second's edge) in each after.
    let per_second = s.mock.per_second("fast");
    assert!(per_second.len() >= 2, "{per_second:?}");
    assert!(per_second[0] <= 40, "{per_second:?}");
    assert!(per_second[1..].iter().all(|n| *n <= 21), "{per_second:?}");
    let key = s.mock.key("fast");
    assert_eq!(s.summary()["hosts"][&key]["cost"], 3000, "{}", s.summary());
}

/// `--max-cost`: once the jobs spent the cap, no new job starts, the run halts (exit 1) with
/// each result's `cost`; `--resume` under the same cap sends nothing more, a raised cap
/// finishes the run, each job once.
#[test]
fn a_spend_cap_halts_the_run_and_resume_finishes_it_under_a_raised_cap() {
    let s = Scenario::new("fast").jobs(100, |i, m| {
        format!(r#"{{"url":"{}/c/{i}","cost":10}}"#, m.url("fast"))
    });
    let cap = ["-c", "4", "--max-cost", "300", "--cost-unit", "tokens"];
    let e = s.run(&cap).exit(1).stderr();
    assert!(e.contains("halted") && e.contains("--max-cost 300"), "{e}");
    let first = s.results();
    assert!((30..=34).contains(&first.len()), "{} jobs ran", first.len());
    assert!(first.iter().all(|r| r["cost"] == 10), "{first:?}");
    assert_eq!(s.summary()["cost_unit"], "tokens");
    let seen = s.mock.stats("fast")["requests"].as_u64().unwrap();
    // The same cap again: it is spent already, nothing is sent.
    s.run(&[&cap[..], &["--resume"][..]].concat()).exit(1);
    assert_eq!(s.results().len(), first.len());
    assert_eq!(s.mock.stats("fast")["requests"].as_u64().unwrap(), seen);
    // A raised cap finishes the run.
    s.run(&["--resume", "--max-cost", "2000"]).exit(0);
    assert_exactly_once(&s.results(), 100);
}

/// `--cost-from-response`: the real cost read from each response is settled, so jobs that
/// cost more than they said slow the next ones down, and the summary counts what was spent.
#[test]
fn costs_read_from_responses_are_settled() {
    let s = Scenario::new("fast").gets("fast", 30, "?usage=100");
    s.run(&[
        "-c",
        "1",
        "--cost-rate",
        "1000/s",
        "--cost-from-response",
        "/usage/total_tokens",
    ])
    .exit(0);
    let key = s.mock.key("fast");
    assert_eq!(s.summary()["hosts"][&key]["cost"], 3000, "{}", s.summary());
    assert!(
        s.results().iter().all(|r| r["cost"] == 100),
        "each result's settled cost"
    );
    // Each job said 1 and cost 100: after the first second's bucket, ~10 a second.
    let per_second = s.mock.per_second("fast");
    assert!(per_second.len() >= 2, "{per_second:?}");
    assert!(per_second[1..].iter().all(|n| *n <= 11), "{per_second:?}");
}

/// `--per-host-cost-rate`: each host has its own budget of costs.
#[test]
fn a_per_host_cost_rate_holds_for_each_host_on_its_own() {
    let mock = Mock::start("fast,slow");
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for i in 0..40 {
        lines.push(format!(
            r#"{{"url":"{}/c/{i}","cost":100}}"#,
            mock.url("fast")
        ));
        lines.push(format!(
            r#"{{"url":"{}/c/{i}","cost":100}}"#,
            mock.url("slow")
        ));
    }
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let o = run_quiet(&jobs, &out, &["--per-host-cost-rate", "1000/s"]);
    assert_exit(&o, 0);
    for host in ["fast", "slow"] {
        let per_second = mock.per_second(host);
        // 10 at once and 10 a second: at most 20 in the first second, 11 after.
        assert!(per_second.len() >= 2, "{host}: {per_second:?}");
        assert!(per_second[0] <= 20, "{host}: {per_second:?}");
        assert!(
            per_second[1..].iter().all(|n| *n <= 11),
            "{host}: {per_second:?}"
        );
    }
}

/// `--per-host-rate auto` finds a host's limit (here 100 requests a second, 429 above) with
/// few push-backs, and the summary says what it found.
#[test]
fn an_auto_rate_finds_the_hosts_limit() {
    let mock = Mock::start("limited:100");
    let dir = tempfile::tempdir().unwrap();
    let jobs = mock.write_gets(dir.path(), "limited", 600, "");
    let (out, sum) = (dir.path().join("out.jsonl"), dir.path().join("s.json"));
    let o = corral(&[
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--per-host-rate",
        "auto:20/s",
        "--summary-json",
        sum.to_str().unwrap(),
    ]);
    assert_exit(&o, 0);
    assert_exactly_once(&results(&out), 600);
    let s = summary(&sum);
    let key = mock
        .url("limited")
        .trim_start_matches("http://")
        .to_string();
    let found = s["hosts"][&key]["rate_found_per_s"].as_f64().unwrap();
    assert!((50.0..=170.0).contains(&found), "found {found}/s");
    let stats = mock.stats("limited");
    let throttled = stats["statuses"]["429"].as_u64().unwrap_or(0);
    let requests = stats["requests"].as_u64().unwrap();
    assert!(
        throttled * 10 < requests,
        "{throttled} of {requests} answered 429"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("rate found/s"), "{stderr}");
}

/// A `[hosts]` table's `connect_timeout_ms` bounds connecting to its host: a listener whose
/// accept queue is full (nobody accepts) leaves a connect hanging, on loopback, until then.
#[test]
fn a_hosts_connect_timeout_is_its_own() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue: further connects get no answer.
    let filler: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).ok()
        })
        .collect();
    assert!(!filler.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    std::fs::write(
        &config,
        format!("connect_timeout_ms = 60000\n\n[hosts.\"{addr}\"]\nconnect_timeout_ms = 300\n"),
    )
    .unwrap();
    let jobs = write_jobs(dir.path(), &[format!(r#"{{"url":"http://{addr}/x"}}"#)]);
    let out = dir.path().join("out.jsonl");
    let o = run_quiet(
        &jobs,
        &out,
        &["--retries", "0", "--config", path_str(&config)],
    );
    assert_exit(&o, 1);
    let r = &results(&out)[0];
    assert_eq!(r["error"]["kind"], "connect", "{r}");
    let took = r["elapsed_ms"].as_f64().unwrap();
    assert!(
        took < 10_000.0,
        "{took} ms: the run's 60 s, not the host's 300 ms"
    );
    drop(listener);
}

/// A server's pause is capped by `--max-retry-after-s` whatever header asks for it: an
/// allowance spent until a far `RateLimit-Reset` (seconds, or a Unix time in 2100) held the
/// host's other jobs until the process was killed. The summary says the pauses were cut.
#[test]
fn a_far_ratelimit_reset_pauses_a_host_no_longer_than_max_retry_after() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let base = mock.url("fast");
    let mut lines = vec![
        format!(
            r#"{{"url":"{base}/a?status=429&ratelimit_remaining=0&ratelimit_reset=99999999999"}}"#
        ),
        format!(
            r#"{{"url":"{base}/b?status=429&ratelimit_remaining=0&ratelimit_reset=4102444800"}}"#
        ),
    ];
    lines.extend((0..6).map(|i| format!(r#"{{"url":"{base}/ok?i={i}"}}"#)));
    let jobs = write_jobs(dir.path(), &lines);
    let (out, sum) = (dir.path().join("out.jsonl"), dir.path().join("s.json"));
    let o = corral_within(
        60,
        &[
            "run",
            path_str(&jobs),
            "-o",
            path_str(&out),
            "-q",
            "-c",
            "1",
            "--retries",
            "0",
            "--per-host-rate",
            "auto",
            "--max-retry-after-s",
            "1",
            "--summary-json",
            path_str(&sum),
        ],
    );
    assert_exit(&o, 1);
    let rs = results(&out);
    assert_exactly_once(&rs, 8);
    assert_eq!(rs.iter().filter(|r| r["ok"] == true).count(), 6);
    let s = summary(&sum);
    let notes = s["notes"].to_string();
    assert!(notes.contains("2 pauses asked for by servers"), "{s}");
}

/// One response's claimed cost cannot hold a cost-limited run: a claim larger than the cost
/// rate's bucket (1e308, 2^64, 1e12 tokens against 1000/s) is settled at the bucket, and a
/// claim that is not a number at the job's own cost; the summary counts both.
#[test]
fn a_huge_or_unreadable_claimed_cost_is_bounded_and_counted() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let base = mock.url("fast");
    let mut lines: Vec<String> = [
        "1e308",
        "18446744073709551616",
        "1000000000000",
        "%22many%22",
    ]
    .iter()
    .map(|u| format!(r#"{{"url":"{base}/c?usage={u}"}}"#))
    .collect();
    lines.extend((0..17).map(|i| format!(r#"{{"url":"{base}/c?usage=1&i={i}"}}"#)));
    let jobs = write_jobs(dir.path(), &lines);
    let (out, sum) = (dir.path().join("out.jsonl"), dir.path().join("s.json"));
    let o = corral_within(
        60,
        &[
            "run",
            path_str(&jobs),
            "-o",
            path_str(&out),
            "-q",
            "-c",
            "1",
            "--cost-rate",
            "1000/s",
            "--cost-from-response",
            "/usage/total_tokens",
            "--summary-json",
            path_str(&sum),
        ],
    );
    assert_exit(&o, 0);
    assert_exactly_once(&results(&out), 21);
    let s = summary(&sum);
    // Three claims cut to the bucket (1000 each), one unreadable (its job's cost, 1), 17 of 1.
    assert_eq!(
        s["hosts"][mock.key("fast")]["cost"],
        3 * 1000 + 1 + 17,
        "{s}"
    );
    let notes = s["notes"].to_string();
    assert!(notes.contains("3 costs claimed by responses"), "{s}");
    assert!(notes.contains("1 responses had no number"), "{s}");
}

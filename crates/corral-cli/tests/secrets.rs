//! Secrets never leave the process, and never follow a redirect to another origin: end-to-end
//! tests against `corral serve-mock` on 127.0.0.1.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const SECRET: &str = "s3cret";

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "a secret leaked into {what}:\n{text}"
    );
}

#[test]
fn no_secret_reaches_results_errors_or_the_summary() {
    let mock = Mock::start("fast");
    let fast = mock.url("fast");
    let dir = tempfile::tempdir().unwrap();
    let lines = vec![
        // reqwest's error message names the raw URL (a body over 64 KiB goes through reqwest).
        format!(
            r#"{{"method":"PUT","url":"https://127.0.0.1:1/x?api_key={SECRET}","body":"{}"}}"#,
            "x".repeat(70_000)
        ),
        // An unparseable URL, with a password and a key.
        format!(r#"{{"url":"http://bob:{SECRET}@[::1/x?api_key={SECRET}"}}"#),
        format!(r#"{{"url":"http://bob:{SECRET}@127.0.0.1:1/x"}}"#),
        // A wrong-typed value is not quoted back.
        format!(r#"{{"url":"{fast}/t","timeout_ms":"{SECRET}"}}"#),
        format!(r#"{{"url":"{fast}/cb#access_token={SECRET}&state=1"}}"#),
        // A Location header with credentials, saved with --save-headers.
        format!(
            r#"{{"url":"{fast}/moved?location=http%3A%2F%2Fu%3Alocpass%40127.0.0.1%3A9%2Fy%3Fkey%3Dlocpass"}}"#
        ),
        format!(r#"{{"url":"{fast}/ok","headers":{{"Authorization":"Bearer {SECRET}"}}}}"#),
    ];
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let header = format!("X-Api-Key: {SECRET}");
    let o = corral(&[
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
        "--save-headers",
        "-H",
        &header,
        "--retries",
        "0",
        // The 3xx is kept, with its Location header (a followed redirect is tested below).
        "--max-redirects",
        "0",
    ]);
    assert_exit(&o, 1);
    assert_no_secret("stderr", &String::from_utf8_lossy(&o.stderr));
    assert_no_secret("the results", &std::fs::read_to_string(&out).unwrap());
    assert_no_secret("the summary", &std::fs::read_to_string(&summary).unwrap());
    let rs = results(&out);
    assert_exactly_once(&rs, lines.len() as u64);
    let by_line = |l: u64| rs.iter().find(|r| r["line"] == l).unwrap().clone();
    // The redacted messages still say what went wrong.
    let m = |l: u64| by_line(l)["error"]["message"].as_str().unwrap().to_string();
    assert!(m(1).contains("api_key=REDACTED"), "{}", m(1));
    assert!(
        m(4).contains("invalid type: string, expected u64"),
        "{}",
        m(4)
    );
    assert_eq!(
        by_line(5)["url"],
        format!("{fast}/cb#access_token=REDACTED&state=1")
    );
    let location = by_line(6)["headers"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(location, "http://REDACTED@127.0.0.1:9/y?key=REDACTED");
}

#[test]
fn options_and_config_errors_do_not_quote_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_jobs(
        dir.path(),
        &[r#"{"url":"http://127.0.0.1:1/"}"#.to_string()],
    );
    let cfg = dir.path().join("corral.toml");
    std::fs::write(
        &cfg,
        format!("header = [\"X-Api-Key: {SECRET}\"]\nretries = \"x\"\n"),
    )
    .unwrap();
    let bearer = format!("Bearer {SECRET}");
    for args in [vec!["--config", cfg.to_str().unwrap()], vec!["-H", &bearer]] {
        let mut a = vec!["run", jobs.to_str().unwrap()];
        a.extend(args);
        let o = corral(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_no_secret("stderr", &err);
        assert!(err.contains("header") || err.contains("retries"), "{err}");
    }
}

/// reqwest carries requests when a proxy is set; the mock, set as the proxy, answers for every
/// host and keeps what each request carried.
#[test]
fn a_redirect_to_another_origin_carries_no_secret_and_no_referer_query() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    // Both origins are loopback addresses; the proxy (the mock) answers for them.
    let start = "http://127.0.0.2:9/start";
    let job = |to: &str| {
        format!(
            r#"{{"url":"{start}?location={to}","headers":{{"X-Api-Key":"k1","Authorization":"Bearer k1","Cookie":"s=k1","Referer":"http://127.0.0.2:9/p?api_key=k1"}}}}"#
        )
    };
    let lines = vec![
        job("http%3A%2F%2F127.0.0.3%3A9%2Fother"),
        job("http%3A%2F%2F127.0.0.2%3A9%2Fsame"),
    ];
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let o = Command::new(BIN)
        .args([
            "run",
            jobs.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ])
        .env("HTTP_PROXY", mock.url("fast"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(results(&out).iter().all(|r| r["status"] == 200));
    let recent = mock.stats("fast")["recent"].clone();
    let seen = |target: &str| -> Value {
        recent
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["target"] == target)
            .unwrap_or_else(|| panic!("{target} was not requested: {recent}"))["headers"]
            .clone()
    };
    let other = seen("http://127.0.0.3:9/other");
    for h in ["x-api-key", "authorization", "cookie", "referer"] {
        assert!(
            other.get(h).is_none(),
            "{h} went to another origin: {other}"
        );
    }
    let same = seen("http://127.0.0.2:9/same");
    assert_eq!(same["x-api-key"], "k1", "{same}");
    assert_eq!(same["authorization"], "Bearer k1", "{same}");
}

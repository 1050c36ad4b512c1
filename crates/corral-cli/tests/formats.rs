//! The files users already have: OpenAI Batch-API lines (no flag needed, relative URLs joined
//! to `--base-url`), CSV rows filled into a `--template`, and CSV results (`--format csv`).

mod common;

use common::*;

#[test]
fn batch_api_lines_run_with_their_custom_ids() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=3)
        .map(|i| {
            format!(
                r#"{{"custom_id": "request-{i}", "method": "POST", "url": "/v1/chat/completions", "body": {{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello {i}"}}]}}}}"#
            )
        })
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let o = run_quiet(&jobs, &out, &["--base-url", mock.url("fast")]);
    assert_exit(&o, 0);
    let rs = results(&out);
    assert_exactly_once(&rs, 3);
    for r in &rs {
        let l = r["line"].as_u64().unwrap();
        assert_eq!(r["id"], format!("request-{l}"), "{r}");
        assert_eq!(r["method"], "POST");
        assert_eq!(
            r["url"],
            format!("{}/v1/chat/completions", mock.url("fast"))
        );
    }
    let recent = mock.stats("fast")["recent"].clone();
    let seen = recent.as_array().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s["target"] == "/v1/chat/completions"
        && s["headers"]["content-type"] == "application/json"));

    // Without --base-url the relative URL is named, the run goes on.
    let o = run_quiet(&jobs, &out, &["--overwrite"]);
    assert_exit(&o, 1);
    let r = &results(&out)[0];
    assert_eq!(r["error"]["kind"], "invalid_input");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--base-url"),
        "{r}"
    );
}

#[test]
fn csv_rows_fill_the_template() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("users.csv");
    std::fs::write(
        &input,
        "user,name,tokens\n7,\"Smith, Jo\",30\n8,Ann \"A\" Lee,12\n9,only two\n",
    )
    .unwrap();
    let template = format!(
        r#"{{"id": "user-{{user}}", "method": "PUT", "url": "{}/users/{{user}}", "json": {{"name": "{{name}}", "note": "{{{{literal}}}}"}}, "cost": "{{tokens}}"}}"#,
        mock.url("fast")
    );
    let out = dir.path().join("out.jsonl");
    let o = corral(&[
        "run",
        path_str(&input),
        "--csv",
        "--template",
        &template,
        "-o",
        path_str(&out),
        "-q",
    ]);
    assert_exit(&o, 1);
    let rs = results(&out);
    let by_line = |l: u64| rs.iter().find(|r| r["line"] == l).unwrap().clone();
    assert_eq!(rs.len(), 3, "the header is not a job: {rs:?}");
    assert_eq!(by_line(2)["id"], "user-7");
    assert_eq!(by_line(2)["status"], 200);
    assert_eq!(by_line(3)["id"], "user-8");
    assert_eq!(by_line(4)["error"]["kind"], "invalid_input");
    assert!(by_line(4)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 fields where the header has 3"));
    let recent = mock.stats("fast")["recent"].clone();
    let seen = recent.as_array().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().any(|s| s["target"] == "/users/7"));

    // A placeholder that names no column fails each row, naming it.
    let o = corral(&[
        "run",
        path_str(&input),
        "--csv",
        "--template",
        r#"{"url": "http://127.0.0.1:1/{nope}"}"#,
        "-o",
        path_str(&out),
        "-q",
        "--overwrite",
    ]);
    assert_exit(&o, 1);
    let r = &results(&out)[0];
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("{nope} names no column"),
        "{r}"
    );
    // --csv without --template is a usage error.
    assert_exit(&corral(&["run", path_str(&input), "--csv"]), 2);
}

#[test]
fn csv_results_have_a_header_and_one_row_per_job() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let fast = mock.url("fast");
    let jobs = write_jobs(
        dir.path(),
        &[
            // A body with commas and quotes.
            format!(r#"{{"id":"a","url":"{fast}/u?usage=5"}}"#),
            format!(r#"{{"id":"b","url":"{fast}/s?status=404"}}"#),
            "{not json".to_string(),
        ],
    );
    let out = dir.path().join("out.csv");
    let o = run_quiet(
        &jobs,
        &out,
        &["--format", "csv", "--save-body", "--retries", "0"],
    );
    assert_exit(&o, 1);
    let mut reader = csv::Reader::from_path(&out).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header[..4], ["line", "id", "method", "url"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let col = |row: &csv::StringRecord, name: &str| {
        row[header.iter().position(|h| h == name).unwrap()].to_string()
    };
    let row = |id: &str| rows.iter().find(|r| col(r, "id") == id).unwrap();
    assert_eq!(col(row("a"), "body"), r#"{"usage":{"total_tokens":5}}"#);
    assert_eq!(col(row("a"), "ok"), "true");
    assert_eq!(col(row("b"), "status"), "404");
    assert_eq!(col(row("b"), "error_kind"), "http_status");
    assert_eq!(col(row("3"), "error_kind"), "invalid_input");
    // CSV results cannot be resumed: --resume reads JSONL.
    let o = run_quiet(&jobs, &out, &["--format", "csv", "--resume"]);
    assert_exit(&o, 2);
}

/// `--http2-prior-knowledge`: h2c to an `http://` host, a host's requests multiplexed over
/// few connections, never more than the per-host concurrency at once.
#[test]
fn http2_prior_knowledge_multiplexes_within_the_per_host_concurrency() {
    let mock = Mock::start("slow");
    let dir = tempfile::tempdir().unwrap();
    let jobs = mock.write_gets(dir.path(), "slow", 60, "");
    let out = dir.path().join("out.jsonl");
    let o = run_quiet(
        &jobs,
        &out,
        &[
            "--http2-prior-knowledge",
            "--threads",
            "1",
            "-c",
            "60",
            "--per-host-concurrency",
            "8",
        ],
    );
    assert_exit(&o, 0);
    assert_exactly_once(&results(&out), 60);
    let stats = mock.stats("slow");
    // One, or two when requests start while the first is being set up (hyper's pool).
    let connections = stats["connections"].as_u64().unwrap();
    assert!(
        connections <= 2,
        "{connections} connections for 60 requests"
    );
    let max = stats["max_in_flight"].as_u64().unwrap();
    assert!((2..=8).contains(&max), "multiplexed, within 8: {max}");
    let recent = stats["recent"].as_array().unwrap();
    assert!(recent.iter().all(|s| s["version"] == "HTTP/2.0"), "{stats}");
}

/// A CSV value cannot reshape the URL it fills: a cell `../admin?delete=1` stays one path
/// segment of the template's path on the template's host (the run's `Authorization` with it),
/// and a template that would take its host from a cell is refused before anything is sent.
#[test]
fn csv_values_are_encoded_where_they_stand_in_the_url() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.csv");
    std::fs::write(&input, "id,host\n../admin?delete=1,127.0.0.1:1\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let template = format!(r#"{{"url": "{}/users/{{id}}"}}"#, mock.url("fast"));
    let o = corral(&[
        "run",
        path_str(&input),
        "--csv",
        "--template",
        &template,
        "-o",
        path_str(&out),
        "-q",
        "-H",
        "Authorization: Bearer s3cret",
    ]);
    assert_exit(&o, 0);
    let recent = mock.stats("fast")["recent"].clone();
    let targets: Vec<&str> = recent
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["target"].as_str())
        .collect();
    assert_eq!(targets, ["/users/..%2Fadmin%3Fdelete%3D1"], "{recent}");
    // A placeholder in the host: refused, exit 2, nothing written.
    let out2 = dir.path().join("out2.jsonl");
    let o = corral(&[
        "run",
        path_str(&input),
        "--csv",
        "--template",
        r#"{"url": "http://{host}/x"}"#,
        "-o",
        path_str(&out2),
        "-q",
        "-H",
        "Authorization: Bearer s3cret",
    ]);
    assert_exit(&o, 2);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("scheme or host"),
        "{o:?}"
    );
    assert!(!out2.exists());
}

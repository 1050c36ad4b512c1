//! One redirect rule for every scheme: `--max-redirects`, each hop through the gates of the
//! host it goes to (checked from the servers' own counters), `final_url` and `redirects` in
//! the result.

mod common;

use common::*;

/// `url` with `?location=` (percent-encoded) to `to`: the mock answers 302 there.
fn via(url: &str, to: &str) -> String {
    let enc: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
    format!("{url}?location={enc}")
}

#[test]
fn a_chain_across_two_hosts_passes_each_hosts_rate_gate() {
    let mock = Mock::start("fast,slow");
    let (a, b) = (mock.url("fast").to_string(), mock.url("slow").to_string());
    let dir = tempfile::tempdir().unwrap();
    // A → B → A: two redirects, A sees two requests a job, B one.
    let lines: Vec<String> = (0..40)
        .map(|i| {
            let end = format!("{a}/end/{i}");
            let mid = via(&format!("{b}/mid/{i}"), &end);
            format!(r#"{{"url":"{}"}}"#, via(&format!("{a}/start/{i}"), &mid))
        })
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let o = run_quiet(&jobs, &out, &["--per-host-rate", "20/s", "-c", "40"]);
    assert_exit(&o, 0);
    let rs = results(&out);
    assert_exactly_once(&rs, 40);
    for r in &rs {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["redirects"], 2, "{r}");
        assert_eq!(r["attempts"], 1, "a hop is not a retry: {r}");
        let end = format!("{a}/end/{}", r["line"].as_u64().unwrap() - 1);
        assert_eq!(r["final_url"], end.as_str(), "{r}");
    }
    assert_eq!(mock.stats("fast")["requests"], 80);
    assert_eq!(mock.stats("slow")["requests"], 40);
    // Each hop waited for its host's rate: no second saw more than rate + burst.
    let per_second = mock.per_second("fast");
    assert!(
        per_second.iter().all(|n| *n <= 21),
        "requests per second to A: {per_second:?}"
    );
}

#[test]
fn max_redirects_zero_keeps_the_3xx_and_too_many_fail_the_job() {
    let mock = Mock::start("fast");
    let a = mock.url("fast").to_string();
    let dir = tempfile::tempdir().unwrap();
    let chain = via(
        &format!("{a}/one"),
        &via(&format!("{a}/two"), &format!("{a}/end")),
    );
    let jobs = write_jobs(dir.path(), &[format!(r#"{{"url":"{chain}"}}"#)]);
    let out = dir.path().join("out.jsonl");

    let o = run_quiet(&jobs, &out, &["--max-redirects", "0"]);
    assert_exit(&o, 0);
    let r = &results(&out)[0];
    assert_eq!(r["status"], 302, "{r}");
    assert!(
        r.get("redirects").is_none() && r.get("final_url").is_none(),
        "{r}"
    );

    let o = run_quiet(&jobs, &out, &["--max-redirects", "1", "--overwrite"]);
    assert_exit(&o, 1);
    let r = &results(&out)[0];
    assert_eq!(r["error"]["kind"], "redirect", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-redirects"),
        "{r}"
    );

    let o = run_quiet(&jobs, &out, &["--overwrite"]);
    assert_exit(&o, 0);
    let r = &results(&out)[0];
    assert_eq!(
        (r["status"].as_u64(), r["redirects"].as_u64()),
        (Some(200), Some(2)),
        "{r}"
    );
}

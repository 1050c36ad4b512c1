//! The blocking runner from plain synchronous code, against a small HTTP/1.1 server on a
//! loopback port (std threads, no async anywhere in the test).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::server;
use corral_engine::blocking::{BlockingError, Runner};
use corral_engine::settings::Settings;

#[test]
fn a_synchronous_program_runs_jobs_and_gets_every_result() {
    let (base, hits) = server(Duration::ZERO);
    let runner = Runner::new(Settings {
        retries: 0,
        ..Settings::default()
    })
    .unwrap();
    let mut jobs: Vec<String> = (0..50)
        .map(|n| format!(r#"{{"url":"{base}/items/{n}"}}"#))
        .collect();
    jobs.push("not a job".into());
    jobs.extend((0..5).map(|n| format!(r#"{{"url":"{base}/fail/{n}"}}"#)));
    let done = runner.run(&jobs).unwrap();
    assert_eq!(done.lines.len(), 56, "one result line per input line");
    let mut seen = BTreeSet::new();
    let mut ok = 0;
    for line in &done.lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(seen.insert(v["line"].as_u64().unwrap()), "{line}");
        if v["ok"] == true {
            ok += 1;
        }
    }
    assert_eq!(seen, (1..=56).collect());
    assert_eq!(ok, 50);
    assert_eq!(done.report.stats.ok, 50);
    assert_eq!(done.report.stats.failed, 6);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        55,
        "the invalid line sent nothing"
    );
    // The runner is reusable.
    let again = runner
        .run([format!(r#"{{"url":"{base}/items/x"}}"#)])
        .unwrap();
    assert_eq!(again.lines.len(), 1);
}

#[test]
fn it_refuses_to_block_inside_a_runtime_and_bad_settings_fail_first() {
    let runner = Runner::new(Settings::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inside = rt.block_on(async { runner.run(["{}"]) });
    assert!(matches!(inside, Err(BlockingError::InsideRuntime)));
    let err = Runner::new(Settings {
        concurrency: 0,
        ..Settings::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("--concurrency"), "{err}");
}

#[test]
fn a_job_submitted_alone_is_waited_for_by_its_ticket() {
    let (base, hits) = server(Duration::ZERO);
    let runner = Runner::new(Settings {
        retries: 0,
        ..Settings::default()
    })
    .unwrap();
    // Submit, do something else, wait: each ticket gets its own job's result.
    let tickets: Vec<_> = (0..20)
        .map(|n| {
            runner
                .submit(format!(r#"{{"url":"{base}/items/{n}"}}"#))
                .unwrap()
        })
        .collect();
    let bad = runner.submit("not a job").unwrap();
    for (n, t) in tickets.into_iter().enumerate() {
        assert_eq!(t.line(), n as u64 + 1);
        let v: serde_json::Value = serde_json::from_str(&t.wait().unwrap()).unwrap();
        assert_eq!(v["line"], n as u64 + 1);
        assert_eq!(v["url"], format!("{base}/items/{n}"));
        assert_eq!(v["ok"], true);
    }
    let v: serde_json::Value = serde_json::from_str(&bad.wait().unwrap()).unwrap();
    assert_eq!(v["error"]["kind"], "invalid_input");
    // From other plain threads too, and the run's report at the end.
    let runner = std::sync::Arc::new(runner);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (r, base) = (runner.clone(), base.clone());
            std::thread::spawn(move || {
                let t = r.submit(format!(r#"{{"url":"{base}/t/{i}"}}"#)).unwrap();
                t.wait().unwrap()
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().contains("\"ok\":true"));
    }
    let report = runner.close().unwrap().unwrap();
    assert_eq!(report.stats.done, 25);
    assert_eq!(hits.load(Ordering::SeqCst), 24);
    assert!(runner.close().unwrap().is_none(), "closed: nothing left");
    // Inside a runtime it refuses, as run does.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inside = rt.block_on(async { runner.submit("{}") });
    assert!(matches!(inside, Err(BlockingError::InsideRuntime)));
}

//! End-to-end: what an accepted response's body must hold (`--require-json`, `--require`),
//! retried when `--retry-on` names `invalid_response`, and what is kept of it (`--extract`).

mod common;

use common::*;
use serde_json::{json, Value};

/// A job line for `/item/{i}` answering `body` (as JSON text), its first answer torn in half
/// when `torn`.
fn answering(m: &Mock, i: usize, body: &str, torn: bool) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("json", body)
        .extend_pairs(torn.then_some(("torn_first", "1")))
        .finish();
    json!({"url": format!("{}/item/{i}?{q}", m.url("fast"))}).to_string()
}

/// Truncated JSON on each job's first answer: with `invalid_response` in `--retry-on` every
/// job ends ok on its second try, its field extracted; without it each fails
/// `invalid_response` at once, saying which check, never the body.
#[test]
fn a_torn_body_is_retried_when_asked_and_its_field_is_extracted() {
    let s = Scenario::new("fast").jobs(20, |i, m| {
        answering(
            m,
            i,
            &format!(r#"{{"choices":[{{"text":"hi {i}"}}]}}"#),
            true,
        )
    });
    let checks = [
        "--require",
        "/choices/0/text",
        "--extract",
        "answer=/choices/0/text",
        "--retry-base-ms",
        "1",
    ];
    s.run(&[&checks[..], &["--retry-on", "5xx,invalid_response"]].concat())
        .exit(0);
    let rs = s.results();
    assert_exactly_once(&rs, 20);
    for r in &rs {
        let i = r["line"].as_u64().unwrap() - 1;
        assert_eq!(
            (r["ok"].as_bool(), r["attempts"].as_u64()),
            (Some(true), Some(2)),
            "{r}"
        );
        assert_eq!(r["extract"]["answer"], format!("hi {i}"), "{r}");
    }
    assert_eq!(s.mock.stats("fast")["requests"], 40);

    // Fresh targets (a new scenario), not retried on invalid_response: each fails at once.
    let s = Scenario::new("fast").jobs(20, |i, m| {
        answering(m, i, r#"{"choices":[{"text":"sk-secret"}]}"#, true)
    });
    s.run(&checks).exit(1);
    let rs = s.results();
    assert_exactly_once(&rs, 20);
    for r in &rs {
        assert_eq!(r["error"]["kind"], "invalid_response", "{r}");
        assert_eq!(
            (r["status"].as_u64(), r["attempts"].as_u64()),
            (Some(200), Some(1))
        );
        let m = r["error"]["message"].as_str().unwrap();
        assert!(m.contains("not JSON") && !m.contains("sk-secret"), "{m}");
        assert_eq!(
            r["extract"]["answer"],
            Value::Null,
            "nothing to extract from"
        );
    }
    assert_eq!(s.summary()["by_error"]["invalid_response"], 20);
}

/// `--require POINTER=VALUE` fails a body whose field holds another value; `--require-json`
/// fails one that is not JSON; `--extract` gets a CSV column each.
#[test]
fn a_field_with_another_value_or_a_body_that_is_not_json_fails_and_csv_has_a_column_each() {
    let s = Scenario::new("fast").jobs(5, |i, m| match i {
        0 => answering(m, i, r#"{"status":"done","n":1}"#, false),
        1 => answering(m, i, r#"{"status":"pending","n":2}"#, false),
        2 => json!({"url": format!("{}/item/2", m.url("fast"))}).to_string(),
        // A job's own `require` stands instead of the run's.
        3 => {
            let mut j: Value =
                serde_json::from_str(&answering(m, i, r#"{"status":"pending","n":2}"#, false))
                    .unwrap();
            j["require"] = json!(["/n=2"]);
            j.to_string()
        }
        _ => json!({"url": format!("{}/item/4", m.url("fast")), "require": ["n"]}).to_string(),
    });
    s.run(&[
        "--require",
        "/status=done",
        "--require-json",
        "--retries",
        "0",
    ])
    .exit(1);
    let rs = s.results();
    let kind = |line: u64| {
        let r = rs.iter().find(|r| r["line"] == line).unwrap();
        (
            r["ok"].as_bool().unwrap(),
            r["error"]["message"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(kind(1), (true, String::new()));
    let (ok, m) = kind(2);
    assert!(
        !ok && m.contains("/status holds another value") && !m.contains("pending"),
        "{m}"
    );
    let (ok, m) = kind(3);
    assert!(!ok && m.contains("not JSON"), "{m}");
    assert_eq!(kind(4), (true, String::new()), "the job's own require");
    let (ok, m) = kind(5);
    assert!(!ok && m.contains("\"require\" holds a JSON pointer"), "{m}");

    let o = corral(&[
        "run",
        path_str(&s.jobs),
        "-q",
        "--format",
        "csv",
        "--extract",
        "n=/n",
        "--extract",
        "state=/status",
    ]);
    assert_exit(&o, 1);
    let text = String::from_utf8(o.stdout).unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let header = rows.headers().unwrap().clone();
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (n, state) = (at("extract.n"), at("extract.state"));
    let mut got: Vec<(String, String)> = rows
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[n].to_owned(), r[state].to_owned())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (String::new(), String::new()),
            (String::new(), String::new()),
            ("1".into(), "done".into()),
            ("2".into(), "pending".into()),
            ("2".into(), "pending".into())
        ]
    );
}

/// Every result's `ttfb_ms` (the attempt's start to the response head), and for a
/// `text/event-stream` answer its `events` and `ttfe_ms` (to the first event with data), from a
/// server that waits known times before each.
#[test]
fn time_to_first_byte_and_to_the_first_event_are_measured() {
    let s = Scenario::new("fast").jobs(2, |i, m| match i {
        0 => json!({"url": format!("{}/s?latency_ms=200&sse=3&first_event_ms=300", m.url("fast"))})
            .to_string(),
        _ => json!({"url": format!("{}/p?latency_ms=100", m.url("fast"))}).to_string(),
    });
    s.run(&["--save-body"]).exit(0);
    let rs = s.results();
    let line = |n: u64| rs.iter().find(|r| r["line"] == n).unwrap().clone();
    let (stream, plain) = (line(1), line(2));
    let ms = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    // The server's own waits are the floor; the ceiling has room for a loaded machine (a
    // busy CI host delayed a head by 50 ms once), and the wait between head and first event,
    // measured by the same clock, is held to 40 ms.
    let (ttfb, ttfe) = (ms(&stream, "ttfb_ms"), ms(&stream, "ttfe_ms"));
    assert!((200.0..300.0).contains(&ttfb), "{stream}");
    assert!((300.0..340.0).contains(&(ttfe - ttfb)), "{stream}");
    assert_eq!(stream["events"], 3, "{stream}");
    assert!(
        stream["body"]
            .as_str()
            .unwrap()
            .contains("data: {\"token\":2}"),
        "the raw stream kept"
    );
    assert!((100.0..200.0).contains(&ms(&plain, "ttfb_ms")), "{plain}");
    assert!(
        plain.get("events").is_none() && plain.get("ttfe_ms").is_none(),
        "{plain}"
    );
}

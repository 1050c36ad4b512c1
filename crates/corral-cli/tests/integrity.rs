//! Nothing lost, nothing run twice: end-to-end tests of what a hostile-input and fault probe of
//! `corral run` found (pipes as input, the jobs file as output, two runs on one results file,
//! corrupt results files, repeated POSTs, write failures), against `corral serve-mock` on
//! 127.0.0.1.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn code_and_stderr(o: &std::process::Output) -> (Option<i32>, String) {
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into())
}

fn fast_jobs(mock: &Mock, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!(r#"{{"url":"{}/p/{i}"}}"#, mock.url("fast")))
        .collect()
}

/// Runs `corral run INPUT -o out` with `feed` written to its standard input by a thread.
fn run_fed(input: &str, out: &Path, feed: String) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["run", input, "-o", out.to_str().unwrap(), "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // Small writes, so the reader sees the input arrive in pieces.
        for piece in feed.as_bytes().chunks(999) {
            if stdin.write_all(piece).is_err() {
                return;
            }
        }
    });
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    o
}

#[test]
fn a_piped_jobs_file_is_read_once_and_every_job_runs() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let feed = fast_jobs(&mock, n).join("\n") + "\n";

    // `corral run /dev/stdin`: a path that is a pipe.
    let out = dir.path().join("stdin.jsonl");
    let o = run_fed("/dev/stdin", &out, feed.clone());
    assert_exit(&o, 0);
    assert_exactly_once(&results(&out), n as u64);

    // A named FIFO, as `<(cat jobs.jsonl)` gives.
    let fifo = dir.path().join("jobs.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = dir.path().join("fifo.jsonl");
    let f = fifo.clone();
    let feeder = std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(f).unwrap();
        for piece in feed.as_bytes().chunks(999) {
            w.write_all(piece).unwrap();
        }
    });
    let o = Command::new(BIN)
        .args(["run", fifo.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .args(["-q"])
        .output()
        .unwrap();
    feeder.join().unwrap();
    assert_exit(&o, 0);
    let rs = results(&out);
    assert_exactly_once(&rs, n as u64);
    assert!(rs.iter().all(|r| r["ok"] == true), "a line was torn apart");
}

#[test]
fn the_jobs_file_is_never_overwritten_by_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"url":"http://127.0.0.1:1/{i}"}}"#))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let before = std::fs::read(&jobs).unwrap();
    let link = dir.path().join("link.jsonl");
    std::fs::hard_link(&jobs, &link).unwrap();
    for out in [&jobs, &link] {
        for flag in ["--overwrite", "--resume"] {
            let o = corral(&[
                "run",
                jobs.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                flag,
                "-q",
            ]);
            let (code, err) = code_and_stderr(&o);
            assert_eq!(code, Some(2), "{flag}: {err}");
            assert!(
                err.contains("jobs file") && err.contains("are the same file"),
                "{err}"
            );
            assert_eq!(std::fs::read(&jobs).unwrap(), before, "{flag}");
        }
    }
    // Through standard input too.
    let o = Command::new(BIN)
        .args(["run", "-", "-o", jobs.to_str().unwrap(), "--overwrite"])
        .stdin(std::fs::File::open(&jobs).unwrap())
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert_eq!(std::fs::read(&jobs).unwrap(), before);
}

#[test]
fn a_second_run_on_the_same_results_file_is_refused_naming_the_first() {
    let mock = Mock::start("slow");
    let dir = tempfile::tempdir().unwrap();
    let n = 400;
    let lines: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"url":"{}/s/{i}?latency_ms=20"}}"#, mock.url("slow")))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let args = |extra: &str| {
        let mut a = vec!["run", jobs.to_str().unwrap(), "-o", out.to_str().unwrap()];
        a.extend([
            "-q",
            "--per-host-concurrency",
            "2",
            "--fsync-interval-ms",
            "5",
        ]);
        if !extra.is_empty() {
            a.push(extra);
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let mut first = Command::new(BIN)
        .args(args(""))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it writes (it holds the lock from before its first result).
    for _ in 0..500 {
        if std::fs::metadata(&out).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for extra in ["--resume", "--overwrite", ""] {
        let o = Command::new(BIN).args(args(extra)).output().unwrap();
        let (code, err) = code_and_stderr(&o);
        assert_eq!(code, Some(2), "{extra}: {err}");
        assert!(
            err.contains(&format!("another corral run (pid {})", first.id())),
            "{extra}: {err}"
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // Once it is gone, resume finishes the run: every job once.
    let o = Command::new(BIN).args(args("--resume")).output().unwrap();
    assert_exit(&o, 0);
    assert_exactly_once(&results(&out), n as u64);
}

#[test]
fn a_corrupt_results_file_is_named_and_repair_sets_the_bad_lines_aside() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_jobs(dir.path(), &fast_jobs(&mock, 20));
    let out = dir.path().join("out.jsonl");
    let o = corral(&["run", jobs.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    // Corrupt it: a huge line number, a torn line in the middle, a line of another input.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = r#"{"line":9223372036854775807}"#;
    lines[7] = r#"{"line":8,"url":"htt"#;
    lines[12] = r#"{"line":21}"#;
    std::fs::write(&out, lines.join("\n") + "\n").unwrap();
    let corrupt = std::fs::read(&out).unwrap();

    let args = |repair: bool| {
        let mut a = vec!["run", jobs.to_str().unwrap(), "-o", out.to_str().unwrap()];
        a.extend(["--resume", "-q"]);
        if repair {
            a.push("--repair");
        }
        corral(&a)
    };
    let (code, err) = code_and_stderr(&args(false));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("out.jsonl:4: names input line 9223372036854775807"),
        "{err}"
    );
    assert!(
        err.contains("3 such line(s)") && err.contains("--repair"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        corrupt,
        "a refusal changes nothing"
    );

    let (code, err) = code_and_stderr(&args(true));
    assert_eq!(code, Some(0), "{err}");
    assert_exactly_once(&results(&out), 20);
    let side = std::fs::read_to_string(dir.path().join("out.jsonl.rejected")).unwrap();
    assert_eq!(side.lines().count(), 3, "{side}");
    assert!(side.contains("9223372036854775807") && side.contains(r#""line":21"#));
}

#[test]
fn a_post_that_may_have_reached_the_server_is_not_sent_again() {
    let mock = Mock::start("slow");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/charge?latency_ms=400", mock.url("slow"));
    let run = |job: String, extra: &[&str]| {
        let jobs = write_jobs(dir.path(), &[job]);
        let out = dir.path().join("out.jsonl");
        let mut a = vec!["run", jobs.to_str().unwrap(), "-o", out.to_str().unwrap()];
        a.extend(["--overwrite", "-q", "--timeout-ms", "100", "--retries", "3"]);
        a.extend(["--retry-base-ms", "1", "--retry-max-ms", "2"]);
        a.extend(extra);
        let o = corral(&a);
        assert_eq!(o.status.code(), Some(1), "{}", code_and_stderr(&o).1);
        results(&out).remove(0)
    };
    let seen = || mock.stats("slow")["requests"].as_u64().unwrap();

    // A POST that timed out: the server has it once, and the result says it may have landed.
    let r = run(
        format!(r#"{{"method":"POST","url":"{url}","body":"x"}}"#),
        &[],
    );
    assert_eq!(seen(), 1, "{r}");
    assert_eq!(r["attempts"], 1, "{r}");
    assert_eq!(r["error"]["kind"], "timeout");
    assert_eq!(r["error"]["maybe_sent"], true, "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));

    // With an Idempotency-Key, or --retry-unsafe, it is retried; so is a GET.
    let keyed =
        format!(r#"{{"method":"POST","url":"{url}","headers":{{"Idempotency-Key":"k1"}}}}"#);
    assert_eq!(run(keyed, &[])["attempts"], 4);
    assert_eq!(seen(), 5);
    let plain = format!(r#"{{"method":"PATCH","url":"{url}"}}"#);
    assert_eq!(run(plain, &["--retry-unsafe"])["attempts"], 4);
    assert_eq!(seen(), 9);
    assert_eq!(run(format!(r#"{{"url":"{url}"}}"#), &[])["attempts"], 4);

    // A POST that could not connect never left: it is retried, and not flagged.
    let r = run(
        r#"{"method":"POST","url":"http://127.0.0.1:1/x"}"#.into(),
        &[],
    );
    assert_eq!(
        (r["attempts"].as_u64(), r["error"]["kind"].as_str()),
        (Some(4), Some("connect"))
    );
    assert!(r["error"].get("maybe_sent").is_none(), "{r}");
}

#[test]
fn the_summary_counts_what_the_results_file_holds() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_jobs(dir.path(), &fast_jobs(&mock, 300));
    let summary = dir.path().join("summary.json");
    let run = |out: &str| {
        corral(&[
            "run",
            jobs.to_str().unwrap(),
            "-o",
            out,
            "-q",
            "--summary-json",
            summary.to_str().unwrap(),
        ])
    };
    // A device is written as a stream: no fsync to fail on.
    let o = run("/dev/null");
    assert_exit(&o, 0);
    // Every write fails (ENOSPC): nothing is in the results, so nothing is counted as done.
    let o = run("/dev/full");
    let (code, err) = code_and_stderr(&o);
    assert_eq!(code, Some(3), "{err}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(
        (s["jobs_done"].as_u64(), s["ok"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    let notes = s["notes"].to_string();
    assert!(
        notes.contains("could not be written") && notes.contains("--resume"),
        "{s}"
    );
}

#[test]
fn what_is_sent_is_what_the_file_says() {
    let mock = Mock::start("fast");
    let fast = mock.url("fast");
    let dir = tempfile::tempdir().unwrap();
    let mut text: Vec<u8> = Vec::new();
    // 1: after a byte order mark.
    text.extend(b"\xEF\xBB\xBF");
    text.extend(format!("{{\"url\":\"{fast}/bom\"}}\n").as_bytes());
    // 2: not UTF-8 (the URL would otherwise be "fixed" to another one).
    text.extend(b"{\"url\":\"");
    text.extend(fast.as_bytes());
    text.extend(b"/caf\xE9\"}\n");
    // 3: longer than --max-line.
    text.extend(
        format!(
            "{{\"url\":\"{fast}/long\",\"body\":\"{}\"}}\n",
            "x".repeat(3000)
        )
        .as_bytes(),
    );
    // 4: a tab inside the URL, which the URL parser would drop.
    text.extend(format!("{{\"url\":\"{fast}/a\\tb\"}}\n").as_bytes());
    // 5: a Content-Length that disagrees with the body.
    text.extend(
        format!(r#"{{"method":"POST","url":"{fast}/cl","body":"abc","headers":{{"Content-Length":"10"}}}}"#)
            .as_bytes(),
    );
    text.push(b'\n');
    let jobs = dir.path().join("jobs.jsonl");
    std::fs::write(&jobs, &text).unwrap();
    let out = dir.path().join("out.jsonl");
    let o = corral(&["run", jobs.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let o2 = corral(&[
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--max-line",
        "1KiB",
        "--overwrite",
    ]);
    assert_exit(&o, 1);
    assert_eq!(o2.status.code(), Some(1));
    let rs = results(&out);
    assert_exactly_once(&rs, 5);
    let r = |l: u64| rs.iter().find(|r| r["line"] == l).unwrap().clone();
    let why = |l: u64| {
        r(l)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(r(1)["ok"], true, "{}", r(1));
    assert!(why(2).contains("line 2: not valid UTF-8"), "{}", why(2));
    assert!(
        why(3).contains("line 3: longer than --max-line (1024 bytes)"),
        "{}",
        why(3)
    );
    assert!(why(4).contains("control character"), "{}", why(4));
    assert!(
        why(5).contains("Content-Length does not match"),
        "{}",
        why(5)
    );
    // Only line 1 was sent, and line 3 in the first run, whose --max-line let it through.
    let mut targets: Vec<String> = mock.stats("fast")["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["target"].as_str().unwrap().to_string())
        .collect();
    targets.sort(); // the first run's two requests may go in either order
    assert_eq!(targets, ["/bom", "/bom", "/long"]);

    // A URL list: a trailing comment is not part of the URL.
    let urls = dir.path().join("urls.txt");
    std::fs::write(
        &urls,
        format!("{fast}/u1\n{fast}/u2 # the second\n# a comment line\n"),
    )
    .unwrap();
    let o = corral(&[
        "run",
        urls.to_str().unwrap(),
        "--urls",
        "-o",
        out.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_exit(&o, 0);
    let rs = results(&out);
    assert_eq!(rs.len(), 2);
    assert_eq!(
        rs.iter().find(|r| r["line"] == 2).unwrap()["url"],
        format!("{fast}/u2")
    );
}

#[test]
fn smaller_holes_stay_closed() {
    let mock = Mock::start("huge");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let long_label = "a".repeat(64);
    let mut lines = vec![
        // The head (200) arrives, the 4 MiB body does not finish in time.
        format!(r#"{{"url":"{}/big"}}"#, mock.url("huge")),
        // A name that cannot exist (a label over 63 bytes; no resolver is asked): not retried.
        format!(r#"{{"url":"http://{long_label}.invalid/"}}"#),
    ];
    // 25 hosts (closed ports): the printed summary lists the busiest 20.
    lines.extend((1..=25).map(|p| format!(r#"{{"url":"http://127.0.0.1:{p}/"}}"#)));
    let jobs = write_jobs(dir.path(), &lines);
    let summary = dir.path().join("summary.json");
    let o = corral(&[
        "run",
        jobs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--timeout-ms",
        "60",
        "--retries",
        "2",
        "--retry-base-ms",
        "1",
        "--no-breaker",
        "--max-body",
        "8MiB",
        "--summary-json",
        summary.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    let rs = results(&out);
    let r = |l: u64| rs.iter().find(|r| r["line"] == l).unwrap().clone();
    assert_eq!(
        (r(1)["status"].as_u64(), r(1)["error"]["kind"].as_str()),
        (Some(200), Some("timeout")),
        "{}",
        r(1)
    );
    assert_eq!(
        (r(2)["attempts"].as_u64(), r(2)["error"]["kind"].as_str()),
        (Some(1), Some("dns")),
        "{}",
        r(2)
    );
    let host_lines = err
        .lines()
        .filter(|l| l.starts_with("    127.0.0.1:"))
        .count();
    assert_eq!(host_lines, 20, "{err}");
    assert!(err.contains("and 7 more hosts"), "{err}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["hosts"].as_object().unwrap().len(), 27);
}

/// `corral run ARGS` with the open-file limit (soft and hard) set to `n`.
fn corral_with_fd_limit(n: u32, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn many_hosts_under_a_low_open_file_limit_all_succeed() {
    // 600 hosts on one mock (a listener each), two rounds of jobs over all of them.
    let hosts = 600;
    let mock = Mock::start(&vec!["fast"; hosts].join(","));
    let urls = &mock.urls;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..2 * hosts)
        .map(|i| format!(r#"{{"url":"{}/r/{i}"}}"#, urls[i % hosts]))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let (jobs_s, out_s) = (jobs.to_str().unwrap(), out.to_str().unwrap());
    let o = corral_with_fd_limit(256, &["run", jobs_s, "-o", out_s, "-q", "--retries", "0"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let rs = results(&out);
    let failed: Vec<_> = rs.iter().filter(|r| r["ok"] != true).take(3).collect();
    assert!(failed.is_empty(), "{failed:?}\n{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_exactly_once(&rs, 2 * hosts as u64);

    // Far below what the jobs under way need: the failures say so, and blame no host.
    let slow: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"url":"{}/s/{i}?latency_ms=300"}}"#, urls[0]))
        .collect();
    let jobs = write_jobs(dir.path(), &slow);
    let o = corral_with_fd_limit(
        48,
        &[
            "run",
            jobs_s,
            "-o",
            out_s,
            "--overwrite",
            "-q",
            "--retries",
            "0",
            "-c",
            "100",
            "--per-host-concurrency",
            "100",
        ],
    );
    let _ = &jobs; // the same path, new jobs
    assert_exit(&o, 1);
    let rs = results(&out);
    let kinds: std::collections::BTreeSet<&str> = rs
        .iter()
        .filter_map(|r| r["error"]["kind"].as_str())
        .collect();
    assert!(
        kinds.contains("fd_limit") && !kinds.contains("connect"),
        "{kinds:?}"
    );
}

/// Five POSTs in flight at `kill -9` were each sent twice by `--resume`, their results saying
/// `ok, attempts 1`. Journaled before they go, they come back `interrupted` (`maybe_sent`)
/// instead, the GETs beside them are sent again, and `--retry-failed interrupted` sends the
/// POSTs when the user says so.
#[test]
fn posts_in_flight_at_a_crash_are_not_sent_again_by_resume() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..10)
        .map(|i| {
            let method = if i % 2 == 0 { "POST" } else { "GET" };
            let body = if method == "POST" {
                r#","body":"x""#
            } else {
                ""
            };
            format!(
                r#"{{"method":"{method}","url":"{}/p/{i}?latency_ms=1500"{body}}}"#,
                mock.url("fast")
            )
        })
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let mut child = Command::new(BIN)
        .args(["run", path_str(&jobs), "-o", path_str(&out), "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Every request under way (the mock counts them as they arrive), none answered: kill -9.
    let mut waited = 0;
    while mock.stats("fast")["requests"] != 10 {
        assert!(waited < 200, "the requests did not all arrive");
        std::thread::sleep(std::time::Duration::from_millis(25));
        waited += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(results(&out).is_empty(), "no answer came before the kill");

    let o = run_quiet(&jobs, &out, &["--resume"]);
    assert_exit(&o, 1);
    let rs = results(&out);
    assert_exactly_once(&rs, 10);
    for r in &rs {
        if r["method"] == "POST" {
            assert_eq!(r["error"]["kind"], "interrupted", "{r}");
            assert_eq!(r["error"]["maybe_sent"], true, "{r}");
        } else {
            assert_eq!(r["ok"], true, "{r}");
        }
    }
    assert_eq!(
        mock.stats("fast")["requests"],
        15,
        "only the GETs went again"
    );

    // A bare --retry-failed does not send them; naming the kind does.
    let o = run_quiet(&jobs, &out, &["--resume", "--retry-failed"]);
    assert!(o.status.success(), "nothing to run: {o:?}");
    assert_eq!(mock.stats("fast")["requests"], 15);
    assert!(results(&out)
        .iter()
        .filter(|r| r["method"] == "POST")
        .all(|r| r["error"]["kind"] == "interrupted"));
    let o = run_quiet(&jobs, &out, &["--resume", "--retry-failed", "interrupted"]);
    assert_exit(&o, 0);
    let rs = results(&out);
    assert_exactly_once(&rs, 10);
    assert!(rs.iter().all(|r| r["ok"] == true), "{rs:?}");
    assert_eq!(mock.stats("fast")["requests"], 20);
}

/// A server that answers one request per connection and then closes it, without saying
/// `Connection: close`; it counts the requests it read.
fn closes_after_each_answer() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut conn = conn;
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                // Closed a moment after the answer, the next request on it unread: a client
                // that reuses it at once finds it gone under its request.
                std::thread::sleep(Duration::from_millis(30));
            });
        }
    });
    (base, seen)
}

/// 408 of 1000 POSTs failed `maybe_sent` against such a host: corral reused its closed
/// connections. Once it has seen one closed under a request, it sends the host's requests that
/// may not be repeated on new connections: at most one POST fails (on one thread), and every
/// GET succeeds by its transparent re-send.
#[test]
fn a_host_that_closes_after_each_answer_fails_at_most_one_post() {
    let (base, seen) = closes_after_each_answer();
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..300)
        .map(|i| {
            if i < 100 {
                format!(r#"{{"method":"POST","url":"{base}/p/{i}","body":"x"}}"#)
            } else {
                format!(r#"{{"url":"{base}/g/{i}"}}"#)
            }
        })
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    let o = run_quiet(
        &jobs,
        &out,
        &["--threads", "1", "-c", "1", "--per-host-concurrency", "1"],
    );
    let rs = results(&out);
    assert_exactly_once(&rs, 300);
    let failed: Vec<_> = rs.iter().filter(|r| r["ok"] == false).collect();
    assert!(
        failed.len() <= 1,
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(failed.iter().all(|r| r["method"] == "POST"));
    assert!(o.status.code().is_some_and(|c| c <= 1));
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 299);
}

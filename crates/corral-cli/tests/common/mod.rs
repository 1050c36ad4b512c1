//! What the end-to-end tests share: the binary, a `corral serve-mock` to aim at, and checks
//! on results files.
#![allow(dead_code)] // each test file uses its own part

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// A running `corral serve-mock`, killed on drop.
pub struct Mock {
    pub child: Child,
    pub hosts: HashMap<String, String>,
    /// Every host's base URL, in the order of the profiles.
    pub urls: Vec<String>,
}

impl Mock {
    pub fn start(profiles: &str) -> Mock {
        let mut child = Command::new(BIN)
            .args([
                "serve-mock",
                "--port",
                "0",
                "--seconds",
                "300",
                "--profiles",
                profiles,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start serve-mock");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut hosts = HashMap::new();
        let mut urls = Vec::new();
        for _ in profiles.split(',') {
            let mut line = String::new();
            out.read_line(&mut line).expect("read mock address");
            let mut parts = line.split_whitespace();
            let (name, url) = (parts.next().expect("name"), parts.next().expect("url"));
            hosts.insert(name.to_string(), url.to_string());
            urls.push(url.to_string());
        }
        Mock { child, hosts, urls }
    }

    pub fn url(&self, profile: &str) -> &str {
        &self.hosts[profile]
    }

    /// The `host:port` of a profile's host (the key of the summary's per-host table).
    pub fn key(&self, profile: &str) -> String {
        self.url(profile).trim_start_matches("http://").to_string()
    }

    /// Requests the host saw in each wall-clock second since it started, in order.
    pub fn per_second(&self, profile: &str) -> Vec<u64> {
        let stats = self.stats(profile);
        let mut seconds: Vec<(u64, u64)> = stats["per_second"]
            .as_object()
            .expect("per_second")
            .iter()
            .map(|(k, v)| (k.parse().expect("second"), v.as_u64().expect("count")))
            .collect();
        seconds.sort();
        seconds.into_iter().map(|(_, n)| n).collect()
    }

    /// A jobs file in `dir` of `n` GETs to the profile's host, `/item/{i}{query}` each.
    pub fn write_gets(&self, dir: &Path, profile: &str, n: usize, query: &str) -> PathBuf {
        let lines: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"url":"{}/item/{i}{query}"}}"#, self.url(profile)))
            .collect();
        write_jobs(dir, &lines)
    }

    /// The server's own counters for one host.
    pub fn stats(&self, profile: &str) -> Value {
        let addr = self.url(profile).trim_start_matches("http://").to_string();
        let mut s = TcpStream::connect(&addr).expect("connect to mock");
        write!(s, "GET /__stats HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read stats");
        let body = resp.split("\r\n\r\n").nth(1).expect("body");
        serde_json::from_str(body).expect("stats json")
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One end-to-end scenario: simulated hosts, a jobs file for them, and `corral run` over it
/// with a results file and a summary in a temporary directory — the preamble each test would
/// otherwise copy.
///
/// ```ignore
/// let s = Scenario::new("fast").jobs(60, |i, m| format!(r#"{{"url":"{}/c/{i}","cost":50}}"#, m.url("fast")));
/// let run = s.run(&["--cost-rate", "1000/s"]);
/// run.exit(0);
/// assert_exactly_once(&run.results(), 60);
/// ```
pub struct Scenario {
    pub mock: Mock,
    pub dir: tempfile::TempDir,
    /// The jobs file (written by [`Scenario::jobs`] or [`Scenario::gets`]).
    pub jobs: PathBuf,
    /// The results file `-o`.
    pub out: PathBuf,
    /// The `--summary-json` file.
    pub summary: PathBuf,
}

impl Scenario {
    /// Hosts of these `corral serve-mock` profiles (`"fast,flaky:30"`), no jobs yet.
    pub fn new(profiles: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (jobs, out, summary) = (
            dir.path().join("jobs.jsonl"),
            dir.path().join("out.jsonl"),
            dir.path().join("summary.json"),
        );
        Scenario {
            mock: Mock::start(profiles),
            dir,
            jobs,
            out,
            summary,
        }
    }

    /// `n` job lines, line `i` (from 0) made by `line(i, mock)`.
    pub fn jobs(self, n: usize, line: impl Fn(usize, &Mock) -> String) -> Self {
        let lines: Vec<String> = (0..n).map(|i| line(i, &self.mock)).collect();
        write_jobs(self.dir.path(), &lines);
        self
    }

    /// `n` GETs to the profile's host, `/item/{i}{query}` each.
    pub fn gets(self, profile: &str, n: usize, query: &str) -> Self {
        self.mock.write_gets(self.dir.path(), profile, n, query);
        self
    }

    /// `corral run JOBS -o OUT -q --summary-json SUMMARY` with `flags`.
    pub fn run(&self, flags: &[&str]) -> Ran {
        let sum = ["--summary-json", path_str(&self.summary)];
        Ran(run_quiet(
            &self.jobs,
            &self.out,
            &[flags, &sum[..]].concat(),
        ))
    }

    /// The results file's lines.
    pub fn results(&self) -> Vec<Value> {
        results(&self.out)
    }

    /// The summary the last run wrote.
    pub fn summary(&self) -> Value {
        summary(&self.summary)
    }
}

/// A finished `corral run` of a [`Scenario`].
pub struct Ran(pub std::process::Output);

impl Ran {
    /// Asserts the exit code (showing stderr when it is not), and returns the run.
    pub fn exit(&self, code: i32) -> &Self {
        assert_exit(&self.0, code);
        self
    }

    /// What it printed on stderr.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
}

pub fn write_jobs(dir: &Path, lines: &[String]) -> PathBuf {
    let p = dir.join("jobs.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").expect("write jobs");
    p
}

pub fn results(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("results");
    assert!(text.is_empty() || text.ends_with('\n'), "torn last line");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

/// `corral run JOBS -o OUT -q` with `extra` options.
pub fn run_quiet(jobs: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", path_str(jobs), "-o", path_str(out), "-q"];
    args.extend_from_slice(extra);
    corral(&args)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The `--summary-json` file at `path`.
pub fn summary(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary")).expect("json")
}

pub fn corral(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run corral")
}

/// `corral ARGS`, killed (and the test failed) if it has not ended within `secs`: for runs a
/// hostile server could stall.
pub fn corral_within(secs: u64, args: &[&str]) -> std::process::Output {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run corral");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait for corral"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("corral {args:?} did not end within {secs} s");
        }
    }
}

/// Asserts each input line 1..=n appears exactly once.
pub fn assert_exactly_once(rs: &[Value], n: u64) {
    let mut seen = BTreeMap::new();
    for r in rs {
        *seen.entry(r["line"].as_u64().expect("line")).or_insert(0) += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "duplicated: {dups:?}");
    let missing: Vec<u64> = (1..=n).filter(|l| !seen.contains_key(l)).collect();
    assert!(
        missing.is_empty(),
        "missing {} jobs, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.len() as u64, n);
}

/// Asserts `o` exited with `code`, showing its stderr when it did not.
pub fn assert_exit(o: &std::process::Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

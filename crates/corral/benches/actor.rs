//! Cost of `corral::actor` against a `tokio::sync::Mutex` counter (the *Async Rust* book's
//! comparison) and against `ractor`, in one run.
//!
//! - `ask`: 1000 sequential request/response round trips to a counter (ask = send a message
//!   carrying a reply channel, wait for the answer; Mutex = lock and read).
//! - `tell`: 10 000 fire-and-forget increments, then one `ask` so the work is really done
//!   (Mutex = lock and add, 10 000 times). corral's mailbox is bounded (1024), ractor's is
//!   unbounded, so corral's `tell` includes real backpressure.
//!
//! - `contended`: 16 tasks at once each make 500 increments that must be seen (corral `ask`
//!   with an add-and-return message; Mutex = lock, add, read), 8 000 in all — the book's
//!   setting, where many tasks share one piece of state. With a lock, waiters queue on the
//!   lock; with an actor, messages queue in the mailbox and one task owns the state.
//!
//! All on a multi-thread tokio runtime with 2 workers; the caller is a task on that runtime.
//!
//! Run: `cargo bench -p corral --bench actor`

use std::sync::Arc;
use std::time::Duration;

use corral::actor::{self, Actor, Reply, Supervision};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ASKS: u64 = 1000;
const TELLS: u64 = 10_000;
const TIMEOUT: Duration = Duration::from_secs(10);

struct Counter(u64);

enum Msg {
    Add(u64),
    Get(Reply<u64>),
    AddGet(u64, Reply<u64>),
}

impl Actor for Counter {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Add(n) => self.0 += n,
            Msg::Get(reply) => reply.send(self.0),
            Msg::AddGet(n, reply) => {
                self.0 += n;
                reply.send(self.0)
            }
        }
    }
}

struct RCounter;

enum RMsg {
    Add(u64),
    Get(ractor::RpcReplyPort<u64>),
}

impl ractor::Actor for RCounter {
    type Msg = RMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(
        &self,
        _me: ractor::ActorRef<RMsg>,
        _: (),
    ) -> Result<u64, ractor::ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _me: ractor::ActorRef<RMsg>,
        msg: RMsg,
        state: &mut u64,
    ) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            RMsg::Add(n) => *state += n,
            RMsg::Get(reply) => {
                let _ = reply.send(*state);
            }
        }
        Ok(())
    }
}

fn corral_counter() -> actor::ActorRef<Counter> {
    actor::spawn(|| Counter(0), Supervision::default().mailbox(1024)).expect("spawn")
}

async fn ractor_counter() -> (ractor::ActorRef<RMsg>, ractor::concurrency::JoinHandle<()>) {
    ractor::Actor::spawn(None, RCounter, ())
        .await
        .expect("spawn")
}

/// Runs the measured body as a task on the runtime, as real callers are (criterion's `to_async`
/// would otherwise poll it on the bench thread, outside the runtime's workers).
async fn on_runtime<T: Send + 'static>(
    body: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    tokio::spawn(body).await.expect("bench task")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut g = c.benchmark_group("actor_ask");
    g.throughput(Throughput::Elements(ASKS));
    g.bench_function(BenchmarkId::new("corral", ASKS), |b| {
        b.to_async(&rt).iter(|| {
            on_runtime(async {
                let a = corral_counter();
                let mut sum = 0;
                for _ in 0..ASKS {
                    sum += a.ask(Msg::Get, TIMEOUT).await.expect("ask");
                }
                sum
            })
        })
    });
    g.bench_function(BenchmarkId::new("ractor", ASKS), |b| {
        b.to_async(&rt).iter(|| {
            on_runtime(async {
                let (a, join) = ractor_counter().await;
                let mut sum = 0;
                for _ in 0..ASKS {
                    match a.call(RMsg::Get, Some(TIMEOUT)).await.expect("call") {
                        ractor::rpc::CallResult::Success(n) => sum += n,
                        _ => panic!("call failed"),
                    }
                }
                a.stop(None);
                let _ = join.await;
                sum
            })
        })
    });
    g.bench_function(BenchmarkId::new("tokio_mutex", ASKS), |b| {
        b.to_async(&rt).iter(|| {
            on_runtime(async {
                let m = Arc::new(tokio::sync::Mutex::new(0u64));
                let mut sum = 0;
                for _ in 0..ASKS {
                    sum += *m.lock().await;
                }
                sum
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("actor_tell");
    g.throughput(Throughput::Elements(TELLS));
    g.bench_function(BenchmarkId::new("corral", TELLS), |b| {
        b.to_async(&rt).iter(|| {
            on_runtime(async {
                let a = corral_counter();
                for _ in 0..TELLS {
                    a.tell(Msg::Add(1)).await.expect("tell");
                }
                let n = a.ask(Msg::Get, TIMEOUT).await.expect("ask");
                assert_eq!(n, TELLS);
                n
            })
        })
    });
    g.bench_function(BenchmarkId::new("ractor", TELLS), |b| {
        b.to_async(&rt).iter(|| {
            on_runtime(async {
                let (a, join) = ractor_counter().await;
                for _ in 0..TELLS {
                    a.cast(RMsg::Add(1)).expect("cast");
                }
                let n = match a.call(RMsg::Get, Some(TIMEOUT)).await.expect("call") {
                    ractor::rpc::CallResult::Success(n) => n,
                    _ => panic!("call failed"),
                };
                assert_eq!(n, TELLS);
                a.stop(None);
                let _ = join.await;
                n
            })
        })
    });
    g.bench_function(BenchmarkId::new("tokio_mutex", TELLS), |b| {
        b.to_async(&rt).iter(|| {
            on_runtime(async {
                let m = Arc::new(tokio::sync::Mutex::new(0u64));
                for _ in 0..TELLS {
                    *m.lock().await += 1;
                }
                let n = *m.lock().await;
                assert_eq!(n, TELLS);
                n
            })
        })
    });
    g.finish();
}

const TASKS: u64 = 16;
const EACH: u64 = 500;

fn contended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("actor_contended");
    g.throughput(Throughput::Elements(TASKS * EACH));
    g.bench_function(BenchmarkId::new("corral", TASKS * EACH), |b| {
        b.to_async(&rt).iter(|| {
            on_runtime(async {
                let a = corral_counter();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let a = a.clone();
                        tokio::spawn(async move {
                            let mut last = 0;
                            for _ in 0..EACH {
                                last = a.ask(|r| Msg::AddGet(1, r), TIMEOUT).await.expect("ask");
                            }
                            last
                        })
                    })
                    .collect();
                let mut top = 0;
                for t in tasks {
                    top = top.max(t.await.expect("task"));
                }
                assert_eq!(top, TASKS * EACH);
                top
            })
        })
    });
    g.bench_function(BenchmarkId::new("tokio_mutex", TASKS * EACH), |b| {
        b.to_async(&rt).iter(|| {
            on_runtime(async {
                let m = Arc::new(tokio::sync::Mutex::new(0u64));
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let m = m.clone();
                        tokio::spawn(async move {
                            let mut last = 0;
                            for _ in 0..EACH {
                                let mut g = m.lock().await;
                                *g += 1;
                                last = *g;
                            }
                            last
                        })
                    })
                    .collect();
                let mut top = 0;
                for t in tasks {
                    top = top.max(t.await.expect("task"));
                }
                assert_eq!(top, TASKS * EACH);
                top
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench, contended);
criterion_main!(benches);

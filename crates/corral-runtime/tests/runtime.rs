//! corral's own runtime: scheduling, stealing rules, parking, panics, shutdown, I/O, hyper.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_runtime::{Async, JoinError, Priority, Runtime};
use futures::{AsyncReadExt, AsyncWriteExt};

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// Fails the test instead of hanging if `fut` does not finish within `limit` (a safety net
/// for broken scheduling; the passing path never waits for it).
async fn within<F: std::future::Future>(limit: Duration, fut: F) -> F::Output {
    futures::pin_mut!(fut);
    match futures::future::select(fut, corral_runtime::sleep(limit)).await {
        futures::future::Either::Left((out, _)) => out,
        futures::future::Either::Right(_) => panic!("did not finish within {limit:?}"),
    }
}

/// A bounded CPU loop (no clock involved).
fn spin(iterations: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..iterations {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    x
}

#[test]
fn every_task_runs_exactly_once() {
    let rt = Runtime::builder()
        .threads(Priority::High, 1)
        .threads(Priority::Normal, 2)
        .threads(Priority::Low, 1)
        .build()
        .expect("runtime");
    const N: usize = 20_000;
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let runs = Arc::clone(&runs);
            let prio = Priority::ALL[i % 3];
            rt.spawn(prio, async move {
                if i % 7 == 0 {
                    corral_runtime::yield_now().await; // re-scheduled via its waker
                }
                runs[i].fetch_add(1, Ordering::SeqCst);
                i
            })
        })
        .collect();
    let outputs = rt.block_on(within(
        Duration::from_secs(60),
        futures::future::join_all(handles),
    ));
    for (i, out) in outputs.into_iter().enumerate() {
        assert_eq!(out, Ok(i));
    }
    assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 1));
}

#[test]
fn a_task_woken_from_another_thread_runs() {
    let rt = Runtime::builder()
        .threads(Priority::Normal, 1)
        .build()
        .expect("runtime");
    let (tx, rx) = futures::channel::oneshot::channel::<u32>();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let task = rt.spawn(Priority::Normal, async move {
        started_tx.send(()).expect("signal");
        rx.await.expect("value") * 2
    });
    // Wait until the task is parked on the channel, then wake it from a plain OS thread.
    started_rx.recv().expect("task started");
    let waker = std::thread::spawn(move || tx.send(21).expect("send"));
    assert_eq!(rt.block_on(within(Duration::from_secs(30), task)), Ok(42));
    waker.join().expect("waker thread");
}

#[test]
fn panics_are_reported_and_do_not_kill_workers() {
    // One worker thread in all: if a panic killed it, nothing after would run.
    let rt = Runtime::builder()
        .threads(Priority::High, 1)
        .threads(Priority::Normal, 0)
        .threads(Priority::Low, 0)
        .thread_name("panicky")
        .build()
        .expect("runtime");
    for i in 0..5 {
        let h = rt.spawn(Priority::Normal, async move {
            if i >= 0 {
                panic!("boom {i}");
            }
            0
        });
        assert_eq!(
            rt.block_on(h),
            Err(JoinError::Panicked(format!("boom {i}")))
        );
    }
    let names = rt.block_on(futures::future::join_all(
        (0..50).map(|_| rt.spawn(Priority::Low, async { thread_name() })),
    ));
    for n in names {
        assert_eq!(n.as_deref(), Ok("panicky-high-0"));
    }
}

#[test]
fn with_stealing_off_a_low_flood_never_runs_on_other_threads() {
    let rt = Runtime::builder()
        .threads(Priority::High, 1)
        .threads(Priority::Normal, 0)
        .threads(Priority::Low, 1)
        .steal(Priority::Low, false)
        .thread_name("nosteal")
        .build()
        .expect("runtime");
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let flood: Vec<_> = (0..200)
        .map(|_| {
            let ran_on = Arc::clone(&ran_on);
            rt.spawn(Priority::Low, async move {
                spin(20_000);
                ran_on.lock().expect("lock").push(thread_name());
            })
        })
        .collect();
    // Keep the high worker waking up (and looking for work) throughout the flood.
    let pokes: Vec<_> = (0..200)
        .map(|_| rt.spawn(Priority::High, async { thread_name() }))
        .collect();
    rt.block_on(within(Duration::from_secs(60), async {
        for h in flood {
            h.await.expect("flood task");
        }
        for h in pokes {
            h.await.expect("poke");
        }
    }));
    let ran_on = ran_on.lock().expect("lock");
    assert_eq!(ran_on.len(), 200);
    assert!(ran_on.iter().all(|n| n == "nosteal-low-0"), "{ran_on:?}");
}

#[test]
fn with_stealing_on_an_idle_high_pool_drains_the_low_queue() {
    let rt = Runtime::builder()
        .threads(Priority::High, 1)
        .threads(Priority::Normal, 0)
        .threads(Priority::Low, 1)
        .thread_name("steal")
        .build()
        .expect("runtime");
    // Occupy the only low thread with a task that blocks it (retrying until a blocker lands
    // on the low thread rather than being stolen by the high one).
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let blocker = loop {
        let (on_tx, on_rx) = std::sync::mpsc::channel();
        let rx = Arc::clone(&release_rx);
        let h = rt.spawn(Priority::Low, async move {
            let here = thread_name();
            let blocking = here == "steal-low-0";
            on_tx.send(blocking).expect("report");
            if blocking {
                let _ = rx.lock().expect("lock").recv();
            }
        });
        if on_rx.recv().expect("blocker ran") {
            break h;
        }
        rt.block_on(h).expect("non-blocking blocker");
    };
    // The low thread is stuck: these can only run if the high thread steals them.
    let flood: Vec<_> = (0..100)
        .map(|_| rt.spawn(Priority::Low, async { thread_name() }))
        .collect();
    let names = rt.block_on(within(
        Duration::from_secs(30),
        futures::future::join_all(flood),
    ));
    assert!(
        names.iter().all(|n| n.as_deref() == Ok("steal-high-0")),
        "{names:?}"
    );
    release_tx.send(()).expect("release");
    rt.block_on(blocker).expect("blocker");
}

fn live_threads_named(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(prefix))
        .count()
}

#[test]
fn shutdown_joins_every_thread_and_cancels_queued_tasks() {
    let rt = Runtime::builder()
        .threads(Priority::High, 2)
        .threads(Priority::Normal, 1)
        .threads(Priority::Low, 1)
        .steal(Priority::Low, false)
        .thread_name("sdjoin")
        .build()
        .expect("runtime");
    if std::path::Path::new("/proc/self/task").exists() {
        // A thread names itself once it starts running: wait (bounded) for all four.
        let deadline = Instant::now() + Duration::from_secs(30);
        while live_threads_named("sdjoin-") < 4 {
            assert!(Instant::now() < deadline, "worker threads never started");
            std::thread::yield_now();
        }
        assert_eq!(live_threads_named("sdjoin-"), 4);
    }
    let handle = rt.handle().clone();
    // Block the one low thread, then queue tasks behind it that nothing else may run.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    rt.spawn(Priority::Low, async move {
        started_tx.send(()).expect("started");
        let _ = release_rx.recv();
    })
    .detach();
    started_rx.recv().expect("blocker started");
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let queued: Vec<_> = (0..10)
        .map(|_| {
            let g = Guard(Arc::clone(&dropped));
            rt.spawn(Priority::Low, async move {
                let _g = g;
                "ran"
            })
        })
        .collect();
    let stopper = std::thread::spawn(move || rt.shutdown());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !handle.is_shut_down() {
        assert!(Instant::now() < deadline, "shutdown never began");
        std::thread::yield_now();
    }
    release_tx.send(()).expect("release");
    let cancelled = stopper.join().expect("shutdown thread");
    assert_eq!(cancelled, 10);
    assert_eq!(dropped.load(Ordering::SeqCst), 10);
    for h in queued {
        assert_eq!(async_io::block_on(h), Err(JoinError::Cancelled));
    }
    if std::path::Path::new("/proc/self/task").exists() {
        assert_eq!(live_threads_named("sdjoin-"), 0);
    }
    let late = handle.spawn(Priority::High, async { 1 });
    assert!(matches!(
        async_io::block_on(late),
        Err(JoinError::NoRuntime(_))
    ));
}

#[test]
fn bad_configurations_are_refused() {
    for b in [
        Runtime::builder()
            .threads(Priority::High, 0)
            .threads(Priority::Normal, 0)
            .threads(Priority::Low, 0),
        Runtime::builder()
            .threads(Priority::Low, 0)
            .steal(Priority::Low, false),
    ] {
        assert!(matches!(
            b.build(),
            Err(corral_runtime::BuildError::Config(_))
        ));
    }
    let rt = Runtime::builder()
        .threads(Priority::Normal, 1)
        .build()
        .expect("runtime");
    assert!(rt
        .handle()
        .every(Priority::Low, Duration::ZERO, || async {})
        .is_err());
}

#[test]
fn macros_spawn_join_and_try_join() {
    let rt = Runtime::builder()
        .thread_name("macros")
        .build()
        .expect("runtime");
    rt.block_on(async {
        let a = corral_runtime::spawn!(async { thread_name() });
        let b = corral_runtime::spawn!(async { 2 }, Priority::Low);
        let (a, b) = corral_runtime::join!(a, b);
        assert!(a.expect("a").starts_with("macros-"));
        assert_eq!(b, Ok(2));
        let ok = corral_runtime::try_join!(
            corral_runtime::spawn!(async { 1 }),
            corral_runtime::spawn!(async { 2 })
        );
        assert_eq!(ok, Ok((1, 2)));
        let failed = corral_runtime::try_join!(
            corral_runtime::spawn!(async { 1 }),
            corral_runtime::spawn!(async {
                if thread_name().is_empty() {
                    return 0;
                }
                panic!("second fails")
            })
        );
        assert_eq!(failed, Err(JoinError::Panicked("second fails".into())));
    });
}

#[test]
fn periodic_and_background_tasks_run_until_stopped() {
    let rt = Runtime::builder()
        .threads(Priority::Normal, 1)
        .build()
        .expect("runtime");
    let ticks = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<()>();
    let done_tx = Mutex::new(Some(done_tx));
    let t = Arc::clone(&ticks);
    let periodic = rt
        .handle()
        .every(Priority::Low, Duration::from_millis(2), move || {
            let n = t.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 3 {
                if let Some(tx) = done_tx.lock().expect("lock").take() {
                    let _ = tx.send(());
                }
            }
            async {}
        })
        .expect("every");
    rt.block_on(within(Duration::from_secs(30), done_rx))
        .expect("three ticks");
    rt.block_on(periodic.cancel());
    let after_cancel = ticks.load(Ordering::SeqCst);
    assert!(after_cancel >= 3);
    // Background: detached, nobody holds a handle, and it still runs to the end.
    let (tx, rx) = futures::channel::oneshot::channel();
    rt.handle().background(async move {
        corral_runtime::sleep(Duration::from_millis(1)).await;
        let _ = tx.send(thread_name());
    });
    let name = rt
        .block_on(within(Duration::from_secs(30), rx))
        .expect("background ran");
    assert!(name.starts_with("corral-"));
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        after_cancel,
        "ticked after cancel"
    );
}

/// A loopback listener whose accept queue holds all 1000 clients connecting at once (std's
/// `bind` uses a backlog of 128: a burst beyond it is dropped or reset by the kernel).
fn listener(backlog: i32) -> Async<TcpListener> {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(backlog).expect("listen");
    Async::new(TcpListener::from(socket)).expect("async listener")
}

async fn echo_server(rt: &corral_runtime::Handle) -> std::net::SocketAddr {
    let listener = listener(2048);
    let addr = listener.get_ref().local_addr().expect("addr");
    let h = rt.clone();
    rt.spawn(Priority::High, async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            h.spawn(Priority::Normal, async move {
                let _ = futures::io::copy(&stream, &mut &stream).await;
            })
            .detach();
        }
    })
    .detach();
    addr
}

#[test]
fn echo_server_echoes_1000_concurrent_connections() {
    let rt = Runtime::builder()
        .thread_name("echo")
        .build()
        .expect("runtime");
    let handle = rt.handle().clone();
    let results = rt.block_on(async {
        let addr = echo_server(&handle).await;
        let clients: Vec<_> = (0..1000u32)
            .map(|i| {
                handle.spawn(Priority::Normal, async move {
                    let payload: Vec<u8> = (0..4096u32).map(|j| (i * 31 + j) as u8).collect();
                    let mut stream = Async::<TcpStream>::connect(addr).await?;
                    stream.write_all(&payload).await?;
                    stream.get_ref().shutdown(std::net::Shutdown::Write)?;
                    let mut back = Vec::new();
                    stream.read_to_end(&mut back).await?;
                    Ok::<bool, std::io::Error>(back == payload)
                })
            })
            .collect();
        within(Duration::from_secs(120), futures::future::join_all(clients)).await
    });
    assert_eq!(results.len(), 1000);
    for r in results {
        assert!(matches!(r, Ok(Ok(true))), "{r:?}");
    }
}

#[test]
fn hyper_client_and_server_run_on_the_runtime() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    let rt = Runtime::builder()
        .thread_name("hyper")
        .build()
        .expect("runtime");
    let handle = rt.handle().clone();
    let bodies = rt.block_on(within(Duration::from_secs(60), async {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind");
        let addr = listener.get_ref().local_addr().expect("addr");
        let server_rt = handle.clone();
        handle
            .spawn(Priority::High, async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let io = corral_runtime::HyperIo::new(stream);
                    let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                        let body = format!("hello {}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    });
                    server_rt
                        .spawn(Priority::Normal, async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .timer(corral_runtime::HyperTimer)
                                .serve_connection(io, svc)
                                .await;
                        })
                        .detach();
                }
            })
            .detach();
        let mut bodies = Vec::new();
        let io = corral_runtime::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("handshake");
        handle.spawn(Priority::Normal, conn).detach();
        for path in ["/a", "/b", "/c"] {
            let req = hyper::Request::get(path)
                .header("host", "localhost")
                .body(http_body_util::Empty::<Bytes>::new())
                .expect("request");
            sender.ready().await.expect("connection ready");
            let resp = sender.send_request(req).await.expect("response");
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            bodies.push(String::from_utf8_lossy(&body).into_owned());
        }
        bodies
    }));
    assert_eq!(bodies, ["hello /a", "hello /b", "hello /c"]);
}

#[test]
fn hyper_executor_spawns_at_the_handle_priority() {
    use hyper::rt::Executor;
    let rt = Runtime::builder()
        .threads(Priority::High, 1)
        .threads(Priority::Normal, 1)
        .threads(Priority::Low, 1)
        .steal(Priority::Low, false)
        .thread_name("exec")
        .build()
        .expect("runtime");
    let low = rt.handle().with_priority(Priority::Low);
    let (tx, rx) = futures::channel::oneshot::channel();
    low.execute(async move {
        let _ = tx.send(thread_name());
    });
    assert_eq!(
        rt.block_on(within(Duration::from_secs(30), rx)).as_deref(),
        Ok("exec-low-0")
    );
}

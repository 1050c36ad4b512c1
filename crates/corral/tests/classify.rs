//! The retry and breaker layers judging whole HTTP results with `HttpClassifier`, around a real
//! hyper HTTP/1 client and a real hyper server on 127.0.0.1. The clock is tokio's paused one:
//! the waits a `Retry-After` asks for pass at once, and are measured exactly.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use corral::breaker::{BreakerLayer, BreakerOpen, CircuitBreaker, State};
use corral::classify::HttpClassifier;
use corral::retry::{RetryLayer, RetryPolicy};
use corral::BoxError;
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// A server answering from a script: request `n` gets `script[n]` (status, Retry-After), the
/// last entry once the script runs out. Returns its address, the request counter and the
/// (paused-clock) instants requests arrived at.
async fn server(
    script: Vec<(u16, Option<&'static str>)>,
) -> (
    std::net::SocketAddr,
    Arc<AtomicU32>,
    Arc<Mutex<Vec<Instant>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let times = Arc::new(Mutex::new(Vec::new()));
    let (h, t) = (hits.clone(), times.clone());
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (h, t, script) = (h.clone(), t.clone(), script.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let n = h.fetch_add(1, Ordering::SeqCst) as usize;
                    t.lock().unwrap().push(Instant::now());
                    let (status, retry_after) = script[n.min(script.len() - 1)];
                    async move {
                        let mut resp = Response::builder().status(status);
                        if let Some(v) = retry_after {
                            resp = resp.header("retry-after", v);
                        }
                        Ok::<_, Infallible>(resp.body(Full::new(Bytes::from_static(b"x"))).unwrap())
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (addr, hits, times)
}

/// A tower service: one HTTP/1 GET over a fresh loopback connection. Every response is `Ok`,
/// whatever its status; connection failures are errors. Counts the calls it is given.
fn client(
    addr: std::net::SocketAddr,
    calls: Arc<AtomicU32>,
) -> impl Service<
    &'static str,
    Response = Response<Incoming>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<Response<Incoming>, BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |path: &'static str| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let stream = TcpStream::connect(addr).await?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = Request::get(path)
                .header("host", "loopback")
                .body(Empty::<Bytes>::new())?;
            Ok::<_, BoxError>(send.send_request(req).await?)
        }
    })
}

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .base_delay(Duration::from_millis(10))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_503_response_is_retried_after_its_retry_after() {
    let (addr, hits, times) = server(vec![(503, Some("2")), (429, Some("3")), (200, None)]).await;
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::with_classifier(
            policy(5),
            HttpClassifier::new(),
        ))
        .service(client(addr, Arc::default()));
    let resp = svc.ready().await.unwrap().call("/").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let times = times.lock().unwrap();
    assert_eq!(
        times[1] - times[0],
        Duration::from_secs(2),
        "503's Retry-After"
    );
    assert_eq!(
        times[2] - times[1],
        Duration::from_secs(3),
        "429's Retry-After"
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_response_is_returned_when_retries_run_out_and_4xx_is_final() {
    let (addr, hits, _) = server(vec![(502, None)]).await;
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::with_classifier(
            policy(3),
            HttpClassifier::new(),
        ))
        .service(client(addr, Arc::default()));
    let resp = svc.ready().await.unwrap().call("/").await.unwrap();
    assert_eq!(resp.status(), 502, "a response stays a response");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    for status in [404, 501] {
        let (addr, hits, _) = server(vec![(status, None)]).await;
        let mut svc = ServiceBuilder::new()
            .layer(RetryLayer::with_classifier(
                policy(3),
                HttpClassifier::new(),
            ))
            .service(client(addr, Arc::default()));
        let resp = svc.ready().await.unwrap().call("/").await.unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{status} is not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_error_is_retried() {
    // A port nobody listens on: every connect is refused (an io::Error).
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let calls = Arc::new(AtomicU32::new(0));
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::with_classifier(
            policy(4),
            HttpClassifier::new(),
        ))
        .service(client(addr, calls.clone()));
    let err = svc.ready().await.unwrap().call("/").await.unwrap_err();
    assert!(err.is::<std::io::Error>(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_counts_5xx_responses_but_not_4xx_or_429() {
    let breaker = || {
        CircuitBreaker::builder()
            .min_calls(4)
            .failure_rate(0.5)
            .window(Duration::from_secs(60))
            .cool_down(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    // A server that always answers 503: four responses, then the breaker refuses.
    let (addr, hits, _) = server(vec![(503, None)]).await;
    let b = breaker();
    let mut svc = ServiceBuilder::new()
        .layer(BreakerLayer::with_classifier(
            b.clone(),
            HttpClassifier::new(),
        ))
        .service(client(addr, Arc::default()));
    for _ in 0..4 {
        let resp = svc.ready().await.unwrap().call("/").await.unwrap();
        assert_eq!(resp.status(), 503);
    }
    let err = svc.ready().await.unwrap().call("/").await.unwrap_err();
    assert!(err.is::<BreakerOpen>(), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    assert_eq!(b.state(), State::Open);

    // 404 and 429 are the service working: the breaker stays closed.
    for status in [404, 429] {
        let (addr, hits, _) = server(vec![(status, None)]).await;
        let b = breaker();
        let mut svc = ServiceBuilder::new()
            .layer(BreakerLayer::with_classifier(
                b.clone(),
                HttpClassifier::new(),
            ))
            .service(client(addr, Arc::default()));
        for _ in 0..10 {
            svc.ready().await.unwrap().call("/").await.unwrap();
        }
        assert_eq!(hits.load(Ordering::SeqCst), 10);
        assert_eq!(b.state(), State::Closed, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_over_breaker_stops_once_the_breaker_opens() {
    let (addr, hits, _) = server(vec![(500, None)]).await;
    let b = CircuitBreaker::builder()
        .min_calls(3)
        .failure_rate(0.5)
        .window(Duration::from_secs(60))
        .cool_down(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::with_classifier(
            policy(10),
            HttpClassifier::new(),
        ))
        .layer(BreakerLayer::with_classifier(
            b.clone(),
            HttpClassifier::new(),
        ))
        .service(client(addr, Arc::default()));
    let err = svc.ready().await.unwrap().call("/").await.unwrap_err();
    assert!(err.is::<BreakerOpen>(), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "3 failures opened it; no retry after"
    );
}

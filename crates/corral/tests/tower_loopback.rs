//! The resilience layers around a real hyper HTTP/1 client talking to a real hyper server on
//! 127.0.0.1. Real time, but small and bounded: nothing here asserts speed.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use corral::breaker::{BreakerLayer, BreakerOpen, CircuitBreaker};
use corral::limit::{RateLimitLayer, RateLimiter};
use corral::retry::{Decision, RetryLayer, RetryPolicy};
use corral::timeout::{Elapsed, TimeoutLayer};
use corral::BoxError;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceBuilder, ServiceExt};

/// A server answering 503 to the first `fail_first` requests, then 200 ("ok"); path `/hang`
/// never answers. Returns its address and the request counter.
async fn server(fail_first: u32) -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = h.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if req.uri().path() == "/hang" {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        let status = if n < fail_first {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

#[derive(Debug)]
struct ServerError(StatusCode);
impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server answered {}", self.0)
    }
}
impl std::error::Error for ServerError {}

/// A tower service: one HTTP/1 GET over a fresh loopback connection; 5xx becomes an error.
fn client(
    addr: std::net::SocketAddr,
) -> impl Service<
    &'static str,
    Response = String,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<String, BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |path: &'static str| async move {
        let stream = TcpStream::connect(addr).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "loopback")
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        if resp.status().is_server_error() {
            return Err(Box::new(ServerError(resp.status())) as BoxError);
        }
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
}

fn classify(e: &BoxError) -> Decision {
    if e.is::<BreakerOpen>() {
        Decision::Stop
    } else if e.is::<ServerError>() || e.is::<Elapsed>() {
        Decision::Retry
    } else {
        Decision::Stop
    }
}

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .base_delay(Duration::from_millis(2))
        .build()
        .unwrap()
}

#[tokio::test]
async fn retry_rate_limit_and_timeout_layers_around_hyper() {
    let (addr, hits) = server(2).await;
    let limiter = RateLimiter::builder()
        .rate("1000/s".parse().unwrap())
        .burst(10)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(20))) // whole operation
        .layer(RetryLayer::new(policy(5), classify))
        .layer(RateLimitLayer::new(limiter))
        .layer(TimeoutLayer::new(Duration::from_secs(5))) // per attempt
        .service(client(addr));
    let body = svc.ready().await.unwrap().call("/").await.unwrap();
    assert_eq!(body, "ok");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "two 503s retried, then success"
    );
}

#[tokio::test]
async fn per_attempt_timeout_is_retried_then_gives_up() {
    let (addr, hits) = server(0).await;
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy(3), classify))
        .layer(TimeoutLayer::new(Duration::from_millis(50)))
        .service(client(addr));
    let err = svc.ready().await.unwrap().call("/hang").await.unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "each attempt reached the server"
    );
}

#[tokio::test]
async fn breaker_stops_traffic_to_a_failing_server() {
    let (addr, hits) = server(u32::MAX).await;
    let breaker = CircuitBreaker::builder()
        .min_calls(5)
        .failure_rate(0.5)
        .window(Duration::from_secs(60))
        .cool_down(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy(2), classify))
        .layer(BreakerLayer::new(breaker.clone()))
        .service(client(addr));
    let mut open = 0;
    for _ in 0..20 {
        match svc.ready().await.unwrap().call("/").await {
            Err(e) if e.is::<BreakerOpen>() => open += 1,
            Err(e) => assert!(e.is::<ServerError>(), "{e}"),
            Ok(_) => panic!("server always fails"),
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        5,
        "after 5 failures the breaker keeps calls away"
    );
    // Calls 1-2: two failed attempts each (4 hits). Call 3: its first attempt is the 5th
    // failure and opens the breaker; its retry is rejected. Calls 4-20 are rejected outright.
    assert_eq!(open, 18);
    assert_eq!(breaker.stats().openings, 1);
}

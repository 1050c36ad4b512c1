//! Timeouts, per attempt and per whole operation.
//!
//! [`timeout`] bounds one future and turns expiry into the [`Elapsed`] error, which the
//! [`retry`](crate::retry) classifiers recognise as retryable. Where it sits decides what it
//! bounds:
//!
//! - **per attempt**: inside the retry loop, around each try;
//! - **whole operation**: outside the retry loop, around all tries and the waits between them.
//!
//! ```
//! use corral::retry::{Decision, RetryPolicy};
//! use corral::timeout::{timeout, Elapsed};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), corral::ConfigError> {
//! let policy = RetryPolicy::builder().max_attempts(10).build()?;
//! let whole = timeout(Duration::from_secs(2), policy.retry(
//!     |_attempt| timeout(Duration::from_millis(300), std::future::pending::<()>()),
//!     |_e: &Elapsed| Decision::Retry,
//! )).await;
//! assert!(whole.is_err()); // the whole operation gave up at 2 s, mid-retries
//! # Ok(())
//! # }
//! ```
//!
//! As tower layers: [`TimeoutLayer`] below a [`RetryLayer`](crate::retry::RetryLayer) bounds
//! each attempt; another above it bounds the whole call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::BoxError;

/// A future did not finish within its time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    /// The limit that was exceeded.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.after)
    }
}

impl std::error::Error for Elapsed {}

/// Runs `fut` for at most `limit`.
pub async fn timeout<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| Elapsed { after: limit })
}

/// A `tower::Layer` bounding each call to the wrapped service.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// Calls longer than `limit` fail with [`Elapsed`].
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

/// The service made by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, Req> tower::Service<Req> for Timeout<S>
where
    S: tower::Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            inner: tokio::time::timeout(self.limit, self.inner.call(req)),
            limit: self.limit,
        }
    }
}

pin_project! {
    /// The future of a [`Timeout`] call: the call, or [`Elapsed`] once the limit passes.
    ///
    /// Cancel safety: dropping it drops the call.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(r) => Poll::Ready(r.map_err(Into::into)),
            Err(_) => Poll::Ready(Err(Elapsed { after: *this.limit }.into())),
        }
    }
}

//! [`RetryLayer`]: a [`RetryPolicy`] around any `tower::Service`, judging each attempt's whole
//! result — a 503 that arrives as a normal response can be retried, as an error can.
//!
//! Its future is a named state machine ([`ResponseFuture`]: call, sleep, wait for readiness,
//! call again), so a call through the layer allocates nothing of its own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::{Decision, RetryPolicy};
use crate::BoxError;

/// How a [`RetryLayer`] judges one attempt's result: [`Decision::Stop`] makes it the call's
/// result; [`Decision::Retry`] and [`Decision::RetryAfter`] try again if the policy allows, and
/// otherwise the result is returned as it is (a response stays a response).
///
/// Any `Fn(&Result<Res, BoxError>) -> Decision` is one;
/// [`HttpClassifier`](crate::classify::HttpClassifier) is a ready one for HTTP.
pub trait Classify<Res> {
    /// The decision for this result.
    fn classify(&self, result: &Result<Res, BoxError>) -> Decision;
}

impl<Res, F> Classify<Res> for F
where
    F: Fn(&Result<Res, BoxError>) -> Decision,
{
    fn classify(&self, result: &Result<Res, BoxError>) -> Decision {
        self(result)
    }
}

/// A classifier of errors only: every response is final. What [`RetryLayer::new`] makes.
#[derive(Clone)]
pub struct OnErrors(Arc<dyn Fn(&BoxError) -> Decision + Send + Sync>);

impl fmt::Debug for OnErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnErrors")
    }
}

impl<Res> Classify<Res> for OnErrors {
    fn classify(&self, result: &Result<Res, BoxError>) -> Decision {
        match result {
            Ok(_) => Decision::Stop,
            Err(e) => (self.0)(e),
        }
    }
}

/// A classifier for tower stacks: retries timeouts ([`crate::timeout::Elapsed`]) and I/O
/// errors, never an open circuit breaker, and stops on anything else.
pub fn classify_transient(e: &BoxError) -> Decision {
    if e.is::<crate::breaker::BreakerOpen>() {
        Decision::Stop
    } else if e.is::<crate::timeout::Elapsed>() || e.is::<std::io::Error>() {
        Decision::Retry
    } else {
        Decision::Stop
    }
}

/// A `tower::Layer` retrying calls with a [`RetryPolicy`]. The request must be `Clone` (it is
/// re-sent) and so must the service. The result is the last attempt's.
///
/// ```
/// use corral::classify::HttpClassifier;
/// use corral::retry::{RetryLayer, RetryPolicy};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), corral::BoxError> {
/// // A service that answers 503 twice, then 200.
/// let calls = Arc::new(AtomicU32::new(0));
/// let c = calls.clone();
/// let flaky = tower::service_fn(move |_req: http::Request<()>| {
///     let n = c.fetch_add(1, Ordering::SeqCst);
///     async move {
///         let status = if n < 2 { 503 } else { 200 };
///         Ok::<_, corral::BoxError>(http::Response::builder().status(status).body(())?)
///     }
/// });
/// let mut svc = ServiceBuilder::new()
///     .layer(RetryLayer::with_classifier(RetryPolicy::builder().max_attempts(5).build()?, HttpClassifier::new()))
///     .service(flaky);
/// let resp = svc.ready().await?.call(http::Request::new(())).await?;
/// assert_eq!(resp.status(), 200);
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RetryLayer<C = OnErrors> {
    policy: RetryPolicy,
    classify: C,
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RetryLayer {
    /// Retries errors the classifier allows (see [`classify_transient`] for a default); every
    /// response is final.
    pub fn new(
        policy: RetryPolicy,
        classify: impl Fn(&BoxError) -> Decision + Send + Sync + 'static,
    ) -> Self {
        Self {
            policy,
            classify: OnErrors(Arc::new(classify)),
        }
    }
}

impl<C> RetryLayer<C> {
    /// Retries what `classify` says to, responses and errors alike.
    pub fn with_classifier(policy: RetryPolicy, classify: C) -> Self {
        Self { policy, classify }
    }
}

impl<S, C: Clone> tower::Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            policy: self.policy.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`RetryLayer`].
#[derive(Clone)]
pub struct Retry<S, C = OnErrors> {
    inner: S,
    policy: RetryPolicy,
    classify: C,
}

impl<S, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> tower::Service<Req> for Retry<S, C>
where
    S: tower::Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response> + Clone,
    Req: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // The ready service makes the first call; a clone is left behind (the tower idiom).
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        self.policy.deposit();
        let fut = svc.call(req.clone());
        ResponseFuture {
            state: State::Calling { fut },
            svc,
            req,
            policy: self.policy.clone(),
            classify: self.classify.clone(),
            attempt: 1,
            started: self.policy.start(),
        }
    }
}

pin_project! {
    /// The future of a [`Retry`] call: attempts, and the waits between them.
    ///
    /// Cancel safety: dropping it drops the attempt in flight (as dropping any service future
    /// does) and makes no further attempt.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, C, Req>
    where
        S: tower::Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        svc: S,
        req: Req,
        policy: RetryPolicy,
        classify: C,
        attempt: u32,
        started: Option<Instant>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] fut: F },
        // Boxed: only a call that retries pays for a timer, and the future every call carries
        // stays small.
        Sleeping { sleep: Pin<Box<Sleep>> },
        Readying,
    }
}

impl<S, C, Req> fmt::Debug for ResponseFuture<S, C, Req>
where
    S: tower::Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Future for ResponseFuture<S, C, Req>
where
    S: tower::Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    Req: Clone,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let result = match this.state.as_mut().project() {
                StateProj::Calling { fut } => ready!(fut.poll(cx)).map_err(Into::into),
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                    continue;
                }
                // A clone is not necessarily ready: wait for readiness before every retry.
                StateProj::Readying => match ready!(this.svc.poll_ready(cx)) {
                    Ok(()) => {
                        let fut = this.svc.call(this.req.clone());
                        this.state.set(State::Calling { fut });
                        continue;
                    }
                    Err(e) => Err(e.into()),
                },
            };
            let decision = this.classify.classify(&result);
            match this
                .policy
                .next_wait(decision, *this.attempt, *this.started)
            {
                Ok(wait) => {
                    *this.attempt += 1;
                    this.state.set(State::Sleeping {
                        sleep: Box::pin(tokio::time::sleep(wait)),
                    });
                }
                Err(_) => return Poll::Ready(result),
            }
        }
    }
}

//! [`BreakerLayer`]: a [`CircuitBreaker`] in front of any `tower::Service`, judging each
//! call's whole result — a 503 that arrives as a normal response can count as a failure.
//!
//! Its future is named ([`ResponseFuture`]), so a call through the layer allocates nothing.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::{BreakerOpen, CircuitBreaker, Permit};
use crate::BoxError;

/// How a [`BreakerLayer`] judges a call: true when it counts as a failure of the service.
///
/// Any `Fn(&Result<Res, BoxError>) -> bool` is one; [`ErrorsFail`] (every error, no response)
/// is the default, and [`HttpClassifier`](crate::classify::HttpClassifier) a ready one for
/// HTTP (5xx and connection errors fail; 4xx are the service working).
pub trait Classify<Res> {
    /// True when this result counts against the service.
    fn is_failure(&self, result: &Result<Res, BoxError>) -> bool;
}

impl<Res, F> Classify<Res> for F
where
    F: Fn(&Result<Res, BoxError>) -> bool,
{
    fn is_failure(&self, result: &Result<Res, BoxError>) -> bool {
        self(result)
    }
}

/// Every error is a failure; every response a success. What [`BreakerLayer::new`] uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsFail;

impl<Res> Classify<Res> for ErrorsFail {
    fn is_failure(&self, result: &Result<Res, BoxError>) -> bool {
        result.is_err()
    }
}

/// A `tower::Layer` putting a [`CircuitBreaker`] in front of a service: rejected calls fail at
/// once with [`BreakerOpen`] (as a `BoxError`); the classifier says which outcomes count as
/// failures (by default, every error).
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = ErrorsFail> {
    breaker: CircuitBreaker,
    classify: C,
}

impl BreakerLayer {
    /// Wrap services with this breaker (clones share it); errors count as failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classify: ErrorsFail,
        }
    }
}

impl<C> BreakerLayer<C> {
    /// Wrap services with this breaker, counting as failures what `classify` says.
    pub fn with_classifier(breaker: CircuitBreaker, classify: C) -> Self {
        Self { breaker, classify }
    }
}

impl<S, C: Clone> tower::Layer<S> for BreakerLayer<C> {
    type Service = Breaker<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`BreakerLayer`].
#[derive(Debug, Clone)]
pub struct Breaker<S, C = ErrorsFail> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
}

impl<S, C, Req> tower::Service<Req> for Breaker<S, C>
where
    S: tower::Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => ResponseFuture {
                fut: Some(self.inner.call(req)),
                permit: Some(permit),
                open: None,
                classify: self.classify.clone(),
            },
            Err(open) => ResponseFuture {
                fut: None,
                permit: None,
                open: Some(open),
                classify: self.classify.clone(),
            },
        }
    }
}

pin_project! {
    /// The future of a [`Breaker`] call.
    ///
    /// Cancel safety: dropped before the call finishes, it reports nothing (a cancelled call
    /// is neither a success nor a failure) and frees a half-open probe slot.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, C> {
        #[pin]
        fut: Option<F>,
        permit: Option<Permit>,
        open: Option<BreakerOpen>,
        classify: C,
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl<F, T, E, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(open) = this.open.take() {
            return Poll::Ready(Err(open.into()));
        }
        let Some(fut) = this.fut.as_pin_mut() else {
            return Poll::Ready(Err("breaker future polled after completion".into()));
        };
        let result = ready!(fut.poll(cx)).map_err(Into::into);
        if let Some(permit) = this.permit.take() {
            if this.classify.is_failure(&result) {
                permit.failure();
            } else {
                permit.success();
            }
        }
        Poll::Ready(result)
    }
}

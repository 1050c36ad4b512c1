//! [`AdaptiveConcurrencyLayer`]: an [`AdaptiveConcurrency`] limit in front of any
//! `tower::Service`, fed by each call's result.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::{AdaptiveConcurrency, AdaptivePermit};
use crate::breaker::{Classify, ErrorsFail};
use crate::BoxError;

/// A `tower::Layer` holding each call to an [`AdaptiveConcurrency`] limit. The classifier —
/// the breaker's [`Classify`], since the question is the same: did the service fail? — says
/// which results are drops (by default every error;
/// [`HttpClassifier`](crate::classify::HttpClassifier) adds 5xx). Calls wait for a slot.
///
/// ```
/// use corral::classify::HttpClassifier;
/// use corral::limit::{AdaptiveConcurrency, AdaptiveConcurrencyLayer, Gradient};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), corral::BoxError> {
/// let limit = AdaptiveConcurrency::builder().algorithm(Gradient::new()).build()?;
/// let mut svc = ServiceBuilder::new()
///     .layer(AdaptiveConcurrencyLayer::with_classifier(limit.clone(), HttpClassifier::new()))
///     .service(tower::service_fn(|_req: ()| async {
///         Ok::<_, corral::BoxError>(http::Response::new(()))
///     }));
/// svc.ready().await?.call(()).await?;
/// assert_eq!(limit.in_flight(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveConcurrencyLayer<C = ErrorsFail> {
    limit: AdaptiveConcurrency,
    classify: C,
}

impl AdaptiveConcurrencyLayer {
    /// Every error is a drop.
    pub fn new(limit: AdaptiveConcurrency) -> Self {
        Self {
            limit,
            classify: ErrorsFail,
        }
    }
}

impl<C> AdaptiveConcurrencyLayer<C> {
    /// Drops are what `classify` calls failures.
    pub fn with_classifier(limit: AdaptiveConcurrency, classify: C) -> Self {
        Self { limit, classify }
    }
}

impl<S, C: Clone> tower::Layer<S> for AdaptiveConcurrencyLayer<C> {
    type Service = AdaptiveLimit<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit {
            inner,
            limit: self.limit.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`AdaptiveConcurrencyLayer`].
#[derive(Debug, Clone)]
pub struct AdaptiveLimit<S, C = ErrorsFail> {
    inner: S,
    limit: AdaptiveConcurrency,
    classify: C,
}

type SlotWait = Pin<Box<dyn Future<Output = AdaptivePermit> + Send>>;

impl<S, C, Req> tower::Service<Req> for AdaptiveLimit<S, C>
where
    S: tower::Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let classify = self.classify.clone();
        if let Some(permit) = self.limit.try_acquire() {
            return ResponseFuture {
                state: State::Calling {
                    fut: self.inner.call(req),
                    permit: Some(permit),
                },
                classify,
            };
        }
        let limit = self.limit.clone();
        let wait: SlotWait = Box::pin(async move { limit.acquire().await });
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Waiting {
                wait,
                call: Some((svc, req)),
            },
            classify,
        }
    }
}

pin_project! {
    /// The future of an [`AdaptiveLimit`] call.
    ///
    /// Cancel safety: safe to drop; a call dropped before it finishes frees its slot and
    /// moves nothing.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, Req, C>
    where
        S: tower::Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        classify: C,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: tower::Service<Req>,
    {
        Waiting { wait: SlotWait, call: Option<(S, Req)> },
        Calling { #[pin] fut: S::Future, permit: Option<AdaptivePermit> },
    }
}

impl<S: tower::Service<Req>, Req, C> fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: tower::Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { wait, call } => {
                    let permit = ready!(wait.as_mut().poll(cx));
                    let Some((mut svc, req)) = call.take() else {
                        return Poll::Ready(Err(
                            "adaptive limit future polled after completion".into()
                        ));
                    };
                    let fut = svc.call(req);
                    this.state.set(State::Calling {
                        fut,
                        permit: Some(permit),
                    });
                }
                StateProj::Calling { fut, permit } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    if let Some(permit) = permit.take() {
                        if this.classify.is_failure(&result) {
                            permit.dropped();
                        } else {
                            permit.success();
                        }
                    }
                    return Poll::Ready(result);
                }
            }
        }
    }
}

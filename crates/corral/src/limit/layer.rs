//! [`RateLimitLayer`]: a rate limit in front of any `tower::Service`, which waits, waits a
//! bounded time, or sheds ([`OnLimit`]).
//!
//! Waiting is right for a batch job that must get everything through; shedding is right for a
//! server that would rather answer "too busy" now than queue a request its own caller has
//! already given up on. With one limit for every call ([`RateLimitLayer::new`]) in
//! [`OnLimit::Wait`] mode, `poll_ready` itself waits for the cell, so tower's own middleware
//! (`Buffer`, `LoadShed`, `Balance`) sees the limit as back-pressure. A keyed limit cannot:
//! the key is in the request, which `poll_ready` does not see, so the wait happens in the
//! call.
//!
//! The service's future is named ([`ResponseFuture`]); a call that finds its cell free
//! allocates nothing and clones nothing.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::gcra::Acquire;
use super::{KeyedRateLimiter, NotUntil, RateLimiter};
use crate::trace::event;
use crate::BoxError;

/// What a limit layer does with a call that finds the limit reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLimit {
    /// Wait as long as it takes (the default).
    #[default]
    Wait,
    /// Wait up to this long; a call that would wait longer fails at once, taking nothing.
    WaitAtMost(Duration),
    /// Fail at once: a rate limit with [`NotUntil`] (when the call could pass), a concurrency
    /// limit with [`AtCapacity`](super::AtCapacity).
    Reject,
}

type KeyFn<Req, K> = Arc<dyn Fn(&Req) -> K + Send + Sync>;

enum Gate<Req, K> {
    Direct(RateLimiter),
    Keyed(KeyedRateLimiter<K>, KeyFn<Req, K>),
}

impl<Req, K> Clone for Gate<Req, K> {
    fn clone(&self) -> Self {
        match self {
            Gate::Direct(l) => Gate::Direct(l.clone()),
            Gate::Keyed(l, k) => Gate::Keyed(l.clone(), k.clone()),
        }
    }
}

impl<Req, K: Hash + Eq + Clone> Gate<Req, K> {
    fn check(&self, req: &Req) -> Result<(), NotUntil> {
        match self {
            Gate::Direct(l) => l.check(),
            Gate::Keyed(l, key) => l.check(&key(req)),
        }
    }

    fn acquire(&self, req: &Req, deadline: Option<Instant>) -> Acquire {
        match self {
            Gate::Direct(l) => l.acquire(1, deadline),
            Gate::Keyed(l, key) => l.acquire(&key(req), 1, deadline),
        }
    }
}

/// A `tower::Layer` that takes a rate-limit cell before each call: one limit for every call,
/// or one per key (e.g. the request's host, each with its own `pause_until`). What happens
/// when no cell is free is its [`OnLimit`] mode.
///
/// ```
/// use corral::limit::{NotUntil, OnLimit, Rate, RateLimitLayer, RateLimiter};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), corral::BoxError> {
/// let limiter = RateLimiter::builder().rate(Rate::per_second(1)).build()?;
/// let mut svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(limiter).on_limit(OnLimit::Reject))
///     .service(tower::service_fn(|n: u32| async move { Ok::<_, corral::BoxError>(n) }));
/// assert_eq!(svc.ready().await?.call(1).await?, 1);
/// let shed = svc.ready().await?.call(2).await.unwrap_err();
/// assert!(shed.is::<NotUntil>()); // the second call in the same second is shed at once
/// # Ok(())
/// # }
/// ```
pub struct RateLimitLayer<Req, K = ()> {
    gate: Gate<Req, K>,
    mode: OnLimit,
}

impl<Req, K> Clone for RateLimitLayer<Req, K> {
    fn clone(&self) -> Self {
        Self {
            gate: self.gate.clone(),
            mode: self.mode,
        }
    }
}

impl<Req, K> fmt::Debug for RateLimitLayer<Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<Req> RateLimitLayer<Req, ()> {
    /// One limit for every call.
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            gate: Gate::Direct(limiter),
            mode: OnLimit::Wait,
        }
    }
}

impl<Req, K: Hash + Eq + Clone> RateLimitLayer<Req, K> {
    /// Limits each call by the limiter's state for `key(&request)`.
    pub fn keyed(
        limiter: KeyedRateLimiter<K>,
        key: impl Fn(&Req) -> K + Send + Sync + 'static,
    ) -> Self {
        Self {
            gate: Gate::Keyed(limiter, Arc::new(key)),
            mode: OnLimit::Wait,
        }
    }
}

impl<Req, K> RateLimitLayer<Req, K> {
    /// What to do with a call that finds no cell free (default [`OnLimit::Wait`]).
    pub fn on_limit(mut self, mode: OnLimit) -> Self {
        self.mode = mode;
        self
    }
}

impl<S, Req, K> tower::Layer<S> for RateLimitLayer<Req, K> {
    type Service = RateLimit<S, Req, K>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            gate: self.gate.clone(),
            mode: self.mode,
            waiting: None,
            cell_held: false,
        }
    }
}

/// The service made by [`RateLimitLayer`].
pub struct RateLimit<S, Req, K = ()> {
    inner: S,
    gate: Gate<Req, K>,
    mode: OnLimit,
    /// A direct limiter in `Wait` mode waits in `poll_ready`: the wait in progress, and
    /// whether a cell is held for the next call.
    waiting: Option<Acquire>,
    cell_held: bool,
}

impl<S: Clone, Req, K> Clone for RateLimit<S, Req, K> {
    fn clone(&self) -> Self {
        // A clone holds no cell: it takes its own when it is polled ready.
        Self {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
            mode: self.mode,
            waiting: None,
            cell_held: false,
        }
    }
}

impl<S, Req, K> fmt::Debug for RateLimit<S, Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("mode", &self.mode)
            .field("cell_held", &self.cell_held)
            .finish_non_exhaustive()
    }
}

impl<S, Req, K> RateLimit<S, Req, K> {
    fn waits_when_ready(&self) -> bool {
        matches!((&self.gate, self.mode), (Gate::Direct(_), OnLimit::Wait))
    }
}

impl<S, Req, K> tower::Service<Req> for RateLimit<S, Req, K>
where
    S: tower::Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.waits_when_ready() && !self.cell_held {
            if let Gate::Direct(limiter) = &self.gate {
                // The fast path: a cell free now, with no waiter to set up.
                if self.waiting.is_none() && limiter.check().is_ok() {
                    self.cell_held = true;
                    return self.inner.poll_ready(cx).map_err(Into::into);
                }
                let wait = self.waiting.get_or_insert_with(|| limiter.acquire(1, None));
                // Without a deadline the wait is never refused.
                let _ = ready!(Pin::new(wait).poll(cx));
                self.waiting = None;
                self.cell_held = true;
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // A cell held from `poll_ready`, or the fast path: a cell free now (this is also all
        // that Reject mode does).
        if std::mem::take(&mut self.cell_held) {
            return ResponseFuture::calling(self.inner.call(req));
        }
        match self.gate.check(&req) {
            Ok(()) => ResponseFuture::calling(self.inner.call(req)),
            Err(refused) => self.at_limit(req, refused),
        }
    }
}

impl<S, Req, K> RateLimit<S, Req, K>
where
    S: tower::Service<Req> + Clone,
    K: Hash + Eq + Clone,
{
    /// The slow path, kept out of line so the fast one stays small enough to inline: no cell
    /// was free.
    #[cold]
    #[inline(never)]
    fn at_limit(&mut self, req: Req, refused: NotUntil) -> ResponseFuture<S, Req> {
        let deadline = match self.mode {
            OnLimit::Reject => {
                event!(debug, wait = ?refused.wait_from(Instant::now()), "rate limit reached: call shed");
                return ResponseFuture::refused(refused);
            }
            OnLimit::WaitAtMost(d) => Some(Instant::now() + d),
            OnLimit::Wait => None,
        };
        let acquire = self.gate.acquire(&req, deadline);
        // The ready service makes the call once the cell is due; a clone is left behind.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Waiting {
                acquire,
                call: Some((svc, req)),
            },
        }
    }
}

pin_project! {
    /// The future of a [`RateLimit`] call: the wait for a cell if there is one, then the call.
    ///
    /// Cancel safety: safe to drop; dropped while waiting, it wastes the cell it had reserved
    /// (see [`Acquire`]) and makes no call.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, Req>
    where
        S: tower::Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: tower::Service<Req>,
    {
        Waiting { acquire: Acquire, call: Option<(S, Req)> },
        Calling { #[pin] fut: S::Future },
        Refused { refused: Option<NotUntil> },
    }
}

impl<S: tower::Service<Req>, Req> ResponseFuture<S, Req> {
    #[inline]
    fn calling(fut: S::Future) -> Self {
        Self {
            state: State::Calling { fut },
        }
    }

    fn refused(refused: NotUntil) -> Self {
        Self {
            state: State::Refused {
                refused: Some(refused),
            },
        }
    }
}

impl<S: tower::Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: tower::Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { acquire, call } => {
                    if let Err(refused) = ready!(Pin::new(acquire).poll(cx)) {
                        return Poll::Ready(Err(refused.into()));
                    }
                    let Some((mut svc, req)) = call.take() else {
                        return Poll::Ready(
                            Err("rate limit future polled after completion".into()),
                        );
                    };
                    let fut = svc.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Refused { refused } => {
                    return Poll::Ready(Err(match refused.take() {
                        Some(r) => r.into(),
                        None => "rate limit future polled after completion".into(),
                    }))
                }
            }
        }
    }
}

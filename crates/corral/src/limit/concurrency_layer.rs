//! [`ConcurrencyLimitLayer`]: at most N calls in flight — in all, or per key — in front of any
//! `tower::Service`, with the same [`OnLimit`] modes as the rate-limit layer.
//!
//! tower's own `ConcurrencyLimitLayer` covers the global, waiting case; this one adds a limit
//! per key (per host: one slow host cannot take every slot) and shedding (`Reject`, or a
//! bounded wait) with a typed error. A slot is held from the call until its response future
//! completes (not while a streamed body is read), as in tower.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

use super::{KeyPermit, KeyedConcurrency, OnLimit};
use crate::error::ConfigError;
use crate::trace::event;
use crate::BoxError;

/// A call was refused because its concurrency limit was reached (and, with
/// [`OnLimit::WaitAtMost`], no slot freed up in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtCapacity {
    limit: usize,
}

impl AtCapacity {
    #[cfg(test)]
    pub(crate) fn new_for_tests(limit: usize) -> Self {
        Self { limit }
    }

    /// The limit that was reached.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for AtCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "concurrency limit of {} reached", self.limit)
    }
}

impl std::error::Error for AtCapacity {}

type KeyFn<Req, K> = Arc<dyn Fn(&Req) -> K + Send + Sync>;

enum Gate<Req, K> {
    Global(Arc<Semaphore>, usize),
    Keyed(KeyedConcurrency<K>, KeyFn<Req, K>),
}

impl<Req, K> Clone for Gate<Req, K> {
    fn clone(&self) -> Self {
        match self {
            Gate::Global(s, n) => Gate::Global(s.clone(), *n),
            Gate::Keyed(c, k) => Gate::Keyed(c.clone(), k.clone()),
        }
    }
}

/// A slot held for one call.
enum Slot<K: Hash + Eq> {
    Global(#[allow(dead_code)] OwnedSemaphorePermit),
    Keyed(#[allow(dead_code)] KeyPermit<K>),
}

type SlotWait<K> = Pin<Box<dyn Future<Output = Option<Slot<K>>> + Send>>;

impl<Req, K: Hash + Eq + Clone + Send + 'static> Gate<Req, K> {
    fn limit(&self) -> usize {
        match self {
            Gate::Global(_, n) => *n,
            Gate::Keyed(c, _) => c.limit(),
        }
    }

    fn try_take(&self, req: &Req) -> Option<Slot<K>> {
        match self {
            Gate::Global(s, _) => s.clone().try_acquire_owned().ok().map(Slot::Global),
            Gate::Keyed(c, key) => c.try_acquire(key(req)).map(Slot::Keyed),
        }
    }

    /// Waits for a slot, up to `max_wait` if given (`None` back when it runs out).
    fn wait(&self, req: &Req, max_wait: Option<Duration>) -> SlotWait<K> {
        let take: SlotWait<K> = match self {
            Gate::Global(s, _) => {
                let s = s.clone();
                Box::pin(async move { s.acquire_owned().await.ok().map(Slot::Global) })
            }
            Gate::Keyed(c, key) => {
                let (c, key) = (c.clone(), key(req));
                Box::pin(async move { Some(Slot::Keyed(c.acquire(key).await)) })
            }
        };
        match max_wait {
            None => take,
            Some(d) => Box::pin(async move { tokio::time::timeout(d, take).await.ok().flatten() }),
        }
    }
}

/// A `tower::Layer` allowing at most N calls in flight, in all ([`new`](Self::new)) or per key
/// ([`keyed`](Self::keyed)); what happens at the limit is its [`OnLimit`] mode.
///
/// In all and in [`OnLimit::Wait`] mode, `poll_ready` waits for the slot (the service reports
/// back-pressure, as tower's does). Keyed, or in another mode, the slot is taken in the call.
///
/// ```
/// use corral::limit::{AtCapacity, ConcurrencyLimitLayer, KeyedConcurrency, OnLimit};
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), corral::BoxError> {
/// // One call per host at a time; a second one for a busy host is shed.
/// let per_host = KeyedConcurrency::<String>::new(1)?;
/// let mut svc = ServiceBuilder::new()
///     .layer(ConcurrencyLimitLayer::keyed(per_host, |host: &String| host.clone()).on_limit(OnLimit::Reject))
///     .service(tower::service_fn(|_host: String| async {
///         tokio::time::sleep(Duration::from_secs(1)).await;
///         Ok::<_, corral::BoxError>(())
///     }));
/// let slow = svc.ready().await?.call("a.example".into());
/// let shed = svc.ready().await?.call("a.example".into()).await.unwrap_err();
/// assert!(shed.is::<AtCapacity>());
/// svc.ready().await?.call("b.example".into()).await?; // another host is not held up
/// slow.await?;
/// # Ok(())
/// # }
/// ```
pub struct ConcurrencyLimitLayer<Req, K = ()> {
    gate: Gate<Req, K>,
    mode: OnLimit,
}

impl<Req, K> Clone for ConcurrencyLimitLayer<Req, K> {
    fn clone(&self) -> Self {
        Self {
            gate: self.gate.clone(),
            mode: self.mode,
        }
    }
}

impl<Req, K> fmt::Debug for ConcurrencyLimitLayer<Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<Req> ConcurrencyLimitLayer<Req, ()> {
    /// At most `limit` calls in flight in all, shared by every service this layer makes and
    /// their clones. `limit` must be at least 1.
    pub fn new(limit: usize) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::new("limit", "concurrency must be at least 1"));
        }
        Ok(Self {
            gate: Gate::Global(Arc::new(Semaphore::new(limit)), limit),
            mode: OnLimit::Wait,
        })
    }
}

impl<Req, K> ConcurrencyLimitLayer<Req, K> {
    /// At most `limits`' limit in flight per `key(&request)`.
    pub fn keyed(
        limits: KeyedConcurrency<K>,
        key: impl Fn(&Req) -> K + Send + Sync + 'static,
    ) -> Self {
        Self {
            gate: Gate::Keyed(limits, Arc::new(key)),
            mode: OnLimit::Wait,
        }
    }

    /// What to do with a call that finds the limit reached (default [`OnLimit::Wait`]).
    pub fn on_limit(mut self, mode: OnLimit) -> Self {
        self.mode = mode;
        self
    }
}

impl<S, Req, K> tower::Layer<S> for ConcurrencyLimitLayer<Req, K> {
    type Service = ConcurrencyLimit<S, Req, K>;
    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::new(inner, self.gate.clone(), self.mode)
    }
}

/// The service made by [`ConcurrencyLimitLayer`].
pub struct ConcurrencyLimit<S, Req, K = ()> {
    inner: S,
    gate: Gate<Req, K>,
    mode: OnLimit,
    /// In all and in `Wait` mode: the semaphore `poll_ready` waits on, and the slot it holds
    /// for the next call.
    ready: Option<PollSemaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl<S, Req, K> ConcurrencyLimit<S, Req, K> {
    fn new(inner: S, gate: Gate<Req, K>, mode: OnLimit) -> Self {
        let ready = match (&gate, mode) {
            (Gate::Global(s, _), OnLimit::Wait) => Some(PollSemaphore::new(s.clone())),
            _ => None,
        };
        Self {
            inner,
            gate,
            mode,
            ready,
            held: None,
        }
    }
}

impl<S: Clone, Req, K> Clone for ConcurrencyLimit<S, Req, K> {
    fn clone(&self) -> Self {
        // A clone holds no slot: it takes its own when it is polled ready.
        Self::new(self.inner.clone(), self.gate.clone(), self.mode)
    }
}

impl<S, Req, K> fmt::Debug for ConcurrencyLimit<S, Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("mode", &self.mode)
            .field("holds_slot", &self.held.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, Req, K> tower::Service<Req> for ConcurrencyLimit<S, Req, K>
where
    S: tower::Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let (Some(sem), None) = (&mut self.ready, &self.held) {
            // Our semaphores are never closed, so this is always `Some`.
            self.held = ready!(sem.poll_acquire(cx));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let slot = match self.held.take() {
            Some(permit) => Some(Slot::Global(permit)),
            None => self.gate.try_take(&req),
        };
        match slot {
            Some(slot) => ResponseFuture::calling(self.inner.call(req), slot),
            None => self.at_limit(req),
        }
    }
}

impl<S, Req, K> ConcurrencyLimit<S, Req, K>
where
    S: tower::Service<Req> + Clone,
    K: Hash + Eq + Clone + Send + 'static,
{
    /// The slow path, kept out of line so the fast one stays small enough to inline: no slot
    /// was free.
    #[cold]
    #[inline(never)]
    fn at_limit(&mut self, req: Req) -> ResponseFuture<S, Req, K> {
        let max_wait = match self.mode {
            OnLimit::Reject => {
                event!(
                    debug,
                    limit = self.gate.limit(),
                    "concurrency limit reached: call shed"
                );
                return ResponseFuture::refused(AtCapacity {
                    limit: self.gate.limit(),
                });
            }
            OnLimit::WaitAtMost(d) => Some(d),
            OnLimit::Wait => None,
        };
        let wait = self.gate.wait(&req, max_wait);
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Waiting {
                wait,
                call: Some((svc, req)),
                limit: self.gate.limit(),
            },
        }
    }
}

pin_project! {
    /// The future of a [`ConcurrencyLimit`] call: the wait for a slot if there is one, then
    /// the call, holding the slot until it completes.
    ///
    /// Cancel safety: safe to drop; dropped while waiting it holds no slot, dropped while
    /// calling it frees its slot.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, Req, K>
    where
        S: tower::Service<Req>,
        K: Hash,
        K: Eq,
    {
        #[pin]
        state: State<S, Req, K>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, K>
    where
        S: tower::Service<Req>,
        K: Hash,
        K: Eq,
    {
        Waiting { wait: SlotWait<K>, call: Option<(S, Req)>, limit: usize },
        Calling { #[pin] fut: S::Future, slot: Slot<K> },
        Refused { refused: Option<AtCapacity> },
    }
}

impl<S: tower::Service<Req>, Req, K: Hash + Eq> ResponseFuture<S, Req, K> {
    #[inline]
    fn calling(fut: S::Future, slot: Slot<K>) -> Self {
        Self {
            state: State::Calling { fut, slot },
        }
    }

    fn refused(refused: AtCapacity) -> Self {
        Self {
            state: State::Refused {
                refused: Some(refused),
            },
        }
    }
}

impl<S: tower::Service<Req>, Req, K: Hash + Eq> fmt::Debug for ResponseFuture<S, Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, Req, K> Future for ResponseFuture<S, Req, K>
where
    S: tower::Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { wait, call, limit } => {
                    let Some(slot) = ready!(wait.as_mut().poll(cx)) else {
                        return Poll::Ready(Err(AtCapacity { limit: *limit }.into()));
                    };
                    let Some((mut svc, req)) = call.take() else {
                        return Poll::Ready(Err(
                            "concurrency limit future polled after completion".into(),
                        ));
                    };
                    let fut = svc.call(req);
                    this.state.set(State::Calling { fut, slot });
                }
                StateProj::Calling { fut, .. } => return fut.poll(cx).map_err(Into::into),
                StateProj::Refused { refused } => {
                    return Poll::Ready(Err(match refused.take() {
                        Some(r) => r.into(),
                        None => "concurrency limit future polled after completion".into(),
                    }))
                }
            }
        }
    }
}

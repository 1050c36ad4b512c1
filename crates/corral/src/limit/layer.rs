//! [`RateLimitLayer`]: a limiter in front of any `tower::Service`.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::keyed::KeyedRateLimiter;

type KeyFn<Req, K> = Arc<dyn Fn(&Req) -> K + Send + Sync>;

/// A `tower::Layer` that waits for a rate-limit cell before each call. With a key function,
/// each key (e.g. the request's host) has its own limit and its own `pause_until`.
pub struct RateLimitLayer<Req, K> {
    limiter: KeyedRateLimiter<K>,
    key: KeyFn<Req, K>,
}

impl<Req, K> Clone for RateLimitLayer<Req, K> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

impl<Req, K> fmt::Debug for RateLimitLayer<Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer").finish_non_exhaustive()
    }
}

impl<Req, K: Hash + Eq + Clone> RateLimitLayer<Req, K> {
    /// Limits each call by the limiter's state for `key(&request)`.
    pub fn keyed(
        limiter: KeyedRateLimiter<K>,
        key: impl Fn(&Req) -> K + Send + Sync + 'static,
    ) -> Self {
        Self {
            limiter,
            key: Arc::new(key),
        }
    }
}

impl<Req> RateLimitLayer<Req, ()> {
    /// One limit for every call.
    pub fn new(limiter: KeyedRateLimiter<()>) -> Self {
        Self::keyed(limiter, |_| ())
    }
}

impl<S, Req, K> tower::Layer<S> for RateLimitLayer<Req, K> {
    type Service = RateLimit<S, Req, K>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
pub struct RateLimit<S, Req, K> {
    inner: S,
    layer: RateLimitLayer<Req, K>,
}

impl<S: Clone, Req, K> Clone for RateLimit<S, Req, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, Req, K> fmt::Debug for RateLimit<S, Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

impl<S, Req, K> tower::Service<Req> for RateLimit<S, Req, K>
where
    S: tower::Service<Req> + Clone + Send + 'static,
    S::Error: Into<crate::BoxError>,
    S::Future: Send,
    Req: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = crate::BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, crate::BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The wait depends on the request's key, which `poll_ready` cannot see, so it happens
        // here; the ready service is taken and a clone left behind (the tower idiom).
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        let key = (self.layer.key)(&req);
        let limiter = self.layer.limiter.clone();
        Box::pin(async move {
            limiter.until_ready(&key).await;
            svc.call(req).await.map_err(Into::into)
        })
    }
}

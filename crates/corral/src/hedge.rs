//! Hedged requests: when a call is slower than most, send a second one and take whichever
//! answers first.
//!
//! Tail latency is mostly bad luck — a GC pause, a cold cache, a queue behind one slow request
//! — and rarely strikes twice at once. A hedge waits until the call has taken longer than a
//! percentile of recent latencies (p95 by default), then sends the same request again; the
//! first success wins and the other call is dropped (cancelled). A budget caps hedges at a
//! fraction of calls (10 % by default), so a service that is slow for everyone does not get
//! twice the load exactly when it can least take it. Until enough latencies are known
//! (`min_samples` in the last full period), nothing is hedged.
//!
//! The anchor is tower's `hedge` middleware, with the same shape: latencies recorded in an
//! HDR histogram that rotates every `period` (hedging reads the last full period, so a burst
//! of slow calls changes the threshold only once it has been measured), and a request that
//! must be `Clone`. One difference: a period with fewer than `min_samples` calls does not
//! turn hedging off; it goes on collecting until it has them. Hedge only requests that are safe to send twice (idempotent ones).
//!
//! ```
//! use corral::hedge::HedgeLayer;
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), corral::BoxError> {
//! let mut svc = ServiceBuilder::new()
//!     .layer(HedgeLayer::builder().percentile(0.9).min_samples(10).build()?)
//!     .service(tower::service_fn(|ms: u64| async move {
//!         tokio::time::sleep(Duration::from_millis(ms)).await;
//!         Ok::<_, corral::BoxError>(ms)
//!     }));
//! svc.ready().await?.call(5).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hdrhistogram::Histogram;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::ConfigError;
use crate::retry::RetryBudget;
use crate::trace::event;
use crate::BoxError;

/// Builder for [`HedgeLayer`].
#[derive(Debug, Clone)]
pub struct HedgeLayerBuilder {
    percentile: f64,
    min_samples: u64,
    period: Duration,
    budget: Option<RetryBudget>,
    ratio: f64,
}

impl HedgeLayerBuilder {
    /// Hedge a call once it has taken longer than this fraction of recent calls did, in
    /// (0, 1) (default 0.95).
    pub fn percentile(mut self, p: f64) -> Self {
        self.percentile = p;
        self
    }
    /// Hedge nothing until the last full period recorded this many calls (default 20).
    pub fn min_samples(mut self, n: u64) -> Self {
        self.min_samples = n;
        self
    }
    /// How long a latency histogram collects before it becomes the one hedging reads
    /// (default 10 s).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }
    /// Hedges may be at most this fraction of calls, in [0, 1] (default 0.1), with a reserve
    /// of 10 for a quiet start. Replaced by [`budget`](Self::budget).
    pub fn max_ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }
    /// Share a budget with other layers (a [`RetryBudget`] counts hedges as retries: one
    /// budget for both keeps the extra load of retries and hedges together under its ratio).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }
    /// Checks the configuration.
    pub fn build(self) -> Result<HedgeLayer, ConfigError> {
        if !(self.percentile > 0.0 && self.percentile < 1.0) {
            return Err(ConfigError::new(
                "hedge",
                format!("percentile must be in (0, 1) (got {})", self.percentile),
            ));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new("hedge", "period must be longer than zero"));
        }
        let budget = match self.budget {
            Some(b) => b,
            None => RetryBudget::new(self.ratio, 10)
                .map_err(|e| ConfigError::new("hedge", e.message().to_string()))?,
        };
        let histogram = || {
            // 1 µs to 1 h at 2 significant digits: a few KiB.
            Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .map_err(|e| ConfigError::new("hedge", format!("latency histogram: {e}")))
        };
        Ok(HedgeLayer {
            shared: Arc::new(Shared {
                percentile: self.percentile,
                min_samples: self.min_samples,
                period: self.period,
                budget,
                latencies: Mutex::new(Latencies {
                    write: histogram()?,
                    read_threshold: None,
                    rotated_at: Instant::now(),
                }),
            }),
        })
    }
}

struct Latencies {
    /// This period's latencies, in µs.
    write: Histogram<u64>,
    /// The percentile of the last full period, if it had enough samples.
    read_threshold: Option<Duration>,
    rotated_at: Instant,
}

struct Shared {
    percentile: f64,
    min_samples: u64,
    period: Duration,
    budget: RetryBudget,
    latencies: Mutex<Latencies>,
}

impl Shared {
    /// Makes the period's latencies the ones hedging reads, once the period is over and has
    /// `min_samples`; a quiet period goes on collecting (and the threshold stays) until it has
    /// them, so a low-traffic service keeps a threshold measured over a longer time.
    fn rotate_if_due(&self, l: &mut Latencies, now: Instant) {
        if now.saturating_duration_since(l.rotated_at) < self.period
            || l.write.len() < self.min_samples.max(1)
        {
            return;
        }
        l.read_threshold = Some(Duration::from_micros(
            l.write.value_at_quantile(self.percentile),
        ));
        l.write.reset();
        l.rotated_at = now;
    }

    /// How long to wait before hedging a call starting now (`None`: not enough data yet).
    fn threshold(&self) -> Option<Duration> {
        let mut l = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.rotate_if_due(&mut l, Instant::now());
        l.read_threshold
    }

    fn record(&self, latency: Duration) {
        let mut l = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        self.rotate_if_due(&mut l, now);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        l.write.saturating_record(micros.max(1));
    }
}

/// A `tower::Layer` hedging slow calls; see the [module docs](self). Clones (and every service
/// it makes) share one latency record and one budget.
#[derive(Clone)]
pub struct HedgeLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for HedgeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("percentile", &self.shared.percentile)
            .field("threshold", &self.threshold())
            .finish_non_exhaustive()
    }
}

impl HedgeLayer {
    /// Defaults: p95, 20 samples, a 10 s period, hedges at most 10 % of calls.
    pub fn builder() -> HedgeLayerBuilder {
        HedgeLayerBuilder {
            percentile: 0.95,
            min_samples: 20,
            period: Duration::from_secs(10),
            budget: None,
            ratio: 0.1,
        }
    }

    /// The wait after which a call starting now would be hedged (`None` while too few
    /// latencies are known).
    pub fn threshold(&self) -> Option<Duration> {
        self.shared.threshold()
    }
}

impl<S> tower::Layer<S> for HedgeLayer {
    type Service = Hedge<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`HedgeLayer`].
#[derive(Clone)]
pub struct Hedge<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for Hedge<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge").finish_non_exhaustive()
    }
}

impl<S, Req> tower::Service<Req> for Hedge<S>
where
    S: tower::Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.shared.budget.deposit();
        let threshold = self.shared.threshold();
        let now = Instant::now();
        // The ready service makes the first call; a clone may make the hedge.
        let clone = self.inner.clone();
        let mut first = std::mem::replace(&mut self.inner, clone);
        let spare = threshold.map(|_| (self.inner.clone(), req.clone()));
        ResponseFuture {
            first: Some(first.call(req)),
            second: None,
            delay: threshold.map(|t| tokio::time::sleep_until(now + t)),
            spare,
            first_started: now,
            second_started: now,
            failed: None,
            shared: self.shared.clone(),
        }
    }
}

pin_project! {
    /// The future of a [`Hedge`] call: the call, and after the threshold perhaps a second one;
    /// the first success wins.
    ///
    /// Cancel safety: dropping it drops both calls.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, Req>
    where
        S: tower::Service<Req>,
    {
        #[pin]
        first: Option<S::Future>,
        #[pin]
        second: Option<S::Future>,
        #[pin]
        delay: Option<Sleep>,
        spare: Option<(S, Req)>,
        first_started: Instant,
        second_started: Instant,
        failed: Option<BoxError>,
        shared: Arc<Shared>,
    }
}

impl<S: tower::Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("hedged", &self.second.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: tower::Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // Launch the hedge once the threshold has passed, the budget allows, and a clone is
        // ready. While the clone is not ready the first call goes on alone.
        if let Some(delay) = this.delay.as_mut().as_pin_mut() {
            if delay.poll(cx).is_ready() {
                let ready = match this.spare.as_mut() {
                    Some((svc, _)) => svc.poll_ready(cx),
                    None => Poll::Ready(Ok(())),
                };
                match ready {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) => {
                        this.delay.set(None);
                        if this.first.is_some() && this.shared.budget.withdraw() {
                            event!(debug, after = ?this.first_started.elapsed(), "hedging a slow call");
                            if let Some((mut svc, req)) = this.spare.take() {
                                this.second.set(Some(svc.call(req)));
                                *this.second_started = Instant::now();
                            }
                        }
                    }
                    Poll::Ready(Err(_)) => this.delay.set(None),
                }
            }
        }
        if let Some(fut) = this.first.as_mut().as_pin_mut() {
            if let Poll::Ready(out) = fut.poll(cx) {
                this.first.set(None);
                this.delay.set(None);
                match out {
                    Ok(resp) => {
                        this.shared.record(this.first_started.elapsed());
                        return Poll::Ready(Ok(resp));
                    }
                    Err(e) => *this.failed = Some(e.into()),
                }
            }
        }
        if let Some(fut) = this.second.as_mut().as_pin_mut() {
            if let Poll::Ready(out) = fut.poll(cx) {
                this.second.set(None);
                match out {
                    Ok(resp) => {
                        this.shared.record(this.second_started.elapsed());
                        return Poll::Ready(Ok(resp));
                    }
                    Err(e) => *this.failed = Some(e.into()),
                }
            }
        }
        // Done when neither call is left and no hedge can still start.
        if this.first.is_none() && this.second.is_none() {
            let err = this
                .failed
                .take()
                .unwrap_or_else(|| "hedge future polled after completion".into());
            return Poll::Ready(Err(err));
        }
        Poll::Pending
    }
}

//! A typed topic event bus: publish to named topics, subscribe to one or many.
//!
//! Observers (the reactive pattern) are subscribers. Each subscriber has its own bounded buffer
//! and an explicit policy for when it falls behind ([`Overflow`]):
//!
//! - [`Overflow::DropOldest`]: the publisher never waits; the oldest buffered message is dropped
//!   and the subscriber's next [`recv`](Subscriber::recv) reports how many it lost
//!   ([`Lagged`]) before the next message — lag is reported, never silent.
//! - [`Overflow::Backpressure`]: the publisher waits until the subscriber has room; nothing is
//!   lost, and a slow subscriber slows its topic down.
//!
//! Every subscriber of a topic sees that topic's messages in publication order (publishes to one
//! topic are serialised). Dropping a [`Subscriber`] unsubscribes it at once.
//!
//! Why not `tokio::sync::broadcast`? It has one policy (drop-oldest, shared by all receivers,
//! sized for the slowest), no topics, and no backpressure. The benchmark `benches/bus.rs`
//! compares fan-out cost against it (see `BENCHMARKS.md`).
//!
//! ```
//! use corral::bus::{Bus, Overflow};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), corral::bus::BusError> {
//! let bus = Bus::new();
//! let temperature = bus.topic::<f64>("temperature")?;
//! let mut display = temperature.subscribe(Overflow::Backpressure(16))?;
//! temperature.publish(21.5).await;
//! assert_eq!(display.recv().await, Some(Ok(21.5)));
//! # Ok(())
//! # }
//! ```

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;

/// What a subscriber's buffer does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Keep the newest `n` messages; count the dropped ones and report them.
    DropOldest(usize),
    /// Hold up to `n` messages; publishers wait for room.
    Backpressure(usize),
}

impl Overflow {
    fn capacity(self) -> usize {
        match self {
            Overflow::DropOldest(n) | Overflow::Backpressure(n) => n,
        }
    }
}

/// A subscriber missed this many messages because its buffer was full (drop-oldest policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

impl fmt::Display for Lagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subscriber lagged behind and lost {} message(s)", self.0)
    }
}

impl std::error::Error for Lagged {}

/// Errors from the bus itself (not from delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusError {
    /// The topic exists with a different message type.
    TypeMismatch {
        /// The topic name.
        topic: String,
    },
    /// A buffer capacity of 0 was asked for.
    ZeroCapacity,
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::TypeMismatch { topic } => {
                write!(
                    f,
                    "topic {topic:?} already exists with another message type"
                )
            }
            BusError::ZeroCapacity => {
                f.write_str("a subscriber buffer needs a capacity of at least 1")
            }
        }
    }
}

impl std::error::Error for BusError {}

/// What one publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivery {
    /// Subscribers the message was given to.
    pub delivered: usize,
    /// Of those, how many had to drop their oldest message to make room.
    pub dropped_oldest: usize,
}

struct Queue<T> {
    buf: VecDeque<T>,
    lagged: u64,
    closed: bool,
}

struct Sub<T> {
    id: u64,
    overflow: Overflow,
    queue: Mutex<Queue<T>>,
    /// A message (or close) arrived.
    readable: Notify,
    /// Room was made (backpressure).
    writable: Notify,
}

impl<T> Sub<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct TopicInner<T> {
    name: Arc<str>,
    /// Copy-on-write snapshot of the subscribers: a publish clones one `Arc`; only subscribe
    /// and unsubscribe rebuild the list. A dropped [`Subscriber`] removes itself.
    subs: Mutex<Arc<Vec<Arc<Sub<T>>>>>,
    /// Serialises publishes, so every subscriber sees one order.
    publish: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

impl<T> Drop for TopicInner<T> {
    fn drop(&mut self) {
        // Wake waiting subscribers so they can see the topic is gone and end.
        let subs = self.subs.get_mut().unwrap_or_else(PoisonError::into_inner);
        for sub in subs.iter() {
            sub.readable.notify_waiters();
        }
    }
}

/// A typed topic: publish to it, subscribe to it. Cheap to clone.
pub struct Topic<T> {
    inner: Arc<TopicInner<T>>,
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + 'static> Topic<T> {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Current subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.inner
            .subs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A new subscriber with its own buffer and overflow policy.
    pub fn subscribe(&self, overflow: Overflow) -> Result<Subscriber<T>, BusError> {
        if overflow.capacity() == 0 {
            return Err(BusError::ZeroCapacity);
        }
        let sub = Arc::new(Sub {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            overflow,
            queue: Mutex::new(Queue {
                buf: VecDeque::with_capacity(overflow.capacity().min(1024)),
                lagged: 0,
                closed: false,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
        });
        {
            let mut list = self
                .inner
                .subs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut next = Vec::with_capacity(list.len() + 1);
            next.extend(list.iter().cloned());
            next.push(sub.clone());
            *list = Arc::new(next);
        }
        Ok(Subscriber {
            sub,
            topic: Arc::downgrade(&self.inner),
        })
    }

    /// Delivers `msg` to every current subscriber, in publication order. Waits only for
    /// subscribers with [`Overflow::Backpressure`] whose buffers are full.
    pub async fn publish(&self, msg: T) -> Delivery {
        let _order = self.inner.publish.lock().await;
        let subs = self
            .inner
            .subs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut d = Delivery::default();
        for sub in subs.iter() {
            loop {
                // Register interest before checking, so a recv in between is not missed.
                let room = sub.writable.notified();
                {
                    let mut q = sub.lock();
                    if q.closed {
                        break;
                    }
                    let full = q.buf.len() >= sub.overflow.capacity();
                    match (full, sub.overflow) {
                        (true, Overflow::Backpressure(_)) => {}
                        (true, Overflow::DropOldest(_)) => {
                            q.buf.pop_front();
                            q.lagged += 1;
                            q.buf.push_back(msg.clone());
                            d.delivered += 1;
                            d.dropped_oldest += 1;
                            drop(q);
                            sub.readable.notify_one();
                            break;
                        }
                        (false, _) => {
                            q.buf.push_back(msg.clone());
                            d.delivered += 1;
                            drop(q);
                            sub.readable.notify_one();
                            break;
                        }
                    }
                }
                room.await;
            }
        }
        d
    }
}

/// Receives a topic's messages; dropping it unsubscribes.
pub struct Subscriber<T> {
    sub: Arc<Sub<T>>,
    topic: Weak<TopicInner<T>>,
}

impl<T> fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("overflow", &self.sub.overflow)
            .finish_non_exhaustive()
    }
}

impl<T> Subscriber<T> {
    /// The next message; `Err(Lagged(n))` first if `n` messages were dropped since the last
    /// receive; `None` once the topic is gone and the buffer is empty.
    pub async fn recv(&mut self) -> Option<Result<T, Lagged>> {
        loop {
            let readable = self.sub.readable.notified();
            {
                let mut q = self.sub.lock();
                if q.lagged > 0 {
                    let n = std::mem::take(&mut q.lagged);
                    return Some(Err(Lagged(n)));
                }
                if let Some(m) = q.buf.pop_front() {
                    drop(q);
                    self.sub.writable.notify_one();
                    return Some(Ok(m));
                }
                if q.closed || self.topic.strong_count() == 0 {
                    return None;
                }
            }
            readable.await;
        }
    }

    /// A message if one is buffered now.
    pub fn try_recv(&mut self) -> Option<Result<T, Lagged>> {
        let mut q = self.sub.lock();
        if q.lagged > 0 {
            let n = std::mem::take(&mut q.lagged);
            return Some(Err(Lagged(n)));
        }
        let m = q.buf.pop_front()?;
        drop(q);
        self.sub.writable.notify_one();
        Some(Ok(m))
    }

    /// Messages waiting in the buffer.
    pub fn len(&self) -> usize {
        self.sub.lock().buf.len()
    }

    /// True if no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        self.sub.lock().closed = true;
        // A publisher blocked on our full buffer must not wait forever.
        self.sub.writable.notify_waiters();
        if let Some(topic) = self.topic.upgrade() {
            let id = self.sub.id;
            let mut list = topic.subs.lock().unwrap_or_else(PoisonError::into_inner);
            let next: Vec<_> = list.iter().filter(|s| s.id != id).cloned().collect();
            *list = Arc::new(next);
        }
    }
}

/// A topic of some message type, as the registry keeps it.
type AnyTopic = (TypeId, Arc<dyn Any + Send + Sync>);

/// A registry of named, typed topics. Cheap to clone; clones share topics.
#[derive(Clone, Default)]
pub struct Bus {
    topics: Arc<Mutex<HashMap<String, AnyTopic>>>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Bus").field("topics", &n).finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// The topic `name` carrying `T`, created on first use. Fails if `name` carries another type.
    pub fn topic<T: Clone + Send + Sync + 'static>(
        &self,
        name: &str,
    ) -> Result<Topic<T>, BusError> {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let (ty, any) = topics.entry(name.to_string()).or_insert_with(|| {
            let inner: Arc<TopicInner<T>> = Arc::new(TopicInner {
                name: Arc::from(name),
                subs: Mutex::new(Arc::new(Vec::new())),
                publish: tokio::sync::Mutex::new(()),
                next_id: AtomicU64::new(0),
            });
            (TypeId::of::<T>(), inner as Arc<dyn Any + Send + Sync>)
        });
        if *ty != TypeId::of::<T>() {
            return Err(BusError::TypeMismatch {
                topic: name.to_string(),
            });
        }
        let inner =
            any.clone()
                .downcast::<TopicInner<T>>()
                .map_err(|_| BusError::TypeMismatch {
                    topic: name.to_string(),
                })?;
        Ok(Topic { inner })
    }

    /// One stream of `(topic name, message)` from several topics of the same type, each with
    /// its own buffer and policy. Ends when every topic's subscriber has ended.
    pub fn subscribe_many<T: Clone + Send + Sync + 'static>(
        &self,
        names: &[&str],
        overflow: Overflow,
    ) -> Result<impl futures::Stream<Item = (Arc<str>, Result<T, Lagged>)> + Send, BusError> {
        let mut streams = Vec::new();
        for name in names {
            let topic = self.topic::<T>(name)?;
            let sub = topic.subscribe(overflow)?;
            let name: Arc<str> = Arc::from(*name);
            streams.push(Box::pin(futures::stream::unfold(
                (sub, name),
                |(mut sub, name)| async move {
                    let m = sub.recv().await?;
                    Some(((name.clone(), m), (sub, name)))
                },
            )));
        }
        Ok(futures::stream::select_all(streams))
    }
}

//! Actors on tokio: typed messages, bounded mailboxes, `tell` and `ask`, a registry, supervision.
//!
//! An [`Actor`] owns its state and handles one message at a time, so the state needs no lock.
//! [`spawn`] starts one under a supervisor and returns an [`ActorRef`]: cheap to clone,
//! [`tell`](ActorRef::tell) (fire-and-forget, waits only while the bounded mailbox is full) and
//! [`ask`](ActorRef::ask) (request/response with a timeout).
//!
//! **Supervision** (one-for-one): the supervisor owns the mailbox, so an `ActorRef` stays valid
//! across restarts. When a handler panics, or stays *silent* — does not finish a message within
//! the heartbeat deadline — the supervisor drops that instance, waits a backoff, and builds a
//! fresh one from the factory (which may reload persisted state). Only the message being handled
//! is lost, and it is reported ([`SupervisorEvent`]). Silence is detected for handlers that are
//! stuck *awaiting* (a lost reply, a deadlocked lock); a handler that blocks its thread cannot be
//! interrupted by anything in async Rust — run blocking work with `spawn_blocking`. More than `max_restarts` restarts within
//! `window` escalate: the actor stops, its mailbox closes, and callers get
//! [`ActorError::Stopped`].
//!
//! **Links** (one-for-all): actors spawned with [`Supervision::link`] to the same [`Group`]
//! share a fate. With [`Group::one_for_all`], one member's failure rebuilds every member from
//! its factory (their state belongs together: a cache and the index over it, a session and its
//! writer), and one member's escalation stops them all; with [`Group::stop_all`], the first
//! failure stops every member at once, as an Erlang link does. A member that ends normally
//! (its handles dropped) leaves the others running. A linked restart drops the message a
//! member was handling at that moment, as a restart of its own would.
//!
//! **Monitors**: [`ActorRef::monitor`] (or [`ActorRef::stopped`]) resolves once the actor has
//! stopped, with why
//! ([`Stop::Finished`], or [`Stop::Escalated`] with its last failure): how one part of a
//! program learns that another gave up, without polling.
//!
//! **Registry**: [`Registry::register`] a handle under a name and [`Registry::lookup`] it anywhere;
//! [`Registry::global`] is one process-wide registry.
//!
//! ```
//! use corral::actor::{self, Actor, Reply};
//! use std::time::Duration;
//!
//! struct Counter(u64);
//! enum Msg { Add(u64), Get(Reply<u64>) }
//!
//! impl Actor for Counter {
//!     type Msg = Msg;
//!     async fn handle(&mut self, msg: Msg) {
//!         match msg {
//!             Msg::Add(n) => self.0 += n,
//!             Msg::Get(reply) => reply.send(self.0),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let counter = actor::spawn(|| Counter(0), actor::Supervision::default())?;
//! counter.tell(Msg::Add(2)).await?;
//! counter.tell(Msg::Add(3)).await?;
//! assert_eq!(counter.ask(Msg::Get, Duration::from_secs(1)).await?, 5);
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{panic_message, ConfigError};
use crate::trace::{event, in_span};

/// An actor: state plus a handler for its messages.
pub trait Actor: Send + 'static {
    /// The messages it accepts.
    type Msg: Send + 'static;

    /// Handles one message. Messages are handled one at a time, in mailbox order.
    fn handle(&mut self, msg: Self::Msg) -> impl Future<Output = ()> + Send;
}

/// The reply half of an [`ask`](ActorRef::ask): put it in the message, answer with
/// [`send`](Reply::send).
#[derive(Debug)]
pub struct Reply<T>(oneshot::Sender<T>);

impl<T> Reply<T> {
    /// Answers the asker (who may have given up: then the answer is dropped).
    pub fn send(self, value: T) {
        let _ = self.0.send(value);
    }
}

/// Why a message could not be delivered or answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorError {
    /// The actor has stopped (escalated or every handle dropped); the message was not taken.
    Stopped,
    /// No answer within the timeout.
    Timeout,
    /// The actor took the message but dropped the reply (it failed while handling it).
    NoReply,
    /// The mailbox is full (only from [`ActorRef::try_tell`]).
    Full,
}

impl fmt::Display for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActorError::Stopped => "the actor has stopped",
            ActorError::Timeout => "the actor did not answer in time",
            ActorError::NoReply => "the actor failed before answering",
            ActorError::Full => "the actor's mailbox is full",
        })
    }
}

impl std::error::Error for ActorError {}

/// A handle to an actor. Cheap to clone; the actor stops when every handle is dropped and its
/// mailbox is empty.
pub struct ActorRef<A: Actor> {
    tx: mpsc::Sender<A::Msg>,
    /// Why the actor stopped, once it has (for [`ActorRef::stopped`]).
    end: tokio::sync::watch::Receiver<Option<Stop>>,
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            end: self.end.clone(),
        }
    }
}

/// Why an actor stopped, as [`ActorRef::stopped`] tells a monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Every handle was dropped and its mailbox was drained: it ended normally.
    Finished,
    /// Its supervisor gave up (too many restarts in the window, or the factory panicked); the
    /// last failure's words.
    Escalated(String),
}

impl<A: Actor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRef")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl<A: Actor> ActorRef<A> {
    /// Sends a message, waiting while the mailbox is full.
    pub async fn tell(&self, msg: A::Msg) -> Result<(), ActorError> {
        self.tx.send(msg).await.map_err(|_| ActorError::Stopped)
    }

    /// Sends a message if the mailbox has room now.
    pub fn try_tell(&self, msg: A::Msg) -> Result<(), ActorError> {
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ActorError::Full,
            mpsc::error::TrySendError::Closed(_) => ActorError::Stopped,
        })
    }

    /// Sends the message built by `make` around a [`Reply`], and waits up to `timeout` (which
    /// includes waiting for mailbox room) for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> A::Msg,
        timeout: Duration,
    ) -> Result<T, ActorError> {
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            self.tell(make(Reply(tx))).await?;
            rx.await.map_err(|_| ActorError::NoReply)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ActorError::Timeout))
    }

    /// True once the actor has stopped.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits until the actor has stopped, and says why. One that asks after the stop learns
    /// it at once. This handle keeps the actor alive meanwhile (it can still be told): to
    /// watch an actor without keeping it, use [`ActorRef::monitor`].
    ///
    /// # Cancel safety
    ///
    /// Safe to drop at any point: it only watches.
    pub async fn stopped(&self) -> Stop {
        self.monitor().await
    }

    /// A monitor of the actor: a future, holding no handle (the actor still ends when its
    /// handles are dropped), that resolves once the actor has stopped, with why. Any number
    /// may wait. Cancel safe: it only watches.
    pub fn monitor(&self) -> impl Future<Output = Stop> + Send + 'static {
        let mut end = self.end.clone();
        async move {
            let stop = match end.wait_for(Option::is_some).await {
                Ok(stop) => stop.clone().unwrap_or(Stop::Finished),
                // The supervisor is gone without a word (its runtime shut down).
                Err(_) => Stop::Escalated("the actor's runtime shut down".into()),
            };
            stop
        }
    }
}

/// What the supervisor saw; delivered to [`Supervision::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A handler panicked; the message it was handling is lost.
    Panicked(String),
    /// A handler did not finish within the heartbeat deadline; the message is lost.
    Silent(Duration),
    /// A fresh instance was built (the `n`th restart).
    Restarted(u32),
    /// Too many restarts within the window (or a linked actor stopped for good, or, in a
    /// [`Group::stop_all`] group, any failure): the actor stopped for good.
    Escalated,
    /// Another member of its [`Group`] failed: this one was dropped (with the message it was
    /// handling, if any) and rebuilt from its factory. Does not count against its restarts.
    LinkedRestart,
}

/// What a [`Group`] does when one member fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    RestartAll,
    StopAll,
}

#[derive(Debug)]
struct GroupInner {
    policy: Policy,
    /// Bumped by a member that failed: every other member rebuilds.
    epoch: tokio::sync::watch::Sender<u64>,
    /// Set by the first member that stopped for good: every member stops.
    stop: tokio::sync::watch::Sender<Option<String>>,
}

/// Actors linked together (one-for-all): see [`Supervision::link`]. Cheap to clone; every
/// clone is the same group.
#[derive(Debug, Clone)]
pub struct Group(Arc<GroupInner>);

impl Group {
    fn new(policy: Policy) -> Self {
        Self(Arc::new(GroupInner {
            policy,
            epoch: tokio::sync::watch::Sender::new(0),
            stop: tokio::sync::watch::Sender::new(None),
        }))
    }

    /// A group where one member's failure (a panic, or silence past its heartbeat) restarts
    /// every member, and one member's escalation stops every member.
    pub fn one_for_all() -> Self {
        Self::new(Policy::RestartAll)
    }

    /// A group where the first failure of any member stops every member, without restarts.
    pub fn stop_all() -> Self {
        Self::new(Policy::StopAll)
    }

    /// Why the group stopped, once a member has stopped it.
    pub fn stopped(&self) -> Option<String> {
        self.0.stop.borrow().clone()
    }
}

/// What a member hears from its group.
enum Heard {
    Restart,
    Stop(String),
}

/// One actor's place in its group (or none).
struct Membership {
    group: Option<(
        Group,
        tokio::sync::watch::Receiver<u64>,
        tokio::sync::watch::Receiver<Option<String>>,
    )>,
}

impl Membership {
    fn new(group: Option<&Group>) -> Self {
        Self {
            group: group.map(|g| (g.clone(), g.0.epoch.subscribe(), g.0.stop.subscribe())),
        }
    }

    fn policy(&self) -> Option<Policy> {
        self.group.as_ref().map(|(g, ..)| g.0.policy)
    }

    /// Waits for word from the group; never resolves for an actor without one.
    /// Cancel safe: both arms are watch receivers.
    async fn heard(&mut self) -> Heard {
        let Some((_, epoch, stop)) = &mut self.group else {
            return std::future::pending().await;
        };
        // The watch's guard is cloned out at once: it must not live across an await.
        let stopped = async { stop.wait_for(Option::is_some).await.map(|w| w.clone()) };
        tokio::select! {
            biased;
            Ok(why) = stopped => Heard::Stop(why.unwrap_or_default()),
            Ok(()) = epoch.changed() => Heard::Restart,
            else => std::future::pending().await,
        }
    }

    /// This member failed and restarts: the others rebuild with it.
    fn failed(&mut self) {
        if let Some((g, epoch, _)) = &mut self.group {
            g.0.epoch.send_modify(|e| *e = e.wrapping_add(1));
            epoch.borrow_and_update();
        }
    }

    /// This member has just been rebuilt: word of restarts sent meanwhile is answered.
    fn rebuilt(&mut self) {
        if let Some((_, epoch, _)) = &mut self.group {
            epoch.borrow_and_update();
        }
    }

    /// This member stopped for good: the others stop with it.
    fn escalated(&self, why: &str) {
        if let Some((g, ..)) = &self.group {
            g.0.stop.send_if_modified(|s| {
                let first = s.is_none();
                if first {
                    *s = Some(why.to_owned());
                }
                first
            });
        }
    }
}

type EventFn = Arc<dyn Fn(SupervisorEvent) + Send + Sync>;

/// How an actor is supervised. `Supervision::default()`: mailbox 64, no heartbeat, at most 5
/// restarts in 60 s, backoff from 10 ms doubling to 1 s.
#[derive(Clone)]
pub struct Supervision {
    mailbox: usize,
    heartbeat: Option<Duration>,
    max_restarts: u32,
    window: Duration,
    backoff: Duration,
    max_backoff: Duration,
    on_event: Option<EventFn>,
    group: Option<Group>,
}

impl fmt::Debug for Supervision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervision")
            .field("mailbox", &self.mailbox)
            .field("heartbeat", &self.heartbeat)
            .field("max_restarts", &self.max_restarts)
            .field("window", &self.window)
            .field("linked", &self.group.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            mailbox: 64,
            heartbeat: None,
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            on_event: None,
            group: None,
        }
    }
}

impl Supervision {
    /// Mailbox capacity (senders wait when it is full).
    pub fn mailbox(mut self, n: usize) -> Self {
        self.mailbox = n;
        self
    }
    /// A handler that runs longer than this is deemed silent (stuck) and the actor restarted.
    pub fn heartbeat(mut self, deadline: Duration) -> Self {
        self.heartbeat = Some(deadline);
        self
    }
    /// Escalate (stop) after more than `n` restarts within `window`.
    pub fn max_restarts(mut self, n: u32, window: Duration) -> Self {
        self.max_restarts = n;
        self.window = window;
        self
    }
    /// Wait before a restart: `base`, doubling per restart in the window, capped at `max`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = base;
        self.max_backoff = max;
        self
    }
    /// Called on every supervision event (keep it quick).
    pub fn on_event(mut self, f: impl Fn(SupervisorEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }
    /// Links the actor to `group`: it restarts or stops with the group's other members (see
    /// [`Group`]). Its own restarts still follow this supervision's limits; when it escalates,
    /// the group stops.
    pub fn link(mut self, group: &Group) -> Self {
        self.group = Some(group.clone());
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.mailbox == 0 {
            return Err(ConfigError::new(
                "actor",
                "mailbox capacity must be at least 1",
            ));
        }
        if self.heartbeat.is_some_and(|h| h.is_zero()) {
            return Err(ConfigError::new(
                "actor",
                "heartbeat deadline must be longer than zero",
            ));
        }
        if self.window.is_zero() {
            return Err(ConfigError::new(
                "actor",
                "restart window must be longer than zero",
            ));
        }
        if self.max_backoff < self.backoff {
            return Err(ConfigError::new(
                "actor",
                "max backoff is shorter than the base backoff",
            ));
        }
        Ok(())
    }

    fn emit(&self, e: SupervisorEvent) {
        event!(info, event = ?e, "actor supervisor");
        if let Some(f) = &self.on_event {
            f(e);
        }
    }
}

/// Starts an actor built by `factory` under `supervision` (call inside a tokio runtime). The
/// factory runs again for every restart.
pub fn spawn<A, F>(factory: F, supervision: Supervision) -> Result<ActorRef<A>, ConfigError>
where
    A: Actor,
    F: FnMut() -> A + Send + 'static,
{
    supervision.validate()?;
    let (tx, rx) = mpsc::channel(supervision.mailbox);
    let (told, end) = tokio::sync::watch::channel(None);
    tokio::spawn(in_span!(
        async move {
            let stop = supervise(factory, rx, supervision).await;
            told.send_replace(Some(stop));
        },
        "actor",
        actor = std::any::type_name::<A>()
    ));
    Ok(ActorRef { tx, end })
}

enum Outcome {
    Done,
    Panicked(String),
    Silent(Duration),
    Heard(Heard),
}

/// Builds an instance; a panicking factory is the supervisor's end.
fn build<A, F: FnMut() -> A>(factory: &mut F, sup: &Supervision) -> Result<A, String> {
    std::panic::catch_unwind(AssertUnwindSafe(factory)).map_err(|p| {
        let why = panic_message(p.as_ref());
        sup.emit(SupervisorEvent::Panicked(why.clone()));
        why
    })
}

/// Runs the actor under `sup` until it stops; returns why.
async fn supervise<A, F>(mut factory: F, mut rx: mpsc::Receiver<A::Msg>, sup: Supervision) -> Stop
where
    A: Actor,
    F: FnMut() -> A + Send + 'static,
{
    let mut link = Membership::new(sup.group.as_ref());
    let stop = run_member(&mut factory, &mut rx, &sup, &mut link).await;
    if let Stop::Escalated(why) = &stop {
        sup.emit(SupervisorEvent::Escalated);
        link.escalated(why);
    }
    stop // dropping `rx` closes the mailbox: callers see Stopped
}

async fn run_member<A, F>(
    factory: &mut F,
    rx: &mut mpsc::Receiver<A::Msg>,
    sup: &Supervision,
    link: &mut Membership,
) -> Stop
where
    A: Actor,
    F: FnMut() -> A + Send + 'static,
{
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut total = 0u32;
    let mut actor = match build(factory, sup) {
        Ok(a) => a,
        Err(why) => return Stop::Escalated(why),
    };
    loop {
        let outcome = tokio::select! {
            biased;
            heard = link.heard() => Outcome::Heard(heard),
            msg = rx.recv() => {
                let Some(msg) = msg else { return Stop::Finished };
                let handled = AssertUnwindSafe(actor.handle(msg)).catch_unwind();
                let handled = async {
                    match sup.heartbeat {
                        None => handled.await.map_or_else(
                            |p| Outcome::Panicked(panic_message(p.as_ref())),
                            |()| Outcome::Done,
                        ),
                        Some(deadline) => match tokio::time::timeout(deadline, handled).await {
                            Ok(Ok(())) => Outcome::Done,
                            Ok(Err(p)) => Outcome::Panicked(panic_message(p.as_ref())),
                            Err(_) => Outcome::Silent(deadline),
                        },
                    }
                };
                tokio::select! {
                    biased;
                    heard = link.heard() => Outcome::Heard(heard),
                    outcome = handled => outcome,
                }
            }
        };
        let failure = match outcome {
            Outcome::Done => continue,
            Outcome::Heard(Heard::Stop(why)) => {
                return Stop::Escalated(format!("a linked actor stopped: {why}"))
            }
            Outcome::Heard(Heard::Restart) => {
                sup.emit(SupervisorEvent::LinkedRestart);
                drop(actor);
                actor = match build(factory, sup) {
                    Ok(a) => a,
                    Err(why) => return Stop::Escalated(why),
                };
                link.rebuilt();
                continue;
            }
            Outcome::Panicked(m) => SupervisorEvent::Panicked(m),
            Outcome::Silent(d) => SupervisorEvent::Silent(d),
        };
        let why = match &failure {
            SupervisorEvent::Panicked(m) => m.clone(),
            other => format!("{other:?}"),
        };
        sup.emit(failure);
        if link.policy() == Some(Policy::StopAll) {
            return Stop::Escalated(why);
        }
        let now = Instant::now();
        while restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > sup.window)
        {
            restarts.pop_front();
        }
        if restarts.len() as u32 >= sup.max_restarts {
            return Stop::Escalated(why);
        }
        link.failed();
        let shift = (restarts.len() as u32).min(20);
        let wait = sup.backoff.saturating_mul(1 << shift).min(sup.max_backoff);
        restarts.push_back(now);
        // The failed instance goes first: its resources (a journal file...) are released
        // before the factory builds the replacement.
        drop(actor);
        tokio::time::sleep(wait).await;
        actor = match build(factory, sup) {
            Ok(a) => a,
            Err(why) => return Stop::Escalated(why),
        };
        link.rebuilt();
        total += 1;
        sup.emit(SupervisorEvent::Restarted(total));
    }
}

/// Named actor handles, found without passing them around. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    map: Arc<Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Registry").field("names", &n).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// Registers `actor` under `name`, replacing (and returning true for) a previous entry.
    pub fn register<A: Actor>(&self, name: impl Into<String>, actor: ActorRef<A>) -> bool
    where
        A::Msg: Send,
    {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.into(), Box::new(actor))
            .is_some()
    }

    /// The handle registered under `name`, if it is an actor of type `A` and still running.
    pub fn lookup<A: Actor>(&self, name: &str) -> Option<ActorRef<A>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let r = map.get(name)?.downcast_ref::<ActorRef<A>>()?;
        (!r.is_stopped()).then(|| r.clone())
    }

    /// Removes `name`.
    pub fn unregister(&self, name: &str) -> bool {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .is_some()
    }
}

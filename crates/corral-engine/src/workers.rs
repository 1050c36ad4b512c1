//! Where jobs run: a few threads, each with a single-threaded tokio runtime and an [`Engine`] of
//! its own, all taking parsed jobs from one shared queue.
//!
//! Why not one multi-threaded runtime: a request's work (gates, the connection, the body, the
//! result line) then moves between threads at every wake-up, and on loopback that cost ~30%
//! more CPU per request (`bench/http.sh`, `corral run` user+sys time for 100 000 GETs: 2.1-2.4 s
//! on the multi-threaded runtime, 1.7 s on one current-thread runtime). One current-thread
//! runtime per core keeps each request, and each connection, on one thread for its whole life,
//! the way `oha` runs. The jobs held at once (`--queue-size`) are split between the threads (they add
//! up exactly); every limit (global and per-host concurrency, rates, breakers, retry budget) is
//! shared, so it holds across threads.
//!
//! Inside a thread, each job place (the thread's share of `--queue-size`) is a task of its own that
//! runs one job after another, rather than one task driving every job of the thread through a
//! `FuturesUnordered`. Why: a single task spends tokio's cooperative budget on many requests at
//! once, and every time it runs out it wakes itself through the runtime's driver (an eventfd
//! write, then one more `epoll_wait`). With a task per place, the runtime runs the woken tasks
//! in turn and looks for I/O every few dozen of them, as it was designed to.
//!
//! Why not [`corral::exec`] (which ran the jobs here before, `Strategy::Buffered`): a place
//! takes a job only once it holds an active slot, and keeps that slot for its next job unless
//! the job gave it up to wait for its host. `Exec` hands each item to the job closure on its
//! own, so the slot would go back to the semaphore and be taken again for every job, waking a
//! waiting task each time; measured, that cost what the task-per-place change gained
//! (BENCHMARKS.md, `corral run` throughput). The places keep `Exec`'s promises that matter
//! here: a bound on jobs held (`--queue-size`), a panic costs only its own job (reported, not
//! written, so `--resume` runs it), and intake stops on Ctrl-C while jobs under way finish.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Gates};
use crate::error::StartError;
use crate::job::Parsed;
use crate::result::Outcome;

/// Finished jobs a thread may hold before its tasks wait for the reader to take them.
const OUTBOX: usize = 256;

/// A job that produced no outcome because it panicked (the message); its result is not
/// written, so `--resume` runs it again.
#[derive(Debug)]
pub struct Lost(pub String);

/// What a worker thread hands over: a job's outcome, `Ok(None)` for a job that never started
/// (the run stopped taking jobs first), or `Err` for one lost to a panic.
pub type Finished = Result<Option<Outcome>, Lost>;

/// The running worker threads; their outcomes arrive through [`Workers::next`].
pub struct Workers {
    outcomes: mpsc::Receiver<Vec<Finished>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Each thread's places, for tests of how they grow.
    #[cfg_attr(not(test), allow(dead_code))]
    places: Vec<Arc<Places>>,
}

/// How the threads are told to stop.
#[derive(Clone)]
pub struct Stop {
    /// Take no more jobs; finish the ones in flight.
    pub intake: CancellationToken,
    /// Abandon the jobs under way (their results are not written; `--resume` runs them).
    pub force: CancellationToken,
}

impl Workers {
    /// Starts `threads` worker threads (at most `concurrency`) that run the jobs of `jobs`:
    /// `concurrency` of them under way at once in all, and up to `held` taken at once, the rest
    /// waiting for a host (see [`Engine::process`]). Must be called inside a tokio runtime, which
    /// reads `jobs`. `taken` counts the jobs started.
    pub fn start<S>(
        gates: Arc<Gates>,
        jobs: S,
        threads: usize,
        concurrency: usize,
        held: usize,
        stop: Stop,
        taken: Arc<AtomicU64>,
    ) -> Result<Self, StartError>
    where
        S: Stream<Item = Parsed> + Send + 'static,
    {
        let threads = threads.clamp(1, concurrency.max(1));
        let held = held.max(concurrency);
        // Jobs travel in small chunks and outcomes in batches: a hand-off per job would wake
        // the reader's thread once per job. A chunk is small against a thread's share of
        // `concurrency`, so a thread never sits on jobs another idle thread could run for long.
        let chunk = (concurrency / threads / 8).clamp(1, 32);
        let (job_tx, job_rx) = async_channel::bounded::<Vec<Parsed>>(threads * 2);
        let (out_tx, outcomes) = mpsc::channel(threads * 4);
        let mut handles = Vec::with_capacity(threads);
        let mut all_places = Vec::with_capacity(threads);
        for i in 0..threads {
            let places = held / threads + usize::from(i < held % threads);
            let share = concurrency / threads + usize::from(i < concurrency % threads);
            let eng = Engine::new(gates.clone(), share, stop.intake.clone())?;
            let active = eng.active_slots();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| StartError::Worker {
                    what: "runtime",
                    source,
                })?;
            let thread = Thread {
                engine: Arc::new(eng),
                active,
                inbox: Arc::new(Inbox::default()),
                outbox: Arc::new(Outbox::default()),
                taken: taken.clone(),
                places: Arc::new(Places::new(places.max(1))),
            };
            all_places.push(thread.places.clone());
            let (rx, out, intake, force) = (
                job_rx.clone(),
                out_tx.clone(),
                stop.intake.clone(),
                stop.force.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("corral-worker-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        tokio::select! {
                            biased;
                            _ = force.cancelled() => {}
                            _ = thread.run(rx, out, intake) => {}
                        }
                    });
                })
                .map_err(|source| StartError::Worker {
                    what: "thread",
                    source,
                })?;
            handles.push(handle);
        }
        drop((job_rx, out_tx));
        // The reader: parses on this runtime and feeds the queue until the input ends or intake
        // stops.
        let intake = stop.intake.clone();
        tokio::spawn(async move {
            let mut jobs = std::pin::pin!(jobs.ready_chunks(chunk));
            loop {
                let next = tokio::select! {
                    biased;
                    _ = intake.cancelled() => break,
                    j = jobs.next() => j,
                };
                let Some(job) = next else { break };
                if job_tx.send(job).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            outcomes,
            threads: handles,
            places: all_places,
        })
    }

    /// Job places spawned so far, all threads together: they grow with the jobs held, up to
    /// `held`.
    #[cfg(test)]
    pub fn places(&self) -> usize {
        self.places
            .iter()
            .map(|p| p.spawned.load(Ordering::Relaxed))
            .sum()
    }

    /// The next finished jobs; `None` once every thread has stopped.
    pub async fn next(&mut self) -> Option<Vec<Finished>> {
        self.outcomes.recv().await
    }

    /// Waits for the threads to end (after the outcomes ran out, or after a forced stop).
    pub async fn join(self) {
        drop(self.outcomes);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Jobs a thread has taken from the shared queue and not yet started.
#[derive(Default)]
struct Inbox {
    jobs: Mutex<VecDeque<Parsed>>,
    /// No more jobs will come.
    ended: AtomicBool,
    /// Tasks (each holding an active slot) waiting for a job.
    waiting: AtomicUsize,
    /// A job arrived (or the input ended).
    arrived: Notify,
    /// A task holding an active slot found no job: fetch a chunk.
    wanted: Notify,
}

impl Inbox {
    fn pop(&self) -> Option<Parsed> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Waits until a job is at hand (`true`; another task may take it first) or the input has
    /// ended with every job taken (`false`), asking the fetcher for a chunk meanwhile.
    async fn wait(&self) -> bool {
        loop {
            let arrived = self.arrived.notified();
            let mut arrived = std::pin::pin!(arrived);
            // Registered before looking, so an arrival between the look and the wait is seen.
            arrived.as_mut().enable();
            if !self
                .jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                return true;
            }
            if self.ended.load(Ordering::Acquire) {
                return false;
            }
            self.wanted.notify_one();
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let _waited = Waited(&self.waiting);
            arrived.await;
        }
    }

    /// Tasks waiting for a job that the jobs at hand do not cover.
    fn short(&self) -> usize {
        let have = self.jobs.lock().map(|j| j.len()).unwrap_or(0);
        self.waiting.load(Ordering::Relaxed).saturating_sub(have)
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.arrived.notify_waiters();
    }
}

/// Counts a task out of [`Inbox::waiting`] when it stops waiting (or is dropped waiting).
struct Waited<'a>(&'a AtomicUsize);

impl Drop for Waited<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Finished jobs waiting to be handed to the reader's thread in one batch.
struct Outbox {
    done: Mutex<Vec<Finished>>,
    /// Room left; a task waits for room before it adds an outcome, so a slow results writer
    /// holds the jobs back instead of piling up outcomes.
    room: Semaphore,
    /// An outcome was added (or the places have all ended).
    added: Notify,
    /// Every place has ended: nothing more will be added.
    closed: AtomicBool,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            done: Mutex::new(Vec::new()),
            room: Semaphore::new(OUTBOX),
            added: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }
}

impl Outbox {
    async fn push(&self, f: Finished) {
        if let Ok(p) = self.room.acquire().await {
            p.forget();
        }
        self.done.lock().unwrap_or_else(|p| p.into_inner()).push(f);
        self.added.notify_one();
    }

    fn take(&self) -> Vec<Finished> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A thread's job places: spawned as they are needed, not all at start, so that a large
/// `--concurrency` or `--queue-size` costs nothing until jobs fill it (`-c 100000` on 10 jobs used to
/// allocate 400 000 tasks, 2.6 GB, before the first request).
struct Places {
    /// Places that may exist at once (the thread's share of `--queue-size`).
    max: usize,
    /// Places spawned so far.
    spawned: AtomicUsize,
    /// Places ready for a job: waiting for an active slot, or for a job to arrive.
    idle: AtomicUsize,
    tasks: tokio_util::task::TaskTracker,
}

impl Places {
    fn new(max: usize) -> Self {
        Self {
            max,
            spawned: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Claims the right to spawn one more place, if the thread may have more.
    fn claim(&self) -> bool {
        self.spawned
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }
}

/// One worker thread's state, shared by its tasks.
#[derive(Clone)]
struct Thread {
    engine: Arc<Engine>,
    active: Arc<Semaphore>,
    inbox: Arc<Inbox>,
    outbox: Arc<Outbox>,
    taken: Arc<AtomicU64>,
    places: Arc<Places>,
}

impl Thread {
    /// Runs the thread's jobs to the end of the input (or until intake stops) with up to its
    /// share of places, and hands their outcomes to `out`.
    async fn run(
        self,
        rx: async_channel::Receiver<Vec<Parsed>>,
        out: mpsc::Sender<Vec<Finished>>,
        intake: CancellationToken,
    ) {
        let fetcher = tokio::spawn(self.clone().fetch(rx, intake));
        let sender = tokio::spawn(self.clone().send(out));
        self.spawn_place();
        // Only a running place spawns another (see `place`), so once none is left none can
        // come: closed now, the tracker's wait ends when the last place does.
        self.places.tasks.close();
        self.places.tasks.wait().await;
        fetcher.abort();
        // Every place has ended, so nothing is added any more: one last batch, then the end.
        self.outbox.closed.store(true, Ordering::Release);
        self.outbox.added.notify_one();
        let _ = sender.await;
    }

    /// Takes a chunk of jobs from the shared queue whenever a task with an active slot finds
    /// none, until the queue ends or intake stops.
    async fn fetch(self, rx: async_channel::Receiver<Vec<Parsed>>, intake: CancellationToken) {
        loop {
            self.inbox.wanted.notified().await;
            while self.inbox.short() > 0 {
                let chunk = tokio::select! {
                    biased;
                    _ = intake.cancelled() => None,
                    c = rx.recv() => c.ok(),
                };
                let Some(chunk) = chunk else {
                    self.inbox.end();
                    return;
                };
                let n = chunk.len();
                self.inbox
                    .jobs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(chunk);
                for _ in 0..n {
                    self.inbox.arrived.notify_one();
                }
            }
        }
    }

    fn spawn_place(&self) {
        if self.places.claim() {
            self.places.tasks.spawn(self.clone().place());
        }
    }

    /// One job place: takes an active slot, then a job, runs it, and again. When it takes a
    /// job and no other place is ready for the next one, it spawns one (up to the thread's
    /// share), so that places grow with the jobs under way and waiting, never ahead of them.
    async fn place(self) {
        let mut slot = None;
        loop {
            self.places.idle.fetch_add(1, Ordering::Relaxed);
            let ready = Waited(&self.places.idle);
            // A job is taken only with an active slot: while every job is under way nothing
            // more is taken. A job that waits for its host gives its slot back (and the place
            // takes one again for its next job); otherwise the place keeps it.
            let parsed = loop {
                if slot.is_none() {
                    match self.active.clone().acquire_owned().await {
                        Ok(s) => slot = Some(s),
                        Err(_) => return, // never closed
                    }
                }
                if let Some(job) = self.inbox.pop() {
                    break job;
                }
                // Nothing at hand (the input is slow: a pipe, a queue): wait for a job without
                // the slot, which a job waiting to go on after its host's wait needs
                // meanwhile. Kept while waiting, every slot could end up idle in places like
                // this one while those jobs wait for one forever.
                drop(slot.take());
                if !self.inbox.wait().await {
                    return;
                }
            };
            drop(ready);
            if self.places.idle.load(Ordering::Relaxed) == 0 {
                self.spawn_place();
            }
            self.taken.fetch_add(1, Ordering::Relaxed);
            let run = self.engine.process(parsed, &mut slot);
            let finished = AssertUnwindSafe(run)
                .catch_unwind()
                .await
                .map_err(|p| Lost(panic_message(&p)));
            self.outbox.push(finished).await;
        }
    }

    /// Hands finished jobs to the reader's thread, in batches of whatever finished meanwhile.
    async fn send(self, out: mpsc::Sender<Vec<Finished>>) {
        loop {
            self.outbox.added.notified().await;
            // Read before taking: once closed, the batch taken next is the last.
            let closed = self.outbox.closed.load(Ordering::Acquire);
            let batch = self.outbox.take();
            let n = batch.len();
            if n > 0 {
                if out.send(batch).await.is_err() {
                    return;
                }
                self.outbox.room.add_permits(n);
            }
            if closed {
                return;
            }
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a job panicked".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Invalid;
    use std::time::Duration;

    /// A line that needs no request: its outcome is `invalid_input`, with `id` echoed.
    fn invalid(line: u64, id: String) -> Parsed {
        Parsed::Invalid(Box::new(Invalid {
            line,
            id,
            url: None,
            method: None,
            meta: None,
            message: "test".into(),
        }))
    }

    fn start(concurrency: usize, held: usize, jobs: Vec<Parsed>) -> (Workers, Arc<AtomicU64>) {
        let gates = Gates::new(crate::settings::test_settings(concurrency)).unwrap();
        start_gates(gates, concurrency, held, jobs)
    }

    fn start_gates(
        gates: Arc<Gates>,
        concurrency: usize,
        held: usize,
        jobs: Vec<Parsed>,
    ) -> (Workers, Arc<AtomicU64>) {
        let taken = Arc::new(AtomicU64::new(0));
        let stop = Stop {
            intake: CancellationToken::new(),
            force: CancellationToken::new(),
        };
        let w = Workers::start(
            gates,
            futures::stream::iter(jobs),
            2,
            concurrency,
            held,
            stop,
            taken.clone(),
        )
        .unwrap();
        (w, taken)
    }

    async fn drain(w: &mut Workers) -> usize {
        let mut n = 0;
        while let Some(batch) = w.next().await {
            n += batch.len();
        }
        n
    }

    #[tokio::test]
    async fn places_grow_with_the_jobs_not_with_the_limits() {
        let jobs = (1..=10).map(|l| invalid(l, l.to_string())).collect();
        let (mut w, _) = start(100_000, 400_000, jobs);
        assert_eq!(drain(&mut w).await, 10);
        // Each thread starts one place and adds one when a job is taken and none is ready.
        assert!(w.places() <= 2 + 10, "{} places for 10 jobs", w.places());
        w.join().await;
    }

    #[tokio::test]
    async fn finished_lines_wait_in_memory_only_up_to_a_byte_budget() {
        // Lines of 256 KiB each, and nobody takes them: at most the budget's worth are finished
        // and handed over; the rest wait, each in a place holding an active slot.
        let line = 256 << 10;
        let big = "x".repeat(line);
        let n = 2 * crate::result::RESULT_BYTES / line;
        let jobs = (1..=n as u64).map(|l| invalid(l, big.clone())).collect();
        let concurrency = 8;
        let gates = Gates::new(crate::settings::test_settings(concurrency)).unwrap();
        let (mut w, taken) = start_gates(gates.clone(), concurrency, 256, jobs);
        // Until the budget is spent (or, without one, every job is taken).
        for _ in 0..1000 {
            if gates.result_bytes_free() < line || taken.load(Ordering::Relaxed) == n as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let taken = taken.load(Ordering::Relaxed);
        let in_budget = (crate::result::RESULT_BYTES / line) as u64;
        assert!(
            taken <= in_budget + concurrency as u64,
            "{taken} of {n} jobs taken with nobody writing"
        );
        assert_eq!(drain(&mut w).await, n, "once they are taken, all finish");
        w.join().await;
    }
}

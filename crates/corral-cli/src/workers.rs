//! Where jobs run: a few threads, each with a single-threaded tokio runtime and an [`Engine`] of
//! its own, all taking parsed jobs from one shared queue.
//!
//! Why not one multi-threaded runtime: a request's work (gates, the connection, the body, the
//! result line) then moves between threads at every wake-up, and on loopback that cost ~30%
//! more CPU per request (`bench/http.sh`, `corral run` user+sys time for 100 000 GETs: 2.1-2.4 s
//! on the multi-threaded runtime, 1.7 s on one current-thread runtime). One current-thread
//! runtime per core keeps each request, and each connection, on one thread for its whole life,
//! the way `oha` runs. The jobs held at once (`--queue`) are split between the threads (they add
//! up exactly); every limit (global and per-host concurrency, rates, breakers, retry budget) is
//! shared, so it holds across threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use corral::exec::{Exec, JobError};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::job::Parsed;
use crate::runner::{Engine, Outcome};

/// Outcomes a thread hands over at once, at most.
const OUTCOME_BATCH: usize = 64;

/// The running worker threads; their outcomes arrive through [`Workers::next`].
pub struct Workers {
    outcomes: mpsc::Receiver<Vec<Result<Option<Outcome>, JobError>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
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
        engine: Engine,
        jobs: S,
        threads: usize,
        concurrency: usize,
        held: usize,
        stop: Stop,
        taken: Arc<AtomicU64>,
    ) -> Result<Self, String>
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
        let mut engines = Vec::with_capacity(threads);
        for _ in 1..threads {
            engines.push(engine.sibling()?);
        }
        engines.push(engine);
        for (i, mut eng) in engines.into_iter().enumerate() {
            eng.stop_on(stop.intake.clone());
            let share = held / threads + usize::from(i < held % threads);
            let active = eng
                .set_active_limit(concurrency / threads + usize::from(i < concurrency % threads));
            let exec = Exec::builder()
                .limit(share)
                .cancel_token(stop.intake.clone())
                .build()
                .map_err(|e| e.to_string())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a worker runtime: {e}"))?;
            let (rx, out, force, taken) = (
                job_rx.clone(),
                out_tx.clone(),
                stop.force.clone(),
                taken.clone(),
            );
            let eng = Arc::new(eng);
            let handle = std::thread::Builder::new()
                .name(format!("corral-worker-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        // A job is taken only with an active slot: while every job is under way
                        // nothing more is held; jobs that wait for their host give theirs back.
                        let jobs = rx.flat_map(futures::stream::iter).then(move |parsed| {
                            let active = active.clone();
                            async move { (parsed, active.acquire_owned().await.ok()) }
                        });
                        let mut results = exec.run(jobs, move |(parsed, slot): (Parsed, _)| {
                            taken.fetch_add(1, Ordering::Relaxed);
                            eng.clone().process(parsed, slot)
                        });
                        loop {
                            let first = tokio::select! {
                                biased;
                                _ = force.cancelled() => break,
                                r = results.next() => r,
                            };
                            let Some(first) = first else { break };
                            // With it, whatever else has finished by now.
                            let mut batch = vec![first];
                            let mut ended = false;
                            while batch.len() < OUTCOME_BATCH {
                                match results.next().now_or_never() {
                                    Some(Some(r)) => batch.push(r),
                                    Some(None) => {
                                        ended = true;
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            if out.send(batch).await.is_err() || ended {
                                break;
                            }
                        }
                    });
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
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
        })
    }

    /// The next finished jobs; `None` once every thread has stopped.
    /// A job that never started (the run stopped taking jobs first) comes as `Ok(None)`.
    pub async fn next(&mut self) -> Option<Vec<Result<Option<Outcome>, JobError>>> {
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

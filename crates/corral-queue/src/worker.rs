//! A worker: pulls a run's jobs, runs them through the same engine as `corral run`, publishes
//! each result and only then acknowledges the job.
//!
//! The order is the whole point: a job's message is acked after the server has stored its
//! result, so a worker killed at any moment loses nothing — a job whose result was not stored
//! is delivered again (after the consumer's ack wait) to another worker, and a job whose
//! result was stored twice (run again after such a redelivery) is dropped by the results
//! stream's deduplication (`Nats-Msg-Id` = run + line). Jobs are pulled through one durable
//! consumer shared by every worker, so each message goes to one of them at a time.
//!
//! While a job waits (its host paused by a `Retry-After`, rate-limited, or its breaker open),
//! the worker tells the server it is still on it (an in-progress ack every third of the ack
//! wait), so a held job is not handed to another worker; a worker that dies stops doing so,
//! and its jobs go elsewhere after the ack wait. Every few seconds the worker also writes a
//! heartbeat to the run's [board](crate::board) (`worker.ID`), which `corral status` counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use corral_engine::hosts::HostTable;
use corral_engine::job::{parse_line, Input};
use corral_engine::run::{Observer, Quiet, Report, Run};
use corral_engine::sink::{LineSink, Sink};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::board::{host_token, unix_ns, Board};
use crate::error::QueueError;
use crate::nats;
use crate::record::{Lines, RunInfo};
use crate::sign::Purpose;
use crate::status::Heartbeat;
use crate::url::QueueUrl;

/// The durable consumer every worker of a run pulls from.
pub const CONSUMER: &str = "workers";

/// Jobs pulled and not yet acked, by input line.
type Pending = Arc<Mutex<HashMap<u64, jetstream::Message>>>;

/// How long a worker keeps trying to store results while the server is out of reach (a
/// restart, a partition) before it stops; its jobs then go to other workers.
pub const OUTAGE: Duration = Duration::from_secs(300);

/// How often a worker writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A worker of one run; see the [module docs](self).
pub struct Worker {
    queue: QueueUrl,
    js: jetstream::Context,
    board: Board,
    id: String,
    counters: Arc<Counters>,
    hosts: Option<Arc<dyn HostTable>>,
    lines: Option<Lines>,
}

/// What a worker has done so far, for its heartbeat and its metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Jobs whose result the server stored and whose message was acked.
    pub done: AtomicU64,
    /// Jobs pulled and not yet acked.
    pub held: AtomicU64,
    /// Job messages refused and dropped, never run: unsigned or wrongly signed (with a key),
    /// for a line the run does not have, or not UTF-8.
    pub rejected: AtomicU64,
}

impl Worker {
    /// Connects, and makes sure the run's results stream and board exist.
    /// Waits (up to [`OUTAGE`]) for a server that is down or restarting.
    pub async fn connect(queue: &QueueUrl) -> Result<Self, QueueError> {
        let (js, board) = nats::patiently(|| async {
            let js = nats::connect(queue).await?;
            results_stream(&js, queue).await?;
            let board = Board::open(&js, queue).await?;
            Ok((js, board))
        })
        .await?;
        let host = crate::board::host_name();
        Ok(Self {
            queue: queue.clone(),
            js,
            board,
            id: format!("{host}-{}", std::process::id()),
            counters: Arc::default(),
            hosts: None,
            lines: None,
        })
    }

    /// The host table the worker's engine uses (the run's [`FleetHosts`](crate::hosts::FleetHosts)),
    /// whose counters its heartbeat reports as per-host rates.
    pub fn report_hosts(&mut self, hosts: Arc<dyn HostTable>) {
        self.hosts = Some(hosts);
    }

    /// The run's board (its options, shared host state).
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// This worker's name on the board: host name and process id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the worker has done so far.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Waits until the run exists (a `corral submit` created its jobs stream and stored its
    /// record) and returns it; the worker takes only jobs of the lines it names. Calls
    /// `waiting` once if it has to wait. A record this worker cannot trust (unsigned or
    /// wrongly signed with a key; signed, without one) is an error of kind
    /// [`Forged`](crate::error::QueueErrorKind::Forged): no job is run.
    pub async fn run_info(&mut self, waiting: impl FnOnce()) -> Result<RunInfo, QueueError> {
        let mut waiting = Some(waiting);
        loop {
            if let Some(info) = self.board.run(self.queue.run(), self.queue.key()).await? {
                if self.js.get_stream(self.queue.jobs_stream()).await.is_ok() {
                    self.lines = Some(info.lines.clone());
                    return Ok(info);
                }
            }
            if let Some(w) = waiting.take() {
                w();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs jobs through `run` until `stop` is cancelled (jobs under way then finish, their
    /// results are published and acked), and returns the engine's report.
    pub async fn run(
        &self,
        run: Run,
        input: Input,
        stop: CancellationToken,
    ) -> Result<Report, QueueError> {
        self.run_observed(run, input, stop, &mut Quiet).await
    }

    /// [`Worker::run`], telling `observer` how it goes (for progress and metrics).
    pub async fn run_observed(
        &self,
        run: Run,
        input: Input,
        stop: CancellationToken,
        observer: &mut dyn Observer,
    ) -> Result<Report, QueueError> {
        let name = self.queue.jobs_stream();
        let jobs = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| QueueError::new(format!("open stream {name}"), e))?;
        let consumer = nats::durable(&jobs, CONSUMER, None).await?;
        let ack_wait = consumer.cached_info().config.ack_wait;
        // Pulled again whenever the pull ends (the server restarted): only `stop` ends a
        // worker's input.
        let messages = futures::stream::unfold(
            (consumer, None::<consumer::pull::Stream>),
            |(consumer, mut pulling)| async move {
                loop {
                    let Some(p) = pulling.as_mut() else {
                        match consumer
                            .stream()
                            .max_messages_per_batch(64)
                            .expires(Duration::from_secs(1))
                            .messages()
                            .await
                        {
                            Ok(p) => pulling = Some(p),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot pull jobs; trying again");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                        continue;
                    };
                    match p.next().await {
                        Some(item) => return Some((item, (consumer, pulling))),
                        None => pulling = None,
                    }
                }
            },
        );

        let pending: Pending = Arc::default();
        let beats = tokio::spawn(heartbeat(
            self.board.clone(),
            self.id.clone(),
            self.counters.clone(),
            pending.clone(),
            ack_wait,
            self.hosts.clone(),
        ));
        let _beats = AbortOnDrop(beats);
        let Some(lines) = self.lines.clone() else {
            return Err(QueueError::new(
                "run jobs",
                "the run's record was not read first (Worker::run_info)",
            ));
        };
        let (queue, held) = (self.queue.clone(), pending.clone());
        let (board, counters) = (self.board.clone(), self.counters.clone());
        let parsed = messages
            .take_until(stop.clone().cancelled_owned())
            .filter_map(move |m| {
                let job = m.ok().and_then(|m| {
                    let (line, text) = match check_job(&queue, &lines, &m) {
                        Ok(job) => job,
                        Err(why) => {
                            reject(&board, &counters, m, why);
                            return None;
                        }
                    };
                    held.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(line, m);
                    Some(Ok(parse_line(line, &text, &input)))
                });
                std::future::ready(job)
            });
        let sink = Sink::Lines(Box::new(Publisher {
            rt: tokio::runtime::Handle::current(),
            js: self.js.clone(),
            queue: self.queue.clone(),
            pending,
            counters: self.counters.clone(),
        }));
        let report = run
            .stop_on(stop, CancellationToken::new())
            .run_observed(parsed, sink, observer)
            .await
            .map_err(|e| QueueError::new("start the engine", e));
        let _ = self
            .board
            .store()
            .delete(format!("worker.{}", host_token(&self.id)))
            .await;
        report
    }
}

/// A job message's line and text, if the worker may run it: for a line the run has, signed
/// with the fleet's key when it has one, and UTF-8 (what `submit` publishes always is). A
/// line that is not a valid job is not refused here: like `corral run`, the engine gives it
/// its `invalid_input` result — it is the user's own line when it is signed, and without a
/// key nothing tells a forged line from a real one. `Err` says why not, naming nothing from
/// the message.
fn check_job(
    queue: &QueueUrl,
    lines: &Lines,
    m: &jetstream::Message,
) -> Result<(u64, String), &'static str> {
    let line = nats::trusted_line(queue, lines, Purpose::Job, m)?;
    let text = std::str::from_utf8(&m.payload).map_err(|_| "not UTF-8")?;
    Ok((line, text.to_string()))
}

/// Drops a job message the worker must not run: acked as terminated (never delivered again),
/// logged, and counted, here and on the board (`corral status`).
fn reject(board: &Board, counters: &Counters, m: jetstream::Message, why: &'static str) {
    counters.rejected.fetch_add(1, Ordering::Relaxed);
    let id = m
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| corral_engine::redact::text(v.as_str()).into_owned());
    tracing::warn!(message_id = ?id, "refused a job message: {why}; it is dropped, not run");
    let board = board.clone();
    tokio::spawn(async move {
        let _ = m.ack_with(jetstream::AckKind::Term).await;
        let _ = board.change(REJECTED_JOBS, |n| n.saturating_add(1)).await;
    });
}

/// The board's count of job messages the workers refused.
pub(crate) const REJECTED_JOBS: &str = "rejected.jobs";

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A worker's heartbeat on the board, every [`HEARTBEAT`]; and, every third of the ack wait,
/// an in-progress ack for each job it holds.
async fn heartbeat(
    board: Board,
    id: String,
    counters: Arc<Counters>,
    pending: Pending,
    ack_wait: Duration,
    hosts: Option<Arc<dyn HostTable>>,
) {
    let key = format!("worker.{}", host_token(&id));
    let progress_every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut beat = tokio::time::interval(HEARTBEAT.min(progress_every));
    let mut last_progress = tokio::time::Instant::now();
    let (mut last_beat, mut attempts) = (last_progress, HashMap::new());
    loop {
        beat.tick().await;
        let held: Vec<_> = pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(|m| Some((m.context.client(), m.message.reply.clone()?)))
            .collect();
        counters.held.store(held.len() as u64, Ordering::Relaxed);
        if last_progress.elapsed() >= progress_every {
            last_progress = tokio::time::Instant::now();
            for (client, reply) in held {
                let _ = client.publish(reply, Bytes::from_static(b"+WPI")).await;
            }
        }
        let now = tokio::time::Instant::now();
        let mut rates = BTreeMap::new();
        if let Some(table) = &hosts {
            let secs = now.duration_since(last_beat).as_secs_f64().max(1e-3);
            for (host, stat) in table.stats() {
                let before = attempts.insert(host.clone(), stat.attempts).unwrap_or(0);
                let sent = stat.attempts.saturating_sub(before);
                if sent > 0 {
                    rates.insert(host, sent as f64 / secs);
                }
            }
        }
        last_beat = now;
        let beat = Heartbeat {
            at_ms: unix_ns() / 1_000_000,
            id: id.clone(),
            done: counters.done.load(Ordering::Relaxed),
            held: counters.held.load(Ordering::Relaxed),
            hosts: rates,
        };
        if let Ok(value) = serde_json::to_vec(&beat) {
            let _ = board.store().put(&key, Bytes::from(value)).await;
        }
    }
}

/// Creates (or opens) the run's results stream: limits retention (the collector reads it),
/// deduplicated by line.
pub(crate) async fn results_stream(
    js: &jetstream::Context,
    queue: &QueueUrl,
) -> Result<stream::Stream, QueueError> {
    let name = queue.results_stream();
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![queue.results_subject()],
        storage: stream::StorageType::File,
        duplicate_window: crate::submit::Submitter::DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| QueueError::new(format!("create stream {name}"), e))
}

/// The engine's sink on a worker: each batch of result lines is published, the server's
/// acknowledgements awaited, and only then are the jobs acked.
struct Publisher {
    rt: tokio::runtime::Handle,
    js: jetstream::Context,
    queue: QueueUrl,
    pending: Pending,
    counters: Arc<Counters>,
}

impl LineSink for Publisher {
    fn write_lines(&mut self, lines: &mut dyn Iterator<Item = &str>) -> std::io::Result<()> {
        let batch: Vec<(u64, Bytes)> = lines
            .map(|l| {
                let line = nats::line_of_result(l).ok_or_else(|| {
                    std::io::Error::other(format!("a result without its line: {l}"))
                })?;
                Ok((line, Bytes::copy_from_slice(l.as_bytes())))
            })
            .collect::<std::io::Result<_>>()?;
        let (js, queue, pending) = (self.js.clone(), self.queue.clone(), self.pending.clone());
        let counters = self.counters.clone();
        // Called on a blocking thread: waiting here holds no runtime worker.
        self.rt.block_on(async move {
            let subject = queue.results_subject();
            let mut left = batch;
            let mut outage = nats::Outage::default();
            loop {
                // Every result of the batch not stored yet; a repeat of one stored before is
                // dropped by the stream's deduplication.
                let mut failed = Vec::new();
                let mut acks = Vec::with_capacity(left.len());
                for (line, payload) in left {
                    let headers = nats::signed_headers(
                        &queue,
                        Purpose::Result,
                        line,
                        queue.job_id(line),
                        &payload,
                    );
                    match js
                        .publish_with_headers(subject.clone(), headers, payload.clone())
                        .await
                    {
                        Ok(ack) => acks.push((line, payload, ack)),
                        Err(e) => failed.push((line, payload, e.to_string())),
                    }
                }
                for (line, payload, ack) in acks {
                    if let Err(e) = ack.await {
                        failed.push((line, payload, e.to_string()));
                        continue;
                    }
                    // Stored: now the job may go. An ack lost on the way only means the job
                    // runs again and its result is dropped as a repeat.
                    let job = pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&line);
                    if let Some(job) = job {
                        let _ = job.ack().await;
                        counters.done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let Some((_, _, why)) = failed.first() else {
                    return Ok(());
                };
                let what = format!("store {} results", failed.len());
                outage
                    .failed(&what, why)
                    .await
                    .map_err(std::io::Error::other)?;
                left = failed.into_iter().map(|(l, p, _)| (l, p)).collect();
            }
        })
    }
}

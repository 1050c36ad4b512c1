//! A run's state at a glance (`corral status`): read from the server's own counts (the
//! streams and the workers' consumer) and from the [board](crate::board) (heartbeats, pauses,
//! breakers, the collector's counts). Reading it changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::board::{token_host, unix_ns, Board, Stamp};
use crate::error::QueueError;
use crate::nats;
use crate::url::QueueUrl;
use crate::worker::{CONSUMER, HEARTBEAT};

/// A worker counts as alive while its last heartbeat is younger than this.
pub const ALIVE: Duration = Duration::from_secs(3 * HEARTBEAT.as_secs());

/// A run's state; `corral status --json` prints it as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The run (`nats://HOST:PORT/RUN`).
    pub queue: String,
    /// Jobs submitted.
    pub submitted: u64,
    /// Jobs waiting for a worker.
    pub pending: u64,
    /// Jobs a worker holds (pulled, not yet acked).
    pub in_flight: u64,
    /// Jobs delivered more than once (a worker died or outlasted the ack wait), now held.
    pub redelivered: u64,
    /// Jobs whose result the server has stored.
    pub done: u64,
    /// Of those written to the results file, how many failed (`ok: false`).
    pub failed: u64,
    /// Results written to the results file by the collector.
    pub collected: u64,
    /// Messages refused and dropped: jobs the workers would not run (unsigned or wrongly
    /// signed with a key, for a line the run does not have, not UTF-8) and results the
    /// collector would not write.
    pub rejected: u64,
    /// Workers whose heartbeat is recent, by name.
    pub workers: Vec<String>,
    /// Each of those workers' jobs done and jobs held now, by name.
    pub worker_jobs: BTreeMap<String, (u64, u64)>,
    /// Requests per second to each host over the workers' last heartbeat, all workers summed.
    pub host_rates: BTreeMap<String, f64>,
    /// Hosts whose breaker is open, and for how many more milliseconds.
    pub open_breakers: BTreeMap<String, u64>,
    /// Hosts paused by a `Retry-After`, and for how many more milliseconds.
    pub pauses: BTreeMap<String, u64>,
    /// Hosts whose breaker's cool-down is over and is waiting for its probe, with the worker
    /// sending it (empty while nobody has claimed it).
    pub half_open: BTreeMap<String, String>,
}

/// A worker's heartbeat on the board (`worker.ID`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    /// When (unix ms).
    pub(crate) at_ms: u64,
    /// The worker's name.
    pub(crate) id: String,
    /// Jobs done.
    pub(crate) done: u64,
    /// Jobs held.
    pub(crate) held: u64,
    /// Requests per second to each host since the previous heartbeat.
    #[serde(default)]
    pub(crate) hosts: BTreeMap<String, f64>,
}

impl Heartbeat {
    /// Whether the worker beat recently enough at `now_ms` to count as alive ([`ALIVE`]).
    pub(crate) fn alive(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.at_ms) <= ALIVE.as_millis() as u64
    }
}

/// Jobs submitted to the run so far (0 before the first submit): one read of the board, with
/// no right needed but to read it.
pub async fn submitted(queue: &QueueUrl) -> Result<u64, QueueError> {
    let js = nats::connect(queue).await?;
    Board::open(&js, queue).await?.submitted().await
}

/// Reads the run's state.
pub async fn status(queue: &QueueUrl) -> Result<Status, QueueError> {
    let js = nats::connect(queue).await?;
    // A run not on the server (never submitted, or purged) is all zeros; reading it creates
    // nothing.
    let Some(board) = Board::existing(&js, queue).await else {
        return Ok(Status {
            queue: queue.to_string(),
            ..Status::default()
        });
    };
    let mut s = Status {
        queue: queue.to_string(),
        submitted: board.submitted().await?,
        failed: board.number("collected.failed").await?,
        collected: board.number("collected.done").await?,
        rejected: board.number(crate::worker::REJECTED_JOBS).await?
            + board.number(crate::collect::REJECTED_RESULTS).await?,
        ..Status::default()
    };
    if let Ok(jobs) = js.get_stream(queue.jobs_stream()).await {
        if let Ok(c) = jobs.consumer_info(CONSUMER).await {
            s.pending = c.num_pending;
            s.in_flight = c.num_ack_pending as u64;
            s.redelivered = c.num_redelivered as u64;
        }
    }
    if let Ok(results) = js.get_stream(queue.results_stream()).await {
        if let Ok(info) = results.get_info().await {
            s.done = info.state.messages;
        }
    }
    let now_ms = unix_ns() / 1_000_000;
    let mut keys = board
        .store()
        .keys()
        .await
        .map_err(|e| QueueError::new("list the board", e))?;
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        let Some((kind, token)) = key.split_once('.') else {
            continue;
        };
        let Ok(Some(value)) = board.store().get(&key).await else {
            continue;
        };
        let until = || Stamp::read(&value)?.ahead_of(now_ms);
        let host = || token_host(token).unwrap_or_else(|| token.to_string());
        match kind {
            "worker" => {
                let Ok(beat) = serde_json::from_slice::<Heartbeat>(&value) else {
                    continue;
                };
                if beat.alive(now_ms) {
                    s.worker_jobs
                        .insert(beat.id.clone(), (beat.done, beat.held));
                    s.workers.push(beat.id);
                    for (h, r) in beat.hosts {
                        *s.host_rates.entry(h).or_default() += r;
                    }
                }
            }
            "breaker" => match until() {
                Some(left) => {
                    s.open_breakers.insert(host(), left);
                }
                None => {
                    let prober = board
                        .store()
                        .get(format!("probe.{token}"))
                        .await
                        .ok()
                        .flatten()
                        .and_then(|v| Stamp::read(&v))
                        .map(|claim| claim.by)
                        .unwrap_or_default();
                    s.half_open.insert(host(), prober);
                }
            },
            "pause" => {
                if let Some(left) = until() {
                    s.pauses.insert(host(), left);
                }
            }
            _ => {}
        }
    }
    s.workers.sort();
    Ok(s)
}

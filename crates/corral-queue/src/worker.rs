//! A worker: pulls a run's jobs, runs them through the same engine as `corral run`, publishes
//! each result and only then acknowledges the job.
//!
//! The order is the whole point: a job's message is acked after the server has stored its
//! result, so a worker killed at any moment loses nothing — a job whose result was not stored
//! is delivered again (after the consumer's ack wait) to another worker, and a job whose
//! result was stored twice (run again after such a redelivery) is dropped by the results
//! stream's deduplication (`Nats-Msg-Id` = run + line). Jobs are pulled through one durable
//! consumer shared by every worker, so each message goes to one of them at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use corral_engine::job::{parse_line, Input};
use corral_engine::run::{Report, Run};
use corral_engine::sink::{LineSink, Sink};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::QueueError;
use crate::nats;
use crate::url::QueueUrl;

/// The durable consumer every worker of a run pulls from.
pub const CONSUMER: &str = "workers";

/// Jobs pulled and not yet acked, by input line.
type Pending = Arc<Mutex<HashMap<u64, jetstream::Message>>>;

/// A worker of one run; see the [module docs](self).
#[derive(Debug)]
pub struct Worker {
    queue: QueueUrl,
    js: jetstream::Context,
    ack_wait: Duration,
}

impl Worker {
    /// Connects, and makes sure the run's results stream exists. `ack_wait` is how long a job
    /// may stay unacknowledged before the server gives it to another worker.
    pub async fn connect(queue: &QueueUrl, ack_wait: Duration) -> Result<Self, QueueError> {
        let js = nats::connect(queue).await?;
        results_stream(&js, queue).await?;
        Ok(Self {
            queue: queue.clone(),
            js,
            ack_wait,
        })
    }

    /// Runs jobs through `run` until `stop` is cancelled (jobs under way then finish, their
    /// results are published and acked), and returns the engine's report.
    pub async fn run(
        &self,
        run: Run,
        input: Input,
        stop: CancellationToken,
    ) -> Result<Report, QueueError> {
        let name = self.queue.jobs_stream();
        let jobs = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| QueueError::new(format!("open stream {name}"), e))?;
        let consumer = nats::durable(&jobs, CONSUMER, Some(self.ack_wait)).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(64)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(|e| QueueError::new(format!("pull from {name}"), e))?;

        let pending: Pending = Arc::default();
        let (queue, held) = (self.queue.clone(), pending.clone());
        let parsed = messages
            .take_until(stop.clone().cancelled_owned())
            .filter_map(move |m| {
                let job = m.ok().and_then(|m| {
                    let line = nats::line_of(&queue, &m)?;
                    let text = String::from_utf8_lossy(&m.payload).into_owned();
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
        }));
        run.stop_on(stop, CancellationToken::new())
            .run(parsed, sink)
            .await
            .map_err(|e| QueueError::new("start the engine", e))
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
        // Called on a blocking thread: waiting here holds no runtime worker.
        self.rt.block_on(async move {
            let subject = queue.results_subject();
            let mut acks = Vec::with_capacity(batch.len());
            for (line, payload) in batch {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    queue.job_id(line).as_str(),
                );
                let ack = js
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
                    .map_err(std::io::Error::other)?;
                acks.push((line, ack));
            }
            for (line, ack) in acks {
                ack.await.map_err(std::io::Error::other)?;
                // Stored: now the job may go.
                let job = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&line);
                if let Some(job) = job {
                    job.ack().await.map_err(std::io::Error::other)?;
                }
            }
            Ok(())
        })
    }
}

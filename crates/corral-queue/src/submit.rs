//! Publishing a run's jobs: `corral submit`'s work, as a library.
//!
//! Each input line becomes one message on the run's jobs subject, in a work-queue stream (a
//! message is removed once a worker acks it), with `Nats-Msg-Id` = run + line. The server
//! drops a message whose id it has seen within the stream's duplicate window, so submitting
//! the same file twice, or again after a crash half-way, never queues a line twice.
//!
//! Publishes are pipelined: up to [`Submitter::IN_FLIGHT`] wait for the server's
//! acknowledgement at once, and [`Submitter::submit`] returns only when every one has been
//! acknowledged — a line counts as submitted once the server has stored it. With the fleet's
//! key, each message is signed (run, line and text: [`crate::sign`]).

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::board::Board;
use crate::error::QueueError;
use crate::record::RunInfo;
use crate::sign::Purpose;
use crate::url::QueueUrl;

/// How long a job may stay unacknowledged before another worker gets it, unless
/// `--ack-wait-s` says otherwise.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// Deliveries of a job at most (workers that took it and died), unless `--max-deliveries`
/// says otherwise; then the collector gives it a `max_deliveries` result.
pub const DEFAULT_MAX_DELIVERIES: i64 = 5;

/// Why a submit failed. Lines acknowledged before the failure stay queued; submitting again
/// queues only the others.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The server could not be reached, or refused to let us in (see
    /// [`QueueError::kind`](crate::error::QueueError::kind)).
    #[error("cannot connect: {0}")]
    Connect(#[source] crate::error::QueueError),
    /// The run's stream could not be created or read (JetStream off, a stream of that name
    /// with another configuration, ...).
    #[error("cannot set up the run's stream {stream}: {message}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// The server's or the client's reason.
        message: String,
    },
    /// A line could not be published, or its acknowledgement did not come.
    #[error("line {line}: not stored by the server: {message}")]
    Publish {
        /// The input line.
        line: u64,
        /// Why.
        message: String,
    },
}

/// What a submit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubmitReport {
    /// Lines stored as new messages.
    pub queued: u64,
    /// Lines the server already had (submitted before within the duplicate window).
    pub duplicates: u64,
}

/// Publishes jobs into one run's stream.
#[derive(Debug)]
pub struct Submitter {
    queue: QueueUrl,
    js: jetstream::Context,
    board: Board,
}

impl Submitter {
    /// Acknowledgements awaited at once.
    pub const IN_FLIGHT: usize = 256;

    /// How long the server remembers a line's id to drop a repeat: a resubmit within this
    /// time queues nothing twice.
    pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

    /// Connects to the queue's server and makes sure the run's jobs stream (a work-queue
    /// stream on the run's subject, stored on disk), results stream and board exist.
    pub async fn connect(queue: &QueueUrl) -> Result<Self, SubmitError> {
        let js = jetstream::new(queue.client().await.map_err(SubmitError::Connect)?);
        let name = queue.jobs_stream();
        js.get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![queue.jobs_subject()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Self::DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|e| SubmitError::Stream {
            stream: name,
            message: e.to_string(),
        })?;
        // The results stream too: workers and the collector then need no right to create
        // streams (see README's least-privilege users).
        crate::worker::results_stream(&js, queue)
            .await
            .map_err(|e| SubmitError::Stream {
                stream: queue.results_stream(),
                message: e.to_string(),
            })?;
        let board = Board::open(&js, queue)
            .await
            .map_err(|e| SubmitError::Stream {
                stream: queue.bucket(),
                message: e.to_string(),
            })?;
        Ok(Self {
            queue: queue.clone(),
            js,
            board,
        })
    }

    /// Keeps the run's jobs and results streams and its board on `replicas` servers of a
    /// JetStream cluster (`submit --replicas`, 1 to 5), so that a server that dies stops
    /// nothing: each stream made with one replica is changed to `replicas`.
    pub async fn replicate(&self, replicas: usize) -> Result<(), SubmitError> {
        for name in [
            self.queue.jobs_stream(),
            self.queue.results_stream(),
            format!("KV_{}", self.queue.bucket()),
        ] {
            let err = |e: &dyn std::fmt::Display| SubmitError::Stream {
                stream: name.clone(),
                message: e.to_string(),
            };
            let mut stream = self.js.get_stream(&name).await.map_err(|e| err(&e))?;
            let mut config = stream.info().await.map_err(|e| err(&e))?.config.clone();
            if config.num_replicas != replicas {
                config.num_replicas = replicas;
                self.js.update_stream(config).await.map_err(|e| err(&e))?;
            }
        }
        Ok(())
    }

    /// The run's board (options, counts, shared host state).
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Stores the run as submitted — its options, job count and lines, signed with the
    /// queue's key when it has one — for the workers and the collector, and counts its jobs.
    /// Done before publishing: a collector waits for every line, even those a crashed submit
    /// did not publish (submitting again publishes them).
    pub async fn record(&self, info: &RunInfo) -> Result<(), QueueError> {
        self.board
            .set_run(self.queue.run(), info, self.queue.key())
            .await?;
        self.board.raise_submitted(info.jobs).await.map(drop)
    }

    /// Sets how long a job may stay unacknowledged before another worker gets it
    /// (`--ack-wait-s`), and how many times a job is delivered at most before the collector
    /// gives it a `max_deliveries` result: the workers' shared consumer is created with
    /// these, or changed to them.
    pub async fn configure(
        &self,
        ack_wait: Duration,
        max_deliveries: i64,
    ) -> Result<(), SubmitError> {
        let name = self.queue.jobs_stream();
        let err = |e: &dyn std::fmt::Display| SubmitError::Stream {
            stream: name.clone(),
            message: e.to_string(),
        };
        let stream = self.js.get_stream(&name).await.map_err(|e| err(&e))?;
        stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some(crate::worker::CONSUMER.to_string()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                max_deliver: max_deliveries,
                // Each worker bounds what it holds (its --queue-size); a cap here would only
                // throttle a large fleet (the server's default is 1000 for all workers).
                max_ack_pending: -1,
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        Ok(())
    }

    /// Publishes `(line, text)` pairs and returns once the server has acknowledged every one.
    pub async fn submit<I>(&self, lines: I) -> Result<SubmitReport, SubmitError>
    where
        I: IntoIterator<Item = (u64, String)>,
    {
        self.publish(lines, None).await
    }

    /// Publishes `(line, text)` pairs again under ids of resume number `resume` (so the
    /// server does not drop them as repeats of the first submit): for lines that have no
    /// result (`submit --resume`).
    pub async fn resubmit<I>(&self, lines: I, resume: u64) -> Result<SubmitReport, SubmitError>
    where
        I: IntoIterator<Item = (u64, String)>,
    {
        self.publish(lines, Some(resume)).await
    }

    async fn publish<I>(&self, lines: I, resume: Option<u64>) -> Result<SubmitReport, SubmitError>
    where
        I: IntoIterator<Item = (u64, String)>,
    {
        let mut report = SubmitReport::default();
        let mut acks = FuturesUnordered::new();
        let subject = self.queue.jobs_subject();
        for (line, text) in lines {
            if acks.len() >= Self::IN_FLIGHT {
                if let Some(done) = acks.next().await {
                    count(&mut report, done)?;
                }
            }
            let id = match resume {
                None => self.queue.job_id(line),
                Some(r) => self.queue.resubmit_id(line, r),
            };
            let headers =
                crate::nats::signed_headers(&self.queue, Purpose::Job, line, id, text.as_bytes());
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, Bytes::from(text))
                .await
                .map_err(|e| SubmitError::Publish {
                    line,
                    message: e.to_string(),
                })?;
            acks.push(async move { (line, ack.await) });
        }
        while let Some(done) = acks.next().await {
            count(&mut report, done)?;
        }
        Ok(report)
    }

    /// Messages waiting in the run's stream (submitted and not yet acked by a worker).
    pub async fn pending(&self) -> Result<u64, SubmitError> {
        let name = self.queue.jobs_stream();
        let stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| SubmitError::Stream {
                stream: name.clone(),
                message: e.to_string(),
            })?;
        let info = stream.get_info().await.map_err(|e| SubmitError::Stream {
            stream: name,
            message: e.to_string(),
        })?;
        Ok(info.state.messages)
    }
}

fn count(
    report: &mut SubmitReport,
    (line, ack): (
        u64,
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ),
) -> Result<(), SubmitError> {
    match ack {
        Ok(a) if a.duplicate => report.duplicates += 1,
        Ok(_) => report.queued += 1,
        Err(e) => {
            return Err(SubmitError::Publish {
                line,
                message: e.to_string(),
            })
        }
    }
    Ok(())
}

//! # corral-queue
//!
//! corral on NATS JetStream: many `corral worker`s on many machines share one run — its jobs,
//! its per-host limits and one exactly-once results file (issue 16).
//!
//! This crate is built in steps. What exists:
//!
//! | module | what it is |
//! |---|---|
//! | [`url`] | the `--queue nats://HOST:4222/RUN` address (and `CORRAL_QUEUE`), and the names of the run's streams and subjects |
//! | [`submit`] | publishing a run's jobs into its work-queue stream, one message per input line, deduplicated by line (`Nats-Msg-Id`), so a repeated or resumed submit never queues a line twice |
//! | [`worker`] | pulling jobs through one durable consumer, running them through the engine of `corral run`, publishing each result and only then acking the job |
//! | [`collect`] | the one writer of the results file: each line's result once, synced, then acked |
//! | [`error`] | `QueueError`: what was being done, and why it failed |
//!
//! Still to come (see the issue): the `corral submit/worker/collect/status` commands and
//! `run --queue`, progress acks for jobs held by a paused host, `max_deliveries` results,
//! status, shared per-host limits in a KV bucket, and metrics. Nothing in the `corral` binary
//! uses this crate yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod board;
pub mod collect;
pub mod error;
pub mod hosts;
mod nats;
pub mod status;
pub mod submit;
pub mod url;
pub mod worker;

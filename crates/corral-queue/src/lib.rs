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
//!
//! Still to come (see the issue): the worker (pull, run through the engine, publish the result,
//! then ack), the collector (the single writer of the results file), status, shared per-host
//! limits in a KV bucket, and metrics. Nothing in the `corral` binary uses this crate yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod submit;
pub mod url;

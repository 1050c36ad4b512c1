//! # corral-queue
//!
//! corral on NATS JetStream: many `corral worker`s on many machines share one run — its jobs,
//! its per-host limits and one exactly-once results file (issue 16).
//!
//! | module | what it is |
//! |---|---|
//! | [`url`] | the `--queue nats://[USER:PASSWORD@]HOST:4222[,HOST...]/RUN` address (and `CORRAL_QUEUE`), and the names of the run's streams, subjects and bucket |
//! | [`connect`] | logging in (credentials in the address, `.creds` and nkey files) and TLS, with typed refusals |
//! | [`submit`] | publishing a run's jobs into its work-queue stream, one message per input line, deduplicated by line (`Nats-Msg-Id`), and setting the workers' consumer (ack wait, deliveries) |
//! | [`record`] | the run as submitted: options, job count and input lines ([`record::Lines`]) |
//! | [`sign`] | HMAC-SHA256 signatures of jobs, results and the run's record with the fleet's key |
//! | [`board`] | the run's KV bucket: its options, job count, and the per-host state the workers share |
//! | [`hosts`] | the engine's host table for a worker of a fleet: the per-host rate leased from the board, pauses and breaker openings watched on it, one probe per host fleet-wide |
//! | [`worker`] | pulling jobs through one durable consumer, running them through the engine of `corral run`, publishing each result and only then acking the job; progress acks and heartbeats |
//! | [`collect`] | the one writer of the results file: each line's result once, synced, then acked; `max_deliveries` results for jobs out of deliveries |
//! | [`status`] | a run's state from the server's counts and the board |
//! | [`purge`] | a run's streams and board removed (refused while its workers live, unless forced) |
//! | [`error`] | `QueueError`: what was being done, and why it failed |
//!
//! The `corral submit`, `worker`, `collect`, `status`, `purge` and `run --queue` commands are thin
//! layers over these (in `corral-cli`'s `fleet` module). The feature `testing` adds
//! `testing`: a real `nats-server` and a loopback HTTP recorder, for tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod board;
pub mod collect;
pub mod connect;
pub mod error;
pub mod hosts;
mod nats;
pub mod purge;
pub mod record;
pub mod sign;
pub mod status;
pub mod submit;
#[cfg(feature = "testing")]
pub mod testing;
pub mod url;
pub mod worker;

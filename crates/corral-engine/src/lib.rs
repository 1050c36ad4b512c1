//! # corral-engine
//!
//! The engine behind `corral run`: a very large file of HTTP requests pushed through per-host
//! and global limits, retries, circuit breakers and Retry-After pauses, on one thread-per-core
//! runtime each, with exactly-once results and crash-safe resume.
//!
//! | module | what it is |
//! |---|---|
//! | [`job`] | input lines: a JSONL job or a URL, parsed and checked, one [`job::Parsed`] per line |
//! | `engine` (crate-private) | one job in, one result line out, through every gate of the run: `Engine`, the shared `Gates`, attempts, bodies, the job's trace |
//! | [`result`] | a job's result line: its fields, JSON and CSV, and what the summary takes from it |
//! | [`error`] | how a job can fail: [`error::ErrorKind`] |
//! | [`settings`] | everything that shapes a run, with the defaults of `corral run` |
//! | [`run`] | a whole run as one call: jobs in, results into a sink, a [`run::Report`] out |
//! | [`blocking`] | the same for programs that are not async: [`blocking::Runner::run`] blocks until every job has its result |
//! | [`hosts`] | per-host state behind a seam ([`hosts::HostTable`]); in this process by default: one entry per host, idle hosts evicted |
//! | `workers` (crate-private) | the threads that run jobs, each with its own runtime and clients |
//! | `http` (crate-private) | the lean HTTP/1.1 client, its connection pool, the redirect rule, typed failure causes |
//! | [`files`] | option files read bounded, written files never opened through a link, outputs checked against inputs |
//! | [`intents`] | the journal of requests that may not be repeated, so a resume after a crash does not send them twice |
//! | [`sink`] | the results file: lock, resume scan and repair, batched fsync-bounded writer |
//! | [`summary`] | counters over the results written, and the summary built from them |
//! | [`redact`] | what is secret, and the one place every outgoing string is cleaned |
//!
//! The `corral` binary (`crates/corral-cli`) parses options and drives these; see
//! ARCHITECTURE.md for the path of one job from input line to result line.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blocking;
pub(crate) mod engine;
pub mod error;
pub mod files;
pub mod hosts;
pub(crate) mod http;
pub mod intents;
pub mod job;
pub mod redact;
pub mod result;
pub mod run;
pub mod settings;
pub mod sink;
pub mod summary;
pub(crate) mod workers;

//! The commands of a run shared by many workers on NATS JetStream: `submit`, `worker`,
//! `collect`, `status`, and `run --queue` (submit, then collect with a progress bar). The
//! work itself is `corral-queue`'s; here are the flags, the checks of what a fleet does not
//! share, and what is printed.

pub(crate) mod collect;
pub(crate) mod status;
pub(crate) mod submit;
pub(crate) mod worker;

use clap::Args;
use corral_queue::url::{QueueUrl, ENV};
use serde::{Deserialize, Serialize};

use crate::exit::{code as exit, Fail};
use crate::flags::Options;

/// `--queue`, shared by the fleet's commands.
#[derive(Args, Clone)]
pub(crate) struct QueueArg {
    /// The run's queue, nats://HOST[:PORT]/RUN (default: $CORRAL_QUEUE)
    #[arg(long, value_name = "nats://HOST:PORT/RUN")]
    pub(crate) queue: Option<String>,
}

impl QueueArg {
    /// The queue from `--queue` or `CORRAL_QUEUE`; an error naming both when neither gives a
    /// good one.
    pub(crate) fn url(&self) -> Result<QueueUrl, Fail> {
        parse(self.queue.as_deref())?.ok_or_else(|| {
            Fail(
                exit::BAD_INPUT,
                corral_queue::url::QueueUrlError::Missing.to_string(),
            )
        })
    }
}

/// The queue of `flag`, else of `CORRAL_QUEUE`; `None` when neither is set. A number (the
/// old `--queue N`) gets an error saying where that option went.
pub(crate) fn parse(flag: Option<&str>) -> Result<Option<QueueUrl>, Fail> {
    let from_env = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty());
    let (text, source) = match (flag, &from_env) {
        (Some(f), _) => (f.to_string(), "--queue"),
        (None, Some(e)) => (e.clone(), ENV),
        (None, None) => return Ok(None),
    };
    if text.trim().parse::<u64>().is_ok() {
        return Err(Fail(
            exit::BAD_INPUT,
            format!(
                "{source} {text}: --queue now takes a NATS queue, nats://HOST:PORT/RUN; jobs held at once is --queue-size"
            ),
        ));
    }
    QueueUrl::parse(&text)
        .map(Some)
        .map_err(|e| Fail(exit::BAD_INPUT, format!("{source}: {e}")))
}

/// What `submit` stores on the board for the workers: the run's options and how its lines
/// read.
#[derive(Serialize, Deserialize)]
pub(crate) struct RunRecord {
    /// The options `submit` was given (config file merged in).
    pub(crate) options: Options,
    /// The lines are URLs (`--urls`), not JSON jobs.
    #[serde(default)]
    pub(crate) urls: bool,
}

/// Refuses options a fleet would enforce per worker while the user means the whole run: the
/// trap of per-worker limits. The per-host rate and cost rate, pauses and breakers are shared
/// (see `corral_queue::hosts`); `--per-host-concurrency` is per worker, as documented.
pub(crate) fn check_shareable(o: &Options) -> Result<(), String> {
    let per_worker = |option: &str| {
        format!(
            "{option} is not shared by the workers of a queue (each would allow it alone); use --per-host-rate or --per-host-cost-rate, which are"
        )
    };
    if o.rate.is_some() {
        return Err(per_worker("--rate"));
    }
    if o.cost_rate.is_some() {
        return Err(per_worker("--cost-rate"));
    }
    if o.halt_after_failures.is_some() || o.halt_on_failure_rate.is_some() {
        return Err(
            "--halt-after-failures and --halt-on-failure-rate are not supported with --queue (each worker would judge alone)"
                .into(),
        );
    }
    if o.per_host_rate
        .as_deref()
        .is_some_and(|r| r.trim().starts_with("auto"))
    {
        return Err(
            "--per-host-rate auto is not supported with --queue (each worker would find its own rate); give the rate, e.g. 50/s".into(),
        );
    }
    if o.save_body_dir.is_some() {
        return Err(
            "--save-body-dir writes on each worker's disk; with --queue use --save-body".into(),
        );
    }
    for (pattern, h) in &o.hosts {
        if h.rate
            .as_deref()
            .is_some_and(|r| r.trim().starts_with("auto"))
        {
            return Err(format!(
                "[hosts.\"{pattern}\"] rate = auto is not supported with --queue"
            ));
        }
    }
    Ok(())
}

//! `corral purge`: remove a queue run's streams and board from the server.

use clap::Args;

use super::QueueArg;
use crate::exit::{code as exit, Fail};

#[derive(Args)]
pub(crate) struct PurgeArgs {
    #[command(flatten)]
    pub(crate) queue: QueueArg,
    /// Purge even while workers still run it (they fail their jobs under way).
    #[arg(long)]
    pub(crate) force: bool,
    /// Say nothing.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

pub(crate) async fn purge_cmd(args: PurgeArgs) -> Result<u8, Fail> {
    let queue = args.queue.url()?;
    let purged = corral_queue::purge::purge(&queue, args.force)
        .await
        .map_err(super::queue_fail)?;
    if !args.quiet {
        say(&queue, &purged);
    }
    Ok(exit::OK)
}

/// What a purge removed, on standard error.
pub(crate) fn say(queue: &corral_queue::url::QueueUrl, purged: &corral_queue::purge::Purged) {
    if purged.removed.is_empty() {
        eprintln!("corral: nothing of {queue} was on the server");
    } else {
        eprintln!("corral: removed {} of {queue}", purged.removed.join(", "));
    }
}

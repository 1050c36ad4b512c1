//! `corral purge`: a run's streams and board removed from the server.
//!
//! Why: a run's jobs stream, results stream and KV bucket stay on the server (on disk, with
//! every result) until someone removes them. Removing them while workers still run the run
//! would fail those workers mid-job, so a purge is refused while a worker's heartbeat is fresh
//! unless forced; `collect --purge` purges once every result is in the file, when the
//! workers' remaining work is nothing.

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::ErrorCode;

use crate::error::{QueueError, QueueErrorKind};
use crate::nats;
use crate::url::QueueUrl;

/// What a purge removed: the names of the streams (the bucket is its `KV_` stream) that were
/// there.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    /// The streams removed, in the order jobs, results, board.
    pub removed: Vec<String>,
}

/// Removes the run's jobs and results streams and its board. Refused (kind
/// [`QueueErrorKind::Busy`]) while a worker of the run is alive, unless `force`. A stream
/// that is not there is not an error: a purge run twice removes nothing the second time.
pub async fn purge(queue: &QueueUrl, force: bool) -> Result<Purged, QueueError> {
    if !force {
        let s = crate::status::status(queue).await?;
        if !s.workers.is_empty() {
            return Err(QueueError::of(
                QueueErrorKind::Busy,
                format!("purge {queue}"),
                format!(
                    "{} worker(s) still run it ({}): stop them first, or --force",
                    s.workers.len(),
                    s.workers.join(", ")
                ),
            ));
        }
    }
    let js = nats::connect(queue).await?;
    let mut purged = Purged::default();
    for name in [
        queue.jobs_stream(),
        queue.results_stream(),
        format!("KV_{}", queue.bucket()),
    ] {
        match js.delete_stream(&name).await {
            Ok(_) => purged.removed.push(name),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
                _ => return Err(QueueError::new(format!("remove {name}"), e)),
            },
        }
    }
    Ok(purged)
}

//! The collector: the one writer of a run's results file.
//!
//! It reads the results stream, writes each input line's result once (by line number: a result
//! published twice, after a redelivered job ran twice, is dropped here as well as by the
//! stream's deduplication), syncs the file, and only then acks the batch. Killed at any point,
//! it loses nothing: what it had not acked is delivered again, and what it had already written
//! is recognised on restart (the file is read back first) and not written twice.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;

use crate::error::QueueError;
use crate::nats;
use crate::url::QueueUrl;
use crate::worker::results_stream;

/// The durable consumer of a run's results.
pub const CONSUMER: &str = "collector";

/// What a collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Result lines written by this collection.
    pub written: u64,
    /// Results dropped because their line was already in the file.
    pub duplicates: u64,
}

/// Collects the run's results into `out` until `expected` input lines have theirs (counting
/// those already in the file).
pub async fn collect(
    queue: &QueueUrl,
    out: &Path,
    expected: u64,
) -> Result<CollectReport, QueueError> {
    let js = nats::connect(queue).await?;
    let stream = results_stream(&js, queue).await?;
    let consumer = nats::durable(&stream, CONSUMER, None).await?;

    let file_err = |e: std::io::Error| QueueError::new(format!("write {}", out.display()), e);
    let mut done = HashSet::new();
    if let Ok(f) = std::fs::File::open(out) {
        for l in BufReader::new(f).lines() {
            let l = l.map_err(file_err)?;
            if let Some(n) = nats::line_of_result(&l) {
                done.insert(n);
            }
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(file_err)?;
    let mut report = CollectReport::default();
    while (done.len() as u64) < expected {
        let mut batch = consumer
            .fetch()
            .max_messages(256)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| QueueError::new("fetch results", e))?;
        let mut taken = Vec::new();
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| QueueError::new("fetch results", e))?;
            let line = nats::line_of(queue, &m);
            match line {
                Some(n) if done.insert(n) => {
                    file.write_all(&m.payload).map_err(file_err)?;
                    file.write_all(b"\n").map_err(file_err)?;
                    report.written += 1;
                }
                _ => report.duplicates += 1,
            }
            taken.push(m);
        }
        // Durable first, then acked: a crash in between re-delivers lines the file already
        // has, which the read-back above recognises.
        file.sync_data().map_err(file_err)?;
        for m in taken {
            m.ack()
                .await
                .map_err(|e| QueueError::new("ack a result", e))?;
        }
    }
    Ok(report)
}

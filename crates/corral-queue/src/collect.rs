//! The collector: the one writer of a run's results file.
//!
//! It reads the results stream, writes each input line's result once (by line number: a result
//! published twice, after a redelivered job ran twice, is dropped here as well as by the
//! stream's deduplication), syncs the file, and only then acks the batch. Killed at any point,
//! it loses nothing: what it had not acked is delivered again, and what it had already written
//! is recognised on restart (the file is read back first) and not written twice.
//!
//! A job delivered [`max_deliveries`](crate::submit::Submitter::configure) times without a
//! result (each worker that took it died, or it outlasted every ack wait) is delivered no
//! more; the collector finds such jobs once the workers' consumer has nothing left to give,
//! publishes a result of kind `max_deliveries` for each, and removes the job. It ends when
//! every submitted job has its result.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use corral_engine::sink::Done;
use futures::StreamExt;

use crate::board::Board;
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
    /// Jobs given a `max_deliveries` result by this collection.
    pub undeliverable: u64,
}

/// Progress of a collection, for a progress bar: lines in the file, and jobs submitted.
pub trait CollectProgress: Send {
    /// Called after each synced batch.
    fn collected(&mut self, done: u64, submitted: u64);
}

impl CollectProgress for () {
    fn collected(&mut self, _: u64, _: u64) {}
}

/// Collects the run's results into `out` until every submitted job (the board's count, read
/// again while it runs) has its result in the file, counting those already there.
pub async fn collect(
    queue: &QueueUrl,
    out: &Path,
    progress: &mut dyn CollectProgress,
) -> Result<CollectReport, QueueError> {
    let (js, board, consumer) = nats::patiently(|| async {
        let js = nats::connect(queue).await?;
        let stream = results_stream(&js, queue).await?;
        let board = Board::open(&js, queue).await?;
        let consumer = nats::durable(&stream, CONSUMER, None).await?;
        Ok((js, board, consumer))
    })
    .await?;

    let file_err = |e: std::io::Error| QueueError::new(format!("write {}", out.display()), e);
    repair_torn_end(out).map_err(file_err)?;
    let mut done = Done::default();
    let mut failed = 0u64;
    if let Ok(f) = std::fs::File::open(out) {
        for l in BufReader::new(f).lines() {
            let l = l.map_err(file_err)?;
            if let Some(n) = nats::line_of_result(&l) {
                if done.insert(n) && !ok(l.as_bytes()) {
                    failed += 1;
                }
            }
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(file_err)?;
    let mut report = CollectReport::default();
    let mut submitted = board.submitted().await?;
    let mut outage = nats::Outage::default();
    progress.collected(done.len(), submitted);
    while submitted == 0 || done.len() < submitted {
        let batch = consumer
            .fetch()
            .max_messages(256)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                outage.failed("fetch results", e).await?;
                continue;
            }
        };
        let mut taken = Vec::new();
        while let Some(m) = batch.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    outage.failed("fetch results", e).await?;
                    break;
                }
            };
            let line = nats::line_of(queue, &m);
            match line {
                Some(n) if done.insert(n) => {
                    failed += u64::from(!ok(&m.payload));
                    file.write_all(&m.payload).map_err(file_err)?;
                    file.write_all(b"\n").map_err(file_err)?;
                    report.written += 1;
                }
                _ => report.duplicates += 1,
            }
            taken.push(m);
        }
        if taken.is_empty() {
            // Nothing came: the count may have grown, or jobs may be out of deliveries.
            match board.submitted().await {
                Ok(n) => submitted = n,
                Err(e) => outage.failed("read the board", e).await?,
            }
            match give_up_undeliverable(&js, queue).await {
                Ok(n) => report.undeliverable += n,
                Err(e) => outage.failed("look for undeliverable jobs", e).await?,
            }
            continue;
        }
        outage.over();
        // Durable first, then acked: a crash in between re-delivers lines the file already
        // has, which the read-back above recognises.
        file.sync_data().map_err(file_err)?;
        for m in taken {
            // An ack lost on the way only means the result comes again, and is dropped.
            let _ = m.ack().await;
        }
        progress.collected(done.len(), submitted);
        counts(&board, done.len(), failed).await;
    }
    counts(&board, done.len(), failed).await;
    progress.collected(done.len(), submitted);
    Ok(report)
}

/// Cuts a last line without its newline (a collector killed while writing it): its result
/// was not acked, so it comes again and is written whole.
fn repair_torn_end(out: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match OpenOptions::new().read(true).write(true).open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    // Back from the end, a block at a time, to the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        tracing::warn!(
            bytes = len - end,
            "cut a torn last line of the results file"
        );
        f.set_len(end)?;
        f.sync_data()?;
    }
    Ok(())
}

/// Whether a result line says `"ok": true`.
fn ok(result: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(result)
        .ok()
        .and_then(|v| v.get("ok")?.as_bool())
        .unwrap_or(false)
}

/// The collector's counts on the board, for `corral status` (best effort: the file is the
/// truth).
async fn counts(board: &Board, done: u64, failed: u64) {
    let kv = board.store();
    let _ = kv
        .put("collected.done", Bytes::from(done.to_string()))
        .await;
    let _ = kv
        .put("collected.failed", Bytes::from(failed.to_string()))
        .await;
}

/// Publishes a `max_deliveries` result for each job the workers' consumer will deliver no
/// more, and removes the job; returns how many. Only when the consumer has nothing pending
/// and nothing out: then any job still in the work-queue stream is such a job.
async fn give_up_undeliverable(
    js: &jetstream::Context,
    queue: &QueueUrl,
) -> Result<u64, QueueError> {
    let name = queue.jobs_stream();
    let Ok(jobs) = js.get_stream(&name).await else {
        return Ok(0);
    };
    let info = jobs
        .get_info()
        .await
        .map_err(|e| QueueError::new(format!("read stream {name}"), e))?;
    if info.state.messages == 0 {
        return Ok(0);
    }
    let Ok(consumer) = jobs.consumer_info(crate::worker::CONSUMER).await else {
        return Ok(0);
    };
    if consumer.num_pending > 0 || consumer.num_ack_pending > 0 {
        return Ok(0);
    }
    let limit = consumer.config.max_deliver;
    let mut given_up = 0;
    let mut seq = info.state.first_sequence;
    let subject = queue.jobs_subject();
    while let Ok(m) = jobs
        .raw_message_builder()
        .sequence(seq)
        .next_by_subject(subject.clone())
        .send()
        .await
    {
        seq = m.sequence + 1;
        let Some(line) = nats::line_in(queue, &m.headers) else {
            continue;
        };
        let result = undeliverable_result(line, &m.payload, limit);
        let headers = nats::with_id(&queue.job_id(line));
        js.publish_with_headers(queue.results_subject(), headers, result)
            .await
            .map_err(|e| QueueError::new("publish a max_deliveries result", e))?
            .await
            .map_err(|e| QueueError::new("publish a max_deliveries result", e))?;
        jobs.delete_message(m.sequence)
            .await
            .map_err(|e| QueueError::new("remove an undeliverable job", e))?;
        given_up += 1;
    }
    Ok(given_up)
}

/// The result line of a job that ran out of deliveries: the job's id, method and URL when its
/// line says them, `ok: false`, and an error of kind `max_deliveries`.
fn undeliverable_result(line: u64, job: &[u8], limit: i64) -> Bytes {
    use serde_json::Value;
    let text = String::from_utf8_lossy(job);
    let (id, method, url) = match serde_json::from_str::<Value>(&text) {
        Ok(j) if j.is_object() => (
            j.get("id").or_else(|| j.get("custom_id")).cloned(),
            j.get("method").cloned().unwrap_or_else(|| "GET".into()),
            j.get("url").cloned(),
        ),
        // A `--urls` line.
        _ => (None, "GET".into(), Some(Value::from(text.trim()))),
    };
    let result = serde_json::json!({
        "line": line,
        "id": id,
        "method": method,
        "url": url,
        "ok": false,
        "status": null,
        "attempts": 0,
        "error": {
            "kind": "max_deliveries",
            "message": format!("delivered to workers {limit} times without a result (each took it and stopped answering); not tried again"),
        },
    });
    Bytes::from(result.to_string())
}

/// The input lines the run's results stream holds a result for (for `submit --resume`).
pub async fn lines_with_results(queue: &QueueUrl) -> Result<Done, QueueError> {
    let js = nats::connect(queue).await?;
    let stream = results_stream(&js, queue).await?;
    let mut done = Done::default();
    let info = stream
        .get_info()
        .await
        .map_err(|e| QueueError::new("read the results stream", e))?;
    if info.state.messages == 0 {
        return Ok(done);
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            headers_only: true,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| QueueError::new("read the results stream", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| QueueError::new("read the results stream", e))?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| QueueError::new("read the results stream", e))?;
        if let Some(n) = nats::line_of(queue, &m) {
            done.insert(n);
        }
        let left = m.info().map(|i| i.pending).unwrap_or(0);
        if left == 0 {
            break;
        }
    }
    Ok(done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_and_whole_ones_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        for (before, after) in [
            ("", ""),
            ("{\"line\":1}\n", "{\"line\":1}\n"),
            ("{\"line\":1}\n{\"li", "{\"line\":1}\n"),
            ("{\"li", ""),
        ] {
            std::fs::write(&p, before).unwrap();
            repair_torn_end(&p).unwrap();
            assert_eq!(std::fs::read_to_string(&p).unwrap(), after, "{before:?}");
        }
        let long = format!("{{\"line\":1}}\n{}", "x".repeat(200_000));
        std::fs::write(&p, long).unwrap();
        repair_torn_end(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"line\":1}\n");
        repair_torn_end(&dir.path().join("absent")).unwrap();
    }
}

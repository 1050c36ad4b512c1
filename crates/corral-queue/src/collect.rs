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
//!
//! Only what was submitted counts: a result is written only for a line the run's record names
//! (see [`crate::record`]), when it reads as a result line for that line, signed with the
//! fleet's key when there is one; anything else is dropped and counted as rejected. One
//! collector per run: a second is refused ([`QueueErrorKind::Busy`]) while the first holds
//! its lease on the board, which it renews every [`RENEW`]; a collector killed -9 loses it
//! after [`LEASE`], or at once to one started on the same machine once its process is gone.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use corral_engine::sink::Done;
use futures::StreamExt;

use crate::board::{host_name, unix_ns, Board};
use crate::error::{QueueError, QueueErrorKind};
use crate::nats;
use crate::record::RunInfo;
use crate::sign::Purpose;
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
    /// Result messages refused: for a line the run does not have, not a result line, or
    /// (with a key) not signed with it.
    pub rejected: u64,
}

/// Progress of a collection, for a progress bar: lines in the file, and jobs submitted.
pub trait CollectProgress: Send {
    /// Called after each synced batch.
    fn collected(&mut self, done: u64, submitted: u64);
}

impl CollectProgress for () {
    fn collected(&mut self, _: u64, _: u64) {}
}

/// Collects the run's results into `out` until every submitted job (the run's record, read
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
    let lease = Lease::take(&board).await?;
    let result = collect_leased(queue, out, progress, &js, &board, consumer, &lease).await;
    lease.end(&board).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn collect_leased(
    queue: &QueueUrl,
    out: &Path,
    progress: &mut dyn CollectProgress,
    js: &jetstream::Context,
    board: &Board,
    consumer: jetstream::consumer::PullConsumer,
    lease: &Lease,
) -> Result<CollectReport, QueueError> {
    let mut outage = nats::Outage::default();
    let mut info = board
        .run(queue.run(), queue.key())
        .await?
        .unwrap_or_default();
    let file_err = |e: std::io::Error| QueueError::new(format!("write {}", out.display()), e);
    repair_torn_end(out).map_err(file_err)?;
    let mut done = Done::default();
    let mut failed = 0u64;
    // Lines already in the file; read again once the record says which lines count.
    let mut kept = Vec::new();
    if let Ok(f) = std::fs::File::open(out) {
        for l in BufReader::new(f).lines() {
            let l = l.map_err(file_err)?;
            if let Some(n) = nats::line_of_result(&l) {
                kept.push((n, ok(l.as_bytes())));
            }
        }
    }
    let mut count_kept = |info: &RunInfo, done: &mut Done, failed: &mut u64| {
        kept.retain(|&(n, good)| {
            if !info.lines.contains(n) {
                return true;
            }
            if done.insert(n) && !good {
                *failed += 1;
            }
            false
        });
    };
    count_kept(&info, &mut done, &mut failed);
    let mut file = corral_engine::files::open(OpenOptions::new().create(true).append(true), out)
        .map_err(file_err)?;
    let mut report = CollectReport::default();
    progress.collected(done.len(), info.jobs);
    while info.jobs == 0 || done.len() < info.jobs {
        lease.check()?;
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
            match check_result(queue, &info, &m) {
                Err(why) => {
                    report.rejected += 1;
                    tracing::warn!("refused a result message: {why}; it is dropped");
                }
                Ok((n, good)) if done.insert(n) => {
                    failed += u64::from(!good);
                    file.write_all(&m.payload).map_err(file_err)?;
                    file.write_all(b"\n").map_err(file_err)?;
                    report.written += 1;
                }
                Ok(_) => report.duplicates += 1,
            }
            taken.push(m);
        }
        if taken.is_empty() {
            // Nothing came: the run may have grown (a submit again), or jobs may be out of
            // deliveries.
            match board.run(queue.run(), queue.key()).await {
                Ok(Some(now)) => {
                    info = now;
                    count_kept(&info, &mut done, &mut failed);
                }
                Ok(None) => {}
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => outage.failed("read the board", e).await?,
            }
            match give_up_undeliverable(js, queue).await {
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
        progress.collected(done.len(), info.jobs);
        counts(board, done.len(), failed, report.rejected).await;
    }
    counts(board, done.len(), failed, report.rejected).await;
    progress.collected(done.len(), info.jobs);
    Ok(report)
}

/// The line a result message is for, and whether it says `"ok": true`, if the collector may
/// write it: one of the run's lines, signed with the fleet's key when it has one, and a JSON
/// object whose `line` is that line. `Err` says why not, naming nothing from the message.
fn check_result(
    queue: &QueueUrl,
    info: &RunInfo,
    m: &jetstream::Message,
) -> Result<(u64, bool), &'static str> {
    let line = nats::trusted_line(queue, &info.lines, Purpose::Result, m)?;
    match serde_json::from_slice::<serde_json::Value>(&m.payload) {
        Ok(v) if v.get("line").and_then(serde_json::Value::as_u64) == Some(line) => Ok((
            line,
            v.get("ok").and_then(serde_json::Value::as_bool) == Some(true),
        )),
        _ => Err("not a result line for its line"),
    }
}

/// The board key of the collector's lease.
const LEASE_KEY: &str = "collector";

/// A collector's lease not renewed for this long may be taken by another.
pub const LEASE: Duration = Duration::from_secs(10);

/// How often the collector renews its lease.
pub const RENEW: Duration = Duration::from_secs(2);

/// Who holds the lease: the board's `collector` value.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    /// This collection's own mark: two in one process are two holders.
    id: u64,
    at_ms: u64,
}

impl Holder {
    fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(unix_ns());
        Self {
            host: host_name(),
            pid: std::process::id(),
            id: h.finish(),
            at_ms: unix_ns() / 1_000_000,
        }
    }

    /// The value to store, stamped now.
    fn bytes(&mut self) -> Bytes {
        self.at_ms = unix_ns() / 1_000_000;
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Whether this holder may still be collecting, as `me` sees it: it renewed within
    /// [`LEASE`], and is not a process of `me`'s machine that is gone.
    fn holds(&self, me: &Holder) -> bool {
        if self.host == me.host && self.pid != me.pid && !process_alive(self.pid) {
            return false;
        }
        me.at_ms.saturating_sub(self.at_ms) < LEASE.as_millis() as u64
    }
}

/// Whether a process of this machine is alive (where that can be seen: `/proc`).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// The collector's lease, renewed by a task until [`Lease::end`].
struct Lease {
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the run's lease, or says who holds it.
    async fn take(board: &Board) -> Result<Lease, QueueError> {
        let kv = board.store().clone();
        let read = |e: &dyn std::fmt::Display| QueueError::new("read the collector's lease", e);
        let mut me = Holder::new();
        let revision = loop {
            let entry = kv.entry(LEASE_KEY).await.map_err(|e| read(&e))?;
            let value = me.bytes();
            let stored = match &entry {
                None => kv.create(LEASE_KEY, value).await.ok(),
                Some(e) => {
                    let holder = (e.operation == kv::Operation::Put)
                        .then(|| serde_json::from_slice::<Holder>(&e.value).ok())
                        .flatten();
                    if let Some(h) = holder.filter(|h| h.holds(&me)) {
                        return Err(QueueError::of(
                            QueueErrorKind::Busy,
                            "collect",
                            format!(
                                "another collector is collecting this run: host {}, pid {} (a collector that stops renewing its lease loses it after {} s)",
                                h.host,
                                h.pid,
                                LEASE.as_secs()
                            ),
                        ));
                    }
                    kv.update(LEASE_KEY, value, e.revision).await.ok()
                }
            };
            if let Some(revision) = stored {
                break revision;
            }
        };
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = lost.clone();
        let renew = tokio::spawn(async move {
            let mut revision = revision;
            loop {
                tokio::time::sleep(RENEW).await;
                match kv.update(LEASE_KEY, me.bytes(), revision).await {
                    Ok(r) => revision = r,
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    // The server is out of reach: try again at the next renewal.
                    Err(_) => {}
                }
            }
        });
        Ok(Lease { lost, renew })
    }

    /// `Err` once another collector took the lease (this one stopped renewing it for too
    /// long): this one must stop writing.
    fn check(&self) -> Result<(), QueueError> {
        if self.lost.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(QueueError::of(
                QueueErrorKind::Busy,
                "collect",
                "another collector took this run's lease",
            ));
        }
        Ok(())
    }

    /// Stops renewing, and gives the lease up.
    async fn end(self, board: &Board) {
        self.renew.abort();
        if !self.lost.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = board.store().delete(LEASE_KEY).await;
        }
    }
}

/// Cuts a last line without its newline (a collector killed while writing it): its result
/// was not acked, so it comes again and is written whole.
fn repair_torn_end(out: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match corral_engine::files::open(OpenOptions::new().read(true).write(true), out) {
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
async fn counts(board: &Board, done: u64, failed: u64, rejected: u64) {
    let kv = board.store();
    if rejected > 0 {
        let _ = kv
            .put(REJECTED_RESULTS, Bytes::from(rejected.to_string()))
            .await;
    }
    let _ = kv
        .put("collected.done", Bytes::from(done.to_string()))
        .await;
    let _ = kv
        .put("collected.failed", Bytes::from(failed.to_string()))
        .await;
}

/// The board's count of result messages the collector refused.
pub(crate) const REJECTED_RESULTS: &str = "collected.rejected";

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
        let headers =
            nats::signed_headers(queue, Purpose::Result, line, queue.job_id(line), &result);
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

/// The result line of a job that ran out of deliveries: the job's id, method and URL (redacted)
/// when its line says them, `ok: false`, and an error of kind `max_deliveries` that says the
/// request may have been sent (`maybe_sent`): each worker that took it may have sent it before
/// it stopped answering, so `attempts` is the deliveries, never 0.
fn undeliverable_result(line: u64, job: &[u8], limit: i64) -> Bytes {
    use serde_json::Value;
    let text = String::from_utf8_lossy(job);
    let (id, method, url) = match serde_json::from_str::<Value>(&text) {
        Ok(j) if j.is_object() => (
            j.get("id").or_else(|| j.get("custom_id")).cloned(),
            j.get("method").cloned().unwrap_or_else(|| "GET".into()),
            j.get("url")
                .and_then(Value::as_str)
                .map(|u| Value::from(corral_engine::redact::url_text(u))),
        ),
        // A `--urls` line.
        _ => (
            None,
            "GET".into(),
            Some(Value::from(corral_engine::redact::url_text(text.trim()))),
        ),
    };
    let result = serde_json::json!({
        "line": line,
        "id": id,
        "method": method,
        "url": url,
        "ok": false,
        "status": null,
        "attempts": limit.max(1),
        "error": {
            "kind": "max_deliveries",
            "message": format!("delivered to workers {limit} times without a result (each took it and stopped answering, and may have sent it); not tried again"),
            "maybe_sent": true,
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

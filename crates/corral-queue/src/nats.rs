//! What the worker and the collector both do with the server: connect, open a durable
//! consumer, and read which input line a message or a result line belongs to.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::error::QueueError;
use crate::record::Lines;
use crate::sign::{Purpose, HEADER};
use crate::url::QueueUrl;

/// A JetStream context on the queue's server.
pub(crate) async fn connect(queue: &QueueUrl) -> Result<jetstream::Context, QueueError> {
    Ok(jetstream::new(queue.client().await?))
}

/// Keeps a worker or the collector going through a server outage (a restart, a partition):
/// each failure in a row waits a little longer (100 ms, doubling up to 2 s), and once failures
/// have gone on for [`OUTAGE`](crate::worker::OUTAGE) the last one is returned.
#[derive(Default)]
pub(crate) struct Outage {
    since: Option<tokio::time::Instant>,
    wait: Duration,
}

impl Outage {
    /// `what` failed with `e`: waits, then `Ok` to try again; `Err` once the outage is too long.
    pub(crate) async fn failed(
        &mut self,
        what: &str,
        e: impl std::fmt::Display,
    ) -> Result<(), QueueError> {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= crate::worker::OUTAGE {
            return Err(QueueError::new(what, e));
        }
        tracing::warn!(error = %e, "{what}: trying again");
        self.wait = (self.wait * 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
        tokio::time::sleep(self.wait).await;
        Ok(())
    }

    /// Something worked: the next failure starts a new outage.
    pub(crate) fn over(&mut self) {
        self.since = None;
        self.wait = Duration::ZERO;
    }
}

/// Does `setup` (connect, open streams) through an [`Outage`]: a worker or collector started
/// while the server is down or restarting waits for it instead of exiting; one refused by the
/// server (credentials, permissions, TLS) stops at once.
pub(crate) async fn patiently<T, F, Fut>(mut setup: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let mut outage = Outage::default();
    loop {
        match setup().await {
            Ok(t) => return Ok(t),
            // A refusal, a bad file or a forgery is not mended by waiting.
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => outage.failed("reach the queue's server", e).await?,
        }
    }
}

/// The durable pull consumer `name` of `stream`, acked message by message; `ack_wait`: how
/// long a message may stay unacked before it is delivered again (the server's default if
/// `None`).
pub(crate) async fn durable(
    stream: &stream::Stream,
    name: &str,
    ack_wait: Option<Duration>,
) -> Result<consumer::PullConsumer, QueueError> {
    let mut config = consumer::pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    };
    if let Some(wait) = ack_wait {
        config.ack_wait = wait;
    }
    stream
        .get_or_create_consumer(name, config)
        .await
        .map_err(|e| QueueError::new(format!("open consumer {name}"), e))
}

/// The input line a message of the run is for, from its `Nats-Msg-Id`.
pub(crate) fn line_of(queue: &QueueUrl, message: &jetstream::Message) -> Option<u64> {
    line_in(queue, message.headers.as_ref()?)
}

/// The input line a message's headers name, from its `Nats-Msg-Id`.
pub(crate) fn line_in(queue: &QueueUrl, headers: &async_nats::HeaderMap) -> Option<u64> {
    let id = headers.get(async_nats::header::NATS_MESSAGE_ID)?;
    queue.line_of(id.as_str())
}

/// Headers giving a message the `Nats-Msg-Id` `id`, by which the server drops a repeat.
pub(crate) fn with_id(id: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    headers
}

/// The headers of `queue`'s message for `line` with the `Nats-Msg-Id` `id`, signed as
/// `purpose` when the queue has a key. A signed message's id ends with part of its signature:
/// whoever lacks the key cannot publish a message under a real one's id ahead of it (the
/// server would drop the real one as a repeat); the same line and text still get the same id.
pub(crate) fn signed_headers(
    queue: &QueueUrl,
    purpose: Purpose,
    line: u64,
    id: String,
    payload: &[u8],
) -> async_nats::HeaderMap {
    let Some(key) = queue.key() else {
        return with_id(&id);
    };
    let sig = key.sign(purpose, queue.run(), line, payload);
    let mut headers = with_id(&format!("{id}:s{}", sig.get(..16).unwrap_or(&sig)));
    headers.insert(HEADER, sig.as_str());
    headers
}

/// The input line a message of `queue` is for, if it may be believed: one of the run's
/// `lines`, and signed as `purpose` when the queue has a key. `Err` says why not, naming
/// nothing from the message.
pub(crate) fn trusted_line(
    queue: &QueueUrl,
    lines: &Lines,
    purpose: Purpose,
    m: &jetstream::Message,
) -> Result<u64, &'static str> {
    let line = line_of(queue, m).ok_or("no line of this run's")?;
    if !lines.contains(line) {
        return Err("a line the run was not submitted with");
    }
    match queue.key() {
        Some(key)
            if !key.verify_headers(purpose, queue.run(), line, &m.payload, m.headers.as_ref()) =>
        {
            Err("not signed with the fleet's key")
        }
        _ => Ok(line),
    }
}

/// The input line a result line (the engine's JSON) is for.
pub(crate) fn line_of_result(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get("line")?
        .as_u64()
}

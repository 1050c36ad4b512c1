//! What the worker and the collector both do with the server: connect, open a durable
//! consumer, and read which input line a message or a result line belongs to.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::error::QueueError;
use crate::url::QueueUrl;

/// A JetStream context on the queue's server.
pub(crate) async fn connect(queue: &QueueUrl) -> Result<jetstream::Context, QueueError> {
    let client = async_nats::connect(queue.server())
        .await
        .map_err(|e| QueueError::new(format!("connect to {}", queue.server()), e))?;
    Ok(jetstream::new(client))
}

/// Does `setup` (connect, open streams) until it works or [`OUTAGE`](crate::worker::OUTAGE)
/// has passed: a worker or collector started while the server is down or restarting waits for
/// it instead of exiting.
pub(crate) async fn patiently<T, F, Fut>(mut setup: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let since = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match setup().await {
            Ok(t) => return Ok(t),
            Err(e) if since.elapsed() >= crate::worker::OUTAGE => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "the queue's server is out of reach; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
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
    let id = message
        .headers
        .as_ref()?
        .get(async_nats::header::NATS_MESSAGE_ID)?;
    queue.line_of(id.as_str())
}

/// The input line a result line (the engine's JSON) is for.
pub(crate) fn line_of_result(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get("line")?
        .as_u64()
}

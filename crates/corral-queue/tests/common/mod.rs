//! Helpers of the queue's tests: the nats-server fixture (from `corral_queue::testing`) and a
//! loopback HTTP server.
#![allow(dead_code)]

use std::time::Duration;

pub use corral_queue::testing::{NatsServer, Recorder, Reply};

/// A loopback HTTP server answering 200 after `latency`; returns it (its base URL and a count
/// of the requests it answered).
pub fn http_server(latency: Duration) -> Recorder {
    Recorder::start(latency, |_, _| Reply::Ok)
}

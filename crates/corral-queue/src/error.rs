//! How talking to the queue can fail.

/// A queue operation failed: which one, and the server's or the client's reason. Work already
/// acknowledged stays done; work not acknowledged is delivered again.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct QueueError {
    what: String,
    message: String,
}

impl QueueError {
    pub(crate) fn new(what: impl Into<String>, message: impl ToString) -> Self {
        Self {
            what: what.into(),
            message: message.to_string(),
        }
    }

    /// What was being done (`connect to 127.0.0.1:4222`, `create stream CORRAL_r_JOBS`, ...).
    pub fn what(&self) -> &str {
        &self.what
    }
}

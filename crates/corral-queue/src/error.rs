//! How talking to the queue can fail.

/// What kind of failure a [`QueueError`] is: what a caller decides on (an exit code, whether
/// to wait and try again), never the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueErrorKind {
    /// The server refused the credentials (or none were given where it wants some), or
    /// denied the operation to this user.
    Auth,
    /// TLS could not be set up (a certificate file, or the handshake).
    Tls,
    /// A credentials file, key file or certificate could not be read.
    Config,
    /// The server could not be reached (down, restarting, no route).
    Unreachable,
    /// What is on the server was not written by a holder of the run's key (a missing or
    /// wrong signature), or contradicts the run as submitted.
    Forged,
    /// Another process already does this (a second collector of one run).
    Busy,
    /// The run on the server was written by another version of corral (its board format
    /// differs): run one version throughout a fleet.
    Version,
    /// Any other failure of an operation on the server.
    Server,
}

/// A queue operation failed: which one, what kind of failure, and the server's or the
/// client's reason (which names no secret). Work already acknowledged stays done; work not
/// acknowledged is delivered again.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct QueueError {
    what: String,
    kind: QueueErrorKind,
    message: String,
}

impl QueueError {
    pub(crate) fn new(what: impl Into<String>, message: impl ToString) -> Self {
        Self::of(QueueErrorKind::Server, what, message)
    }

    pub(crate) fn of(
        kind: QueueErrorKind,
        what: impl Into<String>,
        message: impl ToString,
    ) -> Self {
        Self {
            what: what.into(),
            kind,
            message: message.to_string(),
        }
    }

    /// What was being done (`connect to 127.0.0.1:4222`, `create stream CORRAL_r_JOBS`, ...).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> QueueErrorKind {
        self.kind
    }

    /// Whether waiting can mend it (a server restarting): not a refusal, a bad file or a
    /// forgery, which stay what they are.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            QueueErrorKind::Unreachable | QueueErrorKind::Server
        )
    }
}

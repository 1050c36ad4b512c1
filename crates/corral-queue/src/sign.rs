//! Signed jobs, results and run records: HMAC-SHA256 with a key every member of the fleet
//! holds (`CORRAL_QUEUE_KEY` or `--queue-key-file`), so that a message published by anyone
//! else who can reach the server — a forged job, a forged result, rewritten options — is
//! refused instead of believed.
//!
//! What is signed says what it is for, which run and which line (`corral-job`, run, line,
//! payload), so a job's signature cannot pass for a result's, nor a line of one run for
//! another's or another line's. The key itself never goes to the server: the run's record
//! holds only its fingerprint, an HMAC of a fixed text, which tells a worker given the wrong
//! key why it refuses. HMAC from `ring`, which the NATS client's TLS already brings.

use std::path::Path;

use ring::hmac;

use crate::error::{QueueError, QueueErrorKind};

/// The environment variable holding the queue key when `--queue-key-file` is not given.
pub const KEY_ENV: &str = "CORRAL_QUEUE_KEY";

/// The message header that carries a signature (hex).
pub const HEADER: &str = "Corral-Signature";

/// The shortest key accepted, in bytes.
pub const MIN_KEY: usize = 16;

/// What a signature is for: part of what is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A job message (`submit` → workers).
    Job,
    /// A result message (workers, or the collector's `max_deliveries` → the collector).
    Result,
    /// The run's record on the board (`submit` → workers and the collector).
    Run,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Job => b"corral-job",
            Purpose::Result => b"corral-result",
            Purpose::Run => b"corral-run",
        }
    }
}

/// The fleet's shared key; see the [module docs](self). `Debug` shows only its fingerprint.
#[derive(Clone)]
pub struct QueueKey {
    key: hmac::Key,
    fingerprint: String,
}

impl std::fmt::Debug for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueueKey({})", self.fingerprint)
    }
}

impl PartialEq for QueueKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for QueueKey {}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl QueueKey {
    /// A key from its secret bytes; `Err` when shorter than [`MIN_KEY`].
    pub fn new(secret: &[u8]) -> Result<Self, QueueError> {
        if secret.len() < MIN_KEY {
            return Err(QueueError::of(
                QueueErrorKind::Config,
                "the queue key",
                format!("must be at least {MIN_KEY} bytes (make one with `openssl rand -hex 32`)"),
            ));
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, b"corral queue key fingerprint");
        let fingerprint = hex(&tag.as_ref()[..8]);
        Ok(Self { key, fingerprint })
    }

    /// The key of `--queue-key-file FILE` if given (its content, trimmed), else of
    /// `CORRAL_QUEUE_KEY`; `None` when neither is set.
    pub fn from_file_or_env(file: Option<&Path>) -> Result<Option<Self>, QueueError> {
        if let Some(path) = file {
            let text =
                corral_engine::files::read_option("--queue-key-file", path).map_err(|e| {
                    QueueError::of(
                        QueueErrorKind::Config,
                        format!("read --queue-key-file {}", path.display()),
                        e,
                    )
                })?;
            return Self::new(text.trim_ascii()).map(Some);
        }
        match std::env::var(KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => Self::new(v.trim().as_bytes()).map(Some),
            _ => Ok(None),
        }
    }

    /// A short, non-secret name of the key (16 hex digits), stored on the board in its stead.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// What is signed: purpose, run, line and payload, separated by NUL (none of the first
    /// three holds one).
    fn message(purpose: Purpose, run: &str, line: u64, payload: &[u8]) -> Vec<u8> {
        let line = line.to_string();
        let mut m = Vec::with_capacity(payload.len() + run.len() + 40);
        for part in [
            purpose.tag(),
            b"\0",
            run.as_bytes(),
            b"\0",
            line.as_bytes(),
            b"\0",
            payload,
        ] {
            m.extend_from_slice(part);
        }
        m
    }

    /// The signature (hex) of `payload` as `purpose` for `run`'s line `line` (0 for the run's
    /// record).
    pub(crate) fn sign(&self, purpose: Purpose, run: &str, line: u64, payload: &[u8]) -> String {
        hex(hmac::sign(&self.key, &Self::message(purpose, run, line, payload)).as_ref())
    }

    /// Whether `signature` (hex) is this key's for that payload; compared in constant time.
    pub(crate) fn verify(
        &self,
        purpose: Purpose,
        run: &str,
        line: u64,
        payload: &[u8],
        signature: &str,
    ) -> bool {
        let Some(sig) = unhex(signature) else {
            return false;
        };
        hmac::verify(&self.key, &Self::message(purpose, run, line, payload), &sig).is_ok()
    }

    /// Whether a message's headers carry this key's signature of it.
    pub(crate) fn verify_headers(
        &self,
        purpose: Purpose,
        run: &str,
        line: u64,
        payload: &[u8],
        headers: Option<&async_nats::HeaderMap>,
    ) -> bool {
        headers
            .and_then(|h| h.get(HEADER))
            .is_some_and(|sig| self.verify(purpose, run, line, payload, sig.as_str()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_purpose_run_line_and_payload_only() {
        let k = QueueKey::new(b"0123456789abcdef-key").unwrap();
        let sig = k.sign(Purpose::Job, "r", 7, b"{\"url\":\"http://a/\"}");
        assert!(k.verify(Purpose::Job, "r", 7, b"{\"url\":\"http://a/\"}", &sig));
        assert!(!k.verify(Purpose::Result, "r", 7, b"{\"url\":\"http://a/\"}", &sig));
        assert!(!k.verify(Purpose::Job, "r2", 7, b"{\"url\":\"http://a/\"}", &sig));
        assert!(!k.verify(Purpose::Job, "r", 8, b"{\"url\":\"http://a/\"}", &sig));
        assert!(!k.verify(Purpose::Job, "r", 7, b"{\"url\":\"http://b/\"}", &sig));
        assert!(!k.verify(Purpose::Job, "r", 7, b"{\"url\":\"http://a/\"}", "zz"));
        let other = QueueKey::new(b"another key, long enough").unwrap();
        assert!(!other.verify(Purpose::Job, "r", 7, b"{\"url\":\"http://a/\"}", &sig));
        assert_ne!(k.fingerprint(), other.fingerprint());
        assert_eq!(k.fingerprint().len(), 16);
        assert!(!format!("{k:?}").contains("0123456789abcdef"));
        assert!(QueueKey::new(b"short").is_err());
    }
}

//! The run's board: one KV bucket holding what a run's workers share besides its jobs and
//! results.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `options` | the run as submitted ([`RunInfo`]: its board format, options, job count and lines), signed when the fleet has a key; a process reads only its own format | submit |
//! | `collector` | the lease of the run's one collector: its host, pid and when it last renewed | the collector |
//! | `submitted` | jobs submitted, all submits together | submit |
//! | `resumes` | how many `submit --resume` ran (each republishes under new ids) | submit |
//! | `rate.HOST` | the host's shared rate schedule: its next free send time (unix ns) | workers, by compare-and-swap |
//! | `cost.HOST` | the host's shared cost schedule: its theoretical arrival time (unix ns) | workers, by compare-and-swap |
//! | `pause.HOST` | a `Retry-After` pause of the host: until when (unix ms) | the worker that got it |
//! | `breaker.HOST` | the host's breaker is open until then (unix ms); deleted once a probe succeeds | workers |
//! | `probe.HOST` | the one worker probing the host after its cool-down (claimed by create) | workers |
//! | `worker.ID` | a worker's heartbeat: when (unix ms) and its counters (JSON) | each worker |
//!
//! Why KV: every write gets a revision, so compare-and-swap makes the shared rate exact
//! across the fleet, and a watch tells every worker of a pause or an opening as it is
//! written. Times in it are wall-clock (unix), so the workers' clocks must agree (NTP) to
//! within a small part of the rate's spacing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::error::{QueueError, QueueErrorKind};
use crate::record::RunInfo;
use crate::sign::{Purpose, QueueKey};
use crate::url::QueueUrl;

/// The board's `options` value: the run's record as JSON text, with its signature.
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    /// [`RunInfo`] as JSON: the exact text signed.
    signed: String,
    /// The fingerprint of the key that signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The signature (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

/// The run's KV bucket; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Board {
    kv: kv::Store,
}

impl Board {
    /// Opens the run's bucket, creating it (on disk) if it does not exist.
    pub async fn open(js: &jetstream::Context, queue: &QueueUrl) -> Result<Self, QueueError> {
        let bucket = queue.bucket();
        let kv = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| QueueError::new(format!("create bucket {bucket}"), e))?,
        };
        Ok(Self { kv })
    }

    /// Opens the run's bucket if it exists (`None` when it does not: never submitted, or
    /// purged), creating nothing: for readers such as `status`.
    pub async fn existing(js: &jetstream::Context, queue: &QueueUrl) -> Option<Self> {
        js.get_key_value(queue.bucket())
            .await
            .ok()
            .map(|kv| Self { kv })
    }

    /// The bucket, for the shared host state.
    pub(crate) fn store(&self) -> &kv::Store {
        &self.kv
    }

    /// Stores the run as submitted (the workers and the collector read it first), signed
    /// with `key` if given: the record holds the key's fingerprint, never the key.
    pub async fn set_run(
        &self,
        run: &str,
        info: &RunInfo,
        key: Option<&QueueKey>,
    ) -> Result<(), QueueError> {
        let signed = serde_json::to_string(info)
            .map_err(|e| QueueError::new("store the run's options", e))?;
        let envelope = Envelope {
            key: key.map(|k| k.fingerprint().to_string()),
            sig: key.map(|k| k.sign(Purpose::Run, run, 0, signed.as_bytes())),
            signed,
        };
        let json = serde_json::to_vec(&envelope)
            .map_err(|e| QueueError::new("store the run's options", e))?;
        self.kv
            .put("options", Bytes::from(json))
            .await
            .map(drop)
            .map_err(|e| QueueError::new("store the run's options", e))
    }

    /// The run as submitted, once a submit has stored it. With `key`, only a record signed
    /// with it is believed; without, a signed record is refused too (this process could not
    /// check what it is given): both are [`QueueErrorKind::Forged`].
    pub async fn run(
        &self,
        run: &str,
        key: Option<&QueueKey>,
    ) -> Result<Option<RunInfo>, QueueError> {
        let Some(value) = self
            .kv
            .get("options")
            .await
            .map_err(|e| QueueError::new("read the run's options", e))?
        else {
            return Ok(None);
        };
        let forged = |why: String| {
            Err(QueueError::of(
                QueueErrorKind::Forged,
                "read the run's options",
                why,
            ))
        };
        let Ok(envelope) = serde_json::from_slice::<Envelope>(&value) else {
            return forged("the board's record of the run cannot be read (written by another version of corral, or by hand)".into());
        };
        match (key, &envelope.key, &envelope.sig) {
            (None, Some(fp), _) => {
                return forged(format!(
                    "the run is signed (key {fp}): give this process the fleet's key ({} or --queue-key-file)",
                    crate::sign::KEY_ENV
                ))
            }
            (Some(k), None, _) | (Some(k), _, None) => {
                return forged(format!(
                    "the run's options are not signed, and this process has a key ({}): they were not stored by `corral submit` with it",
                    k.fingerprint()
                ))
            }
            (Some(k), Some(fp), Some(sig)) => {
                if fp != k.fingerprint() {
                    return forged(format!("the run is signed with another key ({fp}; this process has {})", k.fingerprint()));
                }
                if !k.verify(Purpose::Run, run, 0, envelope.signed.as_bytes(), sig) {
                    return forged("the run's options do not match their signature: rewritten on the server".into());
                }
            }
            (None, None, _) => {}
        }
        RunInfo::from_json(&envelope.signed).map(Some)
    }

    /// Records that the run has at least `n` jobs (a submit's count of its input: submitting
    /// the same file again, or resuming it, does not count its jobs twice).
    pub async fn raise_submitted(&self, n: u64) -> Result<u64, QueueError> {
        self.change("submitted", |old| old.max(n)).await
    }

    /// Jobs submitted so far (0 before the first submit).
    pub async fn submitted(&self) -> Result<u64, QueueError> {
        self.number("submitted").await
    }

    /// Counts one more `submit --resume` and returns its number (1 for the first).
    pub async fn next_resume(&self) -> Result<u64, QueueError> {
        self.change("resumes", |old| old.saturating_add(1)).await
    }

    /// The number under `key` (0 when absent or unreadable).
    pub(crate) async fn number(&self, key: &str) -> Result<u64, QueueError> {
        let v = self
            .kv
            .get(key)
            .await
            .map_err(|e| QueueError::new(format!("read {key}"), e))?;
        Ok(
            v.and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok())
                .unwrap_or(0),
        )
    }

    /// Changes the number under `key` (0 when absent) to `f` of it by compare-and-swap, again
    /// until no other writer came between, and returns the new one. `f` may be called more
    /// than once.
    pub(crate) async fn change(
        &self,
        key: &str,
        f: impl Fn(u64) -> u64,
    ) -> Result<u64, QueueError> {
        loop {
            let entry = self
                .kv
                .entry(key)
                .await
                .map_err(|e| QueueError::new(format!("read {key}"), e))?;
            let (old, revision) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0u64),
                    Some(e.revision),
                ),
                Some(e) => (0, Some(e.revision)),
                None => (0, None),
            };
            let new = f(old);
            if new == old && revision.is_some() {
                return Ok(old);
            }
            let value = Bytes::from(new.to_string());
            let stored = match revision {
                Some(r) => self.kv.update(key, value, r).await.is_ok(),
                None => self.kv.create(key, value).await.is_ok(),
            };
            if stored {
                return Ok(new);
            }
        }
    }
}

/// A board value that says when (unix ms) and who wrote it — a pause's or a breaker's end, a
/// probe claim's start — kept as `MS WORKER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// When (unix ms).
    pub(crate) ms: u64,
    /// The worker that wrote it (empty when the value names none).
    pub(crate) by: String,
}

impl Stamp {
    pub(crate) fn new(ms: u64, by: &str) -> Self {
        Self {
            ms,
            by: by.to_string(),
        }
    }

    /// The value to store.
    pub(crate) fn bytes(&self) -> Bytes {
        Bytes::from(format!("{} {}", self.ms, self.by))
    }

    /// A stored value read back; `None` when it holds no time.
    pub(crate) fn read(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut words = text.split_whitespace();
        let ms = words.next()?.parse().ok()?;
        Some(Self::new(ms, words.next().unwrap_or("")))
    }

    /// How long until then from `now_ms`, if it is still ahead.
    pub(crate) fn ahead_of(&self, now_ms: u64) -> Option<u64> {
        self.ms.checked_sub(now_ms).filter(|&d| d > 0)
    }
}

/// A host (`host:port`) as a KV key token: characters a key cannot hold become `=XX`.
pub(crate) fn host_token(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    for b in host.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The host a key token stands for.
pub(crate) fn token_host(token: &str) -> Option<String> {
    unescape(token, b'=')
}

/// `text` with each `MARK` followed by two hex digits replaced by that byte (`=3A` in a key
/// token, `%40` in an address's credentials); `None` when an escape is cut short or the
/// result is not UTF-8.
pub(crate) fn unescape(text: &str, mark: u8) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == mark {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// This machine's name (`/etc/hostname`), for the names of workers and collectors on the board.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Now, in nanoseconds since the unix epoch.
pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The local clock's instant for a wall-clock time (unix ns).
pub(crate) fn instant_of(unix: u64) -> tokio::time::Instant {
    let now_unix = unix_ns();
    let now = tokio::time::Instant::now();
    if unix >= now_unix {
        now + Duration::from_nanos(unix - now_unix)
    } else {
        now.checked_sub(Duration::from_nanos(now_unix - unix))
            .unwrap_or(now)
    }
}

/// The wall-clock time (unix ns) of a local instant.
pub(crate) fn unix_of(at: tokio::time::Instant) -> u64 {
    let now = tokio::time::Instant::now();
    let now_unix = unix_ns();
    if at >= now {
        now_unix.saturating_add(u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX))
    } else {
        now_unix.saturating_sub(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_tokens_round_trip_and_are_valid_keys() {
        for host in [
            "127.0.0.1:8080",
            "[::1]:443",
            "api.example.com:443",
            "a_b-c:1",
        ] {
            let t = host_token(host);
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)));
            assert_eq!(token_host(&t).unwrap(), host);
        }
        assert_eq!(host_token("h:80"), "h=3A80");
        assert_eq!(token_host("h=3"), None);
    }

    #[test]
    fn stamps_read_back_what_was_stored() {
        let s = Stamp::new(1_700_000_000_123, "vm-42");
        assert_eq!(Stamp::read(&s.bytes()), Some(s.clone()));
        assert_eq!(s.ahead_of(1_700_000_000_000), Some(123));
        assert_eq!(s.ahead_of(1_700_000_000_123), None);
        assert_eq!(Stamp::read(b"17").unwrap().by, "");
        assert_eq!(Stamp::read(b"x vm"), None);
    }

    #[test]
    fn wall_clock_and_local_instants_convert_both_ways() {
        let at = tokio::time::Instant::now() + Duration::from_secs(2);
        let back = instant_of(unix_of(at));
        let off = if back > at { back - at } else { at - back };
        assert!(off < Duration::from_millis(50), "{off:?}");
    }
}

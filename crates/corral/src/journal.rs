//! Durable state for actors (and anything else): a snapshot plus an append-only log.
//!
//! An actor that must survive restarts appends each change to its [`Journal`] *before*
//! acknowledging it, and rebuilds its state on start from [`Journal::open`]'s [`Recovered`]:
//! the last snapshot, then every entry logged after it. [`Journal::snapshot`] writes the whole
//! state and empties the log, so recovery time stays bounded.
//!
//! Durability is the [`Fsync`] policy's: with [`Fsync::Always`] an acknowledged append survives
//! a power loss; the others trade that window for speed. A crash of the *process* (or a killed
//! actor) loses nothing already appended, whatever the policy.
//!
//! Format: each log record is `length (u32 LE) | FNV-1a 64 of the payload (u64 LE) | payload`.
//! A crash mid-append leaves a short or mismatching last record; `open` drops it, truncates the
//! log to the last good record and says so ([`Recovered::repaired_bytes`]). A snapshot is
//! written to a temporary file, synced, and renamed over the old one, so it is never torn.
//!
//! Why our own rather than a database crate: actors need exactly "snapshot + log + replay" with
//! a clear fsync contract and no background threads; this is 200 lines with no dependency.
//!
//! ```
//! use corral::journal::{Fsync, Journal};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let dir = std::env::temp_dir().join(format!("corral-journal-doc-{}", std::process::id()));
//! let (journal, recovered) = Journal::open(&dir, Fsync::Always)?;
//! assert!(recovered.entries.is_empty());
//! journal.append(b"set a=1".to_vec()).await?;
//! drop(journal);
//! let (_journal, recovered) = Journal::open(&dir, Fsync::Always)?;
//! assert_eq!(recovered.entries, vec![b"set a=1".to_vec()]);
//! # std::fs::remove_dir_all(&dir)
//! # }
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// When appends reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every append is synced before it returns (survives power loss).
    Always,
    /// Sync every `n` appends.
    EveryN(u32),
    /// Sync when this long has passed since the last sync.
    Interval(Duration),
    /// Never sync explicitly (the OS decides); survives process crashes only.
    Never,
}

/// What `open` found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The last snapshot, if any.
    pub snapshot: Option<Vec<u8>>,
    /// Entries appended after it, in order.
    pub entries: Vec<Vec<u8>>,
    /// Bytes of a torn or corrupt log tail that were cut off.
    pub repaired_bytes: u64,
}

struct Inner {
    dir: PathBuf,
    log: File,
    policy: Fsync,
    unsynced: u32,
    last_sync: Instant,
}

/// A snapshot plus append-only log in one directory. Cheap to clone; clones share the files.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Journal")
            .field("dir", &inner.dir)
            .field("policy", &inner.policy)
            .finish()
    }
}

const HEADER: usize = 12;
const MAX_RECORD: u32 = 256 * 1024 * 1024;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and reads back what it holds. Blocking
    /// file I/O: call it where that is acceptable (an actor factory, start-up).
    pub fn open(dir: impl AsRef<Path>, policy: Fsync) -> io::Result<(Journal, Recovered)> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let snapshot = match fs::read(dir.join("snapshot")) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let log_path = dir.join("log");
        let mut bytes = Vec::new();
        match File::open(&log_path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut entries = Vec::new();
        let mut pos = 0usize;
        while bytes.len() - pos >= HEADER {
            let len =
                u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]);
            let mut sum = [0u8; 8];
            sum.copy_from_slice(&bytes[pos + 4..pos + HEADER]);
            let start = pos + HEADER;
            let Some(end) = start
                .checked_add(len as usize)
                .filter(|e| *e <= bytes.len() && len <= MAX_RECORD)
            else {
                break;
            };
            if fnv1a(&bytes[start..end]) != u64::from_le_bytes(sum) {
                break;
            }
            entries.push(bytes[start..end].to_vec());
            pos = end;
        }
        let repaired_bytes = (bytes.len() - pos) as u64;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        if repaired_bytes > 0 {
            log.set_len(pos as u64)?;
            log.sync_all()?;
        }
        let journal = Journal {
            inner: Arc::new(Mutex::new(Inner {
                dir,
                log,
                policy,
                unsynced: 0,
                last_sync: Instant::now(),
            })),
        };
        Ok((
            journal,
            Recovered {
                snapshot,
                entries,
                repaired_bytes,
            },
        ))
    }

    /// Appends one entry; returns once it is written (and synced, as the policy says).
    pub async fn append(&self, entry: Vec<u8>) -> io::Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let len = u32::try_from(entry.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "journal entry larger than 256 MiB",
                    )
                })?;
            let mut record = Vec::with_capacity(HEADER + entry.len());
            record.extend_from_slice(&len.to_le_bytes());
            record.extend_from_slice(&fnv1a(&entry).to_le_bytes());
            record.extend_from_slice(&entry);
            let mut g = inner.lock().unwrap_or_else(PoisonError::into_inner);
            g.log.write_all(&record)?;
            g.unsynced += 1;
            let due = match g.policy {
                Fsync::Always => true,
                Fsync::EveryN(n) => g.unsynced >= n.max(1),
                Fsync::Interval(d) => g.last_sync.elapsed() >= d,
                Fsync::Never => false,
            };
            if due {
                g.log.sync_data()?;
                g.unsynced = 0;
                g.last_sync = Instant::now();
            }
            Ok(())
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Replaces the snapshot with `state` and empties the log (the snapshot must include every
    /// entry appended so far).
    pub async fn snapshot(&self, state: Vec<u8>) -> io::Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let g = inner.lock().unwrap_or_else(PoisonError::into_inner);
            let tmp = g.dir.join("snapshot.tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(&state)?;
            f.sync_all()?;
            fs::rename(&tmp, g.dir.join("snapshot"))?;
            sync_dir(&g.dir)?;
            g.log.set_len(0)?;
            g.log.sync_all()
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }
}

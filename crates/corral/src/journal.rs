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
//! Snapshots and logs carry a generation: snapshot `g` is followed by log `log.g` (the first
//! log, before any snapshot, is `log`). A snapshot starts the next log *before* its rename, and
//! the rename is the one moment the journal moves on; the old log is deleted afterwards. A
//! crash between the rename and that deletion therefore leaves an old log that `open` ignores
//! (and removes) instead of replaying entries the snapshot already holds — which would count an
//! increment twice.
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
    /// The generation of the snapshot in force, which names the log being appended to.
    generation: u64,
    policy: Fsync,
    unsynced: u32,
    last_sync: Instant,
}

impl Inner {
    /// Syncs the log's data and starts the policy's count again.
    fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()?;
        self.unsynced = 0;
        self.last_sync = Instant::now();
        Ok(())
    }
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
/// The first bytes of a snapshot written with its generation. A snapshot without them was
/// written before generations existed and is generation 0.
const SNAPSHOT_MAGIC: &[u8; 8] = b"CRLSNAP1";

/// The log that follows snapshot `generation`.
fn log_name(generation: u64) -> String {
    if generation == 0 {
        "log".to_string()
    } else {
        format!("log.{generation}")
    }
}

/// The generation of a log file's name, if it is one.
fn log_generation(name: &str) -> Option<u64> {
    match name {
        "log" => Some(0),
        _ => name.strip_prefix("log.")?.parse().ok(),
    }
}

/// Splits a snapshot file into its generation and the state.
fn split_snapshot(mut bytes: Vec<u8>) -> (u64, Vec<u8>) {
    let head = SNAPSHOT_MAGIC.len() + 8;
    if bytes.len() >= head && bytes.starts_with(SNAPSHOT_MAGIC) {
        let mut g = [0u8; 8];
        g.copy_from_slice(&bytes[SNAPSHOT_MAGIC.len()..head]);
        bytes.drain(..head);
        (u64::from_le_bytes(g), bytes)
    } else {
        (0, bytes)
    }
}

/// Test-only fault injection: make the next snapshot stop right after its rename, as a kill
/// at that moment would.
#[cfg(test)]
static CRASH_AFTER_RENAME: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

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
        let (generation, snapshot) = match fs::read(dir.join("snapshot")) {
            Ok(b) => {
                let (g, state) = split_snapshot(b);
                (g, Some(state))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, None),
            Err(e) => return Err(e),
        };
        // Logs of other generations are left over from a snapshot that crashed: an older one
        // is already folded into the snapshot, a newer one was started by a snapshot whose
        // rename never happened (and is empty). Neither is replayed.
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if log_generation(&name.to_string_lossy()).is_some_and(|g| g != generation) {
                fs::remove_file(entry.path())?;
            }
        }
        let log_path = dir.join(log_name(generation));
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
                generation,
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
                g.sync()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Syncs every entry appended so far to the disk now, whatever the [`Fsync`] policy: for
    /// a caller that batches appends and must know they are durable before it acknowledges
    /// them (a checkpoint, a shutdown).
    pub async fn sync(&self) -> io::Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.lock().unwrap_or_else(PoisonError::into_inner).sync()
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Replaces the snapshot with `state` and starts an empty log (the snapshot must include
    /// every entry appended so far). Safe against a crash at any point: see the
    /// [module docs](self).
    pub async fn snapshot(&self, state: Vec<u8>) -> io::Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = inner.lock().unwrap_or_else(PoisonError::into_inner);
            let next = g.generation + 1;
            // The next log exists (empty, synced) before the snapshot that points to it.
            let next_log = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(g.dir.join(log_name(next)))?;
            next_log.sync_all()?;
            let tmp = g.dir.join("snapshot.tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(SNAPSHOT_MAGIC)?;
            f.write_all(&next.to_le_bytes())?;
            f.write_all(&state)?;
            f.sync_all()?;
            fs::rename(&tmp, g.dir.join("snapshot"))?;
            // Committed: from here on the old log is ignored by `open`, so appends go to the
            // new one at once, before anything else can fail. (Only this handle writes the
            // file, so writing from its start is appending.)
            let old = g.dir.join(log_name(g.generation));
            g.log = next_log;
            g.generation = next;
            g.unsynced = 0;
            sync_dir(&g.dir)?;
            #[cfg(test)]
            if CRASH_AFTER_RENAME.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(io::Error::other("simulated crash after the rename"));
            }
            fs::remove_file(old)?;
            sync_dir(&g.dir)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("corral-journal-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// A kill between the snapshot's rename and the old log's removal: the snapshot holds the
    /// counter's increments, the old log still holds them too. Replaying them would double the
    /// counter.
    #[tokio::test]
    async fn a_crash_after_the_snapshot_rename_does_not_replay_folded_entries() {
        let d = dir("crash-after-rename");
        let (j, _) = Journal::open(&d, Fsync::Always).unwrap();
        let mut counter = 0u64;
        for _ in 0..3 {
            j.append(b"+1".to_vec()).await.unwrap();
            counter += 1;
        }
        CRASH_AFTER_RENAME.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(j.snapshot(counter.to_le_bytes().to_vec()).await.is_err());
        // The snapshot is committed even though its cleanup failed: what is appended now
        // belongs after it, in the new log.
        j.append(b"+1".to_vec()).await.unwrap();
        drop(j);
        assert!(d.join("log").exists(), "the crash left the old log behind");

        let (j, r) = Journal::open(&d, Fsync::Always).unwrap();
        let mut state = [0u8; 8];
        state.copy_from_slice(r.snapshot.as_deref().unwrap());
        let replayed = u64::from_le_bytes(state) + r.entries.len() as u64;
        assert_eq!(
            replayed, 4,
            "entries already in the snapshot were replayed, or one was lost"
        );
        assert!(!d.join("log").exists(), "open removes the stale log");

        // The journal goes on from there: a new entry, another snapshot, another reopen.
        j.append(b"+1".to_vec()).await.unwrap();
        drop(j);
        let (j, r) = Journal::open(&d, Fsync::Always).unwrap();
        assert_eq!(r.entries, vec![b"+1".to_vec(), b"+1".to_vec()]);
        j.snapshot(5u64.to_le_bytes().to_vec()).await.unwrap();
        drop(j);
        let (_, r) = Journal::open(&d, Fsync::Always).unwrap();
        assert_eq!(r.snapshot.as_deref(), Some(&5u64.to_le_bytes()[..]));
        assert!(r.entries.is_empty());
        let logs = fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                log_generation(&e.as_ref().unwrap().file_name().to_string_lossy()).is_some()
            })
            .count();
        assert_eq!(logs, 1, "one log per journal");
        fs::remove_dir_all(&d).unwrap();
    }

    /// A crash after the next log was started but before the rename: the old snapshot and its
    /// log are still the truth.
    #[tokio::test]
    async fn a_crash_before_the_rename_keeps_the_old_log() {
        let d = dir("crash-before-rename");
        let (j, _) = Journal::open(&d, Fsync::Always).unwrap();
        j.append(b"a".to_vec()).await.unwrap();
        drop(j);
        File::create(d.join(log_name(1))).unwrap();
        fs::write(d.join("snapshot.tmp"), b"half written").unwrap();
        let (_, r) = Journal::open(&d, Fsync::Always).unwrap();
        assert!(r.snapshot.is_none());
        assert_eq!(r.entries, vec![b"a".to_vec()]);
        assert!(!d.join(log_name(1)).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_snapshot_from_before_generations_reads_as_generation_0() {
        assert_eq!(
            split_snapshot(b"raw state".to_vec()),
            (0, b"raw state".to_vec())
        );
        let mut v = SNAPSHOT_MAGIC.to_vec();
        v.extend_from_slice(&7u64.to_le_bytes());
        v.extend_from_slice(b"s");
        assert_eq!(split_snapshot(v), (7, b"s".to_vec()));
        assert_eq!(log_generation("log"), Some(0));
        assert_eq!(log_generation("log.12"), Some(12));
        assert_eq!(log_generation("snapshot"), None);
    }
}

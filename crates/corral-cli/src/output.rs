//! The results file: resume scanning, torn-line repair, and a batched, fsync-bounded writer.
//!
//! Each result line carries the job's input `line` number; that is what resume uses to know
//! which jobs are done (a bitset: 10 million jobs cost 1.25 MB). Results are appended in whole
//! lines through a [`corral::batch::Batcher`]; a crash can only leave the *last* line torn, and
//! resume cuts it off. `fsync` runs at most once per `fsync_interval` and at the end, so a
//! power loss costs at most that interval of results — which resume then simply re-runs.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::batch::{Batch, BatchReport, BatchSender, Batcher};

/// Input line numbers already present in the results.
#[derive(Debug, Default, Clone)]
pub struct Done {
    bits: Vec<u64>,
    count: u64,
}

impl Done {
    pub fn insert(&mut self, line: u64) -> bool {
        let (w, b) = ((line / 64) as usize, line % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        let new = self.bits[w] & (1 << b) == 0;
        self.bits[w] |= 1 << b;
        self.count += u64::from(new);
        new
    }
    pub fn contains(&self, line: u64) -> bool {
        self.bits
            .get((line / 64) as usize)
            .is_some_and(|w| w & (1 << (line % 64)) != 0)
    }
    pub fn len(&self) -> u64 {
        self.count
    }
}

/// What to do with an existing results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse to touch a non-empty file.
    Refuse,
    /// Keep it, skip the jobs it holds, append the rest.
    Resume,
    /// Truncate it.
    Overwrite,
}

/// The result of scanning a results file for resume.
#[derive(Debug, Default)]
pub struct Resumed {
    pub done: Done,
    /// Bytes of a torn last line that were cut off.
    pub repaired_bytes: u64,
    /// Duplicate result lines found (each job should be there once; reported, not fatal).
    pub duplicates: u64,
}

#[derive(serde::Deserialize)]
struct LineOnly {
    line: u64,
}

/// Opens `path` for appending results as `existing` says. Returns the file and what it held.
pub fn open(path: &Path, existing: Existing) -> Result<(File, Resumed), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).ok();
    let non_empty = meta.as_ref().is_some_and(|m| m.len() > 0);
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(format!("{shown} is a directory"));
    }
    if non_empty && existing == Existing::Refuse {
        return Err(format!(
            "{shown} already holds results; pass --resume to skip the jobs it has and run the rest, \
             or --overwrite to start over"
        ));
    }
    let mut resumed = Resumed::default();
    if non_empty && existing == Existing::Resume {
        resumed = scan_and_repair(path)?;
    }
    let mut opts = OpenOptions::new();
    opts.create(true);
    if existing == Existing::Overwrite {
        opts.write(true).truncate(true);
    } else {
        opts.append(true);
    }
    let file = opts
        .open(path)
        .map_err(|e| format!("cannot open {shown} for writing: {e}"))?;
    Ok((file, resumed))
}

fn scan_and_repair(path: &Path) -> Result<Resumed, String> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut reader = BufReader::new(file);
    let mut resumed = Resumed::default();
    let mut good_end = 0u64;
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if read == 0 {
            break;
        }
        n += 1;
        if buf.last() != Some(&b'\n') {
            // A torn last line from a crash mid-write: its job was not recorded; cut it off.
            resumed.repaired_bytes = read as u64;
            break;
        }
        match serde_json::from_slice::<LineOnly>(&buf) {
            Ok(l) => {
                if !resumed.done.insert(l.line) {
                    resumed.duplicates += 1;
                }
            }
            Err(e) => {
                return Err(format!(
                    "{shown}:{n} is not a corral result line ({e}); refusing to resume from a file \
                     corral did not write"
                ))
            }
        }
        good_end += read as u64;
    }
    if resumed.repaired_bytes > 0 {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot repair {shown}: {e}"))?;
        f.set_len(good_end)
            .map_err(|e| format!("cannot repair {shown}: {e}"))?;
        f.sync_all()
            .map_err(|e| format!("cannot repair {shown}: {e}"))?;
    }
    Ok(resumed)
}

/// Where results go.
pub enum Sink {
    File { file: File, path: PathBuf },
    Stdout,
}

/// A batched results writer. The first write error stops the run (see [`Writer::failed`]).
pub struct Writer {
    batcher: Batcher<String, std::io::Error>,
    failed: Arc<Mutex<Option<String>>>,
}

impl Writer {
    pub fn start(sink: Sink, fsync_interval: Duration) -> Result<Self, String> {
        let failed: Arc<Mutex<Option<String>>> = Arc::default();
        let f = failed.clone();
        let state = Arc::new(Mutex::new((sink, Instant::now())));
        let batcher = Batcher::builder()
            .max_size(512)
            .max_delay(Duration::from_millis(200))
            .queue_capacity(1024)
            .build(move |batch: Batch<String>| {
                let state = state.clone();
                let failed = f.clone();
                async move {
                    let r = tokio::task::spawn_blocking(move || {
                        write_batch(&state, batch, fsync_interval)
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                    if let Err(e) = &r {
                        let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert_with(|| format!("cannot write results: {e}"));
                    }
                    r
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self { batcher, failed })
    }

    pub fn sender(&self) -> BatchSender<String> {
        self.batcher.sender()
    }

    /// The first write error, if any.
    pub fn failed(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Flushes everything and syncs the file.
    pub async fn close(self) -> Result<BatchReport<std::io::Error>, String> {
        let report = self.batcher.close().await.map_err(|e| e.to_string())?;
        match report.failures.first() {
            Some(f) => Err(format!("cannot write results: {}", f.error)),
            None => Ok(report),
        }
    }
}

fn write_batch(
    state: &Mutex<(Sink, Instant)>,
    batch: Batch<String>,
    fsync_interval: Duration,
) -> std::io::Result<()> {
    let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
    let (sink, last_sync) = &mut *guard;
    let mut buf = Vec::with_capacity(batch.items().iter().map(|l| l.len() + 1).sum());
    for line in batch.items() {
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    let closing = batch.reason() == corral::batch::FlushReason::Close;
    match sink {
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)?;
            out.flush()
        }
        Sink::File { file, path } => {
            // One write of whole lines; a crash can tear only the last one.
            file.write_all(&buf)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            if closing || last_sync.elapsed() >= fsync_interval {
                file.sync_data()?;
                *last_sync = Instant::now();
            }
            let _ = file.seek(SeekFrom::End(0));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_repairs_a_torn_line_and_refuses_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(
            &p,
            "{\"line\":1}\n{\"line\":3}\n{\"line\":3}\n{\"line\":4,\"url\":\"htt",
        )
        .unwrap();
        assert!(open(&p, Existing::Refuse).unwrap_err().contains("--resume"));
        let (_f, r) = open(&p, Existing::Resume).unwrap();
        assert_eq!((r.done.len(), r.duplicates), (2, 1));
        assert!(
            r.done.contains(1) && r.done.contains(3) && !r.done.contains(4) && !r.done.contains(2)
        );
        assert_eq!(r.repaired_bytes, "{\"line\":4,\"url\":\"htt".len() as u64);
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .ends_with("{\"line\":3}\n"));

        std::fs::write(&p, "hello\n").unwrap();
        assert!(open(&p, Existing::Resume)
            .unwrap_err()
            .contains("not a corral result"));
        let (_f, r) = open(&p, Existing::Overwrite).unwrap();
        assert_eq!(r.done.len(), 0);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    }

    #[test]
    fn done_is_a_bitset() {
        let mut d = Done::default();
        assert!(d.insert(10_000_000));
        assert!(!d.insert(10_000_000));
        assert!(d.contains(10_000_000) && !d.contains(9_999_999));
        assert!(d.bits.len() * 8 < 1_300_000);
    }
}

//! The intents journal: no request that may not be repeated is sent again after a crash.
//!
//! Why: results are fsynced in batches, so a POST in flight when the process is killed has no
//! result, and `--resume` used to send it again (five POSTs in flight at `kill -9` were each
//! sent twice, their results saying `attempts 1`). Before a request that may not be repeated
//! (a POST or PATCH without `Idempotency-Key`, unless `--retry-unsafe`) goes out, its line
//! number is appended to `RESULTS.intents` and fsynced: requests waiting meanwhile share the
//! next fsync (a group commit, so the cost is one `fdatasync` per batch, paid only by such
//! requests). On `--resume`, a line the journal names and the results file does not is not
//! run: its result says `interrupted`, `maybe_sent: true`. `--retry-failed interrupted` sends
//! those again, when the user says the repeat is safe.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::error::SinkError;
use crate::sink::Done;

/// Where the intents of the run writing `results` are journaled.
pub fn path(results: &Path) -> PathBuf {
    let mut name = results.file_name().unwrap_or_default().to_os_string();
    name.push(".intents");
    results.with_file_name(name)
}

/// A run's intents journal, and the lines an earlier run may have sent without a result.
pub struct Intents {
    /// The writer thread's inbox, started at the first intent (most runs send no POST: a
    /// thread started at every start-up cost ~0.3 M instructions for nothing).
    to_writer: std::sync::OnceLock<mpsc::Sender<Intent>>,
    /// The journal, until the writer takes it.
    file: std::sync::Mutex<Option<File>>,
    interrupted: HashSet<u64>,
    path: PathBuf,
}

/// One line to journal, and who waits for its fsync.
type Intent = (u64, tokio::sync::oneshot::Sender<Result<(), io::ErrorKind>>);

impl std::fmt::Debug for Intents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intents")
            .field("path", &self.path)
            .field("interrupted", &self.interrupted.len())
            .finish()
    }
}

impl Intents {
    /// The journal beside `results`. A new run (`resumed` is `None`) starts it empty. A
    /// resumed run keeps it, and the lines it names that have no result in `resumed` (nor
    /// were taken out to run again) are [`Intents::interrupted`], unless `resend`
    /// (`--retry-failed interrupted`).
    pub fn open(
        results: &Path,
        resumed: Option<(&Done, &Done)>,
        resend: bool,
    ) -> Result<Self, SinkError> {
        let path = path(results);
        let err = |what: &'static str| SinkError::io(what, &path);
        let mut interrupted = HashSet::new();
        match resumed {
            None => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err("empty the intents journal")(e)),
            },
            Some((done, again)) => {
                if let Some(lines) = read(&path).map_err(err("read the intents journal"))? {
                    interrupted = lines
                        .into_iter()
                        .filter(|n| !resend && !done.contains(*n) && !again.contains(*n))
                        .collect();
                }
            }
        }
        let file = crate::files::open(OpenOptions::new().create(true).append(true), &path)
            .map_err(err("open the intents journal"))?;
        Ok(Self {
            to_writer: std::sync::OnceLock::new(),
            file: std::sync::Mutex::new(Some(file)),
            interrupted,
            path,
        })
    }

    /// The writer's inbox, its thread started on first use.
    fn writer(&self) -> io::Result<&mpsc::Sender<Intent>> {
        if let Some(tx) = self.to_writer.get() {
            return Ok(tx);
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = file.take() {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("corral-intents".into())
                .spawn(move || write(f, rx))?;
            let _ = self.to_writer.set(tx);
        }
        self.to_writer
            .get()
            .ok_or_else(|| io::Error::other("the writer of the intents journal did not start"))
    }

    /// The journal's file.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// True when `line` may have been sent by an earlier run that ended without its result.
    pub fn interrupted(&self, line: u64) -> bool {
        !self.interrupted.is_empty() && self.interrupted.contains(&line)
    }

    /// How many lines an earlier run may have sent without a result.
    pub fn interrupted_count(&self) -> usize {
        self.interrupted.len()
    }

    /// Journals that `line`'s request is about to go out, and returns once that is on disk.
    /// Cancel safe: dropped, the line may still be journaled (a resume then says it was
    /// interrupted, which is the safe side).
    pub async fn record(&self, line: u64) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || io::Error::other("the writer of the intents journal stopped");
        self.writer()?.send((line, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?.map_err(io::Error::from)
    }
}

/// The writer: every intent waiting is written, then one `fdatasync` for them all.
fn write(file: File, intents: mpsc::Receiver<Intent>) {
    let mut out = io::BufWriter::new(file);
    let mut batch = Vec::new();
    while let Ok(first) = intents.recv() {
        batch.push(first);
        batch.extend(intents.try_iter());
        let mut digits = itoa::Buffer::new();
        let written = batch
            .iter()
            .try_for_each(|(line, _)| {
                out.write_all(digits.format(*line).as_bytes())?;
                out.write_all(b"\n")
            })
            .and_then(|()| out.flush())
            .and_then(|()| out.get_ref().sync_data());
        let answer = written.map_err(|e| e.kind());
        for (_, waiter) in batch.drain(..) {
            let _ = waiter.send(answer);
        }
    }
}

/// The line numbers a journal holds; `None` when there is none. A line that is not a number
/// (a torn last line, a foreign file) is skipped: the journal only ever makes a resume send
/// less.
fn read(path: &Path) -> io::Result<Option<Vec<u64>>> {
    let file = match crate::files::open(OpenOptions::new().read(true), path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        // A last line without its newline was torn by a crash mid-write: its number may be
        // cut short ("1" of "12"), and its request had not gone (the fsync comes first).
        if reader.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            break;
        }
        if let Some(n) = std::str::from_utf8(&line)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            lines.push(n);
        }
    }
    Ok(Some(lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(lines: &[u64]) -> Done {
        let mut d = Done::default();
        for l in lines {
            d.insert(*l);
        }
        d
    }

    #[tokio::test]
    async fn journaled_lines_without_a_result_are_interrupted_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("out.jsonl");
        let j = Intents::open(&results, None, false).unwrap();
        for line in [3, 5, 9, 12] {
            j.record(line).await.unwrap();
        }
        drop(j);
        std::fs::OpenOptions::new()
            .append(true)
            .open(path(&results))
            .unwrap()
            .write_all(b"1")
            .unwrap(); // a torn line: skipped
                       // 3 has a result, 12 was taken out to run again.
        let j = Intents::open(&results, Some((&done(&[3]), &done(&[12]))), false).unwrap();
        let mut got: Vec<u64> = (1..=12).filter(|l| j.interrupted(*l)).collect();
        got.sort();
        assert_eq!(got, [5, 9]);
        assert_eq!(j.interrupted_count(), 2);
        // The user says a repeat is safe.
        let j = Intents::open(&results, Some((&done(&[]), &done(&[]))), true).unwrap();
        assert_eq!(j.interrupted_count(), 0);
        // A new run starts the journal over.
        drop(j);
        let j = Intents::open(&results, None, false).unwrap();
        drop(j);
        let j = Intents::open(&results, Some((&done(&[]), &done(&[]))), false).unwrap();
        assert_eq!(j.interrupted_count(), 0);
    }

    #[tokio::test]
    async fn waiting_intents_share_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("out.jsonl");
        let j = std::sync::Arc::new(Intents::open(&results, None, false).unwrap());
        let all: Vec<_> = (1..=200)
            .map(|l| {
                let j = j.clone();
                tokio::spawn(async move { j.record(l).await })
            })
            .collect();
        for r in all {
            r.await.unwrap().unwrap();
        }
        let mut lines = read(&path(&results)).unwrap().unwrap();
        lines.sort();
        assert_eq!(lines, (1..=200).collect::<Vec<u64>>());
    }
}

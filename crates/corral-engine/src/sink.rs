//! The results file: resume scanning, torn-line repair, and a batched, fsync-bounded writer.
//!
//! Each result line carries the job's input `line` number; that is what resume uses to know
//! which jobs are done (a bitset: 10 million jobs cost 1.25 MB). Results are appended in whole
//! lines through a [`corral::batch::Batcher`]; a crash can only leave the *last* line torn, and
//! resume cuts it off. `fsync` runs at most once per `fsync_interval` and at the end, so a
//! power loss costs at most that interval of results — which resume then simply re-runs.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::batch::{Batch, BatchReport, BatchSender, Batcher};

use crate::error::{ConfigError, ErrorKind, SinkError};

/// Input line numbers already present in the results: a bitset in words of 64 lines, kept in a
/// map by word, so that memory follows the lines present, not the largest number: ~0.3 byte a
/// line when they are dense (10 million jobs: ~3 MB), ~20 bytes when each is alone (a corrupt
/// `{"line": 9223372036854775807}` costs one word, not an exabyte; a file of sparse numbers,
/// 4096 apart, cost a 512-byte block each with blocks of 4096 lines: 550 MB for 30 MB).
#[derive(Debug, Default, Clone)]
pub struct Done {
    words: HashMap<u64, u64>,
    count: u64,
}

impl Done {
    /// Marks `line` done; false if it was already.
    pub fn insert(&mut self, line: u64) -> bool {
        let word = self.words.entry(line / 64).or_insert(0);
        let bit = 1 << (line % 64);
        let new = *word & bit == 0;
        *word |= bit;
        self.count += u64::from(new);
        new
    }
    /// True when `line` is done.
    pub fn contains(&self, line: u64) -> bool {
        self.words
            .get(&(line / 64))
            .is_some_and(|w| w & (1 << (line % 64)) != 0)
    }
    /// Lines present.
    pub fn len(&self) -> u64 {
        self.count
    }
    /// No line present.
    pub fn is_empty(&self) -> bool {
        self.count == 0
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
    /// The input lines that have a result.
    pub done: Done,
    /// Bytes of a torn last line that were cut off.
    pub repaired_bytes: u64,
    /// Duplicate result lines found (each job should be there once; reported, not fatal).
    pub duplicates: u64,
    /// Lines that were not results of this input, set aside by `--repair`, and where they went.
    pub set_aside: Option<(u64, PathBuf)>,
    /// Failed results taken out for `--retry-failed` (their jobs run again), and where they
    /// went.
    pub retried: Option<(u64, PathBuf)>,
    /// The input lines of those results.
    pub again: Done,
    /// What the results of this input spent (theirs and those run again alike): the spend
    /// caps count it.
    pub spent: Spent,
}

/// Requests sent and costs spent by the jobs of a results file (its lines' `attempts` and
/// `cost`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Requests (attempts) sent.
    pub requests: u64,
    /// Job costs spent.
    pub cost: u64,
}

/// How to open the results file.
#[derive(Debug, Clone)]
pub struct OpenMode {
    /// What to do with a file that exists.
    pub existing: Existing,
    /// With [`Existing::Resume`]: move lines that are not results of this input into a side
    /// file instead of refusing.
    pub repair: bool,
    /// With [`Existing::Resume`]: run again the jobs whose result failed, of these kinds
    /// (`None`: any kind). Their old results move to [`retried_file`], so the file keeps one
    /// line per job, the newest.
    pub retry_failed: Option<RetryFailed>,
}

/// Which failed results `--retry-failed` runs again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryFailed {
    /// Only failures of these kinds; `None`: every failure but `interrupted`.
    pub kinds: Option<Vec<ErrorKind>>,
}

impl RetryFailed {
    /// `interrupted` is named: requests an earlier run may have sent go again.
    pub fn resends_interrupted(&self) -> bool {
        self.kinds
            .as_ref()
            .is_some_and(|k| k.contains(&ErrorKind::Interrupted))
    }
}

impl RetryFailed {
    /// Whether a failure of `kind` runs again. `interrupted` (a request that may have been
    /// sent, see [`crate::intents`]) only when named: a repeat may repeat its effect.
    fn wants(&self, kind: Option<&str>) -> bool {
        match (&self.kinds, kind) {
            (None, Some(k)) => k != ErrorKind::Interrupted.as_str(),
            (None, None) => true,
            (Some(kinds), Some(k)) => kinds.iter().any(|want| want.as_str() == k),
            (Some(_), None) => false,
        }
    }
}

/// What is known of the jobs input without reading it (a pipe can be read only once).
#[derive(Debug, Clone, Copy, Default)]
pub struct InputFacts {
    /// Device and inode of the input, to refuse writing results over it.
    pub identity: Option<(u64, u64)>,
    /// The input's last line number, for a regular file: result lines naming a later line are
    /// not results of this input.
    pub lines: Option<u64>,
}

/// An opened results file.
pub struct Opened {
    /// The file, locked, for appending.
    pub file: File,
    /// What it held (for `--resume`).
    pub resumed: Resumed,
    /// A regular file: locked for this run, and fsynced. Devices (`/dev/null`) and pipes are
    /// written as a stream: nothing to lock, scan or sync.
    pub regular: bool,
}

#[derive(serde::Deserialize)]
struct LineOnly {
    line: u64,
    #[serde(default = "yes")]
    ok: bool,
    #[serde(default)]
    attempts: u64,
    #[serde(default)]
    cost: u64,
    #[serde(default)]
    error: Option<KindOnly>,
}

#[derive(serde::Deserialize)]
struct KindOnly {
    kind: String,
}

fn yes() -> bool {
    true
}

/// Device and inode of an open file or a path (following links).
pub fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The lines of a jobs file, counted in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCount {
    /// Every line (the last one may lack its newline), as the job reader numbers them: the
    /// bound on the line numbers a results file may name.
    pub lines: u64,
    /// The lines that are not blank: the jobs, for a progress total.
    pub jobs: u64,
}

/// Counts the lines of a regular file (a pipe can be read only once: not this way).
pub fn count_lines(path: &Path) -> std::io::Result<LineCount> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut count = LineCount { lines: 0, jobs: 0 };
    // The current line: started (any byte), and not blank (any byte but white space).
    let (mut started, mut filled) = (false, false);
    loop {
        let read = f.read(&mut buf)?;
        if read == 0 {
            break;
        }
        // Line ends found by memchr, and a line's bytes looked at only until one is not
        // white space (the first, nearly always): the per-byte loop was ~300 instructions a
        // line of the run (callgrind).
        let data = &buf[..read];
        let mut start = 0;
        let tail = |part: &[u8], started: &mut bool, filled: &mut bool| {
            *started |= !part.is_empty();
            *filled = *filled || part.iter().any(|b| !b.is_ascii_whitespace());
        };
        for nl in memchr::memchr_iter(b'\n', data) {
            tail(&data[start..nl], &mut started, &mut filled);
            count.lines += 1;
            count.jobs += u64::from(filled);
            (started, filled) = (false, false);
            start = nl + 1;
        }
        tail(&data[start..], &mut started, &mut filled);
    }
    count.lines += u64::from(started);
    count.jobs += u64::from(filled);
    Ok(count)
}

/// Opens `path` for appending results as `mode` says, after checking that it is not the input
/// and taking an exclusive lock on it for the whole run (a second run on the same file is
/// refused, naming the holder's pid). Returns the file and what it held.
pub fn open(path: &Path, mode: OpenMode, input: InputFacts) -> Result<Opened, SinkError> {
    let meta = std::fs::metadata(path).ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(SinkError::Directory(path.to_path_buf()));
    }
    if let (Some(m), Some(id)) = (&meta, input.identity) {
        if identity(m) == id {
            return Err(SinkError::IsInput(path.to_path_buf()));
        }
    }
    let regular = meta.as_ref().is_none_or(|m| m.is_file());
    let refuse_non_empty = |len: u64| {
        if len > 0 && mode.existing == Existing::Refuse {
            Err(SinkError::NotEmpty(path.to_path_buf()))
        } else {
            Ok(())
        }
    };
    let file = crate::files::open(
        OpenOptions::new().create(true).read(true).append(true),
        path,
    )
    .map_err(SinkError::io("open for writing", path))?;
    if !regular {
        return Ok(Opened {
            file,
            resumed: Resumed::default(),
            regular,
        });
    }
    // Locked before anything else is looked at: another run may be writing it.
    lock(&file, path)?;
    let len = file.metadata().map_err(SinkError::io("read", path))?.len();
    refuse_non_empty(len)?;
    let mut resumed = Resumed::default();
    match mode.existing {
        Existing::Overwrite => file
            .set_len(0)
            .and_then(|()| file.sync_all())
            .map_err(SinkError::io("empty", path))?,
        Existing::Resume if len > 0 => {
            let scan = scan(path, input.lines, mode.retry_failed.as_ref())?;
            if let Some(first) = scan.bad.first() {
                if !mode.repair {
                    return Err(SinkError::BadLines {
                        path: path.to_path_buf(),
                        line: first.0,
                        why: first.1.clone(),
                        count: scan.bad.len(),
                        side: side_file(path),
                    });
                }
            }
            if !scan.bad.is_empty() || !scan.retry.is_empty() {
                set_aside(path, &scan)?;
                // The rewritten file is a new one: lock it before the old lock goes.
                let rewritten =
                    crate::files::open(OpenOptions::new().read(true).append(true), path)
                        .map_err(SinkError::io("open for writing", path))?;
                lock(&rewritten, path)?;
                drop(file);
                let mut resumed = scan.resumed;
                let moved = |n: usize, to: PathBuf| (n > 0).then_some((n as u64, to));
                resumed.set_aside = moved(scan.bad.len(), side_file(path));
                resumed.retried = moved(scan.retry.len(), retried_file(path));
                return Ok(Opened {
                    file: rewritten,
                    resumed,
                    regular,
                });
            }
            resumed = scan.resumed;
            if resumed.repaired_bytes > 0 {
                file.set_len(scan.good_end)
                    .and_then(|()| file.sync_all())
                    .map_err(SinkError::io("repair", path))?;
            }
        }
        _ => {}
    }
    Ok(Opened {
        file,
        resumed,
        regular,
    })
}

/// Where `--repair` puts the lines it takes out of `path`.
pub fn side_file(path: &Path) -> PathBuf {
    beside(path, ".rejected")
}

/// Where `--retry-failed` puts the failed results it takes out of `path` (their jobs run
/// again; the newest result replaces them in `path`).
pub fn retried_file(path: &Path) -> PathBuf {
    beside(path, ".retried")
}

/// `path` with `suffix` added to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Takes an exclusive lock on the results file for as long as `file` is open.
fn lock(file: &File, path: &Path) -> Result<(), SinkError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(SinkError::Locked {
            path: path.to_path_buf(),
            holder: file.metadata().ok().and_then(|m| lock_holder(&m)),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(SinkError::io("lock", path)(e)),
    }
}

/// The pid holding a lock on the file, from `/proc/locks` (Linux); `None` elsewhere.
fn lock_holder(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let dev = meta.dev();
    let (major, minor) = (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    );
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let i = f.iter().position(|x| *x == want)?;
        f.get(i.checked_sub(1)?)?.parse().ok()
    })
}

/// What a results file holds.
struct Scan {
    resumed: Resumed,
    /// Where the whole, good part of the file ends (a torn last line starts there).
    good_end: u64,
    /// Lines (1-based in the results file) that are not results of this input, and why.
    bad: Vec<(u64, String)>,
    /// Lines (1-based in the results file) of failed results `--retry-failed` runs again.
    retry: Vec<u64>,
}

fn scan(
    path: &Path,
    input_lines: Option<u64>,
    retry_failed: Option<&RetryFailed>,
) -> Result<Scan, SinkError> {
    let file = File::open(path).map_err(SinkError::io("read", path))?;
    let mut reader = BufReader::new(file);
    let mut scan = Scan {
        resumed: Resumed::default(),
        good_end: 0,
        bad: Vec::new(),
        retry: Vec::new(),
    };
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(SinkError::io("read", path))?;
        if read == 0 {
            break;
        }
        n += 1;
        if buf.last() != Some(&b'\n') {
            // A torn last line from a crash mid-write: its job was not recorded; cut it off.
            scan.resumed.repaired_bytes = read as u64;
            break;
        }
        scan.good_end += read as u64;
        let why = match serde_json::from_slice::<LineOnly>(&buf) {
            Err(e) => format!("not a corral result line ({e})"),
            Ok(l) if l.line == 0 => "names input line 0 (lines count from 1)".to_string(),
            Ok(l) if input_lines.is_some_and(|max| l.line > max) => format!(
                "names input line {}, but the jobs file has {} lines: not a result of this jobs file",
                l.line,
                input_lines.unwrap_or_default()
            ),
            Ok(l) => {
                let spent = &mut scan.resumed.spent;
                spent.requests = spent.requests.saturating_add(l.attempts);
                spent.cost = spent.cost.saturating_add(l.cost);
                let again = !l.ok
                    && retry_failed
                        .is_some_and(|r| r.wants(l.error.as_ref().map(|e| e.kind.as_str())));
                if again {
                    scan.retry.push(n);
                    scan.resumed.again.insert(l.line);
                } else if !scan.resumed.done.insert(l.line) {
                    scan.resumed.duplicates += 1;
                }
                continue;
            }
        };
        scan.bad.push((n, why));
    }
    Ok(scan)
}

/// `--repair` and `--retry-failed`: the bad lines of `path` are appended to its side file
/// ([`side_file`]), the failed results to be run again to [`retried_file`], and the rest
/// (without a torn tail) replaces `path` through a synced temporary file and a rename, so a
/// crash at any point leaves either the old file or the new one (the side files are synced
/// first: a line may then be in both, never in neither).
fn set_aside(path: &Path, scan: &Scan) -> Result<(), SinkError> {
    let err = |what: &'static str, e: std::io::Error| SinkError::io(what, path)(e);
    let bad: std::collections::HashSet<u64> = scan.bad.iter().map(|b| b.0).collect();
    let retry: std::collections::HashSet<u64> = scan.retry.iter().copied().collect();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".repair");
    let tmp = path.with_file_name(tmp_name);
    let side = side_file(path);
    let reader = BufReader::new(File::open(path).map_err(|e| err("read", e))?);
    let side_writer = |side: &Path, wanted: bool| -> Result<_, SinkError> {
        if !wanted {
            return Ok(None);
        }
        let f = crate::files::open(OpenOptions::new().create(true).append(true), side)
            .map_err(|e| err("write the side file of", e))?;
        Ok(Some(std::io::BufWriter::new(f)))
    };
    let mut rejected = side_writer(&side, !bad.is_empty())?;
    let mut retried = side_writer(&retried_file(path), !retry.is_empty())?;
    // A leftover of a crash, or a link planted there: removed (never followed), then made anew.
    let _ = std::fs::remove_file(&tmp);
    let mut good = std::io::BufWriter::new(
        crate::files::open(OpenOptions::new().write(true).create_new(true), &tmp)
            .map_err(|e| err("create a repaired copy of", e))?,
    );
    let mut taken = 0u64;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| err("read", e))?;
        let n = i as u64 + 1;
        let to = match (bad.contains(&n), retry.contains(&n)) {
            (true, _) => rejected.as_mut(),
            (_, true) => retried.as_mut(),
            _ => None,
        }
        .unwrap_or(&mut good);
        to.write_all(&line)
            .and_then(|()| to.write_all(b"\n"))
            .map_err(|e| err("write a repaired copy of", e))?;
        taken += line.len() as u64 + 1;
        if taken >= scan.good_end {
            break; // what follows is a torn tail
        }
    }
    let sync = |w: std::io::BufWriter<File>| -> std::io::Result<()> {
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    for side in [rejected, retried].into_iter().flatten() {
        sync(side).map_err(|e| err("write the side file of", e))?;
    }
    sync(good).map_err(|e| err("write a repaired copy of", e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("replace", e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Where results go.
pub enum Sink {
    /// A file: `sync` for a regular file (devices and pipes cannot be fsynced).
    File {
        /// The file, opened for appending (see [`open`]).
        file: File,
        /// Its path, for messages.
        path: PathBuf,
        /// fsync it (at most every fsync interval, and at the end).
        sync: bool,
    },
    /// Standard output.
    Stdout,
    /// Anywhere else: a store of one's own (a queue's results stream, a database).
    Lines(Box<dyn LineSink>),
}

/// Where result lines go when they go neither to a file nor to standard output: the seam for
/// other stores. Called on a blocking thread, one batch at a time, in order; the run counts a
/// batch as written once `write_lines` returned `Ok`, and stops at the first error.
pub trait LineSink: Send + 'static {
    /// Writes whole result lines (JSON, without their newline), in order.
    fn write_lines(&mut self, lines: &mut dyn Iterator<Item = &str>) -> std::io::Result<()>;
    /// Makes what was written durable: called at most every fsync interval, and at the end.
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One result line to write, with what the summary counts of it once it is written.
pub trait Line: Send + 'static {
    /// The JSON line, without its newline.
    fn text(&self) -> &str;
}

/// Called with each batch once it is in the results, so that what the summary counts is what
/// the file holds.
pub type OnWritten<T> = Box<dyn Fn(&[T]) + Send + Sync>;

/// A batched results writer. The first write error stops the run (see [`Writer::failed`]); the
/// file is cut back to its last whole batch and nothing more is written, so it holds exactly the
/// results that were counted, and `--resume` runs the rest.
pub struct Writer<T> {
    batcher: Batcher<T, std::io::Error>,
    failed: Arc<Mutex<Option<String>>>,
}

struct State {
    sink: Sink,
    last_sync: Instant,
    /// A write failed: nothing more is written.
    broken: bool,
}

impl<T: Line> Writer<T> {
    /// Starts the writer task: batches of lines into `sink`, fsynced at most every
    /// `fsync_interval`; `on_written` is told of each batch once it is written.
    pub fn start(
        sink: Sink,
        fsync_interval: Duration,
        on_written: OnWritten<T>,
    ) -> Result<Self, ConfigError> {
        let failed: Arc<Mutex<Option<String>>> = Arc::default();
        let f = failed.clone();
        let state = Arc::new(Mutex::new(State {
            sink,
            last_sync: Instant::now(),
            broken: false,
        }));
        let on_written = Arc::new(on_written);
        let batcher = Batcher::builder()
            .max_size(512)
            .max_delay(Duration::from_millis(200))
            .queue_capacity(1024)
            .build(move |batch: Batch<T>| {
                let state = state.clone();
                let failed = f.clone();
                let on_written = on_written.clone();
                async move {
                    let r = tokio::task::spawn_blocking(move || {
                        write_batch(&state, &batch, fsync_interval)?;
                        on_written(batch.items());
                        Ok(())
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
            .map_err(|e| ConfigError::from_corral("results writer", &e))?;
        Ok(Self { batcher, failed })
    }

    /// Where finished lines are pushed.
    pub fn sender(&self) -> BatchSender<T> {
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
    pub async fn close(self) -> Result<BatchReport<std::io::Error>, SinkError> {
        let report = self
            .batcher
            .close()
            .await
            .map_err(|e| SinkError::Write(std::io::Error::other(e.to_string())))?;
        match report.failures.first() {
            Some(f) => Err(SinkError::Write(std::io::Error::other(f.error.to_string()))),
            None => Ok(report),
        }
    }
}

fn write_batch<T: Line>(
    state: &Mutex<State>,
    batch: &Batch<T>,
    fsync_interval: Duration,
) -> std::io::Result<()> {
    let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
    let state = &mut *guard;
    if state.broken {
        return Err(std::io::Error::other("an earlier write failed"));
    }
    // Lines go out through a small buffer, not one copy of the whole batch (lines with saved
    // bodies are megabytes each).
    let write_lines = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, w);
        for line in batch.items() {
            w.write_all(line.text().as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()
    };
    let closing = batch.reason() == corral::batch::FlushReason::Close;
    let r = match &mut state.sink {
        Sink::Lines(sink) => {
            let mut r = sink.write_lines(&mut batch.items().iter().map(|l| l.text()));
            if r.is_ok() && (closing || state.last_sync.elapsed() >= fsync_interval) {
                r = sink.sync();
                state.last_sync = Instant::now();
            }
            r
        }
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            write_lines(&mut out)
        }
        Sink::File { file, path, sync } => {
            let start = if *sync {
                file.seek(SeekFrom::End(0))?
            } else {
                0
            };
            // Whole lines in order; a crash can tear only the last one.
            let mut r = write_lines(file);
            if r.is_ok() && *sync && (closing || state.last_sync.elapsed() >= fsync_interval) {
                r = file.sync_data();
                state.last_sync = Instant::now();
            }
            if r.is_err() && *sync {
                // Part of the batch may be in the file: cut it back to the last whole batch,
                // which the summary has counted.
                let _ = file.set_len(start).and_then(|()| file.sync_data());
            }
            r.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
    };
    state.broken = r.is_err();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(existing: Existing) -> OpenMode {
        OpenMode {
            existing,
            repair: false,
            retry_failed: None,
        }
    }

    fn resume(p: &Path, repair: bool, lines: Option<u64>) -> Result<Opened, SinkError> {
        let mode = OpenMode {
            existing: Existing::Resume,
            repair,
            retry_failed: None,
        };
        open(
            p,
            mode,
            InputFacts {
                identity: None,
                lines,
            },
        )
    }

    #[test]
    fn retry_failed_takes_the_failures_out_keeping_one_line_per_job() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let lines = [
            r#"{"line":1,"ok":true}"#,
            r#"{"line":2,"ok":false,"error":{"kind":"timeout"}}"#,
            r#"{"line":3,"ok":false,"error":{"kind":"http_status"}}"#,
            r#"{"line":4,"ok":false,"error":{"kind":"invalid_input"}}"#,
        ];
        let open_with = |kinds: Option<Vec<ErrorKind>>| {
            let mode = OpenMode {
                existing: Existing::Resume,
                repair: false,
                retry_failed: Some(RetryFailed { kinds }),
            };
            open(&p, mode, InputFacts::default()).unwrap()
        };
        // Only timeouts: line 2 runs again, the others stay.
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let r = open_with(Some(vec![ErrorKind::Timeout])).resumed;
        assert_eq!(r.retried, Some((1, retried_file(&p))));
        assert!(r.done.contains(1) && !r.done.contains(2) && r.done.contains(3));
        let kept = std::fs::read_to_string(&p).unwrap();
        assert_eq!(kept, [lines[0], lines[2], lines[3]].join("\n") + "\n");
        assert_eq!(
            std::fs::read_to_string(retried_file(&p)).unwrap(),
            format!("{}\n", lines[1])
        );
        // Every failure: lines 3 and 4 too; the side file keeps all that were taken out.
        let o = open_with(None);
        assert_eq!(o.resumed.retried.as_ref().map(|r| r.0), Some(2));
        assert_eq!(
            (o.resumed.done.len(), o.resumed.done.contains(1)),
            (1, true)
        );
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n", lines[0])
        );
        assert_eq!(
            std::fs::read_to_string(retried_file(&p))
                .unwrap()
                .lines()
                .count(),
            3
        );
        // The rewritten file is locked for the run like the old one.
        let again = open(&p, mode(Existing::Resume), InputFacts::default());
        assert!(
            matches!(again, Err(SinkError::Locked { .. })),
            "{:?}",
            again.err()
        );
        drop(o);
        // Nothing failed: nothing is rewritten.
        let r = open_with(None).resumed;
        assert_eq!(r.retried, None);
    }

    #[test]
    fn resume_repairs_a_torn_line_and_refuses_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(
            &p,
            "{\"line\":1}\n{\"line\":3}\n{\"line\":3}\n{\"line\":4,\"url\":\"htt",
        )
        .unwrap();
        let refused = open(&p, mode(Existing::Refuse), InputFacts::default());
        assert!(refused.err().unwrap().to_string().contains("--resume"));
        let r = resume(&p, false, None).unwrap().resumed;
        assert_eq!((r.done.len(), r.duplicates), (2, 1));
        assert!(
            r.done.contains(1) && r.done.contains(3) && !r.done.contains(4) && !r.done.contains(2)
        );
        assert_eq!(r.repaired_bytes, "{\"line\":4,\"url\":\"htt".len() as u64);
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .ends_with("{\"line\":3}\n"));

        std::fs::write(&p, "hello\n").unwrap();
        let e = resume(&p, false, None).err().unwrap().to_string();
        assert!(e.contains("out.jsonl:1: not a corral result"), "{e}");
        assert!(e.contains("--repair"), "{e}");
        let o = open(&p, mode(Existing::Overwrite), InputFacts::default()).unwrap();
        assert_eq!(o.resumed.done.len(), 0);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    }

    #[test]
    fn bad_lines_are_named_and_repair_sets_them_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let text = "{\"line\":1}\n{\"line\":9223372036854775807}\n{\"li\n{\"line\":0}\n{\"line\":2}\n{\"line\":3,\"u";
        std::fs::write(&p, text).unwrap();
        // No huge allocation, and the first bad line named with the input's bound.
        let e = resume(&p, false, Some(5)).err().unwrap().to_string();
        assert!(
            e.contains("out.jsonl:2: names input line 9223372036854775807"),
            "{e}"
        );
        assert!(
            e.contains("3 such line(s)") && e.contains("out.jsonl.rejected"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            text,
            "refusing changes nothing"
        );

        let o = resume(&p, true, Some(5)).unwrap();
        assert_eq!(o.resumed.done.len(), 2);
        assert!(o.resumed.done.contains(1) && o.resumed.done.contains(2));
        assert_eq!(o.resumed.set_aside.as_ref().map(|s| s.0), Some(3));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"line\":1}\n{\"line\":2}\n"
        );
        assert_eq!(
            std::fs::read_to_string(side_file(&p)).unwrap(),
            "{\"line\":9223372036854775807}\n{\"li\n{\"line\":0}\n"
        );
        // The repaired file is the one locked for the run.
        let again = open(&p, mode(Existing::Overwrite), InputFacts::default());
        assert!(again
            .err()
            .unwrap()
            .to_string()
            .contains("another corral run"));
    }

    #[test]
    fn a_locked_file_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let first = open(&p, mode(Existing::Refuse), InputFacts::default()).unwrap();
        assert!(first.regular);
        for existing in [Existing::Resume, Existing::Overwrite, Existing::Refuse] {
            let e = open(&p, mode(existing), InputFacts::default())
                .err()
                .unwrap()
                .to_string();
            let pid = format!("pid {}", std::process::id());
            assert!(e.contains("another corral run") && e.contains(&pid), "{e}");
        }
        drop(first);
        assert!(open(&p, mode(Existing::Refuse), InputFacts::default()).is_ok());
    }

    #[test]
    fn the_jobs_file_is_never_the_results_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("jobs.jsonl");
        std::fs::write(&p, "{\"url\":\"http://h/\"}\n").unwrap();
        let facts = InputFacts {
            identity: Some(identity(&std::fs::metadata(&p).unwrap())),
            lines: Some(1),
        };
        for existing in [Existing::Resume, Existing::Overwrite, Existing::Refuse] {
            let e = open(&p, mode(existing), facts).err().unwrap().to_string();
            assert!(e.contains("is the jobs file itself"), "{e}");
        }
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"url\":\"http://h/\"}\n"
        );
    }

    #[test]
    fn lines_are_counted_as_the_reader_numbers_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("jobs");
        for (text, lines, jobs) in [
            ("", 0, 0),
            ("a", 1, 1),
            ("a\n", 1, 1),
            ("a\n\nb", 3, 2),
            ("\n\n", 2, 0),
            ("a\n \t\nb\n  ", 4, 2),
            // Lines across the 1 MiB reads: white space, then a job's byte past the boundary.
            (&format!("{}x\n \n", " ".repeat((1 << 20) + 3)), 2, 1),
            (
                &format!("{}\n{}", " ".repeat((1 << 20) - 1), " ".repeat(9)),
                2,
                0,
            ),
            (
                &format!("{}\n{}y", "a".repeat((1 << 20) - 1), " ".repeat(9)),
                2,
                2,
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            assert_eq!(
                count_lines(&p).unwrap(),
                LineCount { lines, jobs },
                "{text:?}"
            );
        }
    }

    #[test]
    fn done_is_a_sparse_bitset() {
        let mut d = Done::default();
        assert!(d.insert(10_000_000));
        assert!(!d.insert(10_000_000));
        assert!(d.contains(10_000_000) && !d.contains(9_999_999));
        assert!(d.insert(u64::MAX) && d.contains(u64::MAX) && !d.contains(u64::MAX - 1));
        assert_eq!((d.len(), d.words.len()), (2, 2));
        // Dense lines share words; lines 4096 apart take one each, not a block each.
        for l in 0..4096 {
            d.insert(l);
        }
        assert_eq!(d.words.len(), 2 + 64);
        for l in 1..=1000 {
            d.insert(l * 4096 + 1_000_000_000);
        }
        assert_eq!(d.words.len(), 2 + 64 + 1000);
    }
}

//! Pattern: a file watcher feeding a pipeline (*Async Rust* ch. 1, whose first program watches
//! a file for changes while doing other work; the `watch` channel is tokio's own pattern).
//!
//! A watcher polls a directory every 20 ms and sends each new or changed `*.txt` file (its
//! size or modification time moved) into a corral pipeline: read it (async file I/O), count
//! its words, report; the directory's latest state (file → size) is kept on a `watch`
//! channel, where any task reads the newest without queueing every change. Meanwhile a
//! "producer" drops five files into the directory over 200 ms, then rewrites the first. Polling is portable and good enough at this
//! scale; for many files or low latency, the `notify` crate's OS events feed the same
//! pipeline. The watcher stops when told to (here: once it has seen six versions), closing
//! the pipeline's input, which then drains and ends.
//!
//! Run: `cargo run -p corral --example file_watcher`

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use corral::pipeline::Pipeline;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("corral-watch-{}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await?;

    let (state_tx, state) = tokio::sync::watch::channel(Arc::new(BTreeMap::<PathBuf, u64>::new()));
    // The producer: five files, 40 ms apart, then the first one rewritten once the watcher
    // has seen all five (the latest state says so).
    let (d, mut seen_by_watcher) = (dir.clone(), state.clone());
    let producer = tokio::spawn(async move {
        for (i, n) in [(0, 10), (1, 20), (2, 30), (3, 40), (4, 50), (0, 60)] {
            tokio::time::sleep(Duration::from_millis(40)).await;
            if n == 60 {
                let _ = seen_by_watcher.wait_for(|files| files.len() == 5).await;
            }
            let words = "word ".repeat(n);
            tokio::fs::write(d.join(format!("note-{i}.txt.part")), &words).await?;
            // Written under another name, then renamed: the watcher never sees half a file.
            tokio::fs::rename(
                d.join(format!("note-{i}.txt.part")),
                d.join(format!("note-{i}.txt")),
            )
            .await?;
        }
        Ok::<_, std::io::Error>(())
    });

    // The watcher: new and changed paths into a channel, the latest state on a watch
    // channel, until cancelled.
    let (tx, rx) = tokio::sync::mpsc::channel::<PathBuf>(16);
    let stop = CancellationToken::new();
    let (d, s) = (dir.clone(), stop.clone());
    let watcher = tokio::spawn(async move {
        let mut seen: HashMap<PathBuf, (u64, SystemTime)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = s.cancelled() => return Ok::<_, std::io::Error>(()),
                _ = tick.tick() => {}
            }
            let mut entries = tokio::fs::read_dir(&d).await?;
            while let Some(e) = entries.next_entry().await? {
                let path = e.path();
                if path.extension().is_none_or(|x| x != "txt") {
                    continue;
                }
                let meta = e.metadata().await?;
                let now = (meta.len(), meta.modified()?);
                if seen.get(&path) == Some(&now) {
                    continue; // unchanged since the last look
                }
                seen.insert(path.clone(), now);
                let latest = seen.iter().map(|(p, (len, _))| (p.clone(), *len)).collect();
                state_tx.send_replace(Arc::new(latest));
                if tx.send(path).await.is_err() {
                    return Ok(());
                }
            }
        }
    });

    let input = tokio_stream_from(rx);
    let mut out = Pipeline::builder()
        .input(input)
        .stage("read", 2, |p: PathBuf| async move {
            let text = tokio::fs::read_to_string(&p).await?;
            Ok::<_, std::io::Error>((p, text))
        })
        .stage("count", 2, |(p, text): (PathBuf, String)| async move {
            Ok::<_, std::io::Error>((p, text.split_whitespace().count()))
        })
        .run()?;
    let mut counts = Vec::new();
    while let Some(r) = out.next().await {
        let (path, words) = r?;
        println!(
            "{:>3} words  {}",
            words,
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        counts.push(words);
        if counts.len() == 6 {
            stop.cancel(); // the watcher ends, its sender drops, the pipeline drains
        }
    }
    watcher.await??;
    producer.await??;
    // The directory as last seen: five files, the first one at its new size.
    let latest = state.borrow().clone();
    println!(
        "latest state: {} files, {} bytes",
        latest.len(),
        latest.values().sum::<u64>()
    );
    tokio::fs::remove_dir_all(&dir).await?;
    counts.sort_unstable();
    if counts != [10, 20, 30, 40, 50, 60] || latest.len() != 5 {
        return Err(format!("expected five files and one edit, got {counts:?}").into());
    }
    Ok(())
}

/// A receiver as a stream (what `tokio_stream::wrappers::ReceiverStream` does).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

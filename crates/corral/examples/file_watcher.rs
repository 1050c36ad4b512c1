//! Pattern: a file watcher feeding a pipeline (seed 001, *Async Rust* ch. 1: an async program
//! that waits on the file system and the network at once).
//!
//! A watcher polls a directory every 20 ms and sends each new `*.txt` file into a corral
//! pipeline: read it (async file I/O), count its words, report. Meanwhile a "producer" drops
//! five files into the directory over 200 ms. Polling is portable and good enough at this
//! scale; for many files or low latency, the `notify` crate's OS events feed the same
//! pipeline. The watcher stops when told to (here: once it has seen five files), closing the
//! pipeline's input, which then drains and ends.
//!
//! Run: `cargo run -p corral --example file_watcher`

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use corral::pipeline::Pipeline;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("corral-watch-{}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await?;

    // The producer: five files, 40 ms apart.
    let d = dir.clone();
    let producer = tokio::spawn(async move {
        for i in 0..5 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let words = "word ".repeat(10 * (i + 1));
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

    // The watcher: new paths into a channel, until cancelled.
    let (tx, rx) = tokio::sync::mpsc::channel::<PathBuf>(16);
    let stop = CancellationToken::new();
    let (d, s) = (dir.clone(), stop.clone());
    let watcher = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = s.cancelled() => return Ok::<_, std::io::Error>(()),
                _ = tick.tick() => {}
            }
            let mut entries = tokio::fs::read_dir(&d).await?;
            while let Some(e) = entries.next_entry().await? {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "txt")
                    && seen.insert(path.clone())
                    && tx.send(path).await.is_err()
                {
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
        if counts.len() == 5 {
            stop.cancel(); // the watcher ends, its sender drops, the pipeline drains
        }
    }
    watcher.await??;
    producer.await??;
    tokio::fs::remove_dir_all(&dir).await?;
    counts.sort_unstable();
    if counts != [10, 20, 30, 40, 50] {
        return Err(format!("expected five files of 10..50 words, got {counts:?}").into());
    }
    Ok(())
}

/// A receiver as a stream (what `tokio_stream::wrappers::ReceiverStream` does).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

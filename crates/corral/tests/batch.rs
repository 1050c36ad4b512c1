//! Behavioural tests of `corral::batch` (paused clock).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::batch::{Batch, Batcher, Closed, FlushError, FlushReason};
use tokio_util::sync::CancellationToken;

type Log = Arc<Mutex<Vec<(FlushReason, Vec<u32>, tokio::time::Instant)>>>;

fn recorder(
    log: &Log,
) -> impl FnMut(Batch<u32>) -> std::future::Ready<Result<(), String>> + Send + 'static {
    let log = log.clone();
    move |b: Batch<u32>| {
        let reason = b.reason();
        let fail = b.items().contains(&13);
        log.lock()
            .unwrap()
            .push((reason, b.into_items(), tokio::time::Instant::now()));
        std::future::ready(if fail {
            Err("13 is unlucky".to_string())
        } else {
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn flushes_on_size() {
    let log = Log::default();
    let b = Batcher::builder()
        .max_size(4)
        .max_delay(Duration::from_secs(60))
        .build(recorder(&log))
        .unwrap();
    for i in 0..8 {
        b.push(i).await.unwrap();
    }
    tokio::task::yield_now().await;
    let report = b.close().await.unwrap();
    let log = log.lock().unwrap();
    let got: Vec<_> = log
        .iter()
        .map(|(r, items, _)| (*r, items.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (FlushReason::Size, vec![0, 1, 2, 3]),
            (FlushReason::Size, vec![4, 5, 6, 7])
        ]
    );
    assert_eq!((report.items, report.batches), (8, 2));
}

#[tokio::test(start_paused = true)]
async fn flushes_on_deadline_counted_from_the_first_item() {
    let log = Log::default();
    let b = Batcher::builder()
        .max_size(100)
        .max_delay(Duration::from_millis(100))
        .build(recorder(&log))
        .unwrap();
    let start = tokio::time::Instant::now();
    b.push(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    b.push(2).await.unwrap(); // must not restart the clock
    tokio::time::sleep(Duration::from_millis(39)).await;
    assert!(
        log.lock().unwrap().is_empty(),
        "flushed before the deadline"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    {
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].0, log[0].1.clone()),
            (FlushReason::Deadline, vec![1, 2])
        );
        assert_eq!(log[0].2 - start, Duration::from_millis(100));
    }
    // An idle batcher does not flush empty batches.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(log.lock().unwrap().len(), 1);
    b.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_flushes_the_rest_and_reports_failures_with_their_batch() {
    let log = Log::default();
    let b = Batcher::builder()
        .max_size(5)
        .max_delay(Duration::from_secs(60))
        .build(recorder(&log))
        .unwrap();
    let sender = b.sender();
    for i in 10..17 {
        b.push(i).await.unwrap();
    }
    let report = b.close().await.unwrap();
    assert_eq!(
        sender.push(99).await,
        Err(Closed(99)),
        "a push after close hands the item back"
    );
    let log = log.lock().unwrap();
    assert_eq!(log[1].0, FlushReason::Close);
    assert_eq!(log[1].1, vec![15, 16]);
    assert_eq!(report.failures.len(), 1);
    let f = &report.failures[0];
    assert_eq!((f.seq, f.len, f.reason), (0, 5, FlushReason::Size));
    assert!(matches!(&f.error, FlushError::Failed(m) if m == "13 is unlucky"));
}

#[tokio::test(start_paused = true)]
async fn cancel_token_closes_and_flushes() {
    let log = Log::default();
    let token = CancellationToken::new();
    let b = Batcher::builder()
        .max_size(10)
        .max_delay(Duration::from_secs(60))
        .cancel_token(token.clone())
        .build(recorder(&log))
        .unwrap();
    b.push(1).await.unwrap();
    b.push(2).await.unwrap();
    token.cancel();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(log.lock().unwrap()[0].1, vec![1, 2]);
    assert_eq!(log.lock().unwrap()[0].0, FlushReason::Close);
    assert_eq!(b.push(3).await, Err(Closed(3)));
}

#[tokio::test(start_paused = true)]
async fn no_item_is_dropped_with_many_pushers_and_slow_flushes() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let b = Batcher::builder()
        .max_size(7)
        .max_delay(Duration::from_millis(3))
        .queue_capacity(2)
        .build(move |batch: Batch<u32>| {
            let s = s.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if batch.seq() == 3 {
                    panic!("flush panic");
                }
                s.lock().unwrap().extend(batch.into_items());
                Ok::<(), String>(())
            }
        })
        .unwrap();
    let mut pushers = Vec::new();
    for p in 0..8u32 {
        let tx = b.sender();
        pushers.push(tokio::spawn(async move {
            for i in 0..100 {
                tx.push(p * 1000 + i).await.unwrap();
                if i % 9 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for p in pushers {
        p.await.unwrap();
    }
    let report = b.close().await.unwrap();
    assert_eq!(report.items, 800);
    assert_eq!(report.failures.len(), 1);
    assert!(matches!(report.failures[0].error, FlushError::Panicked(ref m) if m == "flush panic"));
    let lost_to_panic = report.failures[0].len;
    let mut seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len() + lost_to_panic, 800);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len() + lost_to_panic, 800, "an item was flushed twice");
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    let ok = |_: Batch<u8>| async { Ok::<(), ()>(()) };
    let e = Batcher::builder().max_size(0).build(ok).unwrap_err();
    assert!(e.to_string().contains("max_size"), "{e}");
    let e = Batcher::builder()
        .max_delay(Duration::ZERO)
        .build(ok)
        .unwrap_err();
    assert!(e.to_string().contains("max_delay"), "{e}");
}

/// Waiting for room with `reserve` in a `select!` that times out keeps the item; the permit,
/// once room is there, queues it without waiting.
#[tokio::test(start_paused = true)]
async fn reserve_keeps_the_item_when_the_wait_is_cancelled() {
    let (release, gate) = tokio::sync::watch::channel(false);
    let flushed = Arc::new(Mutex::new(Vec::new()));
    let f = flushed.clone();
    let b = Batcher::builder()
        .max_size(1)
        .queue_capacity(1)
        .build(move |batch: Batch<u32>| {
            let mut gate = gate.clone();
            let f = f.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                f.lock().unwrap().extend(batch.into_items());
                Ok::<_, String>(())
            }
        })
        .unwrap();
    b.push(1).await.unwrap(); // taken by the flusher, which blocks
    tokio::task::yield_now().await;
    b.push(2).await.unwrap(); // fills the queue
    let sender = b.sender();
    let item = 3u32;
    let waited = tokio::select! {
        permit = sender.reserve() => { permit.unwrap().push(item); false }
        _ = tokio::time::sleep(Duration::from_secs(1)) => true,
    };
    assert!(waited, "the queue was full: reserve had to wait");
    release.send(true).unwrap();
    sender.reserve().await.unwrap().push(item);
    drop(sender);
    let report = b.close().await.unwrap();
    assert_eq!(report.items, 3);
    assert_eq!(*flushed.lock().unwrap(), vec![1, 2, 3]);
}

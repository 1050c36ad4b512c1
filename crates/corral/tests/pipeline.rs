//! Behavioural tests of `corral::pipeline` (paused clock).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::pipeline::{Pipeline, StageErrorKind};
use futures::StreamExt;

#[derive(Debug)]
struct Odd(u64);
impl std::fmt::Display for Odd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is odd", self.0)
    }
}
impl std::error::Error for Odd {}

#[tokio::test(start_paused = true)]
async fn errors_are_routed_with_stage_and_index_and_order_is_kept() {
    let out: Vec<_> = Pipeline::builder()
        .ordered(true)
        .channel_capacity(4)
        .input(futures::stream::iter(0..100u64))
        .stage("evens", 3, |n| async move {
            tokio::time::sleep(Duration::from_millis(100 - n)).await;
            if n % 2 == 1 {
                Err(Odd(n))
            } else {
                Ok(n)
            }
        })
        .stage("label", 5, |n| async move {
            if n == 42 {
                panic!("no 42")
            }
            Ok::<_, Odd>(format!("#{n}"))
        })
        .run()
        .expect("valid")
        .collect()
        .await;
    assert_eq!(out.len(), 100);
    for (i, r) in out.iter().enumerate() {
        let i = i as u64;
        match r {
            Ok(s) => assert_eq!(s, &format!("#{i}")),
            Err(e) if i == 42 => {
                assert_eq!((e.stage(), e.index()), ("label", 42));
                assert!(matches!(e.kind(), StageErrorKind::Panicked(m) if m == "no 42"));
            }
            Err(e) => {
                assert_eq!(i % 2, 1, "unexpected error {e}");
                assert_eq!((e.stage(), e.index()), ("evens", i));
                assert_eq!(
                    e.to_string(),
                    format!("item {i} failed in stage \"evens\": {i} is odd")
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_stage_keeps_its_own_bound_and_stages_overlap() {
    let now = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let max = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let both_busy = Arc::new(AtomicU64::new(0));
    let stage = |k: usize| {
        let (now, max, other, both) = (
            now[k].clone(),
            max[k].clone(),
            now[1 - k].clone(),
            both_busy.clone(),
        );
        move |x: u64| {
            let (now, max, other, both) = (now.clone(), max.clone(), other.clone(), both.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                if other.load(Ordering::SeqCst) > 0 {
                    both.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(x)
            }
        }
    };
    let out: Vec<_> = Pipeline::builder()
        .input(futures::stream::iter(0..200u64))
        .stage("a", 2, stage(0))
        .stage("b", 7, stage(1))
        .run()
        .expect("valid")
        .with_index()
        .collect()
        .await;
    let mut idx: Vec<u64> = out
        .iter()
        .map(|(i, r)| {
            assert!(r.is_ok());
            *i
        })
        .collect();
    idx.sort_unstable();
    assert_eq!(idx, (0..200).collect::<Vec<_>>());
    assert_eq!(max[0].load(Ordering::SeqCst), 2);
    assert!(max[1].load(Ordering::SeqCst) <= 7);
    assert!(
        both_busy.load(Ordering::SeqCst) > 0,
        "stages never ran at the same time"
    );
}

#[tokio::test]
async fn zero_concurrency_or_capacity_is_refused() {
    let err = Pipeline::builder()
        .input(futures::stream::iter(0..3u8))
        .stage("s", 0, |x| async move { Ok::<_, std::io::Error>(x) })
        .run()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("stage \"s\": concurrency must be at least 1"),
        "{err}"
    );
    let err = Pipeline::builder()
        .channel_capacity(0)
        .input(futures::stream::iter(0..3u8))
        .stage("s", 1, |x| async move { Ok::<_, std::io::Error>(x) })
        .run()
        .unwrap_err();
    assert!(err.to_string().contains("capacity"), "{err}");
}

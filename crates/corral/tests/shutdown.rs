//! Behavioural tests of `corral::shutdown` (paused clock).

use std::time::Duration;

use corral::shutdown::Shutdown;

#[tokio::test(start_paused = true)]
async fn clean_shutdown_when_every_task_obeys_the_token() {
    let s = Shutdown::new();
    for i in 0..5 {
        let t = s.token().child_token();
        s.spawn(format!("worker-{i}"), async move {
            t.cancelled().await;
            tokio::time::sleep(Duration::from_millis(100)).await; // drain work
        });
    }
    let report = s.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.finished, 5);
    assert_eq!(report.elapsed, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn stragglers_are_reported_by_name_and_aborted() {
    let s = Shutdown::new();
    let t = s.token();
    s.spawn("fast", async move { t.cancelled().await });
    let slow = s.spawn("slow-drain", tokio::time::sleep(Duration::from_secs(30)));
    s.spawn("deaf", std::future::pending::<()>());
    let report = s.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        report.stragglers,
        vec!["slow-drain".to_string(), "deaf".to_string()]
    );
    assert_eq!(report.finished, 1);
    assert_eq!(report.elapsed, Duration::from_secs(5));
    assert!(
        slow.await.unwrap_err().is_cancelled(),
        "straggler was not aborted"
    );
}

#[tokio::test(start_paused = true)]
async fn force_cancels_both_levels_and_child_tokens() {
    let s = Shutdown::new();
    let child = s.token().child_token();
    let force = s.force_token();
    assert!(!child.is_cancelled() && !s.is_triggered());
    s.trigger();
    assert!(child.is_cancelled() && !force.is_cancelled());
    s.force();
    assert!(force.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_counts_as_finished() {
    let s = Shutdown::new();
    let h = s.spawn("panics", async { panic!("oops") });
    assert!(h.await.unwrap_err().is_panic());
    let report = s.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean());
    assert_eq!(report.finished, 1);
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_triggers_then_second_signal_forces() {
    let s = Shutdown::new();
    s.listen_for_signals().expect("handlers");
    let pid = std::process::id().to_string();
    let kill = || {
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
    };
    kill();
    tokio::time::timeout(Duration::from_secs(10), s.token().cancelled())
        .await
        .expect("triggered");
    assert!(!s.force_token().is_cancelled());
    kill();
    tokio::time::timeout(Duration::from_secs(10), s.force_token().cancelled())
        .await
        .expect("forced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stragglers_do_not_count_as_finished_on_a_multi_thread_runtime() {
    for _ in 0..50 {
        let s = Shutdown::new();
        let t = s.token();
        s.spawn("obeys", async move { t.cancelled().await });
        s.spawn("deaf", std::future::pending::<()>());
        let report = s.shutdown(Duration::from_millis(20)).await;
        assert_eq!(
            (report.finished, report.stragglers.len()),
            (1, 1),
            "{report:?}"
        );
    }
}

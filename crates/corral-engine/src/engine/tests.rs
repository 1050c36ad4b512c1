use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::error::ConfigError;
use crate::hosts::adaptive::Signal;
use crate::hosts::{Host, HostStat, HostTable};
use crate::settings::{test_settings, Settings};

/// A job whose host has no free slot waits without its active slot, so that other hosts'
/// jobs can run meanwhile; once the host frees up, it takes a slot again and goes on.
#[tokio::test]
async fn a_job_waiting_for_its_host_gives_its_active_slot_back() {
    let mut s = test_settings(1);
    s.per_host_concurrency = 1;
    let gates = Gates::new(s).unwrap();
    let engine = Engine::new(gates.clone(), 1, CancellationToken::new()).unwrap();
    let active = engine.active_slots();
    // The host's only slot is taken; the job holds the engine's only active slot.
    let host = gates.hosts.entry(&Host::from("127.0.0.1:1")).unwrap();
    let busy = host.try_slot().unwrap();
    let mut slot = active.clone().try_acquire_owned().ok();
    assert_eq!(active.available_permits(), 0);
    // Port 1 refuses at once: the job ends as soon as it may send.
    let job = Parsed::get(1, "http://127.0.0.1:1/x");
    let outcome = {
        let run = engine.process(job, &mut slot);
        tokio::pin!(run);
        assert!(
            futures::poll!(run.as_mut()).is_pending(),
            "it waits for its host"
        );
        assert_eq!(
            active.available_permits(),
            1,
            "and gave its active slot back"
        );
        drop(busy);
        run.await.expect("an outcome")
    };
    assert_eq!(
        outcome.error_kind,
        Some(ErrorKind::Connect),
        "{}",
        outcome.json
    );
    assert!(
        slot.is_some(),
        "the slot is handed back to the caller for its next job"
    );
    assert_eq!(active.available_permits(), 0);
}

/// A Retry-After pause holds back its own host's jobs, and no other host's.
#[tokio::test]
async fn a_retry_after_pause_holds_back_its_host_only() {
    let gates = Gates::new(test_settings(4)).unwrap();
    let engine = Engine::new(gates.clone(), 4, CancellationToken::new()).unwrap();
    let paused = gates.hosts.entry(&Host::from("127.0.0.1:1")).unwrap();
    paused.pause_until(tokio::time::Instant::now() + Duration::from_secs(3600));
    let mut slots: Vec<_> = (0..2)
        .map(|_| engine.active_slots().try_acquire_owned().ok())
        .collect();
    let (sa, sb) = slots.split_at_mut(1);
    let a = engine.process(Parsed::get(1, "http://127.0.0.1:1/a"), &mut sa[0]);
    tokio::pin!(a);
    assert!(
        futures::poll!(a.as_mut()).is_pending(),
        "the paused host's job waits"
    );
    // Another host (port 1 of 127.0.0.2 refuses at once): its job goes out meanwhile.
    let b = engine
        .process(Parsed::get(2, "http://127.0.0.2:1/b"), &mut sb[0])
        .await
        .expect("an outcome");
    assert_eq!(b.error_kind, Some(ErrorKind::Connect), "{}", b.json);
    assert!(futures::poll!(a.as_mut()).is_pending(), "and still waits");
    let stats = gates.host_stats();
    assert_eq!(
        stats["127.0.0.1:1"].attempts, 0,
        "nothing was sent to the paused host"
    );
    assert_eq!(stats["127.0.0.1:1"].paused_by_retry_after, 1);
    assert_eq!(stats["127.0.0.2:1"].attempts, 1);
}

/// A host table that writes down each call the engine makes, with gates the test opens.
struct Recorder {
    calls: Arc<Mutex<Vec<&'static str>>>,
    /// The host's slots (one); taken by the test to make the host busy.
    slots: Arc<Semaphore>,
    /// Rate tokens: `try_rate` is open while `rate_open`; `rate` waits for a permit here.
    rate_open: AtomicBool,
    tokens: Arc<Semaphore>,
    breaker_open: AtomicBool,
    /// `admit` opens the breaker when it is called for this time (0: never).
    open_on_admit: std::sync::atomic::AtomicUsize,
    admits: std::sync::atomic::AtomicUsize,
    /// Told when a job is held by the breaker.
    held: tokio::sync::Notify,
    /// Woken by the test when the breaker may let a request through again.
    breaker_changed: tokio::sync::Notify,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: Arc::default(),
            slots: Arc::new(Semaphore::new(1)),
            rate_open: AtomicBool::new(true),
            tokens: Arc::new(Semaphore::new(0)),
            breaker_open: AtomicBool::new(false),
            open_on_admit: Default::default(),
            admits: Default::default(),
            held: tokio::sync::Notify::new(),
            breaker_changed: tokio::sync::Notify::new(),
        })
    }
    fn log(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }
    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }
}

struct Shared(Arc<Recorder>);

impl HostTable for Shared {
    fn entry(&self, _: &Host) -> Result<Arc<dyn crate::hosts::HostEntry>, ConfigError> {
        Ok(self.0.clone())
    }
    fn stats(&self) -> HashMap<String, HostStat> {
        HashMap::new()
    }
    fn breaker_openings(&self) -> u64 {
        0
    }
}

impl crate::hosts::HostEntry for Recorder {
    fn try_slot(&self) -> Option<crate::hosts::Slot> {
        self.log("try_slot");
        self.slots.clone().try_acquire_owned().ok()
    }
    fn slot(&self) -> futures::future::BoxFuture<'_, Option<crate::hosts::Slot>> {
        self.log("slot");
        Box::pin(async { self.slots.clone().acquire_owned().await.ok() })
    }
    fn try_cost(&self, _: u64) -> bool {
        true
    }
    fn cost(&self, _: u64) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn settle_cost(&self, _: i64, _: u64) {}
    fn observe(&self, _: Signal, _: Option<(u64, Duration)>) {}
    fn try_rate(&self) -> bool {
        self.log("try_rate");
        self.rate_open.load(Ordering::Relaxed)
    }
    fn rate(&self) -> futures::future::BoxFuture<'_, ()> {
        self.log("rate");
        Box::pin(async {
            self.tokens.acquire().await.unwrap().forget();
        })
    }
    fn admit(&self) -> Result<Option<crate::hosts::Permit>, crate::hosts::BreakerOpen> {
        self.log("admit");
        let n = self.admits.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.open_on_admit.load(Ordering::Relaxed) {
            self.breaker_open.store(true, Ordering::Relaxed);
        }
        if self.breaker_open.load(Ordering::Relaxed) {
            Err(crate::hosts::BreakerOpen { retry_at: None })
        } else {
            Ok(None)
        }
    }
    fn breaker_wait(&self, _: crate::hosts::BreakerOpen) -> futures::future::BoxFuture<'_, ()> {
        self.log("breaker_wait");
        self.held.notify_one();
        Box::pin(self.breaker_changed.notified())
    }
    fn attempted(&self) {
        self.log("attempted");
    }
    fn pause_until(&self, _: tokio::time::Instant) {
        self.log("pause_until");
    }
}

fn recorded(concurrency: usize) -> (Arc<Recorder>, Engine) {
    recorded_with(test_settings(concurrency))
}

fn recorded_with(settings: Settings) -> (Arc<Recorder>, Engine) {
    let rec = Recorder::new();
    let concurrency = settings.concurrency;
    let gates = Gates::with_hosts(settings, Arc::new(Shared(rec.clone()))).unwrap();
    let engine = Engine::new(gates, concurrency, CancellationToken::new()).unwrap();
    (rec, engine)
}

fn with_breaker(fail_fast: bool) -> Settings {
    let mut s = test_settings(1);
    s.no_breaker = false;
    s.breaker_fail_fast = fail_fast;
    s
}

/// Port 1 refuses at once: a job there ends as soon as it is sent.
fn refused(line: u64) -> Parsed {
    Parsed::get(line, "http://127.0.0.1:1/x")
}

#[tokio::test]
async fn an_open_host_is_passed_slot_then_rate_then_breaker_then_sent() {
    let (rec, engine) = recorded(1);
    let mut slot = engine.active_slots().try_acquire_owned().ok();
    let out = tokio::select! {
        out = engine.process(refused(1), &mut slot) => out.unwrap(),
        () = rec.held.notified() => panic!("held, to be sent again with no retries allowed"),
    };
    assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
    assert_eq!(rec.calls(), ["try_slot", "try_rate", "admit", "attempted"]);
}

#[tokio::test]
async fn a_spent_rate_is_waited_for_without_the_active_slot_after_the_host_slot() {
    let (rec, engine) = recorded(1);
    rec.rate_open.store(false, Ordering::Relaxed);
    let active = engine.active_slots();
    let mut slot = active.clone().try_acquire_owned().ok();
    let run = engine.process(refused(1), &mut slot);
    tokio::pin!(run);
    assert!(futures::poll!(run.as_mut()).is_pending());
    assert_eq!(rec.calls(), ["try_slot", "try_rate", "rate"]);
    assert_eq!(
        active.available_permits(),
        1,
        "the active slot is given back"
    );
    assert_eq!(
        rec.slots.available_permits(),
        0,
        "the host slot taken is kept while the rate is waited for"
    );
    rec.tokens.add_permits(1);
    let out = run.await.unwrap();
    assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
    assert_eq!(
        rec.calls(),
        ["try_slot", "try_rate", "rate", "admit", "attempted"]
    );
    assert_eq!(rec.slots.available_permits(), 1, "the host slot is back");
}

#[tokio::test]
async fn a_busy_host_is_waited_for_slot_first_then_rate() {
    let (rec, engine) = recorded(1);
    let busy = rec.slots.clone().try_acquire_owned().unwrap();
    let mut slot = engine.active_slots().try_acquire_owned().ok();
    let run = engine.process(refused(1), &mut slot);
    tokio::pin!(run);
    assert!(futures::poll!(run.as_mut()).is_pending());
    // No rate token is taken while the job cannot send anyway.
    assert_eq!(rec.calls(), ["try_slot", "slot"]);
    drop(busy);
    rec.tokens.add_permits(1);
    run.await.unwrap();
    assert_eq!(
        rec.calls(),
        ["try_slot", "slot", "rate", "admit", "attempted"]
    );
}

#[tokio::test]
async fn with_fail_fast_an_open_breaker_fails_the_job_before_anything_is_sent() {
    let (rec, engine) = recorded_with(with_breaker(true));
    rec.breaker_open.store(true, Ordering::Relaxed);
    let mut slot = engine.active_slots().try_acquire_owned().ok();
    let out = engine.process(refused(1), &mut slot).await.unwrap();
    assert_eq!(out.error_kind, Some(ErrorKind::CircuitOpen), "{}", out.json);
    assert!(out.json.contains("--breaker-fail-fast"), "{}", out.json);
    assert_eq!(rec.calls(), ["try_slot", "try_rate", "admit"]);
}

#[tokio::test]
async fn an_open_breaker_holds_the_job_without_its_slots_until_it_may_pass() {
    let (rec, engine) = recorded_with(with_breaker(false));
    rec.breaker_open.store(true, Ordering::Relaxed);
    rec.tokens.add_permits(1);
    let active = engine.active_slots();
    let mut slot = active.clone().try_acquire_owned().ok();
    let run = engine.process(refused(1), &mut slot);
    tokio::pin!(run);
    assert!(futures::poll!(run.as_mut()).is_pending(), "held");
    assert_eq!(
        rec.calls(),
        ["try_slot", "try_rate", "admit", "breaker_wait"]
    );
    assert_eq!(
        active.available_permits(),
        1,
        "the active slot is given back"
    );
    assert_eq!(rec.slots.available_permits(), 1, "and the host's slot");
    // The breaker lets requests through again: the job passes the gates anew and goes.
    rec.breaker_open.store(false, Ordering::Relaxed);
    rec.breaker_changed.notify_waiters();
    let out = run.await.unwrap();
    assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
    assert_eq!(
        rec.calls(),
        [
            "try_slot",
            "try_rate",
            "admit",
            "breaker_wait",
            "try_slot",
            "try_rate",
            "admit",
            "attempted"
        ]
    );
}

#[tokio::test]
async fn with_no_retries_a_job_is_not_sent_again_after_the_outage() {
    let (rec, engine) = recorded_with(with_breaker(false));
    // The breaker opens with the job's only failure.
    rec.open_on_admit.store(2, Ordering::Relaxed);
    let mut slot = engine.active_slots().try_acquire_owned().ok();
    let out = tokio::select! {
        out = engine.process(refused(1), &mut slot) => out.unwrap(),
        () = rec.held.notified() => panic!("held, to be sent again with no retries allowed"),
    };
    assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
    assert_eq!(rec.calls(), ["try_slot", "try_rate", "admit", "attempted"]);
}

#[tokio::test]
async fn a_job_whose_retries_ran_out_as_the_breaker_opened_goes_once_more_after() {
    let mut settings = with_breaker(false);
    settings.retries = 1;
    let (rec, engine) = recorded_with(settings);
    rec.tokens.add_permits(1);
    // The breaker opens with the job's last failure: the third time it is asked.
    rec.open_on_admit.store(3, Ordering::Relaxed);
    let mut slot = engine.active_slots().try_acquire_owned().ok();
    let run = engine.process(refused(1), &mut slot);
    tokio::pin!(run);
    // Until it is held (its first request is a real connect to a closed port).
    tokio::select! {
        () = rec.held.notified() => {}
        _ = run.as_mut() => panic!("it ended without being held"),
    }
    assert_eq!(
        rec.calls(),
        [
            "try_slot",
            "try_rate",
            "admit",
            "attempted",
            "try_slot",
            "try_rate",
            "admit",
            "attempted",
            "admit",
            "try_slot",
            "try_rate",
            "admit",
            "breaker_wait"
        ]
    );
    rec.breaker_open.store(false, Ordering::Relaxed);
    rec.breaker_changed.notify_waiters();
    let out = run.await.unwrap();
    assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
    assert_eq!(out.attempts, 3, "one more attempt, once the host was back");
    assert_eq!(rec.calls().iter().filter(|c| **c == "attempted").count(), 3);
}

/// A host whose `[hosts]` rule gives it a breaker of its own (here in a run without
/// breakers) is held by that breaker's rules, not the run's.
#[tokio::test]
async fn a_hosts_own_breaker_settings_decide_its_holding() {
    let mut s = test_settings(1);
    s.no_breaker = true;
    s.hosts.push(crate::settings::HostRule {
        pattern: "127.0.0.1".parse().unwrap(),
        settings: crate::settings::HostSettings {
            breaker_min_calls: Some(crate::settings::BreakerSettings::default().min_calls),
            ..Default::default()
        },
    });
    let (rec, engine) = recorded_with(s);
    rec.breaker_open.store(true, Ordering::Relaxed);
    rec.tokens.add_permits(1);
    let mut slot = engine.active_slots().try_acquire_owned().ok();
    let run = engine.process(refused(1), &mut slot);
    tokio::pin!(run);
    assert!(
        futures::poll!(run.as_mut()).is_pending(),
        "held, as its own breaker says"
    );
    assert_eq!(rec.calls().last(), Some(&"breaker_wait"));
}

#[tokio::test(start_paused = true)]
async fn a_job_held_longer_than_the_max_hold_fails_circuit_open() {
    let (rec, engine) = recorded_with(with_breaker(false));
    rec.breaker_open.store(true, Ordering::Relaxed);
    rec.tokens.add_permits(10);
    let mut slot = engine.active_slots().try_acquire_owned().ok();
    let started = tokio::time::Instant::now();
    let out = engine.process(refused(1), &mut slot).await.unwrap();
    assert_eq!(out.error_kind, Some(ErrorKind::CircuitOpen), "{}", out.json);
    assert!(out.json.contains("--breaker-max-hold-s"), "{}", out.json);
    assert_eq!(
        started.elapsed(),
        crate::settings::BreakerSettings::default().max_hold
    );
    assert!(!rec.calls().contains(&"attempted"), "nothing was sent");
}

#[tokio::test]
async fn after_a_stop_a_job_waiting_for_its_host_ends_not_started() {
    let rec = Recorder::new();
    let stop = CancellationToken::new();
    let gates = Gates::with_hosts(test_settings(1), Arc::new(Shared(rec.clone()))).unwrap();
    let engine = Engine::new(gates, 1, stop.clone()).unwrap();
    rec.rate_open.store(false, Ordering::Relaxed);
    let mut slot = engine.active_slots().try_acquire_owned().ok();
    let run = engine.process(refused(1), &mut slot);
    tokio::pin!(run);
    assert!(futures::poll!(run.as_mut()).is_pending());
    stop.cancel();
    assert!(run.await.is_none(), "no result: a resume runs it");
    assert!(!rec.calls().contains(&"attempted"), "nothing was sent");
}

#[tokio::test(start_paused = true)]
async fn a_breaker_counts_a_first_failure_only_when_no_retry_makes_it_good() {
    let b = corral::breaker::CircuitBreaker::builder()
        .min_calls(100)
        .build()
        .unwrap();
    let counts = |b: &corral::breaker::CircuitBreaker| {
        let s = b.stats();
        (s.window_ok, s.window_failed)
    };
    // Fails once, then succeeds on its retry: one success, no failure.
    let t = Trace::default();
    t.breaker_outcome(b.try_acquire().ok(), false, true);
    assert_eq!(counts(&b), (0, 0), "not counted while a retry may follow");
    t.forgive();
    t.breaker_outcome(b.try_acquire().ok(), true, false);
    t.settle();
    assert_eq!(counts(&b), (1, 0));
    // Fails, and its retry fails: the retry's failure counts at once.
    let t = Trace::default();
    t.breaker_outcome(b.try_acquire().ok(), false, true);
    t.forgive();
    t.breaker_outcome(b.try_acquire().ok(), false, false);
    assert_eq!(counts(&b), (1, 1));
    t.settle();
    assert_eq!(counts(&b), (1, 1));
    // Fails with no retry after it: counted when the job ends.
    let t = Trace::default();
    t.breaker_outcome(b.try_acquire().ok(), false, true);
    t.settle();
    assert_eq!(counts(&b), (1, 2));
    // Fails where no retry can follow (none allowed): counted at once.
    let t = Trace::default();
    t.breaker_outcome(b.try_acquire().ok(), false, false);
    assert_eq!(counts(&b), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn a_probe_counts_at_once_even_on_a_first_attempt() {
    let b = corral::breaker::CircuitBreaker::builder()
        .min_calls(1)
        .failure_rate(0.5)
        .cool_down(Duration::from_secs(1))
        .build()
        .unwrap();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), corral::breaker::State::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    let t = Trace::default();
    t.breaker_outcome(b.try_acquire().ok(), false, true);
    assert_eq!(b.state(), corral::breaker::State::Open, "the probe failed");
    assert_eq!(b.stats().openings, 2);
}

#[test]
fn settings_that_cannot_work_are_refused_naming_their_option() {
    type Spoil = fn(&mut Settings);
    let cases: [(Spoil, &str); 5] = [
        (|s| s.concurrency = 0, "--concurrency: must be at least 1"),
        (
            |s| s.per_host_concurrency = 0,
            "--per-host-concurrency: must be at least 1",
        ),
        (
            |s| s.timeout = Duration::ZERO,
            "--timeout-ms: must be greater than 0",
        ),
        (
            |s| s.total_timeout = Some(Duration::ZERO),
            "--total-timeout-ms: must be greater than 0",
        ),
        (|s| s.max_body = 0, "--max-body: must be at least 1 byte"),
    ];
    for (spoil, want) in cases {
        let mut s = Settings::default();
        spoil(&mut s);
        let e = Gates::new(s).err().expect("refused").to_string();
        assert!(e.starts_with(want), "{e}");
    }
    assert!(Gates::new(Settings::default()).is_ok());
}

//! Behavioural tests of `corral::actor` (paused clock).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::actor::{self, Actor, ActorError, Registry, Reply, Supervision, SupervisorEvent};

struct Log {
    seen: Vec<u32>,
}

enum Msg {
    Push(u32),
    Get(Reply<Vec<u32>>),
    Boom,
    Hang,
    Sleep(Duration, Reply<()>),
}

impl Actor for Log {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Push(n) => self.seen.push(n),
            Msg::Get(r) => r.send(self.seen.clone()),
            Msg::Boom => panic!("boom"),
            Msg::Hang => std::future::pending::<()>().await,
            Msg::Sleep(d, r) => {
                tokio::time::sleep(d).await;
                r.send(())
            }
        }
    }
}

fn events() -> (Arc<Mutex<Vec<SupervisorEvent>>>, Supervision) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let sup = Supervision::default().on_event(move |e| l.lock().unwrap().push(e));
    (log, sup)
}

const T: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn tell_and_ask_keep_each_senders_order() {
    let log = actor::spawn(|| Log { seen: vec![] }, Supervision::default().mailbox(4)).unwrap();
    let mut senders = Vec::new();
    for s in 0..3u32 {
        let log = log.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..50 {
                log.tell(Msg::Push(s * 1000 + i)).await.unwrap();
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let seen = log.ask(Msg::Get, T).await.unwrap();
    assert_eq!(seen.len(), 150);
    for s in 0..3 {
        let mine: Vec<u32> = seen.iter().copied().filter(|v| v / 1000 == s).collect();
        assert_eq!(
            mine,
            (0..50).map(|i| s * 1000 + i).collect::<Vec<_>>(),
            "sender {s} reordered"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn ask_times_out() {
    let log = actor::spawn(|| Log { seen: vec![] }, Supervision::default()).unwrap();
    let started = tokio::time::Instant::now();
    let r = log
        .ask(
            |r| Msg::Sleep(Duration::from_secs(60), r),
            Duration::from_secs(2),
        )
        .await;
    assert_eq!(r, Err(ActorError::Timeout));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_actor_is_restarted_and_keeps_serving() {
    let (events, sup) = events();
    let log = actor::spawn(|| Log { seen: vec![] }, sup).unwrap();
    log.tell(Msg::Push(1)).await.unwrap();
    log.tell(Msg::Boom).await.unwrap();
    log.tell(Msg::Push(2)).await.unwrap();
    // State is rebuilt by the factory (here: empty); later messages are served.
    assert_eq!(log.ask(Msg::Get, T).await, Ok(vec![2]));
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            SupervisorEvent::Panicked("boom".into()),
            SupervisorEvent::Restarted(1)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_actor_misses_its_heartbeat_and_is_restarted() {
    let (events, sup) = events();
    let log = actor::spawn(
        || Log { seen: vec![] },
        sup.heartbeat(Duration::from_secs(1)),
    )
    .unwrap();
    log.tell(Msg::Hang).await.unwrap();
    log.tell(Msg::Push(7)).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(log.ask(Msg::Get, T).await, Ok(vec![7]));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "restarted before the deadline"
    );
    assert_eq!(
        events.lock().unwrap()[0],
        SupervisorEvent::Silent(Duration::from_secs(1))
    );
    // A handler that is merely slow but within the deadline is left alone.
    assert_eq!(
        log.ask(|r| Msg::Sleep(Duration::from_millis(900), r), T)
            .await,
        Ok(())
    );
    assert_eq!(
        events.lock().unwrap().len(),
        2,
        "{:?}",
        events.lock().unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn too_many_restarts_escalate_and_stop_the_actor() {
    let (events, sup) = events();
    let sup = sup
        .max_restarts(2, Duration::from_secs(60))
        .backoff(Duration::from_millis(10), Duration::from_secs(1));
    let log = actor::spawn(|| Log { seen: vec![] }, sup).unwrap();
    for _ in 0..3 {
        log.tell(Msg::Boom).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(log.is_stopped());
    assert_eq!(log.tell(Msg::Push(1)).await, Err(ActorError::Stopped));
    assert_eq!(log.ask(Msg::Get, T).await, Err(ActorError::Stopped));
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.last(), Some(&SupervisorEvent::Escalated));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, SupervisorEvent::Restarted(_)))
            .count(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn restarts_outside_the_window_do_not_count() {
    let (events, sup) = events();
    let log = actor::spawn(
        || Log { seen: vec![] },
        sup.max_restarts(1, Duration::from_secs(10)),
    )
    .unwrap();
    for _ in 0..4 {
        log.tell(Msg::Boom).await.unwrap();
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    assert!(!log.is_stopped());
    assert!(!events.lock().unwrap().contains(&SupervisorEvent::Escalated));
}

#[tokio::test(start_paused = true)]
async fn the_registry_finds_actors_by_name_and_type() {
    let reg = Registry::new();
    let log = actor::spawn(|| Log { seen: vec![] }, Supervision::default()).unwrap();
    assert!(!reg.register("log", log.clone()));
    let found = reg.lookup::<Log>("log").expect("registered");
    found.tell(Msg::Push(3)).await.unwrap();
    assert_eq!(log.ask(Msg::Get, T).await, Ok(vec![3]));
    struct Other;
    impl Actor for Other {
        type Msg = ();
        async fn handle(&mut self, _: ()) {}
    }
    assert!(reg.lookup::<Other>("log").is_none(), "wrong type");
    assert!(reg.lookup::<Log>("nobody").is_none());
    Registry::global().register("global-log", log);
    assert!(Registry::global().lookup::<Log>("global-log").is_some());
}

#[tokio::test]
async fn bad_supervision_is_refused() {
    let e = actor::spawn(|| Log { seen: vec![] }, Supervision::default().mailbox(0)).unwrap_err();
    assert!(e.to_string().contains("mailbox"), "{e}");
    let e = actor::spawn(
        || Log { seen: vec![] },
        Supervision::default().heartbeat(Duration::ZERO),
    )
    .unwrap_err();
    assert!(e.to_string().contains("heartbeat"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_monitor_is_told_when_an_actor_stops_and_why() {
    let (_, sup) = events();
    let sup = sup
        .max_restarts(1, Duration::from_secs(60))
        .backoff(Duration::from_millis(10), Duration::from_secs(1));
    let log = actor::spawn(|| Log { seen: vec![] }, sup).unwrap();
    // A monitor elsewhere, waiting before anything goes wrong.
    let watcher = {
        let log = log.clone();
        tokio::spawn(async move { log.stopped().await })
    };
    tokio::task::yield_now().await;
    assert!(!watcher.is_finished(), "told before the actor stopped");
    log.tell(Msg::Boom).await.unwrap();
    log.tell(Msg::Boom).await.unwrap();
    assert_eq!(
        watcher.await.unwrap(),
        actor::Stop::Escalated("boom".into())
    );
    // One that asks afterwards learns it at once.
    assert_eq!(log.stopped().await, actor::Stop::Escalated("boom".into()));

    // An actor whose handles are all dropped ends normally; its monitor, which holds no
    // handle, hears Finished.
    let quiet = actor::spawn(|| Log { seen: vec![] }, Supervision::default()).unwrap();
    quiet.tell(Msg::Push(1)).await.unwrap();
    let told = tokio::spawn(quiet.monitor());
    tokio::task::yield_now().await;
    assert!(!told.is_finished());
    drop(quiet);
    assert_eq!(told.await.unwrap(), actor::Stop::Finished);
}

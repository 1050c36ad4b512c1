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

/// Two logs linked in `group`, each with its own event list, plus one outside the group.
async fn linked(
    group: &actor::Group,
    max_restarts: u32,
) -> (
    [actor::ActorRef<Log>; 3],
    [Arc<Mutex<Vec<SupervisorEvent>>>; 3],
) {
    let mut refs = Vec::new();
    let mut logs = Vec::new();
    for i in 0..3 {
        let (events, sup) = events();
        let sup = sup.max_restarts(max_restarts, Duration::from_secs(60));
        let sup = if i < 2 { sup.link(group) } else { sup };
        let log = actor::spawn(|| Log { seen: vec![] }, sup).unwrap();
        log.tell(Msg::Push(i)).await.unwrap();
        refs.push(log);
        logs.push(events);
    }
    let seen = refs[2].ask(Msg::Get, T).await.unwrap();
    assert_eq!(seen, vec![2]);
    (refs.try_into().unwrap(), logs.try_into().unwrap())
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_linked_actor_when_one_fails() {
    let group = actor::Group::one_for_all();
    let ([a, b, outside], [ea, eb, eo]) = linked(&group, 5).await;
    assert_eq!(b.ask(Msg::Get, T).await.unwrap(), vec![1]);
    // b is busy with a long message when a fails: that message is dropped with b's state.
    let busy = {
        let b = b.clone();
        tokio::spawn(async move { b.ask(|r| Msg::Sleep(Duration::from_secs(1), r), T).await })
    };
    tokio::task::yield_now().await;
    a.tell(Msg::Boom).await.unwrap();
    assert_eq!(busy.await.unwrap(), Err(ActorError::NoReply));
    // Both were rebuilt empty; the actor outside the group kept its state.
    assert_eq!(a.ask(Msg::Get, T).await.unwrap(), Vec::<u32>::new());
    assert_eq!(b.ask(Msg::Get, T).await.unwrap(), Vec::<u32>::new());
    assert_eq!(outside.ask(Msg::Get, T).await.unwrap(), vec![2]);
    assert_eq!(
        *ea.lock().unwrap(),
        vec![
            SupervisorEvent::Panicked("boom".into()),
            SupervisorEvent::Restarted(1)
        ]
    );
    assert_eq!(*eb.lock().unwrap(), vec![SupervisorEvent::LinkedRestart]);
    assert!(eo.lock().unwrap().is_empty());
    // Both keep serving; the group has not stopped.
    b.tell(Msg::Push(7)).await.unwrap();
    assert_eq!(b.ask(Msg::Get, T).await.unwrap(), vec![7]);
    assert_eq!(group.stopped(), None);
}

#[tokio::test(start_paused = true)]
async fn one_linked_actor_giving_up_stops_its_group() {
    let group = actor::Group::one_for_all();
    let ([a, b, outside], [_, eb, _]) = linked(&group, 0).await;
    let watcher = tokio::spawn(b.monitor());
    a.tell(Msg::Boom).await.unwrap();
    assert_eq!(a.stopped().await, actor::Stop::Escalated("boom".into()));
    assert_eq!(
        tokio::time::timeout(T, watcher)
            .await
            .expect("b never stopped")
            .unwrap(),
        actor::Stop::Escalated("a linked actor stopped: boom".into())
    );
    assert_eq!(b.tell(Msg::Push(1)).await, Err(ActorError::Stopped));
    assert_eq!(*eb.lock().unwrap(), vec![SupervisorEvent::Escalated]);
    assert_eq!(group.stopped().as_deref(), Some("boom"));
    // Outside the group, nothing changed.
    assert_eq!(outside.ask(Msg::Get, T).await.unwrap(), vec![2]);
}

#[tokio::test(start_paused = true)]
async fn stop_all_stops_every_linked_actor_at_the_first_failure() {
    let group = actor::Group::stop_all();
    // Restarts allowed, but a stop_all group does not restart.
    let ([a, b, outside], [ea, _, _]) = linked(&group, 5).await;
    b.tell(Msg::Boom).await.unwrap();
    assert_eq!(b.stopped().await, actor::Stop::Escalated("boom".into()));
    assert_eq!(
        tokio::time::timeout(T, a.stopped())
            .await
            .expect("a never stopped"),
        actor::Stop::Escalated("a linked actor stopped: boom".into())
    );
    assert_eq!(*ea.lock().unwrap(), vec![SupervisorEvent::Escalated]);
    assert_eq!(outside.ask(Msg::Get, T).await.unwrap(), vec![2]);
}

#[tokio::test(start_paused = true)]
async fn a_linked_actor_that_ends_normally_leaves_its_group_running() {
    let group = actor::Group::stop_all();
    let ([a, b, _outside], [_, eb, _]) = linked(&group, 5).await;
    let ended = a.monitor();
    drop(a);
    assert_eq!(ended.await, actor::Stop::Finished);
    b.tell(Msg::Push(3)).await.unwrap();
    assert_eq!(b.ask(Msg::Get, T).await.unwrap(), vec![1, 3]);
    assert!(eb.lock().unwrap().is_empty());
    assert_eq!(group.stopped(), None);
}

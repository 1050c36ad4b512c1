//! Behavioural tests of `corral::bus` (paused clock).

use std::time::Duration;

use corral::bus::{Bus, BusError, Lagged, Overflow};
use futures::StreamExt;

#[tokio::test(start_paused = true)]
async fn every_subscriber_gets_every_message_in_order() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>("t").unwrap();
    let subs: Vec<_> = (0..5)
        .map(|_| topic.subscribe(Overflow::Backpressure(3)).unwrap())
        .collect();
    let publisher = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                assert_eq!(topic.publish(i).await.delivered, 5);
            }
        })
    };
    // Each subscriber reads on its own task (a blocked publisher waits for the slowest).
    let readers: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(k, mut sub)| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..100u32 {
                    if k == 2 && i % 10 == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await; // a slow one
                    }
                    got.push(
                        sub.recv()
                            .await
                            .expect("open")
                            .expect("no lag with backpressure"),
                    );
                }
                got
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), (0..100).collect::<Vec<u32>>());
    }
    publisher.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backpressure_makes_the_publisher_wait_for_the_slowest() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>("t").unwrap();
    let mut slow = topic.subscribe(Overflow::Backpressure(2)).unwrap();
    let t = topic.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..5 {
            t.publish(i).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(slow.len(), 2, "the publisher filled the buffer and waits");
    assert!(!publisher.is_finished());
    for i in 0..5 {
        assert_eq!(slow.recv().await, Some(Ok(i)));
    }
    publisher.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_reports_the_lag_before_the_next_message() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>("t").unwrap();
    let mut lossy = topic.subscribe(Overflow::DropOldest(3)).unwrap();
    let mut keeps_up = topic.subscribe(Overflow::DropOldest(100)).unwrap();
    let mut dropped = 0;
    for i in 0..10 {
        dropped += topic.publish(i).await.dropped_oldest;
    }
    assert_eq!(dropped, 7);
    assert_eq!(
        lossy.recv().await,
        Some(Err(Lagged(7))),
        "lag is reported, never silent"
    );
    for i in 7..10 {
        assert_eq!(lossy.recv().await, Some(Ok(i)));
    }
    for i in 0..10 {
        assert_eq!(
            keeps_up.recv().await,
            Some(Ok(i)),
            "one slow subscriber does not cost others"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_a_subscriber_unsubscribes_and_frees_a_blocked_publisher() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>("t").unwrap();
    let full = topic.subscribe(Overflow::Backpressure(1)).unwrap();
    let _other = topic.subscribe(Overflow::DropOldest(1)).unwrap();
    assert_eq!(topic.subscriber_count(), 2);
    topic.publish(1).await;
    let t = topic.clone();
    let blocked = tokio::spawn(async move { t.publish(2).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!blocked.is_finished());
    drop(full);
    let d = blocked.await.unwrap();
    assert_eq!(d.delivered, 1, "only the remaining subscriber got it");
    assert_eq!(topic.subscriber_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn topics_are_typed_and_many_can_be_merged() {
    let bus = Bus::new();
    let a = bus.topic::<String>("a").unwrap();
    let b = bus.topic::<String>("b").unwrap();
    assert_eq!(
        bus.topic::<u8>("a").unwrap_err(),
        BusError::TypeMismatch { topic: "a".into() }
    );
    assert_eq!(
        a.subscribe(Overflow::Backpressure(0)).unwrap_err(),
        BusError::ZeroCapacity
    );
    let mut both = Box::pin(
        bus.subscribe_many::<String>(&["a", "b"], Overflow::Backpressure(8))
            .unwrap(),
    );
    a.publish("from a".into()).await;
    b.publish("from b".into()).await;
    let mut got = [both.next().await.unwrap(), both.next().await.unwrap()];
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(&*got[0].0, "a");
    assert_eq!(got[0].1, Ok("from a".to_string()));
    assert_eq!(&*got[1].0, "b");
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_ends_when_its_topic_is_gone() {
    let bus = Bus::new();
    let topic = bus.topic::<u8>("t").unwrap();
    let mut sub = topic.subscribe(Overflow::Backpressure(4)).unwrap();
    topic.publish(9).await;
    let waiter = tokio::spawn(async move { (sub.recv().await, sub.recv().await) });
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(topic);
    drop(bus);
    assert_eq!(waiter.await.unwrap(), (Some(Ok(9)), None));
}

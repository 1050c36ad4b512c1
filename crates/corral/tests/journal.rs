//! Behavioural tests of `corral::journal`, and of an actor that keeps its state in one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use corral::actor::{self, Actor, Reply, Supervision};
use corral::journal::{Fsync, Journal};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("corral-journal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test]
async fn entries_survive_reopening_and_a_torn_tail_is_cut() {
    let d = dir("torn");
    let (j, r) = Journal::open(&d, Fsync::EveryN(2)).unwrap();
    assert!(r.snapshot.is_none() && r.entries.is_empty());
    for i in 0..5u8 {
        j.append(vec![i; i as usize + 1]).await.unwrap();
    }
    drop(j);
    // A crash mid-append: a header promising 100 bytes, then only 3.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("log"))
        .unwrap();
    f.write_all(&100u32.to_le_bytes()).unwrap();
    f.write_all(&[0; 8]).unwrap();
    f.write_all(b"abc").unwrap();
    drop(f);
    let (j, r) = Journal::open(&d, Fsync::Always).unwrap();
    assert_eq!(
        r.entries,
        (0..5u8)
            .map(|i| vec![i; i as usize + 1])
            .collect::<Vec<_>>()
    );
    assert_eq!(r.repaired_bytes, 15);
    j.append(b"after".to_vec()).await.unwrap();
    drop(j);
    let (_, r) = Journal::open(&d, Fsync::Always).unwrap();
    assert_eq!(r.entries.len(), 6);
    assert_eq!(r.entries[5], b"after");
    assert_eq!(r.repaired_bytes, 0);
}

#[tokio::test]
async fn a_corrupt_record_ends_the_log_at_the_last_good_one() {
    let d = dir("corrupt");
    let (j, _) = Journal::open(&d, Fsync::Always).unwrap();
    j.append(b"one".to_vec()).await.unwrap();
    j.append(b"two".to_vec()).await.unwrap();
    drop(j);
    let mut bytes = std::fs::read(d.join("log")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // flip a bit in "two"
    std::fs::write(d.join("log"), bytes).unwrap();
    let (_, r) = Journal::open(&d, Fsync::Always).unwrap();
    assert_eq!(r.entries, vec![b"one".to_vec()]);
    assert_eq!(r.repaired_bytes, 15);
}

#[tokio::test]
async fn a_snapshot_replaces_the_log() {
    let d = dir("snap");
    let (j, _) = Journal::open(&d, Fsync::Interval(Duration::from_millis(10))).unwrap();
    j.append(b"a".to_vec()).await.unwrap();
    j.snapshot(b"state-with-a".to_vec()).await.unwrap();
    j.append(b"b".to_vec()).await.unwrap();
    drop(j);
    let (_, r) = Journal::open(&d, Fsync::Never).unwrap();
    assert_eq!(r.snapshot.as_deref(), Some(&b"state-with-a"[..]));
    assert_eq!(r.entries, vec![b"b".to_vec()]);
}

/// A key-value store actor whose every acknowledged write is in its journal first.
struct Kv {
    map: BTreeMap<String, String>,
    journal: Journal,
}

enum KvMsg {
    Put(String, String, Reply<std::io::Result<()>>),
    All(Reply<BTreeMap<String, String>>),
    Snapshot(Reply<std::io::Result<()>>),
    Crash,
}

fn encode(map: &BTreeMap<String, String>) -> Vec<u8> {
    map.iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect::<String>()
        .into_bytes()
}

fn apply(map: &mut BTreeMap<String, String>, bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        if let Some((k, v)) = line.split_once('=') {
            map.insert(k.to_string(), v.to_string());
        }
    }
}

impl Kv {
    fn recover(dir: &PathBuf) -> Kv {
        let (journal, rec) = Journal::open(dir, Fsync::Always).expect("journal");
        let mut map = BTreeMap::new();
        if let Some(s) = rec.snapshot {
            apply(&mut map, &s);
        }
        for e in rec.entries {
            apply(&mut map, &e);
        }
        Kv { map, journal }
    }
}

impl Actor for Kv {
    type Msg = KvMsg;
    async fn handle(&mut self, msg: KvMsg) {
        match msg {
            KvMsg::Put(k, v, reply) => {
                // Log first, then apply, then acknowledge.
                let r = self.journal.append(format!("{k}={v}").into_bytes()).await;
                if r.is_ok() {
                    self.map.insert(k, v);
                }
                reply.send(r);
            }
            KvMsg::All(reply) => reply.send(self.map.clone()),
            KvMsg::Snapshot(reply) => reply.send(self.journal.snapshot(encode(&self.map)).await),
            KvMsg::Crash => panic!("killed"),
        }
    }
}

#[tokio::test]
async fn the_kv_store_loses_no_acknowledged_write_across_kills_of_its_actor() {
    let d = dir("kv");
    let dd = d.clone();
    let kv = actor::spawn(
        move || Kv::recover(&dd),
        Supervision::default().backoff(Duration::ZERO, Duration::ZERO),
    )
    .unwrap();
    let t = Duration::from_secs(10);
    let mut acked = BTreeMap::new();
    for i in 0..60 {
        let (k, v) = (format!("k{}", i % 25), format!("v{i}"));
        if kv
            .ask(|r| KvMsg::Put(k.clone(), v.clone(), r), t)
            .await
            .unwrap()
            .is_ok()
        {
            acked.insert(k, v);
        }
        if i % 17 == 5 {
            kv.tell(KvMsg::Crash).await.unwrap(); // the actor dies; its memory is gone
        }
        if i == 30 {
            kv.ask(KvMsg::Snapshot, t).await.unwrap().unwrap();
        }
    }
    assert_eq!(kv.ask(KvMsg::All, t).await.unwrap(), acked);
    // And a brand-new actor over the same directory sees the same.
    drop(kv);
    assert_eq!(Kv::recover(&d).map, acked);
}

//! Pattern: key-value store of actors (book ch. 8) — keys sharded over actors found by name in a
//! registry (the router), each supervised and recovering its state from disk after a crash.
//!
//! Run: `cargo run -p corral --example kv_store`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral::actor::{self, Actor, ActorRef, Registry, Reply, Supervision, SupervisorEvent};
use corral::journal::{Fsync, Journal};

const SHARDS: usize = 3;
const T: Duration = Duration::from_secs(5);

struct Shard {
    map: BTreeMap<String, String>,
    /// `None` when the journal could not be opened: the shard starts empty and refuses writes
    /// (it could not make them durable) rather than failing to start.
    journal: Option<Journal>,
}

enum Msg {
    Set(String, String, Reply<std::io::Result<()>>),
    Get(String, Reply<Option<String>>),
    Crash,
}

impl Shard {
    /// The factory: every (re)start reads the journal back.
    fn recover(dir: &Path) -> Shard {
        let (journal, rec) = match Journal::open(dir, Fsync::Always) {
            Ok((journal, rec)) => (Some(journal), rec.entries),
            Err(e) => {
                eprintln!(
                    "  journal {} cannot be opened ({e}): starting empty, writes refused",
                    dir.display()
                );
                (None, Vec::new())
            }
        };
        let mut map = BTreeMap::new();
        for e in rec {
            if let Some((k, v)) = String::from_utf8_lossy(&e).split_once('=') {
                map.insert(k.to_string(), v.to_string());
            }
        }
        Shard { map, journal }
    }
}

impl Actor for Shard {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Set(k, v, reply) => {
                let r = match &self.journal {
                    Some(j) => j.append(format!("{k}={v}").into_bytes()).await,
                    None => Err(std::io::Error::other(
                        "no journal: the write would not last",
                    )),
                };
                if r.is_ok() {
                    self.map.insert(k, v);
                }
                reply.send(r) // acknowledged only once it is on disk
            }
            Msg::Get(k, reply) => reply.send(self.map.get(&k).cloned()),
            Msg::Crash => panic!("shard crashed"),
        }
    }
}

/// The router: a key's shard, found by name anywhere.
fn shard_for(key: &str) -> Option<ActorRef<Shard>> {
    let n = key.bytes().map(usize::from).sum::<usize>() % SHARDS;
    Registry::global().lookup::<Shard>(&format!("kv-{n}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root: PathBuf = std::env::temp_dir().join(format!("corral-kv-{}", std::process::id()));
    for n in 0..SHARDS {
        let dir = root.join(format!("shard-{n}"));
        let sup = Supervision::default()
            .heartbeat(Duration::from_secs(1))
            .on_event(move |e: SupervisorEvent| println!("  supervisor of kv-{n}: {e:?}"));
        Registry::global().register(
            format!("kv-{n}"),
            actor::spawn(move || Shard::recover(&dir), sup)?,
        );
    }
    for (k, v) in [("alice", "1"), ("bob", "2"), ("carol", "3"), ("dave", "4")] {
        let shard = shard_for(k).ok_or("no shard")?;
        shard.ask(|r| Msg::Set(k.into(), v.into(), r), T).await??;
    }
    // Kill the shard holding "bob": its memory is gone, its journal is not.
    shard_for("bob").ok_or("no shard")?.tell(Msg::Crash).await?;
    for k in ["alice", "bob", "carol", "dave", "erin"] {
        let v = shard_for(k)
            .ok_or("no shard")?
            .ask(|r| Msg::Get(k.into(), r), T)
            .await?;
        println!("{k} = {v:?}");
    }
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

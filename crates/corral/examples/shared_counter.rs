//! Pattern: shared counter (seed 001) — the same counter shared by many tasks two ways: an
//! `Arc<Mutex>` and an actor that owns its state (no lock at all).
//!
//! Run: `cargo run -p corral --example shared_counter`

use std::sync::Arc;
use std::time::Duration;

use corral::actor::{self, Actor, Reply, Supervision};
use corral::exec::Exec;

struct Counter(u64);
enum Msg {
    Inc,
    Get(Reply<u64>),
}
impl Actor for Counter {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Inc => self.0 += 1,
            Msg::Get(r) => r.send(self.0),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exec = Exec::builder().limit(16).build()?;

    let locked = Arc::new(tokio::sync::Mutex::new(0u64));
    let l = locked.clone();
    exec.gather(0..1000, move |_| {
        let l = l.clone();
        async move { *l.lock().await += 1 }
    })
    .await;
    println!("mutex counter: {}", *locked.lock().await);

    let counter = actor::spawn(|| Counter(0), Supervision::default())?;
    let c = counter.clone();
    exec.gather(0..1000, move |_| {
        let c = c.clone();
        async move { c.tell(Msg::Inc).await }
    })
    .await;
    println!(
        "actor counter: {}",
        counter.ask(Msg::Get, Duration::from_secs(1)).await?
    );
    Ok(())
}

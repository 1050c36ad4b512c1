//! Pattern: coordinated shutdown (seed 003) — cancel a token tree, drain tracked tasks up to a
//! deadline, report the ones that did not stop. (A real program calls
//! `listen_for_signals()` so Ctrl-C / SIGTERM trigger it; here a timer does.)
//!
//! Run: `cargo run -p corral --example coordinated_shutdown`

use std::time::Duration;

use corral::shutdown::Shutdown;

#[tokio::main]
async fn main() {
    let shutdown = Shutdown::new();
    for name in ["ingest", "index"] {
        let token = shutdown.token().child_token();
        shutdown.spawn(name, async move {
            let mut ticks = 0;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => ticks += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // flush on the way out
            println!("{name}: stopped cleanly after {ticks} ticks");
        });
    }
    shutdown.spawn(
        "stuck-upload",
        tokio::time::sleep(Duration::from_secs(3600)),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("shutting down (deadline 300 ms)...");
    let report = shutdown.shutdown(Duration::from_millis(300)).await;
    println!(
        "finished: {}, stragglers (aborted): {:?}",
        report.finished, report.stragglers
    );
}

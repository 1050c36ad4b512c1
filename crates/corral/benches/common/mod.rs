//! What the exec benchmarks share: the item loop they time through `Exec`.

use corral::exec::{Exec, Strategy};
use futures::StreamExt;

/// Runs `n` trivial jobs (each returns its item) through an `Exec` of `strategy` and `limit`,
/// summing the results: the executor's own cost per item.
pub async fn sum_through(strategy: Strategy, limit: usize, n: u64) -> u64 {
    let exec = Exec::builder()
        .limit(limit)
        .strategy(strategy)
        .build()
        .expect("config");
    exec.run(futures::stream::iter(0..n), |i| async move { i })
        .fold(0u64, |acc, r| async move { acc + r.unwrap_or(0) })
        .await
}

//! Pattern: waterfall (book ch. 9) — dependent async steps, each using the previous result, the
//! first failure stopping the chain; and many such chains run with bounded concurrency.
//!
//! Run: `cargo run -p corral --example waterfall`

use std::time::Duration;

use corral::exec::Exec;

async fn fetch_user(id: u32) -> Result<String, String> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    if id == 3 {
        Err(format!("user {id} not found"))
    } else {
        Ok(format!("user{id}"))
    }
}

async fn fetch_orders(user: &str) -> Result<Vec<u32>, String> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok((1..=user.len() as u32 % 4 + 1).collect())
}

async fn total(orders: &[u32]) -> Result<u32, String> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(orders.iter().map(|o| o * 10).sum())
}

/// One waterfall: each step feeds the next; `?` stops at the first error.
async fn report(id: u32) -> Result<String, String> {
    let user = fetch_user(id).await?;
    let orders = fetch_orders(&user).await?;
    let sum = total(&orders).await?;
    Ok(format!("{user}: {} orders, total {sum}", orders.len()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exec = Exec::builder().limit(2).build()?;
    for r in exec.gather(1..=5u32, report).await {
        match r? {
            Ok(line) => println!("{line}"),
            Err(e) => println!("stopped: {e}"),
        }
    }
    Ok(())
}

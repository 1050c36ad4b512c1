//! Pattern: TCP echo server (seed 001) — a connection per client, at most N served at once,
//! on 127.0.0.1; a bounded set of clients checks every byte comes back, then the server stops.
//!
//! Run: `cargo run -p corral --example tcp_echo`

use corral::exec::{Exec, Strategy};
use corral::shutdown::Shutdown;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let stop = shutdown.token();
    // Accepted connections as a stream; at most 64 served at once, each on its own task.
    let conns = futures::stream::unfold(listener, |l| async move { Some((l.accept().await, l)) })
        .filter_map(|r| async move { r.ok().map(|(s, _)| s) });
    let server = Exec::builder()
        .strategy(Strategy::Spawn)
        .limit(64)
        .cancel_token(stop)
        .build()?;
    shutdown.spawn("echo-server", async move {
        let mut served = server.run(conns, |mut s: TcpStream| async move {
            let (mut r, mut w) = s.split();
            tokio::io::copy(&mut r, &mut w).await.unwrap_or(0)
        });
        let mut total = 0;
        while let Some(n) = served.next().await {
            total += n.unwrap_or(0);
        }
        println!("server: echoed {total} bytes, stopping");
    });
    let clients = Exec::builder().limit(100).build()?;
    let ok = clients
        .gather(0..200u32, move |i| async move {
            let mut s = TcpStream::connect(addr).await.ok()?;
            let msg = format!("hello from client {i}\n");
            s.write_all(msg.as_bytes()).await.ok()?;
            s.shutdown().await.ok()?;
            let mut back = String::new();
            s.read_to_string(&mut back).await.ok()?;
            Some(back == msg)
        })
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Some(true))))
        .count();
    println!("clients: {ok}/200 got their bytes back");
    let report = shutdown.shutdown(std::time::Duration::from_secs(2)).await;
    println!("shutdown clean: {}", report.is_clean());
    Ok(())
}

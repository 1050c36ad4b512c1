//! Pattern: hyper 1.x on corral's own runtime (*Async Rust* ch. 4) — a loopback HTTP server
//! and a client doing GETs against it, with `Handle` as hyper's executor, `HyperTimer` as its
//! timer and `async-io` sockets through `HyperIo`. No tokio.
//!
//! Run: `cargo run -p corral-runtime --example runtime_http`

use std::convert::Infallible;
use std::net::TcpListener;

use corral_runtime::{Async, HyperIo, HyperTimer, Priority, Runtime};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rt = Runtime::builder().build()?;
    let handle = rt.handle().clone();
    rt.block_on(async {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
        let addr = listener.get_ref().local_addr()?;
        let server_rt = handle.clone();
        let server = handle.spawn(Priority::High, async move {
            while let Ok((stream, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let body = format!("hello from corral's runtime: {}\n", req.uri().path());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(HyperTimer)
                    .serve_connection(HyperIo::new(stream), svc);
                server_rt
                    .spawn(Priority::Normal, async move {
                        let _ = conn.await;
                    })
                    .detach();
            }
        });

        // Client: hyper's connection task is spawned through the runtime handle.
        let io = corral_runtime::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(io)
            .await?;
        hyper::rt::Executor::execute(&handle, async move {
            let _ = conn.await;
        });
        for path in ["/", "/status", "/bye"] {
            sender.ready().await?;
            let req = hyper::Request::get(path)
                .header("host", addr.to_string())
                .body(Empty::new())?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            print!("GET {path} -> {status}: {}", String::from_utf8_lossy(&body));
            if !status.is_success() {
                return Err(format!("GET {path} failed: {status}").into());
            }
        }
        drop(server);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    rt.shutdown();
    Ok(())
}

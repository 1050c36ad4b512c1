//! Pattern: hello-world HTTP server (seed 001) — hyper on 127.0.0.1, connections served under a
//! concurrency bound, queried by a bounded set of clients, then shut down.
//!
//! Run: `cargo run -p corral --example hello_http`

use std::convert::Infallible;

use bytes::Bytes;
use corral::exec::{Exec, Strategy};
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let conns = futures::stream::unfold(listener, |l| async move { Some((l.accept().await, l)) })
        .filter_map(|r| async move { r.ok().map(|(s, _)| s) });
    let server = Exec::builder()
        .strategy(Strategy::Spawn)
        .limit(32)
        .build()?;
    let mut serving = server.run(conns, |stream: TcpStream| async move {
        let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
            let body = format!("hello, {}\n", req.uri().path().trim_start_matches('/'));
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    });
    let server_task = tokio::spawn(async move { while serving.next().await.is_some() {} });

    for name in ["world", "corral"] {
        let stream = TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::get(format!("/{name}"))
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        print!("{}", String::from_utf8_lossy(&body));
    }
    server_task.abort(); // dropping the results stream stops every connection it started
    Ok(())
}

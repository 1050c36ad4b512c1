//! Pattern: raw TCP echo server on corral's own runtime — sockets from `async-io`, no tokio
//! anywhere. 200 loopback clients each send 64 KiB and check every byte
//! comes back; then the runtime shuts down and joins its threads.
//!
//! Run: `cargo run -p corral-runtime --example runtime_echo`

use std::net::{TcpListener, TcpStream};

use corral_runtime::{Async, Priority, Runtime};
use futures::{AsyncReadExt, AsyncWriteExt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().build()?;
    let handle = rt.handle().clone();
    let ok = rt.block_on(async {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
        let addr = listener.get_ref().local_addr()?;
        println!("echo server on {addr}");
        let server_rt = handle.clone();
        // The accept loop at high priority: new connections are never stuck behind echo work.
        let server = handle.spawn(Priority::High, async move {
            while let Ok((stream, _)) = listener.accept().await {
                server_rt
                    .spawn(Priority::Normal, async move {
                        let _ = futures::io::copy(&stream, &mut &stream).await;
                    })
                    .detach();
            }
        });
        let clients: Vec<_> = (0..200u32)
            .map(|i| {
                handle.spawn(Priority::Normal, async move {
                    let payload: Vec<u8> = (0..65_536u32).map(|j| (i ^ j) as u8).collect();
                    let stream = Async::<TcpStream>::connect(addr).await?;
                    // Write and read at the same time: 64 KiB may exceed the socket buffers.
                    let (mut reader, mut writer) = (&stream, &stream);
                    let write = async {
                        writer.write_all(&payload).await?;
                        stream.get_ref().shutdown(std::net::Shutdown::Write)
                    };
                    let mut back = Vec::new();
                    let read = reader.read_to_end(&mut back);
                    futures::try_join!(write, read)?;
                    Ok::<bool, std::io::Error>(back == payload)
                })
            })
            .collect();
        let mut ok = 0;
        for c in clients {
            if matches!(c.await, Ok(Ok(true))) {
                ok += 1;
            }
        }
        drop(server); // dropping the handle cancels the accept loop
        Ok::<_, std::io::Error>(ok)
    })?;
    println!("{ok}/200 clients got their 64 KiB back intact");
    rt.shutdown();
    if ok != 200 {
        return Err("some clients did not get their bytes back".into());
    }
    Ok(())
}

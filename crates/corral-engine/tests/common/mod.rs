//! What the engine's integration tests share: a small HTTP/1.1 server on a loopback port.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Answers 200 `ok` after `latency`, or 500 for paths under `/fail`; keeps connections alive.
/// Returns its base URL and a count of the requests it saw.
pub fn server(latency: Duration) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let h = h.clone();
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(latency);
                    let status = if request.contains(" /fail") {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let _ = write!(out, "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
                }
            });
        }
    });
    (base, hits)
}

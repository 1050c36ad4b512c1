//! `--proxy` and `--no-proxy` through an HTTP and a SOCKS5 proxy that the test runs on
//! loopback and that count what passes through them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

/// Copies both ways between two streams until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let (mut a, mut b) = (a, b);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Write);
    let _ = t.join();
}

/// A proxy on a free loopback port, counting requests; `addresses` records where each was
/// asked to go, as the client named it.
struct Proxy {
    port: u16,
    requests: Arc<AtomicU64>,
    addresses: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// A proxy on a free loopback port: `handle` serves each client connection on a thread of
    /// its own, calling `record` with the address the client asked for.
    fn serve(handle: fn(TcpStream, &dyn Fn(String))) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let addresses: Arc<Mutex<Vec<String>>> = Arc::default();
        let (count, seen) = (requests.clone(), addresses.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (count, seen) = (count.clone(), seen.clone());
                std::thread::spawn(move || {
                    handle(client, &|address| {
                        count.fetch_add(1, Ordering::Relaxed);
                        seen.lock().unwrap().push(address);
                    })
                });
            }
        });
        Proxy {
            port,
            requests,
            addresses,
        }
    }
}

/// An HTTP proxy: absolute-form requests (`GET http://host/path`) are forwarded, one per
/// connection (`Connection: close`), and `CONNECT` is tunnelled.
fn http_proxy() -> Proxy {
    Proxy::serve(|client, record| {
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if !lower.starts_with("proxy-") && !lower.starts_with("connection:") {
                headers.push(h);
            }
        }
        let mut client = client;
        if method == "CONNECT" {
            record(target.to_string());
            let Ok(upstream) = TcpStream::connect(target) else {
                return;
            };
            let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            pipe(client, upstream);
            return;
        }
        let rest = target.strip_prefix("http://").unwrap_or(target);
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        record(authority.to_string());
        let Ok(mut upstream) = TcpStream::connect(authority) else {
            return;
        };
        let mut head = format!(
            "{method} {} HTTP/1.1\r\n",
            if path.is_empty() { "/" } else { path }
        );
        for h in headers {
            head.push_str(&h);
        }
        head.push_str("connection: close\r\n\r\n");
        let _ = upstream.write_all(head.as_bytes());
        // A GET has no body: the answer goes back until the server closes.
        let mut answer = Vec::new();
        let _ = upstream.read_to_end(&mut answer);
        let _ = client.write_all(&answer);
    })
}

/// A SOCKS5 proxy without authentication: one CONNECT per connection, then a tunnel.
fn socks5_proxy() -> Proxy {
    Proxy::serve(|mut client, record| {
        let mut greeting = [0u8; 2];
        if client.read_exact(&mut greeting).is_err() || greeting[0] != 5 {
            return;
        }
        let mut methods = vec![0u8; greeting[1] as usize];
        let _ = client.read_exact(&mut methods);
        let _ = client.write_all(&[5, 0]);
        let mut req = [0u8; 4];
        if client.read_exact(&mut req).is_err() || req[1] != 1 {
            return;
        }
        let host = match req[3] {
            1 => {
                let mut ip = [0u8; 4];
                let _ = client.read_exact(&mut ip);
                std::net::Ipv4Addr::from(ip).to_string()
            }
            3 => {
                let mut len = [0u8; 1];
                let _ = client.read_exact(&mut len);
                let mut name = vec![0u8; len[0] as usize];
                let _ = client.read_exact(&mut name);
                format!("name:{}", String::from_utf8_lossy(&name))
            }
            _ => return,
        };
        let mut port = [0u8; 2];
        let _ = client.read_exact(&mut port);
        let port = u16::from_be_bytes(port);
        record(format!("{host}:{port}"));
        let target = match host.strip_prefix("name:") {
            Some(name) => format!("{name}:{port}"),
            None => format!("{host}:{port}"),
        };
        let Ok(upstream) = TcpStream::connect(target) else {
            let _ = client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
            return;
        };
        let _ = client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        pipe(client, upstream);
    })
}

#[test]
fn every_request_goes_through_an_http_proxy_unless_no_proxy_names_its_host() {
    let mock = Mock::start("fast");
    let proxy = http_proxy();
    let dir = tempfile::tempdir().unwrap();
    let jobs = mock.write_gets(dir.path(), "fast", 20, "");
    let out = dir.path().join("out.jsonl");
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let o = run_quiet(&jobs, &out, &["--proxy", &url]);
    assert_exit(&o, 0);
    let rs = results(&out);
    assert_exactly_once(&rs, 20);
    assert_eq!(proxy.requests.load(Ordering::Relaxed), 20);
    assert!(proxy
        .addresses
        .lock()
        .unwrap()
        .iter()
        .all(|a| *a == mock.key("fast")));
    assert_eq!(mock.stats("fast")["requests"], 20);

    // --no-proxy: the mock's address is reached directly.
    let o = run_quiet(
        &jobs,
        &out,
        &["--proxy", &url, "--no-proxy", "127.0.0.1", "--overwrite"],
    );
    assert_exit(&o, 0);
    assert_eq!(proxy.requests.load(Ordering::Relaxed), 20, "none more");
    assert_eq!(mock.stats("fast")["requests"], 40);
}

#[test]
fn socks5_resolves_names_here_and_socks5h_at_the_proxy() {
    let mock = Mock::start("fast");
    let proxy = socks5_proxy();
    let dir = tempfile::tempdir().unwrap();
    // By name: socks5 sends the address it resolved, socks5h the name.
    let port = mock.key("fast").rsplit(':').next().unwrap().to_string();
    let lines: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"url":"http://localhost:{port}/item/{i}"}}"#))
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    for (scheme, expect) in [
        ("socks5", format!("127.0.0.1:{port}")),
        ("socks5h", format!("name:localhost:{port}")),
    ] {
        proxy.addresses.lock().unwrap().clear();
        let url = format!("{scheme}://127.0.0.1:{}", proxy.port);
        let o = run_quiet(&jobs, &out, &["--proxy", &url, "--overwrite"]);
        assert_exit(&o, 0);
        assert_exactly_once(&results(&out), 5);
        let seen = proxy.addresses.lock().unwrap().clone();
        assert!(
            !seen.is_empty() && seen.iter().all(|a| *a == expect),
            "{scheme}: {seen:?}"
        );
    }
    assert_eq!(mock.stats("fast")["requests"], 10);
}

/// `corral run JOBS -o OUT -q` with only `vars` of the proxy variables set.
fn run_with_env(
    jobs: &std::path::Path,
    out: &std::path::Path,
    vars: &[(&str, &str)],
) -> std::process::Output {
    let mut c = std::process::Command::new(BIN);
    c.args([
        "run",
        "-q",
        path_str(jobs),
        "-o",
        path_str(out),
        "--overwrite",
        "--retries",
        "0",
    ]);
    for v in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    c.envs(vars.iter().copied());
    c.output().unwrap()
}

#[test]
fn https_proxy_from_the_environment_carries_https_and_a_malformed_one_is_refused() {
    let mock = Mock::start("fast");
    let proxy = http_proxy();
    let dir = tempfile::tempdir().unwrap();
    // An https:// job to a plain-HTTP port: its handshake fails, but its CONNECT shows the
    // way it went (the lean client went direct, past HTTPS_PROXY).
    let target = mock.key("fast");
    let jobs = write_jobs(dir.path(), &[format!(r#"{{"url":"https://{target}/x"}}"#)]);
    let out = dir.path().join("out.jsonl");
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let o = run_with_env(&jobs, &out, &[("HTTPS_PROXY", &via)]);
    assert_exit(&o, 1);
    assert_eq!(*proxy.addresses.lock().unwrap(), vec![target.clone()]);

    // Plain HTTP is not HTTPS_PROXY's: it goes direct.
    let plain = mock.write_gets(dir.path(), "fast", 3, "");
    let o = run_with_env(&plain, &out, &[("https_proxy", &via)]);
    assert_exit(&o, 0);
    assert_eq!(proxy.requests.load(Ordering::Relaxed), 1);

    // A value that is no proxy URL is refused at start, named, its value not repeated.
    for bad in ["http://", "http://:pa55word@:8080"] {
        let o = run_with_env(&plain, &out, &[("HTTPS_PROXY", bad)]);
        assert_exit(&o, 2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("HTTPS_PROXY") && !err.contains("pa55word"),
            "{err}"
        );
    }
}

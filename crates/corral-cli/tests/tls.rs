//! TLS options against loopback HTTPS servers whose certificates are made at test time: a
//! private CA is refused without `--cacert` and trusted with it, `--insecure` trusts anything,
//! a server that asks for a client certificate gets `--cert`/`--key`; bad files are named.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A private CA, a server certificate for 127.0.0.1 and localhost, and a client certificate,
/// all signed by it.
struct Pki {
    ca: rcgen::Certificate,
    server: (CertificateDer<'static>, Vec<u8>),
    client_pem: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "corral test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca_cert, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(vec!["corral-client".to_string()]).unwrap();
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client.signed_by(&client_key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca: ca_cert,
        server: (server.der().clone(), server_key.serialize_der()),
        client_pem: (client.pem(), client_key.serialize_pem()),
    }
}

/// An HTTPS server on a free loopback port (hyper: HTTP/1.1, and HTTP/2 when `h2` offers it
/// by ALPN) answering every request `200 ok` once it has read its body, counting the
/// requests that got through the handshake and their HTTP versions. Runs until the test ends.
struct Server {
    addr: SocketAddr,
    answered: Arc<AtomicU64>,
    versions: Arc<std::sync::Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

fn serve(pki: &Pki, client_auth: bool) -> Server {
    serve_with(pki, client_auth, false)
}

fn serve_with(pki: &Pki, client_auth: bool, h2: bool) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server.1.clone()));
    let builder = rustls::ServerConfig::builder();
    let mut config = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    }
    .with_single_cert(vec![pki.server.0.clone()], key)
    .unwrap();
    if h2 {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let versions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, seen) = (answered.clone(), versions.clone());
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count, seen) = (acceptor.clone(), count.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (count, seen) = (count.clone(), seen.clone());
                        async move {
                            seen.lock().unwrap().push(format!("{:?}", req.version()));
                            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                            count.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    Server {
        addr,
        answered,
        versions,
        _rt: rt,
    }
}

/// `corral run` of `n` GETs to `https://127.0.0.1:PORT/`, no retries, with `extra`; the
/// exit code and the results.
fn run_https(
    dir: &std::path::Path,
    server: &Server,
    n: usize,
    extra: &[&str],
) -> (std::process::Output, Vec<serde_json::Value>) {
    let lines: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"url":"https://{}/item/{i}"}}"#, server.addr))
        .collect();
    let jobs = write_jobs(dir, &lines);
    let out = dir.join("out.jsonl");
    let mut args = vec!["--overwrite"];
    if !extra.contains(&"--retries") {
        args.extend(["--retries", "0"]);
    }
    args.extend_from_slice(extra);
    let o = run_quiet(&jobs, &out, &args);
    let rs = if out.exists() {
        results(&out)
    } else {
        Vec::new()
    };
    (o, rs)
}

#[test]
fn a_private_ca_is_refused_without_cacert_and_trusted_with_it() {
    let pki = pki();
    let server = serve(&pki, false);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca.pem()).unwrap();

    // Refused: kind tls, not retried, and not held by the breaker (30 jobs are more than its
    // minimum of 20 calls; counted, they would open it and the rest would wait).
    let (o, rs) = run_https(
        dir.path(),
        &server,
        30,
        &["--retries", "3", "--breaker-max-hold-s", "1"],
    );
    assert_exit(&o, 1);
    for r in &rs {
        assert_eq!(r["error"]["kind"], "tls", "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
    }
    let message = rs[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(server.answered.load(Ordering::Relaxed), 0);

    let (o, rs) = run_https(dir.path(), &server, 3, &["--cacert", path_str(&ca)]);
    assert_exit(&o, 0);
    assert!(rs.iter().all(|r| r["status"] == 200), "{rs:?}");
    assert_eq!(server.answered.load(Ordering::Relaxed), 3);

    let (o, _) = run_https(dir.path(), &server, 3, &["--insecure"]);
    assert_exit(&o, 0);
    assert_eq!(server.answered.load(Ordering::Relaxed), 6);
}

#[test]
fn a_server_that_asks_for_a_client_certificate_gets_cert_and_key() {
    let pki = pki();
    let server = serve(&pki, true);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("client.pem"),
        dir.path().join("client.key"),
    );
    std::fs::write(&ca, pki.ca.pem()).unwrap();
    std::fs::write(&cert, &pki.client_pem.0).unwrap();
    std::fs::write(&key, &pki.client_pem.1).unwrap();

    // Without a client certificate the server refuses it (with TLS 1.3, by an alert after
    // the handshake, where the response should be): kind tls, not connection.
    let (o, rs) = run_https(dir.path(), &server, 2, &["--cacert", path_str(&ca)]);
    assert_exit(&o, 1);
    assert!(rs.iter().all(|r| r["ok"] == false), "{rs:?}");
    assert!(rs.iter().all(|r| r["error"]["kind"] == "tls"), "{rs:?}");
    assert_eq!(server.answered.load(Ordering::Relaxed), 0);

    let (o, rs) = run_https(
        dir.path(),
        &server,
        2,
        &[
            "--cacert",
            path_str(&ca),
            "--cert",
            path_str(&cert),
            "--key",
            path_str(&key),
        ],
    );
    assert_exit(&o, 0);
    assert!(rs.iter().all(|r| r["status"] == 200), "{rs:?}");
    assert_eq!(server.answered.load(Ordering::Relaxed), 2);
}

#[test]
fn a_self_signed_ca_certificate_used_by_a_server_is_explained_in_plain_words() {
    // What `openssl req -x509` makes by default: a self-signed certificate with CA:TRUE,
    // used by the server as its own.
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let pki = Pki {
        server: (cert.der().clone(), key.serialize_der()),
        ca: cert,
        client_pem: (String::new(), String::new()),
    };
    let server = serve(&pki, false);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("self.pem");
    std::fs::write(&ca, pki.ca.pem()).unwrap();
    let (o, rs) = run_https(dir.path(), &server, 1, &["--cacert", path_str(&ca)]);
    assert_exit(&o, 1);
    assert_eq!(rs[0]["error"]["kind"], "tls", "{rs:?}");
    let message = rs[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("CA:TRUE") && message.contains("CA:FALSE"),
        "{message}"
    );
}

#[test]
fn bad_tls_files_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_jobs(
        dir.path(),
        &[r#"{"url":"https://127.0.0.1:1/"}"#.to_string()],
    );
    let out = dir.path().join("out.jsonl");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (args, says) in [
        (vec!["--cacert", path_str(&missing)], "missing.pem"),
        (vec!["--cacert", path_str(&junk)], "--cacert"),
        (
            vec!["--cert", path_str(&junk), "--key", path_str(&junk)],
            "--cert",
        ),
        (vec!["--proxy", "ftp://nowhere"], "--proxy"),
    ] {
        let o = run_quiet(&jobs, &out, &args);
        assert_exit(&o, 2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!out.exists(), "nothing written for {args:?}");
    }
    // --cert without --key is a usage error.
    let o = run_quiet(&jobs, &out, &["--cert", path_str(&junk)]);
    assert_exit(&o, 2);
}

/// A server that offers HTTP/2 gets it (reqwest carries its requests after the lean client's
/// handshake heard `h2`), and a large body goes through reqwest with the same trust.
#[test]
fn http2_by_alpn_and_large_bodies_go_through_reqwest_with_the_same_trust() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca.pem()).unwrap();

    let h2 = serve_with(&pki, false, true);
    let (o, rs) = run_https(dir.path(), &h2, 20, &["--cacert", path_str(&ca)]);
    assert_exit(&o, 0);
    assert!(rs.iter().all(|r| r["status"] == 200), "{rs:?}");
    let versions = h2.versions.lock().unwrap().clone();
    assert_eq!(versions.len(), 20);
    assert!(versions.iter().all(|v| v == "HTTP/2.0"), "{versions:?}");

    // HTTP/1.1 only: small requests on the lean client, a 100 KiB POST through reqwest; both
    // trust the private CA only with --cacert.
    let h1 = serve(&pki, false);
    let big = "x".repeat(100 << 10);
    let lines = vec![
        format!(r#"{{"url":"https://{}/small"}}"#, h1.addr),
        format!(
            r#"{{"method":"POST","url":"https://{}/big","body":"{big}"}}"#,
            h1.addr
        ),
    ];
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("big.jsonl");
    let o = run_quiet(&jobs, &out, &["--retries", "0"]);
    assert_exit(&o, 1);
    let rs = results(&out);
    assert!(rs.iter().all(|r| r["error"]["kind"] == "tls"), "{rs:?}");
    let o = run_quiet(&jobs, &out, &["--cacert", path_str(&ca), "--overwrite"]);
    assert_exit(&o, 0);
    assert_eq!(h1.answered.load(Ordering::Relaxed), 2);
    assert_eq!(*h1.versions.lock().unwrap(), ["HTTP/1.1", "HTTP/1.1"]);
}

//! Logging in to an authenticated NATS server, the ways NATS users give credentials: a user
//! and password or a token in the address, an nkey seed file, TLS with a private CA. Refused
//! without them, as a refusal ([`QueueErrorKind::Auth`]) that names no secret; served with
//! them. Real nats-servers on loopback.

mod common;

use common::NatsServer;
use corral_queue::connect::Access;
use corral_queue::error::QueueErrorKind;
use corral_queue::status::status;
use corral_queue::submit::Submitter;
use corral_queue::url::QueueUrl;

const SECRET: &str = "s3cret-Pa55word";

/// `nats://{creds}127.0.0.1:PORT/run`.
fn queue(nats: &NatsServer, creds: &str) -> QueueUrl {
    QueueUrl::parse(&format!("nats://{creds}127.0.0.1:{}/run", nats.port)).unwrap()
}

/// Refused (kind `Auth`, no secret in the message) and, with `good`, served: a submit's
/// setup (streams, board) and a status read both work.
async fn refused_then_served(bad: &[QueueUrl], good: QueueUrl) {
    for q in bad {
        let e = q.client().await.unwrap_err();
        assert_eq!(e.kind(), QueueErrorKind::Auth, "{e}");
        assert!(
            e.to_string()
                .contains("authentication or authorization failed"),
            "{e}"
        );
        assert!(!e.to_string().contains(SECRET), "{e}");
        assert!(!format!("{e:?}").contains(SECRET), "{e:?}");
    }
    Submitter::connect(&good).await.unwrap();
    assert_eq!(status(&good).await.unwrap().submitted, 0);
}

#[tokio::test]
async fn user_and_password_in_the_address() {
    let nats = NatsServer::start_with(&["--user", "fleet", "--pass", SECRET]);
    let bad = [
        queue(&nats, ""),
        queue(&nats, "fleet:wrong@"),
        queue(&nats, &format!("other:{SECRET}@")),
    ];
    refused_then_served(&bad, queue(&nats, &format!("fleet:{SECRET}@"))).await;
}

#[tokio::test]
async fn a_token_in_the_address() {
    let nats = NatsServer::start_with(&["--auth", SECRET]);
    let bad = [queue(&nats, ""), queue(&nats, "wrong-token@")];
    refused_then_served(&bad, queue(&nats, &format!("{SECRET}@"))).await;
}

#[tokio::test]
async fn an_nkey_seed_file() {
    let user = nkeys::KeyPair::new_user();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let seed = dir.path().join("user.nk");
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    let wrong = dir.path().join("other.nk");
    std::fs::write(&wrong, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let nats = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let with = |nkey: &std::path::Path| {
        queue(&nats, "").with_access(Access {
            nkey: Some(nkey.to_path_buf()),
            ..Access::default()
        })
    };
    refused_then_served(&[queue(&nats, ""), with(&wrong)], with(&seed)).await;
    // A file that holds no seed is the user's mistake, said as such, its content unshown.
    std::fs::write(&wrong, SECRET).unwrap();
    let e = with(&wrong).client().await.unwrap_err();
    assert_eq!(e.kind(), QueueErrorKind::Config, "{e}");
    assert!(!e.to_string().contains(SECRET), "{e}");
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), server.pem()).unwrap();
    std::fs::write(path("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(
        path("nats.conf"),
        format!(
            "tls {{ cert_file: {:?}, key_file: {:?} }}\n",
            path("server.pem"),
            path("server.key")
        ),
    )
    .unwrap();
    let nats = NatsServer::start_with(&["-c", path("nats.conf").to_str().unwrap()]);
    let tls = QueueUrl::parse(&format!("tls://127.0.0.1:{}/run", nats.port)).unwrap();
    // The server's certificate is not trusted without its CA.
    let e = tls.client().await.unwrap_err();
    assert_eq!(e.kind(), QueueErrorKind::Tls, "{e}");
    let trusted = tls.with_access(Access {
        cacert: Some(path("ca.pem")),
        ..Access::default()
    });
    Submitter::connect(&trusted).await.unwrap();
    assert_eq!(status(&trusted).await.unwrap().submitted, 0);
    // --nats-tls with a nats:// address requires it too.
    let required = queue(&nats, "").with_access(Access {
        tls: true,
        cacert: Some(path("ca.pem")),
        ..Access::default()
    });
    required.client().await.unwrap();
}

/// A NATS JWT (`ed25519-nkey`) of `claims`, issued by `issuer` about `subject`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let header = B64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{name}-{subject}"),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = B64.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let sig = B64.encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{sig}")
}

#[tokio::test]
async fn a_creds_file() {
    // Decentralised auth as `nsc` sets it up: an operator, an account with JetStream, a user.
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let op_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let acct_jwt = jwt(
        &operator,
        &account.public_key(),
        "fleet",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let system = nkeys::KeyPair::new_account();
    let sys_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "worker",
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: {op_jwt}\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{ {acct}: {acct_jwt}, {sys}: {sys_jwt} }}\n",
            acct = account.public_key(),
            sys = system.public_key(),
        ),
    )
    .unwrap();
    let creds = |seed: &str| {
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    };
    let good = dir.path().join("worker.creds");
    std::fs::write(&good, creds(&user.seed().unwrap())).unwrap();
    // The right JWT with another user's seed cannot sign the server's nonce.
    let stolen = dir.path().join("stolen.creds");
    std::fs::write(&stolen, creds(&nkeys::KeyPair::new_user().seed().unwrap())).unwrap();
    let nats = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let with = |file: &std::path::Path| {
        queue(&nats, "").with_access(Access {
            creds: Some(file.to_path_buf()),
            ..Access::default()
        })
    };
    refused_then_served(&[queue(&nats, ""), with(&stolen)], with(&good)).await;
    let e = with(&dir.path().join("absent.creds"))
        .client()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), QueueErrorKind::Config, "{e}");
}

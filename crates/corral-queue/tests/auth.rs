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
async fn refused_then_served(nats: &NatsServer, bad: &[QueueUrl], good: QueueUrl) {
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
    drop(nats);
}

#[tokio::test]
async fn user_and_password_in_the_address() {
    let nats = NatsServer::start_with(&["--user", "fleet", "--pass", SECRET]);
    let bad = [
        queue(&nats, ""),
        queue(&nats, "fleet:wrong@"),
        queue(&nats, &format!("other:{SECRET}@")),
    ];
    refused_then_served(&nats, &bad, queue(&nats, &format!("fleet:{SECRET}@"))).await;
}

#[tokio::test]
async fn a_token_in_the_address() {
    let nats = NatsServer::start_with(&["--auth", SECRET]);
    let bad = [queue(&nats, ""), queue(&nats, "wrong-token@")];
    refused_then_served(&nats, &bad, queue(&nats, &format!("{SECRET}@"))).await;
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
    refused_then_served(&nats, &[queue(&nats, ""), with(&wrong)], with(&seed)).await;
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

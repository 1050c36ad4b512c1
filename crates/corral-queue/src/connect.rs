//! How a fleet's process connects to its NATS servers: the credentials the address gives
//! (`USER:PASSWORD@`, `TOKEN@`), a credentials file (`.creds`: a JWT and its nkey seed) or an
//! nkey seed file, and TLS (`tls://`, a private CA, a client certificate) — the ways NATS users
//! give them (`nats --creds`, `--nkey`, `--tlsca`, `--tlscert`, `--tlskey`).
//!
//! Every failure says what kind it is ([`QueueErrorKind`]): a refusal by the server is
//! [`QueueErrorKind::Auth`], which waiting cannot mend, and names no secret — not the
//! password, not the token, not the seed.

use std::path::PathBuf;

use async_nats::{ConnectErrorKind, ConnectOptions};

use crate::error::{QueueError, QueueErrorKind};
use crate::url::{Credentials, QueueUrl};

/// The environment variables that give [`Access`]'s files when their flags are not given.
pub mod env {
    /// `--nats-creds`.
    pub const CREDS: &str = "CORRAL_NATS_CREDS";
    /// `--nats-nkey`.
    pub const NKEY: &str = "CORRAL_NATS_NKEY";
    /// `--nats-tls` (any value but empty, `0` or `false`).
    pub const TLS: &str = "CORRAL_NATS_TLS";
    /// `--nats-cacert`.
    pub const CACERT: &str = "CORRAL_NATS_CACERT";
    /// `--nats-cert`.
    pub const CERT: &str = "CORRAL_NATS_CERT";
    /// `--nats-key`.
    pub const KEY: &str = "CORRAL_NATS_KEY";
}

/// How to reach the servers beyond what the address says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// A `.creds` file: the user's JWT and nkey seed (`--nats-creds`).
    pub creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`) (`--nats-nkey`).
    pub nkey: Option<PathBuf>,
    /// Require TLS even with a `nats://` address (`--nats-tls`).
    pub tls: bool,
    /// PEM file of the CA that signed the servers' certificates (`--nats-cacert`).
    pub cacert: Option<PathBuf>,
    /// PEM client certificate, with [`Access::key`] (`--nats-cert`).
    pub cert: Option<PathBuf>,
    /// PEM key of [`Access::cert`] (`--nats-key`).
    pub key: Option<PathBuf>,
}

fn config(what: impl Into<String>, why: impl ToString) -> QueueError {
    QueueError::of(QueueErrorKind::Config, what, why)
}

/// Whether `e`'s sources hold a TLS error (a certificate the handshake refused): the user's
/// setup to mend, not an outage to wait out.
fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<async_nats::rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
            {
                return true;
            }
        }
        source = err.source();
    }
    false
}

impl QueueUrl {
    /// The client options this address and its [`Access`] say: credentials and TLS. `Err`
    /// when two ways of logging in are given, or a file cannot be read.
    pub(crate) async fn options(&self) -> Result<ConnectOptions, QueueError> {
        let access = self.access();
        let ways = usize::from(self.credentials().is_some())
            + usize::from(access.creds.is_some())
            + usize::from(access.nkey.is_some());
        if ways > 1 {
            return Err(config(
                "connect",
                "give one way to log in: credentials in the queue address, --nats-creds or --nats-nkey",
            ));
        }
        let mut options = ConnectOptions::new().name("corral");
        match self.credentials() {
            Some(Credentials::UserPassword { user, password }) => {
                options = options.user_and_password(user.clone(), password.expose().to_string());
            }
            Some(Credentials::Token(token)) => {
                options = options.token(token.expose().to_string());
            }
            None => {}
        }
        if let Some(path) = &access.creds {
            // Bounded and regular before async-nats reads it whole.
            corral_engine::files::read_option("--nats-creds", path)
                .map_err(|e| config(format!("read --nats-creds {}", path.display()), e))?;
            options = options.credentials_file(path).await.map_err(|e| {
                // The io error names the file, never its content.
                config(format!("read --nats-creds {}", path.display()), e.kind())
            })?;
        }
        if let Some(path) = &access.nkey {
            let what = || format!("read --nats-nkey {}", path.display());
            let seed = corral_engine::files::read_option_text("--nats-nkey", path)
                .map_err(|e| config(what(), e))?;
            let seed = seed.trim();
            if !seed.starts_with('S') || nkeys::KeyPair::from_seed(seed).is_err() {
                return Err(config(what(), "not an nkey seed (a line starting with S)"));
            }
            options = options.nkey(seed.to_string());
        }
        if self.tls() || access.tls {
            options = options.require_tls(true);
        }
        if let Some(ca) = &access.cacert {
            if !ca.is_file() {
                return Err(config(
                    format!("--nats-cacert {}", ca.display()),
                    "no such file",
                ));
            }
            options = options.add_root_certificates(ca.clone());
        }
        match (&access.cert, &access.key) {
            (Some(cert), Some(key)) => {
                for f in [cert, key] {
                    if !f.is_file() {
                        return Err(config(
                            format!("--nats-cert/--nats-key {}", f.display()),
                            "no such file",
                        ));
                    }
                }
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => return Err(config("connect", "--nats-cert and --nats-key go together")),
        }
        // What the server says later (a permission denied to this user) is logged: it names
        // subjects, never credentials.
        options = options.event_callback(|event| async move {
            if let async_nats::Event::ServerError(e) = event {
                tracing::warn!("the NATS server says: {e}");
            }
        });
        Ok(options)
    }

    /// A client connected to one of the queue's servers (the first that answers; it fails
    /// over to the others later).
    pub async fn client(&self) -> Result<async_nats::Client, QueueError> {
        let options = self.options().await?;
        let servers: Vec<String> = self
            .servers()
            .iter()
            .map(|s| format!("{}://{s}", if self.tls() { "tls" } else { "nats" }))
            .collect();
        let what = format!("connect to {}", self.servers().join(","));
        options.connect(servers).await.map_err(|e| {
            let kind = match e.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    return QueueError::of(
                        QueueErrorKind::Auth,
                        what.clone(),
                        "authentication or authorization failed (check the queue's user, password or token, --nats-creds or --nats-nkey)",
                    )
                }
                ConnectErrorKind::Tls => QueueErrorKind::Tls,
                // A certificate refused in the handshake comes as an io error around rustls's.
                _ if tls_refused(&e) => QueueErrorKind::Tls,
                ConnectErrorKind::ServerParse => QueueErrorKind::Config,
                ConnectErrorKind::Dns
                | ConnectErrorKind::TimedOut
                | ConnectErrorKind::Io
                | ConnectErrorKind::MaxReconnects => QueueErrorKind::Unreachable,
            };
            QueueError::of(kind, what.clone(), corral_engine::redact::text(&e.to_string()))
        })
    }
}

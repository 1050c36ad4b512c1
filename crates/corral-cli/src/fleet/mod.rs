//! The commands of a run shared by many workers on NATS JetStream: `submit`, `worker`,
//! `collect`, `status`, and `run --queue` (submit, then collect with a progress bar). The
//! work itself is `corral-queue`'s; here are the flags, the checks of what a fleet does not
//! share, and what is printed.

pub(crate) mod collect;
pub(crate) mod purge;
pub(crate) mod status;
pub(crate) mod submit;
pub(crate) mod worker;

use std::path::PathBuf;

use clap::Args;
use corral_queue::connect::{env, Access};
use corral_queue::error::{QueueError, QueueErrorKind};
use corral_queue::sign::QueueKey;
use corral_queue::url::{QueueUrl, ENV};

use crate::exit::{code as exit, Fail};
use corral_engine::settings::RateSetting;
use corral_engine::settings::Settings;

/// `--queue`, shared by the fleet's commands.
#[derive(Args, Clone)]
pub(crate) struct QueueArg {
    /// The run's queue, nats://[USER:PASSWORD@|TOKEN@]HOST[:PORT][,HOST:PORT...]/RUN, or
    /// tls://... (default: $CORRAL_QUEUE)
    #[arg(long, value_name = "nats://HOST:PORT/RUN")]
    pub(crate) queue: Option<String>,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

impl QueueArg {
    /// The queue from `--queue` or `CORRAL_QUEUE`, with its access and key; an error naming
    /// both when neither gives a good one.
    pub(crate) fn url(&self) -> Result<QueueUrl, Fail> {
        let queue = parse(self.queue.as_deref())?.ok_or_else(|| {
            Fail(
                exit::BAD_INPUT,
                corral_queue::url::QueueUrlError::Missing.to_string(),
            )
        })?;
        self.nats.apply(queue)
    }
}

/// How to reach an authenticated or TLS NATS server, and the fleet's signing key: what every
/// fleet command (and `run --queue`) takes besides `--queue`.
#[derive(Args, Clone, Default, Debug, PartialEq)]
pub(crate) struct NatsArgs {
    /// A NATS credentials file (.creds: the user's JWT and nkey seed)
    #[arg(long, value_name = "FILE", env = env::CREDS, hide_env_values = true)]
    pub(crate) nats_creds: Option<PathBuf>,
    /// A file holding the user's nkey seed (SU...)
    #[arg(long, value_name = "FILE", env = env::NKEY, hide_env_values = true)]
    pub(crate) nats_nkey: Option<PathBuf>,
    /// Require TLS to the NATS servers (as a tls:// address does)
    #[arg(long, env = env::TLS, hide_env_values = true)]
    pub(crate) nats_tls: bool,
    /// PEM file of the CA that signed the NATS servers' certificates
    #[arg(long, value_name = "FILE", env = env::CACERT, hide_env_values = true)]
    pub(crate) nats_cacert: Option<PathBuf>,
    /// PEM client certificate for the NATS servers (with --nats-key)
    #[arg(long, value_name = "FILE", env = env::CERT, hide_env_values = true)]
    pub(crate) nats_cert: Option<PathBuf>,
    /// PEM key of --nats-cert
    #[arg(long, value_name = "FILE", env = env::KEY, hide_env_values = true)]
    pub(crate) nats_key: Option<PathBuf>,
    /// A file holding the fleet's key (at least 16 bytes; default: $CORRAL_QUEUE_KEY): jobs,
    /// results and the run's options are signed with it, and what is not is refused
    #[arg(long, value_name = "FILE")]
    pub(crate) queue_key_file: Option<PathBuf>,
}

impl NatsArgs {
    /// `queue`, reached and signed as these options say.
    pub(crate) fn apply(&self, queue: QueueUrl) -> Result<QueueUrl, Fail> {
        let key = QueueKey::from_file_or_env(self.queue_key_file.as_deref()).map_err(queue_fail)?;
        Ok(queue
            .with_access(Access {
                creds: self.nats_creds.clone(),
                nkey: self.nats_nkey.clone(),
                tls: self.nats_tls,
                cacert: self.nats_cacert.clone(),
                cert: self.nats_cert.clone(),
                key: self.nats_key.clone(),
            })
            .with_key(key))
    }
}

/// A queue error as a command's end: a refusal (credentials, permissions), a bad file or key,
/// a forgery or a second collector is bad usage (2); anything else is fatal (3).
pub(crate) fn queue_fail(e: QueueError) -> Fail {
    let code = match e.kind() {
        QueueErrorKind::Auth
        | QueueErrorKind::Tls
        | QueueErrorKind::Config
        | QueueErrorKind::Forged
        | QueueErrorKind::Version
        | QueueErrorKind::Busy => exit::BAD_INPUT,
        _ => exit::FATAL,
    };
    Fail(code, e.to_string())
}

/// The queue of `flag`, else of `CORRAL_QUEUE`; `None` when neither is set. A number (the
/// old `--queue N`) gets an error saying where that option went.
pub(crate) fn parse(flag: Option<&str>) -> Result<Option<QueueUrl>, Fail> {
    let from_env = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty());
    let (text, source) = match (flag, &from_env) {
        (Some(f), _) => (f.to_string(), "--queue"),
        (None, Some(e)) => (e.clone(), ENV),
        (None, None) => return Ok(None),
    };
    if text.trim().parse::<u64>().is_ok() {
        return Err(Fail(
            exit::BAD_INPUT,
            format!(
                "{source} {text}: --queue now takes a NATS queue, nats://HOST:PORT/RUN; jobs held at once is --queue-size"
            ),
        ));
    }
    QueueUrl::parse(&text)
        .map(Some)
        .map_err(|e| Fail(exit::BAD_INPUT, format!("{source}: {e}")))
}

/// Refuses to store a secret on the server: `submit`'s options go to the board, which anyone
/// who can read the run's bucket sees. Secret headers (by name, as results redact them), and
/// credentials in the proxy's or the base URL's address, belong to the workers
/// (`corral worker -H` or its own `--config`). The error names the option, never the value.
pub(crate) fn check_no_secrets(o: &Settings) -> Result<(), String> {
    let to_workers = "it would be stored on the NATS server for every worker to read; give it to the workers instead (`corral worker --config FILE` with [hosts.\"HOST\"] header = [...], or corral worker -H with --headers-to-any-host)";
    if let Some(h) = o
        .headers
        .iter()
        .find(|h| corral_engine::redact::is_secret_header(h.name.as_str()))
    {
        return Err(format!("-H {}: is a secret header: {to_workers}", h.name));
    }
    for rule in &o.hosts {
        let pattern = rule.pattern.to_string();
        if let Some(name) = rule
            .settings
            .headers
            .keys()
            .find(|n| corral_engine::redact::is_secret_header(n.as_str()))
        {
            return Err(format!(
                "[hosts.{pattern:?}] header {name}: is a secret header: {to_workers}"
            ));
        }
    }
    if o.cert.is_some() || o.key.is_some() {
        return Err(format!(
            "--cert/--key: a client certificate's key is a secret: {to_workers} (`cert` and `key` in its --config)"
        ));
    }
    let has_credentials = |u: &str| {
        url::Url::parse(u.trim()).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
    };
    if o.proxy.as_deref().is_some_and(has_credentials) {
        return Err(format!(
            "--proxy with user:password@: {to_workers} (`proxy` in its --config)"
        ));
    }
    if let Some(base) = &o.base_url {
        let redacted = corral_engine::redact::url(base);
        if !base.username().is_empty() || base.password().is_some() || redacted != base.as_str() {
            return Err(format!(
                "--base-url {redacted}: holds credentials or a secret parameter: {to_workers}"
            ));
        }
    }
    Ok(())
}

/// Refuses options a fleet would enforce per worker while the user means the whole run: the
/// trap of per-worker limits. The per-host rate and cost rate, pauses and breakers are shared
/// (see `corral_queue::hosts`); `--per-host-concurrency` is per worker, as documented.
pub(crate) fn check_shareable(s: &Settings) -> Result<(), String> {
    let per_worker = |option: &str| {
        format!(
            "{option} is not shared by the workers of a queue (each would allow it alone); use --per-host-rate or --per-host-cost-rate, which are"
        )
    };
    if s.rate.is_some() {
        return Err(per_worker("--rate"));
    }
    if s.cost_rate.is_some() {
        return Err(per_worker("--cost-rate"));
    }
    if s.halt_after_failures.is_some() || s.halt_on_failure_rate.is_some() {
        return Err(
            "--halt-after-failures and --halt-on-failure-rate are not supported with --queue (each worker would judge alone)"
                .into(),
        );
    }
    if s.max_cost.is_some() || s.max_requests.is_some() {
        return Err(
            "--max-cost and --max-requests are not supported with --queue (each worker would count alone)"
                .into(),
        );
    }
    if matches!(s.per_host_rate, Some(RateSetting::Auto(_))) {
        return Err(
            "--per-host-rate auto is not supported with --queue (each worker would find its own rate); give the rate, e.g. 50/s".into(),
        );
    }
    if s.save_body_dir.is_some() {
        return Err(
            "--save-body-dir writes on each worker's disk; with --queue use --save-body".into(),
        );
    }
    if let Some(rule) = s
        .hosts
        .iter()
        .find(|r| matches!(r.settings.rate, Some(RateSetting::Auto(_))))
    {
        return Err(format!(
            "[hosts.\"{}\"] rate = auto is not supported with --queue",
            rule.pattern
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_no_secrets, check_shareable};
    use crate::flags::{options_of, plan_of};

    /// What would put a secret on the server is refused by option name, never quoting it.
    #[test]
    fn secrets_are_refused_before_they_reach_the_board() {
        for (args, config, want) in [
            (
                &["-H", "Authorization: Bearer sk-1"][..],
                None,
                "-H authorization",
            ),
            (
                &["--proxy", "http://u:sk-1@p:3128"],
                None,
                "--proxy with user:password@",
            ),
            (&["--cert", "c.pem", "--key", "k.pem"], None, "--cert/--key"),
            (
                &[],
                Some("[hosts.\"a.example\"]\nheader = [\"X-Api-Key: sk-1\"]\n"),
                "header x-api-key",
            ),
        ] {
            let o = options_of(args, config).unwrap();
            let e = check_no_secrets(&o).expect_err(want);
            assert!(e.contains(want), "{args:?}: {e}");
            assert!(!e.contains("sk-1"), "{e}");
        }
        check_no_secrets(&options_of(&["-H", "X-Team: t1"], None).unwrap()).unwrap();
    }

    /// What a fleet cannot share is refused on the typed values, whichever way it was written.
    #[test]
    fn per_worker_settings_are_refused_for_a_fleet() {
        for (args, config, want) in [
            (&["--rate", "50/s"][..], None, "--rate is not shared"),
            (
                &["--cost-rate", "9000/min"],
                None,
                "--cost-rate is not shared",
            ),
            (
                &["--halt-after-failures", "5"],
                None,
                "--halt-after-failures",
            ),
            (&["--per-host-rate", "auto"], None, "--per-host-rate auto"),
            (
                &["--per-host-rate", " auto:20/s"],
                None,
                "--per-host-rate auto",
            ),
            (&["--save-body-dir", "bodies"], None, "--save-body-dir"),
            (&["--max-cost", "100"], None, "--max-cost"),
            (
                &[],
                Some("[hosts.\"*.a.example\"]\nrate = \"auto:5/s\"\n"),
                "[hosts.\"*.a.example\"] rate = auto",
            ),
        ] {
            let plan = plan_of(args, config).expect("a good run");
            let e = check_shareable(&plan).expect_err(want);
            assert!(e.contains(want), "{args:?}: {e}");
        }
        // The shared limits pass.
        let plan = plan_of(
            &[
                "--per-host-rate",
                "50/s",
                "--per-host-cost-rate",
                "9000/min",
            ],
            Some("[hosts.\"a.example\"]\nrate = \"5/s\"\n"),
        )
        .unwrap();
        check_shareable(&plan).unwrap();
    }
}

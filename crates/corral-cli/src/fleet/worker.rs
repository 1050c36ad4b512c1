//! `corral worker`: run a queue's jobs through the same engine as `corral run`, under the
//! run's options and the limits the fleet shares, until stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use corral::shutdown::Shutdown;
use corral_engine::hosts::HostTable;
use corral_engine::job::{Format, Input};
use corral_engine::run::Ending;
use corral_engine::settings::{HeaderLine, HostPattern, Settings};
use corral_queue::hosts::FleetHosts;
use corral_queue::worker::Worker;

use super::{check_shareable, queue_fail, QueueArg};
use crate::exit::{code as exit, fail, Fail};
use crate::flags::{load_config, parse_headers, plan};
use crate::metrics::{self, Latest};

pub(crate) const WORKER_EXAMPLES: &str = "\
Examples:
  corral worker --queue nats://10.0.0.5:4222/batch1 -c 64
  CORRAL_QUEUE=nats://10.0.0.5:4222/batch1 corral worker --metrics-addr 0.0.0.0:9464
  corral worker --queue nats://10.0.0.5:4222/batch1 --config worker.toml

A worker's secrets stay on its machine and go only to the hosts they are for: its --config
names them ([hosts.\"api.example.com\"] header = [\"Authorization: Bearer ...\"]; also proxy,
no_proxy, cacert, cert, key), and -H headers go to each host of that config. A -H without such
a config would go to every host a job names: it is refused unless --headers-to-any-host.
Without the fleet's key ($CORRAL_QUEUE_KEY or --queue-key-file) anyone who can publish on the
queue can make this worker send requests: the worker says so when it starts.

A worker runs until Ctrl-C / SIGTERM (jobs under way finish, their results are stored, then
acked) or until it is killed (its unacked jobs go to other workers after --ack-wait-s). It waits
for `corral submit` if the run does not exist yet.";

#[derive(Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) queue: QueueArg,
    /// Jobs under way at once in this worker [default: the run's -c]
    #[arg(long, short = 'c')]
    pub(crate) concurrency: Option<usize>,
    /// Threads that run requests [default: the run's, else one per CPU]
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Jobs held at once, running or waiting for their host [default: the run's]
    #[arg(long)]
    pub(crate) queue_size: Option<usize>,
    /// Extra request header, `Name: value` (repeatable), sent only to the hosts of this
    /// worker's --config (or to every host, with --headers-to-any-host): secrets given here
    /// stay on this machine
    #[arg(long = "header", short = 'H')]
    pub(crate) header: Vec<String>,
    /// Send -H headers to every host a job names, not only to the hosts of --config
    #[arg(long)]
    pub(crate) headers_to_any_host: bool,
    /// This worker's own TOML config: [hosts."PATTERN"] header = [...] (its secrets, sent
    /// only to the hosts they match), proxy, no_proxy, cacert, cert, key. The run's limits
    /// are the run's (corral submit).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Serve Prometheus text metrics at this address, e.g. 0.0.0.0:9464
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

pub(crate) async fn worker_cmd(args: WorkerArgs) -> Result<u8, Fail> {
    let queue = args.queue.url()?;
    // The worker's own settings are checked before it takes any job.
    let own = match &args.config {
        Some(path) => worker_config(path)?,
        None => Settings::default(),
    };
    // The config file's top-level `header` lines, then -H.
    let mut headers = own.header_map();
    for (name, value) in &parse_headers(&args.header).map_err(fail(exit::BAD_INPUT))? {
        headers.append(name, value.clone());
    }
    if !headers.is_empty() && own.hosts.is_empty() && !args.headers_to_any_host {
        return Err(Fail(
            exit::BAD_INPUT,
            "-H: a worker's headers go only to the hosts of its --config ([hosts.\"api.example.com\"]); \
             name them there, or say --headers-to-any-host to send these to every host a job names"
                .into(),
        ));
    }
    let quiet = args.quiet;
    if queue.key().is_none() && !quiet {
        eprintln!(
            "corral worker: warning: jobs are not authenticated: anyone who can publish on {queue} can make this worker send requests; give the fleet a key ({} or --queue-key-file)",
            corral_queue::sign::KEY_ENV
        );
    }
    let mut worker = Worker::connect(&queue).await.map_err(queue_fail)?;
    let info = worker
        .run_info(|| {
            if !quiet {
                eprintln!("corral worker: waiting for `corral submit` to {queue}");
            }
        })
        .await
        .map_err(queue_fail)?;
    let record = info.settings().map_err(queue_fail)?;
    let mut settings = record.settings;
    // This worker's own size, over the run's.
    if let Some(c) = args.concurrency {
        settings.concurrency = c;
    }
    settings.threads = args.threads.or(settings.threads);
    settings.queue_size = args.queue_size.or(settings.queue_size);
    // The worker's own way to the hosts, over the run's: its proxy, its CAs beside the run's,
    // its client certificate (a secret, which never travels with the run).
    if own.proxy.is_some() {
        settings.proxy = own.proxy.clone();
    }
    if own.no_proxy.is_some() {
        settings.no_proxy = own.no_proxy.clone();
    }
    // The run's CA certificates (their contents) and this worker's own files, read by `plan`.
    settings.tls.ca_pem = record.ca_pem;
    settings.cacert = own.cacert.clone();
    (settings.cert, settings.key) = (own.cert.clone(), own.key.clone());
    if args.headers_to_any_host {
        settings
            .headers
            .extend(headers.iter().map(|(name, value)| HeaderLine {
                name: name.clone(),
                value: value.clone(),
            }));
    }
    let mut plan = plan(settings).map_err(fail(exit::BAD_INPUT))?;
    check_shareable(&plan).map_err(fail(exit::BAD_INPUT))?;
    plan.scoped_headers = scoped_headers(&own, &headers, args.headers_to_any_host);

    let table = Arc::new(
        FleetHosts::start(&plan, worker.board().clone(), worker.id())
            .await
            .map_err(fail(exit::FATAL))?,
    );
    worker.report_hosts(table.clone());
    let run = crate::run::build_with(&plan, Some(table.clone() as Arc<dyn HostTable>))
        .map_err(fail(exit::BAD_INPUT))?;
    let input = Input {
        format: if record.urls {
            Format::Urls
        } else {
            Format::Jsonl
        },
        headers: plan.header_map(),
        base_url: plan.base_url.clone(),
    };

    let latest = Latest::default();
    let _metrics = match args.metrics_addr {
        Some(addr) => Some(
            metrics::serve(
                addr,
                metrics::engine(latest.clone(), table, Some(worker.counters())),
            )
            .await
            .map_err(|e| Fail(exit::BAD_INPUT, format!("--metrics-addr {addr}: {e}")))?,
        ),
        None => None,
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.listen_for_signals() {
        eprintln!("corral worker: cannot install signal handlers: {e}");
    }
    if !quiet {
        eprintln!("corral worker {}: running jobs of {queue}", worker.id());
    }
    let report = worker
        .run_observed(run, input, shutdown.token(), &mut latest.clone())
        .await
        .map_err(fail(exit::FATAL))?;
    if !quiet {
        let s = &report.stats;
        eprintln!(
            "corral worker {}: stopped after {} jobs ({} ok, {} failed, {} retries)",
            worker.id(),
            s.done,
            s.ok,
            s.failed,
            s.retries
        );
    }
    Ok(match report.ending {
        Ending::Fatal(e) => {
            eprintln!("corral worker: {e}");
            exit::FATAL
        }
        _ => exit::INTERRUPTED,
    })
}

/// What a worker's own `--config` may set: its secrets and how it reaches the hosts. The run's
/// limits, retries and the rest are the run's, from `corral submit`.
const WORKER_KEYS: [&str; 7] = [
    "header", "hosts", "proxy", "no_proxy", "cacert", "cert", "key",
];

/// A worker's own config file, refused when it sets anything but [`WORKER_KEYS`] (or, in a
/// `[hosts]` table, anything but `header`): such a setting would silently differ from the
/// run's on this worker alone.
fn worker_config(path: &Path) -> Result<Settings, Fail> {
    let bad = |m: String| {
        Fail(
            exit::BAD_INPUT,
            format!("worker --config {}: {m}", path.display()),
        )
    };
    let own =
        load_config(path).map_err(|e| Fail(exit::BAD_INPUT, format!("worker --config: {e}")))?;
    let set = |v: &serde_json::Value| {
        !(v.is_null()
            || v == &serde_json::Value::Bool(false)
            || v.as_array().is_some_and(Vec::is_empty)
            || v.as_object().is_some_and(serde_json::Map::is_empty))
    };
    let json = serde_json::to_value(&own).map_err(|e| bad(e.to_string()))?;
    let default = serde_json::to_value(Settings::default()).map_err(|e| bad(e.to_string()))?;
    for (key, value) in json.as_object().into_iter().flatten() {
        let given = default.get(key) != Some(value);
        if given && !WORKER_KEYS.contains(&key.as_str()) {
            return Err(bad(format!(
                "`{key}` is the run's setting, given to corral submit; a worker's config holds {}",
                WORKER_KEYS.join(", ")
            )));
        }
    }
    for rule in &own.hosts {
        let pattern = rule.pattern.to_string();
        let json = serde_json::to_value(&rule.settings).map_err(|e| bad(e.to_string()))?;
        for (key, value) in json.as_object().into_iter().flatten() {
            if set(value) && key != "header" {
                return Err(bad(format!(
                    "[hosts.{pattern:?}] {key}: the run's setting, given to corral submit; a worker's [hosts] tables hold header only"
                )));
            }
        }
    }
    Ok(own)
}

/// The worker's headers by host: each `[hosts]` table's own, and `headers` (`-H` and the
/// config's top-level `header`) for every one of them, unless those go to any host.
fn scoped_headers(
    own: &Settings,
    headers: &http::HeaderMap,
    to_any_host: bool,
) -> Vec<(HostPattern, http::HeaderMap)> {
    own.hosts
        .iter()
        .map(|rule| {
            let mut h = rule.settings.headers.clone();
            if !to_any_host {
                for (name, value) in headers {
                    h.append(name, value.clone());
                }
            }
            (rule.pattern.clone(), h)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_config_holds_its_secrets_and_nothing_of_the_runs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(
            &p,
            "proxy = \"http://u:p@proxy:3128\"\n[hosts.\"api.example.com\"]\nheader = [\"Authorization: Bearer s3cret\"]\n",
        )
        .unwrap();
        let own = worker_config(&p).unwrap();
        let team = parse_headers(&["X-Team: a".into()]).unwrap();
        let scoped = scoped_headers(&own, &team, false);
        assert_eq!(scoped.len(), 1);
        let (pattern, h) = &scoped[0];
        assert!(pattern.matches("api.example.com:443") && !pattern.matches("other.com:443"));
        assert_eq!(h.get("authorization").unwrap(), "Bearer s3cret");
        assert_eq!(h.get("x-team").unwrap(), "a");
        // With --headers-to-any-host, -H goes to every host instead.
        let scoped = scoped_headers(&own, &team, true);
        assert!(scoped[0].1.get("x-team").is_none());
        for (text, named) in [
            ("retries = 9\n", "`retries`"),
            ("[hosts.\"a.com\"]\nrate = \"5/s\"\n", "rate"),
        ] {
            std::fs::write(&p, text).unwrap();
            let Fail(code, m) = worker_config(&p).err().unwrap();
            assert_eq!(code, exit::BAD_INPUT);
            assert!(m.contains(named), "{m}");
        }
    }
}

//! The options of `corral run`. The engine's [`Settings`] declares each one once — its doc is
//! the flag's help, its `arg` attribute the flag, its serde name the config file's key — so
//! there is no second list here: [`SettingsFlags`] lays the flags given over the config file's
//! settings (or the defaults), and [`plan`] checks them. Here are only the command's own
//! arguments (files, resume, format, queue).

use std::path::{Path, PathBuf};

use clap::{ArgAction, Args, FromArgMatches};
use http::header::HeaderMap;

use corral_engine::error::ErrorKind;
use corral_engine::redact;
use corral_engine::settings::Settings;
use corral_engine::sink::RetryFailed;

pub(crate) const RUN_EXAMPLES: &str = "\
Examples:
  corral run jobs.jsonl -o results.jsonl
  corral run jobs.jsonl -o results.jsonl --resume          # after a crash or Ctrl-C
  corral run urls.txt --urls --per-host-rate 50/s --per-host-concurrency 4 -o out.jsonl
  cat jobs.jsonl | corral run - --rate 3000/min --retries 5 --header 'Authorization: Bearer $T'
  corral run jobs.jsonl --config corral.toml -o out.jsonl --summary-json summary.json
  corral run jobs.jsonl -o out.jsonl --report report.html   # then open report.html

A job line: {\"id\"?, \"method\"?, \"url\", \"headers\"?, \"body\"? | \"json\"?, \"timeout_ms\"?, \"cost\"?,
  \"require\"?, \"meta\"?}
A result line: {\"line\", \"id\", \"method\", \"url\", \"ok\", \"status\", \"attempts\", \"latency_ms\",
  \"ttfb_ms\"?, \"elapsed_ms\", \"started_at\", \"events\"?, \"ttfe_ms\"?, \"redirects\"?, \"final_url\"?, \"opened_breaker\"?, \"paused_host\"?,
  \"error\"?: {\"kind\", \"message\"},
  \"body_bytes\"?, \"truncated\"?, \"headers\"?, \"body\"?, \"cost\"?, \"extract\"?, \"meta\"?}
Secrets (Authorization, Cookie, *token*, *key* headers; key/token query values) never reach
results or logs. Resume identifies jobs by input line number: resume with the same jobs file.";

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The jobs file (JSONL, or one URL per line with --urls); `-` reads standard input.
    pub(crate) jobs: PathBuf,
    /// Results file (JSONL). Without it, results go to standard output.
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// The input is one URL per line (GET), `#` starts a comment line.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) urls: bool,
    /// The input is CSV: the first line names the columns, each further line is one job, its
    /// fields filled into --template.
    #[arg(long, requires = "template")]
    pub(crate) csv: bool,
    /// With --csv: a JSON job with {column} placeholders ({{ and }} for braces), or @FILE, e.g.
    /// '{"url": "https://api.example.com/users/{id}", "json": {"name": "{name}"}}'.
    #[arg(long, value_name = "JSON", requires = "csv")]
    pub(crate) template: Option<String>,
    /// The results file exists: skip the jobs it already holds, repair a torn last line, run the rest.
    #[arg(long, conflicts_with = "overwrite")]
    pub(crate) resume: bool,
    /// The results file exists: start over, discarding it.
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// With --resume: lines of the results file that are not results of this jobs file (torn,
    /// foreign, or naming a line the input does not have) are moved to RESULTS.rejected and
    /// their jobs run again, instead of refusing to resume.
    #[arg(long, requires = "resume")]
    pub(crate) repair: bool,
    /// With --resume: run again the jobs whose result failed, or only those that failed with
    /// these kinds (e.g. timeout,http_status). Their old results move to RESULTS.retried; the
    /// file keeps one line per job, the newest. `interrupted` (a POST/PATCH a killed run may
    /// have sent) is sent again only when named.
    #[arg(
        long,
        requires = "resume",
        num_args = 0..=1,
        value_delimiter = ',',
        value_name = "KINDS"
    )]
    pub(crate) retry_failed: Option<Vec<String>>,
    /// A TOML file with any of the options below (names with `_`); command-line options win.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// How result lines are written: jsonl, or csv (one row per job after a header row: the
    /// JSONL keys whose values are scalars; --resume and `corral report` read JSONL only)
    #[arg(long, value_enum, default_value = "jsonl", conflicts_with = "resume")]
    pub(crate) format: ResultsFormatArg,
    /// Write the final summary as JSON to this file.
    #[arg(long)]
    pub(crate) summary_json: Option<PathBuf>,
    /// At the end, write an HTML report of the results file (needs -o) to this file, as
    /// `corral report RESULTS --html FILE` would.
    #[arg(long, value_name = "FILE", requires = "output")]
    pub(crate) report: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Send nothing: read and check the jobs (all, or the first N), print each request as it
    /// would go (secrets redacted) and a table per host with the least time its limits allow;
    /// exit 1 when some line is not a valid job. No results file is opened
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0", conflicts_with = "queue")]
    pub(crate) dry_run: Option<u64>,
    /// Run on a NATS JetStream queue instead of here: submit the jobs to it and collect the
    /// results into -o as `corral worker`s elsewhere run them (default: $CORRAL_QUEUE)
    #[arg(long, value_name = "nats://HOST:PORT/RUN")]
    pub(crate) queue: Option<String>,
    #[command(flatten)]
    pub(crate) nats: crate::fleet::NatsArgs,
    /// With --queue: how long a worker may hold a job unacknowledged before another worker
    /// gets it, seconds
    #[arg(long, value_name = "SECONDS", default_value_t = corral_queue::submit::DEFAULT_ACK_WAIT.as_secs())]
    pub(crate) ack_wait_s: u64,
    /// With --queue: deliveries of a job at most (its workers died); then its result is a
    /// failure of kind max_deliveries
    #[arg(long, value_name = "N", default_value_t = corral_queue::submit::DEFAULT_MAX_DELIVERIES)]
    pub(crate) max_deliveries: i64,
    /// With --queue: keep the run's streams and board on this many servers of a JetStream
    /// cluster (1-5)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) replicas: u8,
    /// Serve Prometheus text metrics at this address, e.g. 127.0.0.1:9464: jobs done, ok,
    /// failed, in flight, retries, per host requests, pauses and breakers (with --queue: jobs
    /// submitted and collected)
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub(crate) settings: SettingsFlags,
}

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ResultsFormatArg {
    /// One JSON object per line.
    Jsonl,
    /// One CSV row per job, after a header row.
    Csv,
}

/// The engine's settings as `corral run`'s flags: [`Settings`] declares each one (its doc is the
/// help, its `arg` attribute the flag), and this keeps what the command line gave, to lay over
/// the config file's settings ([`SettingsFlags::over`]): a flag not given leaves the config
/// file's value (or the default) alone.
#[derive(Clone, Debug)]
pub(crate) struct SettingsFlags(clap::ArgMatches);

impl clap::FromArgMatches for SettingsFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(m.clone()))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0 = m.clone();
        Ok(())
    }
}

impl clap::Args for SettingsFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        // Made apart and added whole: changing them in place (`mut_arg`) moves every argument
        // of the command each time, ~5 M instructions at each start.
        let defaults = defaults();
        Settings::augment_args(clap::Command::new("settings"))
            .get_arguments()
            .map(|a| flag(a.clone(), &defaults))
            .fold(cmd, clap::Command::arg)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// One of [`Settings`]' flags as `corral run` takes it: with its default in its help, required
/// never (the config file or the default gives it), and a switch not given absent rather than
/// `false`, so that it does not undo the config file's `true`.
fn flag(a: clap::Arg, defaults: &[(String, String)]) -> clap::Arg {
    let default = a
        .get_long()
        .and_then(|l| defaults.iter().find(|(long, _)| long == l))
        .map(|(_, d)| format!(" [default: {d}]"))
        .unwrap_or_default();
    let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
    let long_help = a.get_long_help().map(|h| format!("{h}{default}"));
    let a = a.required(false).help(format!("{help}{default}"));
    let a = match long_help {
        Some(h) => a.long_help(h),
        None => a,
    };
    if matches!(a.get_action(), ArgAction::SetTrue) {
        a.action(ArgAction::Set)
            .num_args(0)
            .default_missing_value("true")
    } else {
        a
    }
}

impl SettingsFlags {
    /// `base` (the config file's settings, or the defaults) with the flags given on the command
    /// line over it; headers and CA files add up, the config file's first.
    pub(crate) fn over(&self, base: Settings) -> Result<Settings, String> {
        let (headers, cacert) = (base.headers.clone(), base.cacert.clone());
        let mut s = base;
        s.update_from_arg_matches(&self.0)
            .map_err(|e| e.to_string())?;
        if self.0.contains_id("headers") {
            s.headers = [headers, s.headers].concat();
        }
        if self.0.contains_id("cacert") {
            s.cacert = [cacert, s.cacert].concat();
        }
        Ok(s)
    }

    /// The settings of this command line over those of the config file `config`, if one is
    /// given; `Err` names the option, or the file and its line.
    pub(crate) fn with_config(&self, config: Option<&Path>) -> Result<Settings, String> {
        let base = match config {
            Some(path) => load_config(path)?,
            None => Settings::default(),
        };
        self.over(base)
    }
}

/// Each flag's default as `--help` shows it (the long name, the value): [`Settings::default`]
/// as the config file would write it. Options without a default (`None`, off, empty) show
/// none; their help says what that means.
pub(crate) fn defaults() -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(Settings::default()) else {
        return Vec::new();
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) if !a.is_empty() => {
            let items: Option<Vec<String>> = a
                .iter()
                .map(|i| i.as_u64().map(|n| n.to_string()))
                .collect();
            items.map(|i| i.join(","))
        }
        _ => None,
    };
    map.iter()
        .filter_map(|(key, v)| Some((key.replace('_', "-"), text(v)?)))
        .collect()
}

pub(crate) fn parse_headers(list: &[String]) -> Result<HeaderMap, String> {
    corral_engine::settings::parse_header_lines(list, "--header").map_err(|e| e.to_string())
}

/// `--retry-failed [KINDS]`: which failures to run again (no kinds: all of them).
pub(crate) fn retry_failed(kinds: &[String]) -> Result<RetryFailed, String> {
    if kinds.is_empty() {
        return Ok(RetryFailed { kinds: None });
    }
    let named: Result<Vec<ErrorKind>, String> = kinds
        .iter()
        .map(|k| {
            ErrorKind::named(k.trim()).ok_or_else(|| {
                let all: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "--retry-failed: {k:?} is not an error kind ({}); to run every failure again, \
                     give --retry-failed after the jobs file or with no value",
                    all.join(", ")
                )
            })
        })
        .collect();
    Ok(RetryFailed {
        kinds: Some(named?),
    })
}

/// `settings` made ready to run: checked as the engine checks them, the PEM files of
/// `--cacert`/`--cert`/`--key` read, and this machine's own idle-connection budget. What
/// `corral run`, `submit` (before it stores them) and a worker (with the run's settings from
/// the board) all do.
pub(crate) fn plan(mut settings: Settings) -> Result<Settings, String> {
    // The engine says what cannot work, once, for the binary and the library alike.
    settings.check().map_err(|e| e.to_string())?;
    settings.read_files().map_err(|e| e.to_string())?;
    let threads = settings
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    settings.idle_connections = idle_budget(fd_limit(), settings.concurrency, threads);
    Ok(settings)
}

/// The process's open-file limit (after [`raise_fd_limit`]); unlimited when it cannot be read.
pub(crate) fn fd_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(u64::MAX, |(soft, _)| soft)
}

/// Raises the soft open-file limit to the hard one: a run over many hosts needs a socket for
/// each connection, and the usual soft limit (1024) is far below what the system allows.
pub(crate) fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// Idle connections each of `threads` worker threads may keep for reuse: what the open-file
/// limit leaves after the connections in use (one per job under way) and a reserve (standard
/// streams, the jobs and results files, the runtimes' own descriptors), split between the
/// threads, and at most [`MAX_IDLE_PER_THREAD`] (each holds a read buffer).
pub(crate) fn idle_budget(fd_limit: u64, concurrency: usize, threads: usize) -> usize {
    const RESERVE: u64 = 64;
    let left = fd_limit.saturating_sub(RESERVE.saturating_add(concurrency as u64));
    let per_thread = left / threads.max(1) as u64;
    usize::try_from(per_thread).map_or(MAX_IDLE_PER_THREAD, |n| n.min(MAX_IDLE_PER_THREAD))
}

/// See [`idle_budget`].
pub(crate) const MAX_IDLE_PER_THREAD: usize = 512;

pub(crate) fn load_config(path: &Path) -> Result<Settings, String> {
    let text = corral_engine::files::read_option_text("--config", path)
        .map_err(|e| format!("cannot read config: {e}"))?;
    parse_config(&text, &path.display().to_string())
}

/// A config file's text as options. An error names the line, its table and key, and says
/// what is wrong, but never quotes the line (toml's own message does): it may hold a secret
/// header.
pub(crate) fn parse_config(text: &str, shown: &str) -> Result<Settings, String> {
    toml::from_str(text).map_err(|e| {
        let what = redact::text(e.message());
        let Some(span) = e.span() else {
            return format!("config {shown}: {what}");
        };
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        format!("config {shown}, line {line}{}: {what}", where_in(before))
    })
}

/// ` ([table] key)` of the value that starts at the end of `before`: the last table header
/// and the key on the value's own line — names only, never a value.
fn where_in(before: &str) -> String {
    let mut lines = before.lines().rev();
    let own = if before.ends_with('\n') {
        ""
    } else {
        lines.next().unwrap_or("")
    };
    let key = own
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.contains(char::is_whitespace));
    let table = lines
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'));
    match (table, key) {
        (Some(t), Some(k)) => format!(" ({t} {k})"),
        (None, Some(k)) => format!(" ({k})"),
        (Some(t), None) => format!(" ({t})"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
pub(crate) fn plan_of(args: &[&str], config: Option<&str>) -> Result<Settings, String> {
    plan(options_of(args, config)?)
}

/// The options of `corral run jobs.jsonl ARGS...` with a config file's text (if any), before
/// planning.
#[cfg(test)]
pub(crate) fn options_of(args: &[&str], config: Option<&str>) -> Result<Settings, String> {
    use clap::Parser;
    let argv = ["corral", "run", "jobs.jsonl"].iter().chain(args);
    let cli = crate::Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let crate::Cmd::Run(run) = cli.cmd else {
        return Err("not run".into());
    };
    let base = match config {
        Some(text) => parse_config(text, "corral.toml")?,
        None => Settings::default(),
    };
    run.settings.over(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of options quotes the same defaults as `--help` (where a row names
    /// as many options as it gives values).
    #[test]
    fn the_readme_quotes_the_defaults_help_shows() {
        let readme = include_str!("../../../README.md");
        let defaults: std::collections::HashMap<String, String> = defaults().into_iter().collect();
        let mut compared = 0;
        for row in readme.lines().filter(|l| l.starts_with("| `-")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (names, values) = (cells[1], cells[2]);
            let ids: Vec<String> = names
                .split(',')
                .filter_map(|n| n.trim().trim_matches('`').split_whitespace().next())
                .filter(|n| n.starts_with("--"))
                .map(|n| n.trim_start_matches("--").to_owned())
                .collect();
            let values: Vec<&str> = values.split(", ").map(str::trim).collect();
            if ids.len() != values.len() {
                continue;
            }
            for (id, value) in ids.iter().zip(values) {
                if let Some(d) = defaults.get(id) {
                    assert_eq!(value, d, "README's default of --{id}");
                    compared += 1;
                }
            }
        }
        assert!(compared >= 15, "only {compared} defaults compared");
    }

    /// Each bad option is refused with its name, before anything is opened or written (the
    /// binary exits 2 on any of these: `tests/cli.rs` shows one).
    #[test]
    fn bad_options_are_refused_naming_the_option() {
        let mut wrong = Vec::new();
        for (args, want) in [
            (&["--rate", "fast"][..], "--rate"),
            (
                &["--per-host-rate", "auto:fast"],
                "'--per-host-rate <RATE>': auto:fast",
            ),
            (&["--concurrency", "0"], "--concurrency: must be at least 1"),
            (
                &["--per-host-concurrency", "0"],
                "--per-host-concurrency: must be at least 1",
            ),
            (&["--threads", "0"], "--threads: must be at least 1"),
            (&["--queue-size", "0"], "--queue-size: must be at least 1"),
            (
                &["--halt-after-failures", "0"],
                "--halt-after-failures: must be at least 1",
            ),
            (
                &["--halt-on-failure-rate", "1.5"],
                "--halt-on-failure-rate: 1.5 is not a share",
            ),
            (&["--max-body", "12parsecs"], "unknown unit"),
            (&["--max-body", "0"], "--max-body: must be at least 1 byte"),
            (&["--max-line", "0"], "--max-line: must be at least 1 byte"),
            (
                &["--progress-interval-s", "0"],
                "--progress-interval-s: must be greater than 0",
            ),
            (
                &["--base-url", "ftp://u:sk-secret@x/"],
                "--base-url: \"ftp\" is not http or https",
            ),
            (
                &["-H", "X-Api-Key sk-secret"],
                "--header: expected `Name: value`",
            ),
            (&["--header", "NoColon"], "Name: value"),
            (
                &["--breaker-failure-rate", "0"],
                "--breaker-failure-rate: 0 is not a share",
            ),
            (
                &["--breaker-probes", "0"],
                "--breaker-probes: must be at least 1",
            ),
            (
                &["--breaker-window-s", "0"],
                "--breaker-window-s: must be greater than 0",
            ),
            (
                &["--timeout-ms", "0"],
                "--timeout-ms: must be greater than 0",
            ),
            (
                &["--connect-timeout-ms", "0"],
                "--connect-timeout-ms: must be greater than 0",
            ),
            (
                &["--total-timeout-ms", "0"],
                "--total-timeout-ms: must be greater than 0",
            ),
            (
                &["--retry-base-ms", "0"],
                "--retry-base-ms: must be greater than 0",
            ),
            (
                &["--retry-base-ms", "500", "--retry-max-ms", "100"],
                "--retry-max-ms: 100 ms is shorter",
            ),
            (&["--retry-budget", "0"], "--retry-budget: 0 is not a share"),
            (&["--burst", "0"], "--burst: must be at least 1"),
            (
                &["--per-host-burst", "0"],
                "--per-host-burst: must be at least 1",
            ),
            (
                &["--max-retry-after-s", "0"],
                "--max-retry-after-s: must be greater than 0",
            ),
            (&["--accept", "200-1000"], "--accept"),
            (&["--accept", "200-2x9"], "--accept"),
            (
                &["--cost-from-response", "usage"],
                "--cost-from-response: \"usage\" is not a JSON pointer",
            ),
            (&["--proxy", "ftp://p:1"], "--proxy: scheme \"ftp\""),
            (&["--cert", "/nonexistent.pem"], "--key"),
            (&["--cacert", "/nonexistent.pem"], "--cacert"),
            (&["--bogus"], "unexpected argument"),
            (&["--retry-on", "timeout"], "always retried"),
            (&["--retry-on", "7xx"], "not a status"),
            (&["--require", "status"], "is not a JSON pointer"),
            (&["--extract", "answer"], "expected NAME=POINTER"),
            (
                &["--extract", "a=/x", "--extract", "a=/y"],
                "--extract: \"a\" is named twice",
            ),
        ] {
            match plan_of(args, None) {
                Ok(_) => wrong.push(format!("{args:?} accepted")),
                Err(e) if !e.contains(want) => wrong.push(format!("{args:?}: {e}")),
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert!(!format!("{wrong:?}").contains("sk-secret"));
        for secret in [
            &["--base-url", "ftp://u:sk-secret@x/"][..],
            &["-H", "X-Api-Key sk-secret"],
        ] {
            let e = plan_of(secret, None).unwrap_err();
            assert!(!e.contains("sk-secret"), "a secret repeated: {e}");
        }
        plan_of(&[], None).expect("the defaults pass");
    }

    /// The config file's `[hosts]` tables are checked the same way, naming the table and key.
    #[test]
    fn bad_host_tables_are_refused_naming_the_table_and_key() {
        for (toml, want) in [
            (
                "[hosts.\"a.example\"]\nconnect_timeout_ms = 0\n",
                "[hosts.\"a.example\"] connect_timeout_ms: must be greater than 0",
            ),
            (
                "[hosts.\"a.example\"]\ntimeout_ms = 0\n",
                "[hosts.\"a.example\"] timeout_ms: must be greater than 0",
            ),
            (
                "[hosts.\"a.example\"]\nconcurrency = 0\n",
                "[hosts.\"a.example\"] concurrency: must be at least 1",
            ),
            (
                "[hosts.\"a.example\"]\nburst = 0\n",
                "[hosts.\"a.example\"] burst: must be at least 1",
            ),
            (
                "[hosts.\"a.example\"]\nbreaker_probes = 0\n",
                "[hosts.\"a.example\"] breaker_probes: must be at least 1",
            ),
            (
                "[hosts.\"a.example\"]\nrate = \"often\"\n",
                "[hosts.\"a.example\"] rate",
            ),
            (
                "[hosts.\"a.example\"]\nheader = [\"NoColon\"]\n",
                "[hosts.\"a.example\"] header",
            ),
            (
                "[hosts.\"a.example\"]\nconcurency = 2\n",
                "unknown field `concurency`",
            ),
            ("concurency = 5\n", "unknown field `concurency`"),
            ("[hosts.\"bad host\"]\nrate = \"5/s\"\n", "\"bad host\""),
        ] {
            let e = plan_of(&[], Some(toml))
                .err()
                .unwrap_or_else(|| panic!("{toml:?} accepted"));
            assert!(e.contains(want), "{toml:?}: {e}");
            assert!(!e.contains("sk-secret"), "a header line quoted: {e}");
        }
        plan_of(&[], Some("[hosts.\"a.example\"]\nconnect_timeout_ms = 1\n"))
            .expect("a good table");
    }

    /// Every default shown belongs to an option of `corral run`, and every option that has a
    /// default shows it.
    #[test]
    fn help_shows_each_default_from_where_it_is_written() {
        use clap::CommandFactory;
        let run = crate::Cli::command()
            .find_subcommand("run")
            .cloned()
            .expect("run");
        let longs: Vec<&str> = run.get_arguments().filter_map(|a| a.get_long()).collect();
        for (long, _) in defaults() {
            assert!(
                longs.contains(&long.as_str()),
                "--{long} is not an option of corral run"
            );
        }
        for (long, default) in defaults() {
            let help = run
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.ends_with(&format!("[default: {default}]")),
                "--{long}: {help}"
            );
        }
        let d = Settings::default();
        for (long, want) in [
            ("concurrency", d.concurrency.to_string()),
            (
                "connect-timeout-ms",
                d.connect_timeout.as_millis().to_string(),
            ),
            ("max-body", "1MiB".to_owned()),
            ("retry-on", "429,500,502,503,504".to_owned()),
        ] {
            assert!(
                defaults().contains(&(long.to_owned(), want.clone())),
                "--{long} [default: {want}]"
            );
        }
    }

    /// A flag given on the command line wins over the config file; one not given leaves the
    /// config file's value (a switch too: absent is not `false`); headers add up.
    #[test]
    fn the_command_line_lies_over_the_config_file() {
        let config = "concurrency = 5\nretries = 7\nsave_headers = true\nheader = [\"X-A: 1\"]\n\
                      connect_timeout_ms = 1500\n";
        let s = options_of(&["-c", "9", "-H", "X-B: 2"], Some(config)).unwrap();
        assert_eq!((s.concurrency, s.retries), (9, 7));
        assert!(s.save_headers, "the config file's switch undone");
        assert_eq!(s.connect_timeout, std::time::Duration::from_millis(1500));
        let names: Vec<&str> = s.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["x-a", "x-b"]);
        let s = options_of(
            &["--connect-timeout-ms", "250", "--no-breaker"],
            Some(config),
        )
        .unwrap();
        assert_eq!(s.connect_timeout, std::time::Duration::from_millis(250));
        assert!(s.breaker().is_none());
        let s = options_of(&[], None).unwrap();
        assert_eq!(s.connect_timeout, Settings::default().connect_timeout);
        // `retry_on` as a list of statuses (as before kinds were named) or as text; a table's
        // content checks.
        let s = options_of(
            &[],
            Some("retry_on = [429, 503]\n[hosts.\"a.example\"]\nretry_on = \"5xx,invalid_response\"\nrequire = [\"/ok=true\"]\n"),
        )
        .unwrap();
        assert!(s.retry_on.status(503) && !s.retry_on.status(500));
        let h = s.for_host("a.example:443");
        assert!(h.retry_on().status(500) && h.retry_on().invalid_response());
        assert_eq!(h.require()[0].to_string(), "/ok=true");
        assert!(s.for_host("b.example:443").require().is_empty());
        assert!(s.breaker().is_some() && !s.save_headers);
    }
}

//! `corral demo`: a few thousand jobs against the embedded mock server, with its faults.

use std::path::PathBuf;

use clap::Args;

use corral_engine::job::{Format, Input};
use corral_engine::settings::Settings;
use corral_engine::sink::{self as output, Existing, InputFacts, OpenMode, Sink};

use crate::exit::{code as exit, fail, Fail};
use crate::flags::plan;
use crate::mock;
use crate::run::{build, execute, After, Total};
use corral::limit::Rate;
use corral_engine::settings::{HostRule, HostSettings, RateSetting};
use std::time::Duration;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// How many jobs to generate.
    #[arg(long, default_value_t = 3000)]
    pub(crate) jobs: u64,
    /// Directory for jobs.jsonl, results.jsonl, summary.json and report.html [default: a new temporary directory].
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

pub(crate) async fn demo(args: DemoArgs) -> Result<u8, Fail> {
    let server = mock::start(&mock::demo_profiles(), 0)
        .await
        .map_err(|e| Fail(exit::FATAL, format!("cannot start the mock server: {e}")))?;
    let dir = args.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("corral-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)
        .map_err(|e| Fail(exit::FATAL, format!("cannot create {}: {e}", dir.display())))?;
    let jobs_path = dir.join("jobs.jsonl");
    let results_path = dir.join("results.jsonl");
    let summary_path = dir.join("summary.json");
    let report_path = dir.join("report.html");
    let mut lines = String::new();
    for i in 0..args.jobs {
        let host = &server.hosts[(i % server.hosts.len() as u64) as usize];
        if i == 17 {
            lines.push_str("{\"url\": \"http://127.0.0.1:1/this line is broken\"\n");
            continue;
        }
        if i == 42 {
            lines.push_str("{\"method\": \"FETCH\", \"url\": \"http://127.0.0.1/\"}\n");
            continue;
        }
        // The fast host's jobs cost 25 each against its quota of 1000 a second.
        let cost = if host.profile == mock::Profile::Fast {
            ",\"cost\":25"
        } else {
            ""
        };
        lines.push_str(&format!(
            "{{\"id\":\"job-{i}\",\"url\":\"{}/items/{i}?api_key=demo-secret\",\"headers\":{{\"Authorization\":\"Bearer demo-secret\"}},\"meta\":{{\"profile\":\"{}\"}}{cost}}}\n",
            host.base_url(),
            host.profile.name()
        ));
    }
    std::fs::write(&jobs_path, lines).map_err(|e| {
        Fail(
            exit::FATAL,
            format!("cannot write {}: {e}", jobs_path.display()),
        )
    })?;
    eprintln!(
        "corral demo: {} jobs against {} simulated hosts on 127.0.0.1:",
        args.jobs,
        server.hosts.len()
    );
    for h in &server.hosts {
        eprintln!(
            "  {:<8} {}  {}",
            h.profile.name(),
            h.addr,
            describe(&h.profile)
        );
    }
    let settings = Settings {
        concurrency: 64,
        per_host_concurrency: 8,
        per_host_rate: Some(RateSetting::Fixed(Rate::per_second(60))),
        per_host_burst: 5,
        retries: 5,
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(1000),
        // A short window: the breaker opens soon after the outage starts (a failure-rate
        // window full of the host's earlier successes would take seconds to tip), and holds
        // the outage host's jobs until it is back.
        breaker_min_calls: 10,
        breaker_window: Duration::from_secs(1),
        breaker_cool_down: Duration::from_secs(1),
        timeout: Duration::from_millis(2000),
        max_body: 256 << 10,
        max_retry_after: Duration::from_secs(2),
        progress_interval: Duration::from_secs(1),
        hosts: HostRule::from_tables(&demo_hosts(&server)).map_err(fail(exit::FATAL))?,
        ..Settings::default()
    };
    let plan = plan(settings).map_err(fail(exit::FATAL))?;
    eprintln!("{}", describe_limits(&plan));
    let run = build(&plan).map_err(fail(exit::FATAL))?;
    let input = tokio::fs::File::open(&jobs_path)
        .await
        .map(|f| Box::new(tokio::io::BufReader::new(f)))
        .map_err(fail(exit::FATAL))?;
    let mode = OpenMode {
        existing: Existing::Overwrite,
        repair: false,
        retry_failed: None,
    };
    let opened =
        output::open(&results_path, mode, InputFacts::default()).map_err(fail(exit::FATAL))?;
    let code = execute(
        run,
        plan,
        input,
        Total::Count(jobs_path.clone()),
        Input {
            format: Format::Jsonl,
            headers: http::HeaderMap::new(),
            base_url: None,
        },
        Sink::File {
            file: opened.file,
            path: results_path.clone(),
            sync: opened.regular,
        },
        opened.resumed,
        After {
            quiet: args.quiet,
            summary_json: Some(summary_path.clone()),
            report: Some(report_path.clone()),
            metrics: None,
        },
    )
    .await?;
    eprintln!("\n  what the servers saw (their own counters):");
    eprintln!("    host                     requests  max-in-flight  max-per-second  statuses");
    for h in &server.hosts {
        let s = h.stats();
        let mut st: Vec<_> = s.statuses.iter().collect();
        st.sort();
        let st: Vec<String> = st
            .iter()
            .map(|(k, v)| {
                if **k == 0 {
                    format!("reset: {v}")
                } else {
                    format!("{k}: {v}")
                }
            })
            .collect();
        eprintln!(
            "    {:<8} {:<15} {:>8}  {:>13}  {:>14}  {}",
            h.profile.name(),
            h.addr,
            s.requests,
            s.max_in_flight,
            s.max_per_second,
            st.join(", ")
        );
    }
    eprintln!(
        "\n  jobs: {}\n  results: {}\n  summary: {}\n  report: {}   (open it in a browser; `corral report {}` prints the summary again)\n  try: corral run {} -o {} --resume   (nothing left to do: every job is there once)",
        jobs_path.display(),
        results_path.display(),
        summary_path.display(),
        report_path.display(),
        results_path.display(),
        jobs_path.display(),
        results_path.display()
    );
    Ok(match code {
        exit::FATAL | exit::INTERRUPTED => code,
        _ => exit::OK, // failures are the point of the demo
    })
}

/// The demo's `[hosts]` tables: the rate-limited host's rate is found (`auto`), the fast
/// host has a cost quota.
fn demo_hosts(server: &mock::MockServer) -> std::collections::BTreeMap<String, HostSettings> {
    let mut hosts = std::collections::BTreeMap::new();
    for h in &server.hosts {
        let table = match h.profile {
            mock::Profile::Limited { .. } => HostSettings {
                rate: Some(RateSetting::Auto(Rate::per_second(10))),
                ..HostSettings::default()
            },
            mock::Profile::Fast => HostSettings {
                cost_rate: Some(Rate::per_second(1000)),
                ..HostSettings::default()
            },
            _ => continue,
        };
        hosts.insert(h.addr.to_string(), table);
    }
    hosts
}

pub(crate) fn describe(p: &mock::Profile) -> String {
    match p {
        mock::Profile::Fast => "answers at once".into(),
        mock::Profile::Slow => "answers after 20-120 ms".into(),
        mock::Profile::Flaky { percent } => format!("{percent} % of answers are 500/503"),
        mock::Profile::Limited { per_sec } => {
            format!("allows {per_sec} req/s, else 429 + Retry-After")
        }
        mock::Profile::Reset { percent } => format!("resets {percent} % of connections"),
        mock::Profile::Huge { mib } => format!("sends {mib} MiB bodies, slowly"),
        mock::Profile::Outage { from_s, to_s } => {
            format!("fails every request from {from_s} s to {to_s} s")
        }
        mock::Profile::SecondTry => "fails each request's first try with 503".into(),
    }
}

/// What the demo's settings are, in words, from the settings themselves.
fn describe_limits(s: &Settings) -> String {
    let per_host_rate = s.per_host_rate.map_or_else(
        || "no per-host rate".to_string(),
        |r| match r {
            RateSetting::Fixed(r) => format!("{r} per host (burst {})", s.per_host_burst),
            RateSetting::Auto(start) => {
                format!("each host's rate found while the run goes (from {start})")
            }
        },
    );
    let breakers = s.breaker().map_or_else(
        || "no breakers".to_string(),
        |b| {
            format!(
                "per-host breakers ({:.0} % failures over {} s, min {} calls, {} s cool-down)",
                b.failure_rate * 100.0,
                b.window.as_secs(),
                b.min_calls,
                b.cool_down.as_secs()
            )
        },
    );
    let mut rules = String::new();
    for r in &s.hosts {
        let h = &r.settings;
        let mut what = Vec::new();
        if let Some(RateSetting::Auto(start)) = h.rate {
            what.push(format!("its rate found while the run goes (from {start})"));
        }
        if let Some(c) = h.cost_rate {
            what.push(format!("a quota of {c} in job costs"));
        }
        rules.push_str(&format!("  host {}: {}\n", r.pattern, what.join(", ")));
    }
    format!(
        "  limits: {} jobs under way, {} requests per host, {per_host_rate}, {} retries with jittered backoff,\n  \
         {breakers} holding a failing host's jobs until it is back, {} s timeout, {} KiB body cap\n{rules}",
        s.concurrency,
        s.per_host_concurrency,
        s.retries,
        s.timeout.as_secs_f64(),
        s.max_body / 1024
    )
}

//! `corral serve-mock`: the mock server alone, for benchmarks and experiments.

use std::time::Duration;

use clap::Args;

use crate::exit::{code as exit, fail, Fail};
use crate::mock;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// First port; host N listens on PORT+N. 0 picks free ports.
    #[arg(long, default_value_t = 9000)]
    pub(crate) port: u16,
    /// Profiles of the hosts, comma-separated: fast, slow, flaky[:PERCENT], limited[:PER_SECOND],
    /// reset[:PERCENT], huge[:MIB], outage[:FROM-TO] (seconds after start), second-try (503 for
    /// each target's first request, then 200).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fast,slow,flaky,limited,reset,huge,outage"
    )]
    pub(crate) profiles: Vec<String>,
    /// Stop by itself after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    pub(crate) seconds: Option<u64>,
}

pub(crate) async fn serve_mock(args: ServeArgs) -> Result<u8, Fail> {
    let profiles: Result<Vec<_>, _> = args
        .profiles
        .iter()
        .map(|p| mock::Profile::parse(p))
        .collect();
    let profiles = profiles.map_err(fail(exit::BAD_INPUT))?;
    let server = mock::start(&profiles, args.port).await.map_err(|e| {
        Fail(
            exit::BAD_INPUT,
            format!("cannot start the mock server: {e}"),
        )
    })?;
    for h in &server.hosts {
        println!(
            "{:<8} {}   (stats: {}/__stats)",
            h.profile.name(),
            h.base_url(),
            h.base_url()
        );
    }
    let stop = async {
        match args.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    stop.await;
    Ok(exit::OK)
}

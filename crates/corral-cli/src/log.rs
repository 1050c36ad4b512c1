//! `RUST_LOG`: the library's `tracing` events on stderr, for an operator asking "why is it
//! slow?" — which host's breaker opened, which rate limit is paused by a `Retry-After`, which
//! retries are waiting how long.
//!
//! Off unless `RUST_LOG` is set, so a run that does not ask pays nothing: the events are then
//! never built. The filter syntax is `tracing-subscriber`'s `EnvFilter` (as in cargo, ripgrep
//! and every tokio program): `RUST_LOG=corral=debug`, `RUST_LOG=corral::breaker=info`.
//! Lines go to stderr, next to the progress bar; `--quiet` hides the bar, not the log.

/// Installs the stderr subscriber if `RUST_LOG` asks for one. A filter that cannot be read is
/// reported and ignored (the run goes on unlogged rather than refusing to start).
pub fn init() {
    // A build for tokio-console: its subscriber takes every event (and serves 127.0.0.1:6669).
    #[cfg(feature = "console")]
    {
        console_subscriber::init();
        return;
    }
    #[allow(unreachable_code)]
    let Some(filter) = std::env::var_os("RUST_LOG").filter(|v| !v.is_empty()) else {
        return;
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(filter.to_string_lossy()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("corral: ignoring RUST_LOG: {e}");
            return;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

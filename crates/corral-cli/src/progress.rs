//! Progress while a run goes on: a bar on a terminal, a periodic line otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use corral_engine::summary::Stats;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar on stderr: elapsed time, position out of length, and a message.
pub fn bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A progress bar on a terminal, a periodic line otherwise, or nothing.
pub enum Progress {
    Bar(ProgressBar),
    Lines { every: Duration, last: Instant },
    Quiet,
}

impl Progress {
    pub fn new(quiet: bool, every: Duration) -> Self {
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            Progress::Bar(bar())
        } else {
            Progress::Lines {
                every,
                last: Instant::now(),
            }
        }
    }

    pub fn set_total(&self, total: u64) {
        if let Progress::Bar(b) = self {
            b.set_length(total);
        }
    }

    pub fn update(&mut self, stats: &Stats, running: u64, waiting: u64) {
        match self {
            Progress::Bar(b) => {
                b.set_position(stats.done + stats.skipped);
                b.set_message(format!(
                    "{} ok, {} failed, {} retries, {} running, {} waiting, {:.0}/s",
                    stats.ok,
                    stats.failed,
                    stats.retries,
                    running,
                    waiting,
                    stats.rate()
                ));
            }
            Progress::Lines { every, last } => {
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    eprintln!("{}", stats.progress_line(running, waiting));
                }
            }
            Progress::Quiet => {}
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

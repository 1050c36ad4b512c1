//! An input that stays open (a pipe whose writer is not done, a queue): every job taken must
//! still finish while no more come. Places that wait for input used to keep their active
//! slots, and jobs waiting to go on after their host's slot then waited for one forever.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server;
use corral_engine::job::Parsed;
use corral_engine::run::Run;
use corral_engine::settings::Settings;
use corral_engine::sink::{LineSink, Sink};
use tokio_util::sync::CancellationToken;

/// Result lines, kept in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl LineSink for Lines {
    fn write_lines(&mut self, lines: &mut dyn Iterator<Item = &str>) -> std::io::Result<()> {
        self.0.lock().unwrap().extend(lines.map(str::to_string));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_taken_from_an_input_that_stays_open_all_finish() {
    let (fast, slow) = (
        server(Duration::ZERO).0,
        server(Duration::from_millis(20)).0,
    );
    let n = 400u64;
    // Half the jobs to a host that takes one request at a time: they wait for its slot.
    let jobs = (1..=n).map(move |l| {
        let base = if l % 2 == 0 { &slow } else { &fast };
        Ok(Parsed::get(l, &format!("{base}/{l}")))
    });
    let input = futures::StreamExt::chain(
        futures::stream::iter(jobs.collect::<Vec<_>>()),
        futures::stream::pending(),
    );
    let settings = Settings {
        concurrency: 8,
        per_host_concurrency: 1,
        threads: Some(1),
        ..Settings::default()
    };
    let stop = CancellationToken::new();
    let run = Run::new(settings)
        .unwrap()
        .stop_on(stop.clone(), CancellationToken::new());
    let lines = Lines::default();
    let running = tokio::spawn(run.run(input, Sink::Lines(Box::new(lines.clone()))));
    // Bounded: a stall shows as fewer lines than jobs after 60 s, not as a hang.
    for _ in 0..600 {
        if lines.0.lock().unwrap().len() as u64 == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written = lines.0.lock().unwrap().len() as u64;
    stop.cancel();
    let report = running.await.unwrap().unwrap();
    assert_eq!(
        written, n,
        "every job taken finished while the input stayed open"
    );
    assert_eq!(report.stats.ok, n);
}

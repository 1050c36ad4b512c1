//! An input that stays open (a pipe whose writer is not done, a queue): every job taken must
//! still finish while no more come. Places that wait for input used to keep their active
//! slots, and jobs waiting to go on after their host's slot then waited for one forever.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_engine::job::Parsed;
use corral_engine::run::Run;
use corral_engine::settings::Settings;
use corral_engine::sink::{LineSink, Sink};
use tokio_util::sync::CancellationToken;

/// A keep-alive HTTP/1.1 server answering 200 after `latency`.
fn server(latency: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    std::thread::sleep(latency);
                    let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            });
        }
    });
    base
}

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
    let (fast, slow) = (server(Duration::ZERO), server(Duration::from_millis(20)));
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
        ..Settings::default()
    };
    let stop = CancellationToken::new();
    let run = Run::builder()
        .settings(settings)
        .threads(1)
        .build()
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

//! Pattern: state machine (book ch. 9) — a connection's lifecycle as an explicit enum, driven by
//! events on a bounded worker, with illegal transitions refused instead of ignored.
//!
//! Run: `cargo run -p corral --example state_machine`

use corral::exec::Exec;
use futures::StreamExt;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Idle,
    Connecting { attempt: u32 },
    Connected,
    Closed,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Dial,
    Failed,
    Up,
    Hangup,
}

fn step(s: State, e: Event) -> Result<State, String> {
    Ok(match (s, e) {
        (State::Idle, Event::Dial) => State::Connecting { attempt: 1 },
        (State::Connecting { attempt }, Event::Failed) if attempt < 3 => State::Connecting {
            attempt: attempt + 1,
        },
        (State::Connecting { .. }, Event::Failed) => State::Closed,
        (State::Connecting { .. }, Event::Up) => State::Connected,
        (State::Connected, Event::Hangup) => State::Closed,
        (s, e) => return Err(format!("{e:?} is not allowed in {s:?}")),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scripts = vec![
        vec![Event::Dial, Event::Failed, Event::Up, Event::Hangup],
        vec![Event::Dial, Event::Failed, Event::Failed, Event::Failed],
        vec![Event::Hangup],
    ];
    // Each session's machine runs as one job; at most 2 sessions at once.
    let exec = Exec::builder().limit(2).ordered(true).build()?;
    let mut done = exec.run(
        futures::stream::iter(scripts.into_iter().enumerate()),
        |(n, events)| async move {
            let mut s = State::Idle;
            for e in events {
                match step(s, e) {
                    Ok(next) => s = next,
                    Err(why) => return format!("session {n}: refused: {why}"),
                }
            }
            format!("session {n}: ended {s:?}")
        },
    );
    while let Some(r) = done.next().await {
        println!("{}", r?);
    }
    Ok(())
}

//! `corral status`: a queue run's state at a glance, or as JSON.

use clap::Args;
use corral_queue::status::status;

use super::QueueArg;
use crate::exit::{code as exit, fail, Fail};

#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) queue: QueueArg,
    /// Print the state as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn status_cmd(args: StatusArgs) -> Result<u8, Fail> {
    let queue = args.queue.url()?;
    let s = status(&queue).await.map_err(super::queue_fail)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).map_err(fail(exit::FATAL))?
        );
        return Ok(exit::OK);
    }
    println!("run         {}", s.queue);
    println!("submitted   {}", s.submitted);
    println!("pending     {}  (waiting for a worker)", s.pending);
    println!(
        "in flight   {}  (held by workers; {} redelivered)",
        s.in_flight, s.redelivered
    );
    println!("done        {}  (results stored)", s.done);
    println!("collected   {}  ({} failed)", s.collected, s.failed);
    println!(
        "rejected    {}  (forged or not of this run: dropped, never run)",
        s.rejected
    );
    println!("workers     {}", s.workers.len());
    for (w, (done, held)) in &s.worker_jobs {
        println!("worker      {w}  {done} done, {held} held");
    }
    for (host, rate) in &s.host_rates {
        println!("rate        {host}  {rate:.1}/s");
    }
    for (host, ms) in &s.pauses {
        println!(
            "paused      {host}  {:.1} s more (Retry-After)",
            *ms as f64 / 1000.0
        );
    }
    for (host, ms) in &s.open_breakers {
        println!(
            "breaker     {host}  open, {:.1} s more",
            *ms as f64 / 1000.0
        );
    }
    for (host, prober) in &s.half_open {
        match prober.as_str() {
            "" => println!("breaker     {host}  half-open, waiting for a probe"),
            w => println!("breaker     {host}  half-open, probed by {w}"),
        }
    }
    Ok(exit::OK)
}

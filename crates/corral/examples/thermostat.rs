//! Pattern: reactive observers on an event bus (book ch. 6) — a thermostat publishes the
//! temperature; a heater and a display observe it, each with its own buffer policy.
//!
//! Run: `cargo run -p corral --example thermostat`

use std::time::Duration;

use corral::bus::{Bus, Overflow};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::new();
    let temperature = bus.topic::<f64>("temperature")?;
    let heater_switch = bus.topic::<bool>("heater")?;

    // The heater must see every reading: backpressure.
    let mut heater_in = temperature.subscribe(Overflow::Backpressure(4))?;
    let switch = heater_switch.clone();
    let heater = tokio::spawn(async move {
        let mut on = false;
        while let Some(Ok(t)) = heater_in.recv().await {
            let want = t < 20.0;
            if want != on {
                on = want;
                switch.publish(on).await;
            }
        }
    });
    // The display only needs the latest reading: drop-oldest, lag reported.
    let mut display_in = temperature.subscribe(Overflow::DropOldest(1))?;
    let mut switch_in = heater_switch.subscribe(Overflow::Backpressure(4))?;

    let mut t = 22.0;
    let mut heating = false;
    for _ in 0..12 {
        temperature.publish(t).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        while let Some(Ok(on)) = switch_in.try_recv() {
            heating = on;
            println!("  heater turned {}", if on { "on" } else { "off" });
        }
        match display_in.try_recv() {
            Some(Ok(shown)) => println!("display: {shown:.1} °C"),
            Some(Err(lag)) => println!("display: ({lag})"),
            None => {}
        }
        t += if heating { 0.8 } else { -0.7 };
    }
    drop(temperature);
    drop(bus);
    heater.await?;
    Ok(())
}

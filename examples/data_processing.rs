//! A DataProcessingChannel: 10,000 jobs processed on 4 threads, results as they
//! complete, and a failing job reported without stopping the others.
//! `cargo run --release --example data_processing`

use std::time::Instant;

use eric::Message;
use eric::prefabs::{DataProcessingChannel, Error};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The work: count the primes below the number each job carries.
    let primes = DataProcessingChannel::with_adapter(4, |msg: &Message| {
        let limit = msg.payload().as_u64().unwrap_or(0);
        assert!(limit != 4_242, "job {limit} is cursed");
        (2..limit)
            .filter(|n| (2..).take_while(|d| d * d <= *n).all(|d| n % d != 0))
            .count()
    })?;
    let worker = primes.add_listener()?;
    for job in 0..10_000u64 {
        primes
            .channel()
            .dispatch(worker.id(), Message::new("job", 1_000 + job))?;
    }

    let start = Instant::now();
    let (mut done, mut failed, mut total) = (0, 0, 0);
    let mut results = primes.process_queue(worker.id())?;
    while let Some(result) = results.next().await {
        match result {
            Ok(count) => {
                done += 1;
                total += count;
            }
            Err(err) => {
                failed += 1;
                println!("failed: {err}");
            }
        }
    }
    println!(
        "{done} jobs done, {failed} failed, {total} primes counted, on {} threads in {:.2?}",
        primes.max_workers(),
        start.elapsed()
    );
    Ok(())
}

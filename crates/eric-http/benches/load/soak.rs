//! The soak: eric's server (in a process of its own, every default as `eric serve`)
//! under mixed load for a set time, its memory and open streams sampled every 10 s.
//! Long-lived readers check that they lose nothing; the rest comes and goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use plotters::prelude::*;
use serde_json::{Value, json};

use super::Server;

const LONG_LIVED: usize = 50;
const BROADCASTS_PER_SECOND: u64 = 200;

struct Sample {
    minutes: f64,
    rss_mib: f64,
    open_streams: u64,
    listeners: u64,
    channels: u64,
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    let Ok(response) = http.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn create(http: &reqwest::Client, base: &str, id: &str) {
    let r = http
        .put(format!("{base}/create?channel_id={id}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create {id}: {}", r.status());
}

pub(crate) async fn run(minutes: f64) {
    let server = Server::start("eric-soak");
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicU64::new(0));
    let churned = Arc::new(AtomicU64::new(0));
    create(&http, &base, "soak").await;
    println!("# soak: {minutes} min against {base}\n");
    println!("| minute | server RSS | open streams | listeners | channels |");
    println!("|---:|---:|---:|---:|---:|");

    let mut tasks = Vec::new();
    // Long-lived readers: every broadcast, in order.
    for _ in 0..LONG_LIVED {
        let response = http
            .get(format!("{base}/channels/soak/events"))
            .send()
            .await
            .unwrap();
        let (stop, lost) = (Arc::clone(&stop), Arc::clone(&lost));
        tasks.push(tokio::spawn(async move {
            let mut events = response.bytes_stream().eventsource();
            let mut last: Option<u64> = None;
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(Ok(event))) =
                    tokio::time::timeout(Duration::from_secs(5), events.next()).await
                else {
                    if !stop.load(Ordering::Relaxed) {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                };
                if event.event != "tick" {
                    continue;
                }
                let seq = serde_json::from_str::<Value>(&event.data).unwrap_or_default()["seq"]
                    .as_u64()
                    .unwrap_or(0);
                if let Some(last) = last {
                    lost.fetch_add(seq.saturating_sub(last + 1), Ordering::Relaxed);
                }
                last = Some(seq);
            }
        }));
    }
    // The broadcaster.
    {
        let (http, base, stop) = (http.clone(), base.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due =
                    start + Duration::from_secs_f64(seq as f64 / BROADCASTS_PER_SECOND as f64);
                tokio::time::sleep_until(due.into()).await;
                let _ = http
                    .post(format!("{base}/broadcast?channel_id=soak"))
                    .json(&json!({"type": "tick", "payload": {"seq": seq, "pad": "x".repeat(160)}}))
                    .send()
                    .await;
                seq += 1;
            }
        }));
    }
    // Churn: short streams, subscribe-dispatch-read-unsubscribe, channels made and
    // deleted, and a client that stops reading.
    {
        let (http, base, stop, churned) = (
            http.clone(),
            base.clone(),
            Arc::clone(&stop),
            Arc::clone(&churned),
        );
        tasks.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                if let Ok(r) = http
                    .get(format!("{base}/channels/soak/events"))
                    .send()
                    .await
                {
                    let mut events = r.bytes_stream().eventsource();
                    for _ in 0..(round % 5 + 1) {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(200), events.next()).await;
                    }
                }
                if let Ok(r) = http
                    .post(format!("{base}/subscribe?channel_id=soak"))
                    .send()
                    .await
                {
                    let listener = r.json::<Value>().await.unwrap_or_default()["listener_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    for n in 0..3 {
                        let _ = http
                            .post(format!(
                                "{base}/dispatch?channel_id=soak&listener_id={listener}"
                            ))
                            .json(&json!({"type": "dm", "payload": n}))
                            .send()
                            .await;
                    }
                    if let Ok(r) = http
                        .get(format!("{base}/stream/soak/{listener}"))
                        .send()
                        .await
                    {
                        let mut events = r.bytes_stream().eventsource();
                        let _ =
                            tokio::time::timeout(Duration::from_millis(200), events.next()).await;
                    }
                    let _ = http
                        .delete(format!("{base}/listener/soak/{listener}"))
                        .send()
                        .await;
                }
                if round.is_multiple_of(10) {
                    let id = format!("temp-{round}");
                    let _ = http
                        .put(format!("{base}/create?channel_id={id}"))
                        .send()
                        .await;
                    let _ = http
                        .post(format!("{base}/broadcast?channel_id={id}"))
                        .json(&json!({"type": "t", "payload": round}))
                        .send()
                        .await;
                    let _ = http.delete(format!("{base}/channel/{id}")).send().await;
                }
                if round % 600 == 1 {
                    // A client that stops reading, for a while.
                    if let Ok(stuck) =
                        super::never_reading_client(&base, "/channels/soak/events").await
                    {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            drop(stuck);
                        });
                    }
                }
                churned.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        let (_, _, rss) = server.usage();
        let sample = Sample {
            minutes: start.elapsed().as_secs_f64() / 60.0,
            rss_mib: rss as f64 / (1024.0 * 1024.0),
            open_streams: metric(&http, &base, "eric_open_streams").await,
            listeners: metric(&http, &base, "eric_listeners").await,
            channels: metric(&http, &base, "eric_channels").await,
        };
        if samples.len() % 6 == 0 {
            println!(
                "| {:.1} | {:.1} MiB | {} | {} | {} |",
                sample.minutes,
                sample.rss_mib,
                sample.open_streams,
                sample.listeners,
                sample.channels
            );
        }
        samples.push(sample);
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }

    // Warm-up (allocator arenas, the first connections) is the first minute.
    let settled: Vec<&Sample> = samples.iter().filter(|s| s.minutes >= 1.0).collect();
    let settled = if settled.is_empty() {
        samples.iter().collect()
    } else {
        settled
    };
    let low = settled.iter().map(|s| s.rss_mib).fold(f64::MAX, f64::min);
    let high = settled.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    println!(
        "\nafter the first minute RSS stayed within {low:.1}-{high:.1} MiB; {} churn rounds; \
         long-lived readers lost {} events",
        churned.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed)
    );
    let csv: String =
        std::iter::once("minutes,rss_mib,open_streams,listeners,channels\n".to_owned())
            .chain(samples.iter().map(|s| {
                format!(
                    "{:.3},{:.2},{},{},{}\n",
                    s.minutes, s.rss_mib, s.open_streams, s.listeners, s.channels
                )
            }))
            .collect();
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(target.join("soak.csv"), csv).unwrap();
    let svg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/soak.svg");
    plot(&samples, minutes, &svg);
    println!(
        "samples: {}; plot: {}",
        target.join("soak.csv").display(),
        svg.display()
    );
}

fn plot(samples: &[Sample], minutes: f64, path: &std::path::Path) {
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let (top, bottom) = root.split_vertically(300);
    let max_rss = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max) * 1.2 + 1.0;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "eric serve under mixed load: server RSS",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..minutes, 0.0..max_rss)
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("MiB")
        .draw()
        .unwrap();
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.minutes, s.rss_mib)),
            &BLUE,
        ))
        .unwrap();
    let max_count = samples
        .iter()
        .map(|s| s.open_streams.max(s.listeners))
        .max()
        .unwrap_or(1) as f64
        * 1.2
        + 1.0;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "open streams (blue) and listeners (red)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..minutes, 0.0..max_count)
        .unwrap();
    chart.configure_mesh().x_desc("minutes").draw().unwrap();
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.minutes, s.open_streams as f64)),
            &BLUE,
        ))
        .unwrap();
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.minutes, s.listeners as f64)),
            &RED,
        ))
        .unwrap();
    root.present().unwrap();
}

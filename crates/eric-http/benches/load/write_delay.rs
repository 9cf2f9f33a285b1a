//! `load -- write-delay`: 1,000 streams offered 1,000 broadcasts/s (more than either
//! server delivers here), eric with and without `--write-delay`, beside the axum +
//! `tokio::sync::broadcast` reference in the same run: server CPU per delivered event,
//! and the latency the delay costs.

use std::time::Duration;

use super::{Outcome, Server, label, print_row, run};

/// The delay measured, in milliseconds (the child server reads it from this variable).
pub(crate) const VAR: &str = "ERIC_LOAD_WRITE_DELAY_MS";
const DELAY_MS: u64 = 10;

/// The delay the `eric-write-delay` server runs with.
pub(crate) fn delay() -> Duration {
    let ms = std::env::var(VAR)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(DELAY_MS);
    Duration::from_millis(ms)
}

/// Server CPU seconds per delivered event, in µs.
fn cpu_per_event_us(o: &Outcome) -> f64 {
    o.cpu_percent / 100.0 / o.deliveries_per_s * 1e6
}

/// The user-space part of it (utime), in µs.
fn user_cpu_per_event_us(o: &Outcome) -> f64 {
    o.user_cpu_percent / 100.0 / o.deliveries_per_s * 1e6
}

pub(crate) fn bench(rt: &tokio::runtime::Runtime, seconds: u64, summary: &mut Vec<String>) {
    let (streams, rate) = (1_000, 1_000);
    let mut outcomes = Vec::new();
    for kind in ["reference", "eric", "eric-write-delay"] {
        let server = Server::start(kind);
        let o = rt.block_on(run(&server, streams, rate, seconds, false));
        let name = match kind {
            "eric-write-delay" => format!("eric, --write-delay {DELAY_MS}"),
            kind => label(kind).to_owned(),
        };
        let ratio = outcomes.first().map_or(1.0, |(_, r): &(String, Outcome)| {
            o.deliveries_per_s / r.deliveries_per_s
        });
        print_row(streams, rate, &name, &o, &format!("{ratio:.2}"));
        outcomes.push((name, o));
    }
    println!(
        "\n## server CPU per delivered event, {streams} streams, {rate} broadcasts/s offered\n"
    );
    println!(
        "| server | CPU per event | ratio to the reference | user-space CPU per event | ratio | p50 | p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let reference = cpu_per_event_us(&outcomes[0].1);
    let user_reference = user_cpu_per_event_us(&outcomes[0].1);
    for (name, o) in &outcomes {
        println!(
            "| {name} | {:.2} µs | {:.2} | {:.2} µs | {:.2} | {:.1} ms | {:.1} ms |",
            cpu_per_event_us(o),
            cpu_per_event_us(o) / reference,
            user_cpu_per_event_us(o),
            user_cpu_per_event_us(o) / user_reference,
            o.p50_ms,
            o.p99_ms
        );
    }
    let (_, delayed) = &outcomes[2];
    summary.push(format!(
        "summary: | HTTP: {streams} streams, {rate} broadcasts/s offered, --write-delay {DELAY_MS} | {:.2} µs CPU per event, p50 {:.1} ms, p99 {:.1} ms | axum + broadcast {reference:.2} µs, p50 {:.1} ms, p99 {:.1} ms | {:.2}x the CPU |",
        cpu_per_event_us(delayed),
        delayed.p50_ms,
        delayed.p99_ms,
        outcomes[0].1.p50_ms,
        outcomes[0].1.p99_ms,
        cpu_per_event_us(delayed) / reference
    ));
}

//! `load -- write-delay`: eric beside the axum + `tokio::sync::broadcast` reference in
//! the same run, at 1,000 streams: 100 broadcasts/s (one write per event per
//! connection), and 1,000 offered (more than either server delivers here: saturation),
//! there with and without `--write-delay` too. Deliveries/s, server CPU and user-space
//! CPU per delivered event, latency.

use std::time::Duration;

use super::generator::{Pacing, Wire, run_over};
use super::{Outcome, Server, label, print_row};

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

const STREAMS: usize = 1_000;

pub(crate) fn bench(rt: &tokio::runtime::Runtime, seconds: u64, summary: &mut Vec<String>) {
    // 100 broadcasts/s: one write per event per connection, the floor both servers
    // share; 1,000 offered: past what either server delivers, in lockstep (each
    // broadcast after the last one's answer).
    shape(
        rt,
        100,
        Pacing::Fixed,
        &["reference", "eric"],
        seconds,
        summary,
    );
    let kinds = ["reference", "eric", "eric-write-delay"];
    shape(rt, 1_000, Pacing::Fixed, &kinds, seconds, summary);
    pipelined(rt, seconds, summary);
}

/// The same broadcasts as at 1,000 offered, pipelined, all at once: saturation, where
/// streams fall behind and have several events ready.
pub(crate) fn pipelined(rt: &tokio::runtime::Runtime, seconds: u64, summary: &mut Vec<String>) {
    let kinds = ["reference", "eric"];
    shape(rt, 1_000, Pacing::Pipelined, &kinds, seconds, summary);
}

/// One load on each of `kinds` (the reference first), in turn.
fn shape(
    rt: &tokio::runtime::Runtime,
    rate: u64,
    pacing: Pacing,
    kinds: &[&'static str],
    seconds: u64,
    summary: &mut Vec<String>,
) {
    let mut outcomes = Vec::new();
    for &kind in kinds {
        let server = Server::start(kind);
        let o = rt.block_on(run_over(
            &server,
            STREAMS,
            rate,
            seconds,
            false,
            Wire::Http1,
            pacing,
        ));
        let name = match kind {
            "eric-write-delay" => format!("eric, --write-delay {DELAY_MS}"),
            kind => label(kind).to_owned(),
        };
        let ratio = outcomes.first().map_or(1.0, |(_, r): &(String, Outcome)| {
            o.deliveries_per_s / r.deliveries_per_s
        });
        print_row(STREAMS, rate, &name, &o, &format!("{ratio:.2}"));
        outcomes.push((name, o));
    }
    let offered = match pacing {
        Pacing::Fixed => format!("{rate} broadcasts/s offered"),
        Pacing::Pipelined => format!("{} broadcasts pipelined", rate * seconds),
    };
    cpu_table(STREAMS, &offered, &outcomes, summary);
}

/// CPU per delivered event and latency of each server beside the reference (first).
fn cpu_table(
    streams: usize,
    offered: &str,
    outcomes: &[(String, Outcome)],
    summary: &mut Vec<String>,
) {
    println!("\n## server CPU per delivered event, {streams} streams, {offered}\n");
    println!(
        "| server | deliveries/s | ratio | CPU per event | ratio to the reference | user-space CPU per event | ratio | p50 | p99 | lost | events per HTTP chunk |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let first = &outcomes[0].1;
    let reference = cpu_per_event_us(first);
    let user_reference = user_cpu_per_event_us(first);
    for (name, o) in outcomes {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} µs | {:.2} | {:.2} µs | {:.2} | {:.1} ms | {:.1} ms | {} | {:.1} |",
            o.deliveries_per_s,
            o.deliveries_per_s / first.deliveries_per_s,
            cpu_per_event_us(o),
            cpu_per_event_us(o) / reference,
            user_cpu_per_event_us(o),
            user_cpu_per_event_us(o) / user_reference,
            o.p50_ms,
            o.p99_ms,
            o.lost,
            o.events_per_chunk
        );
    }
    let (_, eric) = &outcomes[1];
    summary.push(format!(
        "summary: | HTTP: {streams} streams, {offered} | {:.0} deliveries/s, {:.2} µs CPU ({:.2} µs user) per event, p99 {:.1} ms | axum + broadcast {:.0}/s, {reference:.2} µs ({user_reference:.2} µs user), p99 {:.1} ms | {:.2}x deliveries, {:.2}x CPU, {:.2}x user CPU per event |",
        eric.deliveries_per_s,
        cpu_per_event_us(eric),
        user_cpu_per_event_us(eric),
        eric.p99_ms,
        first.deliveries_per_s,
        first.p99_ms,
        eric.deliveries_per_s / first.deliveries_per_s,
        cpu_per_event_us(eric) / reference,
        user_cpu_per_event_us(eric) / user_reference,
    ));
    if let Some((_, delayed)) = outcomes.get(2) {
        summary.push(format!(
            "summary: | HTTP: {streams} streams, {offered}, --write-delay {DELAY_MS} | {:.2} µs CPU per event, p50 {:.1} ms, p99 {:.1} ms | axum + broadcast {reference:.2} µs, p50 {:.1} ms, p99 {:.1} ms | {:.2}x the CPU |",
            cpu_per_event_us(delayed),
            delayed.p50_ms,
            delayed.p99_ms,
            first.p50_ms,
            first.p99_ms,
            cpu_per_event_us(delayed) / reference
        ));
    }
}

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
    paced(rt, seconds, summary);
    let kinds = ["reference", "eric", "eric-write-delay"];
    shape(rt, 1_000, Pacing::Fixed, &kinds, seconds, summary);
    pipelined(rt, seconds, summary);
}

/// 100 broadcasts/s: one write per event per connection.
pub(crate) fn paced(rt: &tokio::runtime::Runtime, seconds: u64, summary: &mut Vec<String>) {
    let kinds = ["reference", "eric"];
    shape(rt, 100, Pacing::Fixed, &kinds, seconds, summary);
}

/// The same broadcasts as at 1,000 offered, pipelined, all at once: saturation, where
/// streams fall behind and have several events ready.
pub(crate) fn pipelined(rt: &tokio::runtime::Runtime, seconds: u64, summary: &mut Vec<String>) {
    let kinds = ["reference", "eric"];
    shape(rt, 1_000, Pacing::Pipelined, &kinds, seconds, summary);
}

/// Rounds of each load (`ERIC_LOAD_ROUNDS`, 1 unless set): in each, every server in
/// turn, the reference first. Each ratio is to the same round's reference, and the
/// summary gives their median: on a shared machine the references' own CPU per event
/// moves by a third from one run to the next, and the host's load drifts between
/// rounds more than within one.
fn rounds() -> usize {
    std::env::var("ERIC_LOAD_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// One load on each of `kinds` (the reference first), in turn, for [`rounds`] rounds.
fn shape(
    rt: &tokio::runtime::Runtime,
    rate: u64,
    pacing: Pacing,
    kinds: &[&'static str],
    seconds: u64,
    summary: &mut Vec<String>,
) {
    let offered = match pacing {
        Pacing::Fixed => format!("{rate} broadcasts/s offered"),
        Pacing::Pipelined => format!("{} broadcasts pipelined", rate * seconds),
    };
    let rounds = rounds();
    let mut all = Vec::new();
    for round in 1..=rounds {
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
        let heading = if rounds > 1 {
            format!("{offered}, round {round} of {rounds}")
        } else {
            offered.clone()
        };
        cpu_table(STREAMS, &heading, &outcomes);
        all.push(outcomes);
    }
    summarize(STREAMS, &offered, &all, summary);
}

/// CPU per delivered event and latency of each server beside the reference (first).
fn cpu_table(streams: usize, offered: &str, outcomes: &[(String, Outcome)]) {
    println!("\n## server CPU per delivered event, {streams} streams, {offered}\n");
    println!(
        "| server | deliveries/s | ratio | CPU per event | ratio to the reference | user-space CPU per event | ratio | p50 | p99 | lost | events per HTTP chunk | publish p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let first = &outcomes[0].1;
    for (name, o) in outcomes {
        let ratios = Ratios::of(o, first);
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} µs | {:.2} | {:.2} µs | {:.2} | {:.1} ms | {:.1} ms | {} | {:.1} | {} |",
            o.deliveries_per_s,
            ratios.deliveries,
            cpu_per_event_us(o),
            ratios.cpu,
            user_cpu_per_event_us(o),
            ratios.user_cpu,
            o.p50_ms,
            o.p99_ms,
            o.lost,
            o.events_per_chunk,
            o.publish_p99_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
        );
    }
}

/// A server's figures over its round's reference's.
struct Ratios {
    deliveries: f64,
    cpu: f64,
    user_cpu: f64,
    p99: f64,
}

impl Ratios {
    fn of(o: &Outcome, reference: &Outcome) -> Self {
        Ratios {
            deliveries: o.deliveries_per_s / reference.deliveries_per_s,
            cpu: cpu_per_event_us(o) / cpu_per_event_us(reference),
            user_cpu: user_cpu_per_event_us(o) / user_cpu_per_event_us(reference),
            p99: o.p99_ms / reference.p99_ms,
        }
    }
}

/// The median of `values` (not empty), and their least and greatest.
fn median(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

/// `median` as the summary shows it: with its range when there were several rounds.
fn shown((median, least, greatest): (f64, f64, f64), rounds: usize) -> String {
    if rounds > 1 {
        format!("{median:.2}x ({least:.2}-{greatest:.2})")
    } else {
        format!("{median:.2}x")
    }
}

/// The summary lines of every round of one load: the median of each round's ratios,
/// and the medians of the figures themselves.
fn summarize(
    streams: usize,
    offered: &str,
    all: &[Vec<(String, Outcome)>],
    summary: &mut Vec<String>,
) {
    let rounds = all.len();
    let of = |server: usize, f: &dyn Fn(&Outcome) -> f64| {
        median(all.iter().map(|round| f(&round[server].1)).collect()).0
    };
    let ratios = |server: usize, f: &dyn Fn(&Ratios) -> f64| {
        median(
            all.iter()
                .map(|round| f(&Ratios::of(&round[server].1, &round[0].1)))
                .collect(),
        )
    };
    let each = if rounds > 1 {
        format!(" (median of {rounds} rounds)")
    } else {
        String::new()
    };
    if rounds > 1 {
        println!(
            "\n## medians of {rounds} rounds, {streams} streams, {offered}; each ratio to its round's reference, least-greatest in brackets\n"
        );
        println!("| server | deliveries | CPU per event | user-space CPU per event | p99 |");
        println!("|---|---:|---:|---:|---:|");
        for (server, (name, _)) in all[0].iter().enumerate().skip(1) {
            println!(
                "| {name} | {} | {} | {} | {} |",
                shown(ratios(server, &|r| r.deliveries), rounds),
                shown(ratios(server, &|r| r.cpu), rounds),
                shown(ratios(server, &|r| r.user_cpu), rounds),
                shown(ratios(server, &|r| r.p99), rounds),
            );
        }
    }
    let reference = of(0, &cpu_per_event_us);
    summary.push(format!(
        "summary: | HTTP: {streams} streams, {offered}{each} | {:.0} deliveries/s, {:.2} µs CPU ({:.2} µs user) per event, p99 {:.1} ms | axum + broadcast {:.0}/s, {reference:.2} µs ({:.2} µs user), p99 {:.1} ms | {} deliveries, {} CPU, {} user CPU per event, {} p99 |",
        of(1, &|o| o.deliveries_per_s),
        of(1, &cpu_per_event_us),
        of(1, &user_cpu_per_event_us),
        of(1, &|o| o.p99_ms),
        of(0, &|o| o.deliveries_per_s),
        of(0, &user_cpu_per_event_us),
        of(0, &|o| o.p99_ms),
        shown(ratios(1, &|r| r.deliveries), rounds),
        shown(ratios(1, &|r| r.cpu), rounds),
        shown(ratios(1, &|r| r.user_cpu), rounds),
        shown(ratios(1, &|r| r.p99), rounds),
    ));
    if all[0].len() > 2 {
        summary.push(format!(
            "summary: | HTTP: {streams} streams, {offered}, --write-delay {DELAY_MS}{each} | {:.2} µs CPU per event, p50 {:.1} ms, p99 {:.1} ms | axum + broadcast {reference:.2} µs, p50 {:.1} ms, p99 {:.1} ms | {} the CPU |",
            of(2, &cpu_per_event_us),
            of(2, &|o| o.p50_ms),
            of(2, &|o| o.p99_ms),
            of(0, &|o| o.p50_ms),
            of(0, &|o| o.p99_ms),
            shown(ratios(2, &|r| r.cpu), rounds),
        ));
    }
}

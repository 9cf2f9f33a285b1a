//! Load: 100 and 1,000 concurrent SSE streams, broadcasts at a fixed rate; deliveries/s,
//! p50/p99 latency, lost and out-of-order events, server CPU and memory per idle
//! stream. eric's server next to a minimal axum + `tokio::sync::broadcast` server (the
//! ratio's reference, served by `axum::serve`) and the same server with its connections
//! served by hyper's HTTP/1.1 connection as eric's are (the floor for memory per
//! stream), each in a process of its own, in the same run, driven by the same load
//! generator.
//!
//! `cargo bench -p eric-http --bench load [-- quick] [flood|stuck|h2]` (`flood`: 10,000
//! streams; `stuck`: 999 readers with and without clients that never read; `h2`: 1,000
//! streams over HTTP/1.1 and over h2c, 10 connections of 100 streams);
//! `-- write-delay` ([`write_delay`]); `-- pipelined` (its saturation row alone);
//! `-- paced` (its 100 broadcasts/s row alone);
//! `-- instructions` (callgrind, [`instructions`]);
//! `ERIC_LOAD_SECONDS=N` runs each load N seconds (to profile a server);
//! `ERIC_LOAD_ROUNDS=N`: `write-delay`, `pipelined` and `paced` run each load N times, every
//! server in turn, and summarize the median of each round's ratios;
//! `cargo bench -p eric-http --bench load -- soak [minutes]`: mixed load for a set time,
//! the server's memory and open streams sampled, plotted to `docs/soak.svg`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

const ROLE: &str = "ERIC_LOAD_ROLE";

use generator::{Outcome, Pacing, Wire, never_reading_client, run, run_over};
use roles::{serve_eric, serve_reference};
use server::{Server, label};

#[path = "load/allocator.rs"]
mod allocator;
#[path = "load/generator.rs"]
mod generator;
#[path = "load/instructions.rs"]
mod instructions;
#[path = "load/latency.rs"]
mod latency;
#[path = "load/pipeline.rs"]
mod pipeline;
#[path = "load/roles.rs"]
mod roles;
#[path = "load/server.rs"]
mod server;
#[path = "load/soak.rs"]
mod soak;
#[path = "load/write_delay.rs"]
mod write_delay;

/// One row of the load tables: the run's figures, with `ratio` to its reference.
fn print_row(streams: usize, rate: u64, label: &str, o: &Outcome, ratio: &str) {
    println!(
        "| {streams} | {rate} | {label} | {:.0} | {ratio} | {:.1} ms | {:.1} ms | {} | {} | {:.0} % | {:.1} KiB |",
        o.deliveries_per_s,
        o.p50_ms,
        o.p99_ms,
        o.lost,
        o.out_of_order,
        o.cpu_percent,
        o.bytes_per_idle_stream / 1024.0
    );
}

/// Each server on each allocator, 1,000 idle streams: what the allocator does to the
/// never-written parts of hyper's two 8 KiB buffers per connection.
fn memory_by_allocator(rt: &tokio::runtime::Runtime, summary: &mut Vec<String>) {
    const STREAMS: usize = 1_000;
    println!("\n# Memory per idle stream by allocator ({STREAMS} streams)\n");
    println!("| server | system allocator | jemalloc |");
    println!("|---|---:|---:|");
    let mut reference = [0.0; 2];
    for kind in ["reference", "reference-hyper", "eric"] {
        let kib = ["system", "jemalloc"].map(|allocator| {
            let server = Server::start_on(kind, allocator);
            rt.block_on(run(&server, STREAMS, 50, 1, false))
                .bytes_per_idle_stream
                / 1024.0
        });
        println!(
            "| {} | {:.1} KiB | {:.1} KiB |",
            label(kind),
            kib[0],
            kib[1]
        );
        if kind == "reference" {
            reference = kib;
        }
        if kind == "eric" {
            for (at, allocator) in ["system allocator", "jemalloc"].iter().enumerate() {
                summary.push(format!(
                    "summary: | HTTP: memory per idle stream, {allocator} ({STREAMS} streams) | {:.1} KiB | axum + broadcast {:.1} KiB | {:.2}x less (aim <= 10 KiB) |",
                    kib[at],
                    reference[at],
                    reference[at] / kib[at]
                ));
            }
        }
    }
}

fn main() {
    if std::env::var_os(ROLE).is_some() {
        // First line to the parent: the allocator this server really runs on.
        println!("{}", allocator::name());
    }
    match std::env::var(ROLE).as_deref() {
        Ok("eric") => return serve_eric(false, false),
        Ok("eric-soak") => return serve_eric(true, false),
        Ok("eric-write-delay") => return serve_eric(false, true),
        Ok("reference") => return serve_reference(false),
        Ok("reference-hyper") => return serve_reference(true),
        _ => {}
    }
    let quick = std::env::args().any(|a| a == "quick");
    // `ERIC_LOAD_SECONDS`: longer runs, to profile a server (perf, say).
    let seconds = std::env::var("ERIC_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 2 } else { 4 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "soak") {
        let minutes: f64 = args
            .get(at + 1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(30.0);
        return rt.block_on(soak::run(minutes));
    }
    println!(
        "# HTTP SSE load ({seconds} s per run; server and load generator share this machine's cores)\n"
    );
    println!(
        "| streams | broadcasts/s | server | deliveries/s | ratio | p50 | p99 | lost | out of order | server CPU | server memory per idle stream |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let special = std::env::args().any(|a| a == "flood" || a == "stuck" || a == "h2");
    if std::env::args().any(|a| a == "instructions") {
        let mut summary = Vec::new();
        instructions::bench(&rt, &mut summary);
        return print_summary(&summary);
    }
    if std::env::args().any(|a| a == "pipelined") {
        // The pipelined row of `write-delay` alone (to profile a server at saturation).
        let mut summary = Vec::new();
        write_delay::pipelined(&rt, seconds, &mut summary);
        return print_summary(&summary);
    }
    if std::env::args().any(|a| a == "paced") {
        // The 100 broadcasts/s row of `write-delay` alone (to profile, or to compare
        // builds on the row where user CPU is the goal).
        let mut summary = Vec::new();
        write_delay::paced(&rt, seconds, &mut summary);
        return print_summary(&summary);
    }
    if std::env::args().any(|a| a == "write-delay") {
        let mut summary = Vec::new();
        write_delay::bench(&rt, seconds, &mut summary);
        return print_summary(&summary);
    }
    let mut panels = Vec::new();
    let mut summary = Vec::new();
    let mut eric_api_rate = None;
    if special {
        // The comparison with eric-api belongs to the default run.
    } else if let Some(eric_api) = Server::start_eric_api() {
        // eric-sse's own HTTP front end, same generator, same run.
        let (streams, rate) = (100, 150);
        let theirs = rt.block_on(run(&eric_api, streams, rate, seconds, false));
        drop(eric_api);
        let server = Server::start("eric");
        let ours = rt.block_on(run(&server, streams, rate, seconds, false));
        if theirs.cpu_percent > 90.0 {
            eric_api_rate = Some(theirs.deliveries_per_s);
        }
        summary.push(format!(
            "summary: | HTTP: {streams} streams, {rate} broadcasts/s offered | {:.0} deliveries/s, p99 {:.1} ms, {:.0} % CPU | eric-api {:.0}/s, p99 {:.1} ms, {:.0} % CPU | **{:.1}x** |",
            ours.deliveries_per_s,
            ours.p99_ms,
            ours.cpu_percent,
            theirs.deliveries_per_s,
            theirs.p99_ms,
            theirs.cpu_percent,
            ours.deliveries_per_s / theirs.deliveries_per_s
        ));
        summary.push(format!(
            "summary: | HTTP: memory per idle stream ({streams} streams) | {:.1} KiB | eric-api {:.1} KiB | **{:.1}x** less |",
            ours.bytes_per_idle_stream / 1024.0,
            theirs.bytes_per_idle_stream / 1024.0,
            theirs.bytes_per_idle_stream / ours.bytes_per_idle_stream
        ));
        panels.push(latency::Panel {
            title: format!("{streams} streams, {rate} broadcasts/s"),
            lines: vec![
                ("eric-api (Python)".to_owned(), theirs.percentiles.clone()),
                ("eric".to_owned(), ours.percentiles.clone()),
            ],
        });
        for (label, o, ratio) in [
            ("eric-api 1.6.0.9 (Python, uvicorn)", &theirs, 1.0),
            (
                "eric",
                &ours,
                ours.deliveries_per_s / theirs.deliveries_per_s,
            ),
        ] {
            print_row(
                streams,
                rate,
                label,
                o,
                &format!("{ratio:.2} (vs eric-api)"),
            );
        }
    } else {
        println!(
            "| | | (eric-api not measured: run `cargo test -p eric-socket --test python_client` once to make its virtualenv) | | | | | | | | |"
        );
    }
    if std::env::args().any(|a| a == "h2") {
        // Issue 22: the same load over HTTP/1.1 and over h2c, in the same run.
        for (streams, rate) in [(1_000, 50), (1_000, 200)] {
            let mut reference = None;
            for wire in [Wire::Http1, Wire::H2c(10)] {
                let server = Server::start("eric");
                let o = rt.block_on(run_over(
                    &server,
                    streams,
                    rate,
                    seconds,
                    false,
                    wire,
                    Pacing::Fixed,
                ));
                let label = match wire {
                    Wire::Http1 => "eric, HTTP/1.1 (1,000 connections)".to_owned(),
                    Wire::H2c(c) => {
                        format!("eric, h2c ({c} connections, {} streams each)", streams / c)
                    }
                };
                let (rate_ref, memory_ref) =
                    *reference.get_or_insert((o.deliveries_per_s, o.bytes_per_idle_stream));
                print_row(
                    streams,
                    rate,
                    &label,
                    &o,
                    &format!("{:.2}", o.deliveries_per_s / rate_ref),
                );
                if wire != Wire::Http1 {
                    summary.push(format!(
                        "summary: | HTTP/2 (h2c): {streams} streams, {rate} broadcasts/s | {:.0} deliveries/s, {:.1} KiB per idle stream, {:.0} % CPU | HTTP/1.1 {rate_ref:.0}/s, {:.1} KiB | {:.2}x deliveries, {:.2}x memory |",
                        o.deliveries_per_s,
                        o.bytes_per_idle_stream / 1024.0,
                        o.cpu_percent,
                        memory_ref / 1024.0,
                        o.deliveries_per_s / rate_ref,
                        o.bytes_per_idle_stream / memory_ref,
                    ));
                }
            }
        }
        return print_summary(&summary);
    }
    if std::env::args().any(|a| a == "stuck") {
        // Issue 9: do 999 readers keep their rate beside clients that never read?
        for stuck in [false, true] {
            let server = Server::start("eric");
            let o = rt.block_on(run(&server, 999, 50, seconds, stuck));
            println!(
                "| 999 | 50 | eric{} | {:.0} | | {:.1} ms | {:.1} ms | {} | {} | {:.0} % | |",
                if stuck {
                    ", plus a stuck client and a never-streamed subscriber"
                } else {
                    ""
                },
                o.deliveries_per_s,
                o.p50_ms,
                o.p99_ms,
                o.lost,
                o.out_of_order,
                o.cpu_percent
            );
        }
        return;
    }
    // `flood`: 10,000 concurrent streams on one process (issue 9), a few broadcasts each.
    let shapes: &[(usize, u64)] = if std::env::args().any(|a| a == "flood") {
        // 10,000 connections on each side need more descriptors than the usual soft
        // limit of 1,024: raise it as far as the hard limit allows (the servers, started
        // after this, inherit it).
        match rlimit::increase_nofile_limit(24_000) {
            Ok(limit) if limit >= 10_100 => {}
            Ok(limit) => panic!("only {limit} file descriptors allowed; 10,000 streams need more"),
            Err(e) => panic!("cannot raise the file-descriptor limit: {e}"),
        }
        &[(10_000, 5)]
    } else {
        &[(100, 500), (100, 2_000), (1_000, 50), (1_000, 200)]
    };
    for &(streams, rate) in shapes {
        let mut reference_rate = 0.0;
        let mut reference_memory = 0.0;
        let mut panel = latency::Panel {
            title: format!("{streams} streams, {rate} broadcasts/s"),
            lines: Vec::new(),
        };
        for kind in ["reference", "reference-hyper", "eric"] {
            let server = Server::start(kind);
            let o = rt.block_on(run(&server, streams, rate, seconds, false));
            if kind == "reference" {
                reference_rate = o.deliveries_per_s;
                reference_memory = o.bytes_per_idle_stream;
            }
            let label = format!("{} ({})", label(kind), server.allocator);
            panel.lines.push((label.clone(), o.percentiles.clone()));
            if let (Some(theirs), "eric", (100, 2_000)) = (eric_api_rate, kind, (streams, rate)) {
                summary.push(format!(
                    "summary: | HTTP: saturated, 100 streams | {:.0} deliveries/s ({rate} broadcasts/s offered) | eric-api {theirs:.0}/s (saturated at 150) | **{:.1}x** |",
                    o.deliveries_per_s,
                    o.deliveries_per_s / theirs
                ));
            }
            if kind == "eric" && ((streams, rate) == (1_000, 200) || streams == 10_000) {
                summary.push(format!(
                    "summary: | HTTP: {streams} streams, {rate} broadcasts/s offered | {:.0} deliveries/s, {} lost | axum + broadcast {reference_rate:.0}/s | {:.2}x |",
                    o.deliveries_per_s,
                    o.lost,
                    o.deliveries_per_s / reference_rate
                ));
            }
            // 1,000 streams: `memory_by_allocator`.
            if kind == "eric" && streams == 10_000 {
                summary.push(format!(
                    "summary: | HTTP: memory per idle stream ({streams} streams) | {:.1} KiB | axum + broadcast {:.1} KiB | {:.2}x less (aim <= 10 KiB) |",
                    o.bytes_per_idle_stream / 1024.0,
                    reference_memory / 1024.0,
                    reference_memory / o.bytes_per_idle_stream
                ));
            }
            let ratio = format!("{:.2}", o.deliveries_per_s / reference_rate);
            print_row(streams, rate, &label, &o, &ratio);
        }
        if (streams, rate) == (1_000, 50) {
            panels.push(panel);
        }
    }
    if !special {
        memory_by_allocator(&rt, &mut summary);
        let svg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/latency.svg");
        latency::plot(&panels, &svg);
        println!("\nlatency percentiles: {}", svg.display());
    }
    print_summary(&summary);
}

/// The summary lines a run collected (`cargo bench --bench all` picks them up).
fn print_summary(summary: &[String]) {
    println!();
    for line in summary {
        println!("{line}");
    }
}

//! `load -- instructions`: instructions per delivered event on the HTTP path, counted
//! by callgrind, for eric and the axum + `tokio::sync::broadcast` reference: the figure
//! that noise on a shared machine does not move.
//!
//! Each server runs in its own process under `valgrind --tool=callgrind`, driven by the
//! load generator from outside it (HTTP/1.1, one connection per stream). Its counters
//! are zeroed (`callgrind_control --zero`) once every stream is open, and dumped once
//! every stream has read every broadcast, before any of them closes: the count covers
//! exactly the broadcasts, their publish requests, and writing each event to each
//! stream (a stream's first event included), divided by the events delivered. The
//! streams' teardown is not in it: it is a cost per stream, not per event, and at 12
//! events per stream it weighed some 300 instructions per event.

use std::path::PathBuf;
use std::process::Command;

use super::{Server, run};

/// Streams, broadcasts/s and seconds of each run: slow enough for a server under
/// callgrind (some 50 times slower than natively) to keep up, so that nothing lags or
/// is lost. At 100 streams a publish request's own cost (routing, parsing, the append)
/// weighs ten times what it does at 1,000, the size of issue 21's goals.
const SIZES: [(usize, u64, u64); 2] = [(100, 20, 3), (1_000, 4, 3)];

/// Set, the dumps are kept (and named) for `callgrind_annotate`.
const KEEP: &str = "ERIC_KEEP_CALLGRIND";

/// The file prefix of a server's callgrind dumps.
fn out_prefix(kind: &str) -> PathBuf {
    std::env::temp_dir().join(format!("eric-load-callgrind-{kind}-{}", std::process::id()))
}

/// The command that runs a `kind` server under callgrind, its counters running.
pub(crate) fn command(kind: &str, exe: PathBuf) -> Command {
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!(
            "--callgrind-out-file={}.%p",
            out_prefix(kind).display()
        ))
        .arg(exe);
    command
}

impl Server {
    /// Zeroes the counters of a server under callgrind.
    pub(crate) fn zero_instructions(&self) {
        if self.callgrind {
            control(self.child.id(), "--zero");
        }
    }

    /// The instructions a server under callgrind ran since its counters were zeroed.
    pub(crate) fn instructions(&self) -> Option<u64> {
        if !self.callgrind {
            return None;
        }
        let pid = self.child.id();
        control(pid, "--dump");
        // The first dump of process `pid` is `<prefix>.<pid>.1`.
        let dump = PathBuf::from(format!("{}.{pid}.1", out_prefix(self.kind).display()));
        let text = std::fs::read_to_string(&dump).ok()?;
        if std::env::var_os(KEEP).is_some() {
            println!("callgrind dump of {}: {}", self.kind, dump.display());
        } else {
            let _ = std::fs::remove_file(&dump);
        }
        text.lines()
            .find_map(|line| {
                line.strip_prefix("summary:")
                    .or(line.strip_prefix("totals:"))
            })
            .and_then(|n| n.split_whitespace().next()?.parse().ok())
    }
}

fn control(pid: u32, what: &str) {
    let status = Command::new("callgrind_control")
        .arg(what)
        .arg(pid.to_string())
        .output();
    assert!(
        status.is_ok_and(|s| s.status.success()),
        "callgrind_control {what} {pid} failed"
    );
}

pub(crate) fn bench(rt: &tokio::runtime::Runtime, summary: &mut Vec<String>) {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("not measured: valgrind is not installed (Debian: apt-get install valgrind)");
        return;
    }
    for (streams, rate, seconds) in SIZES {
        bench_size(rt, streams, rate, seconds, summary);
    }
}

fn bench_size(
    rt: &tokio::runtime::Runtime,
    streams: usize,
    rate: u64,
    seconds: u64,
    summary: &mut Vec<String>,
) {
    println!(
        "\n## instructions per delivered event, HTTP path (callgrind; {streams} HTTP/1.1 streams, {rate} broadcasts/s for {seconds} s; the server's whole process, publishes included)\n"
    );
    println!(
        "| server | events delivered | lost | instructions per event | ratio to the reference |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut reference = None;
    for kind in ["reference", "eric"] {
        let server = Server::start_under_callgrind(kind);
        let o = rt.block_on(run(&server, streams, rate, seconds, false));
        let delivered = rate * seconds * streams as u64 - o.lost;
        let Some(instructions) = o.instructions else {
            println!(
                "| {} | {delivered} | {} | - | - |",
                super::label(kind),
                o.lost
            );
            continue;
        };
        let per_event = instructions as f64 / delivered.max(1) as f64;
        let ratio = per_event / *reference.get_or_insert(per_event);
        println!(
            "| {} | {delivered} | {} | {per_event:.0} | {ratio:.2} |",
            super::label(kind),
            o.lost
        );
        if kind == "eric" {
            summary.push(format!(
                "summary: | HTTP: instructions per delivered event ({streams} streams, callgrind) | {per_event:.0} | axum + broadcast {:.0} | {ratio:.2}x the reference's instructions |",
                reference.unwrap_or(per_event)
            ));
        }
    }
}

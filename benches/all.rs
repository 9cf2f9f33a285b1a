//! Every benchmark of the workspace in one run, each next to the references it measures
//! in the same run: `cargo bench --bench all [-- quick]`. Prints each benchmark's tables
//! as they come, then one table of the headline ratios (every benchmark prints its own
//! rows of it as `summary: | ... |` lines). Writes everything, under a description of the
//! machine, to `target/bench-all.md`; a full run (not `quick`) also rewrites the
//! generated part of `docs/BENCHMARKS.md` (between its `bench-all` markers): machine,
//! commands, the ratio table and the plots.
//!
//! First it makes eric-sse's throwaway virtualenv (the `python_client` test does), so
//! that eric-sse, eric-api and eric-redis-queues run beside eric.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

/// (what, cargo arguments, arguments after `--`, environment of a full run).
type Run = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

const RUNS: &[Run] = &[
    (
        "eric-core: broadcast, drain, idle cost, memory",
        &["bench", "-p", "eric-core", "--bench", "broadcast"],
        &[],
        &[],
    ),
    (
        "eric-core: how costs grow (to 1,000,000 listeners)",
        &["bench", "-p", "eric-core", "--bench", "broadcast"],
        &["growth"],
        &[],
    ),
    (
        "eric-prefabs: data processing",
        &["bench", "-p", "eric-prefabs", "--bench", "data_processing"],
        &[],
        &[],
    ),
    (
        "eric-persistence: Redis",
        &["bench", "-p", "eric-persistence", "--bench", "redis"],
        &[],
        &[],
    ),
    (
        "eric-socket: commands per second (eric-sse's server beside it)",
        &["bench", "-p", "eric-socket", "--bench", "commands"],
        &[],
        &[],
    ),
    (
        "eric-http: SSE load",
        &["bench", "-p", "eric-http", "--bench", "load"],
        &[],
        &[],
    ),
    (
        "eric-http: CPU per event beside axum + broadcast (1,000 streams; 100 and 1,000 broadcasts/s; pipelined; --write-delay)",
        &["bench", "-p", "eric-http", "--bench", "load"],
        &["write-delay"],
        // 16 s per run: user CPU is counted in ticks, and 4 s runs of the 100/s row
        // read anywhere from 0.32x to 0.70x the reference's. Three rounds, each ratio
        // to its own round's reference, their median in the summary: single 16 s runs
        // of one build still read 0.58x to 0.70x.
        &[("ERIC_LOAD_SECONDS", "16"), ("ERIC_LOAD_ROUNDS", "3")],
    ),
    (
        "eric-http: instructions per delivered event, beside axum + broadcast (callgrind)",
        &["bench", "-p", "eric-http", "--bench", "load"],
        &["instructions"],
        &[],
    ),
    (
        "eric-http: signed tokens and many channels on one stream",
        &["bench", "-p", "eric-http", "--bench", "tokens"],
        &[],
        &[],
    ),
    (
        "eric serve --cluster: 1-3 processes, one Redis and a Redis Cluster; dispatch",
        &["bench", "-p", "eric", "--bench", "cluster"],
        &[],
        &[],
    ),
];

fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "?".into());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    format!(
        "- CPU: {cpu}, {} cores available\n- memory: {memory}\n- kernel: {}\n- {}\n- {}\n- commit: {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        output("uname", &["-r"]),
        output("rustc", &["--version"]),
        output("redis-server", &["--version"]),
        output("git", &["rev-parse", "--short", "HEAD"]),
    )
}

const PLOTS: &str = "\
![deliveries per second against listeners, log-log](throughput.svg)

![time per broadcast against listeners, log-log: eric flat, the reference linear](growth.svg)

![latency percentiles of the HTTP load runs](latency.svg)
";

const BEGIN: &str = "<!-- bench-all: begin (written by `cargo bench --bench all`) -->";
const END: &str = "<!-- bench-all: end -->";

/// Replaces what lies between the markers in `path` (the hand-written reading around
/// them stays).
fn write_between_markers(path: &std::path::Path, generated: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        panic!("{} lacks the {BEGIN} / {END} markers", path.display());
    };
    let updated = format!("{}{BEGIN}\n{generated}{}", &text[..begin], &text[end..]);
    std::fs::write(path, updated).unwrap();
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let mut report = format!("# eric benchmarks, all in one run\n\n{}\n", machine());
    print!("{report}");

    // eric-sse's virtualenv, so its server is measured beside eric's.
    let venv = Command::new(&cargo)
        .args(["test", "-p", "eric-socket", "--test", "python_client", "-q"])
        .current_dir(root)
        .status();
    if !venv.is_ok_and(|s| s.success()) {
        println!("(eric-sse's virtualenv could not be made: the socket benchmark runs eric alone)");
    }

    let started = Instant::now();
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    let mut commands = Vec::new();
    for (what, cargo_args, bench_args, env) in RUNS {
        let env = if quick { &[][..] } else { env };
        let mut args: Vec<&str> = cargo_args.to_vec();
        args.push("--");
        args.extend_from_slice(bench_args);
        if quick {
            args.push("quick");
        }
        let command = format!("cargo {}", args.join(" "));
        let command = command.strip_suffix(" --").unwrap_or(&command);
        let command: String = env
            .iter()
            .map(|(name, value)| format!("{name}={value} "))
            .chain([command.to_owned()])
            .collect();
        println!("\n## {what}\n\n`{command}`\n");
        let t = Instant::now();
        let output = Command::new(&cargo)
            .args(&args)
            .envs(env.iter().copied())
            .current_dir(root)
            .output()
            .expect("cargo runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        print!("{stdout}");
        summary.extend(
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix("summary: "))
                .map(str::to_owned),
        );
        commands.push(format!("{command:<72} # {what}"));
        let _ = write!(
            report,
            "\n## {what}\n\n`{command}` ({:.0} s)\n\n{stdout}\n",
            t.elapsed().as_secs_f64()
        );
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
            println!("FAILED: {command}");
            let _ = writeln!(
                report,
                "FAILED:\n\n```\n{}\n```",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            failed.push(command);
        }
    }
    let table = format!(
        "| what | eric | reference, same run | eric's advantage |\n|---|---|---|---|\n{}\n",
        summary.join("\n")
    );
    println!("\n## Summary\n\n{table}");
    let _ = writeln!(
        report,
        "\n## Summary\n\n{table}\nAll benchmarks: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    if quick {
        println!("(quick run: docs/BENCHMARKS.md left as it is)");
    } else {
        let generated = format!(
            "Run of {} ({:.0} minutes), `cargo bench --bench all`:\n\n{}\n```sh\n{}\n```\n\n{table}\n{PLOTS}\n",
            output("date", &["-u", "+%Y-%m-%d"]),
            started.elapsed().as_secs_f64() / 60.0,
            machine(),
            commands.join("\n"),
        );
        let docs = std::path::Path::new(root).join("docs/BENCHMARKS.md");
        write_between_markers(&docs, &generated);
        println!("written: {}", docs.display());
    }
    let path = std::path::Path::new(root).join("target/bench-all.md");
    std::fs::write(&path, &report).unwrap();
    println!("\nwritten: {}", path.display());
    assert!(failed.is_empty(), "benchmarks failed: {failed:?}");
}

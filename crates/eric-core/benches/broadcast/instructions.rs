//! Instructions per delivered message, counted by callgrind: the figure that noise on
//! a shared machine does not move. Each fan-out (eric, `tokio::sync::broadcast`,
//! `async-broadcast`) runs in a child process under `valgrind --tool=callgrind`, on a
//! current-thread runtime, twice: with a few messages per receiver and with many more.
//! The difference, divided by the extra deliveries, is the marginal cost of a delivery
//! (setup, tasks and runtime start cancel out).

use std::process::Command;

use eric_core::{Channel, MessageAdapter};

/// Messages per receiver in the two runs.
const FEW: usize = 20;
const MANY: usize = 120;

const FAN_OUTS: [&str; 3] = ["eric", "tokio", "async-broadcast"];

/// In the child: `instructions-run <fan-out> <receivers> <messages per receiver>`.
pub(crate) fn run_one(args: &[String]) {
    let [fan_out, receivers, per] = args else {
        panic!("instructions-run <fan-out> <receivers> <messages>");
    };
    let (receivers, per): (usize, usize) = (receivers.parse().unwrap(), per.parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match fan_out.as_str() {
            "eric" => {
                let channel: Channel<MessageAdapter> = Channel::default();
                super::drain::broadcast_and_drain(&channel, receivers, per).await
            }
            "tokio" => super::drain::tokio_broadcast_and_drain(receivers, per).await,
            "async-broadcast" => super::drain::async_broadcast_and_drain(receivers, per).await,
            other => panic!("no fan-out {other}"),
        }
    });
}

/// The instructions callgrind counts for one child run.
fn instructions(fan_out: &str, receivers: usize, per: usize) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["instructions-run", fan_out])
        .args([receivers.to_string(), per.to_string()])
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
}

pub(crate) fn bench() {
    println!(
        "\n## instructions per delivery (callgrind, current-thread runtime; ({MANY} - {FEW}) messages per receiver, the difference of two runs)\n"
    );
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("not measured: valgrind is not installed (Debian: apt-get install valgrind)");
        return;
    }
    println!(
        "| receivers | eric | tokio::sync::broadcast | async-broadcast | eric / tokio | eric / async-broadcast |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for receivers in [10, 1_000] {
        let per_delivery: Vec<Option<f64>> = FAN_OUTS
            .iter()
            .map(|fan_out| {
                let few = instructions(fan_out, receivers, FEW)?;
                let many = instructions(fan_out, receivers, MANY)?;
                Some(many.saturating_sub(few) as f64 / (receivers * (MANY - FEW)) as f64)
            })
            .collect();
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "-".to_owned(),
        };
        let [eric, tokio, async_broadcast] = per_delivery[..] else {
            unreachable!()
        };
        println!(
            "| {receivers} | {} | {} | {} | {} | {} |",
            cell(eric),
            cell(tokio),
            cell(async_broadcast),
            ratio(eric, tokio),
            ratio(eric, async_broadcast)
        );
        if receivers == 1_000 {
            println!(
                "\nsummary: | core: instructions per delivery, 1,000 receivers (callgrind) | {} | tokio::sync::broadcast {}; async-broadcast {} | {} the instructions of tokio |",
                cell(eric),
                cell(tokio),
                cell(async_broadcast),
                ratio(eric, tokio)
            );
        }
    }
}

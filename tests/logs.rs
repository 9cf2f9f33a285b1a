//! `eric serve`'s log lines on standard error: `--log-format json` writes one JSON object
//! a line; text written to anything but a terminal (a pipe, a file) has no colour codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The first line `eric serve` logs with `args` before `serve`, stderr piped.
fn first_log_line(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eric"))
        .args(args)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let read = BufReader::new(child.stderr.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    read.unwrap();
    line
}

#[test]
fn json_logs_are_one_object_a_line() {
    let line = first_log_line(&["--log-format", "json"]);
    let object: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|err| {
        panic!("not JSON ({err}): {line:?}");
    });
    assert_eq!(object["level"], "INFO", "{line}");
    assert_eq!(object["fields"]["message"], "eric serve started", "{line}");
    assert!(
        object["fields"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let line = first_log_line(&[]);
    assert!(line.contains("eric serve started"), "{line:?}");
    assert!(!line.contains('\u{1b}'), "colour codes in {line:?}");
}

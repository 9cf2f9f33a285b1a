//! `eric serve` in a process of its own, on a free loopback port; killed when dropped.
//! Shared by the root tests and benchmarks that need separate server processes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub(crate) struct EricServe {
    child: Child,
    /// `http://127.0.0.1:<port>`, as the server printed it.
    pub(crate) base: String,
}

impl EricServe {
    /// Starts `eric serve --addr 127.0.0.1:0 <args>` and waits until it says where it
    /// listens.
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eric"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the eric binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("eric prints where it listens");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("eric did not say where it listens: {line:?}"))
            .to_owned();
        EricServe { child, base }
    }

    /// Kills it (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EricServe {
    fn drop(&mut self) {
        self.kill();
    }
}

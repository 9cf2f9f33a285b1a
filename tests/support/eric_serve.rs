//! `eric serve` in a process of its own, on a free loopback port; killed when dropped.
//! Shared by the root tests and benchmarks that need separate server processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub(crate) struct EricServe {
    child: Child,
    /// `http://127.0.0.1:<port>` (`https://` with `--tls-cert`), as the server printed it.
    pub(crate) base: String,
}

impl EricServe {
    /// Starts `eric serve --addr 127.0.0.1:0 <args>` and waits until it says where it
    /// listens.
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_at("127.0.0.1:0", args)
    }

    /// Starts `eric serve --addr <addr> <args>` (a port of the caller's choosing: the
    /// one a process before it had, say).
    pub(crate) fn start_at(addr: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eric"))
            .args(["serve", "--addr", addr])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the eric binary starts");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        stdout
            .read_line(&mut line)
            .expect("eric prints where it listens");
        // Read on, so that what it prints later (on shutdown) does not meet a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("eric did not say where it listens: {line:?}"))
            .to_owned();
        EricServe { child, base }
    }

    /// Sends it SIGTERM and waits for it to exit (10 s at most): whether it exited
    /// with success, and how long it took.
    pub(crate) fn terminate(&mut self) -> (bool, std::time::Duration) {
        let started = std::time::Instant::now();
        let signalled = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(signalled, "kill -TERM failed");
        while started.elapsed() < std::time::Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.success(), started.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.kill();
        (false, started.elapsed())
    }

    /// Its resident memory now, in bytes (`VmRSS`).
    pub(crate) fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status is readable");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS is in /proc/<pid>/status");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
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

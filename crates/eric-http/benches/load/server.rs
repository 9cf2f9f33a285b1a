//! A server under load: a child process of the bench's own binary in one of its roles,
//! with its address, kind and the CPU and memory it used.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ROLE, allocator, instructions};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) kind: &'static str,
    /// What its memory is allocated by.
    pub(crate) allocator: &'static str,
    /// Whether it runs under callgrind ([`instructions`]).
    pub(crate) callgrind: bool,
}

/// The Python interpreter of the throwaway virtualenv the eric-socket `python_client`
/// test makes (`cargo bench --bench all` makes it first); eric-api is installed there.
pub(crate) fn python() -> Option<std::path::PathBuf> {
    let python =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-eric-sse/bin/python");
    python.exists().then_some(python)
}

impl Server {
    /// eric-sse's HTTP front end (eric-api 1.6.0.9 under uvicorn), installed into the
    /// virtualenv if need be; `None` where that cannot be done.
    pub(crate) fn start_eric_api() -> Option<Self> {
        let python = python()?;
        let installed = Command::new(&python)
            .args(["-c", "import eric_api"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            || Command::new(&python)
                .args(["-m", "pip", "install", "-q", "eric-api==1.6.0.9"])
                .status()
                .is_ok_and(|s| s.success());
        if !installed {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "uvicorn",
                "eric_api:app",
                "--host",
                "127.0.0.1",
                "--log-level",
                "warning",
            ])
            .args(["--port", &port.to_string()])
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            kind: "eric-api",
            allocator: "CPython",
            callgrind: false,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// A server as it ships ([`shipped_allocator`]).
    pub(crate) fn start(kind: &'static str) -> Self {
        Self::start_on(kind, shipped_allocator(kind))
    }

    /// `allocator`: `system` or `jemalloc`.
    pub(crate) fn start_on(kind: &'static str, allocator: &'static str) -> Self {
        Self::spawn(
            kind,
            allocator,
            Command::new(std::env::current_exe().unwrap()),
        )
    }

    /// A server as it ships, under callgrind ([`instructions`]).
    pub(crate) fn start_under_callgrind(kind: &'static str) -> Self {
        let command = instructions::command(kind, std::env::current_exe().unwrap());
        let mut server = Self::spawn(kind, shipped_allocator(kind), command);
        server.callgrind = true;
        server
    }

    /// Runs `command` as a `kind` server on `allocator`.
    pub(crate) fn spawn(kind: &'static str, allocator: &'static str, mut command: Command) -> Self {
        let mut child = command
            .env(ROLE, kind)
            .env(allocator::VAR, allocator)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            allocator,
            "the server runs on another allocator"
        );
        line.clear();
        out.read_line(&mut line).unwrap();
        Server {
            child,
            base: format!("http://{}", line.trim()),
            kind,
            allocator,
            callgrind: false,
        }
    }

    /// (CPU seconds used so far, of which in user space, RSS bytes).
    pub(crate) fn usage(&self) -> (f64, f64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let tick = |at: usize| {
            fields
                .get(at)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime, in clock ticks (fields after the name).
        let (user, system) = (tick(11), tick(12));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        (
            (user + system) as f64 / 100.0,
            user as f64 / 100.0,
            rss_kb * 1024,
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn label(kind: &str) -> &'static str {
    match kind {
        "eric" => "eric",
        "reference" => "axum + broadcast",
        _ => "same, hyper http1",
    }
}

/// What a server kind runs on as it ships: eric on jemalloc, as the `eric` binary; the
/// references on the system allocator, as a plain axum program.
pub(crate) fn shipped_allocator(kind: &str) -> &'static str {
    if kind.starts_with("eric") {
        "jemalloc"
    } else {
        "system"
    }
}

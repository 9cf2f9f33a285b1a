//! A real redis-server for each test: started on a free loopback port, killed on drop.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server of the test's own, on 127.0.0.1 and a free port, with no disk
/// persistence (`--save ''`, no AOF).
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Arguments beyond the defaults (cluster mode, say).
    extra: Vec<String>,
    /// A directory of its own, removed on drop.
    scratch: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one; panics with a clear message if `redis-server` is not installed.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                child: None,
                extra: Vec::new(),
                scratch: None,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts one that keeps what it acknowledged across a kill and
    /// [`restart`](Self::restart) (append-only file, fsync on every write), as a
    /// production Redis does.
    pub fn start_persistent() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("eric-redis-aof-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a directory for the append-only file");
            let mut server = RedisServer {
                port,
                child: None,
                extra: vec![
                    "--dir".into(),
                    dir.to_string_lossy().into_owned(),
                    "--appendonly".into(),
                    "yes".into(),
                    "--appendfsync".into(),
                    "always".into(),
                ],
                scratch: Some(dir),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it kept nothing).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: these tests start their own. \
                 Install it (Debian: apt-get install redis-server) and run again."
            ),
            Err(err) => panic!("could not run redis-server: {err}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if ping(self.port) {
                return true;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false; // exited: the port was taken after all
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Three redis-servers in cluster mode on loopback ports of their own, joined into
/// one Redis Cluster of 3 masters (slots split evenly, no replicas) with
/// `redis-cli --cluster create`. Killed on drop.
pub struct RedisClusterNodes {
    nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl RedisClusterNodes {
    /// Starts the cluster; `Err` says why it could not (no `redis-cli`, say), for a
    /// test to print when it skips.
    pub fn start() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "eric-redis-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {dir:?}: {e}"))?;
        let mut cluster = RedisClusterNodes {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            cluster.nodes.push(cluster.start_node()?);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                format!("cannot run redis-cli (Debian: apt-get install redis-tools): {e}")
            })?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| cluster_ok(n.port)) {
            if Instant::now() > deadline {
                return Err("the Redis Cluster did not reach cluster_state:ok in 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    fn start_node(&self) -> Result<RedisServer, String> {
        for _ in 0..10 {
            // The cluster bus listens on port + 10000: both must be free.
            let port = free_port();
            if port > 55_535 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue;
            }
            let config = self.dir.join(format!("nodes-{port}.conf"));
            let mut server = RedisServer {
                port,
                child: None,
                extra: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    config.to_string_lossy().into_owned(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ],
                scratch: None,
            };
            if server.spawn() {
                return Ok(server);
            }
        }
        Err("no cluster node started on 10 free ports".into())
    }

    /// The seed nodes, comma-separated, as `eric serve --redis` takes them.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(RedisServer::url).collect();
        urls.join(",")
    }

    /// Each node's URL.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

impl Drop for RedisClusterNodes {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cluster_ok(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

//! A socket server on a fresh path in the temp dir, stopped and cleaned up on drop.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod python;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eric_socket::{ServerHandle, SocketServer, SocketServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh socket path in a directory of its own (never a fixed path).
pub fn fresh_path() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "eric-socket-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("eric.sock")
}

pub struct Running {
    pub path: PathBuf,
    pub handle: ServerHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<eric_socket::Result<()>>>,
}

impl Running {
    pub async fn start() -> Self {
        Self::start_with(SocketServerConfig::default()).await
    }

    pub async fn start_with(config: SocketServerConfig) -> Self {
        let path = fresh_path();
        Self::serve(SocketServer::bind_with(&path, config).await.unwrap())
    }

    /// Runs an already bound server.
    pub fn serve(server: SocketServer) -> Self {
        let path = server.path().to_owned();
        let handle = server.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Running {
            path,
            handle,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts the server down and waits for it.
    pub async fn stop(&mut self) -> eric_socket::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap(),
            None => Ok(()),
        }
    }

    /// Sends raw bytes as a request (then EOF) and returns the raw reply.
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut stream = UnixStream::connect(&self.path).await.unwrap();
        stream.write_all(request).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    /// Waits (a bounded time) until `check` holds.
    pub async fn eventually(&self, what: &str, check: impl Fn(&ServerHandle) -> bool) {
        for _ in 0..200 {
            if check(&self.handle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never happened: {what}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

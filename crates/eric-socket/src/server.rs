//! The socket server: eric-sse's controller protocol on a Unix socket.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eric_persistence::{
    ChannelSettings, MemoryChannels, SharedChannels, SseChannelRepository, StoredChannels,
};
use futures_util::StreamExt;
use serde_json::Value;
use std::os::fd::{AsFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::protocol::{ErrorReply, Request, Verb, parse_request, stream_line};

/// The reply to a successful command with nothing to return.
pub const ACK: &str = "ack";

/// Limits and timings of a [`SocketServer`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SocketServerConfig {
    /// The largest request accepted, in bytes (default 1 MiB).
    pub max_request_bytes: usize,
    /// How long a client has to send its whole request (default 10 s).
    pub request_timeout: Duration,
    /// How long shutdown waits for streams to finish writing (default 5 s).
    pub shutdown_grace: Duration,
}

impl Default for SocketServerConfig {
    fn default() -> Self {
        SocketServerConfig {
            max_request_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl SocketServerConfig {
    /// Sets the largest request accepted.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Sets how long a client has to send its request.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// What the server's connections share.
struct State {
    /// Every channel, wherever the backend holds them: the one thing commands call.
    channels: SharedChannels,
    active_streams: AtomicUsize,
    config: SocketServerConfig,
}

/// A handle on a running server's state, for observing it.
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<State>,
}

impl ServerHandle {
    /// Streams (`l` and `w`) open now.
    pub fn active_streams(&self) -> usize {
        self.state.active_streams.load(Ordering::Acquire)
    }

    /// The channels.
    pub fn channels(&self) -> &SharedChannels {
        &self.state.channels
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("channels", &self.state.channels.local().len())
            .field("active_streams", &self.active_streams())
            .finish()
    }
}

/// eric-sse's `SocketServer` on a Unix socket: one JSON request per connection, then
/// EOF; a reply (`ack`, an id, or an error named as eric-sse names it), or for `l` and
/// `w` a stream of JSON lines. Python's `SocketClient` works against it unchanged.
///
/// Unlike the original: a stream ends, and its resources go, when the client goes
/// away; removing a listener ends its stream; shutdown closes streams with the closed
/// message and removes the socket file; a stale socket file is replaced, a live one
/// is not; the socket file is 0600; requests are limited in size and time.
pub struct SocketServer {
    listener: UnixListener,
    path: PathBuf,
    state: Arc<State>,
}

impl std::fmt::Debug for SocketServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketServer")
            .field("path", &self.path)
            .finish()
    }
}

impl SocketServer {
    /// Binds to `path` with the default limits, channels in memory.
    pub async fn bind(path: impl AsRef<Path>) -> Result<Self> {
        Self::bind_with(path, SocketServerConfig::default()).await
    }

    /// Binds to `path`, channels in memory (see [`bind_with_channels`](Self::bind_with_channels)).
    pub async fn bind_with(path: impl AsRef<Path>, config: SocketServerConfig) -> Result<Self> {
        Self::bind_with_channels(path, config, Arc::new(MemoryChannels::new())).await
    }

    /// Binds to `path` and serves `channels`, wherever they are held (memory, a
    /// repository, a cluster: [`SseChannels`](eric_persistence::SseChannels)). Replaces
    /// a stale socket file left by a crashed server, refuses if a server answers there
    /// or if the path is not a socket.
    pub async fn bind_with_channels(
        path: impl AsRef<Path>,
        config: SocketServerConfig,
        channels: SharedChannels,
    ) -> Result<Self> {
        let path = path.as_ref().to_owned();
        if let Ok(metadata) = std::fs::symlink_metadata(&path) {
            if !metadata.file_type().is_socket() {
                return Err(Error::NotASocket { path });
            }
            match UnixStream::connect(&path).await {
                Ok(_) => return Err(Error::InUse { path }),
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(?path, "replacing a stale socket file");
                    std::fs::remove_file(&path)
                        .map_err(|e| Error::io("remove stale socket", &path, e))?;
                }
                Err(err) => return Err(Error::io("probe existing socket", &path, err)),
            }
        }
        // Bind under a temporary name, restrict it, then move it into place: the socket
        // is never reachable with looser permissions.
        let staging = staging_path(&path);
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging).map_err(|e| Error::io("bind", &staging, e))?;
        let restricted = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&staging, &path));
        if let Err(err) = restricted {
            let _ = std::fs::remove_file(&staging);
            return Err(Error::io("secure and place the socket", &path, err));
        }
        Ok(SocketServer {
            listener,
            path,
            state: Arc::new(State {
                channels,
                active_streams: AtomicUsize::new(0),
                config,
            }),
        })
    }

    /// Binds to `path` and keeps channels in `repository`: the stored ones are loaded
    /// now (listeners where they were, unread messages waiting), and every change is
    /// stored before it is acknowledged. `w` streams stay this process's own.
    pub async fn bind_with_repository(
        path: impl AsRef<Path>,
        config: SocketServerConfig,
        repository: SseChannelRepository,
    ) -> Result<Self> {
        let stored = StoredChannels::load(repository).await?;
        Self::bind_with_channels(path, config, Arc::new(stored)).await
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle for observing the server while it runs.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops accepting,
    /// closes every channel (open streams get the closed message and end), waits for
    /// them (up to the grace period), and removes the socket file.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let state = Arc::clone(&self.state);
                        let stopping = stopping.clone();
                        connections.spawn(serve_connection(stream, state, stopping));
                    }
                    // A client that vanished during accept, or fds exhausted for a moment:
                    // log and go on; the server must survive any client.
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        tracing::info!(path = ?self.path, "shutting down");
        let _ = stop.send(true);
        // eric-sse's clients read the closed message as the end: streams get it. Only
        // this process's copies close; stored and cluster channels go on elsewhere.
        let local = self.state.channels.local();
        for id in local.ids() {
            if let Ok(channel) = local.get(&id) {
                channel.close();
            }
        }
        let grace = self.state.config.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            connections.abort_all();
        }
        // Last: records what stored listeners read (their streams have ended).
        if let Err(err) = self.state.channels.shutdown().await {
            tracing::warn!(%err, "could not record what stored listeners read");
        }
        std::fs::remove_file(&self.path).map_err(|e| Error::io("remove socket", &self.path, e))
    }

    /// Serves until the process is told to stop (never returns otherwise).
    pub async fn run(self) -> Result<()> {
        self.run_until(std::future::pending()).await
    }
}

fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.binding", std::process::id()))
}

/// One connection: read the request (bounded in size and time), answer it.
async fn serve_connection(
    mut stream: UnixStream,
    state: Arc<State>,
    stopping: watch::Receiver<bool>,
) {
    let config = &state.config;
    let request = match tokio::time::timeout(
        config.request_timeout,
        read_request(&mut stream, config.max_request_bytes),
    )
    .await
    {
        Ok(Ok(bytes)) => parse_request(&bytes),
        Ok(Err(reply)) => Err(reply),
        Err(_) => Err(ErrorReply::format(format!(
            "no complete request (JSON, then EOF) within {:?}",
            config.request_timeout
        ))),
    };
    let outcome = match request {
        Ok(request) if request.verb.streams() => {
            stream_to(&mut stream, &state, &request, stopping).await
        }
        Ok(request) => {
            let reply = match execute(&state, &request).await {
                Ok(reply) => reply,
                Err(err) => err.to_string(),
            };
            stream.write_all(reply.as_bytes()).await
        }
        Err(err) => stream.write_all(err.to_string().as_bytes()).await,
    };
    if let Err(err) = outcome {
        tracing::debug!(%err, "client went away");
    }
    let _ = stream.shutdown().await;
}

/// Reads until EOF; refuses more than `limit` bytes.
async fn read_request(stream: &mut UnixStream, limit: usize) -> Result<Vec<u8>, ErrorReply> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|err| ErrorReply::format(format!("reading the request failed: {err}")))?;
        if n == 0 {
            return Ok(request);
        }
        if request.len() + n > limit {
            return Err(ErrorReply::format(format!(
                "request larger than {limit} bytes"
            )));
        }
        request.extend_from_slice(&chunk[..n]);
    }
}

fn channel_id(request: &Request) -> &str {
    request.channel_id.as_deref().unwrap_or_default()
}

fn receiver(request: &Request) -> Result<&str, ErrorReply> {
    request
        .receiver_id
        .as_deref()
        .ok_or_else(|| ErrorReply::format("missing receiver 'r'"))
}

/// eric-sse raises this one without a message when listening to an unknown listener.
fn listen_reply(mut reply: ErrorReply) -> ErrorReply {
    if reply.kind == "InvalidListenerException" {
        reply.detail.clear();
    }
    reply
}

/// eric-sse's words for a dispatch to an unknown listener.
fn dispatch_reply(listener: &str) -> impl Fn(ErrorReply) -> ErrorReply + '_ {
    move |mut reply| {
        if reply.kind == "InvalidListenerException" {
            reply.detail = format!("Invalid listener {listener}");
        }
        reply
    }
}

/// The commands with one reply.
async fn execute(state: &State, request: &Request) -> Result<String, ErrorReply> {
    let message = || {
        request
            .message
            .clone()
            .ok_or_else(|| ErrorReply::format("missing message type 't'"))
    };
    let channels = &state.channels;
    let channel = channel_id(request);
    Ok(match request.verb {
        Verb::CreateChannel => channels.create(ChannelSettings::default()).await?,
        Verb::Register => channels.add_listener(channel).await?,
        Verb::Dispatch => {
            let listener = receiver(request)?;
            channels
                .dispatch(channel, listener, message()?)
                .await
                .map_err(|err| dispatch_reply(listener)(err.into()))?;
            ACK.to_owned()
        }
        Verb::Broadcast => {
            channels.broadcast(channel, message()?).await?;
            ACK.to_owned()
        }
        Verb::RemoveListener => {
            channels
                .remove_listener(channel, receiver(request)?)
                .await?;
            ACK.to_owned()
        }
        Verb::RemoveChannel => {
            channels.remove(channel).await?;
            ACK.to_owned()
        }
        Verb::Listen | Verb::Watch => return Err(ErrorReply::format("a stream verb")),
    })
}

/// The stream verbs: one JSON line per message until the stream ends, the client goes
/// away, or the server shuts down.
async fn stream_to(
    stream: &mut UnixStream,
    state: &State,
    request: &Request,
    mut stopping: watch::Receiver<bool>,
) -> io::Result<()> {
    let channels = &state.channels;
    let opened = match request.verb {
        Verb::Listen => match receiver(request) {
            Ok(listener) => channels
                .message_stream(channel_id(request), listener, None)
                .await
                .map_err(|err| listen_reply(err.into())),
            Err(reply) => Err(reply),
        },
        _ => channels
            .subscribe(channel_id(request), None)
            .await
            .map_err(ErrorReply::from),
    };
    let mut events = match opened {
        Ok(events) => events,
        Err(err) => return stream.write_all(err.to_string().as_bytes()).await,
    };
    state.active_streams.fetch_add(1, Ordering::AcqRel);
    let _open = StreamGuard(&state.active_streams);
    let hang_up = HangUpWatch::new(stream);
    // Each event carries its channel's reconnection time; an error line before any
    // event says eric-sse's default.
    let mut retry = eric_prefabs::DEFAULT_RETRY_MS;
    loop {
        tokio::select! {
            event = events.next() => {
                let line = match event {
                    Some(Ok(event)) => {
                        let data: Value = serde_json::from_str(event.data()).unwrap_or(Value::Null);
                        retry = event.retry().unwrap_or(retry);
                        stream_line(event.event().unwrap_or("message"), retry, &data)
                    }
                    Some(Err(err)) => stream_line(
                        eric_core::MESSAGE_TYPE_INTERNAL_ERROR,
                        retry,
                        &Value::String(err.to_string()),
                    ),
                    None => return Ok(()),
                };
                stream.write_all(line.as_bytes()).await?;
            }
            () = hang_up.gone() => return Ok(()),
            // Shutdown closes the channels: the stream gets the closed message and ends.
            changed = stopping.changed() => {
                if changed.is_err() {
                    return Ok(()); // the server is gone
                }
            }
        }
    }
}

/// Watches a client's socket for its hang-up. The request ended with EOF, so reads say
/// nothing more; a hang-up is an edge on the write side. The watch has a registration
/// of its own (a duplicate of the descriptor): clearing its readiness between edges
/// leaves the stream's own writes alone, and nothing polls.
struct HangUpWatch {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl HangUpWatch {
    // The workspace's one `unsafe`: tokio's safe constructor is deprecated as unsound
    // for types that do not own their descriptor; an `OwnedFd` does.
    #[allow(unsafe_code)]
    fn new(stream: &UnixStream) -> Self {
        let fd = stream
            .as_fd()
            .try_clone_to_owned()
            .and_then(|dup| {
                // SAFETY: `dup` is an open descriptor that the AsyncFd owns from here on
                // and closes when dropped; `OwnedFd::as_raw_fd` always returns it.
                unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
                    .map_err(|err| err.into_parts().1)
            })
            .map_err(
                |err| tracing::warn!(%err, "cannot watch for hang-ups; relying on write errors"),
            )
            .ok();
        HangUpWatch { fd }
    }

    /// Resolves when the client has hung up (never, if the watch could not be set up).
    async fn gone(&self) {
        let Some(fd) = &self.fd else {
            return std::future::pending().await;
        };
        loop {
            let Ok(mut guard) = fd.writable().await else {
                return;
            };
            if guard.ready().is_write_closed() {
                return;
            }
            guard.clear_ready();
        }
    }
}

struct StreamGuard<'a>(&'a AtomicUsize);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

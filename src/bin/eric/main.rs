//! The `eric` command.

mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eric::persistence::SharedChannels;
use eric::{Channel, Message};
use futures_util::StreamExt;
use serde_json::Value;

// A server's memory is mostly its idle connections, and most of each one's buffers is
// never written: jemalloc leaves those pages out of memory where the system allocator's
// block headers and reuse touch them (7.1-7.7 vs 11.9 KiB per idle stream,
// docs/BENCHMARKS.md).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "eric",
    version,
    about = "Async messaging in the Server-Sent Events model"
)]
struct Cli {
    /// How log lines are written to standard error: `text` (coloured only on a
    /// terminal) or `json` (one object a line, for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "ERIC_LOG_FORMAT", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        // Colour codes only where a terminal shows them: a log file gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// `--overflow`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Overflow {
    Disconnect,
    DropOldest,
    Reject,
}

impl Overflow {
    fn policy(self) -> eric::OverflowPolicy {
        match self {
            Overflow::Disconnect => eric::OverflowPolicy::Disconnect,
            Overflow::DropOldest => eric::OverflowPolicy::DropOldest,
            Overflow::Reject => eric::OverflowPolicy::Reject,
        }
    }
}

/// Where a server holds its channels: `--redis` and `--cluster`, shared by `eric serve`
/// and `eric socket serve`.
#[derive(clap::Args)]
struct Backend {
    /// Keep channels, listeners and unread messages in Redis (redis://127.0.0.1:6379,
    /// say): they are reloaded at start. With --cluster, several comma-separated URLs
    /// are the seed nodes of a Redis Cluster.
    #[arg(long, env = "ERIC_REDIS_URL")]
    redis: Option<String>,
    /// The prefix of eric's keys in Redis.
    #[arg(long, default_value = "eric:", env = "ERIC_REDIS_PREFIX")]
    redis_prefix: String,
    /// Share channels with every `eric serve --cluster` and `eric socket serve
    /// --cluster` on the same Redis (needs --redis): a broadcast on any of them reaches
    /// the streams of all, with the same event ids (docs/SCALING.md).
    #[arg(long, alias = "cluster-mode", requires = "redis", env = "ERIC_CLUSTER")]
    cluster: bool,
}

impl Backend {
    /// The channels a server serves: in memory, kept in Redis, or shared through it.
    async fn channels(&self) -> Result<SharedChannels, Box<dyn std::error::Error>> {
        use eric::persistence::{
            Keys, MemoryChannels, RedisCluster, RedisStorage, SseChannelRepository, StoredChannels,
        };
        Ok(match &self.redis {
            Some(url) if self.cluster => {
                Arc::new(RedisCluster::connect_with_prefix(url, &self.redis_prefix).await?)
            }
            Some(url) if url.contains(',') => {
                return Err(
                    "several Redis nodes (a Redis Cluster) are for cluster mode: \
                            add --cluster; persistence uses one Redis server"
                        .into(),
                );
            }
            Some(url) => {
                let keys = Keys::new(self.redis_prefix.clone());
                let storage = RedisStorage::connect_with_keys(url, keys).await?;
                let stored = StoredChannels::load(SseChannelRepository::new(storage)).await?;
                Arc::new(stored)
            }
            None => Arc::new(MemoryChannels::new()),
        })
    }

    /// How the server holds its channels, for its first line.
    fn kept(&self) -> &'static str {
        match (&self.redis, self.cluster) {
            (Some(_), true) => " (cluster mode: channels shared through Redis)",
            (Some(_), false) => " (channels kept in Redis)",
            (None, _) => "",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serves the HTTP SSE API (eric-sse's routes, EventSource-ready) until SIGINT or
    /// SIGTERM.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8000", env = "ERIC_ADDR")]
        addr: String,
        /// Seconds between keep-alive comments on idle streams (0: none).
        #[arg(long, default_value_t = 15, env = "ERIC_KEEP_ALIVE")]
        keep_alive: u64,
        /// Milliseconds a browser waits before it reconnects a dropped stream (SSE
        /// `retry`); each connection gets its own, uniform in [MS/2, 3*MS/2], so that
        /// reconnects after a restart spread out.
        #[arg(long, default_value_t = 3000, env = "ERIC_RETRY")]
        retry: u64,
        /// Broadcasts each channel keeps for clients resuming with Last-Event-ID.
        #[arg(long, default_value_t = 1024, env = "ERIC_REPLAY")]
        replay: usize,
        /// Of those, the most bytes each channel keeps (0: no bound in bytes).
        #[arg(long, default_value_t = eric::http::DEFAULT_REPLAY_BYTES, env = "ERIC_REPLAY_BYTES")]
        replay_bytes: u64,
        /// The memory all channels' messages may hold, in bytes (default: a quarter of
        /// the machine's or the cgroup's memory; 0: no bound). Replay windows give way
        /// first; beyond it, publishes get 503 MemoryBudgetExceeded.
        #[arg(long, env = "ERIC_MAX_RETAINED_BYTES")]
        max_retained_bytes: Option<u64>,
        /// Seconds a stream lasts at most, fractions allowed (0: no limit); it then
        /// ends and its EventSource reconnects with Last-Event-ID, losing nothing.
        #[arg(long, default_value_t = 0.0, env = "ERIC_MAX_STREAM_DURATION")]
        max_stream_duration: f64,
        /// Milliseconds a stream gathers events before it writes them (0: none, each
        /// event is written as it comes): fewer writes when events come fast, at the
        /// cost of up to that much latency.
        #[arg(long, value_name = "MS", default_value_t = 0, env = "ERIC_WRITE_DELAY")]
        write_delay: u64,
        /// The largest request body, in bytes.
        #[arg(long, default_value_t = 1 << 20, env = "ERIC_MAX_BODY_BYTES")]
        max_body_bytes: usize,
        /// Seconds a connection may take to send its request head before it is closed.
        #[arg(long, default_value_t = 10, env = "ERIC_HEADER_TIMEOUT")]
        header_timeout: u64,
        /// Seconds a request may take to arrive and be answered once its head is in
        /// (408 after that; streams' events do not count).
        #[arg(long, default_value_t = 10, env = "ERIC_REQUEST_TIMEOUT")]
        request_timeout: u64,
        /// Seconds a graceful shutdown (SIGTERM, SIGINT) may take in all: publishes in
        /// flight finish, streams end so that clients resume elsewhere, connections close.
        #[arg(long, default_value_t = 10, env = "ERIC_SHUTDOWN_TIMEOUT")]
        shutdown_timeout: u64,
        /// The most channels the server holds (503 LimitReached beyond).
        #[arg(long, default_value_t = 10_000, env = "ERIC_MAX_CHANNELS")]
        max_channels: usize,
        /// The most connections open at once (0: no cap); one more is answered 503
        /// LimitReached and closed.
        #[arg(long, default_value_t = 50_000, env = "ERIC_MAX_CONNECTIONS")]
        max_connections: usize,
        /// The most listeners a channel holds (503 LimitReached beyond).
        #[arg(long, default_value_t = 100_000, env = "ERIC_MAX_LISTENERS")]
        max_listeners: usize,
        /// What each listener may have unread (0: unbounded). A client that stops
        /// reading holds back everything broadcast since; this bounds it.
        #[arg(long, default_value_t = eric::http::DEFAULT_CAPACITY, env = "ERIC_CAPACITY")]
        capacity: usize,
        /// What happens to a listener over --capacity: its stream ends (disconnect; an
        /// EventSource reconnects to a too_old reset, then the last --capacity
        /// broadcasts), its oldest unread are dropped
        /// (drop-oldest), or new messages are refused (reject).
        #[arg(long, value_enum, default_value_t = Overflow::Disconnect, env = "ERIC_OVERFLOW")]
        overflow: Overflow,
        /// Serve TLS with this certificate chain (PEM; with --tls-key): HTTP/2 and
        /// HTTP/1.1 by ALPN. Without it, cleartext HTTP/1.1 and h2c on the same port.
        #[arg(long, value_name = "FILE", env = "ERIC_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
        #[arg(long, value_name = "FILE", env = "ERIC_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The most channels one `GET /events` stream may follow (400 beyond).
        #[arg(long, default_value_t = 64, env = "ERIC_MAX_CHANNELS_PER_STREAM")]
        max_channels_per_stream: usize,
        #[command(flatten)]
        tokens: Box<tokens::TokenArgs>,
        /// Origins allowed by CORS, comma-separated (`*`: any).
        #[arg(long, value_delimiter = ',', env = "ERIC_CORS_ORIGINS")]
        cors_origin: Vec<String>,
        #[command(flatten)]
        backend: Backend,
    },
    /// Creates an in-memory channel, adds listeners, broadcasts, and prints each
    /// listener's stream.
    Demo {
        /// How many listeners to add.
        #[arg(long, default_value_t = 3)]
        listeners: usize,
        /// How many messages to broadcast.
        #[arg(long, default_value_t = 3)]
        messages: usize,
    },
    /// eric-sse's Unix-socket controller: serve it, or drive a server from the shell.
    #[command(subcommand)]
    Socket(SocketCommand),
}

#[derive(Subcommand)]
enum SocketCommand {
    /// Serves the controller on PATH until SIGINT or SIGTERM.
    Serve {
        /// The socket file (created 0600; a stale one is replaced).
        path: PathBuf,
        /// The largest request accepted, in bytes.
        #[arg(long, default_value_t = 1 << 20, env = "ERIC_SOCKET_MAX_REQUEST_BYTES")]
        max_request_bytes: usize,
        /// How long a client has to send its request, in milliseconds.
        #[arg(long, default_value_t = 10_000, env = "ERIC_SOCKET_REQUEST_TIMEOUT_MS")]
        request_timeout_ms: u64,
        #[command(flatten)]
        backend: Backend,
    },
    /// Creates a channel; prints its id.
    Create { path: PathBuf },
    /// Adds a listener to CHANNEL; prints its id.
    Register { path: PathBuf, channel: String },
    /// Broadcasts a message (PAYLOAD is JSON, or else taken as a string).
    Broadcast {
        path: PathBuf,
        channel: String,
        message_type: String,
        payload: Option<String>,
    },
    /// Dispatches a message to one listener.
    Dispatch {
        path: PathBuf,
        channel: String,
        listener: String,
        message_type: String,
        payload: Option<String>,
    },
    /// Prints a listener's stream, one JSON line a message, until it ends.
    Listen {
        path: PathBuf,
        channel: String,
        listener: String,
    },
    /// Prints a channel's messages through a listener of its own, until it ends.
    Watch { path: PathBuf, channel: String },
    /// Removes a listener.
    RemoveListener {
        path: PathBuf,
        channel: String,
        listener: String,
    },
    /// Removes a channel (its streams get the closed message).
    RemoveChannel { path: PathBuf, channel: String },
    /// Sends a raw JSON request and prints the reply.
    Send { path: PathBuf, request: String },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Demo {
            listeners,
            messages,
        } => demo(listeners, messages).await,
        Command::Socket(command) => socket(command).await,
        Command::Serve {
            addr,
            keep_alive,
            retry,
            replay,
            replay_bytes,
            max_retained_bytes,
            max_stream_duration,
            write_delay,
            max_body_bytes,
            header_timeout,
            request_timeout,
            shutdown_timeout,
            max_channels,
            max_listeners,
            max_connections,
            capacity,
            overflow,
            max_channels_per_stream,
            tls_cert,
            tls_key,
            tokens,
            cors_origin,
            backend,
        } => {
            let config = eric::http::HttpConfig::default()
                .keep_alive((keep_alive > 0).then(|| Duration::from_secs(keep_alive)))
                .retry(Duration::from_millis(retry))
                .replay(replay)
                .replay_bytes((replay_bytes > 0).then_some(replay_bytes))
                .max_stream_duration(
                    Duration::try_from_secs_f64(max_stream_duration)
                        .ok()
                        .filter(|d| !d.is_zero()),
                )
                .write_delay((write_delay > 0).then(|| Duration::from_millis(write_delay)))
                .max_body_bytes(max_body_bytes)
                .header_read_timeout(Duration::from_secs(header_timeout.max(1)))
                .request_timeout(Duration::from_secs(request_timeout.max(1)))
                .shutdown_timeout(Duration::from_secs(shutdown_timeout))
                .limits(max_channels, max_listeners)
                .max_connections((max_connections > 0).then_some(max_connections))
                .capacity(capacity, overflow.policy())
                .max_channels_per_stream(max_channels_per_stream)
                .cors_origins(cors_origin);
            let config = match max_retained_bytes {
                Some(0) => config.max_retained_bytes(None),
                Some(bytes) => config.max_retained_bytes(Some(bytes)),
                None => config,
            };
            let config = (*tokens).apply(config)?;
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(eric::http::TlsConfig::from_pem_files(cert, key)?),
                _ => None,
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            let config = config.tls(tls);
            let config = if capacity == 0 {
                config.unbounded()
            } else {
                config
            };
            let channels = backend.channels().await?;
            let server =
                eric::http::HttpServer::bind_with_channels(&addr, config, channels).await?;
            let addr = server.local_addr()?;
            let stop = shutdown_signal()?;
            tracing::info!(%addr, kept = backend.kept(), "eric serve started");
            println!("eric listening on {scheme}://{addr}{}", backend.kept());
            server.run_until(stop).await?;
            println!("eric stopped");
            Ok(())
        }
    }
}

fn payload(text: Option<String>) -> Value {
    match text {
        None => Value::Null,
        Some(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn socket(command: SocketCommand) -> Result<(), Box<dyn std::error::Error>> {
    use eric::socket::{SocketClient, SocketServer, SocketServerConfig};
    let client = |path: &PathBuf| SocketClient::new(path);
    match command {
        SocketCommand::Serve {
            path,
            max_request_bytes,
            request_timeout_ms,
            backend,
        } => {
            let config = SocketServerConfig::default()
                .max_request_bytes(max_request_bytes)
                .request_timeout(Duration::from_millis(request_timeout_ms));
            let channels = backend.channels().await?;
            let server = SocketServer::bind_with_channels(&path, config, channels).await?;
            let stop = shutdown_signal()?;
            eprintln!(
                "eric socket server listening on {}{}",
                path.display(),
                backend.kept()
            );
            server.run_until(stop).await?;
            eprintln!("eric socket server stopped");
        }
        SocketCommand::Create { path } => println!("{}", client(&path).create_channel().await?),
        SocketCommand::Register { path, channel } => {
            println!("{}", client(&path).register(&channel).await?)
        }
        SocketCommand::Broadcast {
            path,
            channel,
            message_type,
            payload: p,
        } => {
            client(&path)
                .broadcast_message(&channel, &message_type, payload(p))
                .await?;
            println!("ack");
        }
        SocketCommand::Dispatch {
            path,
            channel,
            listener,
            message_type,
            payload: p,
        } => {
            client(&path)
                .dispatch(&channel, &listener, &message_type, payload(p))
                .await?;
            println!("ack");
        }
        SocketCommand::Listen {
            path,
            channel,
            listener,
        } => print_lines(client(&path).stream(&channel, &listener).await?).await?,
        SocketCommand::Watch { path, channel } => {
            print_lines(client(&path).watch(&channel).await?).await?
        }
        SocketCommand::RemoveListener {
            path,
            channel,
            listener,
        } => {
            client(&path).remove_listener(&channel, &listener).await?;
            println!("ack");
        }
        SocketCommand::RemoveChannel { path, channel } => {
            client(&path).remove_channel(&channel).await?;
            println!("ack");
        }
        SocketCommand::Send { path, request } => {
            let request: Value = serde_json::from_str(&request)?;
            println!("{}", client(&path).send_payload(&request).await?);
        }
    }
    Ok(())
}

async fn print_lines(
    mut lines: eric::socket::LineStream,
) -> Result<(), Box<dyn std::error::Error>> {
    while let Some(line) = lines.next().await {
        println!("{}", line?);
    }
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now, and returns what completes on either.
///
/// Called before the server says it listens: a handler installed at the future's
/// first poll left a window (the router's set-up, or a main thread the OS had not yet
/// run again) in which a supervisor's SIGTERM, sent as soon as it read that line,
/// killed the process instead of stopping it.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

async fn demo(listeners: usize, messages: usize) -> Result<(), Box<dyn std::error::Error>> {
    let channel = Channel::default();
    println!("channel {}", channel.id());
    let mut readers = Vec::with_capacity(listeners);
    for _ in 0..listeners {
        let listener = channel.add_listener()?;
        let mut stream = channel.message_stream(listener.id())?;
        readers.push(tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(item) = stream.next().await {
                let msg = item?;
                lines.push(format!(
                    "listener {} got {} {}",
                    stream.listener_id(),
                    msg.message_type(),
                    msg.payload_json()
                ));
            }
            Ok::<_, eric::Error>(lines)
        }));
    }
    for n in 0..messages {
        let report = channel.broadcast(Message::new(
            "greeting",
            serde_json::json!({ "n": n, "text": "hello" }),
        ))?;
        println!("broadcast #{n} to {} listener(s)", report.delivered);
    }
    channel.close();
    for reader in readers {
        for line in reader.await?? {
            println!("{line}");
        }
    }
    Ok(())
}

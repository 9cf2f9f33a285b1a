//! `/metrics`, through prometheus-client: what is counted as it happens (connections,
//! streams, deliveries and their latency) in its metrics, and what the channels count
//! read from them at each scrape by a collector.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eric_persistence::SharedChannels;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::latency::LatencyHistogram;
use crate::striped::StripedCounter;

/// What the server counts, and the registry `/metrics` is written from.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Connections open now.
    pub(crate) connections: Gauge,
    /// Connections open now, by protocol.
    pub(crate) http1_connections: Gauge,
    pub(crate) h2_connections: Gauge,
    /// Connections refused for going over `max_connections`.
    pub(crate) refused_connections: Counter,
    /// Refusals being answered now (not exported: it bounds the refusals at once).
    pub(crate) refusing: Gauge,
    pub(crate) open_streams: Gauge,
    /// Broadcasts refused for going over the memory budget.
    pub(crate) refused_publishes: Counter,
    pub(crate) delivered: StripedCounter,
    /// From a publish's acceptance to its event being written to a stream.
    pub(crate) delivery_latency: LatencyHistogram,
    /// What channels removed so far had counted (dropped, rejected, disconnected), so
    /// that the totals never go down.
    retired: Arc<[AtomicU64; 3]>,
    registry: Registry,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByProtocol {
    protocol: String,
}

impl Metrics {
    /// The metrics of a server over `channels`.
    pub(crate) fn new(channels: SharedChannels) -> Self {
        let mut registry = Registry::default();
        let connections = Gauge::default();
        registry.register(
            "eric_connections",
            "HTTP connections open now",
            connections.clone(),
        );
        let by_protocol = Family::<ByProtocol, Gauge>::default();
        let of = |protocol: &str| {
            by_protocol
                .get_or_create(&ByProtocol {
                    protocol: protocol.to_owned(),
                })
                .clone()
        };
        let (http1_connections, h2_connections) = (of("http/1.1"), of("h2"));
        registry.register(
            "eric_connections_by_protocol",
            "HTTP connections open now, by protocol (over TLS or not)",
            by_protocol,
        );
        let refused_connections = Counter::default();
        registry.register(
            "eric_connections_refused",
            "Connections refused for going over --max-connections",
            refused_connections.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "eric_open_streams",
            "SSE responses being streamed now",
            open_streams.clone(),
        );
        let refused_publishes = Counter::default();
        registry.register(
            "eric_publishes_refused_memory",
            "Broadcasts refused with 503 for going over --max-retained-bytes",
            refused_publishes.clone(),
        );
        let delivered = StripedCounter::default();
        registry.register(
            "eric_delivered",
            "Events written to SSE responses",
            delivered.clone(),
        );
        // 100 µs to 3.3 s, doubling.
        let delivery_latency = LatencyHistogram::default();
        registry.register(
            "eric_delivery_latency_seconds",
            "From a publish's acceptance (its HTTP request answered, or read from the \
             cluster's stream) to its event being written to a stream",
            delivery_latency.clone(),
        );
        let retired: Arc<[AtomicU64; 3]> = Arc::default();
        registry.register_collector(Box::new(ChannelCounts {
            channels,
            retired: Arc::clone(&retired),
        }));
        Metrics {
            connections,
            http1_connections,
            h2_connections,
            refused_connections,
            refusing: Gauge::default(),
            open_streams,
            refused_publishes,
            delivered,
            delivery_latency,
            retired,
            registry,
        }
    }

    /// Keeps what a channel about to be removed has counted.
    pub(crate) fn retire(&self, stats: &eric_core::ChannelStats) {
        for (total, n) in
            self.retired
                .iter()
                .zip([stats.dropped, stats.rejected, stats.disconnected])
        {
            total.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Everything, in Prometheus's text format (0.0.4).
    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// What this process's copies of the channels count, read at each scrape.
struct ChannelCounts {
    channels: SharedChannels,
    retired: Arc<[AtomicU64; 3]>,
}

impl std::fmt::Debug for ChannelCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelCounts").finish_non_exhaustive()
    }
}

impl Collector for ChannelCounts {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let local = self.channels.local();
        let ids = local.ids();
        let [mut dropped, mut rejected, mut disconnected] =
            self.retired.each_ref().map(|n| n.load(Ordering::Relaxed));
        let mut listeners = 0u64;
        for id in &ids {
            if let Ok(channel) = local.get(id) {
                let stats = channel.stats();
                listeners += stats.listeners as u64;
                dropped += stats.dropped;
                rejected += stats.rejected;
                disconnected += stats.disconnected;
            }
        }
        let budget = local.memory_budget();
        let gauges = [
            ("eric_channels", "Channels", ids.len() as u64),
            (
                "eric_retained_bytes",
                "Bytes held by broadcasts for listeners and replay (estimated), \
                 against --max-retained-bytes",
                budget.map_or(0, |b| b.retained()),
            ),
            (
                "eric_retained_bytes_limit",
                "The memory budget of broadcasts, --max-retained-bytes (0: none)",
                budget.map_or(0, |b| b.limit()),
            ),
            (
                "eric_listeners",
                "Listeners registered in all channels",
                listeners,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters = [
            (
                "eric_dropped",
                "Messages dropped by bounded queues",
                dropped,
            ),
            (
                "eric_rejected",
                "Messages refused because a listener was full (overflow policy reject)",
                rejected,
            ),
            (
                "eric_disconnected",
                "Listeners disconnected for falling too far behind (policy disconnect)",
                disconnected,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

//! The notifications of cluster mode: how a process learns of new entries without a
//! Redis connection per channel.
//!
//! Every script that appends an entry to a channel's stream also publishes the entry on
//! a pub/sub channel named after the stream's key (`SPUBLISH` on a Redis Cluster, where
//! the name's hash tag puts it on the channel's own shard; `PUBLISH` on one server). A
//! process holds one subscriber connection per Redis node, shared by every channel it
//! serves ([`Feed`]), and routes each notification to the channel's reader
//! ([`super::reader`]), which applies it.
//!
//! Pub/sub delivers at most once, so the stream stays the record: a reader reads it
//! (`XRANGE` from the last entry it applied) after each subscription takes effect, and
//! again whenever the subscriber connection was lost ([`Note::Resync`]) or a
//! notification does not follow the last entry applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::redis_connection::{cluster_builder, seeds};
use crate::redis_storage::{manager_config, storage_error};

/// What the subscriber connection tells a channel's reader.
pub(super) enum Note {
    /// An entry of its stream, as the scripts publish it:
    /// `<entry id>\n<type>\n<to>\n<by>\n<payload>`.
    Entry(Vec<u8>),
    /// Notifications may have been lost (the connection dropped, or the channel's slot
    /// moved): subscribe again and read the stream from the last entry applied.
    Resync,
}

/// The readers notifications go to, by pub/sub channel (a stream key).
type Routes = Arc<Mutex<HashMap<String, Route>>>;

struct Route {
    /// Which loaded copy reads it: a copy let go of removes its own route only.
    load: u64,
    notes: mpsc::UnboundedSender<Note>,
}

/// One process's subscriber connection (one per node), shared by all its channels.
pub(super) struct Feed {
    subscriber: Subscriber,
    routes: Routes,
}

#[derive(Clone)]
enum Subscriber {
    /// One server: `SUBSCRIBE`, on a connection that reconnects and subscribes again.
    Single(ConnectionManager),
    /// A Redis Cluster: `SSUBSCRIBE`, routed to the node of the channel's slot.
    Sharded(ClusterConnection),
}

impl Feed {
    /// Connects the subscriber to `urls` (one server, or a cluster's seed nodes).
    pub(super) async fn connect(urls: &str) -> Result<Feed> {
        let failed = |source| storage_error("subscribe to", urls, source);
        let routes = Routes::default();
        let push = route_pushes(Arc::clone(&routes));
        let seeds = seeds(urls);
        let subscriber = if seeds.len() <= 1 {
            let client = redis::Client::open(urls.trim()).map_err(failed)?;
            let info = client.get_connection_info().clone();
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let client = redis::Client::open(info.set_redis_settings(resp3)).map_err(failed)?;
            let config = manager_config().set_push_sender(push);
            let connection = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(failed)?;
            Subscriber::Single(connection)
        } else {
            let client = cluster_builder(&seeds)
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(push)
                .build()
                .map_err(failed)?;
            Subscriber::Sharded(client.get_async_connection().await.map_err(failed)?)
        };
        Ok(Feed { subscriber, routes })
    }

    /// Routes the notifications of `stream` to copy `load`'s reader from now on (a
    /// newer copy's route replaces an older one's). Nothing arrives before
    /// [`subscribe`](Self::subscribe).
    pub(super) fn route(&self, stream: &str, load: u64) -> mpsc::UnboundedReceiver<Note> {
        let (notes, received) = mpsc::unbounded_channel();
        self.lock().insert(stream.to_owned(), Route { load, notes });
        received
    }

    /// Subscribes to `stream`'s notifications; returns once the subscription is in
    /// effect, so that whatever is appended from then on is notified. Subscribing
    /// again is harmless.
    pub(super) async fn subscribe(&self, stream: &str) -> redis::RedisResult<()> {
        match self.subscriber.clone() {
            Subscriber::Single(mut connection) => connection.subscribe(stream).await,
            Subscriber::Sharded(mut connection) => connection.ssubscribe(stream).await,
        }
    }

    /// Stops routing `stream` to copy `load` and unsubscribes, unless a newer copy
    /// routes it meanwhile. An unsubscription that lands after a newer copy's
    /// subscription would leave that copy deaf: the newer copy resynchronises then.
    pub(super) fn unroute(self: &Arc<Self>, stream: &str, load: u64) {
        {
            let mut routes = self.lock();
            if routes.get(stream).is_none_or(|route| route.load != load) {
                return;
            }
            routes.remove(stream);
        }
        let (feed, stream) = (Arc::clone(self), stream.to_owned());
        tokio::spawn(async move {
            let unsubscribed = match feed.subscriber.clone() {
                Subscriber::Single(mut connection) => connection.unsubscribe(&stream).await,
                Subscriber::Sharded(mut connection) => connection.sunsubscribe(&stream).await,
            };
            if let Err(err) = unsubscribed {
                // Notifications keep coming for a while: they have no route, and cost
                // nothing else. The connection's next loss ends them.
                tracing::debug!(%stream, %err, "could not unsubscribe");
            }
            if let Some(route) = feed.lock().get(&stream) {
                let _ = route.notes.send(Note::Resync);
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connection's push sender: each notification to its channel's reader; a lost
/// connection, or a slot that moved away, makes the readers concerned resynchronise.
fn route_pushes(routes: Routes) -> impl Fn(PushInfo) -> std::result::Result<(), ()> {
    move |push: PushInfo| {
        let routes = routes.lock().unwrap_or_else(PoisonError::into_inner);
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let [name, Value::BulkString(entry)] = &push.data[..]
                    && let Some(route) = routes.get(&*text(name))
                {
                    let _ = route.notes.send(Note::Entry(entry.clone()));
                }
            }
            PushKind::Disconnection => {
                for route in routes.values() {
                    let _ = route.notes.send(Note::Resync);
                }
            }
            // Redis ends a shard channel's subscription when its slot moves; ours end
            // when we unsubscribe, and then no route is left to tell.
            PushKind::SUnsubscribe | PushKind::Unsubscribe => {
                if let Some(Some(route)) = push.data.first().map(|name| routes.get(&*text(name))) {
                    let _ = route.notes.send(Note::Resync);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A pub/sub channel's name as Redis sends it.
fn text(value: &Value) -> std::borrow::Cow<'_, str> {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes),
        Value::SimpleString(s) => s.as_str().into(),
        _ => "".into(),
    }
}

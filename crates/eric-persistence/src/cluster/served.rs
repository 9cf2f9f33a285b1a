//! The channels a process serves: each loaded once into a local [`SseChannel`], read
//! by a reader task from then on, and let go of when idle.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};

use eric_prefabs::{SseChannel, SseStream};
use redis::streams::StreamRangeReply;
use tokio::sync::{Mutex, watch};

use super::reader::{Applied, Entry, apply};
use super::{
    BLOCK, CATCH_UP, Inner, ReadState, RedisCluster, Served, closed_meanwhile, not_found,
    storage_error,
};
use crate::channels::ChannelSettings;
use crate::error::{Error, Result};

impl RedisCluster {
    /// The local copy of the channel, loaded (and its stream read from then on) if this
    /// process did not serve it yet; [`Error::ChannelNotFound`] if the cluster has no
    /// such channel.
    pub async fn serve(&self, id: &str) -> Result<SseChannel> {
        Ok(self.served(id).await?.channel)
    }

    pub(super) async fn served(&self, id: &str) -> Result<Served> {
        if let Some(served) = self.inner.get(id)
            && !served.channel.channel().is_closed()
        {
            return Ok(served);
        }
        let (meta, events) = (self.key(id, "meta"), self.key(id, "events"));
        let mut connection = self.inner.connection.clone();
        let (epoch, seq, settings): (Option<String>, Option<u64>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&meta)
                .arg("epoch")
                .arg("seq")
                .arg("settings")
                .query_async(&mut connection)
                .await
                .map_err(storage_error("load", &meta))?;
        let (Some(epoch), Some(seq)) = (epoch, seq) else {
            return Err(not_found(id));
        };
        let settings = stored_settings(&meta, settings.as_deref())?;
        // The replay window, from the newest entries the stream holds.
        let backlog: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&events)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(settings.replay_or_default())
            .query_async(&mut connection)
            .await
            .map_err(storage_error("load", &events))?;
        let mut backlog = backlog.ids;
        backlog.reverse();
        let Some(backlog) = backlog
            .iter()
            .map(Entry::from_stream)
            .collect::<Option<Vec<_>>>()
        else {
            return Err(Error::Corrupt {
                key: events,
                reason: "an entry whose id eric did not write".to_owned(),
            });
        };
        // The first broadcast kept; without one, the one after the newest entry (which
        // can be newer than `seq`: entries come in while this loads).
        let newest = backlog.last().map(|entry| entry.id);
        let first = backlog
            .iter()
            .map(|entry| entry.id)
            .find(|&(_, n)| n == 0)
            .map(|(seq, _)| seq)
            .or(newest.map(|(seq, _)| seq + 1))
            .unwrap_or(seq + 1);
        let channel = settings
            .sse_builder()
            .id(id)
            .epoch(epoch)
            .first_seq(first)
            .build()?;
        let mut read = ReadState {
            last: newest.unwrap_or((seq, 0)),
            attached: HashMap::new(),
        };
        for entry in backlog {
            if apply(&channel, &mut read.attached, entry) == Applied::Closed {
                return Err(not_found(id));
            }
        }

        let mut served = self
            .inner
            .served
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match served.remove(id) {
            // Another request loaded it meanwhile.
            Some(other) if !other.channel.channel().is_closed() => {
                served.insert(id.to_owned(), other.clone());
                return Ok(other);
            }
            // A copy closed a moment ago (its reader let go of it, or is about to).
            Some(closed) => {
                closed.reader.abort();
                let _ = self.inner.container.remove(id);
            }
            None => {}
        }
        self.inner.container.register(channel.channel().clone())?;
        let (progress, next) = watch::channel(channel.channel().next_seq());
        let load = self.inner.loads.fetch_add(1, Ordering::Relaxed);
        let read = Arc::new(Mutex::new(read));
        let notes = self.inner.feed.route(&events, load);
        let stream: Arc<str> = events.as_str().into();
        let reader = tokio::spawn(super::reader::read(
            Arc::downgrade(&self.inner),
            load,
            channel.clone(),
            Arc::clone(&read),
            [meta, events],
            progress,
            notes,
        ));
        let entry = Served {
            channel,
            next,
            read,
            reader: reader.abort_handle(),
            load,
            stream,
            idle: Arc::default(),
        };
        served.insert(id.to_owned(), entry.clone());
        Ok(entry)
    }

    /// Subscribes a new local listener, as [`SseChannel::subscribe`] does. A
    /// `last_event_id` this process has not read yet (the client was on a process that
    /// read it first) is waited for a moment, so that a client moving between processes
    /// resumes instead of being reset.
    pub(super) async fn subscribe_here(
        &self,
        id: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseStream> {
        self.on_served(id, |served| async move {
            served.catch_up(last_event_id).await;
            served.channel.subscribe(last_event_id).map_err(Error::from)
        })
        .await
    }

    /// Runs `attempt` on this process's copy of channel `id` (loaded if need be); once
    /// more, on a copy loaded again, if the copy was let go of (idle) between the lookup
    /// and the attempt.
    pub(super) async fn on_served<T, F, Fut>(&self, id: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(Served) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut retried = false;
        loop {
            let served = self.served(id).await?;
            match attempt(served).await {
                Err(err) if !retried && closed_meanwhile(&err) => retried = true,
                outcome => return outcome,
            }
        }
    }

    /// How many channels this process serves now.
    pub fn served_here(&self) -> usize {
        self.inner
            .served
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A channel's settings as its meta hash holds them (`None`: the defaults), for this
/// process's copy: [`OverflowPolicy::Reject`](eric_core::OverflowPolicy::Reject) acts as
/// `Disconnect`, since a broadcast Redis acknowledged cannot be refused by one process.
fn stored_settings(meta: &str, json: Option<&str>) -> Result<ChannelSettings> {
    let mut settings: ChannelSettings = match json {
        Some(json) => serde_json::from_str(json).map_err(|err| Error::Corrupt {
            key: meta.to_owned(),
            reason: format!("settings: {err}"),
        })?,
        None => ChannelSettings::default(),
    };
    if settings.overflow == Some(eric_core::OverflowPolicy::Reject) {
        settings.overflow = Some(eric_core::OverflowPolicy::Disconnect);
    }
    Ok(settings)
}

impl Served {
    /// Waits a moment for this process to read up to `last_event_id` (a client moving
    /// from a process that read it first). Timing out (or the reader ending) is fine:
    /// the client then gets a reset event, as for any id it cannot resume.
    pub(super) async fn catch_up(&self, last_event_id: Option<&str>) {
        let adapter = self.channel.adapter();
        if let Some(seq) = last_event_id.and_then(|last| adapter.parse_event_id(last)) {
            let mut next = self.next.clone();
            let _ = tokio::time::timeout(CATCH_UP, next.wait_for(|&next| next > seq)).await;
        }
    }
}

impl Inner {
    pub(super) fn get(&self, id: &str) -> Option<Served> {
        self.served
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Lets go of the channels that have had no local listener for [`IDLE_SWEEPS`]
    /// sweeps in a row.
    fn sweep_idle(&self) {
        let idle: Vec<(String, u64)> = self
            .served
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, served)| {
                if served.channel.channel().listener_count() > 0 {
                    served.idle.store(0, Ordering::Relaxed);
                    return false;
                }
                served.idle.fetch_add(1, Ordering::Relaxed) + 1 >= IDLE_SWEEPS
            })
            .map(|(id, served)| (id.clone(), served.load))
            .collect();
        for (id, load) in idle {
            self.let_go_idle(&id, load);
        }
    }

    /// Stops serving `id` if copy `load` still has no local listener (checked under
    /// the lock a loading request takes); whether it did.
    /// A request that looked the copy up just before may still subscribe to it: it
    /// finds it closed and loads it again (`closed_meanwhile`).
    pub(super) fn let_go_idle(&self, id: &str, load: u64) -> bool {
        self.let_go_if(id, |s| {
            s.load == load && s.channel.channel().listener_count() == 0
        })
    }

    /// Stops serving `id` (only the copy numbered `load`, when given): its local
    /// streams end.
    pub(super) fn let_go(&self, id: &str, load: Option<u64>) {
        self.let_go_if(id, |s| load.is_none_or(|load| load == s.load));
    }

    fn let_go_if(&self, id: &str, ours: impl FnOnce(&Served) -> bool) -> bool {
        let mut served = self.served.write().unwrap_or_else(PoisonError::into_inner);
        if !served.get(id).is_some_and(ours) {
            return false;
        }
        if let Some(gone) = served.remove(id) {
            gone.reader.abort();
            self.feed.unroute(&gone.stream, gone.load);
            let _ = self.container.remove(id);
            gone.channel.close();
        }
        true
    }
}

/// How many sweeps ([`BLOCK`] apart) a channel stays served without a local listener:
/// a channel is let go of between two and three [`BLOCK`]s after its last listener left.
const IDLE_SWEEPS: u8 = 3;

/// Sweeps the channels of a process every [`BLOCK`] for idle ones, while it lives.
pub(super) async fn sweep_idle(cluster: Weak<Inner>) {
    let mut every = tokio::time::interval(BLOCK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        match cluster.upgrade() {
            Some(cluster) => cluster.sweep_idle(),
            None => return,
        }
    }
}

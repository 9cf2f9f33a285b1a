//! [`MemoryChannels`]: SSE channels in this process's memory.

use std::sync::Arc;

use async_trait::async_trait;
use eric_core::{ChannelContainer, Message};
use eric_prefabs::{SseAdapter, SseChannel};

use super::{ChannelInfo, ChannelSettings, EventStream, Published, SseChannels, boxed};
use crate::error::{Error, Result};

/// SSE channels in this process's memory: gone when it stops. The [`SseChannels`]
/// backend with nothing to wait for; the others add storage or Redis in front of the
/// same in-memory channels.
#[derive(Clone, Debug, Default)]
pub struct MemoryChannels {
    container: Arc<ChannelContainer<SseAdapter>>,
}

impl MemoryChannels {
    /// No channels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The channels of `container` (and the ones created from now on, registered there).
    pub fn with_container(container: Arc<ChannelContainer<SseAdapter>>) -> Self {
        MemoryChannels { container }
    }

    /// Channel `id`; [`Error::ChannelNotFound`] if there is none.
    fn channel(&self, id: &str) -> Result<SseChannel> {
        self.container
            .get(id)
            .map(SseChannel::from)
            .map_err(|_| Error::ChannelNotFound {
                channel_id: id.to_owned(),
            })
    }
}

/// What a broadcast on a local channel did.
pub(crate) fn published(channel: &SseChannel, report: &eric_core::BroadcastReport) -> Published {
    Published {
        seq: report.seq,
        event_id: channel.adapter().event_id(report.seq),
        listeners: Some(report.delivered),
    }
}

#[async_trait]
impl SseChannels for MemoryChannels {
    async fn create(&self, settings: ChannelSettings) -> Result<String> {
        let channel = settings.sse_builder().build()?;
        self.container.register(channel.channel().clone())?;
        Ok(channel.id().to_owned())
    }

    async fn remove(&self, channel_id: &str) -> Result<()> {
        self.container
            .remove(channel_id)
            .map_err(|_| Error::ChannelNotFound {
                channel_id: channel_id.to_owned(),
            })?;
        Ok(())
    }

    async fn ids(&self) -> Result<Vec<String>> {
        Ok(self.container.ids())
    }

    async fn len(&self) -> Result<usize> {
        Ok(self.container.len())
    }

    async fn info(&self, channel_id: &str) -> Result<ChannelInfo> {
        Ok(ChannelInfo::of(&self.channel(channel_id)?))
    }

    async fn add_listener(&self, channel_id: &str) -> Result<String> {
        Ok(self.channel(channel_id)?.add_listener()?.id().to_owned())
    }

    async fn add_listener_with_id(&self, channel_id: &str, listener_id: &str) -> Result<()> {
        let listener = eric_core::MessageQueueListener::with_id(listener_id)?;
        Ok(self
            .channel(channel_id)?
            .register_listener(std::sync::Arc::new(listener))?)
    }

    async fn remove_listener(&self, channel_id: &str, listener_id: &str) -> Result<()> {
        Ok(self.channel(channel_id)?.remove_listener(listener_id)?)
    }

    async fn broadcast(&self, channel_id: &str, msg: Message) -> Result<Published> {
        let channel = self.channel(channel_id)?;
        let report = channel.broadcast(msg)?;
        Ok(published(&channel, &report))
    }

    async fn dispatch(&self, channel_id: &str, listener_id: &str, msg: Message) -> Result<()> {
        Ok(self.channel(channel_id)?.dispatch(listener_id, msg)?)
    }

    async fn message_stream(
        &self,
        channel_id: &str,
        listener_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream> {
        let channel = self.channel(channel_id)?;
        Ok(boxed(
            channel.message_stream_resuming(listener_id, last_event_id)?,
        ))
    }

    async fn subscribe(
        &self,
        channel_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream> {
        Ok(boxed(self.channel(channel_id)?.subscribe(last_event_id)?))
    }

    async fn shutdown(&self) -> Result<()> {
        super::end_streams(&self.container);
        Ok(())
    }

    fn local(&self) -> &ChannelContainer<SseAdapter> {
        &self.container
    }
}

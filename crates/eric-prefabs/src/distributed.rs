//! The distributed-application prefab: listeners that run an action per message type
//! and answer the sender.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use eric_core::{
    BoxError, Channel, Listener, ListenerState, MESSAGE_TYPE_INTERNAL_ERROR, Message, SignedMessage,
};

use crate::error::{Error, Result};
use crate::sse_adapter::SseAdapter;
use crate::sse_channel::SseChannel;

/// Starts the receiving listener (a reserved message type).
pub const ACTION_START: &str = "start";
/// Stops the receiving listener (a reserved message type).
pub const ACTION_STOP: &str = "stop";

type Action = dyn Fn(&Message) -> Vec<Message> + Send + Sync;

/// A listener that runs the action set for each message's type (eric-sse's
/// `SimpleDistributedApplicationListener`). An action returns the replies, which go
/// back to the message's sender, signed with this listener's id. The types `start` and
/// `stop` are reserved: they start and stop the listener; eric's own markers (channel
/// closed, end of stream, in-band error) pass through. A type with no action is an
/// [`Error::UnknownAction`] item on the listener's stream, and it keeps running.
///
/// Actions run where the listener's stream is read, one message at a time.
pub struct SimpleDistributedApplicationListener {
    state: ListenerState,
    actions: RwLock<HashMap<String, Arc<Action>>>,
    channel: OnceLock<Channel<SseAdapter>>,
}

impl SimpleDistributedApplicationListener {
    /// A listener with a fresh id and no actions.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::with_state(ListenerState::new()))
    }

    /// A listener with the given id.
    pub fn with_id(id: impl Into<String>) -> Result<Arc<Self>> {
        Ok(Arc::new(Self::with_state(ListenerState::with_id(id)?)))
    }

    fn with_state(state: ListenerState) -> Self {
        SimpleDistributedApplicationListener {
            state,
            actions: RwLock::default(),
            channel: OnceLock::new(),
        }
    }

    /// The listener's id.
    pub fn id(&self) -> &str {
        self.state.id()
    }

    /// Runs `action` for messages of type `name`, replacing any action set before;
    /// `start` and `stop` are reserved and refused.
    pub fn set_action(
        &self,
        name: impl Into<String>,
        action: impl Fn(&Message) -> Vec<Message> + Send + Sync + 'static,
    ) -> Result<()> {
        let name = name.into();
        if name == ACTION_START || name == ACTION_STOP {
            return Err(eric_core::Error::InvalidId {
                id: name,
                reason: "'start' and 'stop' are reserved actions",
            }
            .into());
        }
        self.actions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, Arc::new(action));
        Ok(())
    }

    /// Sends `msg` to `receiver_id` in this listener's channel, signed with this
    /// listener's id; [`Error::NotRegistered`] before it joins a channel.
    pub fn dispatch_to(&self, receiver_id: &str, msg: impl Into<Message>) -> Result<()> {
        let channel = self.channel.get().ok_or_else(|| Error::NotRegistered {
            listener_id: self.id().to_owned(),
        })?;
        let msg = msg.into();
        let signed = SignedMessage::new(self.id(), msg.message_type(), msg.payload().clone());
        Ok(channel.dispatch(receiver_id, signed)?)
    }

    fn bind(&self, channel: &Channel<SseAdapter>) {
        let _ = self.channel.set(channel.clone());
    }

    fn run(&self, msg: &Message) -> Result<()> {
        match msg.message_type() {
            ACTION_START => self.state.start(),
            ACTION_STOP => self.state.stop(),
            // eric's own markers (closed, end of stream, in-band error) are not actions.
            _ if msg.ends_stream() || msg.message_type() == MESSAGE_TYPE_INTERNAL_ERROR => {}
            message_type => {
                let action = self
                    .actions
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(message_type)
                    .cloned()
                    .ok_or_else(|| Error::UnknownAction {
                        listener_id: self.id().to_owned(),
                        message_type: message_type.to_owned(),
                    })?;
                // Outside the lock: an action may set actions itself.
                let replies = action(msg);
                if replies.is_empty() {
                    return Ok(());
                }
                let sender = msg.sender_id().ok_or_else(|| Error::Unsigned {
                    listener_id: self.id().to_owned(),
                    message_type: message_type.to_owned(),
                })?;
                for reply in replies {
                    self.dispatch_to(sender, reply)?;
                }
            }
        }
        Ok(())
    }
}

impl Listener for SimpleDistributedApplicationListener {
    fn state(&self) -> &ListenerState {
        &self.state
    }

    fn on_message(&self, msg: &Message) -> Result<(), BoxError> {
        self.run(msg).map_err(BoxError::from)
    }
}

impl fmt::Debug for SimpleDistributedApplicationListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: Vec<String> = self
            .actions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        f.debug_struct("SimpleDistributedApplicationListener")
            .field("id", &self.id())
            .field("running", &self.state.is_running())
            .field("actions", &actions)
            .finish()
    }
}

/// An SSE channel for distributed-application listeners (eric-sse's
/// `SimpleDistributedApplicationChannel`): registering one lets it `dispatch_to` the
/// others.
///
/// ```
/// use eric_core::Message;
/// use eric_prefabs::{SimpleDistributedApplicationChannel, SimpleDistributedApplicationListener};
/// use futures_util::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eric_prefabs::Result<()> {
/// let channel = SimpleDistributedApplicationChannel::new();
/// let (asker, echo) = (
///     SimpleDistributedApplicationListener::new(),
///     SimpleDistributedApplicationListener::new(),
/// );
/// echo.set_action("say", |msg| vec![Message::new("said", msg.payload().clone())])?;
/// asker.set_action("said", |_| vec![])?;
/// channel.register_listener(asker.clone())?;
/// channel.register_listener(echo.clone())?;
///
/// asker.dispatch_to(echo.id(), Message::new("say", "hi"))?;
/// let mut echo_stream = channel.sse().message_stream(echo.id())?;
/// echo_stream.next().await.unwrap()?; // runs echo's action: replies to asker
/// let mut asker_stream = channel.sse().message_stream(asker.id())?;
/// let reply = asker_stream.next().await.unwrap()?;
/// assert_eq!((reply.event(), reply.data()), (Some("said"), "\"hi\""));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct SimpleDistributedApplicationChannel {
    channel: SseChannel,
}

impl SimpleDistributedApplicationChannel {
    /// A channel with default SSE settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps an SSE channel.
    pub fn from_sse(channel: SseChannel) -> Self {
        SimpleDistributedApplicationChannel { channel }
    }

    /// The SSE channel underneath (streams, broadcasts, listener management).
    pub fn sse(&self) -> &SseChannel {
        &self.channel
    }

    /// Registers `listener` and binds it to this channel, so it can `dispatch_to`.
    pub fn register_listener(
        &self,
        listener: Arc<SimpleDistributedApplicationListener>,
    ) -> Result<()> {
        listener.bind(self.channel.channel());
        self.channel.register_listener(listener)
    }

    /// Creates, registers and returns a listener with no actions yet.
    pub fn add_listener(&self) -> Result<Arc<SimpleDistributedApplicationListener>> {
        let listener = SimpleDistributedApplicationListener::new();
        self.register_listener(Arc::clone(&listener))?;
        Ok(listener)
    }
}

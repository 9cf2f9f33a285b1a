//! The one error type of eric-persistence.

/// `Result` with eric-persistence's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in eric-persistence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage failed (Redis unreachable, dropped mid-operation, timed out, ...).
    /// Nothing this operation was writing was acknowledged.
    #[error("storage failed to {operation} {key:?}: {source}")]
    Storage {
        /// What was being done (`upsert`, `fetch_by_prefix`, ...).
        operation: &'static str,
        /// The key or prefix concerned.
        key: String,
        /// The backend's error.
        #[source]
        source: eric_core::BoxError,
    },
    /// A stored value is not what eric wrote: not JSON, or not of the expected shape.
    #[error("stored value at {key:?} cannot be read: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored value was written by a newer eric.
    #[error("stored value at {key:?} has version {found}; this eric reads up to {supported}")]
    Version {
        /// The key.
        key: String,
        /// The version found.
        found: u64,
        /// The newest version this eric reads.
        supported: u64,
    },
    /// No stored channel with this id.
    #[error("no stored channel with id {channel_id:?}")]
    ChannelNotFound {
        /// The id.
        channel_id: String,
    },
    /// An error from eric-core.
    #[error(transparent)]
    Core(#[from] eric_core::Error),
    /// An error from eric-prefabs other than eric-core's (which are always
    /// [`Error::Core`]: one path for each error).
    #[error(transparent)]
    Prefab(eric_prefabs::Error),
}

impl From<eric_prefabs::Error> for Error {
    fn from(err: eric_prefabs::Error) -> Self {
        match err {
            eric_prefabs::Error::Core(err) => Error::Core(err),
            other => Error::Prefab(other),
        }
    }
}

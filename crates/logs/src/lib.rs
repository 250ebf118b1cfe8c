//! Berth's log store: CloudWatch Logs' groups, streams and events, kept in append-only
//! segment files on disk (never in the control-plane store), and the filter-pattern language
//! that FilterLogEvents and metric filters speak.

pub mod metric_filter;
pub mod pattern;
pub mod segment;
pub mod store;

pub use metric_filter::{Emitted, MetricFilter, Transformation};
pub use store::{Bound, Found, InputEvent, Key, LogStore, Query, Rejected, Stored};

/// What can go wrong in the log store. The control plane turns these into Logs' exceptions.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// ResourceNotFoundException.
    #[error("The specified log group does not exist.")]
    GroupNotFound,
    /// ResourceNotFoundException.
    #[error("The specified log stream does not exist.")]
    StreamNotFound,
    /// ResourceAlreadyExistsException.
    #[error("The specified log group already exists")]
    GroupExists,
    /// ResourceAlreadyExistsException.
    #[error("The specified log stream already exists")]
    StreamExists,
    /// ResourceNotFoundException.
    #[error("The specified metric filter does not exist.")]
    FilterNotFound,
    /// TooManyTagsException, with Logs' message.
    #[error("{0}")]
    TooManyTags(String),
    /// LimitExceededException, with Logs' message.
    #[error("{0}")]
    Limit(String),
    /// InvalidParameterException, with Logs' message.
    #[error("{0}")]
    Invalid(String),
    /// The disk failed us; nothing partial was kept.
    #[error("log storage failed at {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

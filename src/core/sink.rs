//! The object sink: where lake files go (S3 in AWS, a folder locally).

use std::future::Future;

use bytes::Bytes;

/// A failed object operation.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {key} failed: {message}")]
pub struct SinkError {
    /// `put` or `exists`.
    pub operation: &'static str,
    /// The object key.
    pub key: String,
    /// The cause, with what to check.
    pub message: String,
}

/// Stores whole objects. A `put` is atomic: readers see the whole object or
/// nothing, and a failed `put` leaves nothing under the key.
pub trait ObjectSink: Send + Sync {
    /// Stores `body` under `key` (relative to the lake root).
    fn put(&self, key: &str, body: Bytes) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Whether an object exists under `key`.
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool, SinkError>> + Send;
}

//! The object sink: where lake files go (S3 in AWS, a folder locally).

use std::future::Future;

use bytes::Bytes;

/// A failed object operation.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {key} failed: {message}")]
pub struct SinkError {
    /// `put`, `exists`, `get`, `list`, `delete`, ….
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

    /// The object under `key`, or `None` when there is none.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, SinkError>> + Send;

    /// Stores `body` under `key` only if no object is there yet (S3:
    /// `PutObject` with `If-None-Match: *`, a 412 answer meaning "already
    /// there"). `Ok(false)` when one already was: nothing written. The schema
    /// registry's optimistic concurrency rests on this being atomic.
    fn put_if_absent(
        &self,
        key: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<bool, SinkError>> + Send;

    /// The keys of the objects directly under a folder (`prefix` ends with
    /// `/`), sorted; empty when there are none.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, SinkError>> + Send;

    /// The folders directly under a folder (`prefix` ends with `/`), each
    /// as `prefix` + name + `/`, sorted; empty when there are none.
    fn list_folders(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<String>, SinkError>> + Send;

    /// Removes the object under `key`; removing a missing object succeeds.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The location of `key` as other engines name it (`s3://bucket/key`,
    /// `file:///folder/key`): what a table format's metadata records.
    fn uri(&self, key: &str) -> String;

    /// The key of a location in this sink (`None`: it is elsewhere).
    fn key_of(&self, uri: &str) -> Option<String> {
        uri.strip_prefix(&self.uri("")).map(str::to_string)
    }
}

//! The S3 object sink: the only code that talks to S3. Lake files are put
//! whole (a PutObject is atomic: readers see all of it or nothing).
//!
//! Existence is checked with ListObjectsV2 (`Prefix` = the key, `MaxKeys` = 1,
//! exact match), not HeadObject: under an IAM policy that grants listing only
//! under the lake prefix, HeadObject of a missing key answers 403, not 404.
//! For the same reason a GetObject answered 403 is checked with a listing
//! before it counts as an error. Create-if-absent writes (schema versions)
//! use `If-None-Match: *`: 412 means the key was taken.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::aws::{Failure, classify};
use crate::core::sink::{ObjectSink, SinkError};

/// Lake files in an S3 bucket. Keys are used as given (the lake prefix is
/// already part of them).
#[derive(Debug, Clone)]
pub struct S3Sink {
    client: Client,
    bucket: String,
}

fn sink_err(operation: &'static str, key: &str, f: Failure) -> SinkError {
    SinkError {
        operation,
        key: key.into(),
        message: f.message,
    }
}

/// The content type of a lake file, from its ending.
fn content_type(key: &str) -> &'static str {
    if key.ends_with(".parquet") {
        "application/vnd.apache.parquet"
    } else if key.ends_with(".ndjson") {
        "application/x-ndjson"
    } else {
        "application/octet-stream"
    }
}

impl S3Sink {
    /// A sink writing to `bucket` with `client`.
    pub fn new(client: Client, bucket: impl Into<String>) -> S3Sink {
        S3Sink {
            client,
            bucket: bucket.into(),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The bucket and key of a sink key: a key of this bucket, or an object
    /// of another bucket named `s3://bucket/key` (an Iceberg table's files
    /// in the bucket its catalog chose).
    fn locate<'a>(&'a self, key: &'a str) -> (&'a str, &'a str) {
        key.strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or((&self.bucket, key))
    }

    /// A key of `bucket` as this sink names it.
    fn name_in(&self, bucket: &str, key: &str) -> String {
        if bucket == self.bucket {
            key.to_string()
        } else {
            format!("s3://{bucket}/{key}")
        }
    }

    /// Checks that the lake can be listed under `prefix` (start-up check:
    /// reachable, bucket exists, credentials and policy work).
    pub async fn check(&self, prefix: &str) -> Result<(), SinkError> {
        let dir = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&dir)
            .max_keys(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                sink_err(
                    "list",
                    &format!("s3://{}/{dir}", self.bucket),
                    classify("S3", &e),
                )
            })
    }

    /// Creates the bucket if it does not exist (local trials and tests; needs
    /// s3:CreateBucket, which the production policy does not grant).
    pub async fn ensure_bucket(&self) -> Result<(), SinkError> {
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(sink_err(
                "create bucket",
                &format!("s3://{}", self.bucket),
                classify("S3", &e),
            )),
        }
    }
}

/// What a listing of one folder level returns.
#[derive(Clone, Copy)]
enum Level {
    /// The objects directly under the folder.
    Objects,
    /// The folders directly under it (S3's common prefixes).
    Folders,
}

impl S3Sink {
    /// One level under `prefix` (ListObjectsV2 with the `/` delimiter, every
    /// page), sorted.
    async fn list_level(&self, full_prefix: &str, level: Level) -> Result<Vec<String>, SinkError> {
        let (bucket, prefix) = self.locate(full_prefix);
        let mut names = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sink_err("list", prefix, classify("S3", &e)))?;
            match level {
                Level::Objects => names.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key())
                        .map(|k| self.name_in(bucket, k)),
                ),
                Level::Folders => names.extend(
                    page.common_prefixes()
                        .iter()
                        .filter_map(|p| p.prefix())
                        .map(|k| self.name_in(bucket, k)),
                ),
            }
        }
        names.sort();
        Ok(names)
    }
}

impl ObjectSink for S3Sink {
    fn uri(&self, key: &str) -> String {
        let (bucket, key) = self.locate(key);
        format!("s3://{bucket}/{key}")
    }

    fn key_of(&self, uri: &str) -> Option<String> {
        let (bucket, key) = uri.strip_prefix("s3://")?.split_once('/')?;
        Some(self.name_in(bucket, key))
    }

    async fn get(&self, full_key: &str) -> Result<Option<Bytes>, SinkError> {
        let key = full_key;
        let (bucket, object) = self.locate(full_key);
        let out = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(object)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if matches!(e.as_service_error(), Some(GetObjectError::NoSuchKey(_))) => {
                return Ok(None);
            }
            // without list permission on the key, a missing key answers 403
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
                return if self.exists(key).await? {
                    Err(sink_err("get", key, classify("S3", &e)))
                } else {
                    Ok(None)
                };
            }
            Err(e) => return Err(sink_err("get", key, classify("S3", &e))),
        };
        let body = out.body.collect().await.map_err(|e| SinkError {
            operation: "get",
            key: key.into(),
            message: format!("reading the object failed midway: {e}; transient"),
        })?;
        Ok(Some(body.into_bytes()))
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError> {
        let (bucket, object) = self.locate(key);
        let sent = self
            .client
            .put_object()
            .bucket(bucket)
            .key(object)
            .if_none_match("*")
            .content_type(content_type(key))
            .body(ByteStream::from(body))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            // 412: the key exists; 409: a concurrent conditional write to the
            // same key is under way. Either way another writer got there
            // first (the caller re-reads).
            Err(e)
                if matches!(
                    e.code(),
                    Some("PreconditionFailed") | Some("ConditionalRequestConflict")
                ) || e
                    .raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
            {
                Ok(false)
            }
            Err(e) => Err(sink_err("put_if_absent", key, classify("S3", &e))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.list_level(prefix, Level::Objects).await
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.list_level(prefix, Level::Folders).await
    }

    async fn delete(&self, key: &str) -> Result<(), SinkError> {
        let (bucket, object) = self.locate(key);
        self.client
            .delete_object()
            .bucket(bucket)
            .key(object)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sink_err("delete", key, classify("S3", &e)))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let (bucket, object) = self.locate(key);
        self.client
            .put_object()
            .bucket(bucket)
            .key(object)
            .content_type(content_type(key))
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sink_err("put", key, classify("S3", &e)))
    }

    async fn exists(&self, key: &str) -> Result<bool, SinkError> {
        let (bucket, object) = self.locate(key);
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(object)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| sink_err("exists", key, classify("S3", &e)))?;
        // the key itself sorts first among the keys it prefixes
        Ok(out.contents().first().and_then(|o| o.key()) == Some(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_ending() {
        assert_eq!(
            content_type("a/part-1.parquet"),
            "application/vnd.apache.parquet"
        );
        assert_eq!(
            content_type("_errors/x/part-1.ndjson"),
            "application/x-ndjson"
        );
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}

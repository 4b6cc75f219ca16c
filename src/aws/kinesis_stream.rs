//! The Kinesis adapter of replay: reads a shard of a stream back
//! (`GetShardIterator` `AT_SEQUENCE_NUMBER`, `GetRecords`,
//! `DescribeStreamSummary`) for [`crate::replay::fetch_batch`], and says
//! what an SDK failure means ([`StreamError`]). No logic beyond the calls:
//! where to start and stop, and what an answer means for the batch, are
//! decided in `replay`.
//!
//! The stream is named by its name (from the record's `streamArn`), in the
//! ARN's region: the credentials must belong to the stream's account.
//! `AWS_ENDPOINT_URL_KINESIS` (or `AWS_ENDPOINT_URL`) points the client at
//! another server, e.g. kinesalite in the tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::config::Region;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ShardIteratorType;

use crate::replay::{BatchRange, ShardPage, ShardReader, StreamError, StreamRecord};

/// Records per `GetRecords` call (the service's maximum).
const PAGE_LIMIT: i32 = 10_000;

/// Pause between two `GetRecords` calls on the shard: a shard serves 5 calls
/// a second, shared with the function that reads it.
const PAGE_PAUSE: Duration = Duration::from_millis(250);

/// Reads shards with the SDK client.
#[derive(Debug)]
pub struct KinesisReader {
    client: aws_sdk_kinesis::Client,
    /// Whether a `GetRecords` call was made (the next one waits first).
    called: AtomicBool,
}

impl KinesisReader {
    /// A reader over `client` (see [`super::config::Clients`]).
    pub fn new(client: aws_sdk_kinesis::Client) -> KinesisReader {
        KinesisReader {
            client,
            called: AtomicBool::new(false),
        }
    }

    /// The client's configuration for the stream's region, when the ARN names
    /// another one than the client's.
    fn region_of(&self, range: &BatchRange) -> Option<aws_sdk_kinesis::config::Builder> {
        let wanted = range.region()?;
        let current = self.client.config().region().map(Region::as_ref);
        (current != Some(wanted)).then(|| {
            aws_sdk_kinesis::config::Builder::default().region(Region::new(wanted.to_string()))
        })
    }
}

/// Maps an SDK failure of `call` to what it means for the replay.
fn stream_error<E>(call: &str, err: &SdkError<E, HttpResponse>) -> StreamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (code, message) = match err {
        SdkError::ServiceError(se) => (
            se.err().code().unwrap_or_default().to_string(),
            se.err().message().unwrap_or_default().to_string(),
        ),
        _ => (String::new(), String::new()),
    };
    let said = if message.is_empty() {
        code.clone()
    } else {
        format!("{code}: {message}")
    };
    match code.as_str() {
        "ResourceNotFoundException" => StreamError::NotFound(said),
        "InvalidArgumentException" => StreamError::InvalidArgument(said),
        c if c.starts_with("AccessDenied") || c == "KMSAccessDeniedException" => {
            StreamError::AccessDenied(said)
        }
        _ => StreamError::Other(super::classify(&format!("Kinesis {call}"), err).message),
    }
}

impl ShardReader for KinesisReader {
    async fn iterator_at(&self, range: &BatchRange) -> Result<String, StreamError> {
        let mut call = self
            .client
            .get_shard_iterator()
            .stream_name(range.stream_name())
            .shard_id(&range.shard_id)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(&range.start_sequence_number)
            .customize();
        if let Some(region) = self.region_of(range) {
            call = call.config_override(region);
        }
        let out = call
            .send()
            .await
            .map_err(|e| stream_error("GetShardIterator", &e))?;
        out.shard_iterator
            .ok_or_else(|| StreamError::Other("GetShardIterator answered no iterator".into()))
    }

    async fn records(&self, range: &BatchRange, iterator: &str) -> Result<ShardPage, StreamError> {
        if self.called.swap(true, Ordering::Relaxed) {
            tokio::time::sleep(PAGE_PAUSE).await;
        }
        let mut call = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(PAGE_LIMIT)
            .customize();
        if let Some(region) = self.region_of(range) {
            call = call.config_override(region);
        }
        let out = call
            .send()
            .await
            .map_err(|e| stream_error("GetRecords", &e))?;
        let records = out
            .records
            .into_iter()
            .map(|r| StreamRecord {
                arrival_ms: r.approximate_arrival_timestamp.map(|t| {
                    t.secs() * 1000
                        + i64::from(t.subsec_nanos().saturating_add(500_000) / 1_000_000)
                }),
                sequence_number: r.sequence_number,
                partition_key: r.partition_key.unwrap_or_default(),
                data: r.data.into_inner(),
            })
            .collect();
        Ok(ShardPage {
            records,
            next_iterator: out.next_shard_iterator,
            millis_behind_latest: out.millis_behind_latest,
        })
    }

    async fn retention_hours(&self, range: &BatchRange) -> Option<i32> {
        let mut call = self
            .client
            .describe_stream_summary()
            .stream_name(range.stream_name())
            .customize();
        if let Some(region) = self.region_of(range) {
            call = call.config_override(region);
        }
        let out = call.send().await.ok()?;
        out.stream_description_summary
            .map(|s| s.retention_period_hours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorError;
    use aws_sdk_s3::primitives::SdkBody;

    fn service_error(status: u16, code: &str) -> SdkError<GetShardIteratorError, HttpResponse> {
        let meta = aws_sdk_kinesis::error::ErrorMetadata::builder()
            .code(code)
            .message("m")
            .build();
        let raw = HttpResponse::new(status.try_into().expect("valid status"), SdkBody::from("x"));
        SdkError::service_error(GetShardIteratorError::generic(meta), raw)
    }

    #[test]
    fn service_errors_map_to_what_they_mean_for_the_replay() {
        let e = |code| stream_error("GetShardIterator", &service_error(400, code));
        assert_eq!(
            e("ResourceNotFoundException"),
            StreamError::NotFound("ResourceNotFoundException: m".into())
        );
        assert_eq!(
            e("InvalidArgumentException"),
            StreamError::InvalidArgument("InvalidArgumentException: m".into())
        );
        assert!(matches!(
            e("AccessDeniedException"),
            StreamError::AccessDenied(_)
        ));
        let StreamError::Other(m) = e("ProvisionedThroughputExceededException") else {
            panic!("other expected")
        };
        assert!(m.contains("Kinesis GetShardIterator"), "{m}");
    }
}

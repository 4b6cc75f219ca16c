//! One Lambda invocation: a Kinesis batch through the pipeline under the
//! invocation's deadline, answered with the partial batch response, plus the
//! invocation's log line and metrics object. Generic over the dedup store and
//! the object sink: the binary passes S3 + DynamoDB (or a local folder), the
//! integration tests pass the same adapters wrapped with injected faults.

use crate::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use serde_json::Value;
use tokio::time::Instant;

use crate::aws::deadline::Deadline;
use crate::aws::metrics::{Invocation, emf};
use crate::core::dedup::DedupStore;
use crate::core::pipeline::{BatchOutcome, PipelineConfig};
use crate::core::sink::ObjectSink;
use crate::kinesis::{KinesisError, handle};

/// What an invocation produced.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The answer to Lambda: the failed records' sequence numbers.
    pub response: KinesisEventResponse,
    /// The pipeline's outcome.
    pub outcome: BatchOutcome,
    /// The Embedded Metric Format object, to print as one line on stdout.
    pub metrics: Value,
}

/// The oldest approximate arrival time of the event's records, Unix ms.
pub fn oldest_arrival_ms(event: &KinesisEvent) -> Option<i64> {
    event
        .records
        .iter()
        .filter_map(|r| r.kinesis.arrival_ms())
        .min()
}

/// Handles one batch: no store or sink call runs past `deadline`; records
/// whose outcome is unknown then are reported as failed. Fails as a whole
/// only when a record cannot be named in the partial batch response.
pub async fn invoke<S: DedupStore, O: ObjectSink>(
    event: KinesisEvent,
    deadline: Instant,
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    function_name: &str,
) -> Result<Invoked, KinesisError> {
    let oldest = oldest_arrival_ms(&event);
    let (response, outcome) = handle(
        event,
        &Deadline::new(store, deadline),
        &Deadline::new(sink, deadline),
        cfg,
    )
    .await?;
    // the lake's summary file, for readers that take the lake schema from it
    crate::core::registry::publish_summary(
        &Deadline::new(sink, deadline),
        &cfg.prefix,
        &cfg.schema_cache,
    )
    .await;
    let c = &outcome.counts;
    tracing::info!(
        records = c.records,
        written = c.written,
        duplicates = c.duplicates,
        rejected = c.rejected,
        failed = c.failed,
        files = c.files,
        bytes = c.bytes,
        dynamodb_ms = outcome.store_ms,
        s3_ms = outcome.sink_ms,
        "batch done"
    );
    let metrics = emf(&Invocation {
        function_name,
        outcome: &outcome,
        oldest_arrival_ms: oldest,
        now_ms: chrono::Utc::now().timestamp_millis(),
    });
    Ok(Invoked {
        response,
        outcome,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemSink, MemStore};

    const FIXTURE: &[u8] = include_bytes!("../../fixtures/kinesis/small-batch.json");

    #[tokio::test]
    async fn the_fixture_lands_and_reports_metrics() {
        let event: KinesisEvent = serde_json::from_slice(FIXTURE).expect("fixture parses");
        let oldest = oldest_arrival_ms(&event).expect("records");
        let (store, sink) = (MemStore::default(), MemSink::default());
        let at = Instant::now() + std::time::Duration::from_secs(30);
        let out = invoke(event, at, &store, &sink, &PipelineConfig::default(), "fn")
            .await
            .expect("handled");
        assert!(out.response.batch_item_failures.is_empty());
        assert_eq!(out.metrics["Records"], out.outcome.counts.records);
        assert!(out.outcome.counts.written > 0);
        let age = out.metrics["IteratorAgeMs"].as_i64().expect("age");
        let upper = chrono::Utc::now().timestamp_millis() - oldest;
        assert!(age <= upper && age > upper - 60_000, "{age} vs {upper}");
        assert!(!sink.objects().is_empty());
    }
}

//! One Lambda invocation: a Kinesis batch through the pipeline under the
//! invocation's deadline, answered with the partial batch response, plus the
//! invocation's log line and metrics object; or one scheduled publisher run. Generic over the dedup store and
//! the object sink: the binary passes S3 + DynamoDB (or a local folder), the
//! integration tests pass the same adapters wrapped with injected faults.

use crate::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use serde_json::Value;
use tokio::time::Instant;

use crate::aws::deadline::Deadline;
use crate::aws::metrics::{Invocation, emf, emf_publish};
use crate::core::dedup::DedupStore;
use crate::core::pipeline::{BatchOutcome, PipelineConfig};
use crate::core::publish::{PublishConfig, Published, Which, publish};
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

/// What a publisher run produced.
#[derive(Debug, Clone)]
pub struct PublishInvoked {
    /// What it published, or why it stopped (the next run resumes).
    pub result: Result<Published, String>,
    /// The Embedded Metric Format object, to print as one line on stdout.
    pub metrics: Value,
}

/// Whether a publisher invocation's event asks for open windows too
/// (`{"publish_open_windows": true}`: an operator's "publish now"; a batch
/// staged later into such a window becomes its next generation). A
/// schedule's event publishes the closed windows.
pub fn which_windows(event: &Value) -> Which {
    match event.get("publish_open_windows").and_then(Value::as_bool) {
        Some(true) => Which::Everything,
        _ => Which::Closed,
    }
}

/// One publisher run at `now` over the windows `which` selects, no sink
/// call past `deadline` (a window cut short is resumed by the next run).
pub async fn publish_invoke<O: ObjectSink>(
    deadline: Instant,
    sink: &O,
    cfg: &PublishConfig,
    which: Which,
    function_name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> PublishInvoked {
    let (published, result) = match publish(&Deadline::new(sink, deadline), cfg, which, now).await {
        Ok(p) => (p.clone(), Ok(p)),
        Err(stopped) => (stopped.published, Err(stopped.error.to_string())),
    };
    match &result {
        Ok(p) => tracing::info!(
            windows = p.windows,
            generations = p.generations,
            events = p.events,
            duplicates = p.duplicates,
            files = p.files,
            bytes = p.bytes,
            oldest_unpublished = p.oldest_unpublished.as_deref().unwrap_or(""),
            "publish done"
        ),
        Err(e) => tracing::error!(
            error = %e,
            stopped_at = published.oldest_unpublished.as_deref().unwrap_or(""),
            "publish stopped; the next run resumes it"
        ),
    }
    // a stopped run still reports what it did and the window it waits on
    let metrics = emf_publish(
        function_name,
        Some(&published),
        result.is_err(),
        chrono::Utc::now().timestamp_millis(),
    );
    PublishInvoked { result, metrics }
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

    #[tokio::test]
    async fn a_staged_fixture_is_published_by_the_publisher_run_and_reported() {
        let event: KinesisEvent = serde_json::from_slice(FIXTURE).expect("fixture parses");
        let (store, sink) = (MemStore::default(), MemSink::default());
        let at = Instant::now() + std::time::Duration::from_secs(30);
        let staged = PipelineConfig {
            window_secs: 60,
            ..PipelineConfig::default()
        };
        let out = invoke(event, at, &store, &sink, &staged, "fn")
            .await
            .expect("handled");
        assert_eq!(out.outcome.counts.staging_objects, 1);
        assert_eq!(out.metrics["StagingObjects"], 1);
        let cfg = PublishConfig {
            window_secs: 60,
            ..PublishConfig::default()
        };
        let staged_keys = sink
            .objects()
            .into_iter()
            .filter(|(k, _)| k.starts_with("_staging/"))
            .count();
        assert_eq!(staged_keys, 1);
        // the window is still open now; two minutes later it has closed
        let now = chrono::Utc::now();
        let run = publish_invoke(at, &sink, &cfg, Which::Closed, "pub", now).await;
        assert_eq!(run.result.as_ref().map(|p| p.events).ok(), Some(0));
        assert_eq!(run.metrics["PublishErrors"], 0);
        let later = now + chrono::Duration::seconds(120);
        let run = publish_invoke(at, &sink, &cfg, Which::Closed, "pub", later).await;
        let p = run.result.expect("published");
        assert_eq!(p.events, out.outcome.counts.written);
        assert_eq!(run.metrics["PublishedEvents"], p.events);
        assert!(sink.objects().iter().any(|(k, _)| k.ends_with(".parquet")));
    }

    #[test]
    fn only_an_explicit_request_publishes_open_windows() {
        let schedule =
            serde_json::json!({"source": "aws.events", "detail-type": "Scheduled Event"});
        assert_eq!(which_windows(&schedule), Which::Closed);
        assert_eq!(
            which_windows(&serde_json::json!({"publish_open_windows": "yes"})),
            Which::Closed
        );
        assert_eq!(
            which_windows(&serde_json::json!({"publish_open_windows": true})),
            Which::Everything
        );
    }
}

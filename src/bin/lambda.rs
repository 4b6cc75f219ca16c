//! The Lambda function: Kinesis batches into the lake, exactly once.
//!
//! Configuration is read and checked once at start-up (see
//! `kinesis_lake::aws::config` for every variable): with `LAKE_BUCKET` and
//! `DEDUP_TABLE` the lake is in S3 with dedup claims in DynamoDB; without
//! `LAKE_BUCKET` but with `LAKE_DIR`, a local folder with the embedded dedup
//! store (trials with `cargo lambda watch`). The SDK clients are built here,
//! once, and the handler is generic over the store and the sink.
//!
//! Each invocation logs one JSON line and prints one Embedded Metric Format
//! line to stdout, and answers with a partial batch response.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use aws_lambda_events::event::streams::KinesisEventResponse;
use kinesis_lake::kinesis::KinesisEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

use kinesis_lake::PipelineConfig;
use kinesis_lake::aws::deadline::lambda_deadline;
use kinesis_lake::aws::handler::invoke;
use kinesis_lake::aws::{ClientSettings, LambdaMode};
use kinesis_lake::core::dedup::DedupStore;
use kinesis_lake::core::encode::EncodeOptions;
use kinesis_lake::core::sink::ObjectSink;
use kinesis_lake::local::{FsSink, RedbStore, redb_store};

/// Time kept back from the invocation's deadline for answering Lambda.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1500);

// The system allocator, unlike the CLI's mimalloc: with mimalloc this
// process peaked at 75 MiB on a 6 MB batch instead of 25 MiB, and its
// cold start took ~4 ms longer (BENCHMARKS.md); memory and init are what a
// Lambda function pays for.
#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}");
            tracing::error!(error = %message, "kinesis-lake stopped");
            eprintln!("kinesis-lake-lambda: error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let function_name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    let payload_json = kinesis_lake::aws::config::payload_json(&|k| std::env::var(k).ok())?;
    let compression = kinesis_lake::aws::config::compression(&|k| std::env::var(k).ok())?;
    match LambdaMode::from_env()? {
        LambdaMode::Aws {
            lake,
            create_resources,
        } => {
            let (store, sink) = lake.connect(&ClientSettings::default()).await?;
            if create_resources {
                sink.ensure_bucket().await?;
                store.ensure_table().await?;
            }
            // both start-up checks at once: one round trip of cold start, not two
            let (table_checked, lake_checked) =
                tokio::join!(store.check(), sink.check(&lake.prefix));
            table_checked
                .with_context(|| format!("checking the dedup table DEDUP_TABLE={}", lake.table))?;
            lake_checked.with_context(|| format!("checking the lake {}", lake.url()))?;
            let cfg = PipelineConfig {
                prefix: lake.prefix.clone(),
                io_concurrency: lake.io_concurrency,
                encode: EncodeOptions {
                    payload_json,
                    compression,
                    ..EncodeOptions::default()
                },
                ..PipelineConfig::default()
            };
            tracing::info!(lake = %lake.url(), table = %lake.table, ttl_hours = lake.ttl_hours, "ready");
            serve(&store, &sink, &cfg, &function_name).await
        }
        LambdaMode::Local { dir } => {
            let store = RedbStore::open(&redb_store::default_path(&dir)).with_context(|| {
                format!("opening the dedup store in LAKE_DIR={}", dir.display())
            })?;
            let sink = FsSink::new(&dir);
            tracing::info!(lake = %dir.display(), "ready (local folder)");
            let cfg = PipelineConfig {
                encode: EncodeOptions {
                    payload_json,
                    compression,
                    ..EncodeOptions::default()
                },
                ..PipelineConfig::default()
            };
            serve(&store, &sink, &cfg, &function_name).await
        }
    }
}

async fn serve<S: DedupStore, O: ObjectSink>(
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    function_name: &str,
) -> anyhow::Result<()> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<KinesisEvent>| async move {
        let deadline = lambda_deadline(event.context.deadline, DEADLINE_MARGIN);
        tracing::debug!(
            deadline_ms = event.context.deadline,
            now_ms = chrono::Utc::now().timestamp_millis(),
            "invocation deadline"
        );
        let invoked = invoke(event.payload, deadline, store, sink, cfg, function_name).await?;
        println!("{}", invoked.metrics);
        Ok::<KinesisEventResponse, Error>(invoked.response)
    }))
    .await
    .map_err(|e| anyhow::anyhow!("the Lambda runtime stopped: {e}"))
}

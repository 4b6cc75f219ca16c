//! The Lambda function: Kinesis batches into the lake, exactly once.
//!
//! Configuration is read and checked once at start-up (see
//! `kinesis_lake::aws::config` for every variable): with `LAKE_BUCKET` and
//! `DEDUP_TABLE` the lake is in S3 with dedup claims in DynamoDB (with
//! `DEDUP_MODE=window`, no table: the publisher drops repeats); without
//! `LAKE_BUCKET` but with `LAKE_DIR`, a local folder with the embedded dedup
//! store (trials with `cargo lambda watch`). The SDK clients are built here,
//! once, and the handler is generic over the store and the sink.
//!
//! Each invocation logs one JSON line and prints one Embedded Metric Format
//! line to stdout, and answers with a partial batch response.
//!
//! With `LAKE_FUNCTION=publish` the same binary is the scheduled publisher:
//! each invocation publishes the closed windows of staged events
//! (`kinesis_lake::core::publish`) and reports what it did.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use aws_lambda_events::event::streams::KinesisEventResponse;
use kinesis_lake::kinesis::KinesisEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

use kinesis_lake::PipelineConfig;
use kinesis_lake::aws::config::{self, Clients, FunctionRole};
use kinesis_lake::aws::deadline::lambda_deadline;
use kinesis_lake::aws::handler::{invoke, publish_invoke, which_windows};
use kinesis_lake::aws::{AwsLake, ClientSettings, LambdaMode, S3Sink};
use kinesis_lake::core::dedup::{DedupMode, DedupStore, NoClaims};
use kinesis_lake::core::encode::EncodeOptions;
use kinesis_lake::core::iceberg::TableFormat;
use kinesis_lake::core::publish::PublishConfig;
use kinesis_lake::core::sink::ObjectSink;
use kinesis_lake::local::{FsSink, RedbStore, redb_store};
use kinesis_lake::rest_catalog::IcebergSettings;

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
    let env = |k: &str| std::env::var(k).ok();
    let payload_json = config::payload_json(&env)?;
    let compression = config::compression(&env)?;
    let window_secs = config::window_secs(&env)?;
    let created_at_unit = config::created_at_unit(&env)?;
    let encode = EncodeOptions {
        payload_json,
        compression,
        ..EncodeOptions::default()
    };
    if config::function_role(&env)? == FunctionRole::Publish {
        let (grace_secs, target_file_bytes) = config::publish_settings(&env)?;
        let iceberg = match config::table_format(&env)? {
            TableFormat::Hive => None,
            TableFormat::Iceberg => Some(
                IcebergSettings::from_env()
                    .table(payload_json, target_file_bytes)
                    .await
                    .map_err(anyhow::Error::msg)?,
            ),
        };
        let cfg = PublishConfig {
            window_secs,
            grace_secs,
            target_file_bytes,
            encode,
            iceberg,
            ..PublishConfig::default()
        };
        return run_publisher(cfg, &function_name).await;
    }
    let dedup = config::dedup_mode(&env)?;
    // the settings every consumer mode shares; an S3 lake adds its own
    let base = PipelineConfig {
        encode,
        window_secs,
        created_at_unit,
        dedup,
        ..PipelineConfig::default()
    };
    let in_lake = |lake: &AwsLake| PipelineConfig {
        prefix: lake.prefix.clone(),
        io_concurrency: lake.io_concurrency,
        ..base.clone()
    };
    match LambdaMode::from_env()? {
        LambdaMode::Aws {
            lake,
            create_resources,
        } if dedup == DedupMode::Window => {
            let sink = lake_sink(&lake, create_resources).await?;
            let cfg = in_lake(&lake);
            tracing::info!(lake = %lake.url(), dedup = %dedup, window_secs, created_at_unit = %created_at_unit, "ready");
            serve(&NoClaims, &sink, &cfg, &function_name).await
        }
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
            let cfg = in_lake(&lake);
            tracing::info!(lake = %lake.url(), table = %lake.table, ttl_hours = lake.ttl_hours, window_secs, created_at_unit = %created_at_unit, "ready");
            serve(&store, &sink, &cfg, &function_name).await
        }
        LambdaMode::Local { dir } => {
            let sink = FsSink::new(&dir);
            tracing::info!(lake = %dir.display(), dedup = %dedup, window_secs, created_at_unit = %created_at_unit, "ready (local folder)");
            if dedup == DedupMode::Window {
                return serve(&NoClaims, &sink, &base, &function_name).await;
            }
            let store = RedbStore::open(&redb_store::default_path(&dir)).with_context(|| {
                format!("opening the dedup store in LAKE_DIR={}", dir.display())
            })?;
            serve(&store, &sink, &base, &function_name).await
        }
    }
}

/// The lake's bucket alone (no dedup table), checked: the publisher's, and
/// the consumer's with window dedup.
async fn lake_sink(lake: &AwsLake, create_resources: bool) -> anyhow::Result<S3Sink> {
    let clients = Clients::load(&ClientSettings::default()).await?;
    let sink = S3Sink::new(clients.s3, &lake.bucket);
    if create_resources {
        sink.ensure_bucket().await?;
    }
    sink.check(&lake.prefix)
        .await
        .with_context(|| format!("checking the lake {}", lake.url()))?;
    Ok(sink)
}

/// The scheduled publisher: the lake's S3 bucket (or a local folder), no
/// dedup table.
async fn run_publisher(cfg: PublishConfig, function_name: &str) -> anyhow::Result<()> {
    match LambdaMode::from_env()? {
        LambdaMode::Aws {
            lake,
            create_resources,
        } => {
            let sink = lake_sink(&lake, create_resources).await?;
            let cfg = PublishConfig {
                prefix: lake.prefix.clone(),
                io_concurrency: lake.io_concurrency,
                ..cfg
            };
            tracing::info!(lake = %lake.url(), window_secs = cfg.window_secs, "ready (publisher)");
            serve_publisher(&sink, &cfg, function_name).await
        }
        LambdaMode::Local { dir } => {
            let sink = FsSink::new(&dir);
            // a folder has no lifecycle rule to expire published staging objects
            let cfg = PublishConfig {
                remove_staged: true,
                ..cfg
            };
            tracing::info!(lake = %dir.display(), window_secs = cfg.window_secs, "ready (publisher, local folder)");
            serve_publisher(&sink, &cfg, function_name).await
        }
    }
}

/// Each invocation (an EventBridge schedule's event) publishes the closed
/// windows (`{"publish_open_windows": true}`: the open ones too); a run that
/// stops early fails the invocation, and the next one resumes it.
async fn serve_publisher<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    function_name: &str,
) -> anyhow::Result<()> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move {
            let deadline = lambda_deadline(event.context.deadline, DEADLINE_MARGIN);
            let which = which_windows(&event.payload);
            let run = publish_invoke(
                deadline,
                sink,
                cfg,
                which,
                function_name,
                chrono::Utc::now(),
            )
            .await;
            println!("{}", run.metrics);
            match run.result {
                Ok(p) => Ok::<serde_json::Value, Error>(serde_json::to_value(p)?),
                Err(e) => Err(Error::from(e)),
            }
        },
    ))
    .await
    .map_err(|e| anyhow::anyhow!("the Lambda runtime stopped: {e}"))
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

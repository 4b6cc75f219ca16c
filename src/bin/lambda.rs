//! The Lambda function: Kinesis batches into the lake.
//!
//! Configuration (read once at start-up):
//! - `LAKE_DIR`: write the lake to this folder with the embedded dedup store
//!   (local trials with `cargo lambda watch`).

use std::path::PathBuf;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use lambda_runtime::{Error, LambdaEvent, service_fn};

use kinesis_lake::PipelineConfig;
use kinesis_lake::kinesis::handle;
use kinesis_lake::local::{FsSink, RedbStore, redb_store};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();

    let lake = std::env::var_os("LAKE_DIR")
        .map(PathBuf::from)
        .ok_or("set LAKE_DIR to the lake folder")?;
    let store = RedbStore::open(&redb_store::default_path(&lake))?;
    let sink = FsSink::new(&lake);
    let cfg = PipelineConfig::default();

    lambda_runtime::run(service_fn(|event: LambdaEvent<KinesisEvent>| {
        let (store, sink, cfg) = (&store, &sink, &cfg);
        async move {
            let (response, outcome) = handle(event.payload, store, sink, cfg).await?;
            tracing::info!(counts = ?outcome.counts, "batch done");
            Ok::<KinesisEventResponse, Error>(response)
        }
    }))
    .await
}

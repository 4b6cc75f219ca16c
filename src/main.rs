//! The `kinesis-lake` command line: runs the lake pipeline into a local
//! folder, or into the S3 lake with the DynamoDB dedup table (backfills and
//! replays use the real lake's dedup).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use chrono::Utc;
use kinesis_lake::PipelineConfig;
use kinesis_lake::aws::config::{
    self as lake_config, Clients, DEFAULT_IO_CONCURRENCY, DEFAULT_TTL_HOURS,
};
use kinesis_lake::aws::kinesis_stream::KinesisReader;
use kinesis_lake::aws::{AwsLake, ClientSettings, S3Sink};
use kinesis_lake::core::dedup::{DedupMode, NoClaims};
use kinesis_lake::core::iceberg::TableFormat;
use kinesis_lake::core::publish::{
    DEFAULT_TARGET_FILE_BYTES, PublishConfig, Published, Which, publish,
};
use kinesis_lake::ingest::{BatchLimits, Summary, ingest};
use kinesis_lake::local::input::{InputFile, OnRead, expand, total_bytes};
use kinesis_lake::local::{FsSink, RedbStore, fs_sink, redb_store};
use kinesis_lake::rest_catalog::{self, IcebergSettings};

/// Turns Kinesis JSON events into a Hive-partitioned Parquet lake, exactly once.
#[derive(Parser)]
#[command(name = "kinesis-lake", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// mimalloc: per-event allocations were a tenth of a batch's time with the
/// system allocator (BENCHMARKS.md); settings in `kinesis_lake::allocator`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Subcommand)]
enum Command {
    /// Ingest NDJSON files or Lambda Kinesis event documents into a lake.
    ///
    /// Each INPUT is a file or a folder (walked recursively, hidden files
    /// skipped, each linked folder read once, the lake itself never). A file whose first key is "Records" is read as a Lambda
    /// Kinesis event document; any other file as NDJSON, one event per line.
    /// Either may be gzip-compressed. Re-running the same input adds nothing:
    /// dedup state lives in LAKE/_state/dedup.redb, or for an s3:// lake in
    /// the DynamoDB table --dedup-table (shared with the Lambda function, so
    /// events already in the lake are not written again). Bad records go to
    /// LAKE/_errors/ and never make the exit code non-zero.
    ///
    /// For an s3:// lake the standard AWS variables apply (AWS_REGION,
    /// credentials, AWS_PROFILE, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL_DYNAMODB).
    /// If S3 or DynamoDB cannot be reached the exit code is non-zero; run the
    /// same command again later: nothing is written twice.
    Ingest {
        /// The lake: a folder (created if missing), or s3://BUCKET/PREFIX
        /// (with --dedup-table).
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        lake: PathBuf,
        /// The DynamoDB dedup table of an s3:// lake (the Lambda function's
        /// DEDUP_TABLE).
        #[arg(long, value_name = "TABLE")]
        dedup_table: Option<String>,
        /// How long dedup claims are kept in the table, in hours (the
        /// function's DEDUP_TTL_HOURS) [default: 168]. s3:// lakes only; local
        /// claims never expire.
        #[arg(long, value_name = "HOURS")]
        dedup_ttl_hours: Option<String>,
        /// Close a batch (and write its files) after this many MiB of input.
        /// Bigger batches make fewer, bigger Parquet files.
        #[arg(long, value_name = "MIB", default_value_t = 64,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 20))]
        batch_mib: usize,
        /// Close a batch after this many records.
        #[arg(long, value_name = "N", default_value_t = 200_000,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000_000))]
        batch_records: usize,
        /// Also keep each event's JSON exactly as received in a payload_json
        /// column (lossless replay and debugging; costs space: see BENCHMARKS.md).
        #[arg(long)]
        payload_json: bool,
        /// Parquet page compression: zstd (level 1, the smallest files), auto
        /// (zstd level 1 for column chunks from 2 KiB, snappy below: faster on
        /// small files), zstd(N) with N from 1 to 22 or a fast level from -1 to
        /// -7, snappy or none.
        #[arg(long, value_name = "CODEC", default_value = "zstd", value_parser = kinesis_lake::core::parquet_file::Codec::parse)]
        compression: kinesis_lake::core::parquet_file::Codec,
        /// Publication window in seconds: each batch is staged under
        /// LAKE/_staging/, and each window becomes one Parquet file per
        /// partition when published. 60 to 900, or 0 for no staging: one file
        /// per partition per batch, written at once.
        #[arg(long, value_name = "SECONDS", env = "PUBLISH_WINDOW_SECONDS", default_value_t = kinesis_lake::core::window::DEFAULT_WINDOW_SECS, value_parser = parse_window)]
        window: u32,
        /// The unit every producer sends created_at in: s (Unix seconds, the
        /// contract), ms, us or ns. Converted to seconds exactly, then checked
        /// against the same range (0001-01-01 to 5138).
        #[arg(long, value_name = "UNIT", env = "CREATED_AT_UNIT", default_value = "s", value_parser = kinesis_lake::core::enrich::CreatedAtUnit::parse)]
        created_at_unit: kinesis_lake::core::enrich::CreatedAtUnit,
        /// How repeats of an event_uuid are dropped: dynamodb (every event is
        /// claimed in the dedup store, the DynamoDB table of an s3:// lake or
        /// the embedded store of a folder lake: repeats dropped for as long
        /// as claims live, 7 days by default) or window (no store: a retry of
        /// the same input stages nothing new, and the publisher drops repeats
        /// within its 1-hour look-back; needs a --window).
        #[arg(long, value_name = "MODE", env = "DEDUP_MODE", default_value = "dynamodb", value_parser = DedupMode::parse)]
        dedup: DedupMode,
        /// Stage only: leave publication to a later `kinesis-lake publish`
        /// (or the scheduled publisher function of an s3:// lake).
        #[arg(long)]
        no_publish: bool,
        #[command(flatten)]
        table: TableArgs,
        /// Print the summary as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Never show a progress bar (it only shows on a terminal anyway).
        #[arg(long)]
        no_progress: bool,
        /// Input files or folders.
        #[arg(value_name = "INPUT", required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Publish staged windows: each becomes one Parquet file per partition
    /// (split at --target-file-mib), exactly once.
    ///
    /// For a folder lake (whose lock proves that nobody else writes) every
    /// staged event is published, open windows included; for an s3:// lake,
    /// every window that has closed (its end plus --grace-seconds), as the
    /// scheduled publisher function does. Safe to run again or at the same
    /// time as another publisher: a window is never published twice.
    Publish {
        /// The lake: a folder, or s3://BUCKET/PREFIX.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        lake: PathBuf,
        /// The window length the lake stages with, seconds (60 to 900).
        #[arg(long, value_name = "SECONDS", env = "PUBLISH_WINDOW_SECONDS", default_value_t = kinesis_lake::core::window::DEFAULT_WINDOW_SECS, value_parser = parse_window)]
        window: u32,
        /// How long after its end a window of an s3:// lake is published.
        #[arg(long, value_name = "SECONDS", default_value_t = kinesis_lake::core::publish::DEFAULT_GRACE_SECS)]
        grace_seconds: u32,
        /// Split a partition's file of one window at about this size.
        #[arg(long, value_name = "MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
        target_file_mib: u64,
        /// Parquet page compression (as for ingest).
        #[arg(long, value_name = "CODEC", default_value = "zstd", value_parser = kinesis_lake::core::parquet_file::Codec::parse)]
        compression: kinesis_lake::core::parquet_file::Codec,
        /// Also keep each event's JSON in a payload_json column.
        #[arg(long)]
        payload_json: bool,
        #[command(flatten)]
        table: TableArgs,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Replay dead letters through the current rules, and failed Lambda
    /// batches through the pipeline, exactly once.
    ///
    /// Each dead letter of LAKE/_errors/ (filtered by --since, --until and
    /// --reason) is checked again with the current rules (e.g. after a
    /// producer fix or with --created-at-unit ms): what passes now goes into
    /// the lake once (the dedup claims apply, and the moved lines are recorded
    /// in LAKE/_replay/ so a later replay skips them); what still fails stays
    /// a dead letter and no second copy is written. --failed reads records of
    /// the Lambda function's on-failure destination (a file or an s3:// key)
    /// and runs their batch's records through the pipeline: the S3
    /// destination's record holds them; an SQS or SNS destination's record
    /// holds only the shard and sequence range, read back from the stream
    /// (GetShardIterator + GetRecords) while the stream still retains them.
    /// Safe to run again, or after a kill: nothing is written twice.
    Replay {
        /// The lake: a folder, or s3://BUCKET/PREFIX (with --dedup-table).
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        lake: PathBuf,
        /// The DynamoDB dedup table of an s3:// lake.
        #[arg(long, value_name = "TABLE")]
        dedup_table: Option<String>,
        /// How long dedup claims are kept in the table, in hours [default: 168].
        #[arg(long, value_name = "HOURS")]
        dedup_ttl_hours: Option<String>,
        /// Only dead letters written on or after this date (YYYY-MM-DD).
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        since: Option<chrono::NaiveDate>,
        /// Only dead letters written on or before this date (YYYY-MM-DD).
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        until: Option<chrono::NaiveDate>,
        /// Only dead letters with this reason code (repeat for more).
        #[arg(long = "reason", value_name = "CODE")]
        reasons: Vec<String>,
        /// The unit of created_at for this replay (as for ingest).
        #[arg(long, value_name = "UNIT", env = "CREATED_AT_UNIT", default_value = "s", value_parser = kinesis_lake::core::enrich::CreatedAtUnit::parse)]
        created_at_unit: kinesis_lake::core::enrich::CreatedAtUnit,
        /// Publication window (as for ingest): 0 writes files at once.
        #[arg(long, value_name = "SECONDS", env = "PUBLISH_WINDOW_SECONDS", default_value_t = kinesis_lake::core::window::DEFAULT_WINDOW_SECS, value_parser = parse_window)]
        window: u32,
        /// How repeats are dropped (as for ingest): dynamodb or window.
        #[arg(long, value_name = "MODE", env = "DEDUP_MODE", default_value = "dynamodb", value_parser = DedupMode::parse)]
        dedup: DedupMode,
        /// A record of the on-failure destination (a file, or s3://BUCKET/KEY):
        /// the S3 form with the batch, or the SQS/SNS form whose records are
        /// read from the stream; repeat for more. With --failed, dead letters are replayed only when
        /// --dead-letters is given too.
        #[arg(long, value_name = "FILE|s3://BUCKET/KEY")]
        failed: Vec<String>,
        /// Replay the dead letters as well as the --failed records.
        #[arg(long)]
        dead_letters: bool,
        #[command(flatten)]
        table: TableArgs,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the Athena CREATE EXTERNAL TABLE statements for a lake, with
    /// partition projection (no crawler, no MSCK REPAIR needed), or with
    /// --table-format iceberg the CREATE TABLE of its Iceberg table.
    ///
    /// The `events` table covers every event with the common columns. With
    /// --from (the lake folder or s3://BUCKET/PREFIX), one more table per
    /// event type and subtype (`payment__order`) carries its payload columns,
    /// from the lake's schema registry.
    ///
    /// With --table-format iceberg: ONE table (--table) over every event
    /// type, with the columns the publisher's Iceberg table has (the payload
    /// columns from --from's schema registry), to register the table in Glue
    /// yourself before the publisher's first commit.
    Ddl {
        /// The lake's S3 location, e.g. s3://my-bucket/lake.
        #[arg(long, value_name = "S3_URI")]
        location: String,
        /// Glue / Athena database name.
        #[arg(long, default_value = "kinesis_lake")]
        database: String,
        /// Table name.
        #[arg(long, default_value = "events")]
        table: String,
        /// First date of the event_date projection range (YYYY-MM-DD)
        /// [default: with --from, the lake's earliest event_date; else
        /// 2020-01-01]. Partitions of the lake outside the range are warned
        /// about.
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// The lake whose schema registry gives the per-type tables: a folder
        /// or s3://BUCKET/PREFIX.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        from: Option<String>,
        /// hive (CREATE EXTERNAL TABLE over the Hive-style folders) or
        /// iceberg (the CREATE TABLE of the lake's Iceberg table).
        #[arg(long, value_name = "FORMAT", env = "TABLE_FORMAT", default_value = "hive", value_parser = kinesis_lake::core::iceberg::TableFormat::parse)]
        table_format: kinesis_lake::core::iceberg::TableFormat,
        /// With --table-format iceberg: the lake keeps each event's JSON in a
        /// payload_json column (it is ingested and published with
        /// --payload-json).
        #[arg(long)]
        payload_json: bool,
    },
    /// Rebuild a folder lake's dedup store (LAKE/_state/dedup.redb) from the
    /// lake's own files, after it was lost or damaged.
    ///
    /// Every data file's event_uuid column and every dead letter's origin are
    /// claimed for the file they are in, so that ingesting the same input
    /// again writes nothing twice. Refuses to overwrite an existing store:
    /// move a damaged one aside first.
    RebuildState {
        /// The lake folder.
        #[arg(long, value_name = "DIR")]
        lake: PathBuf,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the lake's schema: each table's columns with their types and the
    /// version that added them, and the history of versions.
    Schema {
        /// The lake: a folder or s3://BUCKET/PREFIX.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        lake: String,
        /// Only the table of this event name (e.g. payment:order:completed).
        #[arg(value_name = "EVENT_NAME")]
        event_name: Option<String>,
    },
}

fn main() -> ExitCode {
    kinesis_lake::allocator::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kinesis-lake: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ingest {
            lake,
            dedup_table,
            dedup_ttl_hours,
            batch_mib,
            batch_records,
            payload_json,
            compression,
            window,
            created_at_unit,
            dedup,
            no_publish,
            table,
            json,
            no_progress,
            inputs,
        } => {
            check_dedup_window(dedup, window)?;
            table.check_window(window)?;
            let encode = kinesis_lake::core::encode::EncodeOptions {
                payload_json,
                compression,
                ..Default::default()
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let iceberg =
                runtime.block_on(table.iceberg(payload_json, DEFAULT_TARGET_FILE_BYTES))?;
            let publish_cfg = (window > 0 && !no_publish).then(|| PublishConfig {
                window_secs: window,
                encode: encode.clone(),
                iceberg,
                ..PublishConfig::default()
            });
            let target = LakeTarget::parse(&lake, dedup_table, dedup_ttl_hours, dedup)?;
            let limits = BatchLimits {
                max_bytes: batch_mib << 20,
                max_records: batch_records,
            };
            let location = target.location();
            let bar;
            let summary = match target {
                LakeTarget::Dir(dir) => {
                    let store = open_folder_lake(&dir, dedup)?;
                    fs_sink::remove_stale_temporaries(&dir);
                    let files = expand(&inputs, Some(&dir))?;
                    bar = progress_bar(&files, no_progress);
                    let sink = FsSink::new(&dir);
                    let cfg = PipelineConfig {
                        encode,
                        window_secs: window,
                        created_at_unit,
                        dedup,
                        ..PipelineConfig::default()
                    };
                    let on_read = counting_into(&bar);
                    let ingested = runtime.block_on(async {
                        match dedup {
                            DedupMode::Claims => {
                                ingest(&files, &store, &sink, &cfg, &limits, on_read).await
                            }
                            DedupMode::Window => {
                                ingest(&files, &NoClaims, &sink, &cfg, &limits, on_read).await
                            }
                        }
                    });
                    if let Some(damage) = store.damage() {
                        bar.finish_and_clear();
                        anyhow::bail!("{damage}");
                    }
                    let mut summary = ingested?;
                    if let Some(p) = publish_cfg {
                        let p = PublishConfig {
                            schema_cache: cfg.schema_cache.clone(),
                            remove_staged: true,
                            ..p
                        };
                        summary.published = Some(
                            runtime
                                .block_on(publish(&sink, &p, Which::Everything, Utc::now()))
                                .context(PUBLISH_AGAIN)?,
                        );
                    }
                    summary
                }
                LakeTarget::S3(lake) => {
                    let files = expand(&inputs, None)?;
                    bar = progress_bar(&files, no_progress);
                    let on_read = counting_into(&bar);
                    let cfg = PipelineConfig {
                        prefix: lake.prefix.clone(),
                        io_concurrency: lake.io_concurrency,
                        encode,
                        window_secs: window,
                        created_at_unit,
                        dedup,
                        ..PipelineConfig::default()
                    };
                    runtime.block_on(ingest_s3(
                        &lake,
                        &files,
                        &limits,
                        cfg,
                        publish_cfg,
                        on_read,
                    ))?
                }
            };
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                print_summary(&summary, &location);
            }
            if summary.counts.failed > 0 {
                eprintln!(
                    "kinesis-lake: error: {} records could not be written durably (first: {}: {}); fix the cause and run the same command again: nothing will be written twice",
                    summary.counts.failed,
                    summary.failures.first().map_or("?", |f| f.record.as_str()),
                    summary.failures.first().map_or("?", |f| f.reason.as_str()),
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            lake,
            window,
            grace_seconds,
            target_file_mib,
            compression,
            payload_json,
            table,
            json,
        } => {
            let cfg = PublishConfig {
                window_secs: window,
                grace_secs: grace_seconds,
                target_file_bytes: target_file_mib << 20,
                encode: kinesis_lake::core::encode::EncodeOptions {
                    payload_json,
                    compression,
                    ..Default::default()
                },
                ..PublishConfig::default()
            };
            let published = publish_lake(&lake, cfg, &table)?;
            if json {
                println!("{}", serde_json::to_string(&published)?);
            } else {
                print_published(&published);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            lake,
            dedup_table,
            dedup_ttl_hours,
            since,
            until,
            reasons,
            created_at_unit,
            window,
            dedup,
            failed,
            dead_letters,
            table,
            json,
        } => {
            check_dedup_window(dedup, window)?;
            let target = LakeTarget::parse(&lake, dedup_table, dedup_ttl_hours, dedup)?;
            let job = ReplayJob {
                table,
                filter: kinesis_lake::replay::Filter {
                    since,
                    until,
                    reasons,
                },
                dead_letters: dead_letters || failed.is_empty(),
                failed,
                cfg: PipelineConfig {
                    window_secs: window,
                    created_at_unit,
                    dedup,
                    ..PipelineConfig::default()
                },
            };
            let summary = replay_lake(target, job)?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                print_replay(&summary);
            }
            if summary.failed > 0 {
                eprintln!(
                    "kinesis-lake: error: {} records could not be written durably (first: {}: {}); fix the cause and run the same replay again: nothing will be written twice",
                    summary.failed,
                    summary.failures.first().map_or("?", |f| f.record.as_str()),
                    summary.failures.first().map_or("?", |f| f.reason.as_str()),
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ddl {
            location,
            database,
            table,
            since,
            from,
            table_format,
            payload_json,
        } => match table_format {
            kinesis_lake::core::iceberg::TableFormat::Hive => {
                if payload_json {
                    anyhow::bail!(
                        "--payload-json is for --table-format iceberg: the Hive tables leave the payload_json column out"
                    );
                }
                ddl(location, database, table, since, from)
            }
            kinesis_lake::core::iceberg::TableFormat::Iceberg => {
                if !location.starts_with("s3://") {
                    anyhow::bail!(
                        "--location must be an s3:// URI (Athena reads from S3), got {location:?}"
                    );
                }
                if since.is_some() {
                    anyhow::bail!(
                        "--since sets the Hive tables' partition projection range; an Iceberg table has none (leave it out)"
                    );
                }
                let schema = match &from {
                    Some(lake) => read_schema_history(lake)?.pop().unwrap_or_default(),
                    None => Default::default(),
                };
                print_out(&kinesis_lake::ddl::render_iceberg(
                    &database,
                    &table,
                    &location,
                    &schema,
                    payload_json,
                ));
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::RebuildState { lake, json } => rebuild_state(&lake, json),
        Command::Schema { lake, event_name } => {
            let history = read_schema_history(&lake)?;
            let table = event_name.map(|n| {
                let mut parts = n.split(':');
                let t = parts.next().unwrap_or_default();
                let table = kinesis_lake::core::schema::table_name(
                    t,
                    parts.next().filter(|s| !s.is_empty()),
                );
                (n, table)
            });
            if let Some((name, table)) = &table {
                check_table(&history, &lake, name, table)?;
            }
            let table = table.map(|(_, t)| t);
            print_out(kinesis_lake::core::schema::describe(&history, table.as_deref()).trim_end());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Fails when the lake's schema has no table for an event name.
fn check_table(
    history: &[kinesis_lake::core::schema::LakeSchema],
    lake: &str,
    event_name: &str,
    table: &str,
) -> anyhow::Result<()> {
    let Some(latest) = history.last() else {
        anyhow::bail!(
            "the lake {lake} has no schema yet (no event was ingested), so no table {table} for {event_name:?}"
        );
    };
    if !latest.tables.contains_key(table) {
        let known: Vec<&str> = latest.tables.keys().map(String::as_str).collect();
        anyhow::bail!(
            "the lake {lake} has no table {table} for the event name {event_name:?}; its tables: {} (an event name selects the table of its first two `:`-parts)",
            known.join(", ")
        );
    }
    Ok(())
}

/// A progress bar of bytes read: with the total when every input's size is
/// known, else bytes read so far (a FIFO). Drawn only on a terminal.
fn progress_bar(files: &[InputFile], hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total_bytes(files) {
        Some(total) => (
            ProgressBar::new(total),
            "{spinner} {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {bytes} read {bytes_per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Adds the bytes read to the progress bar.
fn counting_into(bar: &ProgressBar) -> OnRead {
    let bar = bar.clone();
    Arc::new(move |n| bar.inc(n))
}

/// Every committed schema version of a lake (folder or s3://), oldest first.
fn read_schema_history(lake: &str) -> anyhow::Result<Vec<kinesis_lake::core::schema::LakeSchema>> {
    use kinesis_lake::core::registry::history;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        if lake.starts_with("s3://") {
            let (bucket, prefix) = lake_config::parse_s3_url("--lake", lake)?;
            let clients = Clients::load(&ClientSettings::default()).await?;
            let sink = S3Sink::new(clients.s3, &bucket);
            Ok(history(&sink, &prefix).await?)
        } else {
            if !std::path::Path::new(lake).is_dir() {
                anyhow::bail!("{lake} is not a lake folder (or an s3:// URI)");
            }
            Ok(history(&FsSink::new(lake), "").await?)
        }
    })
}

fn ddl(
    location: String,
    database: String,
    table: String,
    since: Option<String>,
    from: Option<String>,
) -> anyhow::Result<ExitCode> {
    if !location.starts_with("s3://") {
        anyhow::bail!("--location must be an s3:// URI (Athena reads from S3), got {location:?}");
    }
    let since = since
        .map(|s| {
            chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .with_context(|| format!("--since must be a date like 2024-01-31, got {s:?}"))
        })
        .transpose()?;
    let mut spec = kinesis_lake::ddl::TableSpec {
        database,
        table,
        location,
        date_range_start: since.map_or_else(
            || "2020-01-01".to_string(),
            kinesis_lake::core::partition::format_date,
        ),
        date_range_end: "NOW".into(),
    };
    match &from {
        Some(lake) => {
            let schema = read_schema_history(lake)?.pop().unwrap_or_default();
            let dates = read_event_dates(lake)?;
            let today = chrono::Utc::now().date_naive();
            let (start, end, warnings) = kinesis_lake::ddl::projection_range(&dates, since, today);
            (spec.date_range_start, spec.date_range_end) = (start, end);
            for w in warnings {
                eprintln!("kinesis-lake: warning: {w}");
            }
            print_out(&kinesis_lake::ddl::render_all(&spec, &schema));
        }
        None => print_out(&kinesis_lake::ddl::render(&spec)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The `event_date` values of a lake's partitions (folder or s3://).
fn read_event_dates(lake: &str) -> anyhow::Result<std::collections::BTreeSet<chrono::NaiveDate>> {
    if lake.starts_with("s3://") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        return runtime.block_on(async {
            let (bucket, prefix) = lake_config::parse_s3_url("--from", lake)?;
            let clients = Clients::load(&ClientSettings::default()).await?;
            // event_type=…/event_subtype=…/event_date=…/: three levels of
            // common prefixes
            let mut level = vec![kinesis_lake::core::partition::join_prefix(&prefix, "")];
            if !level[0].is_empty() && !level[0].ends_with('/') {
                level[0].push('/');
            }
            for _ in 0..3 {
                let mut next = Vec::new();
                for p in &level {
                    let mut pages = clients
                        .s3
                        .list_objects_v2()
                        .bucket(&bucket)
                        .prefix(p)
                        .delimiter("/")
                        .into_paginator()
                        .send();
                    while let Some(page) = pages.next().await {
                        let page = page
                            .with_context(|| format!("listing the partitions of {lake} ({p})"))?;
                        next.extend(
                            page.common_prefixes()
                                .iter()
                                .filter_map(|c| c.prefix())
                                .filter(|c| !c[p.len()..].starts_with(['_', '.']))
                                .map(String::from),
                        );
                    }
                }
                level = next;
            }
            let rel: Vec<&str> = level
                .iter()
                .map(|k| &k[prefix.len().min(k.len())..])
                .collect();
            Ok(kinesis_lake::ddl::event_dates(rel))
        });
    }
    // event_type=…/event_subtype=…/event_date=…: three levels of folders
    let mut folders: Vec<String> = Vec::new();
    let mut level: Vec<(std::path::PathBuf, String)> = vec![(lake.into(), String::new())];
    for _ in 0..3 {
        let mut next = Vec::new();
        for (dir, rel) in level {
            let entries = std::fs::read_dir(&dir)
                .with_context(|| format!("listing the partitions of {}", dir.display()))?;
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(['_', '.']) && e.path().is_dir() {
                    next.push((e.path(), format!("{rel}{name}/")));
                }
            }
        }
        level = next;
    }
    folders.extend(level.into_iter().map(|(_, rel)| rel));
    Ok(kinesis_lake::ddl::event_dates(
        folders.iter().map(String::as_str),
    ))
}

/// `rebuild-state`: a new dedup store from the lake's files.
fn rebuild_state(lake: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let s = runtime.block_on(kinesis_lake::local::rebuild::rebuild_state(lake))?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("data files read     {:>12}", s.data_files);
    println!("events claimed      {:>12}", s.events - s.duplicated_uuids);
    println!("dead-letter files   {:>12}", s.dead_letter_files);
    println!("rejections claimed  {:>12}", s.dead_letters);
    println!("elapsed             {:>12.2}s", s.elapsed_s);
    println!(
        "dedup store         {}",
        redb_store::default_path(lake).display()
    );
    if let Some((uuid, first, second)) = &s.duplicate_example {
        eprintln!(
            "kinesis-lake: warning: {} event uuids are in more than one data file: the lake holds them more than once (e.g. {uuid} in {first} and {second}); the store is complete, the extra copies stay until removed",
            s.duplicated_uuids
        );
    }
    if s.unreadable_dead_letters > 0 {
        eprintln!(
            "kinesis-lake: warning: {} dead letters have no readable origin: their records would be dead-lettered again if ingested again",
            s.unreadable_dead_letters
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `ingest` writes.
enum LakeTarget {
    /// A folder with the embedded dedup store.
    Dir(PathBuf),
    /// S3 with the DynamoDB dedup table.
    S3(AwsLake),
}

impl LakeTarget {
    fn parse(
        lake: &std::path::Path,
        dedup_table: Option<String>,
        dedup_ttl_hours: Option<String>,
        dedup: DedupMode,
    ) -> anyhow::Result<LakeTarget> {
        let Some(url) = lake.to_str().filter(|l| l.starts_with("s3://")) else {
            if dedup_table.is_some() || dedup_ttl_hours.is_some() {
                anyhow::bail!(
                    "--dedup-table and --dedup-ttl-hours apply to s3:// lakes only; a folder lake keeps its dedup state in {}",
                    redb_store::default_path(lake).display()
                );
            }
            return Ok(LakeTarget::Dir(lake.to_path_buf()));
        };
        let (bucket, prefix) = lake_config::parse_s3_url("--lake", url)?;
        if dedup == DedupMode::Window {
            if dedup_table.is_some() || dedup_ttl_hours.is_some() {
                anyhow::bail!(
                    "--dedup window uses no dedup table: drop --dedup-table and --dedup-ttl-hours, or use --dedup dynamodb"
                );
            }
            return Ok(LakeTarget::S3(AwsLake {
                bucket,
                prefix,
                table: String::new(),
                ttl_hours: DEFAULT_TTL_HOURS,
                io_concurrency: DEFAULT_IO_CONCURRENCY,
            }));
        }
        let table = dedup_table.context(
            "an s3:// lake needs --dedup-table TABLE: the DynamoDB dedup table (the Lambda function's DEDUP_TABLE)",
        )?;
        let ttl_hours = match dedup_ttl_hours {
            Some(h) => lake_config::parse_ttl_hours("--dedup-ttl-hours", &h)?,
            None => DEFAULT_TTL_HOURS,
        };
        Ok(LakeTarget::S3(AwsLake {
            bucket,
            prefix,
            table: lake_config::validate_table("--dedup-table", &table)?,
            ttl_hours,
            io_concurrency: DEFAULT_IO_CONCURRENCY,
        }))
    }

    /// The lake's location, for the summary.
    fn location(&self) -> String {
        match self {
            LakeTarget::Dir(dir) => dir.display().to_string(),
            LakeTarget::S3(lake) => lake.url(),
        }
    }
}

/// What to do when a publication stopped half way.
const PUBLISH_AGAIN: &str = "publishing the staged events failed (they are safe in the lake's _staging/ folder): fix the cause and run `kinesis-lake publish` with the same --lake";

/// Opens a folder lake's dedup store, which takes the lake's lock. Claims
/// need a store that covers the lake; events written without claims mark the
/// lake so (the marker is set before anything is written).
fn open_folder_lake(dir: &std::path::Path, dedup: DedupMode) -> anyhow::Result<RedbStore> {
    if dedup == DedupMode::Claims {
        kinesis_lake::local::rebuild::check_claims_cover_lake(dir)?;
    }
    let store =
        RedbStore::open(&redb_store::default_path(dir)).context("opening the dedup store")?;
    if dedup == DedupMode::Window {
        kinesis_lake::local::rebuild::mark_window_dedup(dir)
            .context("marking the lake as ingested without claims")?;
    }
    Ok(store)
}

/// Window dedup needs a window: its publisher is what drops repeats.
/// The table format and, for Iceberg, its catalog.
#[derive(clap::Args, Debug, Clone)]
struct TableArgs {
    /// The table format besides the Hive-style folders: hive (the folders
    /// only) or iceberg (also an Apache Iceberg table over the same data
    /// files: one snapshot per published window; needs a --window).
    #[arg(long, value_name = "FORMAT", env = "TABLE_FORMAT", default_value = "hive", value_parser = TableFormat::parse)]
    table_format: TableFormat,
    /// The Iceberg REST catalog: AWS Glue's
    /// (https://glue.REGION.amazonaws.com/iceberg, with --iceberg-sigv4-service
    /// glue), Amazon S3 Tables' (https://s3tables.REGION.amazonaws.com/iceberg,
    /// s3tables) or any other. Without it the catalog is in the lake
    /// (LAKE/_iceberg/metadata/: DuckDB's iceberg_scan and pyiceberg read it).
    #[arg(long, value_name = "URL", env = "ICEBERG_REST_URI")]
    iceberg_rest_uri: Option<String>,
    /// The REST catalog's warehouse (Glue: the account id; S3 Tables: the
    /// table bucket's ARN).
    #[arg(long, value_name = "WAREHOUSE", env = "ICEBERG_WAREHOUSE")]
    iceberg_warehouse: Option<String>,
    /// The table's namespace (Glue: its database).
    #[arg(long, value_name = "NAME", env = "ICEBERG_NAMESPACE", default_value = rest_catalog::DEFAULT_NAMESPACE)]
    iceberg_namespace: String,
    /// The table's name.
    #[arg(long, value_name = "NAME", env = "ICEBERG_TABLE", default_value = rest_catalog::DEFAULT_TABLE)]
    iceberg_table: String,
    /// OAuth client credentials for the REST catalog, ID:SECRET.
    #[arg(
        long,
        value_name = "ID:SECRET",
        env = "ICEBERG_CREDENTIAL",
        hide_env_values = true
    )]
    iceberg_credential: Option<String>,
    /// Sign REST catalog requests with SigV4 for this service (glue,
    /// s3tables), with the AWS SDK's credentials.
    #[arg(long, value_name = "SERVICE", env = "ICEBERG_SIGV4_SERVICE")]
    iceberg_sigv4_service: Option<String>,
}

impl TableArgs {
    fn check_window(&self, window: u32) -> anyhow::Result<()> {
        if self.table_format == TableFormat::Iceberg && window == 0 {
            anyhow::bail!(
                "--table-format iceberg needs a publication window (--window 60 to 900): the publisher is the table's only committer"
            );
        }
        Ok(())
    }

    /// The Iceberg table to commit to, for `--table-format iceberg`.
    async fn iceberg(
        &self,
        payload_json: bool,
        target_file_bytes: u64,
    ) -> anyhow::Result<Option<kinesis_lake::core::iceberg::commit::IcebergTable>> {
        if self.table_format != TableFormat::Iceberg {
            return Ok(None);
        }
        let settings = IcebergSettings {
            rest_uri: self.iceberg_rest_uri.clone(),
            warehouse: self.iceberg_warehouse.clone(),
            namespace: self.iceberg_namespace.clone(),
            table: self.iceberg_table.clone(),
            credential: self.iceberg_credential.clone(),
            sigv4_service: self.iceberg_sigv4_service.clone(),
        };
        let table = settings
            .table(payload_json, target_file_bytes)
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(Some(table))
    }
}

fn check_dedup_window(dedup: DedupMode, window: u32) -> anyhow::Result<()> {
    if dedup == DedupMode::Window && window == 0 {
        anyhow::bail!(
            "--dedup window needs a publication window (--window 60 to 900): the publisher is what drops repeats; use --dedup dynamodb for --window 0"
        );
    }
    Ok(())
}

/// `--window`: 0, or 60 to 900 seconds.
fn parse_window(s: &str) -> Result<u32, String> {
    let range = kinesis_lake::core::window::WINDOW_SECS_RANGE;
    match s.trim().parse::<u32>() {
        Ok(0) => Ok(0),
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "the window must be 0 (no staging) or {} to {} seconds, got {s:?}",
            range.start(),
            range.end()
        )),
    }
}

/// Publishes a folder lake (everything staged, under its lock) or an s3://
/// lake (closed windows).
fn publish_lake(
    lake: &std::path::Path,
    cfg: PublishConfig,
    table: &TableArgs,
) -> anyhow::Result<Published> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let iceberg =
        runtime.block_on(table.iceberg(cfg.encode.payload_json, cfg.target_file_bytes))?;
    let cfg = PublishConfig { iceberg, ..cfg };
    match lake.to_str().filter(|l| l.starts_with("s3://")) {
        Some(url) => {
            let (bucket, prefix) = lake_config::parse_s3_url("--lake", url)?;
            runtime.block_on(async {
                let clients = Clients::load(&ClientSettings::default()).await?;
                let sink = S3Sink::new(clients.s3, &bucket);
                let cfg = PublishConfig { prefix, ..cfg };
                publish(&sink, &cfg, Which::Closed, Utc::now())
                    .await
                    .context(PUBLISH_AGAIN)
            })
        }
        None => {
            if !lake.is_dir() {
                anyhow::bail!("{} is not a lake folder (or an s3:// URI)", lake.display());
            }
            // a lost store is not replaced by an empty one here
            kinesis_lake::local::rebuild::check_store_present(lake)?;
            // the store's lock: no ingest is staging into this lake meanwhile
            let _lock = RedbStore::open(&redb_store::default_path(lake))
                .context("opening the dedup store (it holds the lake's lock)")?;
            let sink = FsSink::new(lake);
            let cfg = PublishConfig {
                remove_staged: true,
                ..cfg
            };
            runtime
                .block_on(publish(&sink, &cfg, Which::Everything, Utc::now()))
                .context(PUBLISH_AGAIN)
        }
    }
}

/// Ingests into S3 with DynamoDB dedup, after checking both can be reached.
async fn ingest_s3(
    lake: &AwsLake,
    files: &[InputFile],
    limits: &BatchLimits,
    cfg: PipelineConfig,
    publish_cfg: Option<PublishConfig>,
    on_read: OnRead,
) -> anyhow::Result<Summary> {
    let (store, sink) = lake.connect(&ClientSettings::default()).await?;
    let (table_ok, lake_ok) = match cfg.dedup {
        DedupMode::Claims => tokio::join!(store.check(), sink.check(&lake.prefix)),
        DedupMode::Window => (Ok(()), sink.check(&lake.prefix).await),
    };
    table_ok.with_context(|| {
        format!(
            "cannot use the dedup table --dedup-table {}; nothing was written: fix the cause and run the same command again",
            lake.table
        )
    })?;
    lake_ok.with_context(|| {
        format!(
            "cannot use the lake {}; nothing was written: fix the cause and run the same command again",
            lake.url()
        )
    })?;
    let mut summary = match cfg.dedup {
        DedupMode::Claims => ingest(files, &store, &sink, &cfg, limits, on_read).await?,
        DedupMode::Window => ingest(files, &NoClaims, &sink, &cfg, limits, on_read).await?,
    };
    if let Some(p) = publish_cfg {
        let p = PublishConfig {
            prefix: lake.prefix.clone(),
            io_concurrency: lake.io_concurrency,
            schema_cache: cfg.schema_cache.clone(),
            ..p
        };
        // what this run staged may sit in open windows: publish those too
        // (a batch staged into one of them later is its next generation)
        summary.published = Some(
            publish(&sink, &p, Which::Everything, Utc::now())
                .await
                .context(PUBLISH_AGAIN)?,
        );
    }
    Ok(summary)
}

/// `--since` / `--until`: a date.
fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("expected a date like 2024-03-17, got {s:?}"))
}

/// What a `replay` run does.
struct ReplayJob {
    /// The lake's Iceberg table, if it keeps one: what the replay publishes
    /// is committed to it.
    table: TableArgs,
    filter: kinesis_lake::replay::Filter,
    dead_letters: bool,
    failed: Vec<String>,
    cfg: PipelineConfig,
}

/// Runs a replay on a folder lake (under its lock) or an s3:// lake, then
/// publishes what it staged.
fn replay_lake(
    target: LakeTarget,
    job: ReplayJob,
) -> anyhow::Result<kinesis_lake::replay::ReplaySummary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        use kinesis_lake::replay::{FailedBatch, fetch_batch, read_failed_batch};
        let mut clients =
            if target_is_s3(&target) || job.failed.iter().any(|f| f.starts_with("s3://")) {
                Some(Clients::load(&ClientSettings::default()).await?)
            } else {
                None
            };
        let mut batches = Vec::new();
        for source in &job.failed {
            let body = read_source(source, clients.as_ref()).await?;
            batches.push((source, read_failed_batch(source, &body)?));
        }
        // the metadata-only records: their records are read back from the
        // stream, all of them before anything is written
        let mut failed_events = Vec::new();
        for (source, batch) in batches {
            match batch {
                FailedBatch::Records(event) => failed_events.push(event),
                FailedBatch::Range(range) => {
                    if clients.is_none() {
                        clients = Some(Clients::load(&ClientSettings::default()).await?);
                    }
                    let kinesis = clients
                        .as_ref()
                        .map(|c| c.kinesis.clone())
                        .context("internal: no AWS clients for a Kinesis read")?;
                    let reader = KinesisReader::new(kinesis);
                    let event = fetch_batch(&reader, source, &range).await?;
                    tracing::info!(
                        source = source.as_str(),
                        shard = %range.shard_id,
                        records = event.records.len(),
                        "read the failed batch back from the stream"
                    );
                    failed_events.push(event);
                }
            }
        }
        match target {
            LakeTarget::Dir(dir) => {
                let store = open_folder_lake(&dir, job.cfg.dedup)?;
                let sink = FsSink::new(&dir);
                match job.cfg.dedup {
                    DedupMode::Claims => run_replay(&store, &sink, &job, failed_events, true).await,
                    DedupMode::Window => {
                        run_replay(&NoClaims, &sink, &job, failed_events, true).await
                    }
                }
            }
            LakeTarget::S3(lake) => {
                let (store, sink) = lake.connect(&ClientSettings::default()).await?;
                let cfg = PipelineConfig {
                    prefix: lake.prefix.clone(),
                    io_concurrency: lake.io_concurrency,
                    ..job.cfg.clone()
                };
                let job = ReplayJob { cfg, ..job };
                match job.cfg.dedup {
                    DedupMode::Claims => {
                        run_replay(&store, &sink, &job, failed_events, false).await
                    }
                    DedupMode::Window => {
                        run_replay(&NoClaims, &sink, &job, failed_events, false).await
                    }
                }
            }
        }
    })
}

fn target_is_s3(t: &LakeTarget) -> bool {
    matches!(t, LakeTarget::S3(_))
}

/// The bytes of a file, or of an s3://BUCKET/KEY object.
async fn read_source(source: &str, clients: Option<&Clients>) -> anyhow::Result<Vec<u8>> {
    let Some(rest) = source.strip_prefix("s3://") else {
        return std::fs::read(source)
            .with_context(|| format!("reading the failed-batch record {source}"));
    };
    let (bucket, key) = rest
        .split_once('/')
        .with_context(|| format!("--failed {source}: expected s3://BUCKET/KEY"))?;
    let clients = clients.context("internal: no AWS clients for an s3:// source")?;
    let got = clients
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("reading the failed-batch record {source}"))?;
    let body = got
        .body
        .collect()
        .await
        .with_context(|| format!("reading the failed-batch record {source}"))?;
    Ok(body.into_bytes().to_vec())
}

/// The replay over a store and a sink, then the publication of what it staged.
async fn run_replay<
    S: kinesis_lake::core::dedup::DedupStore,
    O: kinesis_lake::core::sink::ObjectSink,
>(
    store: &S,
    sink: &O,
    job: &ReplayJob,
    failed_events: Vec<kinesis_lake::kinesis::KinesisEvent>,
    folder: bool,
) -> anyhow::Result<kinesis_lake::replay::ReplaySummary> {
    use kinesis_lake::replay::{ReplaySummary, replay_dead_letters, replay_failed_batch};
    let mut summary = if job.dead_letters {
        replay_dead_letters(store, sink, &job.cfg, &job.filter, Utc::now()).await?
    } else {
        ReplaySummary::default()
    };
    for event in failed_events {
        replay_failed_batch(store, sink, &job.cfg, event, Utc::now(), &mut summary).await?;
    }
    if job.cfg.window_secs > 0 {
        let p = PublishConfig {
            iceberg: job
                .table
                .iceberg(job.cfg.encode.payload_json, DEFAULT_TARGET_FILE_BYTES)
                .await?,
            prefix: job.cfg.prefix.clone(),
            window_secs: job.cfg.window_secs,
            io_concurrency: job.cfg.io_concurrency,
            schema_cache: job.cfg.schema_cache.clone(),
            remove_staged: folder,
            ..PublishConfig::default()
        };
        publish(sink, &p, Which::Everything, Utc::now())
            .await
            .context(PUBLISH_AGAIN)?;
    }
    Ok(summary)
}

fn print_replay(s: &kinesis_lake::replay::ReplaySummary) {
    println!("dead letters        {:>12}", s.dead_letters);
    println!("moved into the lake {:>12}", s.moved);
    println!("already in the lake {:>12}", s.already_in_lake);
    println!("replayed before     {:>12}", s.replayed_before);
    let stayed: u64 = s.stayed.values().sum();
    println!("stayed rejected     {:>12}", stayed);
    for (code, n) in &s.stayed {
        println!("  {code:<18}{n:>12}");
    }
    if s.unreadable_lines > 0 {
        println!(
            "unreadable lines    {:>12}   (named in the log)",
            s.unreadable_lines
        );
    }
    if let Some(c) = &s.failed_batches {
        println!(
            "failed batches      {:>12}   records: {} written, {} duplicates, {} rejected",
            c.records, c.written, c.duplicates, c.rejected
        );
    }
    println!("records failed      {:>12}", s.failed);
}

/// Prints a text and a newline to stdout; a closed pipe (`| head`) is not an error.
fn print_out(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn print_published(p: &Published) {
    println!("windows published   {:>12}", p.windows);
    println!(
        "events published    {:>12}   (from {} staging objects)",
        p.events, p.staging_objects
    );
    println!("duplicates dropped  {:>12}", p.duplicates);
    println!(
        "files written       {:>12}   ({:.1} MB of Parquet)",
        p.files,
        p.bytes as f64 / 1e6
    );
    if p.rejected > 0 {
        println!("events rejected     {:>12}   (kept in _errors)", p.rejected);
    }
    if let Some(w) = &p.oldest_unpublished {
        println!(
            "still open          {:>12}   (oldest window with staged events; published once closed)",
            w
        );
    }
}

fn print_summary(s: &Summary, lake: &str) {
    let c = &s.counts;
    println!("records read        {:>12}", c.records);
    println!("events written      {:>12}", c.written);
    println!("duplicates dropped  {:>12}", c.duplicates);
    println!(
        "records rejected    {:>12}   (kept in {}/_errors)",
        c.rejected, lake
    );
    println!("records failed      {:>12}", c.failed);
    let (files, bytes) = match &s.published {
        Some(p) => (c.files + p.files, c.bytes + p.bytes),
        None => (c.files, c.bytes),
    };
    println!(
        "files written       {:>12}   ({:.1} MB of Parquet, {} dead-letter files)",
        files,
        bytes as f64 / 1e6,
        c.dead_letter_files
    );
    if c.staging_objects > 0 {
        println!("staging objects     {:>12}", c.staging_objects);
    }
    if let Some(p) = &s.published {
        println!(
            "events published    {:>12}   (windows published: {})",
            p.events, p.windows
        );
    }
    println!(
        "elapsed             {:>12.2}s  ({:.0} records/s from {} input files)",
        s.elapsed_s, s.records_per_s, s.input_files
    );
}

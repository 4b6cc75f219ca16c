//! Benchmarks of the lake pipeline with plain `std::time` timing (no harness):
//! the in-process pipeline on one Lambda-sized Kinesis batch, with no I/O, its
//! phases, the JSON parser's own speed on the same records, and Parquet writer
//! settings; plus the whole-folder and one-batch runs that `scripts/bench.sh`
//! times from outside.
//!
//! Modes (`cargo bench --bench pipeline -- MODE ...`, or the built binary):
//!
//! - `batch [FILE...] [--iters N]` (the default): one Kinesis event document
//!   (`{"Records": [...]}`, ~6 MB) through `run_batch` with `MemStore` +
//!   `MemSink` on a single-threaded runtime; prints events/s, MB/s of event
//!   JSON per core, the phase breakdown, serde_json's speed on the same
//!   records and a comparison of Parquet compression codecs. Without FILE,
//!   `KL_BENCH_BATCH` names it; without that, the first batch of
//!   `../shared/bench/gen_events.py --events 100000 --format kinesis` is used.
//!   Several FILEs make one batch of all their records (a CLI-sized batch:
//!   more rows per Parquet file).
//! - `once FILE`: reads one Kinesis event document, runs it through the
//!   pipeline once (MemStore + MemSink) and prints the peak RSS (`VmHWM`):
//!   the memory a Lambda invocation of that batch needs.
//! - `ingest --lake DIR [--store mem|redb] [--sink fs|mem] INPUT...`: what
//!   `kinesis-lake ingest` does (same runtime, same batch limits), by default
//!   with the dedup claims in memory (`MemStore`) and the files in a folder
//!   (`FsSink`): separates CPU cost from the embedded store's cost; with
//!   `--sink mem` no file is written either.
//! - `loop FILE... [--iters N]`: `run_batch` over and over, for a profiler
//!   (several FILEs: one batch of all their records).
//!
//! Every mode ends with one line `RESULT {json}` for scripts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::Utc;
use indexmap::IndexMap;
use kinesis_lake::kinesis::KinesisEvent;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use kinesis_lake::core::decode::decode;
use kinesis_lake::core::encode::{EncodeOptions, add_table_stats, encode};
use kinesis_lake::core::enrich::{CreatedAtUnit, Event, enrich};
use kinesis_lake::core::parquet_file::Codec;
use kinesis_lake::core::partition::PartitionKey;
use kinesis_lake::core::schema::{BatchStats, LakeSchema, table_name};
use kinesis_lake::ingest::{BatchLimits, ingest};
use kinesis_lake::kinesis::raw_records;
use kinesis_lake::local::{FsSink, RedbStore, redb_store};
use kinesis_lake::memory::{MemSink, MemStore};
use kinesis_lake::{PipelineConfig, RawRecord, run_batch};

#[path = "support/straightforward.rs"]
mod straightforward;

const DEFAULT_ITERS: usize = 15;

/// mimalloc: per-event allocations were a tenth of a batch's time with the
/// system allocator (BENCHMARKS.md); settings in `kinesis_lake::allocator`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    kinesis_lake::allocator::keep_freed_memory();
    // `cargo bench` passes `--bench`; ignore it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("batch");
    let rest = args.get(1..).unwrap_or_default();
    match mode {
        "batch" => bench_batch(rest),
        "once" => once(rest),
        "ingest" => ingest_mem(rest),
        "loop" => run_loop(rest),
        "-h" | "--help" | "help" => {
            println!(
                "usage: pipeline [batch [FILE...] [--iters N] | once FILE | ingest --lake DIR [--store mem|redb] [--sink fs|mem] INPUT... | loop FILE... [--iters N]]"
            );
            Ok(())
        }
        other => bail!("unknown mode {other:?}; modes: batch, once, ingest, loop (see --help)"),
    }
}

/// Positional arguments and the value of `--iters`.
fn parse_iters(args: &[String]) -> anyhow::Result<(Vec<&str>, usize)> {
    let mut pos = Vec::new();
    let mut iters = DEFAULT_ITERS;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--iters" {
            let v = it.next().context("--iters needs a number")?;
            iters = v.parse().with_context(|| format!("--iters {v:?}"))?;
        } else {
            pos.push(a.as_str());
        }
    }
    Ok((pos, iters.max(1)))
}

/// The batch file: the argument, `KL_BENCH_BATCH`, or a freshly generated one.
fn batch_file(arg: Option<&str>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(a) = arg {
        return Ok((PathBuf::from(a), None));
    }
    if let Ok(p) = std::env::var("KL_BENCH_BATCH") {
        return Ok((PathBuf::from(p), None));
    }
    let gen_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/gen_events.py");
    if !gen_py.is_file() {
        bail!(
            "no batch file given and {} is missing: pass a Kinesis event document \
             (pipeline batch FILE) or set KL_BENCH_BATCH",
            gen_py.display()
        );
    }
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let out = dir.path().join("kin");
    eprintln!("generating input with {} ...", gen_py.display());
    let status = Command::new("python3")
        .arg(&gen_py)
        .args([
            "--events",
            "100000",
            "--format",
            "kinesis",
            "--batch-bytes",
            "5500000",
            "--out",
        ])
        .arg(&out)
        .status()
        .context("running python3 gen_events.py")?;
    if !status.success() {
        bail!("gen_events.py failed: {status}");
    }
    Ok((out.join("batch-000000.json"), Some(dir)))
}

/// A Kinesis event document as Lambda hands it over: parsed and base64-decoded.
fn load_records(bytes: &[u8]) -> anyhow::Result<Vec<RawRecord>> {
    let event: KinesisEvent =
        serde_json::from_slice(bytes).context("not a Lambda Kinesis event document")?;
    Ok(raw_records(event)?)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn single_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Peak resident set size of this process so far, in KiB (Linux `VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The batch's valid events grouped as the pipeline groups them: by partition,
/// in batch order, repeats within the batch dropped.
fn groups<'e, 'a>(events: &'e [Event<'a>]) -> Vec<Vec<&'e Event<'a>>> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(events.len());
    let mut by: BTreeMap<&PartitionKey, Vec<&Event<'a>>> = BTreeMap::new();
    for e in events {
        if seen.insert(&e.event_uuid) {
            by.entry(&e.partition).or_default().push(e);
        }
    }
    by.into_values().collect()
}

/// The table (`type` or `type:subtype`) of a group of events.
fn table_of(group: &[&Event<'_>]) -> String {
    group.first().map_or_else(String::new, |e| {
        table_name(
            &e.partition.event_type,
            e.partition.event_subtype.as_deref(),
        )
    })
}

/// The batch's field statistics per table (each payload value's kind), as
/// the pipeline gathers them before committing the schema.
fn stats_of(grouped: &[Vec<&Event<'_>>]) -> BatchStats {
    let mut stats = BatchStats::new();
    for g in grouped {
        add_table_stats(g.iter().copied(), stats.entry(table_of(g)).or_default());
    }
    stats
}

/// Encodes every group with `schema`.
fn encode_groups(
    grouped: &[Vec<&Event<'_>>],
    schema: &LakeSchema,
    opts: &EncodeOptions,
) -> anyhow::Result<Vec<Vec<u8>>> {
    grouped
        .iter()
        .map(|g| Ok(encode(g, schema, &table_of(g), opts)?))
        .collect()
}

/// Encodes the groups on `threads` threads, each taking every n-th group;
/// the total size.
fn encode_parallel(
    grouped: &[Vec<&Event<'_>>],
    schema: &LakeSchema,
    opts: &EncodeOptions,
    threads: usize,
) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    grouped
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|g| encode(g, schema, &table_of(g), opts).map_or(0, |b| b.len()))
                        .sum::<usize>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

/// Timed jobs, run round-robin: one run of every job per round, so that the
/// machine's drift (and the allocator warming up) hit all of them alike.
struct Rounds<'a> {
    jobs: Vec<(String, Box<dyn FnMut() -> usize + 'a>)>,
}

impl<'a> Rounds<'a> {
    fn add(&mut self, name: impl Into<String>, f: impl FnMut() -> usize + 'a) {
        self.jobs.push((name.into(), Box::new(f)));
    }

    /// `warmup` unmeasured rounds, then `iters` measured ones; the median
    /// time of each job.
    fn run(mut self, warmup: usize, iters: usize) -> HashMap<String, Duration> {
        let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(iters); self.jobs.len()];
        for round in 0..warmup + iters {
            for (k, (_, f)) in self.jobs.iter_mut().enumerate() {
                let t = Instant::now();
                black_box(f());
                if round >= warmup {
                    times[k].push(t.elapsed());
                }
            }
        }
        self.jobs
            .into_iter()
            .zip(times)
            .map(|((name, _), t)| (name, median(t)))
            .collect()
    }
}

const CODECS: [&str; 11] = [
    "auto",
    "auto@1024",
    "auto@4096",
    "auto@8192",
    "auto@16384",
    "zstd(1) [default]",
    "zstd(3)",
    "zstd(-1)",
    "zstd(-5)",
    "snappy",
    "none",
];

/// A codec of encode() (the lake's own writer) by label; `auto@N` is auto
/// switching to zstd at N bytes (to measure where it should switch).
fn codec(label: &str) -> Codec {
    let name = label.split_whitespace().next().unwrap_or(label);
    if let Some(n) = name.strip_prefix("auto@").and_then(|n| n.parse().ok()) {
        return Codec::Auto { zstd_from: n };
    }
    Codec::parse(name).unwrap_or(EncodeOptions::default().compression)
}

/// The parquet crate's codec of the same label, for its ArrowWriter.
fn pq_codec(label: &str) -> Compression {
    match codec(label) {
        Codec::Zstd(l) => Compression::ZSTD(ZstdLevel::try_new(l).unwrap_or_default()),
        Codec::Auto { .. } => Compression::ZSTD(ZstdLevel::default()),
        Codec::Snappy => Compression::SNAPPY,
        Codec::Uncompressed => Compression::UNCOMPRESSED,
    }
}

/// Writer settings compared on the same Arrow batches.
fn writer_settings() -> Vec<(&'static str, Writer)> {
    let zstd3 = Compression::ZSTD(ZstdLevel::default());
    vec![
        (
            "zstd(3) on every column, dictionaries, page stats (parquet defaults)",
            Writer::all(zstd3),
        ),
        (
            "zstd(3) strings only, dict event_name only, chunk stats [our old encode()]",
            Writer::current(zstd3),
        ),
        (
            "  the same with zstd(1)",
            Writer::current(pq_codec("zstd(1)")),
        ),
        (
            "  the same with snappy",
            Writer::current(Compression::SNAPPY),
        ),
        (
            "  the same uncompressed",
            Writer::current(Compression::UNCOMPRESSED),
        ),
        (
            "  the same, string columns under 4 KB in a file plain",
            Writer {
                min_compressed_bytes: 4096,
                ..Writer::current(zstd3)
            },
        ),
        (
            "  the same, string columns under 16 KB in a file plain",
            Writer {
                min_compressed_bytes: 16384,
                ..Writer::current(zstd3)
            },
        ),
        (
            "  the same with dictionaries on every column",
            Writer {
                dictionary: Dictionary::All,
                ..Writer::current(zstd3)
            },
        ),
        (
            "  the same with page statistics",
            Writer {
                stats: EnabledStatistics::Page,
                ..Writer::current(zstd3)
            },
        ),
    ]
}

fn bench_batch(args: &[String]) -> anyhow::Result<()> {
    let (pos, iters) = parse_iters(args)?;
    let (path, _tmp) = batch_file(pos.first().copied())?;
    // more than one document: their records as one batch (a CLI-sized batch)
    let mut paths = vec![path.clone()];
    paths.extend(pos.iter().skip(1).map(PathBuf::from));
    let docs: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<_>>()?;
    let mut records = Vec::new();
    for doc in &docs {
        records.extend(load_records(doc)?);
    }
    let doc_bytes: usize = docs.iter().map(Vec::len).sum();
    let n = records.len();
    if n == 0 {
        bail!("{} holds no records", path.display());
    }
    let decoded: Vec<Vec<u8>> = records
        .iter()
        .map(|r| decode(&r.data).map(|c| c.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("a record does not decode: {e}"))?;
    let json_bytes: usize = decoded.iter().map(Vec::len).sum();
    let json_mb = json_bytes as f64 / 1e6;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let cfg = PipelineConfig::default();
    let cfg_auto = PipelineConfig {
        encode: EncodeOptions {
            compression: Codec::AUTO,
            ..EncodeOptions::default()
        },
        ..PipelineConfig::default()
    };
    let rt = single_thread_runtime()?;

    println!(
        "batch {}{}: {} records, {:.2} MB of Kinesis documents, {:.2} MB of event JSON ({} B/event)",
        path.display(),
        if docs.len() > 1 {
            format!(" and {} more documents", docs.len() - 1)
        } else {
            String::new()
        },
        n,
        doc_bytes as f64 / 1e6,
        json_mb,
        json_bytes / n,
    );
    println!(
        "{iters} rounds after 2 warm-up rounds, every job once per round, medians; {cores} core(s) usable{}",
        if cores == 1 {
            " (run_batch encodes on this one thread)"
        } else {
            " (run_batch encodes its files on all of them)"
        }
    );

    // the inputs of the phase-by-phase jobs, prepared once
    let events: Vec<Event<'_>> = decoded
        .iter()
        .filter_map(|d| enrich(d, CreatedAtUnit::S).ok())
        .collect();
    let grouped = groups(&events);
    let schema = LakeSchema::default()
        .plan(&stats_of(&grouped))
        .unwrap_or_default();
    let opts = EncodeOptions::default();
    let files = encode_groups(&grouped, &schema, &opts)?;
    let batches: Vec<arrow::array::RecordBatch> = files
        .iter()
        .map(|f| read_back(f))
        .collect::<anyhow::Result<_>>()?;
    // one run of the pipeline, for its counts
    let (store, sink) = (MemStore::default(), MemSink::default());
    let outcome = rt.block_on(run_batch(&records, &store, &sink, &cfg, Utc::now()));
    let c = &outcome.counts;
    if c.failed > 0 {
        bail!(
            "{} records failed in memory: {:?}",
            c.failed,
            outcome.failed.first()
        );
    }
    let settings = writer_settings();
    // the straightforward version, once, to check it did the same job
    let plain = straightforward::run(&records)?;
    if plain.events as u64 != c.written || plain.files as u64 != c.files {
        bail!(
            "the straightforward version wrote {} events in {} files, run_batch {} in {}",
            plain.events,
            plain.files,
            c.written,
            c.files
        );
    }

    let mut jobs = Rounds { jobs: Vec::new() };
    // the whole pipeline: decode, enrich, dedup, group, claim, type, encode,
    // put. A warm process: the lake schema is in the process's cache (`cfg`
    // is shared), as in a Lambda instance after its first batch; the store
    // and the sink are fresh each time, so every event is new.
    jobs.add("pipeline", || {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let out = rt.block_on(run_batch(&records, &store, &sink, &cfg, Utc::now()));
        out.counts.written as usize
    });
    // the same with the auto codec (zstd from 2 KiB chunks, snappy below)
    jobs.add("pipeline_auto", || {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let out = rt.block_on(run_batch(&records, &store, &sink, &cfg_auto, Utc::now()));
        out.counts.written as usize
    });
    // a cold process: reads the (empty) schema registry and commits version 1
    jobs.add("pipeline_cold", || {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let cold = PipelineConfig::default();
        rt.block_on(run_batch(&records, &store, &sink, &cold, Utc::now()))
            .counts
            .written as usize
    });
    // the same job done the straightforward way (serde_json::Value, Arrow
    // builders, ArrowWriter), for the ratio on this machine
    jobs.add("straightforward", || {
        straightforward::run(&records).map_or(0, |o| o.events)
    });
    // Lambda's own work before the handler: the event document to records
    jobs.add("envelope", || {
        docs.iter()
            .map(|d| load_records(d).map_or(0, |r| r.len()))
            .sum::<usize>()
    });
    // phases, through the public functions
    jobs.add("enrich", || {
        records
            .iter()
            .filter_map(|r| decode(&r.data).ok())
            .filter(|d| enrich(d, CreatedAtUnit::S).is_ok())
            .count()
    });
    jobs.add("group", || groups(&events).len());
    jobs.add("typing", || {
        let stats = stats_of(&grouped);
        stats.len() + usize::from(schema.plan(&stats).is_none())
    });
    jobs.add("encode", || {
        encode_groups(&grouped, &schema, &opts).map_or(0, |f| f.len())
    });
    if cores > 1 {
        jobs.add("encode_parallel", || {
            encode_parallel(&grouped, &schema, &opts, cores)
        });
    }
    // the parser's own speed on the same records
    jobs.add("serde_ignored", || {
        decoded
            .iter()
            .filter(|d| serde_json::from_slice::<IgnoredAny>(d).is_ok())
            .count()
    });
    jobs.add("serde_raw", || {
        decoded
            .iter()
            .filter(|d| serde_json::from_slice::<&RawValue>(d).is_ok())
            .count()
    });
    jobs.add("serde_map", || {
        decoded
            .iter()
            .filter(|d| serde_json::from_slice::<IndexMap<String, &RawValue>>(d).is_ok())
            .count()
    });
    jobs.add("serde_value", || {
        decoded
            .iter()
            .filter(|d| serde_json::from_slice::<serde_json::Value>(d).is_ok())
            .count()
    });
    // Parquet codecs through encode(), and writer settings on the same batches
    for label in CODECS {
        let o = EncodeOptions {
            compression: codec(label),
            ..EncodeOptions::default()
        };
        let (grouped, schema) = (&grouped, &schema);
        jobs.add(format!("codec:{label}"), move || {
            encode_groups(grouped, schema, &o).map_or(0, |f| f.len())
        });
    }
    for (label, w) in &settings {
        let batches = &batches;
        jobs.add(format!("writer:{label}"), move || write_all(batches, w));
    }
    let t = jobs.run(2, iters);
    let get = |k: &str| t.get(k).copied().unwrap_or_default();

    let t_pipeline = get("pipeline");
    let t_pipeline_auto = get("pipeline_auto");
    let (t_enrich, t_typing, t_encode) = (get("enrich"), get("typing"), get("encode"));
    // the parquet crate's ArrowWriter with our old settings, on the same data
    let t_arrow_writer = get(&format!("writer:{}", settings[1].0));
    let t_serial = t_enrich + t_typing + t_encode;
    println!();
    println!(
        "run_batch (MemStore + MemSink): {:>8.2} ms  {:>9.0} events/s  {:>6.1} MB/s of event JSON",
        ms(t_pipeline),
        rate(n, t_pipeline),
        json_mb / t_pipeline.as_secs_f64()
    );
    println!(
        "  with --compression auto:        {:>8.2} ms  {:>9.0} events/s  {:>6.1} MB/s of event JSON",
        ms(t_pipeline_auto),
        rate(n, t_pipeline_auto),
        json_mb / t_pipeline_auto.as_secs_f64()
    );
    println!(
        "  {} written, {} duplicates, {} rejected; {} files, {:.2} MB of Parquet",
        c.written,
        c.duplicates,
        c.rejected,
        c.files,
        c.bytes as f64 / 1e6
    );
    let t_plain = get("straightforward");
    println!(
        "  straightforward (serde_json::Value, Arrow builders, ArrowWriter zstd(1)): {:.2} ms  {:.0} events/s  {:.2} MB: run_batch is {:.1}x as fast ({:.1}x with auto)",
        ms(t_plain),
        rate(n, t_plain),
        plain.bytes as f64 / 1e6,
        t_plain.as_secs_f64() / t_pipeline.as_secs_f64(),
        t_plain.as_secs_f64() / t_pipeline_auto.as_secs_f64(),
    );
    let line = |what: &str, d: Duration, of: Duration| {
        println!(
            "  {what:<52} {:>8.2} ms  {:>5.1} %",
            ms(d),
            100.0 * d.as_secs_f64() / of.as_secs_f64()
        )
    };
    println!("phases, one thread (share of their sum):");
    line("decode + enrich", t_enrich, t_serial);
    line("typing (kinds, stats, schema check)", t_typing, t_serial);
    line(
        &format!(
            "encode ({} files, one thread; parses the values)",
            grouped.len()
        ),
        t_encode,
        t_serial,
    );
    println!(
        "  sum {:.2} ms; run_batch {:.2} ms{}",
        ms(t_serial),
        ms(t_pipeline),
        if cores > 1 {
            format!(
                " (encodes on {cores} threads: encode_groups on {cores} threads takes {:.2} ms)",
                ms(get("encode_parallel"))
            )
        } else {
            String::new()
        }
    );
    println!(
        "  grouping by partition {:.2} ms; a cold process's first batch (reads the schema registry, commits version 1) {:.2} ms",
        ms(get("group")),
        ms(get("pipeline_cold"))
    );
    println!(
        "  before the handler: event document -> records (serde + base64) {:>8.2} ms ({:.0} events/s)",
        ms(get("envelope")),
        rate(n, get("envelope"))
    );
    println!("serde_json on the same (decoded) records:");
    for (what, k) in [
        ("IgnoredAny (validate only)", "serde_ignored"),
        ("&RawValue (validate, borrow)", "serde_raw"),
        ("IndexMap<String, &RawValue> (enrich's parse)", "serde_map"),
        ("serde_json::Value (full tree)", "serde_value"),
    ] {
        let d = get(k);
        println!(
            "  {what:<46} {:>8.2} ms  {:>9.0} events/s  {:>6.1} MB/s",
            ms(d),
            rate(n, d),
            json_mb / d.as_secs_f64()
        );
    }
    println!(
        "  run_batch / IgnoredAny time: {:.1}x",
        t_pipeline.as_secs_f64() / get("serde_ignored").as_secs_f64()
    );

    println!(
        "Parquet codecs on this batch's {} files (encode(), whole, one thread):",
        grouped.len()
    );
    let mut codecs = Vec::new();
    for label in CODECS {
        let o = EncodeOptions {
            compression: codec(label),
            ..EncodeOptions::default()
        };
        let bytes: usize = encode_groups(&grouped, &schema, &o)?
            .iter()
            .map(Vec::len)
            .sum();
        let d = get(&format!("codec:{label}"));
        println!(
            "  {label:<18} {:>8.2} ms  {:>7.2} MB  ({:.1} % of the JSON)",
            ms(d),
            bytes as f64 / 1e6,
            100.0 * bytes as f64 / json_bytes as f64
        );
        codecs.push(serde_json::json!({"codec": label, "ms": ms(d), "bytes": bytes}));
    }
    println!(
        "The parquet crate's ArrowWriter on the same data (Arrow batches read back from our files; writing only):"
    );
    let mut writer_results = Vec::new();
    for (label, w) in &settings {
        let bytes = write_all(&batches, w);
        let d = get(&format!("writer:{label}"));
        println!(
            "  {label:<70} {:>8.2} ms  {:>7.2} MB",
            ms(d),
            bytes as f64 / 1e6
        );
        writer_results
            .push(serde_json::json!({"setting": label.trim(), "ms": ms(d), "bytes": bytes}));
    }

    let result = serde_json::json!({
        "mode": "batch",
        "file": path.display().to_string(),
        "records": n,
        "documents": docs.len(),
        "document_bytes": doc_bytes,
        "json_bytes": json_bytes,
        "groups": grouped.len(),
        "iterations": iters,
        "cores": cores,
        "pipeline_ms": ms(t_pipeline),
        "events_per_s": rate(n, t_pipeline),
        "pipeline_auto_ms": ms(t_pipeline_auto),
        "events_per_s_auto": rate(n, t_pipeline_auto),
        "json_mb_per_s": json_mb / t_pipeline.as_secs_f64(),
        "cold_pipeline_ms": ms(get("pipeline_cold")),
        "straightforward_ms": ms(t_plain),
        "straightforward_bytes": plain.bytes,
        "events_per_s_straightforward": rate(n, t_plain),
        "envelope_ms": ms(get("envelope")),
        "decode_enrich_ms": ms(t_enrich),
        "typing_ms": ms(t_typing),
        "encode_ms": ms(t_encode),
        "encode_parallel_ms": ms(get("encode_parallel")),
        "arrow_writer_ms": ms(t_arrow_writer),
        "group_ms": ms(get("group")),
        "parquet_bytes": c.bytes,
        "serde_ignored_any_ms": ms(get("serde_ignored")),
        "serde_raw_value_ms": ms(get("serde_raw")),
        "serde_indexmap_raw_ms": ms(get("serde_map")),
        "serde_value_ms": ms(get("serde_value")),
        "codecs": codecs,
        "writer_settings": writer_results,
    });
    println!("RESULT {result}");
    Ok(())
}

fn read_back(file: &[u8]) -> anyhow::Result<arrow::array::RecordBatch> {
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(file))?.build()?;
    let parts: Vec<_> = reader.collect::<Result<_, _>>()?;
    let schema = parts.first().context("an empty Parquet file")?.schema();
    Ok(arrow::compute::concat_batches(&schema, &parts)?)
}

/// Which columns get a dictionary.
#[derive(Clone, Copy)]
enum Dictionary {
    All,
    /// Only `event_name` (few distinct values per file); the others are
    /// mostly unique per row in these files.
    EventNameOnly,
}

/// Parquet writer settings to compare.
#[derive(Clone, Copy)]
struct Writer {
    /// Codec of string columns.
    strings: Compression,
    /// Codec of numeric and boolean columns.
    numbers: Compression,
    dictionary: Dictionary,
    stats: EnabledStatistics,
    /// String columns with fewer value bytes than this in the file are not
    /// compressed (0: every string column is).
    min_compressed_bytes: usize,
}

impl Writer {
    /// What `encode()` uses (src/core/encode.rs): the codec on string columns
    /// only, a dictionary for `event_name` only, chunk statistics.
    fn current(codec: Compression) -> Writer {
        Writer {
            strings: codec,
            numbers: Compression::UNCOMPRESSED,
            dictionary: Dictionary::EventNameOnly,
            stats: EnabledStatistics::Chunk,
            min_compressed_bytes: 0,
        }
    }

    /// Parquet's defaults with one codec on every column.
    fn all(codec: Compression) -> Writer {
        Writer {
            strings: codec,
            numbers: codec,
            dictionary: Dictionary::All,
            stats: EnabledStatistics::Page,
            min_compressed_bytes: 0,
        }
    }

    fn props(&self, batch: &arrow::array::RecordBatch) -> WriterProperties {
        use arrow::array::AsArray as _;
        let mut b = WriterProperties::builder()
            .set_compression(self.strings)
            .set_statistics_enabled(self.stats)
            .set_dictionary_enabled(matches!(self.dictionary, Dictionary::All));
        let schema = batch.schema();
        for (f, col) in schema.fields().iter().zip(batch.columns()) {
            let path = ColumnPath::from(f.name().as_str());
            if !matches!(f.data_type(), arrow::datatypes::DataType::Utf8) {
                b = b.set_column_compression(path.clone(), self.numbers);
            } else if col.as_string::<i32>().values().len() < self.min_compressed_bytes {
                b = b.set_column_compression(path.clone(), Compression::UNCOMPRESSED);
            }
            if matches!(self.dictionary, Dictionary::EventNameOnly) {
                b = b.set_column_dictionary_enabled(path, f.name() == "event_name");
            }
        }
        b.build()
    }
}

/// Writes each batch as its own Parquet file in memory; the total size.
fn write_all(batches: &[arrow::array::RecordBatch], w: &Writer) -> usize {
    batches
        .iter()
        .map(|b| {
            let mut out = Vec::with_capacity(64 * 1024);
            let props = w.props(b);
            let Ok(mut w) = ArrowWriter::try_new(&mut out, b.schema(), Some(props)) else {
                return 0;
            };
            if w.write(b).is_err() || w.close().is_err() {
                return 0;
            }
            out.len()
        })
        .sum()
}

fn once(args: &[String]) -> anyhow::Result<()> {
    let path = args.first().context("usage: pipeline once FILE")?;
    let before = peak_rss_kib();
    let t = Instant::now();
    let doc = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let records = load_records(&doc)?;
    drop(doc);
    let (store, sink) = (MemStore::default(), MemSink::default());
    let rt = single_thread_runtime()?;
    let out = rt.block_on(run_batch(
        &records,
        &store,
        &sink,
        &PipelineConfig::default(),
        Utc::now(),
    ));
    let elapsed = t.elapsed();
    let peak = peak_rss_kib();
    println!(
        "{}: {} records, {} written, {} files; {:.1} ms; peak RSS {} KiB (at start {} KiB)",
        path,
        records.len(),
        out.counts.written,
        out.counts.files,
        ms(elapsed),
        peak.map_or("?".into(), |k| k.to_string()),
        before.map_or("?".into(), |k| k.to_string()),
    );
    let result = serde_json::json!({
        "mode": "once",
        "records": records.len(),
        "written": out.counts.written,
        "files": out.counts.files,
        "ms": ms(elapsed),
        "peak_rss_kib": peak,
        "start_rss_kib": before,
    });
    println!("RESULT {result}");
    Ok(())
}

fn ingest_mem(args: &[String]) -> anyhow::Result<()> {
    const USAGE: &str =
        "usage: pipeline ingest --lake DIR [--store mem|redb] [--sink fs|mem] INPUT...";
    let mut lake = None;
    let (mut store_kind, mut sink_kind) = ("mem".to_string(), "fs".to_string());
    let mut inputs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--lake" => lake = Some(PathBuf::from(it.next().context("--lake needs a folder")?)),
            "--store" => store_kind = it.next().context("--store needs mem or redb")?.clone(),
            "--sink" => sink_kind = it.next().context("--sink needs fs or mem")?.clone(),
            _ => inputs.push(PathBuf::from(a)),
        }
    }
    let lake = lake.context(USAGE)?;
    if inputs.is_empty() {
        bail!(USAGE);
    }
    // the CLI's runtime and batch limits; only the store and sink may differ
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let run = |rt: &tokio::runtime::Runtime| -> anyhow::Result<kinesis_lake::ingest::Summary> {
        let files = kinesis_lake::local::input::expand(&inputs, Some(&lake))?;
        let progress: kinesis_lake::local::input::OnRead = std::sync::Arc::new(|_| {});
        let (cfg, limits) = (PipelineConfig::default(), BatchLimits::default());
        let summary = match (store_kind.as_str(), sink_kind.as_str()) {
            ("mem", "fs") => rt.block_on(ingest(
                &files,
                &MemStore::default(),
                &FsSink::new(&lake),
                &cfg,
                &limits,
                progress.clone(),
            )),
            ("mem", "mem") => rt.block_on(ingest(
                &files,
                &MemStore::default(),
                &MemSink::default(),
                &cfg,
                &limits,
                progress.clone(),
            )),
            ("redb", "fs") => {
                let store = RedbStore::open(&redb_store::default_path(&lake))?;
                rt.block_on(ingest(
                    &files,
                    &store,
                    &FsSink::new(&lake),
                    &cfg,
                    &limits,
                    progress.clone(),
                ))
            }
            ("redb", "mem") => {
                let store = RedbStore::open(&redb_store::default_path(&lake))?;
                rt.block_on(ingest(
                    &files,
                    &store,
                    &MemSink::default(),
                    &cfg,
                    &limits,
                    progress.clone(),
                ))
            }
            _ => bail!(USAGE),
        }?;
        Ok(summary)
    };
    let summary = run(&rt)?;
    let c = &summary.counts;
    println!(
        "store {store_kind}, sink {sink_kind}: records {} written {} duplicates {} rejected {} failed {} files {}; {:.2} s, {:.0} records/s",
        c.records,
        c.written,
        c.duplicates,
        c.rejected,
        c.failed,
        c.files,
        summary.elapsed_s,
        summary.records_per_s
    );
    let result = serde_json::json!({
        "mode": "ingest",
        "store": store_kind,
        "sink": sink_kind,
        "summary": summary,
        "peak_rss_kib": peak_rss_kib(),
    });
    println!("RESULT {result}");
    if c.failed > 0 {
        bail!("{} records failed", c.failed);
    }
    Ok(())
}

fn run_loop(args: &[String]) -> anyhow::Result<()> {
    let (pos, iters) = parse_iters(args)?;
    if pos.is_empty() {
        bail!("usage: pipeline loop FILE... [--iters N]");
    }
    // several documents make one batch of all their records
    let mut records = Vec::new();
    for path in &pos {
        let doc = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        records.extend(load_records(&doc)?);
    }
    let rt = single_thread_runtime()?;
    let cfg = PipelineConfig::default();
    let t = Instant::now();
    for _ in 0..iters {
        let (store, sink) = (MemStore::default(), MemSink::default());
        black_box(rt.block_on(run_batch(&records, &store, &sink, &cfg, Utc::now())));
    }
    let per = t.elapsed() / iters as u32;
    println!("{} iterations, {:.2} ms each", iters, ms(per));
    let result = serde_json::json!({"mode": "loop", "iterations": iters, "ms": ms(per)});
    println!("RESULT {result}");
    Ok(())
}

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
use kinesis_lake::core::publish::{PublishConfig, Published, Which, publish};
use kinesis_lake::core::schema::{BatchStats, LakeSchema, table_name};
use kinesis_lake::core::sink::ObjectSink as _;
use kinesis_lake::core::staging::{
    Header, MAGIC, Section, Staged, encode_staging, read_header, section_bytes, section_events,
};
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
        "limits" => limits(rest),
        "-h" | "--help" | "help" => {
            println!(
                "usage: pipeline [batch [FILE...] [--iters N] | once FILE | ingest --lake DIR [--store mem|redb] [--sink fs|mem] [--window SECONDS] INPUT... | limits NDJSON_FILE [--iters N] | loop FILE... [--iters N]]"
            );
            Ok(())
        }
        other => {
            bail!("unknown mode {other:?}; modes: batch, once, ingest, limits, loop (see --help)")
        }
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

/// The batch's valid events as the pipeline stages them: by partition (in
/// partition order), in batch order within each, repeats within the batch
/// dropped; each with its record's owner.
fn staged_parts<'a>(
    decoded: &'a [Vec<u8>],
    owners: &'a [String],
) -> Vec<(String, Vec<Staged<'a>>)> {
    let events: Vec<(usize, Event<'a>)> = decoded
        .iter()
        .enumerate()
        .filter_map(|(i, d)| enrich(d, Default::default()).ok().map(|e| (i, e)))
        .collect();
    let mut seen: HashSet<&str> = HashSet::with_capacity(events.len());
    let mut by: BTreeMap<&PartitionKey, Vec<Staged<'a>>> = BTreeMap::new();
    for (i, e) in &events {
        if seen.insert(&e.event_uuid) {
            by.entry(&e.partition).or_default().push(Staged {
                owner: &owners[*i],
                json: e.json,
            });
        }
    }
    by.into_iter().map(|(p, s)| (p.path(), s)).collect()
}

/// How the sections of a staging object are compressed: the shipped format
/// (snappy) and the alternatives it was chosen over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SectionCodec {
    /// `core::staging::encode_staging`, as shipped.
    Snappy,
    Uncompressed,
    Zstd1,
}

impl SectionCodec {
    const ALL: [SectionCodec; 3] = [
        SectionCodec::Snappy,
        SectionCodec::Uncompressed,
        SectionCodec::Zstd1,
    ];

    fn label(self) -> &'static str {
        match self {
            SectionCodec::Snappy => "snappy [shipped]",
            SectionCodec::Uncompressed => "uncompressed",
            SectionCodec::Zstd1 => "zstd(1)",
        }
    }
}

/// A staging object and, per section, the length of its framed events
/// before compression.
struct StagingObject {
    bytes: Vec<u8>,
    raw_lens: Vec<usize>,
    raw_bytes: usize,
}

/// Builds a staging object: the shipped `encode_staging` for snappy; for
/// the alternatives the same framing and header with another codec (a
/// local copy of the format, for the comparison only).
fn staging_object(
    parts: &[(String, Vec<Staged<'_>>)],
    codec: SectionCodec,
) -> anyhow::Result<StagingObject> {
    let raw_lens: Vec<usize> = parts
        .iter()
        .map(|(_, events)| {
            events
                .iter()
                .map(|e| 8 + e.owner.len() + e.json.len())
                .sum()
        })
        .collect();
    let raw_bytes = raw_lens.iter().sum();
    if codec == SectionCodec::Snappy {
        let bytes = encode_staging(
            "20240317T101500Z",
            "2024-03-17T10:15:31.000Z",
            Default::default(),
            parts,
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        return Ok(StagingObject {
            bytes,
            raw_lens,
            raw_bytes,
        });
    }
    let mut zstd = zstd::bulk::Compressor::new(1)?;
    let mut raw = Vec::new();
    let mut bodies = Vec::with_capacity(parts.len());
    let mut sections = Vec::with_capacity(parts.len());
    for (partition, events) in parts {
        raw.clear();
        for e in events {
            for b in [e.owner.as_bytes(), e.json] {
                raw.extend_from_slice(&(b.len() as u32).to_le_bytes());
                raw.extend_from_slice(b);
            }
        }
        let body = match codec {
            SectionCodec::Zstd1 => zstd.compress(&raw)?,
            _ => raw.clone(),
        };
        sections.push(Section {
            partition: partition.clone(),
            rows: events.len() as u64,
            offset: 0,
            len: body.len() as u64,
        });
        bodies.push(body);
    }
    let mut header = Header {
        window: "20240317T101500Z".into(),
        staged_at: "2024-03-17T10:15:31.000Z".into(),
        rows: parts.iter().map(|(_, e)| e.len() as u64).sum(),
        sections,
        created_at_unit: Default::default(),
    };
    let mut header_json = Vec::new();
    for _ in 0..4 {
        let mut at = (MAGIC.len() + 4 + header_json.len()) as u64;
        for s in &mut header.sections {
            s.offset = at;
            at += s.len;
        }
        let next = serde_json::to_vec(&header)?;
        let settled = next.len() == header_json.len();
        header_json = next;
        if settled {
            break;
        }
    }
    let mut bytes = Vec::with_capacity(
        MAGIC.len() + 4 + header_json.len() + bodies.iter().map(Vec::len).sum::<usize>(),
    );
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&header_json);
    for b in &bodies {
        bytes.extend_from_slice(b);
    }
    Ok(StagingObject {
        bytes,
        raw_lens,
        raw_bytes,
    })
}

/// Reads every event of a staging object back (header, each section
/// decompressed, its events framed out); their number.
fn read_staging(obj: &StagingObject, codec: SectionCodec) -> anyhow::Result<usize> {
    let header = read_header("bench", &obj.bytes)?;
    let mut n = 0;
    for (s, &raw_len) in header.sections.iter().zip(&obj.raw_lens) {
        let body = &obj.bytes[s.offset as usize..(s.offset + s.len) as usize];
        let bytes: std::borrow::Cow<'_, [u8]> = match codec {
            SectionCodec::Snappy => section_bytes("bench", &obj.bytes, s)?.into(),
            SectionCodec::Uncompressed => body.into(),
            SectionCodec::Zstd1 => zstd::bulk::decompress(body, raw_len)?.into(),
        };
        n += section_events("bench", s, &bytes)?.len();
    }
    Ok(n)
}

/// Timed jobs, run round-robin: one run of every job per round, so that the
/// machine's drift (and the allocator warming up) hit all of them alike.
struct Rounds<'a> {
    jobs: Vec<(String, Box<dyn FnMut() -> Duration + 'a>)>,
}

impl<'a> Rounds<'a> {
    /// A job timed whole.
    fn add(&mut self, name: impl Into<String>, mut f: impl FnMut() -> usize + 'a) {
        self.jobs.push((
            name.into(),
            Box::new(move || {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            }),
        ));
    }

    /// A job that times only part of its work and returns that time (its
    /// set-up, such as filling a fresh sink, is left out).
    fn add_timed(&mut self, name: impl Into<String>, f: impl FnMut() -> Duration + 'a) {
        self.jobs.push((name.into(), Box::new(f)));
    }

    /// `warmup` unmeasured rounds, then `iters` measured ones; the median
    /// time of each job.
    fn run(mut self, warmup: usize, iters: usize) -> HashMap<String, Duration> {
        let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(iters); self.jobs.len()];
        for round in 0..warmup + iters {
            for (k, (_, f)) in self.jobs.iter_mut().enumerate() {
                let d = f();
                if round >= warmup {
                    times[k].push(d);
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
    // each document's records in `records`, to stage them one batch each
    let mut doc_ranges = Vec::with_capacity(docs.len());
    for doc in &docs {
        let start = records.len();
        records.extend(load_records(doc)?);
        doc_ranges.push(start..records.len());
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

    // the staged write path (the CLI's and Lambda's default): the batch's
    // accepted events as ONE staging object, published later
    let cfg_staged = PipelineConfig {
        window_secs: 300,
        ..PipelineConfig::default()
    };
    let staged_counts = {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let o = rt.block_on(run_batch(&records, &store, &sink, &cfg_staged, Utc::now()));
        if o.counts.failed > 0 || o.counts.staging_objects != 1 || o.counts.written != c.written {
            bail!(
                "the staged pipeline wrote {} events in {} staging objects ({} failed: {:?}), the direct one {}",
                o.counts.written,
                o.counts.staging_objects,
                o.counts.failed,
                o.failed.first(),
                c.written
            );
        }
        o.counts
    };
    // the staging object alone, from the batch's events grouped as the
    // pipeline groups them: the shipped format and the alternatives
    let owners: Vec<String> = records
        .iter()
        .map(|r| {
            let mut s = String::new();
            r.origin.write_owner(&mut s);
            s
        })
        .collect();
    let parts = staged_parts(&decoded, &owners);
    let staged_rows: usize = parts.iter().map(|(_, e)| e.len()).sum();
    let staging_objects: Vec<(SectionCodec, StagingObject)> = SectionCodec::ALL
        .iter()
        .map(|&k| Ok((k, staging_object(&parts, k)?)))
        .collect::<anyhow::Result<_>>()?;
    for (k, obj) in &staging_objects {
        if read_staging(obj, *k)? != staged_rows {
            bail!("the {} staging object does not read back", k.label());
        }
    }
    // the publisher: every document staged as its own batch (one staging
    // object each, as Lambda invocations stage), then one publication of the
    // window, on a fresh copy of that staged lake every round
    let staged_lake: Vec<(String, bytes::Bytes)> = {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let at = Utc::now();
        for range in &doc_ranges {
            let o = rt.block_on(run_batch(
                &records[range.clone()],
                &store,
                &sink,
                &cfg_staged,
                at,
            ));
            if o.counts.failed > 0 {
                bail!("staging failed: {:?}", o.failed.first());
            }
        }
        sink.objects()
    };
    let staging_in: Vec<usize> = staged_lake
        .iter()
        .filter(|(k, _)| k.ends_with(".kls"))
        .map(|(_, b)| b.len())
        .collect();
    let pub_cfg = PublishConfig {
        window_secs: 300,
        ..PublishConfig::default()
    };
    let fill = |objects: &[(String, bytes::Bytes)]| -> anyhow::Result<MemSink> {
        let sink = MemSink::default();
        for (k, b) in objects {
            rt.block_on(sink.put(k, b.clone()))?;
        }
        Ok(sink)
    };
    // one publication for its counts (and a warm schema cache, as in a
    // publisher that has run before)
    let published: Published = rt
        .block_on(publish(
            &fill(&staged_lake)?,
            &pub_cfg,
            Which::Everything,
            Utc::now(),
        ))
        .map_err(|e| anyhow::anyhow!("publishing: {e}"))?;
    if published.events != c.written && docs.len() == 1 {
        bail!(
            "the publisher wrote {} events, the direct pipeline {}",
            published.events,
            c.written
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
    // the same, staged: one staging object instead of one file per partition
    jobs.add("pipeline_staged", || {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let out = rt.block_on(run_batch(&records, &store, &sink, &cfg_staged, Utc::now()));
        out.counts.written as usize
    });
    // the staging object alone, in each section codec, and read back
    for (k, _) in &staging_objects {
        let (k, parts) = (*k, &parts);
        jobs.add(format!("staging:{}", k.label()), move || {
            staging_object(parts, k).map_or(0, |o| o.bytes.len())
        });
    }
    for (k, obj) in &staging_objects {
        let k = *k;
        jobs.add(format!("staging_read:{}", k.label()), move || {
            read_staging(obj, k).unwrap_or(0)
        });
    }
    // one publication of the staged window; filling the fresh sink is not timed
    jobs.add_timed("publish", || {
        let Ok(sink) = fill(&staged_lake) else {
            return Duration::ZERO;
        };
        let t = Instant::now();
        let p = rt.block_on(publish(&sink, &pub_cfg, Which::Everything, Utc::now()));
        let d = t.elapsed();
        black_box(p.map(|p| p.events).unwrap_or(0));
        d
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
    let t_staged = get("pipeline_staged");
    println!(
        "run_batch staged (window_secs 300): {:>8.2} ms  {:>9.0} events/s  {:>6.1} MB/s of event JSON: {:.2}x the direct path, {:.0} % of the 250,000 events/s target",
        ms(t_staged),
        rate(n, t_staged),
        json_mb / t_staged.as_secs_f64(),
        t_pipeline.as_secs_f64() / t_staged.as_secs_f64(),
        100.0 * rate(n, t_staged) / 250_000.0
    );
    println!(
        "  {} written into {} staging object",
        staged_counts.written, staged_counts.staging_objects
    );
    println!(
        "the staging object alone ({} events in {} sections, {:.2} MB of framed JSON), one thread:",
        staged_rows,
        parts.len(),
        staging_objects.first().map_or(0, |(_, o)| o.raw_bytes) as f64 / 1e6
    );
    let mut staging_results = Vec::new();
    for (k, obj) in &staging_objects {
        let (d, r) = (
            get(&format!("staging:{}", k.label())),
            get(&format!("staging_read:{}", k.label())),
        );
        println!(
            "  {:<22} build {:>7.2} ms  {:>7.2} MB ({:>5.1} % of the JSON)  read back {:>6.2} ms",
            k.label(),
            ms(d),
            obj.bytes.len() as f64 / 1e6,
            100.0 * obj.bytes.len() as f64 / json_bytes as f64,
            ms(r)
        );
        staging_results.push(serde_json::json!({
            "codec": k.label(), "build_ms": ms(d), "read_ms": ms(r), "bytes": obj.bytes.len(),
        }));
    }
    let t_publish = get("publish");
    let staging_total: usize = staging_in.iter().sum();
    let json_published: usize = json_bytes;
    println!(
        "the publisher ({} thread(s)): {} staging objects ({:.2} MB) -> {} events in {} files ({:.2} MB of Parquet): {:.2} ms",
        cores,
        staging_in.len(),
        staging_total as f64 / 1e6,
        published.events,
        published.files,
        published.bytes as f64 / 1e6,
        ms(t_publish)
    );
    println!(
        "  {:.0} events/s; {:.1} MB/s of staging in, {:.1} MB/s of Parquet out, {:.1} MB/s of event JSON{}",
        rate(published.events as usize, t_publish),
        staging_total as f64 / 1e6 / t_publish.as_secs_f64(),
        published.bytes as f64 / 1e6 / t_publish.as_secs_f64(),
        json_published as f64 / 1e6 / t_publish.as_secs_f64(),
        if cores == 1 { " (one core)" } else { "" }
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

    let staged_result = serde_json::json!({
        "staged_pipeline_ms": ms(t_staged),
        "events_per_s_staged": rate(n, t_staged),
        "staging": staging_results,
        "staging_rows": staged_rows,
        "publish": {
            "ms": ms(t_publish),
            "staging_objects": staging_in.len(),
            "staging_bytes": staging_total,
            "events": published.events,
            "files": published.files,
            "parquet_bytes": published.bytes,
            "events_per_s": rate(published.events as usize, t_publish),
            "staging_mb_per_s": staging_total as f64 / 1e6 / t_publish.as_secs_f64(),
            "parquet_mb_per_s": published.bytes as f64 / 1e6 / t_publish.as_secs_f64(),
            "json_mb_per_s": json_published as f64 / 1e6 / t_publish.as_secs_f64(),
        },
    });
    let mut result = serde_json::json!({
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
    if let (Some(r), serde_json::Value::Object(staged)) = (result.as_object_mut(), staged_result) {
        r.extend(staged);
    }
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
    const USAGE: &str = "usage: pipeline ingest --lake DIR [--store mem|redb] [--sink fs|mem] [--window SECONDS] INPUT...";
    let mut lake = None;
    let (mut store_kind, mut sink_kind) = ("mem".to_string(), "fs".to_string());
    let mut window = kinesis_lake::core::window::DEFAULT_WINDOW_SECS;
    let mut inputs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--window" => {
                let v = it.next().context("--window needs a number of seconds")?;
                window = v.parse().with_context(|| format!("--window {v:?}"))?;
            }
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
        let cfg = PipelineConfig {
            window_secs: window,
            ..PipelineConfig::default()
        };
        let limits = BatchLimits::default();
        let summary = match (store_kind.as_str(), sink_kind.as_str()) {
            ("mem", "fs") => rt.block_on(ingest_publish(
                &files,
                &MemStore::default(),
                &FsSink::new(&lake),
                &cfg,
                &limits,
                progress.clone(),
            )),
            ("mem", "mem") => rt.block_on(ingest_publish(
                &files,
                &MemStore::default(),
                &MemSink::default(),
                &cfg,
                &limits,
                progress.clone(),
            )),
            ("redb", "fs") => {
                let store = RedbStore::open(&redb_store::default_path(&lake))?;
                rt.block_on(ingest_publish(
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
                rt.block_on(ingest_publish(
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

/// What `kinesis-lake ingest` does on a folder lake: ingest, then (with a
/// window) publish everything staged, removing the staging objects.
async fn ingest_publish<
    S: kinesis_lake::core::dedup::DedupStore,
    O: kinesis_lake::core::sink::ObjectSink,
>(
    files: &[kinesis_lake::local::input::InputFile],
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    limits: &BatchLimits,
    progress: kinesis_lake::local::input::OnRead,
) -> anyhow::Result<kinesis_lake::ingest::Summary> {
    let mut summary = ingest(files, store, sink, cfg, limits, progress).await?;
    if cfg.window_secs > 0 {
        let p = PublishConfig {
            window_secs: cfg.window_secs,
            schema_cache: cfg.schema_cache.clone(),
            remove_staged: true,
            ..PublishConfig::default()
        };
        summary.published = Some(
            publish(sink, &p, Which::Everything, Utc::now())
                .await
                .map_err(|e| anyhow::anyhow!("publishing: {e}"))?,
        );
    }
    Ok(summary)
}

/// The phases of the CLI's first batch of an NDJSON file, one at a time, and
/// how far each is from its limit: the JSON parser alone on the same lines,
/// and the claims as a hash set of the same uuids, beside the claims in
/// `MemStore` and in the embedded store (a fresh redb database each round).
fn limits(args: &[String]) -> anyhow::Result<()> {
    use kinesis_lake::core::dedup::{Claim, DedupStore as _};
    let (pos, iters) = parse_iters(args)?;
    let path = pos
        .first()
        .context("usage: pipeline limits NDJSON_FILE [--iters N]")?;
    let body = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    // the CLI's first batch: lines until the batch limits
    let batch_limits = BatchLimits::default();
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut bytes = 0usize;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if bytes + line.len() > batch_limits.max_bytes || lines.len() >= batch_limits.max_records {
            break;
        }
        bytes += line.len();
        lines.push(line);
    }
    let n = lines.len();
    let mb = bytes as f64 / 1e6;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let events: Vec<Event<'_>> = lines
        .iter()
        .filter_map(|l| enrich(l, Default::default()).ok())
        .collect();
    let grouped = groups(&events);
    let schema = LakeSchema::default()
        .plan(&stats_of(&grouped))
        .unwrap_or_default();
    let opts = EncodeOptions::default();
    let uuids: Vec<&str> = grouped
        .iter()
        .flatten()
        .map(|e| e.event_uuid.as_ref())
        .collect();
    let owners: Vec<String> = (1..=n).map(|i| format!("file:{path}#{i}")).collect();
    let key = "event_type=x/event_subtype=y/event_date=2024-03-17/part.parquet";
    let claims: Vec<Claim<'_>> = uuids
        .iter()
        .zip(&owners)
        .map(|(u, o)| Claim {
            event_uuid: u,
            owner: o,
            object_key: key,
        })
        .collect();
    let rt = single_thread_runtime()?;
    println!(
        "{path}: the CLI's first batch: {n} lines, {mb:.1} MB of JSON; {} events after dedup in {} partitions; {iters} rounds, medians; {cores} core(s)",
        uuids.len(),
        grouped.len()
    );
    let on_threads = |threads: usize, f: &(dyn Fn(&[u8]) -> bool + Sync)| -> usize {
        let chunk = n.div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            let hs: Vec<_> = lines
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().filter(|l| f(l)).count()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        })
    };
    let parse = |l: &[u8]| serde_json::from_slice::<IgnoredAny>(l).is_ok();
    let decode_enrich = |l: &[u8]| decode(l).is_ok_and(|d| enrich(&d, Default::default()).is_ok());
    let mut jobs = Rounds { jobs: Vec::new() };
    jobs.add("serde_ignored", || {
        lines.iter().filter(|l| parse(l)).count()
    });
    jobs.add("decode_enrich", || {
        lines.iter().filter(|l| decode_enrich(l)).count()
    });
    if cores > 1 {
        jobs.add("serde_ignored_parallel", || on_threads(cores, &parse));
        jobs.add("decode_enrich_parallel", || {
            on_threads(cores, &decode_enrich)
        });
    }
    jobs.add("claim_hashset_str", || {
        let mut set: foldhash::HashSet<&str> = foldhash::HashSetExt::with_capacity(uuids.len());
        uuids.iter().filter(|u| set.insert(u)).count()
    });
    jobs.add("claim_hashset_16_bytes", || {
        let mut set: foldhash::HashSet<u128> = foldhash::HashSetExt::with_capacity(uuids.len());
        uuids
            .iter()
            .filter_map(|u| uuid::Uuid::try_parse(u).ok())
            .filter(|u| set.insert(u.as_u128()))
            .count()
    });
    jobs.add("claim_memstore", || {
        let store = MemStore::default();
        rt.block_on(store.claim(&claims, 1_800_000_000)).len()
    });
    jobs.add_timed("claim_redb", || {
        let Ok(dir) = tempfile::tempdir() else {
            return Duration::ZERO;
        };
        let Ok(store) = RedbStore::open(&dir.path().join("dedup.redb")) else {
            return Duration::ZERO;
        };
        let t = Instant::now();
        black_box(rt.block_on(store.claim(&claims, 1_800_000_000)).len());
        t.elapsed()
    });
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
    let t = jobs.run(1, iters);
    let get = |k: &str| t.get(k).copied().unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (what, k) in [
        (
            "serde_json to IgnoredAny, each line (the parser alone)",
            "serde_ignored",
        ),
        ("decode + validate + enrich, each line", "decode_enrich"),
        (
            "  the same parser alone, on every core",
            "serde_ignored_parallel",
        ),
        (
            "  decode + enrich on every core (as run_batch)",
            "decode_enrich_parallel",
        ),
        (
            "claims as a foldhash HashSet<&str> of the uuids",
            "claim_hashset_str",
        ),
        (
            "  parsed to 16 bytes, HashSet<u128>",
            "claim_hashset_16_bytes",
        ),
        (
            "claims in MemStore (the DedupStore in memory)",
            "claim_memstore",
        ),
        (
            "claims in the embedded store (fresh redb, one commit)",
            "claim_redb",
        ),
        ("typing (kinds, stats, schema plan)", "typing"),
        ("encode, one thread", "encode"),
        ("encode on every core", "encode_parallel"),
    ] {
        let Some(d) = t.get(k).copied() else { continue };
        println!(
            "  {what:<56} {:>8.1} ms  {:>7.1} MB/s of JSON  {:>10.0} per s",
            ms(d),
            mb / d.as_secs_f64(),
            if k.starts_with("claim") {
                uuids.len()
            } else {
                n
            } as f64
                / d.as_secs_f64()
        );
        out.insert(format!("{k}_ms"), serde_json::json!(ms(d)));
    }
    println!(
        "  decode + enrich / parser alone: {:.2}x; redb claims / hash set: {:.0}x",
        get("decode_enrich").as_secs_f64() / get("serde_ignored").as_secs_f64(),
        get("claim_redb").as_secs_f64() / get("claim_hashset_str").as_secs_f64()
    );
    let result = serde_json::json!({
        "mode": "limits", "lines": n, "json_bytes": bytes, "events": uuids.len(),
        "partitions": grouped.len(), "iterations": iters, "cores": cores, "ms": out,
    });
    println!("RESULT {result}");
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

//! The bill, measured: the Lambda path (consumer invocations, then the
//! scheduled publisher) against the real servers (SeaweedFS, DynamoDB Local),
//! with every S3 request counted by kind and every DynamoDB write counted, for
//! each dedup mode and publication window. `docs/DEPLOY.md`'s monthly table
//! and the README's table of modes are computed from these counts
//! (`scripts/cost_table.py`).
//!
//! Time is simulated: one consumer invocation every 3600/303 s (the rate of
//! 1,000,000 events/hour in invocations of ~3,300 records, the 6 MB payload
//! bound: docs/DEPLOY.md), and the publisher every minute (the template's
//! schedule). The input lasts long enough for the publisher's steady state
//! (a window is visited until its end plus the 20-minute lease), and the
//! publisher's requests per hour are those of the steady stretch. Requests
//! per invocation, per publisher run and per window do not depend on the
//! events per invocation as long as each batch holds every partition; the
//! input is generated like `gen_events.py`'s (100 event names, ~1 KB
//! events), `KL_COST_EVENTS_PER_INVOCATION` of them per invocation (default
//! 100: each of the 100 names once). The 100,000-event folder of the
//! benchmarks would last 7 minutes at this rate, too short for the steady
//! state. The report goes to `KL_COST_REPORT` (default
//! `target/cost-report.json`).
//!
//! Run: `python3 scripts/testenv.py run -- cargo test --features integration --test cost -- --nocapture`

#![cfg(feature = "integration")]

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use kinesis_lake::core::dedup::{
    Claim, ClaimOutcome, DedupMode, DedupStore, NoClaims, StoreError, Transfer,
};
use kinesis_lake::core::registry::publish_summary;
use kinesis_lake::core::sink::{ObjectSink, SinkError};
use kinesis_lake::kinesis::{KinesisEvent, raw_records};
use kinesis_lake::run_batch;
use serde::Serialize;
use util::*;

/// S3 requests by kind, as S3 bills them.
#[derive(Default)]
struct Requests {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    put_bytes: AtomicU64,
}

/// A snapshot of [`Requests`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
struct Counted {
    put: u64,
    get: u64,
    head: u64,
    list: u64,
    delete: u64,
    put_bytes: u64,
}

impl Requests {
    fn snapshot(&self) -> Counted {
        Counted {
            put: self.put.load(Ordering::SeqCst),
            get: self.get.load(Ordering::SeqCst),
            head: self.head.load(Ordering::SeqCst),
            list: self.list.load(Ordering::SeqCst),
            delete: self.delete.load(Ordering::SeqCst),
            put_bytes: self.put_bytes.load(Ordering::SeqCst),
        }
    }
}

impl std::ops::Sub for Counted {
    type Output = Counted;
    fn sub(self, o: Counted) -> Counted {
        Counted {
            put: self.put - o.put,
            get: self.get - o.get,
            head: self.head - o.head,
            list: self.list - o.list,
            delete: self.delete - o.delete,
            put_bytes: self.put_bytes - o.put_bytes,
        }
    }
}

/// The real sink, counting each request it sends. A listing is counted once
/// per 1,000 keys (a LIST request returns at most 1,000).
struct CountingSink<'a, O> {
    inner: &'a O,
    n: Requests,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::SeqCst);
}

impl<O: ObjectSink> ObjectSink for CountingSink<'_, O> {
    fn uri(&self, key: &str) -> String {
        self.inner.uri(key)
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        bump(&self.n.put, 1);
        bump(&self.n.put_bytes, body.len() as u64);
        self.inner.put(key, body).await
    }

    async fn exists(&self, key: &str) -> Result<bool, SinkError> {
        bump(&self.n.head, 1);
        self.inner.exists(key).await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        bump(&self.n.get, 1);
        self.inner.get(key).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError> {
        bump(&self.n.put, 1);
        bump(&self.n.put_bytes, body.len() as u64);
        self.inner.put_if_absent(key, body).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let keys = self.inner.list(prefix).await?;
        bump(&self.n.list, (keys.len() as u64).div_ceil(1000).max(1));
        Ok(keys)
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let folders = self.inner.list_folders(prefix).await?;
        bump(&self.n.list, (folders.len() as u64).div_ceil(1000).max(1));
        Ok(folders)
    }

    async fn delete(&self, key: &str) -> Result<(), SinkError> {
        bump(&self.n.delete, 1);
        self.inner.delete(key).await
    }
}

/// The real store, counting the write requests it sends (each conditional
/// put of a claim or a transfer is one write request unit: items < 1 KB).
struct CountingStore<'a, S> {
    inner: &'a S,
    writes: AtomicU64,
}

impl<S: DedupStore> DedupStore for CountingStore<'_, S> {
    async fn claim(&self, claims: &[Claim<'_>], now: i64) -> Vec<Result<ClaimOutcome, StoreError>> {
        bump(&self.writes, claims.len() as u64);
        self.inner.claim(claims, now).await
    }

    async fn transfer(
        &self,
        transfers: &[Transfer<'_>],
        now: i64,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        bump(&self.writes, transfers.len() as u64);
        self.inner.transfer(transfers, now).await
    }
}

/// One mode's measured run.
#[derive(Debug, Serialize)]
struct Measured {
    dedup: &'static str,
    window_secs: u32,
    events: u64,
    invocations: u64,
    /// Distinct partitions (type, subtype, date) in the lake.
    partitions: u64,
    /// Every consumer request, and the DynamoDB write requests.
    consumer: Counted,
    dynamodb_writes: u64,
    /// The publisher's requests per hour in its steady state, and the
    /// staging objects it read per hour (one GET each).
    publisher_per_hour: Counted,
    staging_objects_per_hour: f64,
    publisher_runs: u64,
    publisher_total: Counted,
    /// Parquet files in the lake, and the most in one partition and window.
    files: u64,
    max_files_per_partition_window: u64,
    parquet_bytes: u64,
    /// Bytes of the consumer's puts (the staging objects, when staged).
    consumer_put_bytes: u64,
    published_events: u64,
}

/// Consumer invocations per hour at 1,000,000 events/hour (docs/DEPLOY.md).
const INVOCATIONS_PER_HOUR: i64 = 303;
/// The claim lease: a window is visited until its end plus this.
const LEASE_SECS: i64 = 1200;

const NAMES: usize = 100;

/// The input: `docs` documents of `per_doc` events each, over 100 names,
/// ~1 KB each; every run of 100 consecutive events holds every name once.
fn generated_input(docs: usize, per_doc: usize) -> Vec<KinesisEvent> {
    let types = [
        "account", "lesson", "payment", "video", "search", "cart", "course", "quiz", "profile",
        "notice",
    ];
    let subtypes = [
        "created",
        "started",
        "completed",
        "updated",
        "deleted",
        "viewed",
        "failed",
        "order",
        "refunded",
        "shared",
    ];
    let filler = "lorem ipsum dolor sit amet ".repeat(40);
    (0..docs)
        .map(|d| {
            let payloads: Vec<String> = (0..per_doc)
                .map(|i| {
                    let k = d * per_doc + i;
                    let n = (k * 37) % NAMES;
                    format!(
                        r#"{{"event_uuid":"cost-{k:09}","event_name":"{}:{}","created_at":1710633600,"user_id":{},"amount":{}.5,"ok":{},"note":"{k} {}"}}"#,
                        types[n / 10],
                        subtypes[n % 10],
                        k % 9973,
                        k % 500,
                        k.is_multiple_of(3),
                        &filler[..700 + k % 200],
                    )
                })
                .collect();
            kinesis_event(
                &format!("shardId-{:012}", d % 2),
                (d * per_doc) as u64,
                &payloads,
            )
        })
        .collect()
}

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).expect("valid time")
}

/// The consumer's requests for one invocation, as `aws::handler::invoke`
/// sends them (the batch, then the lake's schema summary), at time `now`.
async fn consume<S: DedupStore, O: ObjectSink>(
    lake: &Lake,
    event: &KinesisEvent,
    store: &S,
    sink: &O,
    now: DateTime<Utc>,
) -> kinesis_lake::BatchOutcome {
    let records = raw_records(event.clone()).expect("records");
    let out = run_batch(&records, store, sink, &lake.cfg, now).await;
    publish_summary(sink, &lake.prefix, &lake.cfg.schema_cache).await;
    out
}

/// Runs the generated input through one mode on the simulated clock.
async fn measure(dedup: DedupMode, window_secs: u32, per_doc: usize) -> Measured {
    let w = i64::from(window_secs);
    // warm-up (the first windows become final), then a steady stretch of at
    // least 15 minutes and one whole window
    let steady_from = 2 * w.max(60) + LEASE_SECS + 60;
    let steady_to = steady_from + (15 * 60).max(w);
    // direct writes have no publisher: a few invocations show their requests
    let n_docs = if w == 0 {
        12
    } else {
        (steady_to * INVOCATIONS_PER_HOUR / 3600 + 1) as usize
    };
    let docs = generated_input(n_docs, per_doc);
    let name = format!("cost-{}-{window_secs}", dedup.name());
    let mut lake = Lake::fresh_staged(&name, window_secs).await;
    lake.cfg.dedup = dedup;
    let consumer_sink = CountingSink {
        inner: &lake.sink,
        n: Requests::default(),
    };
    let store = CountingStore {
        inner: &lake.store,
        writes: AtomicU64::new(0),
    };
    let publisher_sink = CountingSink {
        inner: &lake.sink,
        n: Requests::default(),
    };
    // on a window boundary, far enough back for the whole run to be over by
    // now; claims still live (DynamoDB Local removes expired items)
    let t0 = (Utc::now().timestamp() - 6 * 3600) / 3600 * 3600;
    let time_of = |i: usize| t0 + (i as i64) * 3600 / INVOCATIONS_PER_HOUR;
    let (mut events, mut published_events, mut runs) = (0, 0, 0);
    let mut steady = Counted::default();
    let mut staged_in_steady = 0;
    let mut next = 0;
    // after the input, until every window is final
    let end = time_of(n_docs) + w + LEASE_SECS + 120;
    let mut minute = t0 + 60;
    while minute <= end {
        while next < docs.len() && time_of(next) < minute {
            let now = at(time_of(next));
            let out = match dedup {
                DedupMode::Claims => consume(&lake, &docs[next], &store, &consumer_sink, now).await,
                DedupMode::Window => {
                    consume(&lake, &docs[next], &NoClaims, &consumer_sink, now).await
                }
            };
            assert_eq!(out.counts.failed, 0, "{:?}", out.failed.first());
            events += out.counts.records;
            next += 1;
        }
        if window_secs > 0 {
            let before = publisher_sink.n.snapshot();
            let p = lake
                .publish_at(&publisher_sink, at(minute))
                .await
                .expect("publish");
            runs += 1;
            published_events += p.events;
            let in_steady = (steady_from..steady_to).contains(&(minute - t0));
            if in_steady {
                steady = add(steady, publisher_sink.n.snapshot() - before);
                staged_in_steady += p.staging_objects;
            }
        }
        minute += 60;
    }
    assert_eq!(next, docs.len(), "every invocation ran");
    let hours = (steady_to - steady_from) as f64 / 3600.0;
    let files = lake_files(&lake).await;
    let mut per_pw: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (key, _) in &files {
        let (partition, file) = key.rsplit_once('/').unwrap_or(("", key));
        let window = file
            .strip_prefix("part-")
            .and_then(|f| f.split("-g").next())
            .unwrap_or(file);
        *per_pw
            .entry((partition.to_string(), window.to_string()))
            .or_default() += 1;
    }
    let partitions: BTreeSet<&str> = files
        .iter()
        .filter_map(|(k, _)| k.rsplit_once('/').map(|(p, _)| p))
        .collect();
    let consumer = consumer_sink.n.snapshot();
    Measured {
        dedup: dedup.name(),
        window_secs,
        events,
        invocations: docs.len() as u64,
        partitions: partitions.len() as u64,
        consumer,
        dynamodb_writes: store.writes.load(Ordering::SeqCst),
        publisher_per_hour: scale(steady, 1.0 / hours),
        staging_objects_per_hour: staged_in_steady as f64 / hours,
        publisher_runs: runs,
        publisher_total: publisher_sink.n.snapshot(),
        files: files.len() as u64,
        max_files_per_partition_window: per_pw.values().copied().max().unwrap_or(0),
        parquet_bytes: files.iter().map(|(_, b)| b).sum(),
        consumer_put_bytes: consumer.put_bytes,
        published_events,
    }
}

fn scale(a: Counted, k: f64) -> Counted {
    let f = |v: u64| (v as f64 * k).round() as u64;
    Counted {
        put: f(a.put),
        get: f(a.get),
        head: f(a.head),
        list: f(a.list),
        delete: f(a.delete),
        put_bytes: f(a.put_bytes),
    }
}

fn add(a: Counted, b: Counted) -> Counted {
    Counted {
        put: a.put + b.put,
        get: a.get + b.get,
        head: a.head + b.head,
        list: a.list + b.list,
        delete: a.delete + b.delete,
        put_bytes: a.put_bytes + b.put_bytes,
    }
}

/// The lake's Parquet files and their sizes.
async fn lake_files(lake: &Lake) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = lake
            .s3
            .list_objects_v2()
            .bucket(&lake.name)
            .prefix(format!("{}/event_type=", lake.prefix))
            .set_continuation_token(token)
            .send()
            .await
            .expect("list the lake");
        for o in page.contents() {
            if let (Some(k), Some(size)) = (o.key(), o.size())
                && k.ends_with(".parquet")
            {
                out.push((k.to_string(), size as u64));
            }
        }
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_by_mode_and_window_are_counted_and_each_mode_lands_every_event_once() {
    let per_doc: usize = std::env::var("KL_COST_EVENTS_PER_INVOCATION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(NAMES);
    // the publisher is the same whatever the dedup mode (and so are its
    // requests: see the report), so claims are measured at 300 s only
    let modes = [
        (DedupMode::Claims, 0),
        (DedupMode::Claims, 300),
        (DedupMode::Window, 60),
        (DedupMode::Window, 300),
        (DedupMode::Window, 900),
    ];
    let mut report = Vec::new();
    for (dedup, window) in modes {
        let m = measure(dedup, window, per_doc).await;
        eprintln!(
            "{} window {}: {} events in {} invocations; consumer {:?}; dynamodb writes {}; publisher per hour {:?}; files {}",
            m.dedup,
            m.window_secs,
            m.events,
            m.invocations,
            m.consumer,
            m.dynamodb_writes,
            m.publisher_per_hour,
            m.files
        );
        report.push(m);
    }
    let path = std::env::var("KL_COST_REPORT")
        .unwrap_or_else(|_| format!("{}/target/cost-report.json", env!("CARGO_MANIFEST_DIR")));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&report).expect("the report serialises"),
    )
    .expect("write the report");

    for m in &report {
        let staged = m.window_secs > 0;
        if staged {
            // exactly once: what was staged was published once, nothing more
            assert_eq!(m.published_events, m.events, "{m:?}");
            // the consumer puts one staging object per invocation (and the
            // schema summary when the schema changes), never Parquet
            assert!(m.consumer.put <= m.invocations + 4, "{m:?}");
            // one file per partition per window at this size
            assert_eq!(m.max_files_per_partition_window, 1, "{m:?}");
        } else {
            assert!(m.consumer.put >= m.invocations * m.partitions, "{m:?}");
        }
        // the claims are the only DynamoDB writes: one per event, none without
        match m.dedup {
            "window" => assert_eq!(m.dynamodb_writes, 0, "{m:?}"),
            _ => assert_eq!(m.dynamodb_writes, m.events, "{m:?}"),
        }
        // window dedup sends no request to find a staging name
        if m.dedup == "window" {
            assert_eq!((m.consumer.head, m.consumer.list), (0, 0), "{m:?}");
        }
    }
    // the publisher's requests do not depend on the dedup mode
    let at_300: Vec<&Measured> = report.iter().filter(|m| m.window_secs == 300).collect();
    assert_eq!(
        (
            at_300[0].publisher_per_hour.put,
            at_300[0].publisher_per_hour.list
        ),
        (
            at_300[1].publisher_per_hour.put,
            at_300[1].publisher_per_hour.list
        ),
        "the same publisher for both dedup modes"
    );
    // the publisher's PUTs: one file per partition per window, and a few
    // records (plan, done, published uuids, final marker, schema summary)
    for m in report.iter().filter(|m| m.window_secs > 0) {
        let windows_per_hour = 3600.0 / f64::from(m.window_secs);
        let per_window = m.publisher_per_hour.put as f64 / windows_per_hour;
        assert!(
            per_window <= m.partitions as f64 + 6.0,
            "{} window {}: {per_window:.1} PUTs per window for {} partitions",
            m.dedup,
            m.window_secs,
            m.partitions
        );
    }
}

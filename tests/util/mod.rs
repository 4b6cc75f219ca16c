//! Shared helpers of the integration tests against the real servers started
//! by `scripts/testenv.py` (SeaweedFS for S3, DynamoDB Local): a fresh bucket
//! and table per test, Kinesis events built like Lambda sends them, the lake
//! read back from S3 with the parquet crate, and fault-injecting wrappers
//! around the real adapters.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::AsArray;
use aws_lambda_events::event::streams::KinesisEventResponse;
use base64::Engine as _;
use bytes::Bytes;
use kinesis_lake::kinesis::KinesisEvent;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::task::JoinHandle;

use kinesis_lake::PipelineConfig;
use kinesis_lake::aws::config::Clients;
use kinesis_lake::aws::handler::{Invoked, invoke};
use kinesis_lake::aws::{ClientSettings, DynamoStore, S3Sink};
use kinesis_lake::core::dedup::{Claim, ClaimOutcome, DedupStore, StoreError, Transfer};
use kinesis_lake::core::publish::{PublishConfig, Published, Stopped, Which, publish};
use kinesis_lake::core::sink::{ObjectSink, SinkError};

/// Claim lifetime in the tests (the default).
pub const TTL_SECS: i64 = 168 * 3600;

/// Reads a variable the harness sets, or fails saying how to run the tests.
pub fn harness_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need the local S3 and DynamoDB servers; run them with \
             `python3 scripts/testenv.py run -- cargo test --features integration`"
        ),
    }
}

/// Checks that the harness's endpoints are set (the SDK reads the
/// `AWS_ENDPOINT_URL_*` twins).
pub fn require_servers() {
    for var in [
        "KL_TEST_S3_ENDPOINT",
        "KL_TEST_DYNAMODB_ENDPOINT",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL_DYNAMODB",
    ] {
        harness_env(var);
    }
}

/// Client settings for tests: shorter timeouts, so that outages are noticed
/// quickly.
pub fn test_settings() -> ClientSettings {
    ClientSettings {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        dynamodb_attempt_timeout: Duration::from_secs(3),
        dynamodb_operation_timeout: Duration::from_secs(8),
        s3_attempt_timeout: Duration::from_secs(10),
        s3_operation_timeout: Duration::from_secs(20),
        kinesis_attempt_timeout: Duration::from_secs(10),
        kinesis_operation_timeout: Duration::from_secs(20),
    }
}

/// A unique, valid bucket and table name for one test.
pub fn unique_name(test: &str) -> String {
    let slug: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(36)
        .collect();
    let id = uuid::Uuid::now_v7().simple().to_string();
    // the last hex digits of a v7 uuid are random
    format!("kl-{}-{}", slug.trim_matches('-'), &id[id.len() - 12..])
}

/// A fresh lake: its own bucket and dedup table on the test servers.
pub struct Lake {
    /// Bucket and table name.
    pub name: String,
    /// Key prefix of the lake in the bucket.
    pub prefix: String,
    /// Raw S3 client, to read the lake back.
    pub s3: aws_sdk_s3::Client,
    /// The real dedup store.
    pub store: DynamoStore,
    /// The real object sink.
    pub sink: S3Sink,
    /// Pipeline settings (prefix set).
    pub cfg: PipelineConfig,
}

impl Lake {
    /// Creates a bucket and a table named after the test.
    pub async fn fresh(test: &str) -> Lake {
        Lake::fresh_with(test, &test_settings()).await
    }

    /// Same, with given client settings.
    pub async fn fresh_with(test: &str, settings: &ClientSettings) -> Lake {
        require_servers();
        let name = unique_name(test);
        let clients = Clients::load(settings).await.expect("AWS configuration");
        let store = DynamoStore::new(clients.dynamodb, &name, TTL_SECS, 64);
        let sink = S3Sink::new(clients.s3.clone(), &name);
        sink.ensure_bucket().await.expect("create the test bucket");
        store.ensure_table().await.expect("create the test table");
        let prefix = "lake".to_string();
        Lake {
            cfg: PipelineConfig {
                prefix: prefix.clone(),
                io_concurrency: 64,
                ..PipelineConfig::default()
            },
            name,
            prefix,
            s3: clients.s3,
            store,
            sink,
        }
    }

    /// A fresh lake whose batches are staged into windows of `window_secs`.
    pub async fn fresh_staged(test: &str, window_secs: u32) -> Lake {
        let mut lake = Lake::fresh(test).await;
        lake.cfg.window_secs = window_secs;
        lake
    }

    /// The publisher's settings for this lake.
    pub fn publish_cfg(&self) -> PublishConfig {
        PublishConfig {
            prefix: self.prefix.clone(),
            window_secs: self.cfg.window_secs,
            io_concurrency: 64,
            ..PublishConfig::default()
        }
    }

    /// Publishes every window that has closed by `now`, through `sink`.
    pub async fn publish_at<O: ObjectSink>(
        &self,
        sink: &O,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Published, Stopped> {
        publish(sink, &self.publish_cfg(), Which::Closed, now).await
    }

    /// Publishes everything staged (open windows too) with the real sink.
    pub async fn publish_all(&self) -> Published {
        publish(
            &self.sink,
            &self.publish_cfg(),
            Which::Everything,
            chrono::Utc::now(),
        )
        .await
        .expect("publish")
    }

    /// The keys of the staging objects.
    pub async fn staging_keys(&self) -> Vec<String> {
        let staging = format!("{}/_staging/", self.prefix);
        let mut keys = self.all_keys().await;
        keys.retain(|k| k.starts_with(&staging));
        keys
    }

    /// Runs one Lambda invocation with the given store and sink (the real
    /// adapters, or wrappers around them), 60 s before its deadline.
    pub async fn invoke<S: DedupStore, O: ObjectSink>(
        &self,
        event: &KinesisEvent,
        store: &S,
        sink: &O,
    ) -> Invoked {
        self.invoke_by(event, store, sink, Duration::from_secs(60))
            .await
    }

    /// Same, with `left` before the deadline.
    pub async fn invoke_by<S: DedupStore, O: ObjectSink>(
        &self,
        event: &KinesisEvent,
        store: &S,
        sink: &O,
        left: Duration,
    ) -> Invoked {
        let deadline = tokio::time::Instant::now() + left;
        invoke(event.clone(), deadline, store, sink, &self.cfg, "test-fn")
            .await
            .expect("every record has a sequence number")
    }

    /// Runs an invocation with the real adapters.
    pub async fn invoke_real(&self, event: &KinesisEvent) -> Invoked {
        self.invoke(event, &self.store, &self.sink).await
    }

    /// The keys of the lake's files (data, dead letters and staging objects;
    /// not the schema versions under `_schemas/`, the `_common_metadata`
    /// summary of the schema, nor the publisher's records under `_publish/`),
    /// sorted.
    pub async fn keys(&self) -> Vec<String> {
        let schemas = format!("{}/_schemas/", self.prefix);
        let records = format!("{}/_publish/", self.prefix);
        let summary = format!("{}/_common_metadata", self.prefix);
        let mut keys = self.all_keys().await;
        keys.retain(|k| !k.starts_with(&schemas) && !k.starts_with(&records) && *k != summary);
        keys
    }

    /// Every object key in the bucket, sorted.
    pub async fn all_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.expect("list the test bucket");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
        }
        keys.sort();
        keys
    }

    /// The body of an object.
    pub async fn get(&self, key: &str) -> Bytes {
        self.s3
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
            .body
            .collect()
            .await
            .expect("read the body")
            .into_bytes()
    }

    /// event_uuid -> number of rows in all Parquet files of the bucket.
    pub async fn rows(&self) -> BTreeMap<String, usize> {
        let mut rows = BTreeMap::new();
        for key in self.keys().await {
            if !key.ends_with(".parquet") {
                continue;
            }
            assert!(
                key.starts_with(&format!("{}/event_type=", self.prefix)),
                "data file outside the lake's partitions: {key}"
            );
            for u in parquet_uuids(self.get(&key).await, &key) {
                *rows.entry(u).or_insert(0) += 1;
            }
        }
        rows
    }

    /// The dead-letter lines of the lake.
    pub async fn dead_letters(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for key in self.keys().await {
            if !key.starts_with(&format!("{}/_errors/", self.prefix)) {
                continue;
            }
            let body = self.get(&key).await;
            for line in String::from_utf8_lossy(&body).lines() {
                out.push(serde_json::from_str(line).expect("a dead letter is one JSON line"));
            }
        }
        out
    }

    /// Asserts that the lake holds exactly `uuids`, each once.
    pub async fn assert_exactly_once(&self, uuids: &[&str]) {
        let rows = self.rows().await;
        let expected: BTreeMap<String, usize> = uuids.iter().map(|u| (u.to_string(), 1)).collect();
        assert_eq!(
            rows, expected,
            "every event must be in the lake exactly once"
        );
    }
}

/// The event_uuid column of a Parquet file.
pub fn parquet_uuids(body: Bytes, key: &str) -> Vec<String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)
        .unwrap_or_else(|e| panic!("{key} is not Parquet: {e}"))
        .build()
        .expect("parquet reader");
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.expect("record batch");
        let col = batch
            .column_by_name("event_uuid")
            .unwrap_or_else(|| panic!("{key} has no event_uuid column"));
        let strings = col.as_string::<i32>();
        out.extend(strings.iter().flatten().map(String::from));
    }
    out
}

// ------------------------------------------------------------------ events

/// A valid event, as a producer sends it.
pub fn ev(uuid: &str, name: &str) -> String {
    format!(r#"{{"event_uuid":"{uuid}","event_name":"{name}","created_at":1710670530,"n":1}}"#)
}

/// A sequence number: fixed width, so that text order is numeric order.
pub fn seq(n: u64) -> String {
    format!("4959{n:052}")
}

/// A Lambda Kinesis event of `payloads` on `shard`, sequence numbers from
/// `first_seq` on.
pub fn kinesis_event(shard: &str, first_seq: u64, payloads: &[String]) -> KinesisEvent {
    let records: Vec<serde_json::Value> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = seq(first_seq + i as u64);
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": format!("pk-{i}"),
                    "sequenceNumber": s,
                    "data": base64::engine::general_purpose::STANDARD.encode(p),
                    "approximateArrivalTimestamp": 1_710_670_530.5,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{shard}:{s}"),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/lake-consumer",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/events",
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("a valid event")
}

/// A fixture event from `fixtures/kinesis/`.
pub fn fixture(name: &str) -> KinesisEvent {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/kinesis")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("fixture parses")
}

/// The valid events of `small-batch.json` (one of them twice in the batch).
pub const SMALL_BATCH_UUIDS: [&str; 8] = [
    "00000000-0000-4000-8000-000000000001",
    "00000000-0000-4000-8000-000000000002",
    "00000000-0000-4000-8000-000000000003",
    "00000000-0000-4000-8000-000000000004",
    "00000000-0000-4000-8000-000000000005",
    "00000000-0000-4000-8000-000000000006",
    "00000000-0000-4000-8000-000000000007",
    "00000000-0000-4000-8000-000000000008",
];
/// Records of `small-batch.json` that are rejected.
pub const SMALL_BATCH_REJECTS: usize = 11;

/// The sequence numbers a response reports as failed.
pub fn failed_seqs(resp: &KinesisEventResponse) -> Vec<String> {
    resp.batch_item_failures
        .iter()
        .map(|f| {
            let id = f.item_identifier.clone().unwrap_or_default();
            assert!(
                !id.is_empty(),
                "a failure without identifier fails the whole batch"
            );
            id
        })
        .collect()
}

/// What Lambda sends next after a partial batch failure: the batch from the
/// lowest reported sequence number on (None when nothing failed).
pub fn resend_from_lowest(
    event: &KinesisEvent,
    resp: &KinesisEventResponse,
) -> Option<KinesisEvent> {
    let lowest = failed_seqs(resp)
        .into_iter()
        .min_by(|a, b| (a.len(), a).cmp(&(b.len(), b)))?;
    let from = event
        .records
        .iter()
        .position(|r| r.kinesis.sequence_number == lowest)
        .unwrap_or_else(|| panic!("reported sequence number {lowest} is not in the batch"));
    let mut next = event.clone();
    next.records = event.records[from..].to_vec();
    Some(next)
}

// ------------------------------------------------------------------ faults

/// What a [`FaultySink`] does wrong.
#[derive(Debug, Clone)]
pub enum SinkFault {
    /// Nothing.
    None,
    /// Puts of keys containing any of these fail (nothing is written).
    FailPutsMatching(Vec<String>),
    /// The put with this number (0-based, in call order) fails.
    FailPutNumber(usize),
    /// Every put is written, then reported as failed (the answer is lost).
    LoseAcks,
    /// Before the put with this number, the S3 server is stopped (through
    /// `KL_TEST_CTL`).
    StopServerBeforePut(usize),
}

/// A sink around the real one that fails as told.
pub struct FaultySink<'a, O> {
    inner: &'a O,
    fault: SinkFault,
    puts: AtomicUsize,
    /// Whether create-if-absent puts (staging objects, publication plans)
    /// fail as told too.
    conditional: bool,
}

impl<'a, O> FaultySink<'a, O> {
    /// Wraps `inner`; the fault applies to plain puts.
    pub fn new(inner: &'a O, fault: SinkFault) -> Self {
        FaultySink {
            inner,
            fault,
            puts: AtomicUsize::new(0),
            conditional: false,
        }
    }

    /// Wraps `inner`; the fault applies to create-if-absent puts too (a
    /// staging object is written that way).
    pub fn every_put(inner: &'a O, fault: SinkFault) -> Self {
        FaultySink {
            conditional: true,
            ..FaultySink::new(inner, fault)
        }
    }

    /// Puts attempted so far.
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }
}

fn injected(key: &str) -> SinkError {
    SinkError {
        operation: "put",
        key: key.into(),
        message: "injected failure".into(),
    }
}

impl<O: ObjectSink> FaultySink<'_, O> {
    /// What the fault does to put number `n` of `key`: `Some(result)` when it
    /// decides the outcome, `None` to pass the put through. `write` runs the
    /// real put (for lost answers).
    async fn apply<F, Fut>(&self, key: &str, write: F) -> Option<Result<(), SinkError>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), SinkError>>,
    {
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        match &self.fault {
            SinkFault::None => None,
            SinkFault::FailPutsMatching(p) if p.iter().any(|p| key.contains(p.as_str())) => {
                Some(Err(injected(key)))
            }
            SinkFault::FailPutsMatching(_) => None,
            SinkFault::FailPutNumber(k) if *k == n => Some(Err(injected(key))),
            SinkFault::FailPutNumber(_) => None,
            SinkFault::LoseAcks => Some(write().await.and(Err(injected(key)))),
            SinkFault::StopServerBeforePut(k) => {
                if *k == n {
                    tokio::task::spawn_blocking(|| ctl(&["stop", "s3"]))
                        .await
                        .expect("ctl task");
                }
                None
            }
        }
    }
}

impl<O: ObjectSink> ObjectSink for FaultySink<'_, O> {
    fn uri(&self, key: &str) -> String {
        self.inner.uri(key)
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let copy = body.clone();
        match self.apply(key, || self.inner.put(key, copy)).await {
            Some(r) => r,
            None => self.inner.put(key, body).await,
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, SinkError> {
        self.inner.exists(key).await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        self.inner.get(key).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError> {
        if !self.conditional {
            return self.inner.put_if_absent(key, body).await;
        }
        let copy = body.clone();
        let write = || async { self.inner.put_if_absent(key, copy).await.map(|_| ()) };
        match self.apply(key, write).await {
            Some(r) => r.map(|()| true),
            None => self.inner.put_if_absent(key, body).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.inner.list(prefix).await
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.inner.list_folders(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), SinkError> {
        self.inner.delete(key).await
    }
}

/// A sink whose puts run detached and wait for a gate: when the caller gives
/// up (a deadline), the put still lands once the gate opens, like a Lambda
/// that timed out while its requests were on the way.
pub struct DetachedSink {
    inner: S3Sink,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Whether create-if-absent puts are detached too.
    conditional: bool,
}

impl DetachedSink {
    /// Wraps `inner`; puts wait until [`DetachedSink::open`].
    pub fn new(inner: S3Sink) -> Self {
        DetachedSink {
            inner,
            gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
            tasks: Mutex::new(Vec::new()),
            conditional: false,
        }
    }

    /// Same, and create-if-absent puts (staging objects) wait too.
    pub fn every_put(inner: S3Sink) -> Self {
        DetachedSink {
            conditional: true,
            ..DetachedSink::new(inner)
        }
    }

    /// Lets the waiting puts (and later ones) through.
    pub fn open(&self) {
        self.gate.close();
    }

    /// Waits until every detached put has finished; returns how many there were.
    pub async fn settle(&self) -> usize {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().expect("lock"));
        let n = tasks.len();
        for t in tasks {
            t.await.expect("detached put");
        }
        n
    }
}

impl ObjectSink for DetachedSink {
    fn uri(&self, key: &str) -> String {
        self.inner.uri(key)
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (sink, gate, owned_key) = (self.inner.clone(), self.gate.clone(), key.to_string());
        let task = tokio::spawn(async move {
            // a closed semaphore is an open gate
            let _ = gate.acquire().await;
            let r = sink.put(&owned_key, body).await;
            if let Err(e) = &r {
                panic!("the detached put of {owned_key} failed: {e}");
            }
            let _ = tx.send(r);
        });
        self.tasks.lock().expect("lock").push(task);
        rx.await.unwrap_or_else(|_| Err(injected(key)))
    }

    async fn exists(&self, key: &str) -> Result<bool, SinkError> {
        self.inner.exists(key).await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        self.inner.get(key).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError> {
        if !self.conditional {
            return self.inner.put_if_absent(key, body).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (sink, gate, owned_key) = (self.inner.clone(), self.gate.clone(), key.to_string());
        let task = tokio::spawn(async move {
            let _ = gate.acquire().await;
            let r = sink.put_if_absent(&owned_key, body).await;
            if let Err(e) = &r {
                panic!("the detached put of {owned_key} failed: {e}");
            }
            let _ = tx.send(r);
        });
        self.tasks.lock().expect("lock").push(task);
        rx.await.unwrap_or_else(|_| Err(injected(key)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.inner.list(prefix).await
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.inner.list_folders(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), SinkError> {
        self.inner.delete(key).await
    }
}

/// What a [`FaultyStore`] does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// Every call fails without reaching the store.
    FailAll,
    /// Every call is applied, then reported as failed (the answer is lost).
    LoseAcks,
}

/// A store around the real one that fails as told.
pub struct FaultyStore<'a, S> {
    inner: &'a S,
    fault: StoreFault,
}

impl<'a, S> FaultyStore<'a, S> {
    /// Wraps `inner`.
    pub fn new(inner: &'a S, fault: StoreFault) -> Self {
        FaultyStore { inner, fault }
    }
}

fn store_injected(operation: &'static str) -> StoreError {
    StoreError {
        operation,
        message: "injected failure".into(),
    }
}

impl<S: DedupStore> DedupStore for FaultyStore<'_, S> {
    async fn claim(&self, claims: &[Claim<'_>], now: i64) -> Vec<Result<ClaimOutcome, StoreError>> {
        if self.fault == StoreFault::LoseAcks {
            self.inner.claim(claims, now).await;
        }
        claims
            .iter()
            .map(|_| Err(store_injected("claim")))
            .collect()
    }

    async fn transfer(
        &self,
        transfers: &[Transfer<'_>],
        now: i64,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        if self.fault == StoreFault::LoseAcks {
            self.inner.transfer(transfers, now).await;
        }
        transfers
            .iter()
            .map(|_| Err(store_injected("transfer")))
            .collect()
    }
}

// ------------------------------------------------------------------ servers and binaries

/// Runs a `KL_TEST_CTL` action (`stop s3`, `start dynamodb`, ...) and waits
/// for it (the harness returns when the server is down, or ready).
pub fn ctl(args: &[&str]) {
    let prefix = harness_env("KL_TEST_CTL");
    let mut parts = prefix.split_whitespace();
    let program = parts.next().expect("KL_TEST_CTL names a program");
    let out = Command::new(program)
        .args(parts)
        .args(args)
        .output()
        .expect("run KL_TEST_CTL");
    assert!(
        out.status.success(),
        "KL_TEST_CTL {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the `kinesis-lake` CLI with `args` (and extra environment).
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the kinesis-lake binary runs")
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

/// Path of a file under `fixtures/`.
pub fn fixture_path(rel: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

/// Rounds of two invocations at once on two shards carrying the same five
/// event uuids (and one of their own each), each shard retried from its
/// lowest failure as Lambda does until it is clean; returns every uuid sent.
pub async fn race_shared_uuids(lake: &Lake, rounds: u64) -> Vec<String> {
    let mut uuids = Vec::new();
    for round in 0..rounds {
        let shared: Vec<String> = (0..5).map(|i| format!("r{round}-shared-{i}")).collect();
        let mut a: Vec<String> = shared.iter().map(|u| ev(u, "race:a")).collect();
        let mut b: Vec<String> = shared.iter().map(|u| ev(u, "race:a")).collect();
        a.push(ev(&format!("r{round}-only-a"), "race:b"));
        b.insert(0, ev(&format!("r{round}-only-b"), "race:c"));
        uuids.extend(shared);
        uuids.push(format!("r{round}-only-a"));
        uuids.push(format!("r{round}-only-b"));
        let mut ea = kinesis_event("shardId-000000000000", 1000 * round, &a);
        let mut eb = kinesis_event("shardId-000000000001", 1000 * round, &b);
        let (ra, rb) = tokio::join!(lake.invoke_real(&ea), lake.invoke_real(&eb));
        let (mut ra, mut rb) = (ra.response, rb.response);
        for _ in 0..3 {
            if let Some(next) = resend_from_lowest(&ea, &ra) {
                ea = next;
                ra = lake.invoke_real(&ea).await.response;
            }
            if let Some(next) = resend_from_lowest(&eb, &rb) {
                eb = next;
                rb = lake.invoke_real(&eb).await.response;
            }
        }
        assert!(ra.batch_item_failures.is_empty() && rb.batch_item_failures.is_empty());
    }
    uuids
}

//! The Lambda deadline guard: wraps a dedup store and an object sink so that
//! no call starts, or keeps running, past a deadline (the invocation's
//! deadline minus a safety margin for answering).
//!
//! A call cut short has an unknown outcome and says so: the pipeline then
//! reports its records as failed (Lambda retries them) and keeps the file of
//! an unknown claim unwritten. A put cut short may still land; the retry then
//! finds that file and counts its events as duplicates.

use bytes::Bytes;
use tokio::time::Instant;

use crate::core::dedup::{Claim, ClaimOutcome, DedupStore, StoreError, Transfer};
use crate::core::sink::{ObjectSink, SinkError};

/// A store or sink whose calls end by `at`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline<'a, T> {
    inner: &'a T,
    at: Instant,
}

impl<'a, T> Deadline<'a, T> {
    /// Wraps `inner`: calls end by `at`.
    pub fn new(inner: &'a T, at: Instant) -> Self {
        Deadline { inner, at }
    }
}

/// Below this a "deadline" is not a Unix time in ms (it would be before
/// September 2001) but a duration: local emulators (`cargo lambda watch`)
/// send the function's timeout instead of a deadline.
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

/// The deadline of a Lambda invocation as a tokio instant, `margin` earlier:
/// `deadline_ms` is Unix milliseconds (the invocation context's deadline), or
/// from an emulator, milliseconds from now.
pub fn lambda_deadline(deadline_ms: u64, margin: std::time::Duration) -> Instant {
    let left_ms = if deadline_ms < EPOCH_MS_FLOOR {
        deadline_ms
    } else {
        let now_ms = chrono::Utc::now().timestamp_millis().max(0).unsigned_abs();
        deadline_ms.saturating_sub(now_ms)
    };
    let left = std::time::Duration::from_millis(left_ms);
    Instant::now() + left.saturating_sub(margin)
}

const LATE: &str = "the invocation's deadline was reached before this finished; its outcome is unknown and the record will be retried";

fn store_late(operation: &'static str) -> StoreError {
    StoreError {
        operation,
        message: LATE.into(),
    }
}

fn sink_late(operation: &'static str, key: &str) -> SinkError {
    SinkError {
        operation,
        key: key.into(),
        message: LATE.into(),
    }
}

impl<T: DedupStore> DedupStore for Deadline<'_, T> {
    async fn claim(&self, claims: &[Claim<'_>], now: i64) -> Vec<Result<ClaimOutcome, StoreError>> {
        if Instant::now() >= self.at {
            return claims.iter().map(|_| Err(store_late("claim"))).collect();
        }
        match tokio::time::timeout_at(self.at, self.inner.claim(claims, now)).await {
            Ok(v) => v,
            Err(_) => claims.iter().map(|_| Err(store_late("claim"))).collect(),
        }
    }

    async fn transfer(
        &self,
        transfers: &[Transfer<'_>],
        now: i64,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        if Instant::now() >= self.at {
            return transfers
                .iter()
                .map(|_| Err(store_late("transfer")))
                .collect();
        }
        match tokio::time::timeout_at(self.at, self.inner.transfer(transfers, now)).await {
            Ok(v) => v,
            Err(_) => transfers
                .iter()
                .map(|_| Err(store_late("transfer")))
                .collect(),
        }
    }
}

impl<T: ObjectSink> ObjectSink for Deadline<'_, T> {
    fn uri(&self, key: &str) -> String {
        self.inner.uri(key)
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        if Instant::now() >= self.at {
            return Err(sink_late("put", key));
        }
        tokio::time::timeout_at(self.at, self.inner.put(key, body))
            .await
            .unwrap_or_else(|_| Err(sink_late("put", key)))
    }

    async fn exists(&self, key: &str) -> Result<bool, SinkError> {
        if Instant::now() >= self.at {
            return Err(sink_late("exists", key));
        }
        tokio::time::timeout_at(self.at, self.inner.exists(key))
            .await
            .unwrap_or_else(|_| Err(sink_late("exists", key)))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        if Instant::now() >= self.at {
            return Err(sink_late("get", key));
        }
        tokio::time::timeout_at(self.at, self.inner.get(key))
            .await
            .unwrap_or_else(|_| Err(sink_late("get", key)))
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError> {
        if Instant::now() >= self.at {
            return Err(sink_late("put_if_absent", key));
        }
        tokio::time::timeout_at(self.at, self.inner.put_if_absent(key, body))
            .await
            .unwrap_or_else(|_| Err(sink_late("put_if_absent", key)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        if Instant::now() >= self.at {
            return Err(sink_late("list", prefix));
        }
        tokio::time::timeout_at(self.at, self.inner.list(prefix))
            .await
            .unwrap_or_else(|_| Err(sink_late("list", prefix)))
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        if Instant::now() >= self.at {
            return Err(sink_late("list", prefix));
        }
        tokio::time::timeout_at(self.at, self.inner.list_folders(prefix))
            .await
            .unwrap_or_else(|_| Err(sink_late("list", prefix)))
    }

    async fn delete(&self, key: &str) -> Result<(), SinkError> {
        if Instant::now() >= self.at {
            return Err(sink_late("delete", key));
        }
        tokio::time::timeout_at(self.at, self.inner.delete(key))
            .await
            .unwrap_or_else(|_| Err(sink_late("delete", key)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::core::pipeline::{PipelineConfig, run_batch};
    use crate::memory::{MemSink, MemStore};
    use crate::record::{Origin, RawRecord};

    /// A sink whose puts never finish.
    struct Hanging;

    impl ObjectSink for Hanging {
        fn uri(&self, key: &str) -> String {
            format!("hanging:///{key}")
        }

        async fn put(&self, _key: &str, _body: Bytes) -> Result<(), SinkError> {
            std::future::pending().await
        }
        async fn exists(&self, _key: &str) -> Result<bool, SinkError> {
            std::future::pending().await
        }
        async fn get(&self, _key: &str) -> Result<Option<Bytes>, SinkError> {
            Ok(None)
        }
        async fn put_if_absent(&self, _key: &str, _body: Bytes) -> Result<bool, SinkError> {
            Ok(true)
        }
        async fn list(&self, _prefix: &str) -> Result<Vec<String>, SinkError> {
            Ok(Vec::new())
        }
        async fn list_folders(&self, _prefix: &str) -> Result<Vec<String>, SinkError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _key: &str) -> Result<(), SinkError> {
            std::future::pending().await
        }
    }

    fn records() -> Vec<RawRecord> {
        (0..3)
            .map(|i| RawRecord {
                data: format!(
                    r#"{{"event_uuid":"u{i}","event_name":"a:b","created_at":1710633600}}"#
                )
                .into_bytes(),
                origin: Origin::File {
                    path: "/in".into(),
                    line: i + 1,
                },
                unreadable: None,
            })
            .collect()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid")
    }

    #[tokio::test]
    async fn a_passed_deadline_starts_nothing_and_fails_every_record() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let at = Instant::now();
        let o = run_batch(
            &records(),
            &Deadline::new(&store, at),
            &Deadline::new(&sink, at),
            &PipelineConfig::default(),
            now(),
        )
        .await;
        assert_eq!(o.counts.failed, 3);
        assert!(
            o.failed[0].reason.to_string().contains("deadline"),
            "{:?}",
            o.failed
        );
        assert!(store.holder("u0").is_none(), "no claim was attempted");
        assert!(sink.objects().is_empty());
    }

    #[tokio::test]
    async fn a_hanging_put_is_cut_at_the_deadline() {
        let store = MemStore::default();
        let at = Instant::now() + Duration::from_millis(100);
        let o = run_batch(
            &records(),
            &Deadline::new(&store, at),
            &Deadline::new(&Hanging, at),
            &PipelineConfig::default(),
            now(),
        )
        .await;
        assert_eq!(o.counts.failed, 3, "{:?}", o.failed);
        assert!(Instant::now() >= at);
        assert!(store.holder("u0").is_some(), "claimed before the deadline");
    }

    #[test]
    fn the_margin_is_taken_off_the_lambda_deadline() {
        let in_10s = (Utc::now().timestamp_millis() + 10_000).unsigned_abs();
        let at = lambda_deadline(in_10s, Duration::from_secs(2));
        let left = at - Instant::now();
        assert!(
            left > Duration::from_secs(7) && left <= Duration::from_secs(8),
            "{left:?}"
        );
        let past = lambda_deadline(in_10s - 20_000, Duration::from_secs(2));
        assert!(past <= Instant::now());
        // an emulator's timeout instead of a deadline
        let left = lambda_deadline(600_000, Duration::from_secs(2)) - Instant::now();
        assert!(
            left > Duration::from_secs(597) && left <= Duration::from_secs(598),
            "{left:?}"
        );
    }
}

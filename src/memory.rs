//! In-memory dedup store and object sink: for unit tests of pipeline logic and
//! for benchmarks that separate CPU cost from storage cost. Never a stand-in
//! for the real servers in integration tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use crate::core::dedup::{Claim, ClaimOutcome, DedupStore, Holder, StoreError, Transfer};
use crate::core::sink::{ObjectSink, SinkError};

/// A dedup store in a `HashMap`.
#[derive(Debug, Default)]
pub struct MemStore {
    claims: Mutex<HashMap<String, Holder>>,
    /// When set, the claim calls numbered `fail_from..` (0-based) fail.
    pub fail_claims_from: Option<usize>,
    calls: AtomicUsize,
}

impl MemStore {
    /// A store whose claim calls fail from the `n`th call on (0-based).
    pub fn failing_from(n: usize) -> MemStore {
        MemStore {
            fail_claims_from: Some(n),
            ..Default::default()
        }
    }

    /// The holder of a uuid, if any.
    pub fn holder(&self, uuid: &str) -> Option<Holder> {
        self.claims.lock().ok()?.get(uuid).cloned()
    }

    fn failing(&self) -> bool {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.fail_claims_from.is_some_and(|f| n >= f)
    }
}

fn unavailable(op: &'static str) -> StoreError {
    StoreError {
        operation: op,
        message: "injected failure".into(),
    }
}

impl DedupStore for MemStore {
    async fn claim(&self, claims: &[Claim<'_>], now: i64) -> Vec<Result<ClaimOutcome, StoreError>> {
        if self.failing() {
            return claims.iter().map(|_| Err(unavailable("claim"))).collect();
        }
        let Ok(mut map) = self.claims.lock() else {
            return claims.iter().map(|_| Err(unavailable("claim"))).collect();
        };
        claims
            .iter()
            .map(|c| match map.get(c.event_uuid) {
                Some(h) => Ok(ClaimOutcome::Held(h.clone())),
                None => {
                    map.insert(
                        c.event_uuid.to_string(),
                        Holder {
                            owner: c.owner.to_string(),
                            object_key: c.object_key.to_string(),
                            claimed_at: now,
                        },
                    );
                    Ok(ClaimOutcome::Claimed)
                }
            })
            .collect()
    }

    async fn transfer(
        &self,
        transfers: &[Transfer<'_>],
        now: i64,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        let Ok(mut map) = self.claims.lock() else {
            return transfers
                .iter()
                .map(|_| Err(unavailable("transfer")))
                .collect();
        };
        transfers
            .iter()
            .map(|t| {
                let current = map.get(t.event_uuid);
                match current {
                    Some(h) if h.owner != t.from_owner || h.object_key != t.from_key => {
                        Ok(ClaimOutcome::Held(h.clone()))
                    }
                    _ => {
                        map.insert(
                            t.event_uuid.to_string(),
                            Holder {
                                owner: t.to.owner.to_string(),
                                object_key: t.to.object_key.to_string(),
                                claimed_at: now,
                            },
                        );
                        Ok(ClaimOutcome::Claimed)
                    }
                }
            })
            .collect()
    }
}

/// An object sink in a `HashMap`, with injectable put failures.
#[derive(Debug, Default)]
pub struct MemSink {
    objects: Mutex<HashMap<String, Bytes>>,
    /// Keys containing any of these substrings fail to put.
    pub fail_puts_matching: Mutex<Vec<String>>,
}

impl MemSink {
    /// All stored objects, sorted by key.
    pub fn objects(&self) -> Vec<(String, Bytes)> {
        let mut v: Vec<_> = self
            .objects
            .lock()
            .map(|m| m.iter().map(|(k, b)| (k.clone(), b.clone())).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Makes puts of keys containing `pattern` fail (empty list: none fail).
    pub fn fail_puts(&self, patterns: &[&str]) {
        if let Ok(mut f) = self.fail_puts_matching.lock() {
            *f = patterns.iter().map(|s| s.to_string()).collect();
        }
    }
}

impl ObjectSink for MemSink {
    fn uri(&self, key: &str) -> String {
        format!("memory:///{key}")
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let fail = self
            .fail_puts_matching
            .lock()
            .map(|f| f.iter().any(|p| key.contains(p.as_str())))
            .unwrap_or(true);
        if fail {
            return Err(SinkError {
                operation: "put",
                key: key.into(),
                message: "injected failure".into(),
            });
        }
        if let Ok(mut m) = self.objects.lock() {
            m.insert(key.to_string(), body);
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, SinkError> {
        Ok(self
            .objects
            .lock()
            .map(|m| m.contains_key(key))
            .unwrap_or(false))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        Ok(self.objects.lock().ok().and_then(|m| m.get(key).cloned()))
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError> {
        let Ok(mut m) = self.objects.lock() else {
            return Err(SinkError {
                operation: "put_if_absent",
                key: key.into(),
                message: "lock poisoned".into(),
            });
        };
        if m.contains_key(key) {
            return Ok(false);
        }
        m.insert(key.to_string(), body);
        Ok(true)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let mut keys: Vec<String> = self
            .objects
            .lock()
            .map(|m| {
                m.keys()
                    .filter(|k| k.starts_with(prefix) && !k[prefix.len()..].contains('/'))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        Ok(keys)
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let mut folders: Vec<String> = self
            .objects
            .lock()
            .map(|m| {
                m.keys()
                    .filter_map(|k| {
                        let rest = k.strip_prefix(prefix)?;
                        let (name, _) = rest.split_once('/')?;
                        Some(format!("{prefix}{name}/"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        folders.sort();
        folders.dedup();
        Ok(folders)
    }

    async fn delete(&self, key: &str) -> Result<(), SinkError> {
        if let Ok(mut m) = self.objects.lock() {
            m.remove(key);
        }
        Ok(())
    }
}

//! The embedded dedup store: a `redb` database file inside the lake folder
//! (`LAKE/_state/dedup.redb`). One write transaction per batch, so a batch's
//! claims are durable together with one fsync. Claims never expire locally.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::core::dedup::{Claim, ClaimOutcome, DedupStore, Holder, StoreError, Transfer};

/// uuid -> (owner, object key, claimed at)
const CLAIMS: TableDefinition<&str, (&str, &str, i64)> = TableDefinition::new("claims");

/// The dedup database's path inside a lake folder.
pub fn default_path(lake: &Path) -> PathBuf {
    lake.join("_state").join("dedup.redb")
}

/// Dedup claims in an embedded redb database.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

fn store_err(operation: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError {
        operation,
        message: e.to_string(),
    }
}

impl RedbStore {
    /// Opens (or creates) the database file. Only one process may hold it.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| store_err("open", format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => store_err(
                "open",
                format!(
                    "{} is in use by another kinesis-lake process; wait for it to finish",
                    path.display()
                ),
            ),
            e => store_err("open", format!("{}: {e}", path.display())),
        })?;
        // create the table so that read-only lookups find it
        let txn = db.begin_write().map_err(|e| store_err("open", e))?;
        txn.open_table(CLAIMS).map_err(|e| store_err("open", e))?;
        txn.commit().map_err(|e| store_err("open", e))?;
        Ok(RedbStore { db: Arc::new(db) })
    }

    /// The holder of a uuid, if claimed.
    pub fn holder(&self, uuid: &str) -> Result<Option<Holder>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| store_err("read", e))?;
        let table = txn.open_table(CLAIMS).map_err(|e| store_err("read", e))?;
        let got = table.get(uuid).map_err(|e| store_err("read", e))?;
        Ok(got.map(|g| {
            let (owner, key, at) = g.value();
            Holder {
                owner: owner.to_string(),
                object_key: key.to_string(),
                claimed_at: at,
            }
        }))
    }

    /// Number of claims stored.
    pub fn len(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata as _;
        let txn = self.db.begin_read().map_err(|e| store_err("read", e))?;
        let table = txn.open_table(CLAIMS).map_err(|e| store_err("read", e))?;
        table.len().map_err(|e| store_err("read", e))
    }

    /// Whether no claim is stored.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Runs `f` over the claims table in one write transaction, off the async
    /// threads (the commit syncs to disk).
    async fn with_table<R, F>(
        &self,
        operation: &'static str,
        n: usize,
        f: F,
    ) -> Vec<Result<R, StoreError>>
    where
        R: Send + 'static,
        F: FnOnce(&mut redb::Table<&str, (&str, &str, i64)>) -> Result<Vec<R>, redb::Error>
            + Send
            + 'static,
    {
        let db = self.db.clone();
        let run = move || -> Result<Vec<R>, redb::Error> {
            let txn = db.begin_write()?;
            let out = {
                let mut table = txn.open_table(CLAIMS)?;
                f(&mut table)?
            };
            txn.commit()?;
            Ok(out)
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(Ok(v)) => v.into_iter().map(Ok).collect(),
            Ok(Err(e)) => (0..n).map(|_| Err(store_err(operation, &e))).collect(),
            Err(e) => (0..n).map(|_| Err(store_err(operation, &e))).collect(),
        }
    }
}

fn holder_of(v: (&str, &str, i64)) -> Holder {
    Holder {
        owner: v.0.to_string(),
        object_key: v.1.to_string(),
        claimed_at: v.2,
    }
}

impl DedupStore for RedbStore {
    async fn claim(&self, claims: &[Claim<'_>], now: i64) -> Vec<Result<ClaimOutcome, StoreError>> {
        let owned: Vec<(String, String, String)> = claims
            .iter()
            .map(|c| (c.event_uuid.into(), c.owner.into(), c.object_key.into()))
            .collect();
        self.with_table("claim", claims.len(), move |table| {
            // B-tree work in key order (neighbouring inserts touch the same
            // pages, where random uuids touch pages all over); answers in
            // request order.
            // The sort is stable, so of two equal keys the first still wins.
            let mut order: Vec<usize> = (0..owned.len()).collect();
            order.sort_by(|&a, &b| owned[a].0.cmp(&owned[b].0));
            let mut out: Vec<Option<ClaimOutcome>> = (0..owned.len()).map(|_| None).collect();
            for i in order {
                let (uuid, owner, key) = &owned[i];
                // one B-tree walk for the usual case (not claimed yet): insert,
                // and put the holder back in the rare case there was one
                let previous = table
                    .insert(uuid.as_str(), (owner.as_str(), key.as_str(), now))?
                    .map(|g| holder_of(g.value()));
                out[i] = Some(match previous {
                    None => ClaimOutcome::Claimed,
                    Some(h) => {
                        table.insert(
                            uuid.as_str(),
                            (h.owner.as_str(), h.object_key.as_str(), h.claimed_at),
                        )?;
                        ClaimOutcome::Held(h)
                    }
                });
            }
            // every slot was filled above
            Ok(out.into_iter().flatten().collect())
        })
        .await
    }

    async fn transfer(
        &self,
        transfers: &[Transfer<'_>],
        now: i64,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        let owned: Vec<[String; 5]> = transfers
            .iter()
            .map(|t| {
                [
                    t.event_uuid.into(),
                    t.from_owner.into(),
                    t.from_key.into(),
                    t.to.owner.into(),
                    t.to.object_key.into(),
                ]
            })
            .collect();
        self.with_table("transfer", transfers.len(), move |table| {
            let mut out = Vec::with_capacity(owned.len());
            for [uuid, from_owner, from_key, owner, key] in &owned {
                let held = table.get(uuid.as_str())?.map(|g| holder_of(g.value()));
                match held {
                    Some(h) if &h.owner != from_owner || &h.object_key != from_key => {
                        out.push(ClaimOutcome::Held(h))
                    }
                    _ => {
                        table.insert(uuid.as_str(), (owner.as_str(), key.as_str(), now))?;
                        out.push(ClaimOutcome::Claimed);
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim<'a>(uuid: &'a str, owner: &'a str, key: &'a str) -> Claim<'a> {
        Claim {
            event_uuid: uuid,
            owner,
            object_key: key,
        }
    }

    #[tokio::test]
    async fn first_claim_wins_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = default_path(dir.path());
        {
            let s = RedbStore::open(&path).expect("open");
            let r = s.claim(&[claim("u1", "o1", "k1")], 10).await;
            assert!(matches!(r[0], Ok(ClaimOutcome::Claimed)));
        }
        let s = RedbStore::open(&path).expect("reopen");
        let r = s
            .claim(&[claim("u1", "o2", "k2"), claim("u2", "o2", "k2")], 20)
            .await;
        match &r[0] {
            Ok(ClaimOutcome::Held(h)) => {
                assert_eq!(
                    (h.owner.as_str(), h.object_key.as_str(), h.claimed_at),
                    ("o1", "k1", 10)
                )
            }
            other => panic!("expected held, got {other:?}"),
        }
        assert!(matches!(r[1], Ok(ClaimOutcome::Claimed)));
        assert_eq!(s.len().expect("len"), 2);
    }

    #[tokio::test]
    async fn answers_come_in_request_order_and_the_first_of_equal_keys_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RedbStore::open(&default_path(dir.path())).expect("open");
        let r = s
            .claim(
                &[
                    claim("zz", "o1", "k1"),
                    claim("aa", "o2", "k2"),
                    claim("zz", "o3", "k3"),
                    claim("mm", "o4", "k4"),
                ],
                5,
            )
            .await;
        let got: Vec<String> = r
            .iter()
            .map(|o| match o {
                Ok(ClaimOutcome::Claimed) => "claimed".to_string(),
                Ok(ClaimOutcome::Held(h)) => format!("held by {}", h.owner),
                Err(e) => format!("error {e}"),
            })
            .collect();
        assert_eq!(got, ["claimed", "claimed", "held by o1", "claimed"]);
        // the losing claim left the holder as it was
        let h = s.holder("zz").expect("read").expect("claimed");
        assert_eq!(
            (h.owner.as_str(), h.object_key.as_str(), h.claimed_at),
            ("o1", "k1", 5)
        );
        let later = s.claim(&[claim("zz", "o9", "k9")], 9).await;
        assert!(matches!(&later[0], Ok(ClaimOutcome::Held(h)) if h.owner == "o1"));
        assert_eq!(
            s.holder("zz").expect("read").map(|h| h.owner),
            Some("o1".into())
        );
    }

    #[tokio::test]
    async fn transfer_only_if_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RedbStore::open(&default_path(dir.path())).expect("open");
        s.claim(&[claim("u", "o1", "k1")], 1).await;
        let stale = Transfer {
            event_uuid: "u",
            from_owner: "o1",
            from_key: "kX",
            to: claim("u", "o2", "k2"),
        };
        assert!(matches!(
            s.transfer(&[stale], 2).await[0],
            Ok(ClaimOutcome::Held(_))
        ));
        let fresh = Transfer {
            from_key: "k1",
            ..stale
        };
        assert!(matches!(
            s.transfer(&[fresh], 3).await[0],
            Ok(ClaimOutcome::Claimed)
        ));
        let h = s.holder("u").expect("read").expect("held");
        assert_eq!((h.owner.as_str(), h.object_key.as_str()), ("o2", "k2"));
    }

    #[test]
    fn a_second_process_gets_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = default_path(dir.path());
        let _first = RedbStore::open(&path).expect("open");
        let err = RedbStore::open(&path).expect_err("second open");
        assert!(err.to_string().contains("in use"), "{err}");
    }
}

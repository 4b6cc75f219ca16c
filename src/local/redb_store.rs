//! The embedded dedup store: a `redb` database file inside the lake folder
//! (`LAKE/_state/dedup.redb`). One write transaction per batch, so a batch's
//! claims are durable together with one fsync. Claims never expire locally.
//!
//! A claim stores numbers for the strings its batch shares: the destination
//! file's key and the owner's prefix (`kinesis:STREAM/SHARD/`, `file:PATH#`)
//! are kept once each in a names table. That makes the database about a
//! quarter of the size it was with the strings in every claim (format 1: ~700
//! bytes of database per claim, now ~200; timings in BENCHMARKS.md).
//! A format 1 database is converted when it is opened.

use foldhash::{HashMap, HashMapExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, Table, TableDefinition, TableHandle as _,
    WriteTransaction,
};

use crate::core::dedup::{Claim, ClaimOutcome, DedupStore, Holder, StoreError, Transfer};

/// uuid -> (owner prefix name, owner's rest, object key name, claimed at)
const CLAIMS: TableDefinition<&str, (u64, &str, u64, i64)> = TableDefinition::new("claims_v2");
/// name number -> the string (an object key or an owner prefix)
const NAMES: TableDefinition<u64, &str> = TableDefinition::new("names");
/// the string -> its name number
const NAME_NUMBERS: TableDefinition<&str, u64> = TableDefinition::new("name_numbers");
/// Format 1: uuid -> (owner, object key, claimed at). Converted on open.
const CLAIMS_V1: TableDefinition<&str, (&str, &str, i64)> = TableDefinition::new("claims");

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

/// An owner split where the records of one source differ: after the last `/`
/// or `#` (`kinesis:STREAM/SHARD/` + sequence number, `file:PATH#` + line).
fn split_owner(owner: &str) -> (&str, &str) {
    let at = owner.rfind(['/', '#']).map_or(0, |i| i + 1);
    owner.split_at(at)
}

/// The tables of one write transaction, with the names it has looked up.
struct Tables<'t> {
    claims: Table<'t, &'static str, (u64, &'static str, u64, i64)>,
    names: Table<'t, u64, &'static str>,
    numbers: Table<'t, &'static str, u64>,
    known: HashMap<String, u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, redb::Error> {
        Ok(Tables {
            claims: txn.open_table(CLAIMS)?,
            names: txn.open_table(NAMES)?,
            numbers: txn.open_table(NAME_NUMBERS)?,
            known: HashMap::new(),
        })
    }

    /// The number of a name, given one if new.
    fn number(&mut self, name: &str) -> Result<u64, redb::Error> {
        if let Some(&n) = self.known.get(name) {
            return Ok(n);
        }
        let found = self.numbers.get(name)?.map(|n| n.value());
        let n = match found {
            Some(n) => n,
            None => {
                let n = self.names.last()?.map_or(0, |(k, _)| k.value() + 1);
                self.names.insert(n, name)?;
                self.numbers.insert(name, n)?;
                n
            }
        };
        self.known.insert(name.to_string(), n);
        Ok(n)
    }

    /// A claim's stored value.
    fn value<'c>(
        &mut self,
        owner: &'c str,
        key: &str,
        at: i64,
    ) -> Result<(u64, &'c str, u64, i64), redb::Error> {
        let (prefix, rest) = split_owner(owner);
        Ok((self.number(prefix)?, rest, self.number(key)?, at))
    }

    /// The holder a stored value names.
    fn holder(&self, v: (u64, &str, u64, i64)) -> Result<Holder, redb::Error> {
        holder_of(&self.names, v)
    }
}

/// The holder a stored value names, its numbers looked up in `names`.
fn holder_of(
    names: &impl redb::ReadableTable<u64, &'static str>,
    (prefix, rest, key, at): (u64, &str, u64, i64),
) -> Result<Holder, redb::Error> {
    let name = |n: u64| -> Result<String, redb::Error> {
        match names.get(n)? {
            Some(g) => Ok(g.value().to_string()),
            // written in the same transaction as every claim that uses it
            None => Err(redb::Error::Corrupted(format!(
                "name {n} of a claim is missing: the dedup database is damaged; restore it \
                 from a backup, or move it away to start a new one (events already in the \
                 lake would then be written again if their input is ingested again)"
            ))),
        }
    };
    Ok(Holder {
        owner: name(prefix)? + rest,
        object_key: name(key)?,
        claimed_at: at,
    })
}

/// Converts a format 1 claims table, if any, in the transaction.
fn convert_v1(txn: &WriteTransaction) -> Result<(), redb::Error> {
    if !txn.list_tables()?.any(|t| t.name() == CLAIMS_V1.name()) {
        return Ok(());
    }
    {
        let old = txn.open_table(CLAIMS_V1)?;
        let mut tables = Tables::open(txn)?;
        for entry in old.iter()? {
            let (uuid, v) = entry?;
            let (owner, key, at) = v.value();
            let value = tables.value(owner, key, at)?;
            tables.claims.insert(uuid.value(), value)?;
        }
    }
    txn.delete_table(CLAIMS_V1)?;
    Ok(())
}

impl RedbStore {
    /// Opens (or creates) the database file, converting a format 1 database.
    /// Only one process may hold it.
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
        // create the tables so that read-only lookups find them
        let setup = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            convert_v1(&txn)?;
            Tables::open(&txn)?;
            txn.commit()?;
            Ok(())
        };
        setup().map_err(|e| store_err("open", format!("{}: {e}", path.display())))?;
        Ok(RedbStore { db: Arc::new(db) })
    }

    /// The holder of a uuid, if claimed.
    pub fn holder(&self, uuid: &str) -> Result<Option<Holder>, StoreError> {
        let read = || -> Result<Option<Holder>, redb::Error> {
            let txn = self.db.begin_read()?;
            let claims = txn.open_table(CLAIMS)?;
            let names = txn.open_table(NAMES)?;
            let Some(v) = claims.get(uuid)? else {
                return Ok(None);
            };
            holder_of(&names, v.value()).map(Some)
        };
        read().map_err(|e| store_err("read", e))
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

    /// Runs `f` over the tables in one write transaction, off the async
    /// threads (the commit syncs to disk).
    async fn with_tables<R, F>(
        &self,
        operation: &'static str,
        n: usize,
        f: F,
    ) -> Vec<Result<R, StoreError>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<Vec<R>, redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let run = move || -> Result<Vec<R>, redb::Error> {
            let started = std::time::Instant::now();
            let txn = db.begin_write()?;
            let out = f(&mut Tables::open(&txn)?)?;
            let worked = started.elapsed();
            txn.commit()?;
            tracing::debug!(
                operation,
                records = n,
                work_ms = worked.as_secs_f64() * 1e3,
                commit_ms = (started.elapsed() - worked).as_secs_f64() * 1e3,
                "dedup store transaction"
            );
            Ok(out)
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(Ok(v)) => v.into_iter().map(Ok).collect(),
            Ok(Err(e)) => (0..n).map(|_| Err(store_err(operation, &e))).collect(),
            Err(e) => (0..n).map(|_| Err(store_err(operation, &e))).collect(),
        }
    }
}

impl DedupStore for RedbStore {
    async fn claim(&self, claims: &[Claim<'_>], now: i64) -> Vec<Result<ClaimOutcome, StoreError>> {
        let owned: Vec<(String, String, String)> = claims
            .iter()
            .map(|c| (c.event_uuid.into(), c.owner.into(), c.object_key.into()))
            .collect();
        self.with_tables("claim", claims.len(), move |t| {
            // B-tree work in key order (neighbouring inserts touch the same
            // pages, where random uuids touch pages all over); answers in
            // request order.
            // The sort is stable, so of two equal keys the first still wins.
            let mut order: Vec<usize> = (0..owned.len()).collect();
            order.sort_by(|&a, &b| owned[a].0.cmp(&owned[b].0));
            let mut out: Vec<Option<ClaimOutcome>> = (0..owned.len()).map(|_| None).collect();
            for i in order {
                let (uuid, owner, key) = &owned[i];
                let value = t.value(owner, key, now)?;
                // one B-tree walk for the usual case (not claimed yet): insert,
                // and put the holder back in the rare case there was one
                let previous = t.claims.insert(uuid.as_str(), value)?.map(|g| {
                    let (p, r, k, at) = g.value();
                    (p, r.to_string(), k, at)
                });
                out[i] = Some(match previous {
                    None => ClaimOutcome::Claimed,
                    Some((p, r, k, at)) => {
                        t.claims.insert(uuid.as_str(), (p, r.as_str(), k, at))?;
                        ClaimOutcome::Held(t.holder((p, &r, k, at))?)
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
        self.with_tables("transfer", transfers.len(), move |t| {
            let mut out = Vec::with_capacity(owned.len());
            for [uuid, from_owner, from_key, owner, key] in &owned {
                let held = match t.claims.get(uuid.as_str())? {
                    Some(g) => Some(t.holder(g.value())?),
                    None => None,
                };
                match held {
                    Some(h) if &h.owner != from_owner || &h.object_key != from_key => {
                        out.push(ClaimOutcome::Held(h))
                    }
                    _ => {
                        let value = t.value(owner, key, now)?;
                        t.claims.insert(uuid.as_str(), value)?;
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

    #[tokio::test]
    async fn a_format_1_database_is_converted_on_open_with_every_claim() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = default_path(dir.path());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let old = [
            ("u1", "kinesis:s/shardId-1/101", "t=a/part-1.parquet", 7),
            ("u2", "kinesis:s/shardId-1/102", "t=a/part-1.parquet", 7),
            ("u3", "file:/in/x.ndjson#9", "t=b/part-2.parquet", 8),
        ];
        {
            let db = Database::create(&path).expect("create v1");
            let txn = db.begin_write().expect("txn");
            {
                let mut t = txn.open_table(CLAIMS_V1).expect("v1 table");
                for (u, o, k, at) in old {
                    t.insert(u, (o, k, at)).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
        let s = RedbStore::open(&path).expect("open converts");
        assert_eq!(s.len().expect("len"), 3);
        for (u, o, k, at) in old {
            let h = s.holder(u).expect("read").expect("converted");
            assert_eq!(
                (h.owner.as_str(), h.object_key.as_str(), h.claimed_at),
                (o, k, at)
            );
        }
        // the converted claims hold, and the old table is gone
        let r = s.claim(&[claim("u3", "o9", "k9")], 9).await;
        assert!(matches!(&r[0], Ok(ClaimOutcome::Held(h)) if h.owner == "file:/in/x.ndjson#9"));
        drop(s);
        let db = Database::open(&path).expect("reopen raw");
        let txn = db.begin_read().expect("read");
        let tables: Vec<String> = txn
            .list_tables()
            .expect("tables")
            .map(|t| t.name().to_string())
            .collect();
        assert!(!tables.contains(&"claims".to_string()), "{tables:?}");
    }

    #[tokio::test]
    async fn owners_and_keys_shared_by_claims_come_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RedbStore::open(&default_path(dir.path())).expect("open");
        let claims = [
            claim("a", "kinesis:s/shardId-0/5", "p/part-x.parquet"),
            claim("b", "kinesis:s/shardId-0/6", "p/part-x.parquet"),
            claim("c", "no-separator", "q/part-y.parquet"),
            claim("d", "", ""),
        ];
        assert!(
            s.claim(&claims, 1)
                .await
                .iter()
                .all(|r| matches!(r, Ok(ClaimOutcome::Claimed)))
        );
        for c in claims {
            let h = s.holder(c.event_uuid).expect("read").expect("held");
            assert_eq!(
                (h.owner.as_str(), h.object_key.as_str()),
                (c.owner, c.object_key)
            );
        }
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

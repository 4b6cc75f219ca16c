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
//!
//! Format 3: a claim whose uuid is a UUID in canonical text form (36
//! characters, lower-case hex, as UUID libraries print them) is keyed by its
//! 16 bytes; any other uuid text keeps its text as key. Half the key bytes
//! make a smaller tree (~180 bytes of database per claim), and each batch's
//! commit rewrites fewer pages (BENCHMARKS.md). Claims of older databases are
//! moved when opened.

use foldhash::{HashMap, HashMapExt as _};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, Table, TableDefinition, TableHandle as _,
    WriteTransaction,
};

use crate::core::dedup::{Claim, ClaimOutcome, DedupStore, Holder, StoreError, Transfer};

/// A stored claim: (owner prefix name, owner's rest, object key name, claimed at).
type ClaimValue = (u64, &'static str, u64, i64);
/// uuid -> its claim, for uuids that are not canonical UUID text (see [`claim_key`])
const CLAIMS: TableDefinition<&str, ClaimValue> = TableDefinition::new("claims_v2");
/// The same, keyed by the 16 bytes of uuids in canonical UUID text form.
const UUID_CLAIMS: TableDefinition<[u8; 16], ClaimValue> = TableDefinition::new("claims_v3_uuid");
/// Conversions done: `claims` is 3 once canonical uuids are keyed by bytes.
const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("format");
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
    path: PathBuf,
    /// Set once the database was found damaged: it is not used again.
    damaged: Arc<Mutex<Option<String>>>,
}

/// What to say about a damaged database at `path`: what is wrong and what to
/// do (the lake's own files hold every claim, see `rebuild-state`).
pub fn damaged_message(path: &Path, detail: &str) -> String {
    let lake = path
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| "LAKE".to_string(), |l| l.display().to_string());
    format!(
        "the dedup store {} is damaged ({detail}); nothing more was written. Move it aside \
         (mv {0} {0}.damaged) and run `kinesis-lake rebuild-state --lake {lake}` to rebuild \
         the claims from the lake's files, then run the same ingest again",
        path.display()
    )
}

thread_local! {
    /// Whether this thread is inside [`guarded`]: its panics are ours to report.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (redb calls), turning a panic into an error with its message.
/// redb panics on some damaged pages (`unreachable`) instead of returning
/// `Corrupted`; the panic is not printed, as the error says it.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.get() {
                previous(info)
            }
        }));
    });
    let outer = GUARDED.replace(true);
    let out = std::panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.set(outer);
    out.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("a panic in redb");
        format!("redb: {message}")
    })
}

/// Whether a redb error says the file is damaged (rather than, say, full).
fn is_corruption(e: &redb::Error) -> bool {
    match e {
        redb::Error::Corrupted(_) => true,
        redb::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
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

/// How a claim's uuid is stored.
#[derive(Debug, PartialEq, Eq)]
enum ClaimKey<'a> {
    /// A UUID in canonical text form, which these bytes print back exactly.
    Uuid([u8; 16]),
    /// Any other text, as is.
    Text(&'a str),
}

/// A uuid's key: its 16 bytes when it is hyphenated lower-case UUID text
/// (`Uuid::to_string` of the bytes gives it back), else the text itself, so
/// that `ABC…` and `abc…` stay two event uuids as they are two strings.
fn claim_key(uuid: &str) -> ClaimKey<'_> {
    if uuid.len() == 36
        && !uuid.bytes().any(|b| b.is_ascii_uppercase())
        && let Ok(u) = uuid::Uuid::try_parse(uuid)
    {
        return ClaimKey::Uuid(*u.as_bytes());
    }
    ClaimKey::Text(uuid)
}

/// A stored claim value with its owner's rest owned.
type StoredClaim = (u64, String, u64, i64);

fn owned(v: (u64, &str, u64, i64)) -> StoredClaim {
    (v.0, v.1.to_string(), v.2, v.3)
}

/// An owner split where the records of one source differ: after the last `/`
/// or `#` (`kinesis:STREAM/SHARD/` + sequence number, `file:PATH#` + line).
fn split_owner(owner: &str) -> (&str, &str) {
    let at = owner.rfind(['/', '#']).map_or(0, |i| i + 1);
    owner.split_at(at)
}

/// The tables of one write transaction, with the names it has looked up.
struct Tables<'t> {
    claims: Table<'t, &'static str, ClaimValue>,
    uuids: Table<'t, [u8; 16], ClaimValue>,
    names: Table<'t, u64, &'static str>,
    numbers: Table<'t, &'static str, u64>,
    known: HashMap<String, u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, redb::Error> {
        Ok(Tables {
            claims: txn.open_table(CLAIMS)?,
            uuids: txn.open_table(UUID_CLAIMS)?,
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

    /// Stores a claim, giving back the one it replaced.
    fn insert_claim(
        &mut self,
        uuid: &str,
        value: (u64, &str, u64, i64),
    ) -> Result<Option<StoredClaim>, redb::Error> {
        let previous = match claim_key(uuid) {
            ClaimKey::Uuid(b) => self.uuids.insert(b, value)?,
            ClaimKey::Text(t) => self.claims.insert(t, value)?,
        };
        Ok(previous.map(|g| owned(g.value())))
    }

    /// The claim stored for a uuid.
    fn get_claim(&self, uuid: &str) -> Result<Option<StoredClaim>, redb::Error> {
        Ok(claim_of(&self.claims, &self.uuids, uuid)?.map(|g| owned(g.value())))
    }
}

/// The stored claim of a uuid, from the table its key form lives in.
fn claim_of<'t>(
    texts: &'t impl redb::ReadableTable<&'static str, ClaimValue>,
    uuids: &'t impl redb::ReadableTable<[u8; 16], ClaimValue>,
    uuid: &str,
) -> Result<Option<redb::AccessGuard<'t, ClaimValue>>, redb::Error> {
    Ok(match claim_key(uuid) {
        ClaimKey::Uuid(b) => uuids.get(b)?,
        ClaimKey::Text(t) => texts.get(t)?,
    })
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
            tables.insert_claim(uuid.value(), value)?;
        }
    }
    txn.delete_table(CLAIMS_V1)?;
    Ok(())
}

/// Moves the claims of canonical UUID text to the byte-keyed table, once
/// (format 2 kept every uuid as text).
fn convert_uuid_keys(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut format = txn.open_table(FORMAT)?;
    if format.get("claims")?.is_some_and(|v| v.value() >= 3) {
        return Ok(());
    }
    let mut moved = 0u64;
    {
        let mut text = txn.open_table(CLAIMS)?;
        let mut uuids = txn.open_table(UUID_CLAIMS)?;
        for entry in text.extract_if(|k, _| matches!(claim_key(k), ClaimKey::Uuid(_)))? {
            let (k, v) = entry?;
            if let ClaimKey::Uuid(b) = claim_key(k.value()) {
                uuids.insert(b, v.value())?;
                moved += 1;
            }
        }
    }
    if moved > 0 {
        tracing::info!(
            claims = moved,
            "dedup database converted: UUID claims keyed by their 16 bytes"
        );
    }
    format.insert("claims", 3)?;
    Ok(())
}

impl RedbStore {
    /// Opens (or creates) the database file, converting a format 1 database.
    /// Only one process may hold it. A damaged file is an error that says so
    /// and what to do ([`damaged_message`]), never a panic.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| store_err("open", format!("cannot create {}: {e}", dir.display())))?;
        }
        let damaged = |detail: &dyn std::fmt::Display| {
            store_err("open", damaged_message(path, &detail.to_string()))
        };
        let db = guarded(|| Database::create(path))
            .map_err(|p| damaged(&p))?
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => store_err(
                    "open",
                    format!(
                        "{} is in use by another kinesis-lake process; wait for it to finish",
                        path.display()
                    ),
                ),
                e => {
                    let e: redb::Error = e.into();
                    if is_corruption(&e) {
                        damaged(&e)
                    } else {
                        store_err("open", format!("{}: {e}", path.display()))
                    }
                }
            })?;
        // create the tables so that read-only lookups find them
        let setup = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            convert_v1(&txn)?;
            Tables::open(&txn)?;
            convert_uuid_keys(&txn)?;
            txn.commit()?;
            Ok(())
        };
        match guarded(setup) {
            Err(p) => return Err(damaged(&p)),
            Ok(Err(e)) if is_corruption(&e) => return Err(damaged(&e)),
            Ok(Err(e)) => return Err(store_err("open", format!("{}: {e}", path.display()))),
            Ok(Ok(())) => {}
        }
        Ok(RedbStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
            damaged: Arc::default(),
        })
    }

    /// Why the database was found damaged while in use, if it was: the
    /// message to stop with ([`damaged_message`]).
    pub fn damage(&self) -> Option<String> {
        self.damaged.lock().ok().and_then(|d| d.clone())
    }

    /// Runs redb calls on the database, unless it was found damaged; a
    /// panic or a corruption error marks it damaged.
    fn use_db<R>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Database) -> Result<R, redb::Error>,
    ) -> Result<R, StoreError> {
        use_db(&self.db, &self.path, &self.damaged, operation, f)
    }

    /// The holder of a uuid, if claimed.
    pub fn holder(&self, uuid: &str) -> Result<Option<Holder>, StoreError> {
        let read = || -> Result<Option<Holder>, redb::Error> {
            let txn = self.db.begin_read()?;
            let (texts, uuids) = (txn.open_table(CLAIMS)?, txn.open_table(UUID_CLAIMS)?);
            let Some(v) = claim_of(&texts, &uuids, uuid)? else {
                return Ok(None);
            };
            holder_of(&txn.open_table(NAMES)?, v.value()).map(Some)
        };
        self.use_db("read", |_| read())
    }

    /// Number of claims stored.
    pub fn len(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata as _;
        let count = || -> Result<u64, redb::Error> {
            let txn = self.db.begin_read()?;
            Ok(txn.open_table(CLAIMS)?.len()? + txn.open_table(UUID_CLAIMS)?.len()?)
        };
        self.use_db("read", |_| count())
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
        let (db, path, damaged) = (self.db.clone(), self.path.clone(), self.damaged.clone());
        let run = move || {
            use_db(&db, &path, &damaged, operation, |db| {
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
            })
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(Ok(v)) => v.into_iter().map(Ok).collect(),
            Ok(Err(e)) => (0..n)
                .map(|_| Err(store_err(e.operation, &e.message)))
                .collect(),
            Err(e) => (0..n).map(|_| Err(store_err(operation, &e))).collect(),
        }
    }
}

/// [`RedbStore::use_db`] for a database handle moved to another thread.
fn use_db<R>(
    db: &Database,
    path: &Path,
    damaged: &Mutex<Option<String>>,
    operation: &'static str,
    f: impl FnOnce(&Database) -> Result<R, redb::Error>,
) -> Result<R, StoreError> {
    if let Some(message) = damaged.lock().ok().and_then(|d| d.clone()) {
        return Err(store_err(operation, message));
    }
    let detail = match guarded(|| f(db)) {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) if !is_corruption(&e) => return Err(store_err(operation, e)),
        Ok(Err(e)) => e.to_string(),
        Err(panic) => panic,
    };
    let message = damaged_message(path, &detail);
    if let Ok(mut d) = damaged.lock() {
        d.get_or_insert_with(|| message.clone());
    }
    Err(store_err(operation, message))
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
                out[i] = Some(match t.insert_claim(uuid, value)? {
                    None => ClaimOutcome::Claimed,
                    Some((p, r, k, at)) => {
                        t.insert_claim(uuid, (p, r.as_str(), k, at))?;
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
                let held = match t.get_claim(uuid)? {
                    Some((p, r, k, at)) => Some(t.holder((p, &r, k, at))?),
                    None => None,
                };
                match held {
                    Some(h) if &h.owner != from_owner || &h.object_key != from_key => {
                        out.push(ClaimOutcome::Held(h))
                    }
                    _ => {
                        let value = t.value(owner, key, now)?;
                        t.insert_claim(uuid, value)?;
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

    #[test]
    fn canonical_uuid_text_is_keyed_by_its_bytes_and_nothing_else() {
        let canonical = "0190f5e2-7a3b-7cde-8f01-23456789abcd";
        match claim_key(canonical) {
            ClaimKey::Uuid(b) => assert_eq!(uuid::Uuid::from_bytes(b).to_string(), canonical),
            other => panic!("expected bytes, got {other:?}"),
        }
        for text in [
            "0190F5E2-7A3B-7CDE-8F01-23456789ABCD", // upper case: another string
            "0190f5e27a3b7cde8f0123456789abcd",     // no hyphens
            "{0190f5e2-7a3b-7cde-8f01-23456789abcd}", // braced
            "0190f5e2-7a3b-7cde-8f0123-456789abcd", // hyphens elsewhere
            "0190f5e2-7a3b-7cde-8f01-23456789abcg", // not hex
            "evt-42",
            "",
        ] {
            assert_eq!(claim_key(text), ClaimKey::Text(text), "{text}");
        }
    }

    #[tokio::test]
    async fn uuids_keyed_by_bytes_are_claimed_held_and_transferred_like_any() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RedbStore::open(&default_path(dir.path())).expect("open");
        let lower = "0190f5e2-7a3b-7cde-8f01-23456789abcd";
        let upper = "0190F5E2-7A3B-7CDE-8F01-23456789ABCD";
        let r = s
            .claim(
                &[
                    claim(lower, "o1", "k1"),
                    claim(upper, "o2", "k2"),
                    claim(lower, "o3", "k3"),
                ],
                1,
            )
            .await;
        assert!(matches!(r[0], Ok(ClaimOutcome::Claimed)));
        assert!(
            matches!(r[1], Ok(ClaimOutcome::Claimed)),
            "another string, another event"
        );
        assert!(matches!(&r[2], Ok(ClaimOutcome::Held(h)) if h.owner == "o1"));
        assert_eq!(s.len().expect("len"), 2);
        let moved = Transfer {
            event_uuid: lower,
            from_owner: "o1",
            from_key: "k1",
            to: claim(lower, "o4", "k4"),
        };
        assert!(matches!(
            s.transfer(&[moved], 2).await[0],
            Ok(ClaimOutcome::Claimed)
        ));
        let h = s.holder(lower).expect("read").expect("held");
        assert_eq!((h.owner.as_str(), h.object_key.as_str()), ("o4", "k4"));
        assert_eq!(
            s.holder(upper).expect("read").map(|h| h.owner),
            Some("o2".into())
        );
    }

    #[tokio::test]
    async fn a_format_2_database_has_its_uuid_claims_moved_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = default_path(dir.path());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let uuid = "6f1c0e8e-5b7a-4d2c-9e3f-0a1b2c3d4e5f";
        {
            // format 2: every uuid as text, names numbered, no format table
            let db = Database::create(&path).expect("create v2");
            let txn = db.begin_write().expect("txn");
            {
                let mut claims = txn.open_table(CLAIMS).expect("claims");
                let mut names = txn.open_table(NAMES).expect("names");
                let mut numbers = txn.open_table(NAME_NUMBERS).expect("numbers");
                for (n, name) in [(0u64, "kinesis:s/shardId-1/"), (1, "t=a/part-1.parquet")] {
                    names.insert(n, name).expect("name");
                    numbers.insert(name, n).expect("number");
                }
                claims
                    .insert(uuid, (0u64, "101", 1u64, 7i64))
                    .expect("uuid claim");
                claims
                    .insert("evt-42", (0u64, "102", 1u64, 8i64))
                    .expect("text claim");
            }
            txn.commit().expect("commit");
        }
        let s = RedbStore::open(&path).expect("open converts");
        assert_eq!(s.len().expect("len"), 2);
        for (u, rest, at) in [(uuid, "101", 7), ("evt-42", "102", 8)] {
            let h = s.holder(u).expect("read").expect("kept");
            assert_eq!(
                (h.owner, h.object_key.as_str(), h.claimed_at),
                (
                    format!("kinesis:s/shardId-1/{rest}"),
                    "t=a/part-1.parquet",
                    at
                )
            );
        }
        let r = s.claim(&[claim(uuid, "o9", "k9")], 9).await;
        assert!(matches!(&r[0], Ok(ClaimOutcome::Held(h)) if h.claimed_at == 7));
        drop(s);
        // moved, not copied; opening again changes nothing
        let s = RedbStore::open(&path).expect("reopen");
        assert_eq!(s.len().expect("len"), 2);
        drop(s);
        let db = Database::open(&path).expect("reopen raw");
        let txn = db.begin_read().expect("read");
        let text: Vec<String> = txn
            .open_table(CLAIMS)
            .expect("claims")
            .iter()
            .expect("iter")
            .map(|e| e.expect("entry").0.value().to_string())
            .collect();
        assert_eq!(text, ["evt-42"]);
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

    #[tokio::test]
    async fn damage_found_in_use_stops_every_later_call_with_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = default_path(dir.path());
        let s = RedbStore::open(&path).expect("open");
        // a panic inside redb (as on some damaged pages) is an error of ours
        let err = s
            .use_db("claim", |_| -> Result<(), redb::Error> {
                panic!("internal error: entered unreachable code")
            })
            .expect_err("damaged");
        assert!(err.message.contains("is damaged"), "{err}");
        assert!(err.message.contains("unreachable code"), "{err}");
        assert!(err.message.contains("rebuild-state --lake"), "{err}");
        assert!(s.damage().is_some());
        // the database is not touched again
        let r = s.claim(&[claim("u", "o", "k")], 1).await;
        assert!(matches!(&r[0], Err(e) if e.message.contains("is damaged")));
        // a corruption error marks it the same way; other errors do not
        let fresh = tempfile::tempdir().expect("tempdir");
        let t = RedbStore::open(&default_path(fresh.path())).expect("open");
        let full = t.use_db("claim", |_| -> Result<(), redb::Error> {
            Err(redb::Error::ValueTooLarge(1))
        });
        assert!(full.is_err() && t.damage().is_none());
        let bad = t.use_db("claim", |_| -> Result<(), redb::Error> {
            Err(redb::Error::Corrupted("bad page".into()))
        });
        assert!(bad.is_err() && t.damage().is_some_and(|d| d.contains("bad page")));
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

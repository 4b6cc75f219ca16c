//! Publication windows and the keys of the staged lake: where each batch's
//! staging object goes, and where the publisher records what it published.
//! Pure functions; no I/O.
//!
//! ```text
//! _staging/window=20240317T101500Z/<input id>.<n>.kls      one object per batch
//! _publish/window=20240317T101500Z/g0000.plan.json          what generation 0 publishes
//! _publish/window=20240317T101500Z/g0000.done.json          it is published (the record)
//! _publish/final/window=20240317T101500Z.json               no staging object can still land
//! ```
//!
//! A batch stages into the window of the time it started. A window is
//! published once it has closed (its end plus a grace period); a staging
//! object that lands after that (a writer that ran long) is published by a
//! later generation of the same window. A window is final when no writer can
//! still be running with it: its end plus the claim lease.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::core::partition::join_prefix;

/// The folder of staging objects, relative to the lake root. Hive-style
/// readers skip folders whose names start with `_`; staging objects do not
/// end in `.parquet`, so `lake/**/*.parquet` globs never match them either.
pub const STAGING_DIR: &str = "_staging";

/// The folder of the publisher's records, relative to the lake root.
pub const PUBLISH_DIR: &str = "_publish";

/// The ending of staging objects.
pub const STAGING_SUFFIX: &str = ".kls";

/// Default window length: Firehose's default buffer interval.
pub const DEFAULT_WINDOW_SECS: u32 = 300;

/// Accepted window lengths (0 means no staging: direct writes).
pub const WINDOW_SECS_RANGE: std::ops::RangeInclusive<u32> = 60..=900;

/// A time window of staging objects: `[start, start + secs)`, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// First second of the window.
    pub start: i64,
    /// Its length.
    pub secs: u32,
}

impl Window {
    /// The window holding the instant `t` (Unix seconds).
    pub fn containing(t: i64, secs: u32) -> Window {
        let s = i64::from(secs.max(1));
        Window {
            start: t.div_euclid(s) * s,
            secs: secs.max(1),
        }
    }

    /// First second after the window.
    pub fn end(&self) -> i64 {
        self.start + i64::from(self.secs)
    }

    /// `20240317T101500Z`: sorts as the windows do, fits any file system.
    pub fn id(&self) -> String {
        DateTime::<Utc>::from_timestamp(self.start, 0)
            .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_else(|| format!("{}", self.start))
    }

    /// The start of the window named `id` (see [`Window::id`]).
    pub fn start_of_id(id: &str) -> Option<i64> {
        NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|t| t.and_utc().timestamp())
    }
}

/// The folder of a window's staging objects, `PREFIX/_staging/window=ID/`.
pub fn staging_folder(prefix: &str, window_id: &str) -> String {
    join_prefix(prefix, &format!("{STAGING_DIR}/window={window_id}/"))
}

/// The key of a staging object: its window's folder, the batch's input id
/// and the lowest number that makes it new.
pub fn staging_key(prefix: &str, window_id: &str, input_id: &str, n: u32) -> String {
    format!(
        "{}{input_id}.{n}{STAGING_SUFFIX}",
        staging_folder(prefix, window_id)
    )
}

/// The window id of a staging object's key, if it is one.
pub fn window_of_staging_key(key: &str) -> Option<&str> {
    let (_, rest) = key.split_once(&format!("{STAGING_DIR}/window="))?;
    let (id, name) = rest.split_once('/')?;
    (name.ends_with(STAGING_SUFFIX) && !name.contains('/')).then_some(id)
}

/// The window id of a `.../window=ID/` folder.
pub fn window_of_folder(folder: &str) -> Option<&str> {
    let name = folder.trim_end_matches('/').rsplit('/').next()?;
    name.strip_prefix("window=")
}

/// The folder of a window's publication records.
pub fn publish_folder(prefix: &str, window_id: &str) -> String {
    join_prefix(prefix, &format!("{PUBLISH_DIR}/window={window_id}/"))
}

/// The plan of one generation of a window's publication.
pub fn plan_key(prefix: &str, window_id: &str, generation: u32) -> String {
    format!(
        "{}g{generation:04}.plan.json",
        publish_folder(prefix, window_id)
    )
}

/// The record that one generation of a window is published.
pub fn done_key(prefix: &str, window_id: &str, generation: u32) -> String {
    format!(
        "{}g{generation:04}.done.json",
        publish_folder(prefix, window_id)
    )
}

/// A publication record's generation and whether it is a plan (`false`: done).
pub fn record_of_key(key: &str) -> Option<(u32, bool)> {
    let name = key.rsplit('/').next()?;
    let rest = name.strip_prefix('g')?;
    let (n, kind) = rest.split_once('.')?;
    let generation = n.parse().ok()?;
    match kind {
        "plan.json" => Some((generation, true)),
        "done.json" => Some((generation, false)),
        _ => None,
    }
}

/// The folder of the final markers.
pub fn final_folder(prefix: &str) -> String {
    join_prefix(prefix, &format!("{PUBLISH_DIR}/final/"))
}

/// The marker that a window is final: published, and no staging object can
/// land in it any more.
pub fn final_key(prefix: &str, window_id: &str) -> String {
    format!("{}window={window_id}.json", final_folder(prefix))
}

/// The window id of a final marker's key.
pub fn window_of_final_key(key: &str) -> Option<&str> {
    key.rsplit('/')
        .next()?
        .strip_prefix("window=")?
        .strip_suffix(".json")
}

/// A published file's name inside its partition folder: the window, the
/// generation and the part number (a partition's events of one generation
/// are split into parts at the target size). The same publication always
/// names the same files.
pub fn published_file_name(window_id: &str, generation: u32, part: u32) -> String {
    format!("part-{window_id}-g{generation:04}-{part:04}.parquet")
}

/// The id of a batch's input, the same whenever the same records are read
/// again: `first..last` of their owners made safe for a key, and a hash of
/// every owner (FNV-1a, stable across versions and platforms).
pub fn input_id<'a>(owners: impl IntoIterator<Item = &'a str>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let (mut first, mut last): (Option<&str>, Option<&str>) = (None, None);
    for owner in owners {
        first.get_or_insert(owner);
        last = Some(owner);
        for b in owner.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let first = first.map(short_owner).unwrap_or_default();
    let last = last.map(|l| tail_number(l).to_string()).unwrap_or_default();
    format!("{first}-{last}-{hash:016x}")
}

/// A hash of a batch's record bytes (each with its length), to tell apart
/// batches whose inputs have the same id but other content (a file rewritten
/// in place). Stable within a build of this program; a retry after an
/// upgrade may name its staging object anew, and the publisher then drops
/// its events as repeats.
pub fn content_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = foldhash::fast::FixedState::with_seed(0x6b69_6e65_7369_732d).build_hasher();
    for part in parts {
        h.write_usize(part.len());
        h.write(part);
    }
    h.finish()
}

/// An owner reduced to key-safe characters: the shard and sequence number of
/// a Kinesis record, the file name and line of a file's line.
fn short_owner(owner: &str) -> String {
    let tail: String = match owner.strip_prefix("kinesis:") {
        Some(rest) => {
            let mut parts: Vec<&str> = rest.rsplitn(3, '/').take(2).collect();
            parts.reverse();
            parts.join("-")
        }
        None => owner
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(owner)
            .to_string(),
    };
    let safe: String = tail
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let start = safe.len().saturating_sub(96);
    safe[start..].to_string()
}

/// The digits an owner ends with (a sequence or line number).
fn tail_number(owner: &str) -> &str {
    let digits = owner.bytes().rev().take_while(u8::is_ascii_digit).count();
    &owner[owner.len() - digits..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tile_time_and_name_themselves_in_sort_order() {
        let w = Window::containing(1_710_670_530, 300);
        assert_eq!((w.start, w.end()), (1_710_670_500, 1_710_670_800));
        assert_eq!(w.id(), "20240317T101500Z");
        assert_eq!(Window::start_of_id(&w.id()), Some(w.start));
        let next = Window::containing(w.end(), 300);
        assert!(w.id() < next.id());
        assert_eq!(Window::containing(-1, 60).start, -60);
    }

    #[test]
    fn staging_and_record_keys_parse_back() {
        let key = staging_key("lake", "20240317T101500Z", "shard-1-9-abc", 2);
        assert_eq!(
            key,
            "lake/_staging/window=20240317T101500Z/shard-1-9-abc.2.kls"
        );
        assert_eq!(window_of_staging_key(&key), Some("20240317T101500Z"));
        assert_eq!(window_of_staging_key("lake/a=1/part-x.parquet"), None);
        assert_eq!(
            record_of_key(&plan_key("", "20240317T101500Z", 3)),
            Some((3, true))
        );
        assert_eq!(
            record_of_key(&done_key("", "20240317T101500Z", 12)),
            Some((12, false))
        );
        let f = final_key("p", "20240317T101500Z");
        assert_eq!(window_of_final_key(&f), Some("20240317T101500Z"));
        assert_eq!(
            window_of_folder("p/_staging/window=20240317T101500Z/"),
            Some("20240317T101500Z")
        );
    }

    #[test]
    fn the_same_records_give_the_same_input_id_and_others_another() {
        let a = [
            "kinesis:s/shardId-000000000001/4959000001",
            "kinesis:s/shardId-000000000001/4959000007",
        ];
        let id = input_id(a);
        assert_eq!(id, input_id(a));
        assert!(
            id.starts_with("shardId-000000000001-4959000001-4959000007-"),
            "{id}"
        );
        assert_ne!(id, input_id(a[..1].iter().copied()));
        let f = input_id(["file:/data/in put.ndjson#1", "file:/data/in put.ndjson#20"]);
        assert!(f.starts_with("in_put_ndjson_1-20-"), "{f}");
    }
}

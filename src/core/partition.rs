//! Partitioning: Hive-style partition keys, their escaping, and the object keys
//! of data and dead-letter files. Pure functions; no I/O.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::NaiveDate;

/// The value Hive, Spark, Athena, DuckDB and pyarrow read back as SQL NULL.
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// Longest escaped partition value: keeps `event_type=<value>` under the 255
/// byte file-name limit of common filesystems, and S3 keys well under 1024.
pub const MAX_ESCAPED_VALUE_BYTES: usize = 200;

/// The partition columns, in folder order: readers add them to every row.
pub const PARTITION_COLUMNS: [&str; 3] = ["event_type", "event_subtype", "event_date"];

/// The folder of the dead-letter files, relative to the lake root.
pub const ERRORS_DIR: &str = "_errors";

/// Where one event goes in the lake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// First part of `event_name`.
    pub event_type: String,
    /// Second part of `event_name`; `None` when there is none (or it is empty).
    pub event_subtype: Option<String>,
    /// UTC date of `created_at`.
    pub event_date: NaiveDate,
}

impl PartitionKey {
    /// `event_type=T/event_subtype=S/event_date=YYYY-MM-DD`, each value escaped.
    pub fn path(&self) -> String {
        let mut out = String::with_capacity(64 + self.event_type.len());
        out.push_str("event_type=");
        out.push_str(&hive_escape(&self.event_type));
        out.push_str("/event_subtype=");
        match &self.event_subtype {
            Some(s) => out.push_str(&hive_escape(s)),
            None => out.push_str(HIVE_NULL),
        }
        let _ = write!(out, "/event_date={}", format_date(self.event_date));
        out
    }
}

/// `YYYY-MM-DD` with a four-digit year (0001..9999).
pub fn format_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn needs_escape(c: char) -> bool {
    // The set Hive's FileUtils.escapePathName escapes (plus '}' as Spark does):
    // control characters, DEL, and  " # % ' * / : = ? \ [ ] ^ { }
    matches!(
        c,
        '\u{0}'
            ..='\u{1f}'
                | '\u{7f}'
                | '"'
                | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '['
                | ']'
                | '^'
                | '{'
                | '}'
    )
}

/// Escapes a partition value the way Hive does: each byte of a character in the
/// escaped set becomes `%XX` (upper-case hex). Other characters, non-ASCII
/// included, stay as they are. `/` and `\` are always escaped, so no value can
/// name a folder outside its partition.
///
/// A value that is literally [`HIVE_NULL`] has its first `_` escaped
/// (`%5F_HIVE_DEFAULT_PARTITION__`): unescaped it would read back as null and
/// share its folder with the events that have no value.
pub fn hive_escape(value: &str) -> Cow<'_, str> {
    if value == HIVE_NULL {
        return Cow::Owned(format!("%5F{}", &HIVE_NULL[1..]));
    }
    if !value.chars().any(needs_escape) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if needs_escape(c) {
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Reverses [`hive_escape`] (any `%XX` becomes its byte); used by tests and by
/// tools that read the lake back.
pub fn hive_unescape(value: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Joins a lake prefix (may be empty; no leading or trailing slash needed) and
/// a relative key.
pub fn join_prefix(prefix: &str, rel: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        rel.to_string()
    } else {
        format!("{p}/{rel}")
    }
}

/// The key of a data file: `PREFIX/<partition path>/part-<id>.parquet`.
/// `file_id` must be unique per file (a UUIDv7: time-ordered, never reused).
pub fn data_object_key(prefix: &str, partition: &PartitionKey, file_id: &str) -> String {
    join_prefix(
        prefix,
        &format!("{}/part-{file_id}.parquet", partition.path()),
    )
}

/// The key of a dead-letter file:
/// `PREFIX/_errors/ingest_date=YYYY-MM-DD/part-<id>.ndjson`.
pub fn error_object_key(prefix: &str, ingest_date: NaiveDate, file_id: &str) -> String {
    join_prefix(
        prefix,
        &format!(
            "{ERRORS_DIR}/ingest_date={}/part-{file_id}.ndjson",
            format_date(ingest_date)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, s: Option<&str>) -> PartitionKey {
        PartitionKey {
            event_type: t.into(),
            event_subtype: s.map(Into::into),
            event_date: NaiveDate::from_ymd_opt(2024, 3, 17).expect("valid date"),
        }
    }

    #[test]
    fn plain_values_are_not_escaped() {
        assert_eq!(
            key("payment", Some("order")).path(),
            "event_type=payment/event_subtype=order/event_date=2024-03-17"
        );
    }

    #[test]
    fn null_subtype_is_the_hive_default_partition() {
        assert_eq!(
            key("account", None).path(),
            "event_type=account/event_subtype=__HIVE_DEFAULT_PARTITION__/event_date=2024-03-17"
        );
    }

    #[test]
    fn a_value_that_is_the_null_marker_keeps_its_own_folder_and_reads_back() {
        let p = key("account", Some(HIVE_NULL)).path();
        assert_eq!(
            p,
            "event_type=account/event_subtype=%5F_HIVE_DEFAULT_PARTITION__/event_date=2024-03-17"
        );
        assert_ne!(p, key("account", None).path());
        assert_eq!(hive_unescape(&hive_escape(HIVE_NULL)), HIVE_NULL);
        // only the exact marker: a longer value is a plain value
        let longer = format!("{HIVE_NULL}x");
        assert_eq!(hive_escape(&longer), longer.as_str());
        assert_eq!(
            key(HIVE_NULL, None).path(),
            "event_type=%5F_HIVE_DEFAULT_PARTITION__/event_subtype=__HIVE_DEFAULT_PARTITION__/event_date=2024-03-17"
        );
    }

    #[test]
    fn every_special_character_is_percent_encoded() {
        let raw = "a/b=c%d:e?f#g'h\"i\\j*k[l]m^n{o}p\u{1}q\u{7f}";
        let esc = hive_escape(raw);
        assert_eq!(
            esc,
            "a%2Fb%3Dc%25d%3Ae%3Ff%23g%27h%22i%5Cj%2Ak%5Bl%5Dm%5En%7Bo%7Dp%01q%7F"
        );
        assert_eq!(hive_unescape(&esc), raw);
    }

    #[test]
    fn non_ascii_and_dots_stay_readable_and_inside_the_partition() {
        assert_eq!(hive_escape("café"), "café");
        let p = key("..", Some("../../etc")).path();
        assert_eq!(
            p,
            "event_type=../event_subtype=..%2F..%2Fetc/event_date=2024-03-17"
        );
        // every path component starts with its column name: none is `..`
        assert!(p.split('/').all(|c| c.contains('=')));
    }

    #[test]
    fn unescape_leaves_stray_percent_signs() {
        assert_eq!(hive_unescape("100%"), "100%");
        assert_eq!(hive_unescape("%zz"), "%zz");
    }

    #[test]
    fn keys_join_prefix_without_double_slashes() {
        let k = key("a", Some("b"));
        assert_eq!(
            data_object_key("", &k, "X"),
            "event_type=a/event_subtype=b/event_date=2024-03-17/part-X.parquet"
        );
        assert_eq!(
            data_object_key("lake/", &k, "X"),
            "lake/event_type=a/event_subtype=b/event_date=2024-03-17/part-X.parquet"
        );
        let d = NaiveDate::from_ymd_opt(2024, 1, 2).expect("valid date");
        assert_eq!(
            error_object_key("p", d, "Y"),
            "p/_errors/ingest_date=2024-01-02/part-Y.ndjson"
        );
    }

    #[test]
    fn years_below_1000_keep_four_digits() {
        let d = NaiveDate::from_ymd_opt(1, 1, 1).expect("valid date");
        assert_eq!(format_date(d), "0001-01-01");
    }
}

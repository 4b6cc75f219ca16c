//! Validate and enrich: one event's JSON bytes into an [`Event`] with its
//! derived fields (`created_datetime`, `event_type`, `event_subtype`) and its
//! partition, or a [`Reject`] that says which field was wrong and how.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use serde_json::value::RawValue;

use crate::core::columns::FIXED_COLUMN_NAMES;
use crate::core::decode::json_from_bytes;
use crate::core::partition::{
    MAX_ESCAPED_VALUE_BYTES, PARTITION_COLUMNS, PartitionKey, hive_escape,
};
use crate::core::reject::Reject;

/// Lowest accepted `created_at`: 0001-01-01T00:00:00Z.
pub const MIN_CREATED_AT: i64 = -62_135_596_800;
/// Accepted `created_at` values are below this (year 5138). Larger values are
/// almost always milliseconds (or finer) sent where seconds were expected, and
/// would file the event under an absurd date, so they are rejected, never guessed.
pub const MAX_CREATED_AT: i64 = 100_000_000_000;

/// Payload fields whose names the lake derives itself. A payload field with one
/// of these names is dropped when it equals the derived value and otherwise
/// kept as `<name>__payload`: a payload cannot choose its own partition, and
/// nothing it sent is lost.
pub const DERIVED_NAMES: [&str; 4] = [
    FIXED_COLUMN_NAMES[3],
    PARTITION_COLUMNS[0],
    PARTITION_COLUMNS[1],
    PARTITION_COLUMNS[2],
];

/// A valid, enriched event. Payload values borrow the record's bytes.
#[derive(Debug)]
pub struct Event<'a> {
    /// `event_uuid`, the dedup key.
    pub event_uuid: Cow<'a, str>,
    /// `event_name` as sent.
    pub event_name: Cow<'a, str>,
    /// `created_at` in Unix seconds.
    pub created_at: f64,
    /// `created_at` as ISO 8601 UTC (`2024-03-17T10:15:30Z`, with 3, 6 or 9
    /// fractional digits when the value has a fraction).
    pub created_datetime: String,
    /// Where the event goes: event type, subtype and UTC date.
    pub partition: PartitionKey,
    /// The other top-level fields, in the order sent, as raw JSON.
    pub payload: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// The whole event's JSON as received (after gunzip).
    pub json: &'a [u8],
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Top-level fields in the order sent; a repeated key keeps its first
/// position and takes the last value (as an IndexMap does).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Fields<'de>, A::Error> {
                let mut out: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(24);
                let mut index: Option<std::collections::HashMap<Cow<'de, str>, usize>> = None;
                let mut seen = 0u64;
                while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = m.next_value()?;
                    // linear search while small; a hash index beyond (no quadratic blow-up)
                    if out.len() == 32 && index.is_none() {
                        index = Some(
                            out.iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.clone(), i))
                                .collect(),
                        );
                    }
                    // a 64-bit filter on (length, last byte): a key not seen before
                    // almost never needs the linear search
                    let b = k.as_bytes();
                    let bit = 1u64
                        << ((b.len() as u64 * 31 + u64::from(b.last().copied().unwrap_or(0))) & 63);
                    let maybe = seen & bit != 0;
                    seen |= bit;
                    let found = match &index {
                        Some(ix) => ix.get(&k).copied(),
                        None if maybe => out.iter().position(|(x, _)| *x == k),
                        None => None,
                    };
                    match found {
                        Some(i) => out[i].1 = v,
                        None => {
                            if let Some(ix) = &mut index {
                                ix.insert(k.clone(), out.len());
                            }
                            out.push((k, v));
                        }
                    }
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn string_of<'a>(raw: &'a RawValue, name: &'static str) -> Result<Cow<'a, str>, Reject> {
    let t = raw.get();
    if t == "null" {
        return Err(Reject::Missing(name));
    }
    if !t.starts_with('"') {
        return Err(Reject::WrongType {
            field: name,
            expected: "a string",
            found: format!("{} ({})", json_kind(t), clip(t)),
        });
    }
    let inner = &t[1..t.len() - 1];
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(t)
        .map(Cow::Owned)
        .map_err(|e| Reject::InvalidJson(e.to_string()))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for whole seconds (years 0001..9999), else chrono.
fn rfc3339(t: DateTime<Utc>) -> String {
    use chrono::{Datelike as _, Timelike as _};
    let y = t.year();
    if t.nanosecond() != 0 || !(1..=9999).contains(&y) {
        return t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    }
    let mut b = *b"0000-00-00T00:00:00Z";
    let put = |b: &mut [u8; 20], at: usize, v: u32, n: usize| {
        let mut v = v;
        for i in (0..n).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut b, 0, y as u32, 4);
    put(&mut b, 5, t.month(), 2);
    put(&mut b, 8, t.day(), 2);
    put(&mut b, 11, t.hour(), 2);
    put(&mut b, 14, t.minute(), 2);
    put(&mut b, 17, t.second(), 2);
    // ASCII digits and punctuation only
    String::from_utf8(b.to_vec()).unwrap_or_default()
}

/// Parses, validates and enriches one event, its `created_at` read in
/// `unit`: one pass of the parser over the bytes, keys borrowed unless
/// escaped, no map or hashing for the usual 10-30 top-level fields.
pub fn enrich(json: &[u8], unit: CreatedAtUnit) -> Result<Event<'_>, Reject> {
    let fields = match json_from_bytes::<Fields<'_>>(json) {
        Ok(f) => f.0,
        Err(e) => {
            return match serde_json::from_slice::<&RawValue>(json) {
                Ok(raw) => Err(Reject::NotAnObject(json_kind(raw.get()))),
                Err(_) if json.starts_with(b"\xEF\xBB\xBF") => Err(Reject::InvalidJson(format!(
                    "it starts with a UTF-8 byte-order mark (bytes EF BB BF), which JSON does not allow: remove it ({e})"
                ))),
                Err(_) => Err(Reject::InvalidJson(e.to_string())),
            };
        }
    };
    let (mut uuid, mut name, mut created) = (None, None, None);
    let mut derived_seen = false;
    for (k, v) in &fields {
        match k.as_ref() {
            "event_uuid" => uuid = Some(*v),
            "event_name" => name = Some(*v),
            "created_at" => created = Some(*v),
            "created_datetime" | "event_type" | "event_subtype" | "event_date" => {
                derived_seen = true
            }
            _ => {}
        }
    }
    let event_uuid = string_of(uuid.ok_or(Reject::Missing("event_uuid"))?, "event_uuid")?;
    if event_uuid.is_empty() {
        return Err(Reject::EmptyUuid);
    }
    let event_name = string_of(name.ok_or(Reject::Missing("event_name"))?, "event_name")?;
    let created_raw = created
        .filter(|v| v.get() != "null")
        .ok_or(Reject::Missing("created_at"))?;
    let when = parse_created_at(created_raw.get(), unit)?;

    let mut parts = event_name.split(':');
    let event_type = parts.next().unwrap_or_default().to_string();
    if event_type.is_empty() {
        return Err(Reject::EmptyEventType(event_name.into_owned()));
    }
    let event_subtype = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    check_part_len("event type", &event_type)?;
    if let Some(s) = &event_subtype {
        check_part_len("event subtype", s)?;
    }
    let partition = PartitionKey {
        event_type,
        event_subtype,
        event_date: when.time.date_naive(),
    };
    let created_datetime = rfc3339(when.time);
    let payload: Vec<(Cow<'_, str>, &RawValue)> = if derived_seen {
        let rest: IndexMap<String, &RawValue> = fields
            .into_iter()
            .filter(is_payload)
            .map(|(k, v)| (k.into_owned(), v))
            .collect();
        rename_derived(rest, &partition, &created_datetime)
    } else {
        // exact size: the parse's vector has room for 24 fields, and the
        // event is kept for the whole batch (~500 bytes per event unused)
        let mut payload = Vec::with_capacity(fields.len().saturating_sub(3));
        payload.extend(fields.into_iter().filter(is_payload));
        payload
    };
    Ok(Event {
        event_uuid,
        event_name,
        created_at: when.seconds,
        created_datetime,
        partition,
        payload,
        json,
    })
}

/// Whether a top-level field is payload: not one of the fields every event has.
fn is_payload((name, _): &(Cow<'_, str>, &RawValue)) -> bool {
    !matches!(name.as_ref(), "event_uuid" | "event_name" | "created_at")
}

/// The JSON kind of a raw value, for messages.
pub fn json_kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn check_part_len(part: &'static str, value: &str) -> Result<(), Reject> {
    let len = hive_escape(value).len();
    if len > MAX_ESCAPED_VALUE_BYTES {
        return Err(Reject::NamePartTooLong {
            part,
            value: clip(value),
            len,
            max: MAX_ESCAPED_VALUE_BYTES,
        });
    }
    Ok(())
}

fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn rename_derived<'a>(
    fields: IndexMap<String, &'a RawValue>,
    partition: &PartitionKey,
    created_datetime: &str,
) -> Vec<(Cow<'a, str>, &'a RawValue)> {
    let date = crate::core::partition::format_date(partition.event_date);
    fields
        .into_iter()
        .filter_map(|(name, raw)| {
            let derived: Option<Option<&str>> = match name.as_str() {
                "created_datetime" => Some(Some(created_datetime)),
                "event_type" => Some(Some(&partition.event_type)),
                "event_subtype" => Some(partition.event_subtype.as_deref()),
                "event_date" => Some(Some(&date)),
                _ => None,
            };
            match derived {
                None => Some((Cow::Owned(name), raw)),
                Some(value) => {
                    let same = match value {
                        None => raw.get() == "null",
                        Some(v) => serde_json::from_str::<String>(raw.get()).is_ok_and(|s| s == v),
                    };
                    (!same).then(|| (Cow::Owned(format!("{name}__payload")), raw))
                }
            }
        })
        .collect()
}

/// `created_at` resolved to an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreatedAt {
    /// Seconds as a double (the `created_at` column).
    pub seconds: f64,
    /// The exact instant, to the nanosecond the literal gives.
    pub time: DateTime<Utc>,
}

/// The unit producers send `created_at` in: a setting of the lake
/// (`--created-at-unit`, `CREATED_AT_UNIT`), applied to every event. The
/// default, seconds, is the contract; a finer unit is converted to seconds
/// exactly (by moving the decimal point), then checked against the same range.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CreatedAtUnit {
    /// Unix seconds (`s`, the default).
    #[default]
    S,
    /// Unix milliseconds (`ms`).
    Ms,
    /// Unix microseconds (`us`).
    Us,
    /// Unix nanoseconds (`ns`).
    Ns,
}

impl CreatedAtUnit {
    /// Every unit, coarsest first.
    pub const ALL: [CreatedAtUnit; 4] = [
        CreatedAtUnit::S,
        CreatedAtUnit::Ms,
        CreatedAtUnit::Us,
        CreatedAtUnit::Ns,
    ];

    /// Reads a setting: `s`, `ms`, `us` or `ns`.
    pub fn parse(text: &str) -> Result<CreatedAtUnit, String> {
        let t = text.trim();
        CreatedAtUnit::ALL
            .into_iter()
            .find(|u| u.code() == t)
            .ok_or_else(|| {
                format!(
                    "the created_at unit must be s (seconds, the default), ms, us or ns, got {text:?}"
                )
            })
    }

    /// The setting's text: `s`, `ms`, `us` or `ns`.
    pub fn code(self) -> &'static str {
        match self {
            CreatedAtUnit::S => "s",
            CreatedAtUnit::Ms => "ms",
            CreatedAtUnit::Us => "us",
            CreatedAtUnit::Ns => "ns",
        }
    }

    /// The unit's name in messages: `seconds`, `milliseconds`, …
    pub fn name(self) -> &'static str {
        match self {
            CreatedAtUnit::S => "seconds",
            CreatedAtUnit::Ms => "milliseconds",
            CreatedAtUnit::Us => "microseconds",
            CreatedAtUnit::Ns => "nanoseconds",
        }
    }

    /// Whether this is the default (seconds), for serde's `skip_serializing_if`.
    pub fn is_seconds(&self) -> bool {
        *self == CreatedAtUnit::S
    }

    /// Decimal digits between this unit and a second (0, 3, 6 or 9).
    fn digits(self) -> usize {
        self as usize * 3
    }
}

impl std::fmt::Display for CreatedAtUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A JSON number literal in a unit `digits` decimal places finer than
/// seconds, rewritten in seconds by moving its decimal point (exact: no
/// float arithmetic). `None` for text that is no number literal.
fn to_seconds_literal(raw: &str, digits: usize) -> Option<String> {
    if digits == 0 {
        return Some(raw.to_string());
    }
    if let Some(at) = raw.find(['e', 'E']) {
        let exp: i64 = raw[at + 1..].parse().ok()?;
        return Some(format!("{}e{}", &raw[..at], exp - digits as i64));
    }
    let (sign, unsigned) = match raw.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", raw),
    };
    let (int_part, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int_part.is_empty()
        || !int_part
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let padded = format!(
        "{}{int_part}",
        "0".repeat(digits.saturating_sub(int_part.len()))
    );
    let (whole, moved) = padded.split_at(padded.len() - digits);
    let whole = if whole.is_empty() { "0" } else { whole };
    Some(format!("{sign}{whole}.{moved}{frac}"))
}

/// Parses `created_at` from its JSON literal: a number of Unix seconds (or of
/// `unit`, converted to seconds first), integer or fractional. Decimal
/// fractions are read digit by digit (to the nanosecond, no float rounding);
/// exponent forms go through `f64`. Strings are rejected, numeric ones
/// included: the contract says number, and a guess could file the event under
/// a wrong date. The range is checked on the value in seconds.
pub fn parse_created_at(raw: &str, unit: CreatedAtUnit) -> Result<CreatedAt, Reject> {
    let first = raw.as_bytes().first().copied();
    if !matches!(first, Some(b'-' | b'0'..=b'9')) {
        return Err(Reject::WrongType {
            field: "created_at",
            expected: match unit {
                CreatedAtUnit::S => "a number of Unix seconds",
                CreatedAtUnit::Ms => "a number of Unix milliseconds",
                CreatedAtUnit::Us => "a number of Unix microseconds",
                CreatedAtUnit::Ns => "a number of Unix nanoseconds",
            },
            found: format!("{} ({})", json_kind(raw), clip(raw)),
        });
    }
    let out_of_range = || out_of_range(raw, unit);
    let seconds_literal = to_seconds_literal(raw, unit.digits()).ok_or_else(out_of_range)?;
    let raw_seconds = seconds_literal.as_str();
    let (secs, nanos) = if raw_seconds.contains(['e', 'E']) {
        let v: f64 = raw_seconds.parse().map_err(|_| out_of_range())?;
        if !v.is_finite() || v < MIN_CREATED_AT as f64 || v >= MAX_CREATED_AT as f64 {
            return Err(out_of_range());
        }
        let secs = v.floor();
        // round to the microsecond: an f64 near 1.7e9 carries ~0.2 us of noise
        let micros = ((v - secs) * 1e6).round() as i64;
        (
            secs as i64 + micros / 1_000_000,
            (micros % 1_000_000) as u32 * 1000,
        )
    } else {
        let (int_part, frac) = raw_seconds.split_once('.').unwrap_or((raw_seconds, ""));
        let whole: i64 = int_part.parse().map_err(|_| out_of_range())?;
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(out_of_range());
        }
        let mut nanos: u32 = 0;
        for (i, d) in frac.bytes().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
        }
        if raw_seconds.starts_with('-') && nanos > 0 {
            (whole - 1, 1_000_000_000 - nanos)
        } else {
            (whole, nanos)
        }
    };
    if !(MIN_CREATED_AT..MAX_CREATED_AT).contains(&secs) {
        return Err(out_of_range());
    }
    let time = DateTime::from_timestamp(secs, nanos).ok_or_else(out_of_range)?;
    let seconds = raw_seconds.parse::<f64>().map_err(|_| out_of_range())?;
    Ok(CreatedAt { seconds, time })
}

/// Why a `created_at` (as sent, in `unit`) is out of range: a finer unit
/// when the value would be in range in one ([`Reject::CreatedAtNotSeconds`]),
/// else [`Reject::CreatedAtOutOfRange`].
fn out_of_range(raw: &str, unit: CreatedAtUnit) -> Reject {
    let seconds: f64 = to_seconds_literal(raw, unit.digits())
        .and_then(|l| l.parse().ok())
        .unwrap_or(f64::INFINITY);
    let finer = CreatedAtUnit::ALL.into_iter().skip(unit as usize + 1);
    for looks in finer {
        let divisor = 10u64.pow((looks.digits() - unit.digits()) as u32);
        let s = seconds / divisor as f64;
        if seconds >= MAX_CREATED_AT as f64 && (0.0..MAX_CREATED_AT as f64).contains(&s) {
            return Reject::CreatedAtNotSeconds {
                value: clip(raw),
                unit: looks.name(),
                setting: looks.code(),
                expected: unit.name(),
                divisor,
            };
        }
    }
    Reject::CreatedAtOutOfRange {
        value: clip(raw),
        unit: unit.name(),
        min: MIN_CREATED_AT,
        max: MAX_CREATED_AT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> Event<'_> {
        enrich(json.as_bytes(), CreatedAtUnit::S).expect("valid event")
    }

    fn err(json: &str) -> Reject {
        enrich(json.as_bytes(), CreatedAtUnit::S).expect_err("rejected")
    }

    #[test]
    fn the_payload_keeps_no_spare_room() {
        // events are held for a whole batch: spare capacity was ~500 bytes each
        let e = ok(
            r#"{"event_uuid":"u","a":1,"event_name":"x:y","b":"two","created_at":1710670530,"c":null}"#,
        );
        let names: Vec<&str> = e.payload.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(e.payload.capacity(), e.payload.len());
    }

    #[test]
    fn derives_datetime_type_subtype_and_date() {
        let e = ok(
            r#"{"event_uuid":"u1","event_name":"payment:order:completed","created_at":1710670530,"amount":12}"#,
        );
        assert_eq!(e.created_datetime, "2024-03-17T10:15:30Z");
        assert_eq!(e.partition.event_type, "payment");
        assert_eq!(e.partition.event_subtype.as_deref(), Some("order"));
        assert_eq!(e.partition.event_date.to_string(), "2024-03-17");
        assert_eq!(e.created_at, 1710670530.0);
        assert_eq!(e.payload.len(), 1);
        assert_eq!(e.payload[0].0, "amount");
        assert_eq!(e.payload[0].1.get(), "12");
    }

    #[test]
    fn fractional_seconds_are_kept_exactly() {
        let e = ok(r#"{"event_uuid":"u","event_name":"a:b","created_at":1710670530.25}"#);
        assert_eq!(e.created_datetime, "2024-03-17T10:15:30.250Z");
        let e = ok(r#"{"event_uuid":"u","event_name":"a:b","created_at":1710670530.123456789}"#);
        assert_eq!(e.created_datetime, "2024-03-17T10:15:30.123456789Z");
        let e = ok(r#"{"event_uuid":"u","event_name":"a:b","created_at":1.7106705301e9}"#);
        assert_eq!(e.created_datetime, "2024-03-17T10:15:30.100Z");
    }

    #[test]
    fn negative_fraction_counts_back_from_the_epoch() {
        let e = ok(r#"{"event_uuid":"u","event_name":"a","created_at":-0.5}"#);
        assert_eq!(e.created_datetime, "1969-12-31T23:59:59.500Z");
        assert_eq!(e.partition.event_date.to_string(), "1969-12-31");
    }

    #[test]
    fn no_second_part_means_null_subtype() {
        assert_eq!(
            ok(r#"{"event_uuid":"u","event_name":"account","created_at":0}"#)
                .partition
                .event_subtype,
            None
        );
        assert_eq!(
            ok(r#"{"event_uuid":"u","event_name":"account::x","created_at":0}"#)
                .partition
                .event_subtype,
            None
        );
    }

    #[test]
    fn derived_fields_win_over_the_payload_and_nothing_is_lost() {
        let e = ok(
            r#"{"event_uuid":"u","event_name":"a:b","created_at":0,"event_type":"evil","event_subtype":"b","event_date":"x"}"#,
        );
        assert_eq!(e.partition.event_type, "a");
        let names: Vec<_> = e.payload.iter().map(|(n, _)| n.as_ref()).collect();
        // equal to the derived value: dropped; different: kept under another name
        assert_eq!(names, ["event_type__payload", "event_date__payload"]);
    }

    #[test]
    fn every_rejection_reason_names_the_field() {
        let cases = [
            (r#"not json"#, "invalid_json"),
            (r#"[1,2]"#, "not_an_object"),
            (r#"{"event_name":"a","created_at":1}"#, "missing_field"),
            (
                r#"{"event_uuid":null,"event_name":"a","created_at":1}"#,
                "missing_field",
            ),
            (
                r#"{"event_uuid":7,"event_name":"a","created_at":1}"#,
                "wrong_type",
            ),
            (
                r#"{"event_uuid":"","event_name":"a","created_at":1}"#,
                "empty_event_uuid",
            ),
            (
                r#"{"event_uuid":"u","event_name":":b","created_at":1}"#,
                "empty_event_type",
            ),
            (r#"{"event_uuid":"u","created_at":1}"#, "missing_field"),
            (r#"{"event_uuid":"u","event_name":"a"}"#, "missing_field"),
            (
                r#"{"event_uuid":"u","event_name":"a","created_at":"1710670530"}"#,
                "wrong_type",
            ),
            (
                r#"{"event_uuid":"u","event_name":"a","created_at":1710670530000}"#,
                "created_at_not_seconds",
            ),
            (
                r#"{"event_uuid":"u","event_name":"a","created_at":-99999999999}"#,
                "created_at_out_of_range",
            ),
            (
                r#"{"event_uuid":"u","event_name":"a","created_at":1e300}"#,
                "created_at_out_of_range",
            ),
        ];
        for (json, code) in cases {
            let r = err(json);
            assert_eq!(r.code(), code, "{json}: {r}");
        }
        let long = format!(
            r#"{{"event_uuid":"u","event_name":"{}:b","created_at":1}}"#,
            "x".repeat(201)
        );
        assert_eq!(err(&long).code(), "name_part_too_long");
    }

    #[test]
    fn milliseconds_say_what_to_do() {
        let r = err(r#"{"event_uuid":"u","event_name":"a","created_at":1710670530000}"#);
        assert!(r.to_string().contains("milliseconds"), "{r}");
        assert!(r.to_string().contains("divide by 1000"), "{r}");
    }

    #[test]
    fn range_bounds_are_inclusive_below_and_exclusive_above() {
        assert!(parse_created_at(&MIN_CREATED_AT.to_string(), CreatedAtUnit::S).is_ok());
        assert!(parse_created_at(&(MIN_CREATED_AT - 1).to_string(), CreatedAtUnit::S).is_err());
        assert!(parse_created_at(&(MAX_CREATED_AT - 1).to_string(), CreatedAtUnit::S).is_ok());
        assert!(parse_created_at(&MAX_CREATED_AT.to_string(), CreatedAtUnit::S).is_err());
    }

    #[test]
    fn escaped_keys_and_duplicate_keys_follow_json_rules() {
        let e = ok(r#"{"event_uuid":"u","event_name":"a","created_at":1,"k\u0065y":1,"key":2}"#);
        assert_eq!(e.payload.len(), 1);
        assert_eq!(e.payload[0].0, "key");
        assert_eq!(e.payload[0].1.get(), "2");
    }

    #[test]
    fn a_byte_order_mark_is_named_as_the_cause() {
        let r =
            enrich(b"\xEF\xBB\xBF{\"event_uuid\":\"a\"}", CreatedAtUnit::S).expect_err("rejected");
        assert_eq!(r.code(), "invalid_json");
        assert!(r.to_string().contains("byte-order mark"), "{r}");
    }

    fn at(raw: &str, unit: CreatedAtUnit) -> Result<String, Reject> {
        parse_created_at(raw, unit).map(|c| rfc3339(c.time))
    }

    #[test]
    fn a_finer_unit_moves_the_decimal_point_exactly() {
        use CreatedAtUnit::*;
        for (raw, unit, want) in [
            ("1710670530123", Ms, "2024-03-17T10:15:30.123Z"),
            ("1710670530123.456", Ms, "2024-03-17T10:15:30.123456Z"),
            ("1710670530123456", Us, "2024-03-17T10:15:30.123456Z"),
            ("1710670530123456789", Ns, "2024-03-17T10:15:30.123456789Z"),
            ("1710670530000", Ms, "2024-03-17T10:15:30Z"),
            ("1500", Ms, "1970-01-01T00:00:01.500Z"),
            ("7", Ms, "1970-01-01T00:00:00.007Z"),
            ("0", Ns, "1970-01-01T00:00:00Z"),
            ("-500", Ms, "1969-12-31T23:59:59.500Z"),
            ("-0.5", Ms, "1969-12-31T23:59:59.999500Z"),
            ("1.710670530123e12", Ms, "2024-03-17T10:15:30.123Z"),
            ("1710670530", S, "2024-03-17T10:15:30Z"),
        ] {
            assert_eq!(at(raw, unit).expect(raw), want, "{raw} {unit}");
        }
        // the double is the nearest to the exact decimal, not a rounded quotient
        let c = parse_created_at("1710670530123", Ms).expect("ms");
        assert_eq!(c.seconds, 1710670530.123);
    }

    #[test]
    fn the_range_is_checked_after_conversion() {
        use CreatedAtUnit::*;
        let max_ms = format!("{}000", MAX_CREATED_AT);
        let below_ms = format!("{}999", MAX_CREATED_AT - 1);
        assert!(at(&below_ms, Ms).is_ok());
        // 10^14 ms: year 5138 exactly, refused (it would be 1973 in microseconds)
        assert_eq!(
            at(&max_ms, Ms).expect_err("max").code(),
            "created_at_not_seconds"
        );
        assert_eq!(
            at("1e30", Ms).expect_err("far").code(),
            "created_at_out_of_range"
        );
        let min_ns = format!("{}000000000", MIN_CREATED_AT);
        assert!(at(&min_ns, Ns).is_ok());
        let below_min = format!("{}000000001", MIN_CREATED_AT);
        assert_eq!(
            at(&below_min, Ns).expect_err("min").code(),
            "created_at_out_of_range"
        );
        // microseconds sent where milliseconds are configured: named as such
        let r = at("1710670530123456", Ms).expect_err("us as ms");
        assert_eq!(r.code(), "created_at_not_seconds");
        let text = r.to_string();
        assert!(text.contains("microseconds"), "{text}");
        assert!(text.contains("expected Unix milliseconds"), "{text}");
        assert!(text.contains("divide by 1000"), "{text}");
        assert!(text.contains("CREATED_AT_UNIT=us"), "{text}");
        // nothing finer than nanoseconds to suggest
        assert_eq!(
            at("1e30", Ns).expect_err("far").code(),
            "created_at_out_of_range"
        );
        // the unit still wants a number
        let r = at("\"1710670530123\"", Ms).expect_err("string");
        assert!(r.to_string().contains("Unix milliseconds"), "{r}");
    }

    #[test]
    fn milliseconds_in_seconds_mode_name_the_setting_to_use() {
        let r = err(r#"{"event_uuid":"u","event_name":"a","created_at":1710670530000}"#);
        let text = r.to_string();
        assert!(text.contains("--created-at-unit ms"), "{text}");
        assert!(
            text.contains("kinesis-lake replay --created-at-unit ms"),
            "{text}"
        );
    }

    #[test]
    fn units_parse_from_their_codes_only() {
        for u in CreatedAtUnit::ALL {
            assert_eq!(CreatedAtUnit::parse(u.code()), Ok(u));
        }
        assert!(CreatedAtUnit::parse("millis").is_err());
        assert!(CreatedAtUnit::parse("").is_err());
        let e = enrich(
            br#"{"event_uuid":"u","event_name":"a:b","created_at":1710670530250}"#,
            CreatedAtUnit::Ms,
        )
        .expect("ms event");
        assert_eq!(e.created_datetime, "2024-03-17T10:15:30.250Z");
        assert_eq!(e.created_at, 1710670530.25);
    }

    #[test]
    fn a_literal_that_is_no_number_is_out_of_range_not_a_panic() {
        for unit in CreatedAtUnit::ALL {
            for raw in ["1.5x", "-", "1e", "--1", "1.2.3"] {
                assert!(parse_created_at(raw, unit).is_err(), "{raw} {unit}");
            }
        }
    }
}

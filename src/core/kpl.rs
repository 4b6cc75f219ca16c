//! KPL de-aggregation: a Kinesis record packed by the Kinesis Producer
//! Library (or any library of its aggregation format) into the user records
//! it holds. Pure: bytes in, records or the failed check out.
//!
//! The format (awslabs/amazon-kinesis-producer, `aggregation-format.md`):
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)
//!
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! Decoded by hand: two messages of four fields need a varint reader and a
//! length-delimited reader, not a code generator, and every check the format
//! allows (the MD5, the wire types, every index into the key tables, the
//! required fields) is ours to make and to name in the dead letter. Unknown
//! fields are skipped, as protobuf requires.

use md5::{Digest as _, Md5};

/// The first four bytes of an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 trailer.
const DIGEST_LEN: usize = 16;

/// One user record of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The producer's partition key of this user record.
    pub partition_key: String,
    /// Its explicit hash key, when the producer set one.
    pub explicit_hash_key: Option<String>,
    /// Its data, exactly as the producer gave it (plain or gzip JSON).
    pub data: Vec<u8>,
}

/// Why an aggregated record cannot be unpacked: the check that failed. The
/// whole aggregate is dead-lettered with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    /// Too short to hold the magic, a message and the MD5.
    #[error("it is {0} bytes long, too short for the magic number and the 16-byte MD5 trailer")]
    TooShort(usize),
    /// The MD5 trailer does not match the message.
    #[error(
        "the MD5 check failed: the trailer is {found}, the message's MD5 is {computed} (the record was cut or altered)"
    )]
    Digest {
        /// The trailer, hex.
        found: String,
        /// The MD5 of the message, hex.
        computed: String,
    },
    /// The protobuf message is malformed.
    #[error("the protobuf message is malformed at byte {at}: {what}")]
    Protobuf {
        /// Offset within the message.
        at: usize,
        /// What is wrong.
        what: String,
    },
    /// A user record lacks a required field.
    #[error("user record {record} has no {field} (a required field)")]
    MissingField {
        /// 0-based index of the user record.
        record: usize,
        /// The field.
        field: &'static str,
    },
    /// An index into a key table is out of bounds.
    #[error(
        "user record {record}: its {table} index {index} is out of bounds (the table has {len} entries)"
    )]
    BadIndex {
        /// 0-based index of the user record.
        record: usize,
        /// `partition key` or `explicit hash key`.
        table: &'static str,
        /// The index given.
        index: u64,
        /// The table's length.
        len: usize,
    },
    /// The aggregate holds no user record.
    #[error("it holds no user record")]
    Empty,
}

/// Whether a record's data is a KPL aggregate (starts with the magic).
pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Unpacks an aggregated record into its user records, in order, after
/// checking its MD5, its message, and every index into its key tables.
pub fn deaggregate(data: &[u8]) -> Result<Vec<UserRecord>, KplError> {
    if data.len() < MAGIC.len() + DIGEST_LEN || !is_aggregated(data) {
        return Err(KplError::TooShort(data.len()));
    }
    let (message, trailer) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - DIGEST_LEN);
    let computed = Md5::digest(message);
    if computed.as_slice() != trailer {
        return Err(KplError::Digest {
            found: hex(trailer),
            computed: hex(&computed),
        });
    }
    let aggregate = parse_aggregate(message)?;
    resolve(aggregate)
}

/// The fields of an AggregatedRecord, records not yet resolved.
struct Aggregate<'a> {
    partition_keys: Vec<String>,
    explicit_hash_keys: Vec<String>,
    records: Vec<PartialRecord<'a>>,
}

/// The fields of one Record as read.
#[derive(Default)]
struct PartialRecord<'a> {
    partition_key_index: Option<u64>,
    explicit_hash_key_index: Option<u64>,
    data: Option<&'a [u8]>,
}

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// A protobuf reader over one message's bytes; `base` is the message's
/// offset in the aggregate's message, for errors.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Reader<'a> {
        Reader { bytes, at: 0, base }
    }

    fn error(&self, what: impl Into<String>) -> KplError {
        KplError::Protobuf {
            at: self.base + self.at,
            what: what.into(),
        }
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// A base-128 varint of at most 10 bytes.
    fn varint(&mut self) -> Result<u64, KplError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(self.error("a varint runs past the end of the message"));
            };
            self.at += 1;
            if i == 9 && b > 1 {
                return Err(self.error("a varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("a varint is longer than 10 bytes"))
    }

    /// A field's tag: (field number, wire type).
    fn tag(&mut self) -> Result<(u64, u64), KplError> {
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 {
            return Err(self.error("field number 0 is not allowed"));
        }
        Ok((field, tag & 7))
    }

    /// A length-delimited field's bytes, and their offset in the message.
    fn len_delimited(&mut self) -> Result<(&'a [u8], usize), KplError> {
        let len = self.varint()?;
        let start = self.at;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                self.error(format!(
                    "a field of {len} bytes runs past the end of the message ({} bytes left)",
                    self.bytes.len() - start
                ))
            })?;
        self.at = end;
        Ok((&self.bytes[start..end], self.base + start))
    }

    /// Skips a field of an unknown number.
    fn skip(&mut self, wire: u64) -> Result<(), KplError> {
        let n = match wire {
            VARINT => return self.varint().map(drop),
            LEN => return self.len_delimited().map(drop),
            FIXED64 => 8,
            FIXED32 => 4,
            other => return Err(self.error(format!("wire type {other} is not supported"))),
        };
        if self.bytes.len() - self.at < n {
            return Err(self.error("a fixed-size field runs past the end of the message"));
        }
        self.at += n;
        Ok(())
    }

    /// Checks that a known field has the wire type it must have.
    fn expect_wire(&self, field: u64, wire: u64, want: u64) -> Result<(), KplError> {
        if wire == want {
            return Ok(());
        }
        Err(self.error(format!(
            "field {field} has wire type {wire}, expected {want}"
        )))
    }
}

fn utf8(bytes: &[u8], at: usize, what: &str) -> Result<String, KplError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| KplError::Protobuf {
        at,
        what: format!("{what} is not UTF-8"),
    })
}

fn parse_aggregate(message: &[u8]) -> Result<Aggregate<'_>, KplError> {
    let mut r = Reader::new(message, 0);
    let mut out = Aggregate {
        partition_keys: Vec::new(),
        explicit_hash_keys: Vec::new(),
        records: Vec::new(),
    };
    while !r.done() {
        let (field, wire) = r.tag()?;
        match field {
            1 | 2 => {
                r.expect_wire(field, wire, LEN)?;
                let (bytes, at) = r.len_delimited()?;
                if field == 1 {
                    out.partition_keys.push(utf8(bytes, at, "a partition key")?);
                } else {
                    out.explicit_hash_keys
                        .push(utf8(bytes, at, "an explicit hash key")?);
                }
            }
            3 => {
                r.expect_wire(field, wire, LEN)?;
                let (bytes, at) = r.len_delimited()?;
                out.records.push(parse_record(bytes, at)?);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn parse_record(bytes: &[u8], base: usize) -> Result<PartialRecord<'_>, KplError> {
    let mut r = Reader::new(bytes, base);
    let mut rec = PartialRecord::default();
    while !r.done() {
        let (field, wire) = r.tag()?;
        match field {
            1 => {
                r.expect_wire(field, wire, VARINT)?;
                rec.partition_key_index = Some(r.varint()?);
            }
            2 => {
                r.expect_wire(field, wire, VARINT)?;
                rec.explicit_hash_key_index = Some(r.varint()?);
            }
            3 => {
                r.expect_wire(field, wire, LEN)?;
                rec.data = Some(r.len_delimited()?.0);
            }
            // tags (4) are not used by the lake
            _ => r.skip(wire)?,
        }
    }
    Ok(rec)
}

/// Resolves each record's keys through the tables, checking every index.
fn resolve(aggregate: Aggregate<'_>) -> Result<Vec<UserRecord>, KplError> {
    if aggregate.records.is_empty() {
        return Err(KplError::Empty);
    }
    let lookup = |table: &'static str, keys: &[String], record: usize, index: u64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| keys.get(i))
            .cloned()
            .ok_or(KplError::BadIndex {
                record,
                table,
                index,
                len: keys.len(),
            })
    };
    let mut out = Vec::with_capacity(aggregate.records.len());
    for (i, rec) in aggregate.records.into_iter().enumerate() {
        let pk = rec.partition_key_index.ok_or(KplError::MissingField {
            record: i,
            field: "partition_key_index",
        })?;
        let data = rec.data.ok_or(KplError::MissingField {
            record: i,
            field: "data",
        })?;
        let explicit_hash_key = match rec.explicit_hash_key_index {
            Some(e) => Some(lookup(
                "explicit hash key",
                &aggregate.explicit_hash_keys,
                i,
                e,
            )?),
            None => None,
        };
        out.push(UserRecord {
            partition_key: lookup("partition key", &aggregate.partition_keys, i, pk)?,
            explicit_hash_key,
            data: data.to_vec(),
        });
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        // writing to a String cannot fail
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Builds an aggregated record of user records (the format the KPL writes,
/// key tables deduplicated), for tests and test tools.
pub fn aggregate(records: &[UserRecord]) -> Vec<u8> {
    fn index_of<'k>(table: &mut Vec<&'k str>, key: &'k str) -> u64 {
        let i = table.iter().position(|k| *k == key).unwrap_or_else(|| {
            table.push(key);
            table.len() - 1
        });
        i as u64
    }
    let mut partition_keys: Vec<&str> = Vec::new();
    let mut hash_keys: Vec<&str> = Vec::new();
    let mut bodies = Vec::with_capacity(records.len());
    for r in records {
        let mut body = Vec::new();
        put_varint_field(
            &mut body,
            1,
            index_of(&mut partition_keys, &r.partition_key),
        );
        if let Some(e) = &r.explicit_hash_key {
            put_varint_field(&mut body, 2, index_of(&mut hash_keys, e));
        }
        put_len_field(&mut body, 3, &r.data);
        bodies.push(body);
    }
    let mut message = Vec::new();
    for k in &partition_keys {
        put_len_field(&mut message, 1, k.as_bytes());
    }
    for k in &hash_keys {
        put_len_field(&mut message, 2, k.as_bytes());
    }
    for b in &bodies {
        put_len_field(&mut message, 3, b);
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&message);
    out.extend_from_slice(&Md5::digest(&message));
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3 | VARINT);
    put_varint(out, v);
}

fn put_len_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, field << 3 | LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(pk: &str, data: &str) -> UserRecord {
        UserRecord {
            partition_key: pk.into(),
            explicit_hash_key: None,
            data: data.as_bytes().to_vec(),
        }
    }

    /// An aggregate of a hand-built message, with a correct MD5.
    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(message);
        out.extend_from_slice(&Md5::digest(message));
        out
    }

    #[test]
    fn an_aggregate_round_trips_with_shared_keys_and_hash_keys() {
        let mut records = vec![
            user("a", "{\"n\":1}"),
            user("b", "{\"n\":2}"),
            user("a", ""),
        ];
        records[1].explicit_hash_key = Some("340282366920938463463374607431768211455".into());
        let agg = aggregate(&records);
        assert!(is_aggregated(&agg));
        assert_eq!(deaggregate(&agg).expect("valid"), records);
    }

    #[test]
    fn large_records_and_many_of_them_survive() {
        let big = "x".repeat(300_000);
        let records: Vec<UserRecord> = (0..500)
            .map(|i| user(&format!("k{}", i % 7), if i == 3 { &big } else { "{}" }))
            .collect();
        assert_eq!(deaggregate(&aggregate(&records)).expect("valid"), records);
    }

    #[test]
    fn a_wrong_md5_is_named() {
        let mut agg = aggregate(&[user("a", "{}")]);
        let last = agg.len() - 1;
        agg[last] ^= 1;
        let e = deaggregate(&agg).expect_err("bad md5");
        assert!(matches!(e, KplError::Digest { .. }));
        assert!(e.to_string().contains("MD5 check failed"), "{e}");
        // a changed byte of the message fails the same check
        let mut agg = aggregate(&[user("a", "{}")]);
        agg[6] ^= 0x20;
        assert!(matches!(deaggregate(&agg), Err(KplError::Digest { .. })));
    }

    #[test]
    fn too_short_is_named() {
        assert_eq!(deaggregate(&MAGIC), Err(KplError::TooShort(4)));
    }

    #[test]
    fn every_index_is_checked() {
        // one partition key, record points at index 1
        let mut rec = Vec::new();
        put_varint_field(&mut rec, 1, 1);
        put_len_field(&mut rec, 3, b"{}");
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"pk");
        put_len_field(&mut msg, 3, &rec);
        let e = deaggregate(&framed(&msg)).expect_err("bad index");
        assert_eq!(
            e,
            KplError::BadIndex {
                record: 0,
                table: "partition key",
                index: 1,
                len: 1
            }
        );
        assert!(e.to_string().contains("out of bounds"), "{e}");
        // explicit hash key index into an empty table
        let mut rec = Vec::new();
        put_varint_field(&mut rec, 1, 0);
        put_varint_field(&mut rec, 2, 0);
        put_len_field(&mut rec, 3, b"{}");
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"pk");
        put_len_field(&mut msg, 3, &rec);
        assert!(matches!(
            deaggregate(&framed(&msg)),
            Err(KplError::BadIndex {
                table: "explicit hash key",
                ..
            })
        ));
        // a huge index does not wrap
        let mut rec = Vec::new();
        put_varint_field(&mut rec, 1, u64::MAX);
        put_len_field(&mut rec, 3, b"{}");
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"pk");
        put_len_field(&mut msg, 3, &rec);
        assert!(matches!(
            deaggregate(&framed(&msg)),
            Err(KplError::BadIndex {
                index: u64::MAX,
                ..
            })
        ));
    }

    #[test]
    fn required_fields_are_checked() {
        let mut rec = Vec::new();
        put_len_field(&mut rec, 3, b"{}");
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"pk");
        put_len_field(&mut msg, 3, &rec);
        assert_eq!(
            deaggregate(&framed(&msg)),
            Err(KplError::MissingField {
                record: 0,
                field: "partition_key_index"
            })
        );
        let mut rec = Vec::new();
        put_varint_field(&mut rec, 1, 0);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"pk");
        put_len_field(&mut msg, 3, &rec);
        assert_eq!(
            deaggregate(&framed(&msg)),
            Err(KplError::MissingField {
                record: 0,
                field: "data"
            })
        );
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"pk");
        assert_eq!(deaggregate(&framed(&msg)), Err(KplError::Empty));
    }

    #[test]
    fn tags_and_unknown_fields_are_skipped() {
        let mut tag = Vec::new();
        put_len_field(&mut tag, 1, b"key");
        put_len_field(&mut tag, 2, b"value");
        let mut rec = Vec::new();
        put_varint_field(&mut rec, 1, 0);
        put_len_field(&mut rec, 3, b"{}");
        put_len_field(&mut rec, 4, &tag);
        put_varint_field(&mut rec, 9, 300);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"pk");
        put_varint(&mut msg, 7 << 3 | FIXED64);
        msg.extend_from_slice(&[0; 8]);
        put_varint(&mut msg, 8 << 3 | FIXED32);
        msg.extend_from_slice(&[0; 4]);
        put_len_field(&mut msg, 3, &rec);
        assert_eq!(
            deaggregate(&framed(&msg)).expect("valid"),
            vec![user("pk", "{}")]
        );
    }

    #[test]
    fn malformed_protobuf_is_named_with_its_offset() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // a length past the end
            (vec![0x0a, 0x05, b'a'], "runs past the end"),
            // a varint (of unknown field 9) longer than 64 bits
            (
                [0x48].into_iter().chain([0xff; 11]).collect(),
                "varint overflows",
            ),
            // wire type 3 (groups) is not supported
            (vec![0x0b], "wire type 3"),
            // the record field with a varint wire type
            (vec![0x18, 0x01], "field 3 has wire type 0"),
            // field number 0
            (vec![0x00], "field number 0"),
            // a partition key that is not UTF-8
            (vec![0x0a, 0x01, 0xff], "not UTF-8"),
            // a fixed64 cut short
            (vec![0x39, 0x00], "fixed-size"),
        ];
        for (msg, want) in cases {
            let e = deaggregate(&framed(&msg)).expect_err(want);
            assert!(
                matches!(e, KplError::Protobuf { .. }) && e.to_string().contains(want),
                "{want}: {e}"
            );
        }
        // offsets inside a nested record count from the message start
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"pk");
        put_len_field(&mut msg, 3, &[0x08]);
        let e = deaggregate(&framed(&msg)).expect_err("cut varint");
        assert_eq!(
            e,
            KplError::Protobuf {
                at: 7,
                what: "a varint runs past the end of the message".into()
            }
        );
    }
}

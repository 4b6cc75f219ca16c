//! The staging object: the events one batch accepted, as the JSON they came
//! in, grouped by partition, waiting to be published into the lake's Parquet
//! files. Pure: bytes in, bytes out.
//!
//! ```text
//! "KLSTAGE1"  u32 LE header length  header (JSON)  section  section  ...
//! section: snappy (raw) of  [u32 LE owner length, owner, u32 LE JSON length, JSON]...
//! ```
//!
//! The header names each section's partition folder, its byte range and its
//! row count, so a publisher responsible for some partitions reads only their
//! byte ranges. Events stay in arrival order within a section. The publisher
//! validates and enriches each event again (the same pure functions), so the
//! staged bytes are exactly what the producer sent, after gunzip.

use serde::{Deserialize, Serialize};

use crate::core::enrich::CreatedAtUnit;
use crate::core::parallel::{PARALLEL_MIN_BYTES, map_parallel};

/// The first bytes of every staging object.
pub const MAGIC: &[u8; 8] = b"KLSTAGE1";

/// A staging object that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("staging object {key} is unreadable: {message}")]
pub struct StagingError {
    /// Its key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The table of contents of a staging object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The window it was staged into.
    pub window: String,
    /// When the batch was staged (RFC 3339).
    pub staged_at: String,
    /// Events in it.
    pub rows: u64,
    /// The unit the consumer read `created_at` in; the publisher reads the
    /// events the same way. Absent (objects of earlier versions): seconds.
    #[serde(default, skip_serializing_if = "CreatedAtUnit::is_seconds")]
    pub created_at_unit: CreatedAtUnit,
    /// Its sections, in partition order.
    pub sections: Vec<Section>,
}

/// One partition's events in a staging object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// The partition folder (`event_type=…/event_subtype=…/event_date=…`).
    pub partition: String,
    /// Events in it.
    pub rows: u64,
    /// Byte offset of the section from the start of the object.
    pub offset: u64,
    /// Its length in the object.
    pub len: u64,
}

/// One staged event: who sent it and its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged<'a> {
    /// The record's owner (its identity in the dedup store and dead letters).
    pub owner: &'a str,
    /// The event's JSON as received, after gunzip.
    pub json: &'a [u8],
}

/// Builds a staging object from each partition's events, in order, their
/// `created_at` read in `unit`; the sections are compressed on every core
/// when the batch is big enough to share. Fails only for a section over
/// 4 GiB (batches are far smaller).
pub fn encode_staging(
    window: &str,
    staged_at: &str,
    unit: CreatedAtUnit,
    partitions: &[(String, Vec<Staged<'_>>)],
) -> Result<Vec<u8>, String> {
    let json_bytes: usize = partitions
        .iter()
        .flat_map(|(_, events)| events.iter().map(|e| e.json.len()))
        .sum();
    let bodies = map_parallel(
        partitions,
        json_bytes >= PARALLEL_MIN_BYTES,
        |(partition, events)| compress_section(partition, events),
    )
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    let sections = partitions
        .iter()
        .zip(&bodies)
        .map(|((partition, events), body)| Section {
            partition: partition.clone(),
            rows: events.len() as u64,
            offset: 0,
            len: body.len() as u64,
        })
        .collect();
    let mut header = Header {
        window: window.to_string(),
        staged_at: staged_at.to_string(),
        created_at_unit: unit,
        rows: partitions.iter().map(|(_, e)| e.len() as u64).sum(),
        sections,
    };
    // the offsets depend on the header's length, which depends on the
    // offsets' digits: place them until the header stops growing
    let mut header_json = Vec::new();
    for _ in 0..4 {
        let mut at = (MAGIC.len() + 4 + header_json.len()) as u64;
        for s in &mut header.sections {
            s.offset = at;
            at += s.len;
        }
        let next = serde_json::to_vec(&header).unwrap_or_default();
        let settled = next.len() == header_json.len();
        header_json = next;
        if settled {
            break;
        }
    }
    let total = MAGIC.len() + 4 + header_json.len() + bodies.iter().map(Vec::len).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&header_json);
    for b in &bodies {
        out.extend_from_slice(b);
    }
    Ok(out)
}

/// One section: its events framed (owner, JSON), snappy-compressed.
fn compress_section(partition: &str, events: &[Staged<'_>]) -> Result<Vec<u8>, String> {
    let framed: usize = events
        .iter()
        .map(|e| 8 + e.owner.len() + e.json.len())
        .sum();
    let mut raw = Vec::with_capacity(framed);
    for e in events {
        push_framed(&mut raw, e.owner.as_bytes());
        push_framed(&mut raw, e.json);
    }
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .map_err(|e| format!("staging the events of {partition} failed: {e}"))
}

fn push_framed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a staging object's header.
pub fn read_header(key: &str, object: &[u8]) -> Result<Header, StagingError> {
    let err = |message: String| StagingError {
        key: key.to_string(),
        message,
    };
    if object.len() < MAGIC.len() + 4 || &object[..MAGIC.len()] != MAGIC {
        return Err(err(
            "it does not start with the staging magic bytes (not written by kinesis-lake?)".into(),
        ));
    }
    let len = read_u32(&object[MAGIC.len()..]).unwrap_or(0) as usize;
    let start = MAGIC.len() + 4;
    let json = object
        .get(start..start + len)
        .ok_or_else(|| err(format!("its header of {len} bytes is cut short")))?;
    let header: Header =
        serde_json::from_slice(json).map_err(|e| err(format!("its header is not valid: {e}")))?;
    for s in &header.sections {
        if s.offset.saturating_add(s.len) > object.len() as u64 {
            return Err(err(format!(
                "section {} ends at byte {} of {}: the object is cut short",
                s.partition,
                s.offset + s.len,
                object.len()
            )));
        }
    }
    Ok(header)
}

/// The decompressed bytes of one section; read its events with
/// [`section_events`].
pub fn section_bytes(key: &str, object: &[u8], section: &Section) -> Result<Vec<u8>, StagingError> {
    let (start, end) = (
        section.offset as usize,
        (section.offset + section.len) as usize,
    );
    let body = object.get(start..end).ok_or_else(|| StagingError {
        key: key.to_string(),
        message: format!("section {} is out of bounds", section.partition),
    })?;
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| StagingError {
            key: key.to_string(),
            message: format!("section {} does not decompress: {e}", section.partition),
        })
}

/// The events of a decompressed section, in order.
pub fn section_events<'a>(
    key: &str,
    section: &Section,
    bytes: &'a [u8],
) -> Result<Vec<Staged<'a>>, StagingError> {
    let bad = |at: usize| StagingError {
        key: key.to_string(),
        message: format!(
            "section {} is malformed at byte {at} of its {} bytes",
            section.partition,
            bytes.len()
        ),
    };
    let mut events = Vec::with_capacity(section.rows as usize);
    let mut at = 0;
    while at < bytes.len() {
        let (owner, next) = read_framed(bytes, at).ok_or_else(|| bad(at))?;
        let (json, next) = read_framed(bytes, next).ok_or_else(|| bad(next))?;
        let owner = std::str::from_utf8(owner).map_err(|_| bad(at))?;
        events.push(Staged { owner, json });
        at = next;
    }
    if events.len() as u64 != section.rows {
        return Err(StagingError {
            key: key.to_string(),
            message: format!(
                "section {} holds {} events, its header says {}",
                section.partition,
                events.len(),
                section.rows
            ),
        });
    }
    Ok(events)
}

fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

fn read_framed(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = read_u32(bytes.get(at..)?)? as usize;
    let start = at + 4;
    Some((bytes.get(start..start + len)?, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged<'a>(owner: &'a str, json: &'a str) -> Staged<'a> {
        Staged {
            owner,
            json: json.as_bytes(),
        }
    }

    #[test]
    fn sections_read_back_in_order_by_their_byte_ranges_alone() {
        let parts = vec![
            (
                "event_type=a/event_subtype=b/event_date=2024-03-17".to_string(),
                vec![staged("file:/x#1", "{\"n\":1}"), staged("file:/x#3", "{}")],
            ),
            (
                "event_type=c/event_subtype=__HIVE_DEFAULT_PARTITION__/event_date=2024-03-18"
                    .to_string(),
                vec![staged("kinesis:s/shard/42", "{\"é\":\"\\u0000\"}")],
            ),
        ];
        let obj = encode_staging(
            "20240317T101500Z",
            "2024-03-17T10:15:31Z",
            CreatedAtUnit::S,
            &parts,
        )
        .expect("staged");
        let header = read_header("k", &obj).expect("header");
        assert_eq!(header.rows, 3);
        assert_eq!(header.window, "20240317T101500Z");
        for (section, (partition, events)) in header.sections.iter().zip(&parts) {
            assert_eq!(&section.partition, partition);
            // only the section's own bytes are needed
            let range = &obj[section.offset as usize..(section.offset + section.len) as usize];
            let alone = Section {
                offset: 0,
                ..section.clone()
            };
            let bytes = section_bytes("k", range, &alone).expect("decompresses");
            assert_eq!(
                &section_events("k", section, &bytes).expect("events"),
                events
            );
        }
    }

    #[test]
    fn damage_is_reported_not_misread() {
        let parts = vec![(
            "p".to_string(),
            vec![staged("o", "{\"a\":1}"), staged("o2", "{\"a\":2}")],
        )];
        let obj = encode_staging("w", "t", CreatedAtUnit::S, &parts).expect("staged");
        assert!(read_header("k", &obj[..obj.len() - 3]).is_err());
        assert!(read_header("k", b"PAR1....").is_err());
        let header = read_header("k", &obj).expect("header");
        let mut wrong = header.sections[0].clone();
        wrong.rows = 3;
        let bytes = section_bytes("k", &obj, &header.sections[0]).expect("bytes");
        assert!(section_events("k", &wrong, &bytes).is_err());
        assert!(section_events("k", &header.sections[0], &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn the_created_at_unit_is_recorded_and_absent_means_seconds() {
        let parts = vec![(
            "event_type=a/event_subtype=b/event_date=2024-03-17".to_string(),
            vec![Staged {
                owner: "o",
                json: b"{}",
            }],
        )];
        let obj = encode_staging("w", "t", CreatedAtUnit::Ms, &parts).expect("staged");
        assert_eq!(
            read_header("k", &obj).expect("header").created_at_unit,
            CreatedAtUnit::Ms
        );
        // seconds is not written, so objects of earlier versions read the same
        let obj = encode_staging("w", "t", CreatedAtUnit::S, &parts).expect("staged");
        let len = u32::from_le_bytes([obj[8], obj[9], obj[10], obj[11]]) as usize;
        let header = std::str::from_utf8(&obj[12..12 + len]).expect("utf-8");
        assert!(!header.contains("created_at_unit"), "{header}");
        assert_eq!(
            read_header("k", &obj).expect("header").created_at_unit,
            CreatedAtUnit::S
        );
    }
}

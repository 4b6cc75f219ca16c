//! A raw record as it enters the pipeline: its bytes and where it came from.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::core::reject::Reject;

/// Where a record came from. It names the record in logs and dead letters, and
/// its [`Origin::owner`] is the identity the dedup protocol records for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A Kinesis record, in a Lambda batch or in a saved Kinesis event document.
    Kinesis {
        /// Stream name (from the event source ARN), empty when unknown.
        stream: String,
        /// Shard id, e.g. `shardId-000000000000`.
        shard_id: String,
        /// The record's sequence number within the shard (for a user record
        /// of a KPL aggregate: the aggregate's).
        sequence_number: String,
        /// The user record's position in its KPL aggregate (0-based); none
        /// for a record that is not aggregated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub_sequence_number: Option<u64>,
        /// Approximate arrival time at the stream, Unix milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arrival_ms: Option<i64>,
    },
    /// A line of an NDJSON file read by the CLI.
    File {
        /// Absolute path of the file.
        path: String,
        /// 1-based line number.
        line: u64,
    },
}

impl Origin {
    /// The stable identity of this record across retries and replays: the same
    /// record read again (a Lambda retry, or the CLI run again on the same file)
    /// has the same owner, and no other record has it.
    pub fn owner(&self) -> String {
        let mut s = String::new();
        self.write_owner(&mut s);
        s
    }

    /// Appends [`Origin::owner`] to `out` (one buffer for a whole batch).
    pub fn write_owner(&self, out: &mut String) {
        match self {
            Origin::Kinesis {
                stream,
                shard_id,
                sequence_number,
                sub_sequence_number,
                ..
            } => {
                use std::fmt::Write as _;
                for part in ["kinesis:", stream, "/", shard_id, "/", sequence_number] {
                    out.push_str(part);
                }
                if let Some(sub) = sub_sequence_number {
                    // writing to a String cannot fail
                    let _ = write!(out, ":{sub}");
                }
            }
            Origin::File { path, line } => {
                use std::fmt::Write as _;
                out.push_str("file:");
                out.push_str(path);
                // writing to a String cannot fail
                let _ = write!(out, "#{line}");
            }
        }
    }

    /// The origin an [`Origin::owner`] was made from (the arrival time, not
    /// part of the owner, is unknown); `None` for text that is no owner.
    pub fn from_owner(owner: &str) -> Option<Origin> {
        if let Some(rest) = owner.strip_prefix("kinesis:") {
            let mut parts = rest.rsplitn(3, '/');
            let last = parts.next()?;
            let shard_id = parts.next()?.to_string();
            let stream = parts.next()?.to_string();
            let (sequence_number, sub_sequence_number) = match last.split_once(':') {
                Some((seq, sub)) => (seq.to_string(), Some(sub.parse().ok()?)),
                None => (last.to_string(), None),
            };
            return Some(Origin::Kinesis {
                stream,
                shard_id,
                sequence_number,
                sub_sequence_number,
                arrival_ms: None,
            });
        }
        let (path, line) = owner.strip_prefix("file:")?.rsplit_once('#')?;
        Some(Origin::File {
            path: path.to_string(),
            line: line.parse().ok()?,
        })
    }

    /// A short human description for logs: `shard S seq N` or `path:line`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Kinesis {
                shard_id,
                sequence_number,
                sub_sequence_number: None,
                ..
            } => format!("{shard_id} seq {sequence_number}"),
            Origin::Kinesis {
                shard_id,
                sequence_number,
                sub_sequence_number: Some(sub),
                ..
            } => format!("{shard_id} seq {sequence_number} sub {sub}"),
            Origin::File { path, line } => format!("{path}:{line}"),
        }
    }
}

/// One record of a batch: the bytes a producer put on the stream.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// The record's data, exactly as the producer sent it (plain or gzip JSON).
    pub data: Vec<u8>,
    /// Where it came from.
    pub origin: Origin,
    /// Why the data could not be read from its source intact (Kinesis data
    /// that is not base64, a gzip input that breaks off): the record is
    /// rejected with this reason, `data` holding what could be read.
    pub unreadable: Option<Reject>,
}

impl RawRecord {
    /// A record read intact from its source.
    pub fn new(data: Vec<u8>, origin: Origin) -> RawRecord {
        RawRecord {
            data,
            origin,
            unreadable: None,
        }
    }

    /// The JSON bytes of the record ([`crate::core::decode::decode`]), or
    /// why it was unreadable at its source.
    pub fn decode(&self) -> Result<Cow<'_, [u8]>, Reject> {
        match &self.unreadable {
            Some(r) => Err(r.clone()),
            None => crate::core::decode::decode(&self.data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_gives_its_origin_back() {
        for o in [
            Origin::Kinesis {
                stream: "s".into(),
                shard_id: "shardId-000000000001".into(),
                sequence_number: "4959".into(),
                sub_sequence_number: None,
                arrival_ms: None,
            },
            Origin::Kinesis {
                stream: "s".into(),
                shard_id: "shardId-000000000001".into(),
                sequence_number: "4959".into(),
                sub_sequence_number: Some(3),
                arrival_ms: None,
            },
            Origin::File {
                path: "/a/b#c.ndjson".into(),
                line: 12,
            },
        ] {
            assert_eq!(Origin::from_owner(&o.owner()), Some(o));
        }
        assert_eq!(Origin::from_owner("nothing"), None);
        assert_eq!(Origin::from_owner("kinesis:s/shard/12:x"), None);
    }

    #[test]
    fn a_plain_record_keeps_its_owner_and_a_user_record_adds_its_position() {
        let mut o = Origin::Kinesis {
            stream: "s".into(),
            shard_id: "shardId-1".into(),
            sequence_number: "42".into(),
            sub_sequence_number: None,
            arrival_ms: Some(1),
        };
        assert_eq!(o.owner(), "kinesis:s/shardId-1/42");
        if let Origin::Kinesis {
            sub_sequence_number,
            ..
        } = &mut o
        {
            *sub_sequence_number = Some(7);
        }
        assert_eq!(o.owner(), "kinesis:s/shardId-1/42:7");
        assert_eq!(o.describe(), "shardId-1 seq 42 sub 7");
    }
}

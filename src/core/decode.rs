//! Decode: a record's bytes into the bytes of one JSON event (gunzip when the
//! record starts with the gzip magic bytes).

use std::borrow::Cow;
use std::io::Read;

use crate::core::reject::Reject;

/// Largest decompressed event accepted: far above Kinesis' 1 MiB record limit,
/// low enough that a gzip bomb cannot exhaust the function's memory.
pub const MAX_DECOMPRESSED_BYTES: u64 = 16 * 1024 * 1024;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Parses JSON from bytes with their UTF-8 checked once, up front: parsing
/// from bytes, serde_json checks each string on its own (~4 % of a batch).
/// Invalid UTF-8 is parsed from the bytes, so that the error says where.
pub fn json_from_bytes<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// Returns the JSON bytes of a record: the data itself, or its gunzipped form
/// when it starts with the gzip magic bytes.
pub fn decode(data: &[u8]) -> Result<Cow<'_, [u8]>, Reject> {
    if !data.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(data));
    }
    let mut out = Vec::with_capacity(data.len() * 4);
    let mut reader = flate2::read::MultiGzDecoder::new(data).take(MAX_DECOMPRESSED_BYTES + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| Reject::Gzip(e.to_string()))?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(Reject::TooLarge {
            limit: MAX_DECOMPRESSED_BYTES,
        });
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).expect("write to a Vec");
        enc.finish().expect("finish a Vec")
    }

    #[test]
    fn plain_json_is_borrowed_unchanged() {
        let data = br#"{"a":1}"#;
        let got = decode(data).expect("plain");
        assert!(matches!(got, Cow::Borrowed(_)));
        assert_eq!(&*got, data);
    }

    #[test]
    fn gzip_is_detected_by_magic_and_inflated() {
        let data = br#"{"event_uuid":"u1"}"#;
        assert_eq!(&*decode(&gzip(data)).expect("gzip"), data);
    }

    #[test]
    fn truncated_gzip_is_a_rejection_not_a_panic() {
        let mut z = gzip(br#"{"event_uuid":"u1","pad":"xxxxxxxxxxxxxxxxxxxxxxxx"}"#);
        z.truncate(z.len() / 2);
        assert!(matches!(decode(&z), Err(Reject::Gzip(_))));
    }

    #[test]
    fn gzip_bomb_is_rejected() {
        let big = vec![b' '; (MAX_DECOMPRESSED_BYTES + 10) as usize];
        assert!(matches!(decode(&gzip(&big)), Err(Reject::TooLarge { .. })));
    }
}

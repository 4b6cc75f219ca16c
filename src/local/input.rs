//! Input files for the CLI: NDJSON (one event per line) or Lambda Kinesis event
//! documents (`{"Records": [...]}`), either possibly gzip-compressed. The format
//! is detected from the content, not the file name.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::core::decode::json_from_bytes;
use crate::kinesis::{KinesisEvent, raw_records};
use crate::record::{Origin, RawRecord};

/// An input that cannot be read. The tool stops: nothing is skipped silently.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file or folder cannot be read.
    #[error("cannot read input {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file that starts like a Kinesis event document is not a valid one.
    #[error(
        "input {path} starts like a Lambda Kinesis event document ({{\"Records\": [...]}}) but is not one: {message}"
    )]
    KinesisDocument {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InputError + '_ {
    move |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files named by the inputs: files as given, folders walked recursively in
/// name order, skipping hidden entries (names starting with `.`).
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(io(p))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(io(dir)))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// The two input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON event per line.
    Ndjson,
    /// A Lambda Kinesis event document.
    KinesisEvent,
}

/// Detects the format from the first bytes: a JSON object whose first key is
/// `"Records"` is a Kinesis event document; anything else is NDJSON.
pub fn detect(head: &[u8]) -> Format {
    let rest = head.trim_ascii_start();
    if let Some(after) = rest.strip_prefix(b"{")
        && after.trim_ascii_start().starts_with(b"\"Records\"")
    {
        return Format::KinesisEvent;
    }
    Format::Ndjson
}

fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, InputError> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let gz = reader
        .fill_buf()
        .map_err(io(path))?
        .starts_with(&[0x1f, 0x8b]);
    if gz {
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::bufread::MultiGzDecoder::new(reader),
        )))
    } else {
        Ok(Box::new(reader))
    }
}

/// The records of one input file, in order.
pub enum FileRecords {
    /// Lines of an NDJSON file.
    Ndjson {
        /// The reader.
        reader: Box<dyn BufRead + Send>,
        /// Absolute path, for origins.
        path: String,
        /// The path as given, for errors.
        shown: PathBuf,
        /// Lines read so far.
        line: u64,
    },
    /// Records of a Kinesis event document.
    Kinesis(std::vec::IntoIter<RawRecord>),
}

impl FileRecords {
    /// Opens a file and detects its format.
    pub fn open(path: &Path) -> Result<FileRecords, InputError> {
        let mut reader = open(path)?;
        let format = detect(reader.fill_buf().map_err(io(path))?);
        match format {
            Format::KinesisEvent => {
                let mut buf = Vec::new();
                reader.read_to_end(&mut buf).map_err(io(path))?;
                let event = json_from_bytes::<KinesisEvent>(&buf).map_err(|e| {
                    InputError::KinesisDocument {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    }
                })?;
                let records = raw_records(event).map_err(|e| InputError::KinesisDocument {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                Ok(FileRecords::Kinesis(records.into_iter()))
            }
            Format::Ndjson => {
                let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                Ok(FileRecords::Ndjson {
                    reader,
                    path: abs.to_string_lossy().into_owned(),
                    shown: path.to_path_buf(),
                    line: 0,
                })
            }
        }
    }
}

impl Iterator for FileRecords {
    type Item = Result<RawRecord, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            FileRecords::Kinesis(it) => it.next().map(Ok),
            FileRecords::Ndjson {
                reader,
                path,
                shown,
                line,
            } => loop {
                let mut buf = Vec::new();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) => return None,
                    Ok(_) => {
                        *line += 1;
                        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            buf.pop();
                        }
                        if buf.trim_ascii().is_empty() {
                            continue;
                        }
                        return Some(Ok(RawRecord {
                            data: buf,
                            origin: Origin::File {
                                path: path.clone(),
                                line: *line,
                            },
                            unreadable: None,
                        }));
                    }
                    Err(source) => {
                        return Some(Err(InputError::Io {
                            path: shown.clone(),
                            source,
                        }));
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kinesis_documents_by_their_first_key() {
        assert_eq!(detect(b"  {\n  \"Records\": []}"), Format::KinesisEvent);
        assert_eq!(detect(br#"{"event_uuid":"x"}"#), Format::Ndjson);
        assert_eq!(detect(b""), Format::Ndjson);
    }

    #[test]
    fn ndjson_lines_keep_their_line_numbers_and_skip_blank_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("in.ndjson");
        std::fs::write(&p, "{\"a\":1}\r\n\n   \n{\"b\":2}").expect("write");
        let recs: Vec<RawRecord> = FileRecords::open(&p)
            .expect("open")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].data, b"{\"a\":1}");
        assert!(matches!(recs[1].origin, Origin::File { line: 4, .. }));
    }

    #[test]
    fn folders_are_walked_in_order_skipping_hidden_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        for f in ["b.json", "a.json", ".hidden", "sub/c.json"] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        let files = expand(&[dir.path().to_path_buf()]).expect("expand");
        let names: Vec<_> = files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["a.json", "b.json", "sub/c.json"]);
    }
}

//! A folder as the lake's object sink. A file appears atomically: it is
//! written to a hidden temporary name in its folder, synced, then renamed.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::core::sink::{ObjectSink, SinkError};

/// Lake files under a root folder.
#[derive(Debug, Clone)]
pub struct FsSink {
    root: PathBuf,
}

impl FsSink {
    /// A sink rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> FsSink {
        FsSink { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a key; refuses keys that could leave the root.
    fn path_of(&self, operation: &'static str, key: &str) -> Result<PathBuf, SinkError> {
        let rel = Path::new(key);
        let safe = !key.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(SinkError {
                operation,
                key: key.into(),
                message: "key is not a plain relative path inside the lake".into(),
            });
        }
        Ok(self.root.join(rel))
    }
}

fn write_atomically(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("key has no parent folder"))?;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("key has no file name"))?
        .to_string_lossy();
    // hidden and without the .parquet ending: readers never pick it up
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::now_v7().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl ObjectSink for FsSink {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let path = self.path_of("put", key)?;
        let err = |e: std::io::Error| SinkError {
            operation: "put",
            key: key.into(),
            message: format!("{e} (check that the lake folder is writable and the disk has space)"),
        };
        tokio::task::spawn_blocking(move || write_atomically(&path, &body))
            .await
            .map_err(|e| err(std::io::Error::other(e)))?
            .map_err(err)
    }

    async fn exists(&self, key: &str) -> Result<bool, SinkError> {
        let path = self.path_of("exists", key)?;
        tokio::fs::try_exists(&path).await.map_err(|e| SinkError {
            operation: "exists",
            key: key.into(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_creates_folders_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = FsSink::new(dir.path());
        sink.put("a=1/b=2/f.parquet", Bytes::from_static(b"x"))
            .await
            .expect("put");
        assert!(sink.exists("a=1/b=2/f.parquet").await.expect("exists"));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a=1/b=2"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["f.parquet"]);
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = FsSink::new(dir.path().join("lake"));
        for key in ["../x", "/etc/x", "a/../../x", "", "./a"] {
            assert!(sink.put(key, Bytes::new()).await.is_err(), "{key}");
        }
        assert!(!dir.path().join("x").exists());
    }
}

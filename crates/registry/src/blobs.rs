//! Content-addressed blob storage behind a narrow trait. [`FsBlobs`] keeps blobs on the local
//! filesystem, sealed with AES-256-GCM (see [`crate::seal`]).
//!
//! Uploads are written to `uploads/ID` and become visible only by an atomic rename to
//! `blobs/sha256/XX/HEX` after their digest is verified, so a crash mid-upload leaves no visible
//! blob, and two concurrent pushes of one layer both end with the same single file. All file IO
//! and crypto run on blocking threads fed through small channels: memory stays flat whatever
//! the blob's size.

use crate::names::Digest;
use crate::seal::{self, Key, Sealer, HEADER, OVERHEAD, RECORD};
use crate::Error;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A stream of a blob's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, Error>>;

/// Where blobs live. Digests are verified by the store on commit, never trusted.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Whether a blob with this digest is stored.
    async fn exists(&self, digest: &Digest) -> Result<bool, Error>;
    /// Bytes `[start, end)` of a blob of `size` bytes.
    async fn read(&self, digest: &Digest, start: u64, end: u64) -> Result<ByteStream, Error>;
    /// Starts an empty upload.
    async fn upload_start(&self, id: &str) -> Result<(), Error>;
    /// The bytes received so far, or `None` for an unknown upload.
    async fn upload_size(&self, id: &str) -> Result<Option<u64>, Error>;
    /// Appends `data` to an upload whose current size must be `offset`; returns the new size.
    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
        data: BoxStream<'static, Result<Bytes, Error>>,
    ) -> Result<u64, Error>;
    /// Verifies the upload's digest and size and makes it the blob `digest`; the upload is gone
    /// either way. Returns the blob's size.
    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, Error>;
    /// Discards an upload.
    async fn upload_cancel(&self, id: &str) -> Result<(), Error>;
    /// Removes a blob if it was last written or reused at least `older_than` ago; `false` if
    /// there was none or it is younger. Checked atomically with commits of the same content,
    /// so garbage collection never removes a blob a concurrent push has just reused.
    async fn delete(&self, digest: &Digest, older_than: Duration) -> Result<bool, Error>;
    /// Every stored blob and when it was written, for garbage collection.
    async fn list(&self) -> Result<Vec<(Digest, SystemTime)>, Error>;
    /// Every upload and when it last changed, for expiring abandoned ones.
    async fn uploads(&self) -> Result<Vec<(String, SystemTime)>, Error>;
}

/// What an upload in progress needs between requests. Rebuilt from the file after a restart.
#[derive(Clone)]
struct UploadState {
    hasher: Sha256,
    size: u64,
    records: u32,
    sealer: Sealer,
}

/// Blobs on the local filesystem, encrypted at rest.
#[derive(Debug)]
pub struct FsBlobs {
    root: PathBuf,
    key: Key,
    /// One writer per upload at a time; the state is cached between requests.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<UploadState>>>>>,
    /// Held (briefly, on a blocking thread) while a commit makes a blob visible or reuses one,
    /// and while garbage collection decides to remove one: the two never interleave.
    publish: Arc<Mutex<()>>,
}

impl std::fmt::Debug for UploadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadState")
            .field("size", &self.size)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl FsBlobs {
    /// Blobs under `root`, sealed with `key`.
    pub fn open(root: impl Into<PathBuf>, key: Key) -> Result<FsBlobs, Error> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::create_dir_all(root.join("uploads"))?;
        Ok(FsBlobs {
            root,
            key,
            uploads: Mutex::new(HashMap::new()),
            publish: Arc::new(Mutex::new(())),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, Error> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Error::BlobUploadUnknown(format!(
                "upload '{id}' is unknown"
            )));
        }
        Ok(self.root.join("uploads").join(id))
    }

    fn slot(&self, id: &str) -> Arc<tokio::sync::Mutex<Option<UploadState>>> {
        let mut map = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    fn forget(&self, id: &str) {
        let mut map = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id);
    }
}

/// Reads an upload file from the start to rebuild its state.
fn rebuild(path: &Path, key: &Key) -> Result<UploadState, Error> {
    let mut file = File::open(path)?;
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header)?;
    let sealer = Sealer::from_header(key, &header)?;
    let mut state = UploadState {
        hasher: Sha256::new(),
        size: 0,
        records: 0,
        sealer,
    };
    let mut reader = std::io::BufReader::with_capacity(RECORD + OVERHEAD, file);
    let mut buf = vec![0u8; RECORD + 16];
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let n = seal::record_len(len)?;
        let sealed = &mut buf[..n + 16];
        reader.read_exact(sealed)?;
        let plain = state.sealer.open(state.records, len, sealed)?;
        state.hasher.update(&plain);
        state.size += plain.len() as u64;
        state.records += 1;
    }
    Ok(state)
}

/// Writes what arrives on `rx` to the upload file as sealed records.
fn write_records(
    path: &Path,
    mut state: UploadState,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Result<UploadState, Error> {
    let mut file = OpenOptions::new().append(true).open(path)?;
    let mut pending: Vec<u8> = Vec::with_capacity(RECORD);
    let mut out: Vec<u8> = Vec::with_capacity(RECORD + OVERHEAD);
    let flush = |state: &mut UploadState,
                 plain: &[u8],
                 out: &mut Vec<u8>,
                 file: &mut File|
     -> Result<(), Error> {
        out.clear();
        state.sealer.seal(state.records, plain, out)?;
        file.write_all(out)?;
        state.hasher.update(plain);
        state.size += plain.len() as u64;
        state.records += 1;
        Ok(())
    };
    while let Some(mut chunk) = rx.blocking_recv() {
        while !chunk.is_empty() {
            if pending.is_empty() && chunk.len() >= RECORD {
                let whole = chunk.split_to(RECORD);
                flush(&mut state, &whole, &mut out, &mut file)?;
                continue;
            }
            let take = (RECORD - pending.len()).min(chunk.len());
            pending.extend_from_slice(&chunk.split_to(take));
            if pending.len() == RECORD {
                flush(&mut state, &pending, &mut out, &mut file)?;
                pending.clear();
            }
        }
    }
    if !pending.is_empty() {
        flush(&mut state, &pending, &mut out, &mut file)?;
    }
    file.sync_data()?;
    Ok(state)
}

/// Streams the plaintext bytes `[start, end)` of a sealed file to `tx`.
fn read_records(
    path: &Path,
    key: &Key,
    start: u64,
    end: u64,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, Error>>,
) -> Result<(), Error> {
    let mut file = File::open(path)?;
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header)?;
    let sealer = Sealer::from_header(key, &header)?;
    // Skip whole records before `start` by their length fields alone.
    let mut pos: u64 = 0;
    let mut index: u32 = 0;
    let mut at = HEADER as u64;
    loop {
        let mut len = [0u8; 4];
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut len)?;
        let n = seal::record_len(len)? as u64;
        if pos + n > start {
            break;
        }
        pos += n;
        at += n + OVERHEAD as u64;
        index += 1;
    }
    file.seek(SeekFrom::Start(at))?;
    let mut reader = std::io::BufReader::with_capacity(4 * (RECORD + OVERHEAD), file);
    let mut buf = vec![0u8; RECORD + 16];
    while pos < end {
        let mut len = [0u8; 4];
        reader
            .read_exact(&mut len)
            .map_err(|e| Error::Corrupt(format!("blob file ends early at byte {pos}: {e}")))?;
        let n = seal::record_len(len)?;
        let sealed = &mut buf[..n + 16];
        reader.read_exact(sealed)?;
        let plain = sealer.open_in_place(index, len, sealed)?;
        let lo = start.saturating_sub(pos) as usize;
        let hi = ((end - pos) as usize).min(plain);
        let part = Bytes::copy_from_slice(&sealed[lo..hi]);
        if tx.blocking_send(Ok(part)).is_err() {
            return Ok(()); // the reader went away
        }
        pos += n as u64;
        index += 1;
    }
    Ok(())
}

fn receiver_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Internal(format!("a blob storage thread failed: {e}"))
}

#[async_trait]
impl BlobStore for FsBlobs {
    async fn exists(&self, digest: &Digest) -> Result<bool, Error> {
        Ok(tokio::fs::try_exists(self.blob_path(digest)).await?)
    }

    async fn read(&self, digest: &Digest, start: u64, end: u64) -> Result<ByteStream, Error> {
        let path = self.blob_path(digest);
        if !tokio::fs::try_exists(&path).await? {
            return Err(Error::BlobUnknown(format!("blob {digest} is not stored")));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        if start < end {
            let key = self.key.clone();
            let digest = digest.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = read_records(&path, &key, start, end, &tx) {
                    tracing::error!(%digest, error = %e, "reading a blob failed");
                    let _ = tx.blocking_send(Err(e));
                }
            });
        }
        Ok(receiver_stream(rx).boxed())
    }

    async fn upload_start(&self, id: &str) -> Result<(), Error> {
        let path = self.upload_path(id)?;
        let sealer = Sealer::new(&self.key);
        let header = sealer.header();
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
            f.write_all(&header)?;
            f.sync_data()?;
            Ok(())
        })
        .await
        .map_err(join_error)??;
        *self.slot(id).lock().await = Some(UploadState {
            hasher: Sha256::new(),
            size: 0,
            records: 0,
            sealer,
        });
        Ok(())
    }

    async fn upload_size(&self, id: &str) -> Result<Option<u64>, Error> {
        let path = self.upload_path(id)?;
        if !tokio::fs::try_exists(&path).await? {
            return Ok(None);
        }
        let slot = self.slot(id);
        let mut state = slot.lock().await;
        if state.is_none() {
            let key = self.key.clone();
            *state = Some(
                tokio::task::spawn_blocking(move || rebuild(&path, &key))
                    .await
                    .map_err(join_error)??,
            );
        }
        Ok(state.as_ref().map(|s| s.size))
    }

    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
        mut data: BoxStream<'static, Result<Bytes, Error>>,
    ) -> Result<u64, Error> {
        let path = self.upload_path(id)?;
        if !tokio::fs::try_exists(&path).await? {
            return Err(Error::BlobUploadUnknown(format!(
                "upload '{id}' is unknown"
            )));
        }
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        let state = match guard.take() {
            Some(s) => s,
            None => {
                let (p, key) = (path.clone(), self.key.clone());
                tokio::task::spawn_blocking(move || rebuild(&p, &key))
                    .await
                    .map_err(join_error)??
            }
        };
        if state.size != offset {
            let size = state.size;
            *guard = Some(state);
            return Err(Error::RangeInvalid(format!(
                "the chunk starts at byte {offset}, but the upload holds {size} bytes"
            )));
        }
        let before = state.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let writer = tokio::task::spawn_blocking(move || write_records(&path, state, rx));
        let mut failed = None;
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(c) if c.is_empty() => {}
                Ok(c) => {
                    if tx.send(c).await.is_err() {
                        break; // the writer failed; its error is below
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(join_error)?;
        match (written, failed) {
            (Ok(state), None) => {
                let size = state.size;
                *guard = Some(state);
                Ok(size)
            }
            (Ok(state), Some(e)) => {
                // What arrived before the client stopped is kept, as the spec allows: the
                // client asks for the upload's status and resumes from there.
                *guard = Some(state);
                Err(e)
            }
            (Err(e), _) => {
                // The file may hold a partial record; rebuild from it next time (and fail
                // loudly then if it is damaged).
                drop(before);
                *guard = None;
                Err(e)
            }
        }
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, Error> {
        let size = self
            .upload_size(id)
            .await?
            .ok_or_else(|| Error::BlobUploadUnknown(format!("upload '{id}' is unknown")))?;
        let slot = self.slot(id);
        let state = slot.lock().await.take();
        let path = self.upload_path(id)?;
        let Some(state) = state else {
            return Err(Error::BlobUploadUnknown(format!(
                "upload '{id}' is unknown"
            )));
        };
        let actual = Digest::from_hash(&state.hasher.finalize());
        self.forget(id);
        if &actual != digest {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(Error::DigestInvalid(format!(
                "the uploaded content has digest {actual} ({size} bytes), not {digest}"
            )));
        }
        let target = self.blob_path(digest);
        let publish = self.publish.clone();
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            let dir = target.parent().expect("blob paths have a parent");
            fs::create_dir_all(dir)?;
            let _published = publish.lock().unwrap_or_else(|e| e.into_inner());
            if target.exists() {
                // Someone pushed the same content first: theirs is as good as ours. Touch it
                // so garbage collection's grace period starts again.
                fs::remove_file(&path)?;
                File::options()
                    .write(true)
                    .open(&target)?
                    .set_modified(SystemTime::now())?;
            } else {
                fs::rename(&path, &target)?;
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(join_error)??;
        Ok(size)
    }

    async fn upload_cancel(&self, id: &str) -> Result<(), Error> {
        let path = self.upload_path(id)?;
        let slot = self.slot(id);
        let _guard = slot.lock().await;
        self.forget(id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::BlobUploadUnknown(
                format!("upload '{id}' is unknown"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, digest: &Digest, older_than: Duration) -> Result<bool, Error> {
        let path = self.blob_path(digest);
        let publish = self.publish.clone();
        tokio::task::spawn_blocking(move || -> Result<bool, Error> {
            let _published = publish.lock().unwrap_or_else(|e| e.into_inner());
            let modified = match fs::metadata(&path) {
                Ok(m) => m.modified()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            if SystemTime::now()
                .duration_since(modified)
                .map_or(true, |age| age < older_than)
            {
                return Ok(false);
            }
            fs::remove_file(&path)?;
            Ok(true)
        })
        .await
        .map_err(join_error)?
    }

    async fn list(&self) -> Result<Vec<(Digest, SystemTime)>, Error> {
        let root = self.root.join("blobs/sha256");
        tokio::task::spawn_blocking(move || -> Result<Vec<(Digest, SystemTime)>, Error> {
            let mut out = Vec::new();
            for dir in fs::read_dir(&root)? {
                let dir = dir?;
                if !dir.file_type()?.is_dir() {
                    continue;
                }
                for f in fs::read_dir(dir.path())? {
                    let f = f?;
                    let name = f.file_name().to_string_lossy().to_string();
                    if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
                        out.push((d, f.metadata()?.modified()?));
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(join_error)?
    }

    async fn uploads(&self) -> Result<Vec<(String, SystemTime)>, Error> {
        let root = self.root.join("uploads");
        tokio::task::spawn_blocking(move || -> Result<Vec<(String, SystemTime)>, Error> {
            let mut out = Vec::new();
            for f in fs::read_dir(&root)? {
                let f = f?;
                out.push((
                    f.file_name().to_string_lossy().to_string(),
                    f.metadata()?.modified()?,
                ));
            }
            Ok(out)
        })
        .await
        .map_err(join_error)?
    }
}

/// Loads the key from `path`, creating a random one (mode 0600) if the file does not exist.
pub fn load_or_create_key(path: &Path) -> Result<Key, Error> {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let raw = hex::decode(text.trim()).map_err(|_| {
                Error::Internal(format!(
                    "{} must hold a 256-bit key as 64 hex characters",
                    path.display()
                ))
            })?;
            let key: [u8; 32] = raw.try_into().map_err(|_| {
                Error::Internal(format!(
                    "{} must hold a 256-bit key as 64 hex characters",
                    path.display()
                ))
            })?;
            Ok(Key(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(path)?;
            f.write_all(hex::encode(key).as_bytes())?;
            f.sync_all()?;
            Ok(Key(key))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<Vec<u8>>) -> BoxStream<'static, Result<Bytes, Error>> {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p)))).boxed()
    }

    async fn read_all(b: &FsBlobs, d: &Digest, start: u64, end: u64) -> Vec<u8> {
        let mut s = b.read(d, start, end).await.unwrap();
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn chunked_upload_round_trips_with_ranges_and_is_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::open(dir.path(), Key([1; 32])).unwrap();
        let content = data(3 * RECORD + 1234);
        let digest = Digest::of(&content);
        blobs.upload_start("u1").await.unwrap();
        // Three requests with odd chunk sizes, as a resumable client sends them.
        let (a, rest) = content.split_at(1000);
        let (b, c) = rest.split_at(RECORD + 7);
        let n = blobs
            .upload_append("u1", 0, chunks(vec![a.to_vec()]))
            .await
            .unwrap();
        assert_eq!(n, 1000);
        let wrong = blobs.upload_append("u1", 5, chunks(vec![b.to_vec()])).await;
        assert!(matches!(wrong, Err(Error::RangeInvalid(_))), "{wrong:?}");
        let n = blobs
            .upload_append("u1", 1000, chunks(vec![b[..10].to_vec(), b[10..].to_vec()]))
            .await
            .unwrap();
        assert_eq!(n, (1000 + b.len()) as u64);
        // A restart in the middle: the state is rebuilt from the file.
        let blobs = FsBlobs::open(dir.path(), Key([1; 32])).unwrap();
        assert_eq!(blobs.upload_size("u1").await.unwrap(), Some(n));
        blobs
            .upload_append("u1", n, chunks(vec![c.to_vec()]))
            .await
            .unwrap();
        assert!(
            !blobs.exists(&digest).await.unwrap(),
            "not visible before commit"
        );
        assert_eq!(
            blobs.upload_commit("u1", &digest).await.unwrap(),
            content.len() as u64
        );
        assert!(blobs.exists(&digest).await.unwrap());
        let len = content.len() as u64;
        assert_eq!(read_all(&blobs, &digest, 0, len).await, content);
        for (s, e) in [
            (0, 1),
            (999, 1001),
            (RECORD as u64 - 1, 2 * RECORD as u64 + 5),
            (len - 3, len),
        ] {
            assert_eq!(
                read_all(&blobs, &digest, s, e).await,
                content[s as usize..e as usize].to_vec(),
                "range {s}..{e}"
            );
        }
        // Nothing of the plaintext is on disk.
        let raw = fs::read(blobs.blob_path(&digest)).unwrap();
        assert!(!raw.windows(64).any(|w| w == &content[RECORD..RECORD + 64]));
        // Another key cannot read it.
        let other = FsBlobs::open(dir.path(), Key([2; 32])).unwrap();
        let mut s = other.read(&digest, 0, len).await.unwrap();
        assert!(matches!(s.next().await, Some(Err(Error::Corrupt(_)))));
    }

    #[tokio::test]
    async fn wrong_digest_stores_nothing_and_same_content_twice_is_one_blob() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::open(dir.path(), Key([1; 32])).unwrap();
        let content = data(5000);
        let digest = Digest::of(&content);
        blobs.upload_start("bad").await.unwrap();
        blobs
            .upload_append("bad", 0, chunks(vec![content[..4999].to_vec()]))
            .await
            .unwrap();
        let e = blobs.upload_commit("bad", &digest).await.unwrap_err();
        assert!(matches!(e, Error::DigestInvalid(_)), "{e:?}");
        assert!(!blobs.exists(&digest).await.unwrap());
        assert!(
            blobs.uploads().await.unwrap().is_empty(),
            "upload discarded"
        );

        // Two concurrent uploads of one layer.
        let blobs = Arc::new(blobs);
        let mut handles = Vec::new();
        for i in 0..2 {
            let (b, c, d) = (blobs.clone(), content.clone(), digest.clone());
            handles.push(tokio::spawn(async move {
                let id = format!("same{i}");
                b.upload_start(&id).await.unwrap();
                b.upload_append(&id, 0, chunks(vec![c])).await.unwrap();
                b.upload_commit(&id, &d).await.unwrap()
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap(), 5000);
        }
        assert_eq!(blobs.list().await.unwrap().len(), 1);
        assert_eq!(read_all(&blobs, &digest, 0, 5000).await, content);
        assert!(blobs.uploads().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn collection_spares_a_blob_a_push_just_reused() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::open(dir.path(), Key([1; 32])).unwrap();
        let content = data(100);
        let digest = Digest::of(&content);
        for id in ["first", "again"] {
            blobs.upload_start(id).await.unwrap();
            blobs
                .upload_append(id, 0, chunks(vec![content.clone()]))
                .await
                .unwrap();
        }
        blobs.upload_commit("first", &digest).await.unwrap();
        let hour = Duration::from_secs(3600);
        assert!(
            !blobs.delete(&digest, hour).await.unwrap(),
            "too young to go"
        );
        // Two hours pass with nothing referencing it...
        File::options()
            .write(true)
            .open(blobs.blob_path(&digest))
            .unwrap()
            .set_modified(SystemTime::now() - 2 * hour)
            .unwrap();
        // ...then a push of the same content reuses the file, just before the collector acts.
        blobs.upload_commit("again", &digest).await.unwrap();
        assert!(
            !blobs.delete(&digest, hour).await.unwrap(),
            "reused: young again"
        );
        assert!(blobs.exists(&digest).await.unwrap());
        assert!(blobs.delete(&digest, Duration::ZERO).await.unwrap());
        assert!(!blobs.exists(&digest).await.unwrap());
    }

    #[test]
    fn key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k/registry.key");
        let a = load_or_create_key(&p).unwrap();
        let b = load_or_create_key(&p).unwrap();
        assert_eq!(a.0, b.0);
        fs::write(&p, "nothex").unwrap();
        assert!(load_or_create_key(&p).is_err());
    }
}

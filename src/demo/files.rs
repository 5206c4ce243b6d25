//! The demo's file store: uploads (a bid file to seal, a sealed `.bze` to open) and the files
//! it makes from them (the sealed file, the opened plaintext), kept as temporary files.
//!
//! Bounded on purpose, since anyone who reaches a development broker can upload: each file is at
//! most [`MAX_UPLOAD_BYTES`], at most [`MAX_FILES`] are kept (the oldest is dropped first), and
//! each is dropped [`FILE_TTL`] after it was stored. A file's bytes are deleted when its entry
//! goes ([`StoredFile`]'s `Drop`), and the whole directory when the store goes.
//!
//! Ids are random (128 bits): knowing one is what lets a page download the file, as a browser
//! token does for a session. This is a development demo; nothing here is meant for production.

use crate::error::ApiError;
use axum::body::Body;
use bzt_core::ErrorCode;
use futures_util::StreamExt;
use sm3::{Digest, Sm3};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Largest upload the demo accepts.
pub const MAX_UPLOAD_BYTES: u64 = 20 * 1024 * 1024;
/// Most files kept at once (uploads and results together).
pub const MAX_FILES: usize = 32;
/// How long a file is kept.
pub const FILE_TTL: Duration = Duration::from_secs(30 * 60);
/// Longest file name kept (characters).
const MAX_NAME_CHARS: usize = 120;

/// What a file is, so that an id of one kind cannot be used where another is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Uploaded by the page (not offered for download).
    Upload,
    /// Made by the demo backend (a sealed `.bze`, an opened plaintext): downloadable.
    Result,
}

/// One stored file. Its bytes live at `path` until the entry is dropped.
#[derive(Debug)]
pub struct StoredFile {
    /// Random id, the handle the page uses.
    pub id: String,
    /// The name to offer on download (sanitised).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Lowercase hex SM3 of the content, shown on the pages.
    pub sm3: String,
    /// Upload or result.
    pub kind: FileKind,
    /// Where the bytes are.
    pub path: PathBuf,
    /// For expiry.
    stored_at: Instant,
}

impl StoredFile {
    /// The JSON the pages get (never the path).
    pub fn info(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "sm3": self.sm3,
        });
        if self.kind == FileKind::Result {
            v["download_url"] = serde_json::json!(format!("/demo/api/files/{}", self.id));
        }
        v
    }
}

impl Drop for StoredFile {
    fn drop(&mut self) {
        // Best effort: the directory itself goes with the store.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The store. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Created on first use (a failure then answers `unavailable`, not a failed start-up).
    dir: tokio::sync::OnceCell<tempfile::TempDir>,
    /// id → file. A std `Mutex`: held only to insert, look up or remove, never across `.await`.
    files: Mutex<HashMap<String, Arc<StoredFile>>>,
}

impl Default for FileStore {
    fn default() -> Self {
        Self::new()
    }
}

impl FileStore {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: tokio::sync::OnceCell::new(),
                files: Mutex::new(HashMap::new()),
            }),
        }
    }

    async fn dir(&self) -> Result<&Path, ApiError> {
        let dir = self
            .inner
            .dir
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(|| {
                    tempfile::Builder::new().prefix("bzt-demo-files-").tempdir()
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "demo file store: no temporary directory");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the demo backend cannot create its temporary directory",
                )
            })?;
        Ok(dir.path())
    }

    /// A fresh path for a file of this store (nothing is created).
    pub async fn new_path(&self) -> Result<(String, PathBuf), ApiError> {
        let id = bzt_core::secret::b64url(&bzt_core::secret::random_bytes::<16>());
        let path = self.dir().await?.join(&id);
        Ok((id, path))
    }

    /// Streams a request body into a new upload, hashing it on the way. Refuses (and deletes
    /// what was written) past [`MAX_UPLOAD_BYTES`] and empty bodies.
    pub async fn upload(
        &self,
        name: &str,
        declared_len: Option<u64>,
        body: Body,
    ) -> Result<Arc<StoredFile>, ApiError> {
        let name = sanitize_name(name)?;
        let mut stream = body.into_data_stream();
        if declared_len.is_some_and(|n| n > MAX_UPLOAD_BYTES) {
            discard_rest(&mut stream, 0).await;
            return Err(too_large());
        }
        let (id, path) = self.new_path().await?;
        let mut guard = PathGuard(Some(path.clone()));
        let mut file = tokio::fs::File::create(&path).await.map_err(io_error)?;
        let mut hasher = Sm3::new();
        let mut size: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError::invalid("the upload was interrupted before its end; send the file again")
            })?;
            size += chunk.len() as u64;
            if size > MAX_UPLOAD_BYTES {
                discard_rest(&mut stream, size).await;
                return Err(too_large());
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io_error)?;
        }
        file.flush().await.map_err(io_error)?;
        drop(file);
        if size == 0 {
            return Err(ApiError::invalid(
                "the file is empty; choose a file with content",
            ));
        }
        guard.0 = None;
        Ok(self.insert(StoredFile {
            id,
            name,
            size,
            sm3: hex::encode(hasher.finalize()),
            kind: FileKind::Upload,
            path,
            stored_at: Instant::now(),
        }))
    }

    /// Registers a file the backend wrote at `path` (from [`FileStore::new_path`]), hashing it.
    pub async fn add_result(
        &self,
        id: String,
        name: String,
        path: PathBuf,
    ) -> Result<Arc<StoredFile>, ApiError> {
        let p = path.clone();
        let (size, sm3) = tokio::task::spawn_blocking(move || hash_file(&p))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(io_error)?;
        Ok(self.insert(StoredFile {
            id,
            name,
            size,
            sm3,
            kind: FileKind::Result,
            path,
            stored_at: Instant::now(),
        }))
    }

    fn insert(&self, file: StoredFile) -> Arc<StoredFile> {
        let file = Arc::new(file);
        let mut files = self.lock();
        purge(&mut files);
        while files.len() >= MAX_FILES {
            let oldest = files
                .values()
                .min_by_key(|f| f.stored_at)
                .map(|f| f.id.clone());
            match oldest {
                Some(id) => files.remove(&id),
                None => break,
            };
        }
        files.insert(file.id.clone(), file.clone());
        file
    }

    /// The file `id` of `kind`, or `404` (unknown, expired, or of another kind).
    pub fn get(&self, id: &str, kind: FileKind) -> Result<Arc<StoredFile>, ApiError> {
        let mut files = self.lock();
        purge(&mut files);
        files
            .get(id)
            .filter(|f| f.kind == kind)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no such file (files are kept {} minutes); upload it again",
                    FILE_TTL.as_secs() / 60
                ))
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<StoredFile>>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.inner
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn purge(files: &mut HashMap<String, Arc<StoredFile>>) {
    files.retain(|_, f| f.stored_at.elapsed() < FILE_TTL);
}

/// Deletes a half-written file unless disarmed.
struct PathGuard(Option<PathBuf>);

impl Drop for PathGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sm3::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Most bytes of a refused upload read and thrown away before answering 413.
const DISCARD_LIMIT_BYTES: u64 = 4 * MAX_UPLOAD_BYTES;

/// Reads what is left of a refused upload (up to [`DISCARD_LIMIT_BYTES`] in all) before the 413
/// goes out. Answering early and closing a connection with unread bytes makes the kernel reset
/// it, and the reset can destroy the 413 in the client's buffers ("fetch failed" instead of a
/// clear error). Past the limit the connection is dropped: the client gets what it gets.
async fn discard_rest<S, E>(stream: &mut S, mut read: u64)
where
    S: futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
{
    while read <= DISCARD_LIMIT_BYTES {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len() as u64,
            _ => return,
        }
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the file is larger than {} MiB, the demo's upload limit; choose a smaller file",
            MAX_UPLOAD_BYTES / (1024 * 1024)
        ),
    )
}

fn io_error(e: std::io::Error) -> ApiError {
    tracing::warn!(error = %e, "demo file store I/O");
    ApiError::new(
        ErrorCode::Unavailable,
        "the demo backend could not store the file; retry shortly",
    )
    .with_retry_after(1)
}

/// The last path component, without control characters, 1..[`MAX_NAME_CHARS`] characters.
pub fn sanitize_name(name: &str) -> Result<String, ApiError> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." {
        return Err(ApiError::invalid(
            "name: give the file's name (1..120 characters, e.g. ?name=bid.pdf)",
        ));
    }
    if clean.chars().count() > MAX_NAME_CHARS {
        // Keep the end (the extension matters more than the start).
        let skip = clean.chars().count() - MAX_NAME_CHARS;
        return Ok(clean.chars().skip(skip).collect());
    }
    Ok(clean.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_the_last_component_only() {
        assert_eq!(sanitize_name("C:\\投标\\标书.pdf").unwrap(), "标书.pdf");
        assert_eq!(sanitize_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(sanitize_name("a\"b\n.txt").unwrap(), "ab.txt");
        assert!(sanitize_name("").is_err());
        assert!(sanitize_name("dir/..").is_err());
        let long = format!("{}.pdf", "x".repeat(300));
        let kept = sanitize_name(&long).unwrap();
        assert_eq!(kept.chars().count(), MAX_NAME_CHARS);
        assert!(kept.ends_with(".pdf"));
    }

    /// A body of `chunks` chunks of 1 MiB that counts how many bytes were pulled from it.
    fn counted_body(chunks: usize) -> (Body, Arc<std::sync::atomic::AtomicU64>) {
        use std::sync::atomic::{AtomicU64, Ordering};
        let pulled = Arc::new(AtomicU64::new(0));
        let p = pulled.clone();
        let stream = futures_util::stream::iter(0..chunks).map(move |_| {
            p.fetch_add(1024 * 1024, Ordering::SeqCst);
            Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![7u8; 1024 * 1024]))
        });
        (Body::from_stream(stream), pulled)
    }

    #[tokio::test]
    async fn a_refused_upload_is_read_to_its_end_before_the_413_up_to_a_bound() {
        use std::sync::atomic::Ordering;
        let store = FileStore::new();
        let mib = 1024 * 1024;
        // Over the limit while streaming, and refused from its declared length: both read it all.
        let (body, pulled) = counted_body(25);
        let err = store.upload("big.bin", None, body).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        assert_eq!(pulled.load(Ordering::SeqCst), 25 * mib);
        let (body, pulled) = counted_body(25);
        let err = store
            .upload("big.bin", Some(25 * mib), body)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        assert_eq!(pulled.load(Ordering::SeqCst), 25 * mib);
        // A huge body is not read past the bound.
        let (body, pulled) = counted_body(1000);
        let err = store.upload("huge.bin", None, body).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        let read = pulled.load(Ordering::SeqCst);
        assert!(
            read > DISCARD_LIMIT_BYTES && read <= DISCARD_LIMIT_BYTES + mib,
            "{read}"
        );
    }

    #[tokio::test]
    async fn uploads_are_hashed_limited_and_deleted_with_their_entry() {
        let store = FileStore::new();
        let f = store
            .upload("a.txt", None, Body::from("abc"))
            .await
            .unwrap();
        assert_eq!(f.size, 3);
        assert_eq!(
            f.sm3,
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert!(f.path.exists());
        assert!(store.get(&f.id, FileKind::Upload).is_ok());
        assert!(store.get(&f.id, FileKind::Result).is_err());
        assert!(f.info().get("download_url").is_none());

        let big = Body::from(vec![0u8; (MAX_UPLOAD_BYTES + 1) as usize]);
        let err = store.upload("big.bin", None, big).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        let err = store
            .upload("big.bin", Some(MAX_UPLOAD_BYTES + 1), Body::empty())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        let err = store
            .upload("e.bin", None, Body::empty())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);

        // The oldest goes first once MAX_FILES are kept, and its bytes with it.
        let first_path = f.path.clone();
        let first_id = f.id.clone();
        drop(f);
        for i in 0..MAX_FILES {
            store
                .upload(&format!("{i}.txt"), None, Body::from("x"))
                .await
                .unwrap();
        }
        assert!(store.get(&first_id, FileKind::Upload).is_err());
        assert!(!first_path.exists());
        // Only the kept files remain in the directory (no half-written leftovers).
        let dir = store.dir().await.unwrap();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), MAX_FILES);
    }
}

//! The media store on a real local directory.

use bytes::Bytes;
use futures::TryStreamExt;
use media::{MediaError, MediaStore};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PNG_HEAD: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("mk-media-test-{}", uuid::Uuid::new_v4()))
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn png(len: usize) -> Vec<u8> {
    let mut bytes = PNG_HEAD.to_vec();
    bytes.extend((0..len.saturating_sub(PNG_HEAD.len())).map(|i| (i % 251) as u8));
    bytes
}

async fn upload(store: &MediaStore, bytes: &[u8], chunk: usize) -> Result<media::StagedMedia, MediaError> {
    let mut upload = store.begin(Some("file.png".into())).await?;
    for piece in bytes.chunks(chunk.max(1)) {
        if let Err(error) = upload.write(Bytes::copy_from_slice(piece)).await {
            upload.abort().await;
            return Err(error);
        }
    }
    upload.finish().await
}

#[tokio::test]
async fn stores_by_hash_and_reads_back_the_same_bytes() {
    let dir = temp_dir();
    let store = MediaStore::local(&dir, 10 * 1024 * 1024).unwrap();
    // Larger than one part, written in odd-sized chunks (the first shorter than
    // the sniffing window).
    let bytes = png(3 * 1024 * 1024 + 17);
    let mut staged = upload(&store, &bytes, 7_777).await.unwrap();
    let media = staged.media().clone();
    assert_eq!(media.size, bytes.len() as u64);
    assert_eq!(media.media_type, "image/png");
    assert_eq!(media.file_name.as_deref(), Some("file.png"));
    use sha2::Digest;
    assert_eq!(media.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    staged.commit().await.unwrap();
    staged.commit().await.unwrap();
    let stored = files(&dir);
    assert_eq!(
        stored,
        vec![dir.join("sha256").join(&media.sha256[..2]).join(&media.sha256)],
        "one file, under its hash, nothing left in staging"
    );
    let (size, stream) = store.open(&media.sha256).await.unwrap();
    assert_eq!(size, bytes.len() as u64);
    let read: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(read.concat(), bytes);

    // The same bytes again are stored once.
    let mut again = upload(&store, &bytes, 1 << 20).await.unwrap();
    again.commit().await.unwrap();
    assert_eq!(files(&dir).len(), 1);
    assert!(matches!(
        store.open(&"0".repeat(64)).await,
        Err(MediaError::NotFound)
    ));
    assert!(matches!(
        store.open("../../etc/passwd").await,
        Err(MediaError::NotFound)
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn refused_uploads_leave_no_file() {
    let dir = temp_dir();
    let store = MediaStore::local(&dir, 1000).unwrap();
    let too_large = upload(&store, &png(1001), 100).await;
    assert!(matches!(too_large, Err(MediaError::TooLarge { limit: 1000 })));
    let text = upload(&store, b"this is plain text, not an image at all", 5).await;
    assert!(matches!(text, Err(MediaError::UnsupportedType)));
    let tiny = upload(&store, b"GIF8", 5).await;
    assert!(matches!(tiny, Err(MediaError::UnsupportedType)));
    let empty = upload(&store, b"", 5).await;
    assert!(matches!(empty, Err(MediaError::Empty)));
    // Exactly at the limit is fine; discarding it removes the staged file.
    let at_limit = upload(&store, &png(1000), 100).await.unwrap();
    assert_eq!(files(&dir).len(), 1, "staged");
    at_limit.discard().await;
    // Dropping a staged file without committing cleans up in the background.
    drop(upload(&store, &png(500), 100).await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !files(&dir).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(files(&dir), Vec::<PathBuf>::new());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn garbage_collection_keeps_referenced_and_recent_files() {
    let dir = temp_dir();
    let store = MediaStore::local(&dir, 1 << 20).unwrap();
    let mut keep = upload(&store, &png(100), 64).await.unwrap();
    keep.commit().await.unwrap();
    let mut orphan = upload(&store, &png(200), 64).await.unwrap();
    orphan.commit().await.unwrap();
    let kept = keep.media().sha256.clone();
    let referenced = |sha: &str| sha == kept;
    // Within the grace period nothing goes.
    let report = store
        .collect_garbage(referenced, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert_eq!((report.files_kept, report.files_deleted), (2, 0));
    // Past the grace period (none from here on) for certain, whatever the
    // clock's and the file system's resolution.
    for file in files(&dir) {
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
    }
    let dry = store
        .collect_garbage(referenced, Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!((dry.files_kept, dry.files_deleted, dry.bytes_freed), (1, 1, 200));
    assert_eq!(files(&dir).len(), 2, "a dry run deletes nothing");
    let report = store
        .collect_garbage(referenced, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!((report.files_kept, report.files_deleted), (1, 1));
    assert!(store.open(&kept).await.is_ok());
    assert!(matches!(
        store.open(&orphan.media().sha256).await,
        Err(MediaError::NotFound)
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

//! Media files of content items.
//!
//! An upload is streamed chunk by chunk into a staging object while it is hashed
//! (SHA-256), counted against the size limit and type-sniffed from its first bytes;
//! it is never held whole in memory. Once complete and accepted, the staging
//! object is moved into place under its hash (`sha256/ab/abcdef...`), so equal
//! files are stored once and a stored file never changes. Events record only the
//! metadata ([`domain::content::MediaRef`]).
//!
//! Storage is any [`object_store::ObjectStore`]: a local directory by default
//! (`MEDIA_DIR`, via `LocalFileSystem`), S3 or an S3-compatible service when
//! `MEDIA_STORE_URL=s3://bucket/prefix` is set (cargo feature `s3`, on by default).

mod sniff;
mod spool;
mod store;

pub use sniff::{extension, sniff, ALLOWED, SNIFF_LEN};
pub use spool::SpoolWriter;
pub use store::{GcReport, MediaError, MediaStore, StagedMedia, Upload};

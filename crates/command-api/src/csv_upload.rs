//! What both CSV imports (leads, analytics) share: the upload streamed from
//! the multipart field to a parser thread in bounded chunks, CSV records with
//! their physical line numbers, per-record size bounds, the limits and the
//! way an import answers (a report, or an error carrying the report so far).
//!
//! ```text
//! multipart field ──chunks (≤ 8)──► parser thread (CsvSource) ──► the import's writers
//!   (forward, in the handler)
//! ```

use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::Multipart;
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;
use tokio::sync::mpsc;
use web::ApiError;

/// Row errors (and, separately, duplicate rows) listed in the report; the
/// counts always cover every row.
pub const MAX_REPORTED_ROWS: usize = 1_000;
/// Largest single CSV record (one row, quoted newlines included).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Slack for the multipart framing around the file when checking Content-Length.
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// Largest file, in bytes.
    pub max_bytes: u64,
    /// Most data rows (header excluded).
    pub max_rows: u64,
}

/// One row's problem. `line` is the physical line where the row starts (the
/// header is line 1; a quoted field may span lines).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RowError {
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

pub fn push_bounded(list: &mut Vec<RowError>, truncated: &mut bool, error: RowError) {
    if list.len() < MAX_REPORTED_ROWS {
        list.push(error);
    } else {
        *truncated = true;
    }
}

/// How reading the upload ended, besides normally.
#[derive(Debug)]
pub enum UploadEnd {
    TooLarge,
    Broken(String),
}

/// How the import ended, besides its rows.
pub struct Ending {
    pub upload: Option<UploadEnd>,
    pub row_limit_reached: bool,
    pub stopped: Option<String>,
}

/// The report, as a 200, or inside the error that ended the import early.
pub fn respond<R: Serialize>(report: R, ending: Ending, limits: ImportLimits) -> Response {
    let (status, message) = match (ending.upload, ending.row_limit_reached, ending.stopped) {
        (Some(UploadEnd::TooLarge), _, _) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(too_large_file(limits).to_string()),
        ),
        (Some(UploadEnd::Broken(reason)), _, _) => (
            StatusCode::BAD_REQUEST,
            Some(format!(
                "the upload broke off ({reason}); the rows before it were processed"
            )),
        ),
        (None, true, _) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(too_large_rows(limits.max_rows)),
        ),
        (None, false, Some(reason)) => (StatusCode::BAD_REQUEST, Some(reason)),
        (None, false, None) => (StatusCode::OK, None),
    };
    match message {
        None => (status, Json(report)).into_response(),
        Some(message) => {
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "bad_request"
            };
            (
                status,
                Json(json!({ "message": message, "code": code, "field": "file", "report": report })),
            )
                .into_response()
        }
    }
}

/// Why an import stopped at the row limit.
pub fn too_large_rows(max_rows: u64) -> String {
    format!("the file has more than {max_rows} rows; the rows after that were not imported")
}

pub fn too_large_file(limits: ImportLimits) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "The file is larger than the import limit of {} bytes",
        limits.max_bytes
    ))
}

/// What the handler passes the parser: data, then an explicit end. A channel
/// that closes without [`Chunk::End`] means the request was abandoned (timeout,
/// client gone): the parser must not take the cut-off text for a last row.
pub enum Chunk {
    Data(Bytes),
    End,
}

/// Passes the file's chunks to the parser, counting bytes. Stops at the size
/// limit, at a broken upload, or when the parser stops listening.
pub async fn forward(
    mut field: Field<'_>,
    chunks: mpsc::Sender<io::Result<Chunk>>,
    max_bytes: u64,
) -> Option<UploadEnd> {
    let mut received: u64 = 0;
    loop {
        let (item, end) = match field.chunk().await {
            Ok(None) => {
                let _ = chunks.send(Ok(Chunk::End)).await;
                return None;
            }
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                if received > max_bytes {
                    (Err(io::Error::other("file too large")), Some(UploadEnd::TooLarge))
                } else {
                    (Ok(Chunk::Data(chunk)), None)
                }
            }
            Err(e) => {
                let reason = e.body_text();
                (
                    Err(io::Error::other(reason.clone())),
                    Some(UploadEnd::Broken(reason)),
                )
            }
        };
        // The parser hangs up when it is done (or refused the header).
        if chunks.send(item).await.is_err() || end.is_some() {
            return end;
        }
    }
}

/// A `Read` over the forwarded chunks (blocking: runs on the parser's thread).
///
/// Also bounds each CSV record: `record_bytes` counts what was read since the
/// parser last reset it, so one enormous quoted field cannot grow the record
/// buffer without limit. And it notes where line breaks are ([`Lines`]), since
/// the `csv` crate's own line numbers do not count breaks inside quotes.
pub struct ChunkReader {
    chunks: mpsc::Receiver<io::Result<Chunk>>,
    current: Bytes,
    ended: bool,
    record_bytes: Rc<Cell<usize>>,
    lines: Rc<std::cell::RefCell<Lines>>,
}

/// Physical line numbers for records. The reader notes the byte offset of every
/// `\r` and `\n` it hands to the CSV parser; the parser asks for the line of
/// each record and so drops the offsets before it. Only the breaks in the
/// parser's read-ahead are ever held: memory stays flat.
#[derive(Default)]
struct Lines {
    read: u64,
    /// `(offset, is_newline)` of line-break bytes not yet passed.
    pending: std::collections::VecDeque<(u64, bool)>,
    passed: u64,
}

impl Lines {
    fn saw(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\n' || *b == b'\r' {
                self.pending.push_back((self.read + i as u64, *b == b'\n'));
            }
        }
        self.read += bytes.len() as u64;
    }

    /// The 1-based line on which a record starts, given the offset the `csv`
    /// crate reports for it (which may point at the line break, or blank lines,
    /// before the record's first byte). Offsets must not go backwards.
    fn line_of(&mut self, offset: u64) -> u64 {
        let mut start = offset;
        while let Some(&(at, newline)) = self.pending.front() {
            if at < start {
                self.pending.pop_front();
                self.passed += u64::from(newline);
            } else if at == start {
                // A break at the record's reported start precedes its data.
                self.pending.pop_front();
                self.passed += u64::from(newline);
                start += 1;
            } else {
                break;
            }
        }
        self.passed + 1
    }
}

/// The error a [`ChunkReader`] returns for an oversized record.
#[derive(Debug)]
struct RecordTooLarge;

impl std::fmt::Display for RecordTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a row is larger than {MAX_RECORD_BYTES} bytes")
    }
}

impl std::error::Error for RecordTooLarge {}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.chunks.blocking_recv() {
                Some(Ok(Chunk::Data(chunk))) => self.current = chunk,
                Some(Ok(Chunk::End)) => self.ended = true,
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("the upload was abandoned")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.lines.borrow_mut().saw(&buf[..n]);
        let _ = self.current.split_to(n);
        let seen = self.record_bytes.get() + n;
        if seen > MAX_RECORD_BYTES + 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, RecordTooLarge));
        }
        self.record_bytes.set(seen);
        Ok(n)
    }
}

/// The upload as CSV records, each with the line it starts on.
pub struct CsvSource {
    reader: csv::Reader<ChunkReader>,
    /// The record [`CsvSource::next_row`] read last.
    pub record: csv::ByteRecord,
    record_bytes: Rc<Cell<usize>>,
    lines: Rc<std::cell::RefCell<Lines>>,
}

impl CsvSource {
    pub fn new(chunks: mpsc::Receiver<io::Result<Chunk>>) -> Self {
        let record_bytes = Rc::new(Cell::new(0));
        let lines = Rc::new(std::cell::RefCell::new(Lines::default()));
        let source = ChunkReader {
            chunks,
            current: Bytes::new(),
            ended: false,
            record_bytes: record_bytes.clone(),
            lines: lines.clone(),
        };
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(source);
        Self {
            reader,
            record: csv::ByteRecord::new(),
            record_bytes,
            lines,
        }
    }

    pub fn unreadable(&self, e: csv::Error) -> String {
        let line = e.position().map_or(String::new(), |p| {
            format!("line {}: ", self.lines.borrow_mut().line_of(p.byte()))
        });
        format!("{line}cannot read the file: {}", io_cause(&e))
    }

    /// Reads the header row into `self.record`; `empty` is the message for a
    /// file without one.
    pub fn header(&mut self, empty: &str) -> Result<&csv::ByteRecord, ApiError> {
        let has_header = match self.reader.read_byte_record(&mut self.record) {
            Ok(has) => has,
            Err(e) => return Err(ApiError::bad_request("file", self.unreadable(e))),
        };
        if !has_header {
            return Err(ApiError::bad_request("file", empty.to_owned()));
        }
        Ok(&self.record)
    }

    /// Reads the next non-blank record into `self.record`: its line, `None`
    /// at the end, or why the file cannot be read further.
    pub fn next_row(&mut self) -> Result<Option<u64>, String> {
        loop {
            self.record_bytes.set(0);
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(e) => return Err(self.unreadable(e)),
            }
            // A line with nothing on it is not a row.
            if self.record.len() == 1 && self.record[0].is_empty() {
                continue;
            }
            let offset = self.record.position().map_or(0, |p| p.byte());
            return Ok(Some(self.lines.borrow_mut().line_of(offset)));
        }
    }
}

pub fn io_cause(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Io(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

pub(crate) const NO_FILE: &str = "file is required: send the CSV as the multipart field `file`";

/// Refuses an upload whose `Content-Length` already exceeds the limit, and a
/// request that is not multipart, before anything is read.
pub fn open_upload(
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
    limits: ImportLimits,
) -> Result<Multipart, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_bytes.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(too_large_file(limits));
    }
    multipart.map_err(|rejection| {
        ApiError::UnsupportedMediaType(format!(
            "Content-Type must be multipart/form-data with a `file` field ({})",
            rejection.body_text()
        ))
    })
}

/// The form's `file` field (other fields are skipped), as
/// `Result<Field, ApiError>`. A macro, not a function: the field borrows the
/// `Multipart`, and a function returning that borrow from inside its loop is
/// refused by the borrow checker (the borrow would outlive the iteration
/// that skipped another field).
macro_rules! file_field {
    ($multipart:expr) => {
        loop {
            match $multipart.next_field().await {
                Ok(Some(field)) if field.name() == Some("file") => break Ok(field),
                Ok(Some(_)) => continue,
                Ok(None) => break Err(ApiError::bad_request("file", $crate::csv_upload::NO_FILE)),
                Err(e) => {
                    break Err(ApiError::bad_request(
                        "file",
                        format!("cannot read the upload: {e}"),
                    ))
                }
            }
        }
    };
}
pub(crate) use file_field;

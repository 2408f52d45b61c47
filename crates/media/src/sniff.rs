//! The media type of a file, decided from its first bytes ("magic numbers"),
//! never from the name or the `Content-Type` a client sent: those are whatever the
//! client says, and a browser that trusts a stored type renders what it is told.

/// How many leading bytes [`sniff`] needs to decide.
pub const SNIFF_LEN: usize = 16;

/// Every media type a content item may carry. SVG and HTML are deliberately
/// absent: both can carry scripts.
pub const ALLOWED: [&str; 6] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "video/mp4",
];

/// ISO base-media brands that are MP4 video (`ftyp` box, bytes 8..12). QuickTime
/// (`qt  `) and audio-only brands (`M4A `) are not.
const MP4_BRANDS: [&[u8; 4]; 12] = [
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"dash", b"M4V ",
    b"MSNV",
];

/// The allowed media type whose signature starts `head`, if any. `head` should
/// hold the first [`SNIFF_LEN`] bytes (or the whole file if it is shorter).
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else if head.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else if head.len() >= 12 && &head[4..8] == b"ftyp" && MP4_BRANDS.iter().any(|b| &head[8..12] == *b) {
        Some("video/mp4")
    } else {
        None
    }
}

/// The usual file extension of an allowed media type, for download names.
pub fn extension(media_type: &str) -> &'static str {
    match media_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "application/pdf" => "pdf",
        "video/mp4" => "mp4",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_allowed_type_by_its_bytes() {
        let cases: [(&[u8], &str); 7] = [
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
            (&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F'], "image/jpeg"),
            (b"GIF89a\x01\0\x01\0", "image/gif"),
            (b"RIFF\x24\0\0\0WEBPVP8 ", "image/webp"),
            (b"%PDF-1.7\n%\xe2\xe3", "application/pdf"),
            (b"\0\0\0\x18ftypmp42\0\0\0\0", "video/mp4"),
            (b"\0\0\0\x20ftypisom\0\0\x02\0", "video/mp4"),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff(head), Some(expected), "{head:?}");
            assert!(ALLOWED.contains(&expected));
        }
    }

    #[test]
    fn refuses_everything_else() {
        let cases: [&[u8]; 9] = [
            b"",
            b"\x89PN",
            b"hello, world",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\">",
            b"<!DOCTYPE html>",
            b"RIFF\x24\0\0\0WAVEfmt ",
            b"\0\0\0\x14ftypqt  \0\0\0\0",
            b"\0\0\0\x20ftypM4A \0\0\0\0",
            b"PK\x03\x04\x14\0\0\0",
        ];
        for head in cases {
            assert_eq!(sniff(head), None, "{head:?}");
        }
    }
}

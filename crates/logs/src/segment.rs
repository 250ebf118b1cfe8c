//! One segment file: an append-only run of a stream's events.
//!
//! A record is `len: u32 | crc32(body): u32 | body`, little-endian, where the body is
//! `timestamp: i64 | ingestion_time: i64 | cursor: i64 | message bytes`. The `cursor` is the
//! producer's position after this event (the agent's Docker log timestamp, so it can resume
//! after a restart without sending a line twice); 0 when the producer gave none. The file is
//! named by the sequence number of its first event; a record's sequence number is that plus its
//! index. A torn tail (a write cut by a crash before it was acknowledged) fails its length or
//! checksum and is cut off when the segment is opened again.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Bytes before the message in a record.
pub const HEADER: usize = 4 + 4 + 8 + 8 + 8;

/// What is known about a segment without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    pub path: PathBuf,
    /// Sequence number of the first event.
    pub first_seq: u64,
    /// Events in it.
    pub count: u64,
    /// Bytes of valid records (readers read no further).
    pub bytes: u64,
    /// Smallest and largest event timestamps (ms); meaningless when `count == 0`.
    pub min_ts: i64,
    pub max_ts: i64,
    /// Sum of message sizes (what CloudWatch calls stored bytes).
    pub message_bytes: u64,
    /// Last event's ingestion time and producer cursor.
    pub last_ingestion: i64,
    pub last_cursor: i64,
}

impl SegmentMeta {
    pub fn empty(path: PathBuf, first_seq: u64) -> SegmentMeta {
        SegmentMeta {
            path,
            first_seq,
            count: 0,
            bytes: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            message_bytes: 0,
            last_ingestion: 0,
            last_cursor: 0,
        }
    }

    /// Folds one appended event into the summary.
    pub fn note(&mut self, timestamp: i64, ingestion: i64, cursor: i64, message_len: usize) {
        self.count += 1;
        self.bytes += (HEADER + message_len) as u64;
        self.min_ts = self.min_ts.min(timestamp);
        self.max_ts = self.max_ts.max(timestamp);
        self.message_bytes += message_len as u64;
        self.last_ingestion = ingestion;
        self.last_cursor = cursor;
    }

    /// Whether any event may fall in `[start, end)`.
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.count > 0 && self.max_ts >= start && self.min_ts < end
    }
}

/// Bits in a sealed segment's trigram filter (64 KiB on disk beside the segment).
pub const GRAM_BITS: usize = 1 << 19;

fn gram_bit(g: &[u8]) -> usize {
    let v = u64::from(g[0]) | u64::from(g[1]) << 8 | u64::from(g[2]) << 16;
    (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 19)) as usize
}

/// A filter of every three-byte window of a segment's messages: a literal with a window the
/// filter lacks is in none of them, so a search skips the segment without reading it.
pub fn grams_of(buf: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8; GRAM_BITS / 8];
    let mut at = 0;
    while let Some(r) = decode(buf, at) {
        for w in r.message.as_bytes().windows(3) {
            let b = gram_bit(w);
            bits[b / 8] |= 1 << (b % 8);
        }
        at = r.end;
    }
    bits
}

/// Whether a message of the segment whose filter is `bits` may contain `literal` (always, for
/// literals shorter than three bytes or a filter of the wrong size).
pub fn may_contain(bits: &[u8], literal: &[u8]) -> bool {
    if bits.len() != GRAM_BITS / 8 {
        return true;
    }
    literal.windows(3).all(|w| {
        let b = gram_bit(w);
        bits[b / 8] & (1 << (b % 8)) != 0
    })
}

/// One stored event as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub timestamp: i64,
    pub ingestion: i64,
    pub message: String,
}

/// Appends one record to `buf`.
pub fn encode(buf: &mut Vec<u8>, timestamp: i64, ingestion: i64, cursor: i64, message: &str) {
    let body_len = HEADER - 8 + message.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&timestamp.to_le_bytes());
    buf.extend_from_slice(&ingestion.to_le_bytes());
    buf.extend_from_slice(&cursor.to_le_bytes());
    buf.extend_from_slice(message.as_bytes());
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded record, borrowing its message.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub timestamp: i64,
    pub ingestion: i64,
    pub cursor: i64,
    pub message: &'a str,
    /// Offset just past this record.
    pub end: usize,
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}

/// Decodes the record at `at`, or `None` at the end or at a torn or corrupt record.
pub fn decode(buf: &[u8], at: usize) -> Option<Record<'_>> {
    let rest = buf.get(at..)?;
    if rest.len() < 8 {
        return None;
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&rest[..4]);
    let body_len = u32::from_le_bytes(len) as usize;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&rest[4..8]);
    if body_len < HEADER - 8 || rest.len() < 8 + body_len {
        return None;
    }
    let body = &rest[8..8 + body_len];
    if crc32fast::hash(body) != u32::from_le_bytes(crc) {
        return None;
    }
    let message = std::str::from_utf8(&body[24..]).ok()?;
    Some(Record {
        timestamp: i64_at(body, 0),
        ingestion: i64_at(body, 8),
        cursor: i64_at(body, 16),
        message,
        end: at + 8 + body_len,
    })
}

/// Reads the first `len` bytes of a segment (what a reader's snapshot says is valid). A file
/// already removed (retention, deletion) reads as empty.
pub fn read_prefix(path: &Path, len: u64) -> io::Result<Vec<u8>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::with_capacity(len as usize);
    (&mut f).take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Scans a whole segment file, returning its summary; the length stops at the first torn or
/// corrupt record, which the caller cuts off.
pub fn scan(path: &Path, first_seq: u64) -> io::Result<SegmentMeta> {
    let buf = std::fs::read(path)?;
    let mut meta = SegmentMeta::empty(path.to_path_buf(), first_seq);
    let mut at = 0;
    while let Some(r) = decode(&buf, at) {
        meta.note(r.timestamp, r.ingestion, r.cursor, r.message.len());
        at = r.end;
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_stops_the_scan() {
        let mut buf = Vec::new();
        encode(&mut buf, 10, 20, 30, "hello");
        encode(&mut buf, 11, 21, 31, "wörld");
        let first = decode(&buf, 0).expect("first record decodes");
        assert_eq!(
            (
                first.timestamp,
                first.ingestion,
                first.cursor,
                first.message
            ),
            (10, 20, 30, "hello")
        );
        let second = decode(&buf, first.end).expect("second record decodes");
        assert_eq!(second.message, "wörld");
        assert_eq!(second.end, buf.len());
        assert!(decode(&buf, second.end).is_none(), "nothing after the end");

        // A crash mid-write: the second record loses its last byte.
        let torn = &buf[..buf.len() - 1];
        assert!(
            decode(torn, first.end).is_none(),
            "a torn record is not read"
        );
        // A flipped bit in a message fails the checksum.
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            decode(&bad, first.end).is_none(),
            "a corrupt record is not read"
        );
    }

    #[test]
    fn the_trigram_filter_never_hides_a_message() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 1, 1, "GET /index.html 200");
        encode(&mut buf, 2, 2, 2, "needle in a haystack");
        let g = grams_of(&buf);
        for present in ["needle", "index.html", "GET", "hay", "ab"] {
            assert!(may_contain(&g, present.as_bytes()), "{present} is there");
        }
        assert!(
            !may_contain(&g, b"zebra"),
            "a word nowhere in the segment is screened out"
        );
        assert!(
            may_contain(&[0u8; 3], b"zebra"),
            "a filter of the wrong size screens nothing"
        );
    }

    #[test]
    fn the_summary_spans_every_event() {
        let mut m = SegmentMeta::empty(PathBuf::from("x"), 0);
        m.note(5, 0, 0, 1);
        m.note(7, 0, 0, 1);
        m.note(6, 0, 0, 1);
        assert_eq!((m.min_ts, m.max_ts, m.count), (5, 7, 3));
        assert!(m.overlaps(7, 8) && !m.overlaps(8, 9) && !m.overlaps(0, 5));
    }
}

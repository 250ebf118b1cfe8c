//! The journal's records, one bucket merge each:
//!
//! ```text
//! u32 LE payload length | u32 LE crc32 of the payload | payload
//! payload = target u8 | namespace | metric name | varint dimension count
//!           | (name, value)* | bucket start i64 LE | unit code u8
//!           | sum f64 LE | count f64 LE | min f64 LE | max f64 LE
//! a string = varint byte length | UTF-8 bytes
//! ```
//! Replaying the records in order, merging each into its bucket, rebuilds the store.

use crate::{SeriesKey, Stats, Unit};

/// The length and checksum in front of every payload.
pub(crate) const HEADER: usize = 8;

/// What a record merges into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A one-minute bucket (a standard-resolution datum, or a compacted minute bucket).
    Minute,
    /// A one-second bucket (a compacted second bucket).
    Second,
    /// A high-resolution datum: its one-second bucket (whose start the record holds) and the
    /// one-minute bucket holding that second.
    Both,
}

impl Target {
    fn code(self) -> u8 {
        match self {
            Target::Minute => 0,
            Target::Second => 1,
            Target::Both => 2,
        }
    }

    fn from_code(code: u8) -> Option<Target> {
        match code {
            0 => Some(Target::Minute),
            1 => Some(Target::Second),
            2 => Some(Target::Both),
            _ => None,
        }
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub target: Target,
    pub key: SeriesKey,
    pub start: i64,
    pub unit: Unit,
    pub stats: Stats,
}

/// The bytes a record of `key` takes, header included.
pub(crate) fn record_len(key: &SeriesKey) -> usize {
    let dims: usize = key
        .dimensions
        .iter()
        .map(|(n, v)| str_len(n) + str_len(v))
        .sum();
    HEADER
        + 1
        + str_len(&key.namespace)
        + str_len(&key.metric_name)
        + varint_len(key.dimensions.len() as u64)
        + dims
        + 8
        + 1
        + 32
}

/// Appends one record to `out`.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    target: Target,
    key: &SeriesKey,
    start: i64,
    unit: Unit,
    stats: &Stats,
) {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.push(target.code());
    put_str(out, &key.namespace);
    put_str(out, &key.metric_name);
    put_varint(out, key.dimensions.len() as u64);
    for (name, value) in &key.dimensions {
        put_str(out, name);
        put_str(out, value);
    }
    out.extend_from_slice(&start.to_le_bytes());
    out.push(unit.code());
    for v in [stats.sum, stats.count, stats.min, stats.max] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let payload = &out[at + HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// The record at the start of `buf` and the bytes it takes, or `None` when what is there is
/// not a whole, intact record (a torn or corrupt tail).
pub(crate) fn decode(buf: &[u8]) -> Option<(Record, usize)> {
    let mut head = Reader(buf.get(..HEADER)?);
    let len = usize::try_from(u32::from_le_bytes(head.array()?)).ok()?;
    let crc = u32::from_le_bytes(head.array()?);
    let end = HEADER.checked_add(len)?;
    let payload = buf.get(HEADER..end)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut r = Reader(payload);
    let target = Target::from_code(r.u8()?)?;
    let namespace = r.string()?;
    let metric_name = r.string()?;
    let n = r.varint()?;
    // The count is untrusted until the names are read; don't let it size an allocation.
    let mut dimensions = Vec::with_capacity(usize::try_from(n.min(32)).ok()?);
    for _ in 0..n {
        let name = r.string()?;
        let value = r.string()?;
        dimensions.push((name, value));
    }
    // Written sorted; sorting a sorted list is one pass.
    dimensions.sort();
    let start = i64::from_le_bytes(r.array()?);
    let unit = Unit::from_code(r.u8()?)?;
    let stats = Stats {
        sum: f64::from_le_bytes(r.array()?),
        count: f64::from_le_bytes(r.array()?),
        min: f64::from_le_bytes(r.array()?),
        max: f64::from_le_bytes(r.array()?),
    };
    if !r.0.is_empty() {
        return None;
    }
    Some((
        Record {
            target,
            key: SeriesKey {
                namespace,
                metric_name,
                dimensions,
            },
            start,
            unit,
            stats,
        },
        end,
    ))
}

fn str_len(s: &str) -> usize {
    varint_len(s.len() as u64) + s.len()
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads a payload front to back; every read is `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.varint()?).ok()?;
        std::str::from_utf8(self.take(n)?).ok().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SeriesKey {
        SeriesKey::new(
            "AWS/ECS",
            "CPUUtilization",
            vec![
                ("ServiceName".into(), "wéb".into()),
                ("ClusterName".into(), "x".repeat(300)),
            ],
        )
    }

    #[test]
    fn records_round_trip_and_a_damaged_one_is_not_read() {
        let stats = Stats {
            sum: 10.5,
            count: 3.0,
            min: -1.25,
            max: 7.0,
        };
        let mut buf = Vec::new();
        encode(&mut buf, Target::Both, &key(), 1_000, Unit::Percent, &stats);
        assert_eq!(
            buf.len(),
            record_len(&key()),
            "record_len should match encode"
        );
        let first_len = buf.len();
        encode(
            &mut buf,
            Target::Minute,
            &key(),
            -60_000,
            Unit::None,
            &stats,
        );

        let (first, used) = decode(&buf).expect("the first record should decode");
        assert_eq!(used, first_len, "the first record's length");
        assert_eq!(
            first,
            Record {
                target: Target::Both,
                key: key(),
                start: 1_000,
                unit: Unit::Percent,
                stats,
            },
            "the first record should read back as written"
        );
        let (second, used) = decode(&buf[first_len..]).expect("the second record should decode");
        assert_eq!(used, buf.len() - first_len, "the second record's length");
        assert_eq!(
            (second.target, second.start, second.unit),
            (Target::Minute, -60_000, Unit::None),
            "the second record should read back as written"
        );

        assert!(
            decode(&buf[..first_len - 1]).is_none(),
            "a torn record is not read"
        );
        assert!(decode(&buf[..3]).is_none(), "a torn header is not read");
        assert!(decode(&[]).is_none(), "nothing is not a record");
        let mut bad = buf.clone();
        bad[first_len - 1] ^= 1;
        assert!(decode(&bad).is_none(), "a flipped bit fails the checksum");
    }
}

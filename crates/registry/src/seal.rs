//! Encryption at rest: a blob file is a header and a sequence of sealed records.
//!
//! ```text
//! file   = MAGIC (8) | nonce prefix (8) | record*
//! record = plaintext length n (u32 LE, 1..=RECORD) | AES-256-GCM(n bytes) | tag (16)
//! ```
//! Record `i` is sealed with nonce `prefix || i (u32 BE)` and the length field as associated
//! data, so records cannot be reordered, resized or moved between files without the tag failing.
//! The prefix is random per upload, so no two records anywhere share a nonce under one key.
//! Records are at most [`RECORD`] bytes of plaintext, so memory stays flat however large the
//! blob, and a range read seeks to the record that holds its first byte.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::Error;

/// The first bytes of every blob file.
pub const MAGIC: &[u8; 8] = b"BERTHBL1";
/// Length of the file header: magic and nonce prefix.
pub const HEADER: usize = 16;
/// Most plaintext bytes in one record.
pub const RECORD: usize = 64 * 1024;
/// Bytes a record adds to its plaintext: the length field and the tag.
pub const OVERHEAD: usize = 4 + 16;

/// A 256-bit key.
#[derive(Clone)]
pub struct Key(pub [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Seals and opens the records of one file.
#[derive(Clone)]
pub struct Sealer {
    cipher: std::sync::Arc<LessSafeKey>,
    prefix: [u8; 8],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// For a new file, with a fresh random prefix.
    pub fn new(key: &Key) -> Sealer {
        Sealer::with_prefix(key, rand::random())
    }

    pub fn with_prefix(key: &Key, prefix: [u8; 8]) -> Sealer {
        let unbound = UnboundKey::new(&AES_256_GCM, &key.0).expect("a 256-bit key fits AES-256");
        Sealer {
            cipher: std::sync::Arc::new(LessSafeKey::new(unbound)),
            prefix,
        }
    }

    /// For an existing file, from its header.
    pub fn from_header(key: &Key, header: &[u8]) -> Result<Sealer, Error> {
        if header.len() < HEADER || &header[..8] != MAGIC {
            return Err(Error::Corrupt("not a Berth blob file (bad header)".into()));
        }
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&header[8..16]);
        Ok(Sealer::with_prefix(key, prefix))
    }

    pub fn header(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..].copy_from_slice(&self.prefix);
        h
    }

    fn nonce(&self, index: u32) -> Nonce {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.prefix);
        n[8..].copy_from_slice(&index.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    /// Record `index` holding `plain` (1..=RECORD bytes), appended to `out`.
    pub fn seal(&self, index: u32, plain: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        debug_assert!(!plain.is_empty() && plain.len() <= RECORD);
        let len = (plain.len() as u32).to_le_bytes();
        out.extend_from_slice(&len);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(self.nonce(index), Aad::from(len), &mut out[start..])
            .map_err(|_| Error::Internal("encryption failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens record `index` in place: `sealed` is its ciphertext and tag; the plaintext is
    /// the first `len` bytes of it afterwards.
    pub fn open_in_place(
        &self,
        index: u32,
        len: [u8; 4],
        sealed: &mut [u8],
    ) -> Result<usize, Error> {
        self.cipher
            .open_in_place(self.nonce(index), Aad::from(len), sealed)
            .map(|plain| plain.len())
            .map_err(|_| {
                Error::Corrupt(format!(
                    "record {index} failed authentication (wrong key or damaged file)"
                ))
            })
    }

    /// The plaintext of record `index`, given its length field and its sealed bytes.
    pub fn open(&self, index: u32, len: [u8; 4], sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let mut buf = sealed.to_vec();
        let n = self.open_in_place(index, len, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// The plaintext length a record's length field announces, checked.
pub fn record_len(len: [u8; 4]) -> Result<usize, Error> {
    let n = u32::from_le_bytes(len) as usize;
    if n == 0 || n > RECORD {
        return Err(Error::Corrupt(format!("record length {n} is out of range")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_detect_tampering() {
        let key = Key([7; 32]);
        let s = Sealer::new(&key);
        let mut out = Vec::new();
        s.seal(0, b"hello", &mut out).unwrap();
        assert_eq!(out.len(), 5 + OVERHEAD);
        let len: [u8; 4] = out[..4].try_into().unwrap();
        assert_eq!(record_len(len).unwrap(), 5);
        assert_eq!(s.open(0, len, &out[4..]).unwrap(), b"hello");
        // Moved to another index, another file, or another key: refused.
        assert!(s.open(1, len, &out[4..]).is_err());
        let other = Sealer::new(&key);
        assert!(other.open(0, len, &out[4..]).is_err());
        let again = Sealer::from_header(&Key([8; 32]), &s.header()).unwrap();
        assert!(again.open(0, len, &out[4..]).is_err());
        // A flipped bit: refused.
        let mut bad = out.clone();
        bad[6] ^= 1;
        assert!(s.open(0, len, &bad[4..]).is_err());
        // A changed length field: refused.
        assert!(s.open(0, 4u32.to_le_bytes(), &out[4..]).is_err());
        // The same file's header gives back the same sealer.
        let same = Sealer::from_header(&key, &s.header()).unwrap();
        assert_eq!(same.open(0, len, &out[4..]).unwrap(), b"hello");
    }
}

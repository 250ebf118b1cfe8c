//! CBOR (RFC 8949) for AWS's Smithy RPC v2 CBOR protocol (`smithy-rpc-v2-cbor`).
//!
//! [`decode`] turns a request body into the `serde_json::Value` the generated shapes deserialize
//! from: byte strings (blobs) become base64 text and tag 1 (epoch seconds) becomes its number.
//! It is defensive: nesting is bounded, declared lengths are checked against the remaining input
//! before anything is allocated, and every error names the byte offset where it was found.
//! [`Encoder`] and [`encode_json`] write responses in preferred (shortest) serialization.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// The deepest nesting of arrays, maps and tags [`decode`] accepts.
pub const MAX_DEPTH: usize = 64;

/// Why a body is not acceptable CBOR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed CBOR at byte {offset}: {message}")]
pub struct CborError {
    /// Offset in the input of the data item (or the end of input) at fault.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Decodes exactly one CBOR data item, with no trailing bytes, into JSON.
pub fn decode(bytes: &[u8]) -> Result<Value, CborError> {
    let mut decoder = Decoder {
        bytes,
        pos: 0,
        path: Vec::new(),
    };
    let value = decoder.item(0)?;
    if decoder.pos != bytes.len() {
        let trailing = bytes.len() - decoder.pos;
        return Err(decoder.err(
            decoder.pos,
            format!("{trailing} trailing bytes after the data item"),
        ));
    }
    Ok(value)
}

/// A step of the path to the item being decoded, for error messages.
enum Seg {
    Key(String),
    Index(usize),
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: Vec<Seg>,
}

const BREAK: u8 = 0xFF;

impl<'a> Decoder<'a> {
    fn err(&self, offset: usize, message: impl Into<String>) -> CborError {
        CborError {
            offset,
            message: message.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let bytes: &'a [u8] = self.bytes;
        let Some(slice) = self
            .pos
            .checked_add(n)
            .and_then(|end| bytes.get(self.pos..end))
        else {
            return Err(self.err(bytes.len(), "unexpected end of input"));
        };
        self.pos += n;
        Ok(slice)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], CborError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn peek(&self) -> Result<u8, CborError> {
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err(self.bytes.len(), "unexpected end of input"))
    }

    /// Consumes a break code if one is next.
    fn at_break(&mut self) -> Result<bool, CborError> {
        let is_break = self.peek()? == BREAK;
        if is_break {
            self.pos += 1;
        }
        Ok(is_break)
    }

    /// Reads an initial byte and its argument: (major type, additional info, argument), the
    /// argument being `None` for additional info 31 (indefinite length or break).
    fn head(&mut self) -> Result<(u8, u8, Option<u64>), CborError> {
        let start = self.pos;
        let [initial] = self.fixed::<1>()?;
        let (major, info) = (initial >> 5, initial & 0x1F);
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24 => Some(u64::from(self.fixed::<1>()?[0])),
            25 => Some(u64::from(u16::from_be_bytes(self.fixed()?))),
            26 => Some(u64::from(u32::from_be_bytes(self.fixed()?))),
            27 => Some(u64::from_be_bytes(self.fixed()?)),
            31 => None,
            _ => return Err(self.err(start, format!("reserved additional information {info}"))),
        };
        Ok((major, info, arg))
    }

    /// Checks a declared count of items, each at least `min_bytes` long, against the input left.
    fn count(&self, start: usize, declared: u64, min_bytes: u64) -> Result<usize, CborError> {
        let remaining = self.remaining();
        match declared.checked_mul(min_bytes) {
            Some(need) if need <= remaining as u64 => usize::try_from(declared)
                .map_err(|_| self.err(start, format!("declared length {declared} is too large"))),
            _ => Err(self.err(
                start,
                format!("declared length {declared} exceeds the {remaining} remaining bytes"),
            )),
        }
    }

    fn path(&self) -> String {
        if self.path.is_empty() {
            return "the top level".to_string();
        }
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    fn number(&self, start: usize, value: f64) -> Result<Value, CborError> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| self.err(start, format!("non-finite number at {}", self.path())))
    }

    fn enter(&self, start: usize, depth: usize) -> Result<(), CborError> {
        if depth >= MAX_DEPTH {
            return Err(self.err(start, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// The content of a byte (major 2) or text (major 3) string, definite or indefinite.
    fn string(&mut self, start: usize, major: u8, arg: Option<u64>) -> Result<Vec<u8>, CborError> {
        if let Some(len) = arg {
            let len = self.count(start, len, 1)?;
            let content = self.take(len)?;
            if major == 3 && std::str::from_utf8(content).is_err() {
                return Err(self.err(start, "text string is not valid UTF-8"));
            }
            return Ok(content.to_vec());
        }
        let mut out = Vec::new();
        while !self.at_break()? {
            let chunk_start = self.pos;
            let (chunk_major, _, chunk_arg) = self.head()?;
            if chunk_major != major {
                return Err(self.err(
                    chunk_start,
                    format!("chunk of major type {chunk_major} in an indefinite-length string of major type {major}"),
                ));
            }
            let Some(len) = chunk_arg else {
                return Err(self.err(chunk_start, "nested indefinite-length string chunk"));
            };
            let len = self.count(chunk_start, len, 1)?;
            let chunk = self.take(len)?;
            if major == 3 && std::str::from_utf8(chunk).is_err() {
                return Err(self.err(chunk_start, "text string chunk is not valid UTF-8"));
            }
            out.extend_from_slice(chunk);
        }
        Ok(out)
    }

    fn text(&mut self, start: usize, arg: Option<u64>) -> Result<String, CborError> {
        let bytes = self.string(start, 3, arg)?;
        String::from_utf8(bytes).map_err(|_| self.err(start, "text string is not valid UTF-8"))
    }

    /// One data item; `depth` is the number of arrays, maps and tags enclosing it.
    fn item(&mut self, depth: usize) -> Result<Value, CborError> {
        let start = self.pos;
        let (major, info, arg) = self.head()?;
        match (major, arg) {
            (0..=1 | 6, None) => Err(self.err(
                start,
                format!("indefinite length is not allowed for major type {major}"),
            )),
            (0, Some(n)) => Ok(Value::from(n)),
            (1, Some(n)) => i64::try_from(n)
                .map(|n| Value::from(-1 - n))
                .map_err(|_| self.err(start, format!("negative integer -1-{n} is out of range"))),
            (2, _) => Ok(Value::String(STANDARD.encode(self.string(start, 2, arg)?))),
            (3, _) => Ok(Value::String(self.text(start, arg)?)),
            (4, _) => {
                self.enter(start, depth)?;
                let mut items = Vec::new();
                if let Some(n) = arg {
                    let n = self.count(start, n, 1)?;
                    // Bounded: 64 nested arrays each declaring the whole body must not
                    // reserve 64 times its size in `Value`s.
                    items.reserve(n.min(256));
                    for i in 0..n {
                        self.path.push(Seg::Index(i));
                        items.push(self.item(depth + 1)?);
                        self.path.pop();
                    }
                } else {
                    while !self.at_break()? {
                        self.path.push(Seg::Index(items.len()));
                        items.push(self.item(depth + 1)?);
                        self.path.pop();
                    }
                }
                Ok(Value::Array(items))
            }
            (5, _) => {
                self.enter(start, depth)?;
                let mut object = Map::new();
                let declared = arg.map(|n| self.count(start, n, 2)).transpose()?;
                let mut read = 0usize;
                loop {
                    let done = match declared {
                        Some(n) => read == n,
                        None => self.at_break()?,
                    };
                    if done {
                        break;
                    }
                    read += 1;
                    let key_start = self.pos;
                    let (key_major, _, key_arg) = self.head()?;
                    if key_major != 3 {
                        return Err(self.err(
                            key_start,
                            format!("map key of major type {key_major} is not a text string"),
                        ));
                    }
                    let key = self.text(key_start, key_arg)?;
                    if object.contains_key(&key) {
                        return Err(self.err(key_start, format!("duplicate map key \"{key}\"")));
                    }
                    self.path.push(Seg::Key(key));
                    let value = self.item(depth + 1)?;
                    if let Some(Seg::Key(key)) = self.path.pop() {
                        object.insert(key, value);
                    }
                }
                Ok(Value::Object(object))
            }
            (6, Some(1)) => {
                self.enter(start, depth)?;
                match self.item(depth + 1)? {
                    Value::Number(n) => Ok(Value::Number(n)),
                    _ => Err(self.err(start, "tag 1 (epoch date/time) must enclose a number")),
                }
            }
            (6, Some(tag)) => Err(self.err(start, format!("unsupported tag {tag}"))),
            (_, arg) => match (info, arg) {
                (20, _) => Ok(Value::Bool(false)),
                (21, _) => Ok(Value::Bool(true)),
                (22 | 23, _) => Ok(Value::Null),
                (25, Some(bits)) => self.number(start, half_to_f64(bits as u16)),
                (26, Some(bits)) => self.number(start, f64::from(f32::from_bits(bits as u32))),
                (27, Some(bits)) => self.number(start, f64::from_bits(bits)),
                (31, _) => Err(self.err(start, "unexpected break code")),
                _ => Err(self.err(
                    start,
                    format!("unsupported simple value (additional information {info})"),
                )),
            },
        }
    }
}

/// An IEEE 754 half-precision float, widened (RFC 8949 Appendix D).
fn half_to_f64(half: u16) -> f64 {
    let exponent = i32::from((half >> 10) & 0x1F);
    let mantissa = f64::from(half & 0x3FF);
    let magnitude = match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (mantissa + 1024.0) * 2f64.powi(exponent - 25),
    };
    if half & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Writes CBOR data items in preferred serialization (shortest heads, definite lengths).
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn head(&mut self, major: u8, arg: u64) -> &mut Self {
        let major = major << 5;
        if arg < 24 {
            self.buf.push(major | arg as u8);
        } else if let Ok(arg) = u8::try_from(arg) {
            self.buf.extend_from_slice(&[major | 24, arg]);
        } else if let Ok(arg) = u16::try_from(arg) {
            self.buf.push(major | 25);
            self.buf.extend_from_slice(&arg.to_be_bytes());
        } else if let Ok(arg) = u32::try_from(arg) {
            self.buf.push(major | 26);
            self.buf.extend_from_slice(&arg.to_be_bytes());
        } else {
            self.buf.push(major | 27);
            self.buf.extend_from_slice(&arg.to_be_bytes());
        }
        self
    }

    /// A definite-length map header; `len` key/value pairs must follow.
    pub fn map(&mut self, len: usize) -> &mut Self {
        self.head(5, len as u64)
    }

    /// A definite-length array header; `len` items must follow.
    pub fn array(&mut self, len: usize) -> &mut Self {
        self.head(4, len as u64)
    }

    /// A text string.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.head(3, text.len() as u64);
        self.buf.extend_from_slice(text.as_bytes());
        self
    }

    /// A byte string (a Smithy blob).
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.head(2, bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
        self
    }

    /// An unsigned integer.
    pub fn uint(&mut self, value: u64) -> &mut Self {
        self.head(0, value)
    }

    /// A signed integer: major type 0 if non-negative, else 1.
    pub fn int(&mut self, value: i64) -> &mut Self {
        match u64::try_from(value) {
            Ok(value) => self.head(0, value),
            // -1 - value is in 0..=i64::MAX for every negative value.
            Err(_) => self.head(1, (-1 - value) as u64),
        }
    }

    /// A double-precision float (always 8 bytes).
    pub fn float(&mut self, value: f64) -> &mut Self {
        self.buf.push(0xFB);
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// `true` or `false`.
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.buf.push(if value { 0xF5 } else { 0xF4 });
        self
    }

    /// `null`.
    pub fn null(&mut self) -> &mut Self {
        self.buf.push(0xF6);
        self
    }

    /// A Smithy timestamp: tag 1 around epoch seconds, an integer when they are whole.
    pub fn timestamp(&mut self, secs: f64) -> &mut Self {
        // The range check keeps the cast exact: 2^63 itself is not an i64.
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
        self.buf.push(0xC1);
        if secs.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&secs) {
            self.int(secs as i64)
        } else {
            self.float(secs)
        }
    }

    /// Any JSON value: objects become maps, integral numbers integers, other numbers doubles.
    pub fn json(&mut self, value: &Value) -> &mut Self {
        match value {
            Value::Null => self.null(),
            Value::Bool(b) => self.bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    self.uint(u)
                } else if let Some(i) = n.as_i64() {
                    self.int(i)
                } else {
                    self.float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => self.text(s),
            Value::Array(items) => {
                self.array(items.len());
                for item in items {
                    self.json(item);
                }
                self
            }
            Value::Object(object) => {
                self.map(object.len());
                for (key, item) in object {
                    self.text(key).json(item);
                }
                self
            }
        }
    }
}

/// A shape that writes itself as CBOR: the generated CloudWatch shapes implement it, members
/// in model order, timestamps tagged and blobs as byte strings.
pub trait ToCbor {
    fn to_cbor(&self, e: &mut Encoder);
}

/// A blob member's bytes: generated shapes hold blobs as base64 text, as JSON does. Text that
/// is not base64 is sent as its own bytes.
pub fn unbase64(text: &str) -> Vec<u8> {
    STANDARD
        .decode(text)
        .unwrap_or_else(|_| text.as_bytes().to_vec())
}

/// Encodes a JSON value (e.g. an error body `{"__type": ..., "message": ...}`) as CBOR.
pub fn encode_json(value: &Value) -> Vec<u8> {
    let mut encoder = Encoder::new();
    encoder.json(value);
    encoder.into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn hex(s: &str) -> Vec<u8> {
        let digit = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).unwrap();
        (0..s.len()).step_by(2).map(digit).collect()
    }

    fn encoded(f: impl FnOnce(&mut Encoder) -> &mut Encoder) -> Vec<u8> {
        let mut e = Encoder::new();
        f(&mut e);
        e.into_bytes()
    }

    fn decodes(h: &str, expected: Value) {
        assert_eq!(decode(&hex(h)).unwrap(), expected, "decoding {h}");
    }

    /// Decodes `h` to `expected`, and encodes `expected` back to `h`.
    fn both_ways(h: &str, expected: Value) {
        assert_eq!(encode_json(&expected), hex(h), "encoding {expected}");
        decodes(h, expected);
    }

    fn refused(h: &str) -> CborError {
        decode(&hex(h)).unwrap_err()
    }

    #[test]
    fn rfc_8949_integers() {
        let unsigned: [(u64, &str); 11] = [
            (0, "00"),
            (1, "01"),
            (10, "0a"),
            (23, "17"),
            (24, "1818"),
            (25, "1819"),
            (100, "1864"),
            (1000, "1903e8"),
            (1_000_000, "1a000f4240"),
            (1_000_000_000_000, "1b000000e8d4a51000"),
            (u64::MAX, "1bffffffffffffffff"),
        ];
        for (n, h) in unsigned {
            both_ways(h, json!(n));
            assert_eq!(encoded(|e| e.uint(n)), hex(h));
            if let Ok(i) = i64::try_from(n) {
                assert_eq!(encoded(|e| e.int(i)), hex(h));
            }
        }
        for (n, h) in [
            (-1i64, "20"),
            (-10, "29"),
            (-100, "3863"),
            (-1000, "3903e7"),
        ] {
            both_ways(h, json!(n));
            assert_eq!(encoded(|e| e.int(n)), hex(h));
        }
        both_ways("3b7fffffffffffffff", json!(i64::MIN));
        refused("3bffffffffffffffff");
    }

    #[test]
    fn rfc_8949_floats_and_simple_values() {
        both_ways("fb3ff199999999999a", json!(1.1));
        decodes("f93e00", json!(1.5));
        decodes("f97bff", json!(65504.0));
        decodes("f90001", json!(5.960464477539063e-8));
        decodes("f9c400", json!(-4.0));
        decodes("fa47c35000", json!(100000.0));
        both_ways("f4", json!(false));
        both_ways("f5", json!(true));
        both_ways("f6", Value::Null);
        decodes("f7", Value::Null);
    }

    #[test]
    fn rfc_8949_strings_and_containers() {
        both_ways("60", json!(""));
        both_ways("6161", json!("a"));
        both_ways("6449455446", json!("IETF"));
        both_ways("62225c", json!("\"\\"));
        both_ways("62c3bc", json!("ü"));
        decodes("4401020304", json!("AQIDBA=="));
        assert_eq!(encoded(|e| e.bytes(&[1, 2, 3, 4])), hex("4401020304"));
        both_ways("80", json!([]));
        both_ways("83010203", json!([1, 2, 3]));
        both_ways("8301820203820405", json!([1, [2, 3], [4, 5]]));
        both_ways("a0", json!({}));
        both_ways("a26161016162820203", json!({"a": 1, "b": [2, 3]}));
        let by_hand = encoded(|e| {
            e.map(2)
                .text("a")
                .uint(1)
                .text("b")
                .array(2)
                .uint(2)
                .uint(3)
        });
        assert_eq!(by_hand, hex("a26161016162820203"));
    }

    #[test]
    fn rfc_8949_indefinite_lengths() {
        decodes("5f42010243030405ff", json!("AQIDBAU="));
        decodes("7f657374726561646d696e67ff", json!("streaming"));
        decodes("9fff", json!([]));
        decodes("9f018202039f0405ffff", json!([1, [2, 3], [4, 5]]));
        decodes("bf61610161629f0203ffff", json!({"a": 1, "b": [2, 3]}));
        // Chunks of another major type, or themselves indefinite, are refused.
        refused("5f6161ff");
        refused("7f4161ff");
        assert!(refused("7f7f6161ffff").message.contains("nested"));
    }

    #[test]
    fn epoch_timestamps() {
        decodes("c11a514b67b0", json!(1363896240));
        decodes("c1fb41d452d9ec200000", json!(1363896240.5));
        assert_eq!(encoded(|e| e.timestamp(1363896240.0)), hex("c11a514b67b0"));
        assert_eq!(
            encoded(|e| e.timestamp(1363896240.5)),
            hex("c1fb41d452d9ec200000")
        );
        assert_eq!(encoded(|e| e.timestamp(-1.0)), hex("c120"));
        assert_eq!(encoded(|e| e.timestamp(1e19)), hex("c1fb43e158e460913d00"));
        refused("c16161");
    }

    fn sample() -> Vec<u8> {
        encoded(|e| {
            e.map(4).text("logGroupName").text("/berth/web");
            e.text("events").array(2);
            e.map(2).text("timestamp").timestamp(1.7e9);
            e.text("message").text("hello ü");
            e.map(2).text("timestamp").timestamp(1.7e9 + 0.25);
            e.text("message").bytes(&[0, 1, 2]);
            e.text("limit").int(-5).text("flags").array(3);
            e.bool(true).null().float(2.5)
        })
    }

    #[test]
    fn round_trips_nested_structures() {
        let value = decode(&sample()).unwrap();
        let expected = json!({
            "logGroupName": "/berth/web",
            "events": [
                {"timestamp": 1700000000, "message": "hello ü"},
                {"timestamp": 1700000000.25, "message": "AAEC"},
            ],
            "limit": -5,
            "flags": [true, null, 2.5],
        });
        assert_eq!(value, expected);
        assert_eq!(decode(&encode_json(&value)).unwrap(), value);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let indefinite = hex("bf61610161629f0203ff7f657374726561646d696e67ff01ff");
        assert!(decode(&indefinite).is_ok());
        for bytes in [sample(), indefinite] {
            for end in 0..bytes.len() {
                assert!(decode(&bytes[..end]).is_err(), "prefix of {end} bytes");
            }
        }
    }

    #[test]
    fn hostile_inputs_are_refused() {
        // Declared lengths of 2^63 with (almost) nothing behind them.
        for h in [
            "5b8000000000000000",
            "7b800000000000000061",
            "9b800000000000000001",
            "bb8000000000000000",
        ] {
            assert_eq!(refused(h).offset, 0, "{h}");
        }
        let mut deep = vec![0x81u8; 1000];
        deep.push(0);
        assert!(decode(&deep).unwrap_err().message.contains("nesting"));
        let mut deep = vec![0x9fu8; 1000];
        deep.resize(2000, BREAK);
        assert!(decode(&deep).is_err());
        let mut limit = vec![0x81u8; MAX_DEPTH];
        limit.push(0);
        assert!(decode(&limit).is_ok());
        limit.insert(0, 0x81);
        assert!(decode(&limit).is_err());
        assert!(refused("d9d9f7a0").message.contains("55799"));
        assert!(refused("a10102").message.contains("not a text string"));
        refused("a1416101");
        assert!(refused("a2616101616102").message.contains("duplicate"));
        let nan = refused("a1616182f6f97e00");
        assert_eq!(
            nan.to_string(),
            "malformed CBOR at byte 5: non-finite number at a[1]"
        );
        assert!(refused("fa7f800000").message.contains("non-finite"));
        assert!(refused("fb7ff0000000000000").message.contains("non-finite"));
        assert_eq!(refused("0000").offset, 1);
        for h in ["", "ff", "61ff", "1f", "1c", "f820", "c0"] {
            refused(h);
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_round_trips(value in json_value()) {
            prop_assert_eq!(decode(&encode_json(&value)).unwrap(), value);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}

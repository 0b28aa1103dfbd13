//! `keyguard.gateway.usage.UsageTap` for JSON responses: the top-level `usage` object of a
//! response body (a copy up to 4 MiB parsed whole; beyond, the last 64 KiB searched), as JSON
//! text for the supervisor, which prices it exactly as the core does. gzip and deflate bodies
//! (at most 4 MiB compressed) are decompressed at the end, as `UsageTap._parse_json` does
//! (the stream must be complete; output beyond [`MAX_INFLATED`] gives no usage, where Python
//! has no bound); a compressed body beyond 4 MiB gives none (Python reads the tail only of
//! identity bodies).
//!
//! The body is read by the Python-compatible reader of [`crate::sniff`] (NaN and Infinity
//! accepted, as `json.loads` does; nesting beyond [`crate::sniff::MAX_DEPTH`] gives no usage).
//! Values are re-serialised with serde_json: an integer beyond 64 bits is clamped, a float
//! that is not finite becomes null, a lone surrogate escape U+FFFD (see
//! `sniff::number_value`): the usage `pricing.usage_from_response` reads is the same.

use serde_json::Value;

use crate::headers::py_strip;
use crate::inflate::{inflate, Coding};
use crate::sniff::{Mode, Parser, Top};

pub const MAX_JSON: usize = 4 * 1024 * 1024;
pub const TAIL: usize = 64 * 1024;
/// the most a compressed copy is decompressed to (Python has no bound; beyond it, no usage)
pub const MAX_INFLATED: usize = 64 * 1024 * 1024;

const USAGE_KEY: &[u8] = b"\"usage\"";
const MODE: Mode = Mode { dup_model: false, allow_nan: true };

/// Collects a response body's bytes (a bounded copy) and finds its usage at the end.
pub struct UsageCopy {
    /// the whole body while it is at most MAX_JSON bytes, then its last TAIL bytes
    copy: Vec<u8>,
    size: u64,
    coding: Coding,
}

impl UsageCopy {
    pub fn new() -> UsageCopy {
        UsageCopy { copy: Vec::new(), size: 0, coding: Coding::Identity }
    }

    /// For a response with this `content-encoding` (the last such header's value, raw):
    /// gzip and deflate bodies are decompressed at the end (the copy only), as `UsageTap`.
    pub fn with_encoding(encoding: &[u8]) -> UsageCopy {
        let coding = Coding::of(&py_strip(encoding).to_ascii_lowercase());
        UsageCopy { copy: Vec::new(), size: 0, coding }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let len = chunk.len() as u64;
        if self.size + len <= MAX_JSON as u64 {
            self.copy.extend_from_slice(chunk);
        } else if chunk.len() >= TAIL {
            self.copy.clear();
            self.copy.extend_from_slice(&chunk[chunk.len() - TAIL..]);
        } else {
            self.copy.extend_from_slice(chunk);
            if self.copy.len() > TAIL {
                let cut = self.copy.len() - TAIL;
                self.copy.drain(..cut);
            }
        }
        self.size += len;
    }

    /// The top-level `usage` value, re-serialised, when it is a JSON object.
    pub fn finish(self) -> Option<String> {
        self.finish_value().and_then(|v| serde_json::to_string(&v).ok())
    }

    /// The top-level `usage` value when it is a JSON object.
    pub fn finish_value(self) -> Option<Value> {
        if self.copy.is_empty() {
            return None;
        }
        let usage = if self.size <= MAX_JSON as u64 {
            match self.coding {
                Coding::Identity => usage_of_body(&self.copy),
                Coding::Other => None, // br, zstd: settle on the estimate
                c => {
                    // `zlib.decompress`: the stream must end (trailer checked)
                    let out = inflate(c, &self.copy, MAX_INFLATED).ok()?;
                    if !out.ended {
                        return None;
                    }
                    usage_of_body(&out.data)
                }
            }
        } else if self.coding == Coding::Identity {
            usage_of_tail(&self.copy)
        } else {
            None
        }?;
        match usage {
            Value::Object(_) => Some(usage),
            _ => None,
        }
    }
}

impl Default for UsageCopy {
    fn default() -> Self {
        Self::new()
    }
}

/// `_parse_json`: `json.loads(body.decode("utf-8"))`, then the object's `usage`.
fn usage_of_body(body: &[u8]) -> Option<Value> {
    std::str::from_utf8(body).ok()?;
    let mut p = Parser::new(body, MODE);
    p.ws();
    if !p.at_object() {
        return None; // not JSON, or JSON that is not an object
    }
    let mut top = Top { want_usage: true, ..Top::default() };
    p.value(false, Some(&mut top)).ok()?;
    p.ws();
    if !p.at_end() {
        return None;
    }
    top.usage
}

/// Python's `bytes.lstrip()`.
fn lstrip(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)).count();
    &v[n..]
}

/// `tail[:end].rfind(needle)`
fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).rev().find(|&i| &hay[i..i + needle.len()] == needle)
}

/// `_parse_tail`: the last `"usage"` followed by `:` decides; its value is decoded (invalid
/// UTF-8 replaced) and read as one JSON value, whatever follows it.
fn usage_of_tail(tail: &[u8]) -> Option<Value> {
    let mut end = tail.len();
    while let Some(at) = rfind(&tail[..end], USAGE_KEY) {
        let rest = lstrip(&tail[at + USAGE_KEY.len()..]);
        if rest.first() == Some(&b':') {
            let text = String::from_utf8_lossy(lstrip(&rest[1..]));
            return Parser::new(text.as_bytes(), MODE).value(true, None).ok();
        }
        end = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(chunks: &[&[u8]]) -> Option<String> {
        let mut c = UsageCopy::new();
        for chunk in chunks {
            c.feed(chunk);
        }
        c.finish()
    }

    #[test]
    fn whole_body() {
        let body = br#"{"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 4}, "n": NaN}"#;
        assert_eq!(
            usage(&[&body[..10], &body[10..]]).as_deref(),
            Some(r#"{"completion_tokens":4,"prompt_tokens":3}"#)
        );
        assert_eq!(usage(&[br#"{"usage": {"a": 1}, "usage": {"b": 2}}"#]).as_deref(), Some(r#"{"b":2}"#));
        assert_eq!(usage(&[br#"{"\u0075sage": {"a": Infinity}}"#]).as_deref(), Some(r#"{"a":null}"#));
        assert_eq!(usage(&[br#"{"usage": [1]}"#]), None);
        assert_eq!(usage(&[br#"{"usage": {"a": 1}} x"#]), None);
        assert_eq!(usage(&[br#"[{"usage": {"a": 1}}]"#]), None);
        assert_eq!(usage(&[b"\xef\xbb\xbf{\"usage\": {}}"]), None);
        assert_eq!(usage(&[b"{\"usage\": {}, \"x\": \"\xff\"}"]), None);
        assert_eq!(usage(&[]), None);
        assert_eq!(usage(&[br#"{"x": {"usage": {"a": 1}}}"#]), None);
        assert_eq!(
            usage(&[br#"{"usage": {"a": 99999999999999999999999, "b": "\ud800"}}"#]).as_deref(),
            Some(r#"{"a":18446744073709551615,"b":"\ufffd"}"#.replace("\\ufffd", "\u{fffd}").as_str())
        );
    }

    #[test]
    fn tail() {
        let filler = vec![b' '; MAX_JSON];
        let mut c = UsageCopy::new();
        c.feed(b"{\"data\": \"x\",");
        c.feed(&filler);
        c.feed(b"\"usage\" \x0b: \x0c{\"total_tokens\": 5} trailing \"usage\" and more");
        assert_eq!(c.finish().as_deref(), Some(r#"{"total_tokens":5}"#));
        // the last "usage" followed by ':' decides, even if its value is no object
        let mut c = UsageCopy::new();
        c.feed(&filler);
        c.feed(b"\"usage\": {\"a\": 1}, \"usage\": 7}");
        assert_eq!(c.finish(), None);
        // a value cut by the end of the body
        let mut c = UsageCopy::new();
        c.feed(&filler);
        c.feed(b"\"usage\": {\"a\": 1");
        assert_eq!(c.finish(), None);
        // only the last TAIL bytes are searched
        let mut c = UsageCopy::new();
        c.feed(b"\"usage\": {\"a\": 1}");
        c.feed(&filler);
        assert_eq!(c.finish(), None);
        // a later "usage" not followed by a colon is passed over
        let mut c = UsageCopy::new();
        c.feed(&filler);
        c.feed(b"\"usage\": {\"b\": 2} \"usage\"usage\" x");
        assert_eq!(c.finish().as_deref(), Some(r#"{"b":2}"#));
    }

    #[test]
    fn compressed() {
        use flate2::write::{GzEncoder, ZlibEncoder};
        use std::io::Write;
        let body = br#"{"id": "x", "usage": {"prompt_tokens": 3}}"#;
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(body).unwrap();
        let gz = e.finish().unwrap();
        let mut e = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(body).unwrap();
        let zl = e.finish().unwrap();
        let run = |enc: &[u8], data: &[u8]| {
            let mut c = UsageCopy::with_encoding(enc);
            c.feed(&data[..5]);
            c.feed(&data[5..]);
            c.finish()
        };
        let want = Some(r#"{"prompt_tokens":3}"#.to_string());
        assert_eq!(run(b" GZIP", &gz), want);
        assert_eq!(run(b"x-gzip", &gz), want);
        assert_eq!(run(b"deflate", &zl), want);
        assert_eq!(run(b"deflate", &gz), None);
        assert_eq!(run(b"gzip", &gz[..gz.len() - 1]), None); // incomplete
        assert_eq!(run(b"br", body), None);
        assert_eq!(run(b"identity", body), want);
    }

    #[test]
    fn copy_bounds() {
        let mut c = UsageCopy::new();
        c.feed(&vec![b'a'; MAX_JSON]);
        assert_eq!(c.copy.len(), MAX_JSON);
        c.feed(b"b");
        assert_eq!(c.copy.len(), TAIL);
        assert_eq!(c.copy.last(), Some(&b'b'));
        c.feed(&vec![b'c'; 3 * TAIL]);
        assert_eq!(c.copy, vec![b'c'; TAIL]);
        c.feed(b"d");
        assert_eq!(c.copy.len(), TAIL);
        assert_eq!(c.size, MAX_JSON as u64 + 1 + 3 * TAIL as u64 + 1);
    }
}

//! `keyguard.gateway.bodysniff.parse_json_model` for the edge: is the body a UTF-8 JSON
//! object, what is its `model`, does it stream.
//!
//! The JSON reader here is a port of CPython's `json` scanner (`Modules/_json.c`), not serde's:
//! it accepts exactly the documents `json.loads` accepts, with these deliberate exceptions,
//! each of which makes the edge hand the body to the core (never accept more than Python):
//!
//! * `NaN`, `Infinity`, `-Infinity` are NotJson here (Python reads them as floats);
//! * nesting deeper than [`MAX_DEPTH`] is NotJson (Python's limit is its recursion limit,
//!   about 1000 minus the frames on the stack: always deeper than 512 in the gateway);
//! * a top-level `model` string holding a lone surrogate escape (`"\ud800"`, which Python
//!   keeps in a `str`) is NotJson (a Rust `String` cannot hold it).
//!
//! Python's other quirks are kept: integers of more than 4300 digits are invalid (Python's
//! `int` conversion limit raises ValueError), and a duplicate `model` key anywhere (Python's
//! `object_pairs_hook`) is reported when that object closes, so a duplicate followed by a
//! syntax error further on is Ambiguous, a syntax error before it NotJson, as in Python.

use std::borrow::Cow;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// not UTF-8 JSON (Python: `parsed` False)
    NotJson,
    /// valid JSON but not an object
    NotObject,
    /// a `model` key more than once (after unescaping), or a `model` that is not a string:
    /// Python raises AmbiguousModel
    Ambiguous,
    /// a JSON object: its `model` (if any) and whether `"stream": true` is set at top level
    Object { model: Option<String>, stream: bool },
}

/// Containers nested deeper than this are refused (NotJson / no usage).
pub const MAX_DEPTH: usize = 512;

/// `sys.get_int_max_str_digits()` default: `int()` of a longer decimal string raises.
const MAX_INT_DIGITS: usize = 4300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// Python raises ValueError (or RecursionError), or this reader refuses on purpose
    Syntax,
    /// an object with `model` more than once (only with `Mode::dup_model`)
    Ambiguous,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode {
    /// raise Ambiguous for an object naming `model` twice (bodysniff's `_pairs_hook`)
    pub dup_model: bool,
    /// read NaN/Infinity/-Infinity (as JSON null when a value is built: Python's float
    /// is no token count either); otherwise they are a Syntax failure
    pub allow_nan: bool,
}

/// What the top-level object's walk noted.
#[derive(Debug, Default)]
pub(crate) struct Top {
    /// build and keep the value of the top-level `usage` key (the last one, as dict does)
    pub want_usage: bool,
    pub usage: Option<Value>,
    /// the last top-level `model`: None, or its raw string content range, or not a string
    pub model: TopModel,
    /// the last top-level `stream` is JSON `true`
    pub stream: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopModel {
    #[default]
    Absent,
    Null,
    Str(usize, usize),
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Model,
    Stream,
    Usage,
    Other,
}

/// An open array or object of [`Parser::value`].
struct Frame {
    is_object: bool,
    /// the top-level object (its model, stream and usage are noted in `Top`)
    is_top: bool,
    /// this container's value is built
    build: bool,
    items: Vec<Value>,
    map: serde_json::Map<String, Value>,
    /// the current member: its key (when built), what the key is, where its value starts,
    /// whether its value is built
    key: Option<String>,
    kind: KeyKind,
    member_start: usize,
    member_build: bool,
    /// keys that read `model` (`_pairs_hook`)
    models: usize,
}

impl Frame {
    fn new(is_object: bool, build: bool, is_top: bool) -> Frame {
        Frame {
            is_object,
            is_top,
            build,
            items: Vec::new(),
            map: serde_json::Map::new(),
            key: None,
            kind: KeyKind::Other,
            member_start: 0,
            member_build: build,
            models: 0,
        }
    }

    /// The current member's value `v`, which ends at `end` of `s`.
    fn attach(&mut self, v: Value, s: &[u8], end: usize, top: Option<&mut Top>) {
        if let (true, Some(t)) = (self.is_top, top) {
            match self.kind {
                KeyKind::Model => {
                    t.model = match s[self.member_start] {
                        b'"' => TopModel::Str(self.member_start + 1, end - 1),
                        b'n' => TopModel::Null,
                        _ => TopModel::Other,
                    }
                }
                KeyKind::Stream => t.stream = s[self.member_start] == b't',
                KeyKind::Usage if t.want_usage => t.usage = Some(v.clone()),
                _ => {}
            }
        }
        if !self.build {
            return;
        }
        if self.is_object {
            self.map.insert(self.key.take().unwrap_or_default(), v);
        } else {
            self.items.push(v);
        }
    }

    /// The container is closed: `_pairs_hook` runs now (a second `model` is Ambiguous).
    fn finish(self, mode: Mode) -> Result<Value, Fail> {
        if self.is_object && mode.dup_model && self.models > 1 {
            return Err(Fail::Ambiguous);
        }
        Ok(match (self.build, self.is_object) {
            (false, _) => Value::Null,
            (true, true) => Value::Object(self.map),
            (true, false) => Value::Array(self.items),
        })
    }
}

pub(crate) struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    mode: Mode,
}

fn hex(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

fn is_lead(c: u32) -> bool {
    (0xD800..0xDC00).contains(&c)
}

fn is_trail(c: u32) -> bool {
    (0xDC00..0xE000).contains(&c)
}

/// The text of a validated string's content (`raw`, between the quotes, valid UTF-8 and
/// escapes), as Python's scanner decodes it; a lone surrogate escape is U+FFFD when `replace`,
/// else the result is None.
pub(crate) fn decode(raw: &[u8], replace: bool) -> Option<Cow<'_, str>> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    let hex4 = |at: usize| -> u32 { raw[at..at + 4].iter().fold(0, |n, b| n * 16 + hex(*b).unwrap_or(0)) };
    while i < raw.len() {
        let run = raw[i..].iter().position(|b| *b == b'\\').map_or(raw.len(), |n| i + n);
        if run > i {
            out.push_str(std::str::from_utf8(&raw[i..run]).ok()?);
            i = run;
            continue;
        }
        let c = match raw[i + 1] {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => {
                let mut c = hex4(i + 2);
                i += 6;
                if is_lead(c) && raw.len() >= i + 6 && raw[i] == b'\\' && raw[i + 1] == b'u' {
                    let c2 = hex4(i + 2);
                    if is_trail(c2) {
                        c = 0x10000 + ((c - 0xD800) << 10) + (c2 - 0xDC00);
                        i += 6;
                    }
                }
                match char::from_u32(c) {
                    Some(ch) => out.push(ch),
                    None if replace => out.push('\u{fffd}'),
                    None => return None,
                }
                continue;
            }
        };
        out.push(c);
        i += 2;
    }
    Some(Cow::Owned(out))
}

impl<'a> Parser<'a> {
    /// `s` must be valid UTF-8 (Python reads a `str`).
    pub(crate) fn new(s: &'a [u8], mode: Mode) -> Self {
        Parser { s, pos: 0, mode }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// JSON whitespace (Python's `[ \t\n\r]*`)
    pub(crate) fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.s.len()
    }

    pub(crate) fn at_object(&self) -> bool {
        self.peek() == Some(b'{')
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// The string at `pos` (a `"`): its content range and whether it has escapes.
    fn string(&mut self) -> Result<(usize, usize, bool), Fail> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek().ok_or(Fail::Syntax)? {
                b'"' => {
                    self.pos += 1;
                    return Ok((start, self.pos - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match self.s.get(self.pos + 1).ok_or(Fail::Syntax)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 2,
                        b'u' => {
                            let digits = self.s.get(self.pos + 2..self.pos + 6).ok_or(Fail::Syntax)?;
                            if !digits.iter().all(|b| b.is_ascii_hexdigit()) {
                                return Err(Fail::Syntax);
                            }
                            self.pos += 6;
                        }
                        _ => return Err(Fail::Syntax),
                    }
                }
                0..=0x1f => return Err(Fail::Syntax), // strict: no raw control characters
                _ => self.pos += 1,
            }
        }
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    /// `_match_number_unicode`; `pos` is at `-` or a digit.
    fn number(&mut self, build: bool) -> Result<Value, Fail> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Fail::Syntax),
        }
        let int_digits = self.pos - int_start;
        let mut is_float = false;
        if self.peek() == Some(b'.') && matches!(self.s.get(self.pos + 1), Some(b'0'..=b'9')) {
            self.pos += 1;
            self.digits();
            is_float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mut p = self.pos + 1;
            if matches!(self.s.get(p), Some(b'+' | b'-')) {
                p += 1;
            }
            if matches!(self.s.get(p), Some(b'0'..=b'9')) {
                self.pos = p;
                self.digits();
                is_float = true;
            }
        }
        if !is_float && int_digits > MAX_INT_DIGITS {
            return Err(Fail::Syntax);
        }
        if !build {
            return Ok(Value::Null);
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| Fail::Syntax)?;
        Ok(number_value(text, is_float))
    }

    /// One JSON value at `pos` (no whitespace skipped before it): built when `build`, else
    /// only checked (Null returned). `top` (for a document that is an object) notes the
    /// top-level object's model, stream and usage. Iterative: nesting costs heap, not stack.
    pub(crate) fn value(&mut self, build: bool, mut top: Option<&mut Top>) -> Result<Value, Fail> {
        let want_usage = top.as_deref().is_some_and(|t| t.want_usage);
        let mut stack: Vec<Frame> = Vec::new();
        'value: loop {
            let building = stack.last().map_or(build, |f| f.member_build);
            let mut v = match self.peek().ok_or(Fail::Syntax)? {
                open @ (b'{' | b'[') => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(Fail::Syntax);
                    }
                    let is_object = open == b'{';
                    let is_top = is_object && stack.is_empty() && top.is_some();
                    self.pos += 1;
                    self.ws();
                    let mut frame = Frame::new(is_object, building, is_top);
                    if self.peek() != Some(if is_object { b'}' } else { b']' }) {
                        if is_object {
                            self.member_key(&mut frame, want_usage)?;
                        } else {
                            frame.member_build = building;
                        }
                        stack.push(frame);
                        continue 'value;
                    }
                    self.pos += 1;
                    frame.finish(self.mode)?
                }
                b'"' => {
                    let (a, b, _) = self.string()?;
                    if building {
                        let text = decode(&self.s[a..b], true).ok_or(Fail::Syntax)?;
                        Value::String(text.into_owned())
                    } else {
                        Value::Null
                    }
                }
                b'-' if self.s[self.pos..].starts_with(b"-Infinity") => self.constant(b"-Infinity")?,
                b'-' | b'0'..=b'9' => self.number(building)?,
                b'n' if self.literal(b"null") => Value::Null,
                b't' if self.literal(b"true") => Value::Bool(true),
                b'f' if self.literal(b"false") => Value::Bool(false),
                b'N' => self.constant(b"NaN")?,
                b'I' => self.constant(b"Infinity")?,
                _ => return Err(Fail::Syntax),
            };
            // the value is complete: add it to its container, closing containers as they end
            loop {
                let Some(frame) = stack.last_mut() else { return Ok(v) };
                frame.attach(v, self.s, self.pos, top.as_deref_mut());
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.ws();
                        if frame.is_object {
                            self.member_key(frame, want_usage)?;
                        } else {
                            frame.member_build = frame.build;
                        }
                        continue 'value;
                    }
                    Some(b'}') if frame.is_object => {}
                    Some(b']') if !frame.is_object => {}
                    _ => return Err(Fail::Syntax),
                }
                self.pos += 1;
                let frame = stack.pop().ok_or(Fail::Syntax)?;
                v = frame.finish(self.mode)?;
            }
        }
    }

    /// A member's key and colon (`pos` at the key's quote); notes what the key is.
    fn member_key(&mut self, frame: &mut Frame, want_usage: bool) -> Result<(), Fail> {
        if self.peek() != Some(b'"') {
            return Err(Fail::Syntax);
        }
        let (a, b, _) = self.string()?;
        let key = decode(&self.s[a..b], true).ok_or(Fail::Syntax)?;
        self.ws();
        if self.peek() != Some(b':') {
            return Err(Fail::Syntax);
        }
        self.pos += 1;
        self.ws();
        frame.kind = if key == "model" {
            KeyKind::Model
        } else if frame.is_top && key == "stream" {
            KeyKind::Stream
        } else if frame.is_top && key == "usage" {
            KeyKind::Usage
        } else {
            KeyKind::Other
        };
        frame.models += usize::from(frame.kind == KeyKind::Model);
        frame.member_build = frame.build || (want_usage && frame.kind == KeyKind::Usage);
        frame.key = if frame.build { Some(key.into_owned()) } else { None };
        frame.member_start = self.pos;
        Ok(())
    }

    fn constant(&mut self, word: &[u8]) -> Result<Value, Fail> {
        if self.mode.allow_nan && self.literal(word) {
            Ok(Value::Null)
        } else {
            Err(Fail::Syntax)
        }
    }

    /// The raw bytes `a..b` of the document.
    pub(crate) fn raw(&self, a: usize, b: usize) -> &'a [u8] {
        &self.s[a..b]
    }
}

/// A number as a JSON value for the supervisor, which reads token counts as Python's
/// `pricing._int` does (positive ints, capped at 2**32; anything else counts 0): an integer
/// beyond 64 bits is clamped (to u64::MAX, or i64::MIN when negative), a float that is not
/// finite (Python's inf) becomes null; both give `_int` the same answer as Python's value.
fn number_value(text: &str, is_float: bool) -> Value {
    if !is_float {
        if let Ok(u) = text.parse::<u64>() {
            return Value::from(u);
        }
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
        return if text.starts_with('-') { Value::from(i64::MIN) } else { Value::from(u64::MAX) };
    }
    match text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        Some(n) => Value::Number(n),
        None => Value::Null,
    }
}

/// Python reads a `str`; only UTF-8 without a BOM is JSON on the wire (RFC 8259).
pub fn sniff_json(body: &[u8]) -> Sniff {
    if std::str::from_utf8(body).is_err() {
        return Sniff::NotJson;
    }
    let mut p = Parser::new(body, Mode { dup_model: true, allow_nan: false });
    p.ws();
    let mut top = Top::default();
    let parsed = if p.at_object() {
        p.value(false, Some(&mut top)).map(|_| true)
    } else {
        p.value(false, None).map(|_| false)
    };
    let is_object = match parsed {
        Err(Fail::Ambiguous) => return Sniff::Ambiguous,
        Err(Fail::Syntax) => return Sniff::NotJson,
        Ok(is_object) => is_object,
    };
    p.ws();
    if !p.at_end() {
        return Sniff::NotJson;
    }
    if !is_object {
        return Sniff::NotObject;
    }
    let model = match top.model {
        TopModel::Absent | TopModel::Null => None,
        TopModel::Other => return Sniff::Ambiguous,
        TopModel::Str(a, b) => match decode(p.raw(a, b), false) {
            Some(m) => Some(m.into_owned()),
            None => return Sniff::NotJson, // a lone surrogate: Python keeps it, Rust cannot
        },
    };
    Sniff::Object { model, stream: top.stream }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(model: Option<&str>, stream: bool) -> Sniff {
        Sniff::Object { model: model.map(str::to_string), stream }
    }

    #[test]
    fn objects() {
        assert_eq!(sniff_json(br#"{"model": "gpt-4o", "stream": true}"#), obj(Some("gpt-4o"), true));
        assert_eq!(sniff_json(b" {} \r\n"), obj(None, false));
        assert_eq!(sniff_json(br#"{"model": null, "stream": 1}"#), obj(None, false));
        assert_eq!(sniff_json(br#"{"stream": true, "stream": false}"#), obj(None, false));
        assert_eq!(sniff_json(br#"{"stream": false, "\u0073tream": true}"#), obj(None, true));
        assert_eq!(sniff_json(br#"{"model": "a\u00e9\ud83d\ude00\n"}"#), obj(Some("a\u{e9}\u{1F600}\n"), false));
        assert_eq!(sniff_json(br#"{"x": {"model": 1}, "model": "m"}"#), obj(Some("m"), false));
    }

    #[test]
    fn ambiguous() {
        assert_eq!(sniff_json(br#"{"model": "a", "model": "a"}"#), Sniff::Ambiguous);
        assert_eq!(sniff_json(br#"{"model": "a", "\u006dodel": "b"}"#), Sniff::Ambiguous);
        assert_eq!(sniff_json(br#"{"model": 4}"#), Sniff::Ambiguous);
        assert_eq!(sniff_json(br#"{"model": ["a"]}"#), Sniff::Ambiguous);
        assert_eq!(sniff_json(br#"[{"model": 1, "model": 2}]"#), Sniff::Ambiguous);
        // the hook runs when the object closes, before later errors are seen
        assert_eq!(sniff_json(br#"{"model": 1, "model": 2} x"#), Sniff::Ambiguous);
        assert_eq!(sniff_json(br#"[{"model": 1, "model": 2}, x]"#), Sniff::Ambiguous);
        assert_eq!(sniff_json(br#"[x, {"model": 1, "model": 2}]"#), Sniff::NotJson);
        assert_eq!(sniff_json(br#"{"model": 1, "model": 2, x}"#), Sniff::NotJson);
        assert_eq!(sniff_json(br#"{"model": 4} x"#), Sniff::NotJson);
    }

    #[test]
    fn not_json() {
        for body in [
            &b""[..],
            b"\xef\xbb\xbf{}",
            b"{\"model\": \"\xff\"}",
            b"{\"a\": NaN}",
            b"[Infinity]",
            b"-Infinity",
            b"{\"a\": 1,}",
            b"[1,]",
            b"01",
            b"1.",
            b"1e",
            b".5",
            b"\"\t\"",
            b"\"\\x\"",
            b"\"\\u12g4\"",
            b"{\"model\": \"\\ud800\"}",
            b"1 \x0b",
            b"{'a': 1}",
        ] {
            assert_eq!(sniff_json(body), Sniff::NotJson, "{:?}", String::from_utf8_lossy(body));
        }
        let mut big = b"[".to_vec();
        big.extend(std::iter::repeat_n(b'1', 4301));
        big.push(b']');
        assert_eq!(sniff_json(&big), Sniff::NotJson);
        big.remove(1);
        assert_eq!(sniff_json(&big), Sniff::NotObject);
        big.insert(1, b'-');
        assert_eq!(sniff_json(&big), Sniff::NotObject);
        let deep = |n: usize| [b"[".repeat(n), b"]".repeat(n)].concat();
        assert_eq!(sniff_json(&deep(MAX_DEPTH)), Sniff::NotObject);
        assert_eq!(sniff_json(&deep(MAX_DEPTH + 1)), Sniff::NotJson);
    }

    #[test]
    fn max_depth_fits_a_small_stack() {
        // the reader keeps its containers on the heap: depth costs no stack
        let worker = std::thread::Builder::new().stack_size(64 * 1024).spawn(|| {
            let mut body = b"{\"model\": \"m\", \"d\": ".to_vec();
            body.extend(b"[{\"a\": ".repeat(MAX_DEPTH / 2 - 1));
            body.extend(b"1");
            body.extend(b"}]".repeat(MAX_DEPTH / 2 - 1));
            body.extend(b"}");
            sniff_json(&body)
        });
        assert_eq!(worker.unwrap().join().unwrap(), obj(Some("m"), false));
    }

    #[test]
    fn not_object_and_lone_surrogates() {
        for body in [&b"[]"[..], b"1", b"-0.5e+3", b"\"x\"", b"null", b" true ", b"[\"\\udc00\\ud800\"]", b"1E400"] {
            assert_eq!(sniff_json(body), Sniff::NotObject, "{:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(sniff_json(br#"{"\ud800": 1, "x": "\udfff"}"#), obj(None, false));
    }

    #[test]
    fn decoding() {
        assert_eq!(decode(br"\ud83d\ude00", false).unwrap(), "\u{1F600}");
        assert_eq!(decode(br"\ud83d\u0041", true).unwrap(), "\u{fffd}A");
        assert_eq!(decode(br"\ud83d\ud83d\ude00", true).unwrap(), "\u{fffd}\u{1F600}");
        assert!(decode(br"\ude00", false).is_none());
        assert_eq!(decode(br#"\"\\\/\b\f\n\r\t"#, false).unwrap(), "\"\\/\u{8}\u{c}\n\r\t");
        assert_eq!(number_value("123456789012345678901234567890", false), Value::from(u64::MAX));
        assert_eq!(number_value("-123456789012345678901234567890", false), Value::from(i64::MIN));
        assert_eq!(number_value("-5", false), Value::from(-5));
        assert_eq!(number_value("1e999", true), Value::Null);
        assert_eq!(number_value("1.5E+1", true), serde_json::json!(15.0));
    }
}

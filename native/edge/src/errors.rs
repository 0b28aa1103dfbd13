//! `keyguard.gateway.errors.error_body`: OpenAI's error shape, byte for byte as Python's
//! `json.dumps` writes it (including its escaping), with the message pattern-redacted.
//!
//! Also the redaction it relies on, `keyguard.domain.redaction.redact` (value-based redaction
//! of the secrets passed in `known`, then pattern-based redaction of key shapes, `ANY_KEY_RE`
//! of `keyguard.domain.keys`) and `keyguard.domain.keys.redacted_form`.

use std::sync::{Mutex, OnceLock};

use regex::Regex;

/// `keyguard.domain.redaction.MIN_VALUE_LENGTH`: shorter known values are not redacted by
/// value (counted in characters, as Python's `len`).
pub const MIN_VALUE_LENGTH: usize = 8;

const VIRTUAL_KEY_PREFIX: &str = "kg_";
const VIRTUAL_KEY_LENGTH: usize = 65;
const KEY_ID_LENGTH: usize = 12;
const OPENAI_KINDS: [&str; 3] = ["proj", "svcacct", "admin"];

/// `ANY_KEY_RE` of `keyguard.domain.keys` (the regex crate's leftmost-first alternation picks
/// the same match as Python's backtracking `re` for this pattern).
fn any_key_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,}|kg_[0-9a-z]{12}[0-9A-Za-z]{50}|kga_[0-9a-z]{12}[0-9A-Za-z]{50}",
        )
        .expect("ANY_KEY_RE compiles")
    })
}

/// The last `n` characters of `s` (Python's `s[-n:]`).
fn last_chars(s: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    match s.char_indices().rev().nth(n - 1) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

/// `keyguard.domain.keys.redacted_form`: keep only the format prefix and the last four
/// characters (`sk-proj-…wxyz`, `kg_<key id>…wxyz`, `…wxyz`, `…`).
pub fn redacted_form(value: &str) -> String {
    let n = value.chars().count();
    if value.starts_with(VIRTUAL_KEY_PREFIX) && n == VIRTUAL_KEY_LENGTH {
        // the prefix is ASCII, so the key id is the next 12 characters
        let rest = &value[VIRTUAL_KEY_PREFIX.len()..];
        let end = rest.char_indices().nth(KEY_ID_LENGTH).map_or(rest.len(), |(i, _)| i);
        return format!("{VIRTUAL_KEY_PREFIX}{}\u{2026}{}", &rest[..end], last_chars(value, 4));
    }
    if value.starts_with("sk-") {
        let mut prefix = "sk-".to_string();
        for kind in OPENAI_KINDS {
            let p = format!("sk-{kind}-");
            if value.starts_with(&p) {
                prefix = p;
                break;
            }
        }
        let tail = if n >= prefix.len() + 16 { last_chars(value, 4) } else { "" };
        return format!("{prefix}\u{2026}{tail}");
    }
    if n >= 16 {
        return format!("\u{2026}{}", last_chars(value, 4));
    }
    "\u{2026}".to_string()
}

/// The known values as Python's registry orders them: at least [`MIN_VALUE_LENGTH`]
/// characters, without repeats, longest first (so a value containing another wins).
fn ordered_values(known: &[String]) -> Vec<&str> {
    let mut values: Vec<&str> = Vec::new();
    for v in known {
        if v.chars().count() >= MIN_VALUE_LENGTH && !values.contains(&v.as_str()) {
            values.push(v);
        }
    }
    values.sort_by_key(|v| std::cmp::Reverse(v.chars().count()));
    values
}

/// The value pattern of `redaction.register` (`|`.join of the escaped values, longest first);
/// the last one built is kept, since the same few upstream keys come with every call.
type PatternCache = Mutex<Option<(Vec<String>, Regex)>>;

fn value_pattern(values: &[&str]) -> Option<Regex> {
    static CACHE: OnceLock<PatternCache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(None));
    if let Ok(guard) = cache.lock() {
        if let Some((vals, re)) = guard.as_ref() {
            if vals.len() == values.len() && vals.iter().zip(values).all(|(a, b)| a == b) {
                return Some(re.clone());
            }
        }
    }
    let pattern = values.iter().map(|v| regex::escape(v)).collect::<Vec<_>>().join("|");
    let re = regex::RegexBuilder::new(&pattern).size_limit(64 << 20).build().ok()?;
    if let Ok(mut guard) = cache.lock() {
        *guard = Some((values.iter().map(|v| v.to_string()).collect(), re.clone()));
    }
    Some(re)
}

/// Value-based replacement without a regex (leftmost position, first value in `values` order
/// that matches there, as the alternation does): used when the pattern is too big to compile.
fn replace_values_scan(text: &str, values: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < text.len() {
        if text.is_char_boundary(i) {
            if let Some(v) = values.iter().find(|v| text[i..].starts_with(**v)) {
                out.push_str(&text[copied..i]);
                out.push_str(&redacted_form(v));
                i += v.len();
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

fn replace_values(text: &str, values: &[&str]) -> String {
    if values.is_empty() {
        return text.to_string();
    }
    match value_pattern(values) {
        Some(re) => re.replace_all(text, |c: &regex::Captures<'_>| redacted_form(&c[0])).into_owned(),
        None => replace_values_scan(text, values),
    }
}

/// `keyguard.domain.redaction.redact` with the registry holding exactly `known`: every known
/// value (of at least 8 characters), then everything key-shaped, replaced by its redacted form.
pub fn redact(text: &str, known: &[String]) -> String {
    let values = ordered_values(known);
    let text = replace_values(text, &values);
    any_key_re().replace_all(&text, |c: &regex::Captures<'_>| redacted_form(&c[0])).into_owned()
}

/// A JSON string literal as Python's `json.dumps` (ensure_ascii) writes it.
pub fn py_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let unit = |out: &mut Vec<u8>, u: u16| {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[((u >> shift) & 0xf) as usize]);
        }
    };
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    unit(out, *u);
                }
            }
        }
    }
    out.push(b'"');
}

/// `error_body(status, message, code)` with `type_` and `param` left to their defaults:
/// `{"error": {"message": ..., "type": ..., "code": ..., "param": null}}`, the message
/// pattern-redacted (the edge registers no secrets of its own).
pub fn error_body(status: u16, message: &str, code: Option<&str>) -> Vec<u8> {
    error_body_known(status, message, code, &[])
}

/// [`error_body`] with value-based redaction of `known` as well (Python's `redact` uses the
/// process-wide registry).
pub fn error_body_known(status: u16, message: &str, code: Option<&str>, known: &[String]) -> Vec<u8> {
    let type_ = if status >= 500 { "server_error" } else { "invalid_request_error" };
    let mut out = Vec::with_capacity(message.len() + 96);
    out.extend_from_slice(b"{\"error\": {\"message\": ");
    py_json_string(&mut out, &redact(message, known));
    out.extend_from_slice(b", \"type\": ");
    py_json_string(&mut out, type_);
    out.extend_from_slice(b", \"code\": ");
    match code {
        Some(code) => py_json_string(&mut out, code),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b", \"param\": null}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// a key-shaped value built at run time (no key-shaped literal in the source)
    fn fake_key(kind: &str, fill: char, n: usize) -> String {
        let half: String = std::iter::repeat_n(fill, n).collect();
        format!("sk-{kind}{half}{}{half}", ["T3Blb", "kFJ"].concat())
    }

    #[test]
    fn body_shape_and_escaping() {
        let body = error_body(400, "bad \"x\"\n\u{7f}\u{e9}\u{2026}\u{1F600}/", Some("c"));
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"error\": {\"message\": \"bad \\\"x\\\"\\n\\u007f\\u00e9\\u2026\\ud83d\\ude00/\", \
             \"type\": \"invalid_request_error\", \"code\": \"c\", \"param\": null}}"
        );
        let body = error_body(502, "", None);
        assert_eq!(
            body,
            b"{\"error\": {\"message\": \"\", \"type\": \"server_error\", \"code\": null, \"param\": null}}"
        );
        assert!(String::from_utf8(error_body(500, "\u{0}\u{1f}\t\u{8}\u{c}\r", None))
            .unwrap()
            .contains("\\u0000\\u001f\\t\\b\\f\\r"));
    }

    #[test]
    fn keys_are_redacted() {
        let key = fake_key("proj-", 'A', 30);
        let body = String::from_utf8(error_body(401, &format!("bad key {key}."), None)).unwrap();
        assert!(!body.contains(&key));
        assert!(body.contains("sk-proj-\\u2026AAAA."));
        let short = format!("sk-{}", "b".repeat(19));
        assert_eq!(redact(&short, &[]), short);
    }

    #[test]
    fn redacted_forms() {
        assert_eq!(redacted_form("short"), "\u{2026}");
        assert_eq!(redacted_form("0123456789abcdefWXYZ"), "\u{2026}WXYZ");
        let sk = format!("sk-{}", "c".repeat(15));
        assert_eq!(redacted_form(&sk), "sk-\u{2026}");
        let sk = format!("sk-admin-{}wxyz", "c".repeat(12));
        assert_eq!(redacted_form(&sk), "sk-admin-\u{2026}wxyz");
        let vk = format!("kg_{}{}", "0123456789ab", "Z".repeat(50));
        assert_eq!(redacted_form(&vk), "kg_0123456789ab\u{2026}ZZZZ");
        let nonascii = format!("\u{e9}{}\u{e9}\u{e8}\u{ea}\u{eb}", "x".repeat(11));
        assert_eq!(redacted_form(&nonascii), "\u{2026}\u{e9}\u{e8}\u{ea}\u{eb}");
    }

    #[test]
    fn known_values_longest_first() {
        let known = vec!["abcdefgh".to_string(), "abcdefghijkl".to_string(), "short".to_string()];
        assert_eq!(redact("x abcdefghijkl abcdefgh short", &known), "x \u{2026} \u{2026} short");
        let long = "0123456789abcdefXYZW".to_string();
        let known = vec![long.clone(), "0123456789".to_string()];
        assert_eq!(redact(&format!("[{long}]"), &known), "[\u{2026}XYZW]");
        let values = ordered_values(&known);
        assert_eq!(replace_values_scan(&format!("[{long}] 0123456789"), &values), "[\u{2026}XYZW] \u{2026}");
        assert_eq!(
            replace_values_scan(&format!("\u{e9}{long}\u{e9}"), &values),
            replace_values(&format!("\u{e9}{long}\u{e9}"), &values)
        );
    }
}

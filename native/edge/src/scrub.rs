//! `keyguard.gateway.upstream_errors.scrub_error_body`: an upstream error body (status >= 400)
//! is passed on only cleaned of anything key-shaped (masked fragments included); an unreadable
//! or oversized one (`None`) is replaced by a generic error. gzip and deflate bodies are
//! decompressed (bounded) for that and sent uncompressed; any other coding is unreadable.

use std::sync::OnceLock;

use regex::Regex;
use std::borrow::Cow;

use crate::errors::{error_body, redact};
use crate::headers::py_strip;
use crate::inflate::{inflate, Coding};

pub const MAX_ERROR_BODY: usize = 64 * 1024;

const REDACTED_KEY: &str = "[redacted key]";

/// `_MASKED`: an optional visible prefix, a run of stars (possibly around an ellipsis, raw or
/// JSON-escaped) and the visible last characters
fn masked_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?:[A-Za-z0-9][A-Za-z0-9_\-]{0,40})?\*{4,}(?:(?:\x{2026}|\\u2026)\**)?[A-Za-z0-9_\-]{0,16}")
            .expect("_MASKED")
    })
}

/// `_REDACTED`: what `redact` leaves of a key (the ellipsis raw or JSON-escaped; a bounded
/// prefix)
fn redacted_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"[A-Za-z0-9_\-]{0,40}(?:\x{2026}|\\u2026)[A-Za-z0-9_\-]{0,4}").expect("_REDACTED"))
}

/// `scrub_text` (with the registry holding exactly `known`): nothing left of any key, not even
/// a prefix or the last four characters. Masked forms first: a mask may hold an ellipsis.
pub fn scrub_text(text: &str, known: &[String]) -> String {
    let text = redact(text, known);
    let text = masked_re().replace_all(&text, regex::NoExpand(REDACTED_KEY));
    redacted_re().replace_all(&text, regex::NoExpand(REDACTED_KEY)).into_owned()
}

/// `_decoded`: the body as text bytes (gzip and deflate decompressed, at most
/// [`MAX_ERROR_BODY`] bytes), or None (another coding, corrupt, too large).
fn decoded<'b>(encoding: &[u8], body: &'b [u8]) -> Option<Cow<'b, [u8]>> {
    let raw = match Coding::of(encoding) {
        Coding::Identity => Cow::Borrowed(body),
        Coding::Other => return None,
        c => Cow::Owned(inflate(c, body, MAX_ERROR_BODY + 1).ok()?.data),
    };
    (raw.len() <= MAX_ERROR_BODY).then_some(raw)
}

/// `(headers to send, body)`: `headers` are the upstream's (lower-case name, value) minus any
/// the cleaning invalidates (content-encoding/length, as Python).
/// `known` are the secrets the process knows (the routes' upstream keys): value-based redaction
/// as `keyguard.domain.redaction.redact` does, before the pattern-based passes.
pub fn scrub_error_body(
    status: u16,
    headers: &[(String, Vec<u8>)],
    body: Option<&[u8]>,
    known: &[String],
) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let mut encoding: Vec<u8> = Vec::new();
    for (k, v) in headers {
        if k == "content-encoding" {
            encoding = py_strip(v).to_ascii_lowercase();
        }
    }
    let raw: Option<Cow<[u8]>> = body.and_then(|b| decoded(&encoding, b));
    let kept = headers
        .iter()
        .filter(|(k, _)| k != "content-encoding" && k != "content-length")
        .cloned();
    match raw {
        None => {
            let generic =
                error_body(status, &format!("the upstream answered {status}"), Some("upstream_error"));
            let mut out = vec![("content-type".to_string(), b"application/json".to_vec())];
            out.extend(kept.filter(|(k, _)| k != "content-type"));
            (out, generic)
        }
        Some(raw) => {
            let text = String::from_utf8_lossy(&raw);
            (kept.collect(), scrub_text(&text, known).into_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
    }

    #[test]
    fn masked_key_is_scrubbed() {
        let masked = format!("sk-PMafP{}\u{2026}{}E873", "*".repeat(5), "*".repeat(5));
        let body = format!("{{\"error\": {{\"message\": \"Incorrect API key provided: {masked}.\"}}}}");
        let headers = h(&[("content-type", b"application/json"), ("content-length", b"99")]);
        let (out, cleaned) = scrub_error_body(401, &headers, Some(body.as_bytes()), &[]);
        assert_eq!(out, h(&[("content-type", b"application/json")]));
        let cleaned = String::from_utf8(cleaned).unwrap();
        assert_eq!(
            cleaned,
            "{\"error\": {\"message\": \"Incorrect API key provided: [redacted key].\"}}"
        );
    }

    #[test]
    fn known_value_is_scrubbed() {
        let secret = "my-upstream-secret-value".to_string();
        let (_, cleaned) =
            scrub_error_body(400, &[], Some(format!("x {secret} y").as_bytes()), std::slice::from_ref(&secret));
        assert_eq!(cleaned, b"x [redacted key] y");
    }

    #[test]
    fn compressed_is_decoded() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"{\"m\": \"x sk-abcdefghijklmnopqrstuvwxyz0123 y\"}").unwrap();
        let gz = e.finish().unwrap();
        let headers = h(&[("content-encoding", b" GZIP "), ("content-length", b"9"), ("x-request-id", b"r")]);
        let (out, body) = scrub_error_body(400, &headers, Some(&gz), &[]);
        assert_eq!(out, h(&[("x-request-id", b"r")]));
        assert_eq!(body, b"{\"m\": \"x [redacted key] y\"}");
        // a truncated header: nothing came out, no error (Python's decompressobj)
        assert_eq!(scrub_error_body(400, &headers, Some(b"\x1f\x8b"), &[]).1, b"");
        // corrupt: generic
        assert_eq!(scrub_error_body(400, &headers, Some(b"\x1f\x8c"), &[]).0[0].0, "content-type");
        // more than MAX_ERROR_BODY decompressed: generic
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&vec![b'a'; MAX_ERROR_BODY + 1]).unwrap();
        let big = e.finish().unwrap();
        assert_eq!(
            scrub_error_body(400, &h(&[("content-encoding", b"gzip")]), Some(&big), &[]).1,
            error_body(400, "the upstream answered 400", Some("upstream_error"))
        );
    }

    #[test]
    fn unreadable_is_generic() {
        let headers = h(&[
            ("content-type", b"text/plain"),
            ("content-encoding", b" BR "),
            ("x-request-id", b"r"),
        ]);
        let (out, body) = scrub_error_body(503, &headers, Some(b"\x1f\x8b"), &[]);
        assert_eq!(out, h(&[("content-type", b"application/json"), ("x-request-id", b"r")]));
        assert_eq!(
            body,
            b"{\"error\": {\"message\": \"the upstream answered 503\", \"type\": \"server_error\", \
              \"code\": \"upstream_error\", \"param\": null}}"
                .to_vec()
        );
        let big = vec![b'a'; MAX_ERROR_BODY + 1];
        assert_eq!(scrub_error_body(429, &[], Some(&big), &[]).1, error_body(429, "the upstream answered 429", Some("upstream_error")));
        assert_eq!(scrub_error_body(429, &[], None, &[]).0.len(), 1);
        let identity = h(&[("content-encoding", b"Identity")]);
        assert_eq!(scrub_error_body(400, &identity, Some(b"\xffok"), &[]), (vec![], "\u{fffd}ok".as_bytes().to_vec()));
    }
}

//! The `gateway.request` audit record of a request the edge answered, rendered exactly as the
//! Python supervisor would render it (`keyguard.gateway.edge.records` -> `gateway.server.
//! audit_row` -> `vault.audit.UniformAppender` -> `domain.audit.UniformEncoder`), so that the
//! supervisor only chains and stores it.
//!
//! The steps, as the Python code takes them:
//!
//! * `RecordIntake.intake`: `datetime.fromtimestamp(t / 1e6, timezone.utc)` (CPython's
//!   `_PyTime_ObjectToTimeval`: `modf`, the fraction times 1e6 rounded half to even, carried
//!   into the seconds), `path[:512]`, `model[:200]` (an empty model is `None`),
//!   `round(latency_ms, 3)`, the outcome from the status (`ok` < 400 <= `denied` < 500 <= `error`);
//! * `gateway.server.audit_row`: actor `key:<id>` (or `anonymous` without a key id, or with an
//!   empty one), subject `"<METHOD> <path>"`, source the client address, details in the order
//!   of `REQUEST_DETAILS` (status, latency_ms, model, upstream, upstream_version);
//! * `UniformAppender.append`: `redact_cached` of actor, subject, source, outcome and of every
//!   string detail value (the action and the detail names are constants no redaction changes);
//! * `UniformEncoder.__call__`: `json.encoder.encode_basestring_ascii` for strings, `repr` for
//!   ints and floats (`float.__repr__`: shortest round-trip digits, fixed notation for
//!   1e-4 <= |x| < 1e16, else `1.5e+16` / `1e-05`), details with sorted keys, the time as
//!   `datetime.isoformat()` (no fraction when the microsecond is 0, `+00:00`).
//!
//! `render_request` answers `None` (the supervisor renders the record itself) where exact
//! parity is not certain: a known secret that is part of the action or of a detail name
//! (`UniformAppender` redacts those when it is built, under the secrets known then), a
//! latency that is not finite (Python refuses to store it), a time
//! before 1970 or at or beyond 2**53 microseconds (where `t / 1e6` or the calendar would need
//! more care than the edge ever needs).

use crate::errors::{py_json_string, redact, MIN_VALUE_LENGTH};

/// One request, as the edge's `Record` carries it.
#[derive(Debug, Clone)]
pub struct RequestAudit<'a> {
    /// unix microseconds
    pub time_us: i64,
    pub key_id: Option<&'a str>,
    pub client_ip: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub model: Option<&'a str>,
    pub status: u16,
    pub latency_ms: f64,
    pub upstream: Option<&'a str>,
    pub version: Option<i64>,
}

/// `gateway.server.audit_row`'s action (as `VaultAuditSink` appends it).
pub const ACTION: &str = "gateway.request";
/// `gateway.server.REQUEST_DETAILS`.
pub const DETAIL_NAMES: [&str; 5] = ["status", "latency_ms", "model", "upstream", "upstream_version"];
/// `RecordIntake.intake`: `str(rec["path"])[:512]`.
pub const MAX_PATH_CHARS: usize = 512;
/// `RecordIntake.intake`: `model[:200]`.
pub const MAX_MODEL_CHARS: usize = 200;
/// times from 2**53 microseconds on (year 2255) are not rendered (`t / 1e6` loses exactness
/// in the integer-to-float step beyond it)
const MAX_TIME_US: i64 = 1 << 53;

/// `(canonical content, time ISO text, details JSON)` as `UniformEncoder.__call__` returns them
/// for this request (after the same truncation and redaction), or `None` when exact parity
/// cannot be guaranteed (the supervisor then renders the record itself). `known`: secrets to
/// redact by value (the routes' upstream keys).
pub fn render_request(rec: &RequestAudit<'_>, known: &[String]) -> Option<(String, String, String)> {
    let [content, when, det, ..] = render_row(rec, known)?;
    Some((content, when, det))
}

/// The whole row as `UniformAppender` stores it: `[content, time ISO, details JSON, actor,
/// subject, source, outcome]`, the four texts redacted as `UniformAppender.append` redacts
/// them (what [`render_request`]'s content holds), or `None` where `render_request` is `None`.
pub fn render_row(rec: &RequestAudit<'_>, known: &[String]) -> Option<[String; 7]> {
    if !rec.latency_ms.is_finite() {
        return None;
    }
    let when = iso_time(rec.time_us)?;
    let latency = round3(rec.latency_ms)?;
    let values = KnownValues::new(known);
    if values.touches_constants() {
        return None;
    }

    // details, in json's sort_keys order: latency_ms, model, status, upstream, upstream_version
    let mut det: Vec<u8> = Vec::with_capacity(160);
    det.extend_from_slice(b"{\"latency_ms\":");
    py_float_repr(&mut det, latency);
    det.extend_from_slice(b",\"model\":");
    match rec.model.filter(|m| !m.is_empty()) {
        Some(m) => py_json_string(&mut det, &values.redact(take_chars(m, MAX_MODEL_CHARS), known)),
        None => det.extend_from_slice(b"null"),
    }
    det.extend_from_slice(b",\"status\":");
    det.extend_from_slice(rec.status.to_string().as_bytes());
    det.extend_from_slice(b",\"upstream\":");
    match rec.upstream {
        Some(u) => py_json_string(&mut det, &values.redact(u, known)),
        None => det.extend_from_slice(b"null"),
    }
    det.extend_from_slice(b",\"upstream_version\":");
    match rec.version {
        Some(v) => det.extend_from_slice(v.to_string().as_bytes()),
        None => det.extend_from_slice(b"null"),
    }
    det.push(b'}');

    let actor = match rec.key_id.filter(|k| !k.is_empty()) {
        Some(k) => values.redact(&format!("key:{k}"), known),
        None => values.redact("anonymous", known), // a known value may be part of it
    };
    let subject = {
        let path = take_chars(rec.path, MAX_PATH_CHARS);
        let mut s = String::with_capacity(rec.method.len() + 1 + path.len());
        s.push_str(rec.method);
        s.push(' ');
        s.push_str(path);
        values.redact(&s, known)
    };
    let source = values.redact(rec.client_ip, known);
    // too short for any key shape or any redactable value: redaction leaves them as they are
    let outcome = match rec.status {
        0..=399 => "ok",
        400..=499 => "denied",
        _ => "error",
    };

    let mut out: Vec<u8> = Vec::with_capacity(det.len() + subject.len() + 192);
    out.extend_from_slice(b"{\"action\":");
    py_json_string(&mut out, ACTION);
    out.extend_from_slice(b",\"actor\":");
    py_json_string(&mut out, &actor);
    out.extend_from_slice(b",\"details\":");
    out.extend_from_slice(&det);
    out.extend_from_slice(b",\"outcome\":");
    py_json_string(&mut out, outcome);
    out.extend_from_slice(b",\"source\":");
    py_json_string(&mut out, &source);
    out.extend_from_slice(b",\"subject\":");
    py_json_string(&mut out, &subject);
    out.extend_from_slice(b",\"time\":");
    py_json_string(&mut out, &when);
    out.extend_from_slice(b",\"v\":1}");
    // ensure_ascii: both are ASCII
    Some([
        String::from_utf8(out).ok()?,
        when,
        String::from_utf8(det).ok()?,
        actor,
        subject,
        source,
        outcome.to_string(),
    ])
}

/// The known values redaction acts on (at least `MIN_VALUE_LENGTH` characters), for a quick
/// "nothing to redact" test before the regex passes of [`redact`].
struct KnownValues<'k> {
    values: Vec<&'k str>,
}

impl<'k> KnownValues<'k> {
    fn new(known: &'k [String]) -> Self {
        let values = known
            .iter()
            .filter(|v| v.len() >= MIN_VALUE_LENGTH && v.chars().count() >= MIN_VALUE_LENGTH)
            .map(String::as_str)
            .collect();
        KnownValues { values }
    }

    /// Whether a known value is part of the action or of a detail name: `UniformAppender`
    /// redacts those once, when it is built, under the secrets registered then (the
    /// supervisor's business).
    fn touches_constants(&self) -> bool {
        self.values.iter().any(|v| {
            std::iter::once(ACTION).chain(DETAIL_NAMES).any(|c| c.contains(*v))
        })
    }

    /// `redact_cached(text)`: the text itself when it contains no known value and nothing that
    /// can start a key shape (`sk-`, `kg_`, `kga_`), else [`redact`].
    fn redact(&self, text: &str, known: &[String]) -> String {
        let may_match = text.contains("sk-")
            || text.contains("kg")
            || self.values.iter().any(|v| text.contains(v));
        if may_match {
            redact(text, known)
        } else {
            text.to_string()
        }
    }
}

/// Python's `s[:n]` (characters).
fn take_chars(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `round(x, 3)` for a finite float: the exact binary value rounded half to even at the third
/// decimal (Rust's `{:.3}` formats exactly that), read back as the nearest float (both are
/// what CPython's `double_round` does through `_Py_dg_dtoa` mode 3 and `_Py_dg_strtod`).
fn round3(x: f64) -> Option<f64> {
    if !x.is_finite() {
        return None;
    }
    if x.abs() >= 4_503_599_627_370_496.0 {
        return Some(x); // 2**52 and beyond: no fraction
    }
    format!("{x:.3}").parse::<f64>().ok()
}

/// `float.__repr__` of a finite float, appended to `out`.
pub fn py_float_repr(out: &mut Vec<u8>, x: f64) {
    // {:e}: the shortest round-trip digits (as dtoa mode 0), "d.ddde-7" / "-1e16"
    let e = format!("{x:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = digits.as_bytes();
    let decpt = exp + 1; // value = 0.DIGITS * 10**decpt
    if neg {
        out.push(b'-');
    }
    if decpt <= -4 || decpt > 16 {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = decpt - 1;
        out.push(b'e');
        out.push(if e < 0 { b'-' } else { b'+' });
        out.extend_from_slice(format!("{:02}", e.unsigned_abs()).as_bytes());
    } else if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', decpt.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    } else {
        let d = decpt as usize;
        if d < digits.len() {
            out.extend_from_slice(&digits[..d]);
            out.push(b'.');
            out.extend_from_slice(&digits[d..]);
        } else {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', d - digits.len()));
            out.extend_from_slice(b".0");
        }
    }
}

/// `datetime.fromtimestamp(t_us / 1e6, timezone.utc).isoformat()`, for 0 <= t_us < 2**53.
fn iso_time(t_us: i64) -> Option<String> {
    if !(0..MAX_TIME_US).contains(&t_us) {
        return None;
    }
    let d = t_us as f64 / 1e6;
    // _PyTime_DoubleToDenominator with _PyTime_ROUND_HALF_EVEN
    let mut intpart = d.trunc();
    let mut frac = ((d - intpart) * 1e6).round_ties_even();
    if frac >= 1e6 {
        frac -= 1e6;
        intpart += 1.0;
    } else if frac < 0.0 {
        frac += 1e6;
        intpart -= 1.0;
    }
    let secs = intpart as i64;
    let us = frac as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, dd) = civil_from_days(days);
    if !(1..=9999).contains(&y) {
        return None;
    }
    let mut s = format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if us != 0 {
        s.push_str(&format!(".{us:06}"));
    }
    s.push_str("+00:00");
    Some(s)
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(x: f64) -> String {
        let mut v = Vec::new();
        py_float_repr(&mut v, x);
        String::from_utf8(v).unwrap()
    }

    fn rec<'a>() -> RequestAudit<'a> {
        RequestAudit {
            time_us: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
            key_id: Some("abcdefghijkl"),
            client_ip: "10.0.0.1",
            method: "POST",
            path: "/v1/chat/completions",
            model: Some("gpt-4o"),
            status: 200,
            latency_ms: 12.3456,
            upstream: Some("openai"),
            version: Some(3),
        }
    }

    #[test]
    fn float_repr_is_pythons() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (12.346, "12.346"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1.2345678901234567e16, "1.2345678901234568e+16"),
            (9_999_999_999_999_998.0, "9999999999999998.0"),
            (123_456_789.123, "123456789.123"),
            (1e22, "1e+22"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (100.0, "100.0"),
        ];
        for (x, want) in cases {
            assert_eq!(repr(x), want, "{x:e}");
        }
    }

    #[test]
    fn round3_is_half_even_on_the_exact_value() {
        assert_eq!(round3(0.0625), Some(0.062));
        assert_eq!(round3(2.675), Some(2.675));
        assert_eq!(round3(1.0005), Some(1.0)); // 1.0005 is slightly below in binary
        assert_eq!(round3(0.0015), Some(0.002));
        assert_eq!(round3(1e-7), Some(0.0));
        assert!(round3(-1e-4).unwrap().is_sign_negative());
        assert_eq!(round3(1e300), Some(1e300));
        assert_eq!(round3(f64::NAN), None);
    }

    #[test]
    fn times_are_isoformat() {
        assert_eq!(iso_time(0).unwrap(), "1970-01-01T00:00:00+00:00");
        assert_eq!(iso_time(1_767_225_600_000_000).unwrap(), "2026-01-01T00:00:00+00:00");
        assert_eq!(iso_time(1_767_225_600_000_001).unwrap(), "2026-01-01T00:00:00.000001+00:00");
        assert_eq!(iso_time(951_825_600_500_000).unwrap(), "2000-02-29T12:00:00.500000+00:00");
        assert_eq!(iso_time(-1), None);
        assert_eq!(iso_time(1 << 53), None);
    }

    #[test]
    fn renders_an_ordinary_record() {
        let (content, when, det) = render_request(&rec(), &[]).unwrap();
        assert_eq!(when, "2026-01-01T00:00:00+00:00");
        assert_eq!(
            det,
            r#"{"latency_ms":12.346,"model":"gpt-4o","status":200,"upstream":"openai","upstream_version":3}"#
        );
        assert_eq!(
            content,
            format!(
                r#"{{"action":"gateway.request","actor":"key:abcdefghijkl","details":{det},"outcome":"ok","source":"10.0.0.1","subject":"POST /v1/chat/completions","time":"2026-01-01T00:00:00+00:00","v":1}}"#
            )
        );
    }

    #[test]
    fn empty_fields_outcomes_and_fallbacks() {
        let mut r = rec();
        r.key_id = Some("");
        r.model = Some("");
        r.upstream = None;
        r.version = None;
        r.status = 404;
        let (content, _, det) = render_request(&r, &[]).unwrap();
        assert!(content.contains(r#""actor":"anonymous""#));
        assert!(content.contains(r#""outcome":"denied""#));
        assert!(det.contains(r#""model":null"#) && det.contains(r#""upstream_version":null"#));
        r.status = 502;
        assert!(render_request(&r, &[]).unwrap().0.contains(r#""outcome":"error""#));
        r.latency_ms = f64::INFINITY;
        assert!(render_request(&r, &[]).is_none());
    }

    #[test]
    fn known_values_in_constants() {
        let mut r = rec();
        r.key_id = None;
        let (content, _, _) = render_request(&r, &["anonymou".to_string()]).unwrap();
        assert!(content.contains("\"actor\":\"\\u2026s\""), "{content}");
        assert!(render_request(&r, &["upstream".to_string()]).is_none());
        assert!(render_request(&r, &["y.reques".to_string()]).is_none());
        assert!(render_request(&r, &["upstreamX".to_string()]).is_some());
    }

    #[test]
    fn truncates_escapes_and_redacts() {
        let secret = format!("sk-proj-{}", "Ab3".repeat(20));
        let path = format!("/v1/x/{secret}/\u{e9}{}", "y".repeat(600));
        let model = format!("m\"\\{}", "\u{1f600}".repeat(300));
        let mut r = rec();
        r.path = &path;
        r.model = Some(&model);
        r.upstream = Some("upstream-secret-value");
        let known = vec!["upstream-secret-value".to_string()];
        let (content, _, det) = render_request(&r, &known).unwrap();
        assert!(!content.contains(&secret) && content.contains("sk-proj-\\u2026"));
        assert!(det.contains(r#""upstream":"\u2026alue""#), "{det}");
        assert!(det.contains(r#""model":"m\"\\\ud83d\ude00"#));
        assert_eq!(det.matches("\\ud83d\\ude00").count(), 197);
        assert!(content.is_ascii());
    }
}

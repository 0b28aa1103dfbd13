//! `probe_wire`: the wire-level ports of `kgpolicy` (errors, headers, scrub, sniff, usage)
//! behind a line protocol, for the differential tests in `tests/edge/test_wire_parity.py`.
//!
//! One JSON object per input line, `{"fn": NAME, "args": [...]}`, one JSON line answered per
//! input line: `{"ok": RESULT}`, or `{"error": TEXT}` for a malformed request.
//!
//! Bytes travel as latin-1 strings: each character U+0000..U+00FF stands for one byte (Python:
//! `data.decode("latin-1")` / `text.encode("latin-1")`). Text (`message`, `known`) is plain JSON.
//!
//! | fn                          | args                                   | result                     |
//! |-----------------------------|----------------------------------------|----------------------------|
//! | `error_body`                | status, message, code or null[, known] | body bytes                 |
//! | `redact`                    | text, known                            | text                       |
//! | `redacted_form`             | value                                  | text                       |
//! | `scrub_text`                | text, known                            | text                       |
//! | `upstream_request_headers`  | [[name, value bytes], ...]             | [[name, value bytes], ...] |
//! | `client_response_headers`   | [[name, value bytes], ...]             | [[name, value bytes], ...] |
//! | `readable_encodings`        | value bytes                            | value bytes                |
//! | `scrub_error_body`          | status, headers, body bytes or null, known | [headers, body bytes]  |
//! | `sniff_json`                | body bytes                             | {kind, model, stream}      |
//! | `usage`                     | [chunk, ...][, content-encoding bytes] | usage JSON text or null    |
//!
//! `sniff_json`'s kind is `not_json`, `not_object`, `ambiguous` or `object`. A `usage` chunk is
//! bytes, or `{"fill": bytes, "count": n}` for `bytes * n` (big bodies without big lines).

use std::io::{BufRead, Write};

use serde_json::{json, Value};

use kgpolicy::sniff::Sniff;
use kgpolicy::{errors, headers, scrub, sniff, usage};

type Res = Result<Value, String>;

fn bytes(v: &Value) -> Result<Vec<u8>, String> {
    let s = v.as_str().ok_or("bytes must be a latin-1 string")?;
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| format!("not latin-1: U+{:04X}", u32::from(c))))
        .collect()
}

fn latin1(b: &[u8]) -> Value {
    Value::String(b.iter().map(|&b| char::from(b)).collect())
}

fn text(v: &Value) -> Result<String, String> {
    v.as_str().map(str::to_string).ok_or_else(|| "expected a string".to_string())
}

fn status(v: &Value) -> Result<u16, String> {
    v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| "expected a status".to_string())
}

fn strings(v: Option<&Value>) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(text).collect(),
        Some(_) => Err("expected a list of strings".to_string()),
    }
}

fn header_list(v: &Value) -> Result<Vec<(String, Vec<u8>)>, String> {
    let items = v.as_array().ok_or("headers must be a list")?;
    items
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([k, v]) => Ok((text(k)?, bytes(v)?)),
            _ => Err("a header is [name, value]".to_string()),
        })
        .collect()
}

fn header_json<K: AsRef<str>, V: AsRef<[u8]>>(headers: &[(K, V)]) -> Value {
    Value::Array(headers.iter().map(|(k, v)| json!([k.as_ref(), latin1(v.as_ref())])).collect())
}

fn filter_headers(arg: &Value, request: bool) -> Res {
    let owned = header_list(arg)?;
    let borrowed: Vec<(&str, &[u8])> = owned.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    Ok(if request {
        header_json(&headers::upstream_request_headers(&borrowed))
    } else {
        header_json(&headers::client_response_headers(&borrowed))
    })
}

fn sniff_result(s: Sniff) -> Value {
    match s {
        Sniff::NotJson => json!({"kind": "not_json"}),
        Sniff::NotObject => json!({"kind": "not_object"}),
        Sniff::Ambiguous => json!({"kind": "ambiguous"}),
        Sniff::Object { model, stream } => json!({"kind": "object", "model": model, "stream": stream}),
    }
}

fn usage_of(chunks: &Value, encoding: Option<&Value>) -> Res {
    let mut copy = match encoding {
        None | Some(Value::Null) => usage::UsageCopy::new(),
        Some(e) => usage::UsageCopy::with_encoding(&bytes(e)?),
    };
    for chunk in chunks.as_array().ok_or("chunks must be a list")? {
        match chunk {
            Value::Object(fill) => {
                let unit = bytes(fill.get("fill").ok_or("fill")?)?;
                let count = fill.get("count").and_then(Value::as_u64).ok_or("count")?;
                let count = usize::try_from(count).map_err(|_| "count")?;
                copy.feed(&unit.repeat(count));
            }
            other => copy.feed(&bytes(other)?),
        }
    }
    Ok(copy.finish().map_or(Value::Null, Value::String))
}

fn call(name: &str, args: &[Value]) -> Res {
    let arg = |i: usize| args.get(i).ok_or_else(|| format!("{name}: argument {i} missing"));
    match name {
        "error_body" => {
            let code = match arg(2)? {
                Value::Null => None,
                v => Some(text(v)?),
            };
            let known = strings(args.get(3))?;
            let body = errors::error_body_known(status(arg(0)?)?, &text(arg(1)?)?, code.as_deref(), &known);
            if known.is_empty() {
                // the public entry point, which must agree
                let plain = errors::error_body(status(arg(0)?)?, &text(arg(1)?)?, code.as_deref());
                if plain != body {
                    return Err("error_body and error_body_known disagree".to_string());
                }
            }
            Ok(latin1(&body))
        }
        "redact" => Ok(Value::String(errors::redact(&text(arg(0)?)?, &strings(Some(arg(1)?))?))),
        "redacted_form" => Ok(Value::String(errors::redacted_form(&text(arg(0)?)?))),
        "scrub_text" => Ok(Value::String(scrub::scrub_text(&text(arg(0)?)?, &strings(Some(arg(1)?))?))),
        "upstream_request_headers" => filter_headers(arg(0)?, true),
        "client_response_headers" => filter_headers(arg(0)?, false),
        "readable_encodings" => Ok(latin1(&headers::readable_encodings(&bytes(arg(0)?)?))),
        "scrub_error_body" => {
            let body = match arg(2)? {
                Value::Null => None,
                v => Some(bytes(v)?),
            };
            let known = strings(Some(arg(3)?))?;
            let (h, b) = scrub::scrub_error_body(status(arg(0)?)?, &header_list(arg(1)?)?, body.as_deref(), &known);
            Ok(json!([header_json(&h), latin1(&b)]))
        }
        "sniff_json" => Ok(sniff_result(sniff::sniff_json(&bytes(arg(0)?)?))),
        "usage" => usage_of(arg(0)?, args.get(1)),
        _ => Err(format!("unknown fn {name:?}")),
    }
}

fn answer(line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"error": format!("bad request line: {e}")}),
    };
    let name = request.get("fn").and_then(Value::as_str).unwrap_or("");
    let args = request.get("args").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    match call(name, args) {
        Ok(v) => json!({"ok": v}),
        Err(e) => json!({"error": e}),
    }
}

fn main() {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let reply = answer(&line);
        if serde_json::to_writer(&mut out, &reply).is_err()
            || out.write_all(b"\n").is_err()
            || out.flush().is_err()
        {
            break;
        }
    }
}

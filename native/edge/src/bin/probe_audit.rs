//! `probe_audit`: the audit-rendering and pricing ports of `kgpolicy` (`audit`, `pricing`)
//! behind a line protocol, for the differential tests in `tests/edge/test_audit_parity.py`.
//!
//! One JSON object per input line, `{"fn": NAME, "args": [...]}`, one JSON line answered per
//! input line: `{"ok": RESULT}`, or `{"error": TEXT}` for a malformed request.
//!
//! | fn       | args                                          | result                                  |
//! |----------|-----------------------------------------------|-----------------------------------------|
//! | `render` | record, known                                 | [content, time ISO, details, actor, subject, source, outcome] or null |
//! | `prices` | table, [[model or null, in, out, cached], ...] | {"costs": [n, ...]} or {"err": text}    |
//! | `usage`  | usage JSON text                               | [input, output, cached, total] or null  |
//! | `bench`  | record, known, n                              | nanoseconds per render (n renders)      |
//!
//! A record is the edge's `Record` fields: `{"t", "key_id", "client_ip", "method", "path",
//! "model", "status", "latency_ms", "upstream", "version"}` (`key_id`, `model`, `upstream`,
//! `version` may be null or absent; `latency_ms` may be given as the text of a float, read
//! exactly). A price table given as JSON text goes to `PriceTable::from_json_text`, as a JSON
//! value to `PriceTable::from_json`.

use std::io::{BufRead, Write};
use std::time::Instant;

use serde_json::{json, Value};

use kgpolicy::audit::{render_request, render_row, RequestAudit};
use kgpolicy::pricing::{usage_from_response, PriceTable};

type Res = Result<Value, String>;

fn arg(args: &[Value], i: usize) -> Result<&Value, String> {
    args.get(i).ok_or_else(|| format!("missing argument {i}"))
}

fn opt_str<'a>(rec: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match rec.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name}: expected a string or null")),
    }
}

fn req_str<'a>(rec: &'a Value, name: &str) -> Result<&'a str, String> {
    opt_str(rec, name)?.ok_or_else(|| format!("{name}: missing"))
}

fn record(rec: &Value) -> Result<RequestAudit<'_>, String> {
    Ok(RequestAudit {
        time_us: rec.get("t").and_then(Value::as_i64).ok_or("t: expected an integer")?,
        key_id: opt_str(rec, "key_id")?,
        client_ip: req_str(rec, "client_ip")?,
        method: req_str(rec, "method")?,
        path: req_str(rec, "path")?,
        model: opt_str(rec, "model")?,
        status: rec
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .ok_or("status: expected a status")?,
        // as text (Python's repr) for an exact float: serde_json may read a float 1 ulp off
        latency_ms: match rec.get("latency_ms") {
            Some(Value::String(s)) => s.parse::<f64>().map_err(|e| format!("latency_ms: {e}"))?,
            Some(v) => v.as_f64().ok_or("latency_ms: expected a number")?,
            None => return Err("latency_ms: missing".to_string()),
        },
        upstream: opt_str(rec, "upstream")?,
        version: match rec.get("version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or("version: expected an integer")?),
        },
    })
}

fn strings(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| "known: strings".to_string()))
            .collect(),
        _ => Err("known: expected a list".to_string()),
    }
}

fn render(args: &[Value]) -> Res {
    let rec = record(arg(args, 0)?)?;
    let known = strings(arg(args, 1)?)?;
    let row = render_row(&rec, &known);
    // the short form must agree with the row
    let short = render_request(&rec, &known);
    if short.as_ref().map(|(c, w, d)| [c, w, d]) != row.as_ref().map(|r| [&r[0], &r[1], &r[2]]) {
        return Err("render_request and render_row disagree".to_string());
    }
    Ok(match row {
        Some(row) => json!(row),
        None => Value::Null,
    })
}

fn prices(args: &[Value]) -> Res {
    // a table as JSON text: from_json_text; as a JSON value: from_json
    let table = arg(args, 0)?;
    let table = match table.as_str() {
        Some(text) => PriceTable::from_json_text(text),
        None => PriceTable::from_json(table),
    };
    let table = match table {
        Ok(t) => t,
        Err(e) => return Ok(json!({ "err": e })),
    };
    let queries = arg(args, 1)?.as_array().ok_or("queries: expected a list")?;
    let mut costs = Vec::with_capacity(queries.len());
    for q in queries {
        let q = q.as_array().filter(|q| q.len() == 4).ok_or("query: [model, in, out, cached]")?;
        let model = match &q[0] {
            Value::Null => None,
            Value::String(s) => Some(s.as_str()),
            _ => return Err("model: string or null".to_string()),
        };
        let n = |i: usize| q[i].as_u64().ok_or_else(|| "tokens: non-negative integers".to_string());
        costs.push(table.cost_nano(model, n(1)?, n(2)?, n(3)?));
    }
    Ok(json!({ "costs": costs }))
}

fn usage(args: &[Value]) -> Res {
    let text = arg(args, 0)?.as_str().ok_or("usage: expected JSON text")?;
    let value: Value = serde_json::from_str(text).map_err(|e| format!("usage: {e}"))?;
    Ok(match usage_from_response(&value) {
        Some(u) => json!([u.input, u.output, u.cached, u.total]),
        None => Value::Null,
    })
}

fn bench(args: &[Value]) -> Res {
    let rec = record(arg(args, 0)?)?;
    let known = strings(arg(args, 1)?)?;
    let n = arg(args, 2)?.as_u64().ok_or("n: expected a count")?.max(1);
    let start = Instant::now();
    let mut total = 0usize;
    for _ in 0..n {
        if let Some((content, _, _)) = render_request(std::hint::black_box(&rec), &known) {
            total += content.len();
        }
    }
    let elapsed = start.elapsed();
    std::hint::black_box(total);
    Ok(json!(elapsed.as_nanos() as f64 / n as f64))
}

fn call(line: &str) -> Res {
    let req: Value = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
    let name = req.get("fn").and_then(Value::as_str).ok_or("missing fn")?;
    let args = req.get("args").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    match name {
        "render" => render(args),
        "prices" => prices(args),
        "usage" => usage(args),
        "bench" => bench(args),
        other => Err(format!("unknown fn {other:?}")),
    }
}

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let reply = match call(&line) {
            Ok(v) => json!({ "ok": v }),
            Err(e) => json!({ "error": e }),
        };
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}

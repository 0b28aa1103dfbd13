//! Differential-test probe for the `kgpolicy` ports: reads JSON lines `{"fn": name, "args": [..]}`
//! on stdin and writes one JSON line per input: `{"ok": result}` or `{"error": message}`.
//! Bytes travel as hex strings; IP addresses as text. Stateful objects (throttle, limiter) are
//! driven by a whole sequence of operations in one call. See tests/edge/test_policy_parity.py.

use kgpolicy::glob::Matcher;
use kgpolicy::ip::{normalise, ClientIpResolver, Networks};
use kgpolicy::keys::{bearer_token, digest_matches, parse_virtual_key, Verifier};
use kgpolicy::limits::{Lease, RateLimiter};
use kgpolicy::paths::{check_path, check_query, clean_path, split_target, upstream_target};
use kgpolicy::policy::KeyPolicy;
use kgpolicy::throttle::FailedAuthThrottle;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::net::IpAddr;

type R = Result<Value, String>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(v: &Value) -> Result<Vec<u8>, String> {
    let s = v.as_str().ok_or("expected a hex string")?;
    if s.len() % 2 != 0 {
        return Err("odd hex".into());
    }
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())).collect()
}

fn unhex_list(v: &Value) -> Result<Vec<Vec<u8>>, String> {
    v.as_array().ok_or("expected a list")?.iter().map(unhex).collect()
}

fn string(v: &Value) -> Result<String, String> {
    v.as_str().map(str::to_string).ok_or_else(|| "expected a string".into())
}

fn strings(v: &Value) -> Result<Vec<String>, String> {
    v.as_array().ok_or("expected a list")?.iter().map(string).collect()
}

/// A number, or its decimal text (parsed with correct rounding: Python's `repr` of a float
/// comes back as the very same double).
fn f64_of(v: &Value) -> Result<f64, String> {
    if let Some(s) = v.as_str() {
        return s.parse().map_err(|e: std::num::ParseFloatError| e.to_string());
    }
    v.as_f64().ok_or_else(|| "expected a number".into())
}

fn opt_u32(v: &Value) -> Result<Option<u32>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let n = v.as_u64().ok_or("expected an integer")?;
    u32::try_from(n).map(Some).map_err(|e| e.to_string())
}

fn ip_of(v: &Value) -> Result<IpAddr, String> {
    string(v)?.parse().map_err(|e: std::net::AddrParseError| e.to_string())
}

fn arg(args: &[Value], i: usize) -> Result<&Value, String> {
    args.get(i).ok_or_else(|| format!("missing argument {i}"))
}

fn call(name: &str, a: &[Value]) -> R {
    match name {
        "parse_virtual_key" => {
            let token = string(arg(a, 0)?)?;
            Ok(match parse_virtual_key(&token) {
                Some(p) => json!([p.key_id, p.secret]),
                None => Value::Null,
            })
        }
        "bearer_token" => {
            let values = unhex_list(arg(a, 0)?)?;
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            Ok(bearer_token(&refs).map_or(Value::Null, |t| json!(t)))
        }
        "digest" => {
            let key = unhex(arg(a, 0)?)?;
            Ok(json!(hex(&Verifier::new(&key).digest(&string(arg(a, 1)?)?))))
        }
        "digest_matches" => {
            let mut stored = Vec::new();
            for e in arg(a, 0)?.as_array().ok_or("expected a list")? {
                let d: [u8; 32] = unhex(&e[0])?.try_into().map_err(|_| "digest length")?;
                let until = if e[1].is_null() { None } else { Some(f64_of(&e[1])?) };
                stored.push((d, until));
            }
            let d: [u8; 32] = unhex(arg(a, 1)?)?.try_into().map_err(|_| "digest length")?;
            Ok(json!(digest_matches(&stored, &d, f64_of(arg(a, 2)?)?)))
        }
        "matcher" => {
            // [patterns, [values]] -> error, or [allow_all, [allows...]]
            let m = Matcher::build(&strings(arg(a, 0)?)?)?;
            let values = strings(arg(a, 1)?)?;
            Ok(json!([m.allow_all(), values.iter().map(|v| m.allows(v)).collect::<Vec<_>>()]))
        }
        "networks" => {
            let n = Networks::parse(&strings(arg(a, 0)?)?)?;
            let ips: Vec<IpAddr> = arg(a, 1)?.as_array().ok_or("list")?.iter().map(ip_of).collect::<Result<_, _>>()?;
            Ok(json!([n.is_empty(), ips.iter().map(|&ip| n.contains(ip)).collect::<Vec<_>>()]))
        }
        "normalise" => Ok(json!(normalise(ip_of(arg(a, 0)?)?).to_string())),
        "resolve" => {
            // [trusted, peer, xff hex list, forwarded hex list] -> ip text or null (BadForwarding)
            let r = ClientIpResolver::new(&strings(arg(a, 0)?)?)?;
            let peer = ip_of(arg(a, 1)?)?;
            let xff = unhex_list(arg(a, 2)?)?;
            let fwd = unhex_list(arg(a, 3)?)?;
            let xr: Vec<&[u8]> = xff.iter().map(Vec::as_slice).collect();
            let fr: Vec<&[u8]> = fwd.iter().map(Vec::as_slice).collect();
            Ok(match r.resolve(peer, &xr, &fr) {
                Ok(ip) => json!(ip.to_string()),
                Err(()) => Value::Null,
            })
        }
        "split_target" => {
            let t = unhex(arg(a, 0)?)?;
            Ok(match split_target(&t) {
                Ok((p, q)) => json!([hex(p), hex(q)]),
                Err(()) => Value::Null,
            })
        }
        "check_path" => {
            let p = unhex(arg(a, 0)?)?;
            Ok(check_path(&p).map_or(Value::Null, |s| json!(s)))
        }
        "check_query" => Ok(json!(check_query(&unhex(arg(a, 0)?)?).is_ok())),
        "clean_path" => Ok(json!(clean_path(&string(arg(a, 0)?)?))),
        "upstream_target" => {
            let q = unhex(arg(a, 2)?)?;
            Ok(json!(upstream_target(&string(arg(a, 0)?)?, &string(arg(a, 1)?)?, &q)))
        }
        "policy" => {
            // [models, endpoints, cidrs, [[ip, path, model|null]...]] -> error or [bool...]
            let p = KeyPolicy::compile(&strings(arg(a, 0)?)?, &strings(arg(a, 1)?)?, &strings(arg(a, 2)?)?)?;
            let mut out = Vec::new();
            for q in arg(a, 3)?.as_array().ok_or("list")? {
                let model = if q[2].is_null() { None } else { Some(string(&q[2])?) };
                out.push(p.allows(ip_of(&q[0])?, &string(&q[1])?, model.as_deref()));
            }
            Ok(json!(out))
        }
        "throttle" => {
            // [burst, rate, max_sources, [["fail"|"retry", ip, now]...]] -> [null | seconds...]
            let burst = u32::try_from(arg(a, 0)?.as_u64().ok_or("burst")?).map_err(|e| e.to_string())?;
            let rate = f64_of(arg(a, 1)?)?;
            let max = arg(a, 2)?.as_u64().ok_or("max_sources")? as usize;
            let t = FailedAuthThrottle::with_max_sources(burst, rate, max);
            let mut out = Vec::new();
            for op in arg(a, 3)?.as_array().ok_or("list")? {
                let ip = ip_of(&op[1])?;
                let now = f64_of(&op[2])?;
                match op[0].as_str() {
                    Some("fail") => {
                        t.failure(ip, now);
                        out.push(Value::Null);
                    }
                    Some("retry") => out.push(json!(t.retry_after(ip, now))),
                    _ => return Err("unknown throttle op".into()),
                }
            }
            Ok(json!(out))
        }
        "limiter" => {
            // [[["admit", key, rpm|null, max_concurrency|null, now] | ["release", n]]...]
            // -> per op: admit: ["lease", n] (n counts leases from 0) or ["denied", msg, code,
            // retry_after]; release: null
            let l = RateLimiter::new();
            let mut leases: Vec<Option<Lease>> = Vec::new();
            let mut out = Vec::new();
            for op in arg(a, 0)?.as_array().ok_or("list")? {
                match op[0].as_str() {
                    Some("admit") => {
                        let key = string(&op[1])?;
                        match l.admit(&key, opt_u32(&op[2])?, opt_u32(&op[3])?, f64_of(&op[4])?) {
                            Ok(lease) => {
                                out.push(json!(["lease", leases.len()]));
                                leases.push(Some(lease));
                            }
                            Err(d) => out.push(json!(["denied", d.message, d.code, d.retry_after])),
                        }
                    }
                    Some("release") => {
                        let n = op[1].as_u64().ok_or("lease number")? as usize;
                        if let Some(lease) = leases.get_mut(n).and_then(Option::take) {
                            l.release(lease);
                        }
                        out.push(Value::Null);
                    }
                    _ => return Err("unknown limiter op".into()),
                }
            }
            Ok(json!(out))
        }
        _ => Err(format!("unknown function {name:?}")),
    }
}

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Err(e) => json!({"error": format!("bad request: {e}")}),
            Ok(req) => {
                let name = req.get("fn").and_then(Value::as_str).unwrap_or("");
                let args = req.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
                match call(name, &args) {
                    Ok(v) => json!({"ok": v}),
                    Err(e) => json!({"error": e}),
                }
            }
        };
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}

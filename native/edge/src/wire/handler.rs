//! The per-request pipeline: decide (native or core), forward, answer, record.

use super::body::{BoxError, EdgeBody, Guard};
use super::net::{Clients, ConnectError};
use super::server::secs;
use super::state::Compiled;
use super::{unix_now, Global};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use hyper::body::HttpBody;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Body, Method, Request, Response, StatusCode, Uri, Version};
use kgpolicy::errors::error_body;
use kgpolicy::headers::Filter;
use kgpolicy::protocol::{Record, Route};
use kgpolicy::sniff::Sniff;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const EDGE_PREFIX: &str = "keyguard-edge-";
const EDGE_PEER: &str = "keyguard-edge-peer";
const EDGE_ADMITTED: &str = "keyguard-edge-admitted";
const JSON: &str = "application/json";

/// What goes to the core as the request body.
enum CoreBody {
    Orig(Body),
    Bytes(Bytes),
    /// what was read (over the limit) before the rest
    Chain(Bytes, Body),
}

enum ReqBody {
    Empty,
    Buffered(Bytes),
    Stream(Body),
}

pub async fn handle(
    g: Arc<Global>,
    clients: Arc<Clients>,
    peer: SocketAddr,
    guard: Guard,
    req: Request<Body>,
) -> Result<Response<EdgeBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    if let Some((status, message)) = wire_reject(&g, &parts) {
        let mut resp = error_response(status, message, code_for(status), guard);
        resp.headers_mut().insert("connection", HeaderValue::from_static("close"));
        return Ok(resp);
    }
    strip_edge_headers(&mut parts.headers);
    Ok(pipeline(&g, &clients, peer, guard, parts, body).await)
}

fn code_for(status: u16) -> &'static str {
    match status {
        413 => "request_too_large",
        _ => "bad_request",
    }
}

/// What the Python server rejects before any application logic (then closes).
fn wire_reject(g: &Global, parts: &Parts) -> Option<(u16, &'static str)> {
    let uri = &parts.uri;
    if parts.method == Method::CONNECT || uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return Some((400, "only origin-form request targets are accepted"));
    }
    let h = &parts.headers;
    if h.contains_key("upgrade") {
        return Some((400, "protocol upgrades are not supported"));
    }
    if h.contains_key("content-length") && h.contains_key("transfer-encoding") {
        return Some((400, "Content-Length together with Transfer-Encoding"));
    }
    let hosts = h.get_all("host").iter().count();
    if hosts > 1 {
        return Some((400, "duplicate Host header"));
    }
    if hosts == 0 && parts.version == Version::HTTP_11 {
        return Some((400, "missing Host header"));
    }
    if let Some(n) = content_length(h) {
        if n > g.cfg.max_body_bytes {
            return Some((413, "request body too large"));
        }
    }
    None
}

fn strip_edge_headers(h: &mut HeaderMap) {
    let names: Vec<HeaderName> = h.keys().filter(|n| n.as_str().starts_with(EDGE_PREFIX)).cloned().collect();
    for n in names {
        h.remove(&n);
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get("content-length").and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse().ok())
}

fn media_type_is(h: &HeaderMap, want: &str) -> bool {
    h.get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(want))
        .unwrap_or(false)
}

fn all<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    h.get_all(name).iter().map(|v| v.as_bytes()).collect()
}

async fn pipeline(g: &Arc<Global>, clients: &Clients, peer: SocketAddr, mut guard: Guard, parts: Parts, body: Body) -> Response<EdgeBody> {
    let state = match g.current.get() {
        Some(s) => s,
        None => return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await,
    };
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let (path_b, query_b) = match kgpolicy::paths::split_target(target.as_bytes()) {
        Ok(x) => x,
        Err(()) => return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await,
    };
    if path_b == b"/healthz" {
        let mut resp = Response::new(EdgeBody::full(&b"{\"status\":\"ok\"}"[..], guard));
        resp.headers_mut().insert("content-type", HeaderValue::from_static(JSON));
        return resp;
    }
    // 1-2: only well-formed /v1/ requests with a forwarded method are candidates
    let path = match (path_b.starts_with(b"/v1/"), kgpolicy::paths::check_path(path_b), kgpolicy::paths::check_query(query_b)) {
        (true, Ok(p), Ok(())) => p.to_string(),
        _ => return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await,
    };
    let query = query_b.to_vec();
    let method = parts.method.clone();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD") {
        return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await;
    }
    // 3: client address
    let peer_ip = kgpolicy::ip::normalise(peer.ip());
    let ip = match g.resolver.resolve(peer_ip, &all(&parts.headers, "x-forwarded-for"), &all(&parts.headers, "forwarded")) {
        Ok(ip) => ip,
        Err(()) => return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await,
    };
    // 4: authentication
    let mono = g.mono();
    if g.throttle.retry_after(ip, mono) > 0.0 {
        return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await;
    }
    let now = unix_now();
    let key_id = match authenticate(&state, &parts.headers, now) {
        Auth::Ok(id) => id,
        Auth::Failed => {
            g.throttle.failure(ip, mono);
            return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await;
        }
        Auth::Core => return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await,
    };
    let ckey = &state.keys[&key_id];
    let entry = &ckey.entry;
    // 5: what the edge may not serve for this key
    let limited = entry.rpm.is_some() || entry.max_concurrency.is_some();
    let route = state.routes.get(&entry.upstream).cloned();
    let (route, policy) = match (entry.core_only || (limited && !state.native_limits), route, ckey.policy.as_ref()) {
        (false, Some(r), Some(p)) => (r, p),
        _ => return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await,
    };
    // 7: the body (and the model it names)
    let restricted = !policy.models.allow_all();
    let is_json = media_type_is(&parts.headers, JSON);
    let declared = content_length(&parts.headers);
    let bodyless_method = matches!(method, Method::GET | Method::HEAD | Method::DELETE);
    let mut model: Option<String> = None;
    let mut request_json: Option<Bytes> = None;
    let req_body = if body.is_end_stream() {
        ReqBody::Empty
    } else if bodyless_method {
        ReqBody::Stream(body)
    } else if restricted || (is_json && declared.is_some_and(|n| n <= g.cfg.audit_json_sniff_limit)) {
        let encoded = parts
            .headers
            .get("content-encoding")
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded || (restricted && !is_json) {
            return to_core(g, clients, peer, guard, parts, CoreBody::Orig(body), false).await;
        }
        let data = match read_body(body, g.cfg.max_body_bytes, secs(g.cfg.body_timeout)).await {
            Read::Whole(b) => b,
            Read::TooLarge(prefix, rest) => {
                return to_core(g, clients, peer, guard, parts, CoreBody::Chain(prefix, rest), false).await
            }
            Read::Timeout => return close_error(408, "request body not received in time", "timeout", guard),
            Read::Broken => return close_error(400, "malformed request body", "bad_request", guard),
        };
        match kgpolicy::sniff::sniff_json(&data) {
            Sniff::Object { stream: true, .. } => {
                return to_core(g, clients, peer, guard, parts, CoreBody::Bytes(data), false).await
            }
            Sniff::Object { model: m, .. } => {
                model = m;
                request_json = Some(data.clone());
            }
            _ if restricted => return to_core(g, clients, peer, guard, parts, CoreBody::Bytes(data), false).await,
            _ => {}
        }
        ReqBody::Buffered(data)
    } else {
        ReqBody::Stream(body)
    };
    // 6: the key's allowlists
    if !policy.allows(ip, &path, model.as_deref()) {
        let cb = match req_body {
            ReqBody::Empty => CoreBody::Bytes(Bytes::new()),
            ReqBody::Buffered(b) => CoreBody::Bytes(b),
            ReqBody::Stream(b) => CoreBody::Orig(b),
        };
        return to_core(g, clients, peer, guard, parts, cb, false).await;
    }
    let body_size = match &req_body {
        ReqBody::Empty => 0,
        ReqBody::Buffered(b) => b.len() as u64,
        ReqBody::Stream(_) => declared.unwrap_or(0),
    };
    guard.record = Some(Record {
        kind: "r",
        t: 0,
        key_id: Some(key_id.clone()),
        client_ip: ip.to_string(),
        method: method.as_str().to_string(),
        path: path.clone(),
        model,
        status: 0,
        latency_ms: 0.0,
        upstream: Some(route.name.clone()),
        version: Some(route.version),
        upstream_status: 0,
        completed: false,
        abandoned: false,
        usage: None,
        body: None,
        body_size,
        audit: None,
        tokens: None,
        cost_nano: None,
    });
    guard.audit_known = Some(state.audit_known.clone());
    guard.request_json = request_json;
    // 8: rate and concurrency limits
    if limited {
        match g.limiter.admit(&key_id, entry.rpm, entry.max_concurrency, now) {
            Ok(lease) => guard.lease = Some(lease),
            Err(denied) => {
                let retry = (1.0f64).max((denied.retry_after + 0.999).floor());
                let body = with_type(error_body(429, &denied.message, Some(denied.code)), "rate_limit_error");
                set_status(&mut guard, 429);
                let mut resp = json_response(429, body, guard);
                resp.headers_mut().insert("retry-after", HeaderValue::from(retry as u64));
                return resp;
            }
        }
    }
    // 9: upstream
    forward(g, clients, peer, guard, parts, req_body, &route, &path, &query, &state).await
}

enum Auth {
    Ok(String),
    /// a failed authentication (counted by the throttle)
    Failed,
    /// a valid key the core must answer (revoked, expired)
    Core,
}

fn authenticate(state: &Compiled, headers: &HeaderMap, now: f64) -> Auth {
    let values = all(headers, "authorization");
    let token = match kgpolicy::keys::bearer_token(&values) {
        Some(t) if t.len() <= 200 => t,
        _ => return Auth::Failed,
    };
    let parts = match kgpolicy::keys::parse_virtual_key(token) {
        Some(p) => p,
        None => return Auth::Failed,
    };
    let ckey = match state.keys.get(parts.key_id) {
        Some(k) => k,
        None => return Auth::Failed,
    };
    let digest = state.verifier.digest(parts.secret);
    if !kgpolicy::keys::digest_matches(&ckey.digests, &digest, now) {
        return Auth::Failed;
    }
    if ckey.entry.revoked || ckey.entry.expires.is_some_and(|e| now >= e) {
        return Auth::Core;
    }
    Auth::Ok(parts.key_id.to_string())
}

/// Python's `error_body` takes the OpenAI error type; the port picks it from the status only.
fn with_type(body: Vec<u8>, type_: &str) -> Vec<u8> {
    let from = b"\"type\": \"invalid_request_error\"";
    match body.windows(from.len()).position(|w| w == from) {
        Some(at) => {
            let mut out = Vec::with_capacity(body.len() + 8);
            out.extend_from_slice(&body[..at]);
            out.extend_from_slice(format!("\"type\": \"{type_}\"").as_bytes());
            out.extend_from_slice(&body[at + from.len()..]);
            out
        }
        None => body,
    }
}

fn set_status(guard: &mut Guard, status: u16) {
    if let Some(r) = guard.record.as_mut() {
        r.status = status;
    }
}

fn json_response(status: u16, body: Vec<u8>, guard: Guard) -> Response<EdgeBody> {
    let mut resp = Response::new(EdgeBody::full(body, guard));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert("content-type", HeaderValue::from_static(JSON));
    resp
}

fn error_response(status: u16, message: &str, code: &str, mut guard: Guard) -> Response<EdgeBody> {
    set_status(&mut guard, status);
    json_response(status, error_body(status, message, Some(code)), guard)
}

fn close_error(status: u16, message: &str, code: &str, guard: Guard) -> Response<EdgeBody> {
    let mut resp = error_response(status, message, code, guard);
    resp.headers_mut().insert("connection", HeaderValue::from_static("close"));
    resp
}

enum Read {
    Whole(Bytes),
    TooLarge(Bytes, Body),
    Timeout,
    Broken,
}

async fn read_body(mut body: Body, limit: u64, timeout: Duration) -> Read {
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout(timeout, body.data()).await {
            Err(_) => return Read::Timeout,
            Ok(None) => return Read::Whole(buf.freeze()),
            Ok(Some(Err(_))) => return Read::Broken,
            Ok(Some(Ok(chunk))) => {
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > limit {
                    return Read::TooLarge(buf.freeze(), body);
                }
            }
        }
    }
}

/// Why a streamed request body stopped (the answer is then the client's fault, not 502).
#[derive(Default)]
struct BodyFailure {
    too_large: AtomicBool,
    broken: AtomicBool,
    timeout: AtomicBool,
}

/// A streamed request body with the body timeout and size limit applied.
fn timed_body(body: Body, timeout: Duration, limit: u64, failed: Arc<BodyFailure>) -> Body {
    let st = stream::unfold(Some((body, 0u64)), move |st| {
        let failed = failed.clone();
        async move {
            let (mut b, seen) = st?;
            match tokio::time::timeout(timeout, b.data()).await {
                Ok(Some(Ok(c))) => {
                    let seen = seen + c.len() as u64;
                    if seen > limit {
                        failed.too_large.store(true, Ordering::Relaxed);
                        return Some((Err::<Bytes, BoxError>("request body too large".into()), None));
                    }
                    Some((Ok(c), Some((b, seen))))
                }
                Ok(Some(Err(e))) => {
                    failed.broken.store(true, Ordering::Relaxed);
                    Some((Err(Box::new(e) as BoxError), None))
                }
                Ok(None) => None,
                Err(_) => {
                    failed.timeout.store(true, Ordering::Relaxed);
                    Some((Err("request body not received in time".into()), None))
                }
            }
        }
    });
    Body::wrap_stream(st)
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    g: &Arc<Global>,
    clients: &Clients,
    peer: SocketAddr,
    mut guard: Guard,
    parts: Parts,
    req_body: ReqBody,
    route: &Arc<Route>,
    path: &str,
    query: &[u8],
    state: &Compiled,
) -> Response<EdgeBody> {
    let target = kgpolicy::paths::upstream_target(&route.base_path, path, query);
    let uri: Uri = match format!("http://upstream{target}").parse() {
        Ok(u) => u,
        Err(_) => return to_core(g, clients, peer, guard, parts, body_for_core(req_body), false).await,
    };
    let mut builder = Request::builder().method(parts.method.clone()).uri(uri).version(Version::HTTP_11);
    if let Some(map) = builder.headers_mut() {
        // `upstream_request_headers` on hyper's own map: names and values shared, not copied
        let filter = Filter::request(parts.headers.get_all("connection").iter().map(HeaderValue::as_bytes));
        map.reserve(parts.headers.len() + 4);
        for (name, value) in parts.headers.iter() {
            if !filter.keeps(name.as_str()) {
                continue;
            }
            if name == hyper::header::ACCEPT_ENCODING {
                if let Ok(v) = HeaderValue::from_bytes(&kgpolicy::headers::readable_encodings(value.as_bytes())) {
                    map.append(name.clone(), v);
                }
            } else {
                map.append(name.clone(), value.clone());
            }
        }
    }
    builder = builder.header("host", route.host_header.as_str());
    for (name, value) in &route.auth {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let failed = Arc::new(BodyFailure::default());
    let (body, replay) = match req_body {
        ReqBody::Empty => (Body::empty(), Some(Bytes::new())),
        ReqBody::Buffered(b) => {
            builder = builder.header("content-length", b.len());
            (Body::from(b.clone()), Some(b))
        }
        ReqBody::Stream(b) => {
            if let Some(n) = content_length(&parts.headers) {
                builder = builder.header("content-length", n);
            }
            (timed_body(b, secs(g.cfg.body_timeout), g.cfg.max_body_bytes, failed.clone()), None)
        }
    };
    let up_req = match builder.body(body) {
        Ok(r) => r,
        Err(_) => {
            eprintln!("keyguard-edge: a request could not be built for the upstream: core");
            guard.record = None;
            let cb = replay.map(CoreBody::Bytes).unwrap_or(CoreBody::Bytes(Bytes::new()));
            return to_core(g, clients, peer, guard, parts, cb, false).await;
        }
    };
    let client = clients.upstream(&route.scheme, &route.host, route.port);
    let upstream_timeout = secs(g.cfg.upstream_timeout);
    let resp = match tokio::time::timeout(upstream_timeout, client.request(up_req)).await {
        Ok(Ok(r)) => r,
        Err(_) => {
            eprintln!("keyguard-edge: upstream {}: no answer in time: 504", route.name);
            if let Some(r) = guard.record.as_mut() {
                r.abandoned = true;
            }
            return error_response(504, "the upstream did not answer in time", "upstream_timeout", guard);
        }
        Ok(Err(e)) => {
            if failed.too_large.load(Ordering::Relaxed) {
                return close_error(413, "request body too large", "request_too_large", guard);
            }
            if failed.broken.load(Ordering::Relaxed) {
                return close_error(400, "malformed request body", "bad_request", guard);
            }
            if failed.timeout.load(Ordering::Relaxed) {
                return close_error(408, "request body not received in time", "timeout", guard);
            }
            let (status, message, code, abandoned) = match connect_error(&e) {
                Some(m) if m.contains("timed out") => (504, m, "upstream_timeout", false),
                Some(m) => (502, m, "upstream_unavailable", false),
                None if e.is_parse() || e.is_parse_too_large() => {
                    (502, "the upstream sent an invalid HTTP response", "upstream_unavailable", true)
                }
                None => (502, "the upstream closed the connection", "upstream_unavailable", true),
            };
            eprintln!("keyguard-edge: upstream {}: {message}: {status}", route.name);
            if let Some(r) = guard.record.as_mut() {
                r.abandoned = abandoned;
            }
            return error_response(status, message, code, guard);
        }
    };
    let status = resp.status().as_u16();
    if let Some(r) = guard.record.as_mut() {
        r.upstream_status = status;
        r.status = status;
    }
    if status == 401 && route.fallback {
        if let Some(data) = replay {
            // the CURRENT upstream key was refused: the core retries with the PREVIOUS one
            eprintln!("keyguard-edge: upstream {}: 401 with a fallback: replayed through the core", route.name);
            drop(resp);
            guard.record = None;
            return to_core(g, clients, peer, guard, parts, CoreBody::Bytes(data), true).await;
        }
    }
    let (head, rbody) = resp.into_parts();
    if status >= 400 {
        let data = read_limited(rbody, kgpolicy::scrub::MAX_ERROR_BODY, upstream_timeout).await;
        let upstream_headers: Vec<(String, Vec<u8>)> =
            head.headers.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect();
        let (headers, body) = kgpolicy::scrub::scrub_error_body(status, &upstream_headers, data.as_deref(), &state.known);
        let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let mut resp = Response::new(EdgeBody::full(body, guard));
        *resp.status_mut() = head.status;
        append_headers(resp.headers_mut(), &kgpolicy::headers::client_response_headers(&pairs));
        return resp;
    }
    let json = media_type_is(&head.headers, JSON);
    let usage = json.then(|| match head.headers.get_all("content-encoding").iter().last() {
        Some(enc) => kgpolicy::usage::UsageCopy::with_encoding(enc.as_bytes()),
        None => kgpolicy::usage::UsageCopy::new(),
    });
    let mut resp = Response::new(EdgeBody::stream(rbody, upstream_timeout, usage, guard));
    *resp.status_mut() = head.status;
    // `client_response_headers` on hyper's own map: names and values shared, not copied
    let filter = Filter::response(head.headers.get_all("connection").iter().map(HeaderValue::as_bytes));
    let out = resp.headers_mut();
    out.reserve(head.headers.len());
    for (name, value) in head.headers.iter() {
        if filter.keeps(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    resp
}

fn append_headers(map: &mut HeaderMap, pairs: &[(&str, &[u8])]) {
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
}

fn body_for_core(b: ReqBody) -> CoreBody {
    match b {
        ReqBody::Empty => CoreBody::Bytes(Bytes::new()),
        ReqBody::Buffered(b) => CoreBody::Bytes(b),
        ReqBody::Stream(b) => CoreBody::Orig(b),
    }
}

/// A connector's own message (never a secret), when `e` is a connection failure.
fn connect_error(e: &hyper::Error) -> Option<&'static str> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return Some(c.0);
        }
        src = s.source();
    }
    e.is_connect().then_some("the upstream could not be reached")
}

/// The whole body if it is at most `limit` bytes and arrives in time, else None.
async fn read_limited(mut body: Body, limit: usize, timeout: Duration) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    loop {
        match tokio::time::timeout(timeout, body.data()).await {
            Ok(None) => return Some(buf),
            Ok(Some(Ok(chunk))) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > limit {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

fn peer_text(peer: SocketAddr) -> String {
    let ip: IpAddr = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    ip.to_string()
}

/// Hands the request, unchanged but for the edge's own headers, to the core.
async fn to_core(
    g: &Arc<Global>,
    clients: &Clients,
    peer: SocketAddr,
    mut guard: Guard,
    mut parts: Parts,
    body: CoreBody,
    admitted: bool,
) -> Response<EdgeBody> {
    guard.record = None; // the core records what it answers
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = match format!("http://core{target}").parse() {
        Ok(u) => u,
        Err(_) => Uri::from_static("http://core/"),
    };
    parts.version = Version::HTTP_11;
    if let Ok(v) = HeaderValue::from_str(&peer_text(peer)) {
        parts.headers.insert(EDGE_PEER, v);
    }
    if admitted {
        parts.headers.insert(EDGE_ADMITTED, HeaderValue::from_static("1"));
    }
    let failed = Arc::new(BodyFailure::default());
    let expects = parts.headers.get("expect").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let body = match body {
        CoreBody::Orig(b) if expects && !b.is_end_stream() => {
            // the core decides whether the client sends its body (see expect.rs)
            let (timeout, f) = (secs(g.cfg.body_timeout), failed.clone());
            let mut parts = parts;
            // a connection of its own: the request target in origin form
            parts.uri = parts.uri.path_and_query().and_then(|p| p.as_str().parse().ok()).unwrap_or_else(|| Uri::from_static("/"));
            let req = Request::from_parts(parts, ());
            let wrap = move |b: Body| timed_body(b, timeout, u64::MAX, f);
            return match super::expect::request(&g.cfg.core_socket, req, b, wrap).await {
                Ok((resp, done)) => {
                    guard.hold = Some(done);
                    from_core(resp, guard)
                }
                Err(_) => core_failed(&failed, guard),
            };
        }
        CoreBody::Orig(b) if b.is_end_stream() => b,
        CoreBody::Orig(b) => timed_body(b, secs(g.cfg.body_timeout), u64::MAX, failed.clone()),
        CoreBody::Bytes(b) => Body::from(b),
        CoreBody::Chain(prefix, rest) => {
            let head = stream::once(async move { Ok::<Bytes, hyper::Error>(prefix) });
            Body::wrap_stream(head.chain(rest))
        }
    };
    match clients.core.request(Request::from_parts(parts, body)).await {
        Ok(resp) => from_core(resp, guard),
        Err(_) => core_failed(&failed, guard),
    }
}

/// The core's answer, streamed back as it comes (the core applies its own timeouts).
fn from_core(resp: Response<Body>, guard: Guard) -> Response<EdgeBody> {
    let (head, body) = resp.into_parts();
    Response::from_parts(head, EdgeBody::stream(body, Duration::from_secs(86400 * 365), None, guard))
}

/// The core gave no answer: the client's body broke or stalled (400/408), else 502.
fn core_failed(failed: &BodyFailure, guard: Guard) -> Response<EdgeBody> {
    if failed.broken.load(Ordering::Relaxed) {
        return close_error(400, "malformed request body", "bad_request", guard);
    }
    if failed.timeout.load(Ordering::Relaxed) {
        return close_error(408, "request body not received in time", "timeout", guard);
    }
    eprintln!("keyguard-edge: the core did not answer: 502");
    error_response(502, "the gateway core is not reachable", "core_unavailable", guard)
}

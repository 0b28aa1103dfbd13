//! The `gateway.request` audit record of a request the edge answered, rendered exactly as the
//! Python supervisor would render it (`keyguard.gateway.edge.records` -> `gateway.server.
//! audit_row` -> `vault.audit.UniformAppender` -> `domain.audit.UniformEncoder`), so that the
//! supervisor only chains and stores it.

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

/// `(canonical content, time ISO text, details JSON)` as `UniformEncoder.__call__` returns them
/// for this request (after the same truncation and redaction), or `None` when exact parity
/// cannot be guaranteed (the supervisor then renders the record itself). `known`: secrets to
/// redact by value (the routes' upstream keys).
pub fn render_request(rec: &RequestAudit<'_>, known: &[String]) -> Option<(String, String, String)> {
    let _ = (rec, known);
    todo!()
}

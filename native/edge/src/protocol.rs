//! The control protocol between the Python supervisor (`keyguard.gateway.edge`) and the edge.
//!
//! stdin (supervisor -> edge): one JSON object per line. The first is a [`Config`]
//! (`"type": "config"`); then a [`State`] (`"type": "state"`) whenever the vault changes and
//! at least every `credential_ttl` seconds. EOF on stdin means "shut down": stop accepting,
//! finish in-flight requests (up to `shutdown_grace`), flush records, exit 0.
//!
//! stdout (edge -> supervisor): one JSON object per line. First `{"type":"ready","port":N}`
//! once the listener is bound; `{"type":"applied","seq":N,"ok":B}` (written at once) for each
//! State carrying `seq` N: `ok` true once it is in use for new requests, false when it was
//! refused (the previous one stays); then [`Record`]s (`"type": "r"`), one per request the edge
//! answered itself (requests handed to the core are recorded by the core). Records are
//! buffered and flushed at least every 20 ms.
//!
//! stderr: log lines for the supervisor's log (never a secret: no token, no upstream key).
//!
//! Secrets (the HMAC server key, upstream keys) travel only over stdin: never argv or env.

use serde::{Deserialize, Serialize};

/// The first line on stdin.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// host to bind (an IP literal; "::" binds dual stack)
    pub host: String,
    /// port to bind; 0 = any (the `ready` line says which)
    pub port: u16,
    /// event-loop threads, each with its own SO_REUSEPORT listener
    pub threads: usize,
    /// client-side TLS: PEM paths (both or neither); `client_ca` = require client certs (mTLS)
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub client_ca: Option<String>,
    /// the Python core's unix socket: every request the edge does not answer itself goes there
    pub core_socket: String,
    /// PEM bundle for upstream TLS verification; None = the system trust store
    pub upstream_ca_bundle: Option<String>,
    /// CIDRs of trusted proxies (X-Forwarded-For / Forwarded are read only from these)
    pub trusted_proxies: Vec<String>,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub header_timeout: f64,
    pub keepalive_timeout: f64,
    pub body_timeout: f64,
    pub upstream_timeout: f64,
    pub upstream_connect_timeout: f64,
    pub upstream_idle_ttl: f64,
    /// JSON bodies up to this size are read (to learn `model`) even when any model is allowed
    pub audit_json_sniff_limit: u64,
    pub throttle_burst: u32,
    pub throttle_rate: f64,
    pub shutdown_grace: f64,
    /// the effective price table as JSON text (`keyguard/data/prices.json`'s shape, merged):
    /// the edge prices reported usage with it (`tokens`, `cost_nano`). None, or a table that
    /// does not load (logged): nothing is priced, the supervisor prices.
    #[serde(default)]
    pub prices_json: Option<String>,
}

/// A snapshot of what the edge may serve by itself. Replaces the previous one whole.
#[derive(Debug, Clone, Deserialize)]
pub struct State {
    /// the vault's key-table generation this snapshot was built from (for logs)
    pub generation: i64,
    /// the supervisor's snapshot counter: acknowledged with `{"type":"applied","seq":N,"ok":B}`
    #[serde(default)]
    pub seq: Option<u64>,
    /// hex of the HMAC-SHA256 key that virtual-key secrets are hashed with
    pub server_key: String,
    pub keys: Vec<KeyEntry>,
    pub routes: Vec<Route>,
    /// true when rate/concurrency limits are in-process (the edge may count them itself);
    /// false (Redis limits): every request of a key with any limit goes to the core
    pub native_limits: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyEntry {
    /// the public 12-character key id
    pub id: String,
    /// (hex HMAC digest of the secret part, valid until: unix seconds or null = no end)
    pub digests: Vec<(String, Option<f64>)>,
    pub revoked: bool,
    /// unix seconds; at or after it the key is expired
    pub expires: Option<f64>,
    pub models: Vec<String>,
    pub endpoints: Vec<String>,
    pub cidrs: Vec<String>,
    /// name of the upstream credential (a [`Route`] name)
    pub upstream: String,
    pub rpm: Option<u32>,
    pub max_concurrency: Option<u32>,
    /// the key has a token-per-minute or budget limit: never served by the edge
    pub core_only: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub name: String,
    /// "https", or "http" (only ever a loopback upstream with the explicit opt-in; the
    /// supervisor checked that)
    pub scheme: String,
    /// host to connect to and verify the certificate for (pinned); an IP literal or DNS name
    pub host: String,
    pub port: u16,
    /// the Host header value (host, bracketed if IPv6, plus `:port` unless default)
    pub host_header: String,
    /// the upstream base path without trailing slash, e.g. "/v1"
    pub base_path: String,
    /// headers carrying the upstream credential: authorization, openai-organization, ...
    pub auth: Vec<(String, String)>,
    /// the CURRENT key version (for the audit record)
    pub version: i64,
    /// a usable PREVIOUS version exists: on a 401 from the upstream the edge replays a
    /// buffered request through the core, which falls back (and audits the fallback)
    pub fallback: bool,
}

/// One request the edge answered (stdout). Fields mirror the core's `RequestRecord`; `usage`
/// and the accounting fields let the supervisor count tokens and spend exactly as the core.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    #[serde(rename = "type")]
    pub kind: &'static str, // always "r"
    /// unix time in microseconds when the request's answer ended
    pub t: i64,
    pub key_id: Option<String>,
    pub client_ip: String,
    pub method: String,
    pub path: String,
    pub model: Option<String>,
    pub status: u16,
    pub latency_ms: f64,
    pub upstream: Option<String>,
    pub version: Option<i64>,
    /// the upstream's status (0: it never answered) — for usage accounting
    pub upstream_status: u16,
    /// forwarding completed (false: client hung up or upstream timed out/cut)
    pub completed: bool,
    /// the upstream had (or may have had) the request when it stopped: client hang-up or
    /// upstream timeout before the answer
    pub abandoned: bool,
    /// the response's top-level `usage` object, re-serialised, when one was seen
    pub usage: Option<String>,
    /// the request body (JSON text) when the supervisor needs it to estimate: sent only when
    /// the upstream answered < 400 without usage, or the request was abandoned
    pub body: Option<String>,
    /// the request body's size in bytes
    pub body_size: u64,
    /// the `gateway.request` audit row exactly as the supervisor's `UniformAppender` would
    /// store it: `[content, time ISO, details JSON, actor, subject, source, outcome]` (texts
    /// redacted as it redacts them, under the routes' upstream keys); absent where the edge
    /// cannot be sure of parity (the supervisor renders the record from the fields above)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<[String; 7]>,
    /// the reported usage, priced (`settle_figures` with usage): total tokens and nano-USD;
    /// both absent when the answer reported no usage or no price table is loaded (the
    /// supervisor then settles from `usage`/`body` as before)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_nano: Option<u64>,
}

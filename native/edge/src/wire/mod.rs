//! The wire: listeners, the per-request pipeline, upstream and core clients, records.
//!
//! Threads: `threads` event loops (current_thread tokio runtimes, one SO_REUSEPORT listener
//! each), the control thread (this one: stdin), the record flusher.

mod body;
mod expect;
mod handler;
mod net;
mod records;
mod scan;
mod server;
mod state;

use kgpolicy::ip::ClientIpResolver;
use kgpolicy::limits::RateLimiter;
use kgpolicy::pricing::PriceTable;
use kgpolicy::protocol::{Config, State};
use kgpolicy::throttle::FailedAuthThrottle;
use openssl::ssl::SslConnector;
use records::Out;
use std::io::BufRead;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What every thread shares.
pub struct Global {
    pub cfg: Config,
    pub current: state::Current,
    pub limiter: RateLimiter,
    pub throttle: FailedAuthThrottle,
    pub resolver: ClientIpResolver,
    pub out: &'static Out,
    /// requests between the service call and the end of their response
    pub inflight: AtomicUsize,
    pub upstream_tls: Arc<SslConnector>,
    /// the price table (`Config.prices_json`): None prices nothing
    pub prices: Option<PriceTable>,
    base: Instant,
}

impl Global {
    /// Milliseconds since the process's base instant.
    pub fn ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    pub fn instant_at(&self, ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.base + Duration::from_millis(ms))
    }

    /// Monotonic seconds (the throttle's clock).
    pub fn mono(&self) -> f64 {
        self.base.elapsed().as_secs_f64()
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub fn unix_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn fail(msg: &str) -> i32 {
    eprintln!("keyguard-edge: {msg}");
    2
}

pub fn run() -> i32 {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let cfg: Config = match lines.next() {
        Some(Ok(line)) => match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => return fail(&format!("the first stdin line is not a valid config: {}", e.classify_name())),
        },
        _ => return fail("no config on stdin"),
    };
    let acceptor = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => match server::tls_acceptor(cert, key, cfg.client_ca.as_deref()) {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => return fail(&e),
        },
        (None, None) if cfg.client_ca.is_none() => None,
        _ => return fail("tls_cert and tls_key go together (and client_ca needs both)"),
    };
    let upstream_tls = match net::upstream_tls(cfg.upstream_ca_bundle.as_deref()) {
        Ok(t) => Arc::new(t),
        Err(e) => return fail(&e),
    };
    let resolver = match ClientIpResolver::new(&cfg.trusted_proxies) {
        Ok(r) => r,
        Err(e) => return fail(&format!("trusted_proxies: {e}")),
    };
    let listeners = match server::bind(&cfg.host, cfg.port, cfg.threads) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let port = listeners[0].local_addr().map(|a| a.port()).unwrap_or(0);
    let prices = match cfg.prices_json.as_deref().map(PriceTable::from_json_text) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!("keyguard-edge: the price table does not load ({e}): usage is priced by the supervisor");
            None
        }
    };
    let out: &'static Out = Box::leak(Box::new(Out::new()));
    let global = Arc::new(Global {
        throttle: FailedAuthThrottle::new(cfg.throttle_burst, cfg.throttle_rate),
        limiter: RateLimiter::new(),
        cfg,
        current: state::Current::default(),
        resolver,
        out,
        inflight: AtomicUsize::new(0),
        upstream_tls,
        prices,
        base: Instant::now(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut threads = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let (g, a, rx) = (global.clone(), acceptor.clone(), stopped.clone());
        let t = std::thread::Builder::new()
            .name(format!("edge-{i}"))
            .spawn(move || server::run_thread(g, listener, a, rx));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => return fail(&format!("cannot start a thread: {e}")),
        }
    }
    Out::spawn_flusher(out);
    out.line_now(&format!("{{\"type\":\"ready\",\"port\":{port}}}"));
    eprintln!("keyguard-edge: listening on port {port} ({} threads)", threads.len());
    for line in lines {
        let line = match line {
            Ok(l) => l,
            Err(_) => break,
        };
        if line.trim().is_empty() {
            continue;
        }
        control(&global, &line);
    }
    eprintln!("keyguard-edge: stdin closed: shutting down");
    let _ = stop.send(true);
    for t in threads {
        let _ = t.join();
    }
    out.flush();
    0
}

fn control(global: &Global, line: &str) {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(_) => {
            eprintln!("keyguard-edge: a control line is not JSON: ignored");
            return;
        }
    };
    if value.get("type").and_then(|t| t.as_str()) != Some("state") {
        eprintln!("keyguard-edge: a control line of unknown type: ignored");
        return;
    }
    // the supervisor numbers its snapshots and waits for this acknowledgement (applied or
    // refused) so that a key written through its vault takes effect here before the write
    // returns
    let seq = value.get("seq").and_then(|s| s.as_u64());
    let ack = |ok: bool| {
        if let Some(seq) = seq {
            global.out.line_now(&format!("{{\"type\":\"applied\",\"seq\":{seq},\"ok\":{ok}}}"));
        }
    };
    let st: State = match serde_json::from_value(value) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keyguard-edge: a state line does not parse ({}): ignored", e.classify_name());
            ack(false);
            return;
        }
    };
    let generation = st.generation;
    match state::compile(st) {
        Ok(c) => {
            let (keys, routes) = (c.keys.len(), c.routes.len());
            global.current.set(c);
            eprintln!("keyguard-edge: state generation {generation}: {keys} keys, {routes} routes");
            ack(true);
        }
        Err(e) => {
            eprintln!("keyguard-edge: state generation {generation} refused: {e}");
            ack(false);
        }
    }
}

trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        }
    }
}

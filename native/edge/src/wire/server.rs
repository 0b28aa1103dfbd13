//! Listeners (one SO_REUSEPORT socket and current_thread runtime per thread), client TLS,
//! and the connection IO wrapper that enforces the header limits and timeouts.

use super::body::Guard;
use super::handler;
use super::scan::{find, Scanner};
use super::net::{Clients, Stream};
use super::Global;
use futures_util::task::AtomicWaker;
use hyper::server::conn::Http;
use hyper::service::service_fn;
use kgpolicy::errors::error_body;
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509Name;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_openssl::SslStream;

/// One client connection's state shared by its IO wrapper and its requests.
pub struct ConnShared {
    global: Arc<Global>,
    in_flight: AtomicBool,
    /// no request seen yet on this connection
    first: AtomicBool,
    /// bytes of the next request head read so far (while no request is in flight)
    head_bytes: AtomicUsize,
    /// ms since the process's base instant: when the connection went idle / a head began
    idle_since: AtomicU64,
    head_start: AtomicU64,
    /// the connection's reader, woken when a response ends (its idle clock starts then)
    reader: AtomicWaker,
}

impl ConnShared {
    fn new(global: Arc<Global>) -> ConnShared {
        let now = global.ms();
        ConnShared {
            global,
            in_flight: AtomicBool::new(false),
            first: AtomicBool::new(true),
            head_bytes: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            head_start: AtomicU64::new(now),
            reader: AtomicWaker::new(),
        }
    }

    pub fn request_started(&self) {
        self.in_flight.store(true, Ordering::Relaxed);
        self.global.inflight.fetch_add(1, Ordering::SeqCst);
    }

    pub fn response_done(&self) {
        self.head_bytes.store(0, Ordering::Relaxed);
        self.first.store(false, Ordering::Relaxed);
        self.idle_since.store(self.global.ms(), Ordering::Relaxed);
        self.in_flight.store(false, Ordering::Relaxed);
        self.global.inflight.fetch_sub(1, Ordering::SeqCst);
        self.reader.wake();
    }
}

/// The client connection as hyper sees it: while no request is in flight, reads are capped so
/// that a head larger than `max_header_bytes` is answered 431 (OpenAI-shaped), a head not
/// complete within `header_timeout` 408, and an idle keep-alive connection closes after
/// `keepalive_timeout`.
pub struct ServerIo {
    inner: Stream,
    conn: Arc<ConnShared>,
    sleep: Pin<Box<Sleep>>,
    armed: u64,
    failed: bool,
    /// request boundaries and Python's framing rules (see `scan`)
    scanner: Scanner,
    /// bytes handed to hyper so far (stream offset)
    handed: u64,
    /// a framing rejection to answer once hyper is done with what came before it
    reject: Option<&'static str>,
    /// an OpenAI-shaped rejection written in place of hyper's empty one, and how many bytes
    /// of hyper's we owe an answer for
    pending_out: Vec<u8>,
    owed: usize,
}

impl ServerIo {
    fn new(inner: Stream, conn: Arc<ConnShared>) -> ServerIo {
        ServerIo {
            inner,
            conn,
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            armed: 0,
            failed: false,
            scanner: Scanner::default(),
            handed: 0,
            reject: None,
            pending_out: Vec::new(),
            owed: 0,
        }
    }

    fn fail(&mut self, cx: &mut Context<'_>, status: u16, reason: &str, message: &str, code: &str) {
        self.failed = true;
        let out = rejection(status, reason, message, code);
        let mut inner = Pin::new(&mut self.inner);
        let _ = inner.as_mut().poll_write(cx, &out);
        let _ = inner.as_mut().poll_flush(cx);
        let _ = inner.as_mut().poll_shutdown(cx);
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.failed {
            return Poll::Ready(Ok(()));
        }
        let conn = me.conn.clone();
        conn.reader.register(cx.waker());
        if let Some(message) = me.reject {
            // the requests before the bad one are answered first, then the rejection, then close
            if conn.in_flight.load(Ordering::Relaxed) {
                return Poll::Pending; // woken when the response ends
            }
            me.reject = None;
            me.fail(cx, 400, "Bad Request", message, "bad_request");
            return Poll::Ready(Ok(()));
        }
        if conn.in_flight.load(Ordering::Relaxed) {
            let before = buf.filled().len();
            let r = Pin::new(&mut me.inner).poll_read(cx, buf);
            if let Poll::Ready(Ok(())) = r {
                let n = buf.filled().len() - before;
                if let Some((at, message)) = me.scanner.feed(&buf.filled()[before..]) {
                    if at < me.handed {
                        // the body of a request hyper is reading is broken: its body fails
                        eprintln!("keyguard-edge: a request body's framing was refused");
                        me.failed = true;
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, message)));
                    }
                    // a pipelined request breaks the rules: hyper gets what came before it
                    let keep = at.saturating_sub(me.handed).min(n as u64) as usize;
                    buf.set_filled(before + keep);
                    me.handed += keep as u64;
                    me.reject = Some(message);
                    eprintln!("keyguard-edge: a request's framing was refused: 400");
                    return r;
                }
                me.handed += n as u64;
            }
            return r;
        }
        let cfg = &conn.global.cfg;
        let used = conn.head_bytes.load(Ordering::Relaxed);
        if used >= cfg.max_header_bytes {
            eprintln!("keyguard-edge: request head larger than max_header_bytes: 431");
            me.fail(cx, 431, "Request Header Fields Too Large", "request headers too large", "request_header_too_large");
            return Poll::Ready(Ok(()));
        }
        let allow = cfg.max_header_bytes - used;
        let mut sub = buf.take(allow);
        match Pin::new(&mut me.inner).poll_read(cx, &mut sub) {
            Poll::Ready(Ok(())) => {
                let mut n = sub.filled().len();
                if used == 0 {
                    me.scanner.resync();
                }
                if let Some((at, message)) = me.scanner.feed(sub.filled()) {
                    eprintln!("keyguard-edge: a request's framing was refused: 400");
                    let keep = at.saturating_sub(me.handed).min(n as u64) as usize;
                    if keep == 0 && used == 0 {
                        me.fail(cx, 400, "Bad Request", message, "bad_request");
                        return Poll::Ready(Ok(()));
                    }
                    n = keep;
                    me.reject = Some(message);
                }
                me.handed += n as u64;
                // SAFETY: `sub` wrote and initialised these n bytes of buf's unfilled part
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                if n > 0 {
                    if used == 0 {
                        conn.head_start.store(conn.global.ms(), Ordering::Relaxed);
                    }
                    conn.head_bytes.store(used + n, Ordering::Relaxed);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let first = conn.first.load(Ordering::Relaxed);
                let (since, limit, answer) = if first {
                    (conn.idle_since.load(Ordering::Relaxed), cfg.header_timeout, true)
                } else if used > 0 {
                    (conn.head_start.load(Ordering::Relaxed), cfg.header_timeout, true)
                } else {
                    (conn.idle_since.load(Ordering::Relaxed), cfg.keepalive_timeout, false)
                };
                let deadline = since + (limit * 1000.0) as u64;
                if deadline != me.armed {
                    me.armed = deadline;
                    me.sleep.as_mut().reset(conn.global.instant_at(deadline));
                }
                match me.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        if answer {
                            eprintln!("keyguard-edge: request headers not received in time: 408");
                            me.fail(cx, 408, "Request Timeout", "request headers not received in time", "timeout");
                        } else {
                            me.failed = true;
                        }
                        Poll::Ready(Ok(()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

use std::future::Future;

impl ServerIo {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending_out.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending_out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(k)) => {
                    self.pending_out.drain(..k);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// hyper's own answer to a request it could not parse: a 4xx head with no body, written while
/// no request is in flight. The edge answers those as Python does (JSON, connection closed).
fn hyper_rejection(data: &[u8]) -> Option<u16> {
    if !(data.starts_with(b"HTTP/1.1 4") || data.starts_with(b"HTTP/1.0 4")) || !data.ends_with(b"\r\n\r\n") {
        return None;
    }
    find(data, b"\r\ncontent-length: 0\r\n")?;
    std::str::from_utf8(data.get(9..12)?).ok()?.parse().ok()
}

fn rejection(status: u16, reason: &str, message: &str, code: &str) -> Vec<u8> {
    let body = error_body(status, message, Some(code));
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl AsyncWrite for ServerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.owed == 0 && !me.conn.in_flight.load(Ordering::Relaxed) {
            if let Some(status) = hyper_rejection(data) {
                let (status, reason, message, code) = match status {
                    431 | 414 => (431, "Request Header Fields Too Large", "request headers too large", "request_header_too_large"),
                    s => (s, "Bad Request", "malformed HTTP request", "bad_request"),
                };
                me.pending_out = rejection(status, reason, message, code);
                me.owed = data.len();
            }
        }
        if me.owed > 0 {
            return match me.drain(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(std::mem::take(&mut me.owed))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        Pin::new(&mut me.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if let Some(message) = me.reject.take() {
            me.pending_out.extend_from_slice(&rejection(400, "Bad Request", message, "bad_request"));
        }
        match me.drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

pub fn tls_acceptor(cert: &str, key: &str, client_ca: Option<&str>) -> Result<SslAcceptor, String> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(|e| e.to_string())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| e.to_string())?;
    b.set_certificate_chain_file(cert).map_err(|e| format!("tls_cert: {e}"))?;
    b.set_private_key_file(key, SslFiletype::PEM).map_err(|e| format!("tls_key: {e}"))?;
    b.check_private_key().map_err(|e| format!("tls_key does not match tls_cert: {e}"))?;
    if let Some(ca) = client_ca {
        b.set_ca_file(ca).map_err(|e| format!("client_ca: {e}"))?;
        let names = X509Name::load_client_ca_file(ca).map_err(|e| format!("client_ca: {e}"))?;
        b.set_client_ca_list(names);
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(b.build())
}

/// Binds `threads` SO_REUSEPORT sockets on one port (port 0: the first one picks it).
pub fn bind(host: &str, port: u16, threads: usize) -> Result<Vec<std::net::TcpListener>, String> {
    let ip: IpAddr = host.parse().map_err(|_| format!("host {host:?} is not an IP address"))?;
    let mut port = port;
    let mut out = Vec::with_capacity(threads);
    for _ in 0..threads.max(1) {
        let addr = SocketAddr::new(ip, port);
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.to_string())?;
        sock.set_reuse_address(true).map_err(|e| e.to_string())?;
        sock.set_reuse_port(true).map_err(|e| e.to_string())?;
        if ip.is_ipv6() {
            let _ = sock.set_only_v6(!ip.is_unspecified());
        }
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        sock.bind(&addr.into()).map_err(|e| format!("bind {addr}: {e}"))?;
        sock.listen(1024).map_err(|e| e.to_string())?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let l: std::net::TcpListener = sock.into();
        port = l.local_addr().map_err(|e| e.to_string())?.port();
        out.push(l);
    }
    Ok(out)
}

/// One event-loop thread: accept until shutdown, then let in-flight requests finish.
pub fn run_thread(
    global: Arc<Global>,
    listener: std::net::TcpListener,
    acceptor: Option<Arc<SslAcceptor>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyguard-edge: cannot start a runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("keyguard-edge: listener: {e}");
                return;
            }
        };
        let clients = Arc::new(Clients::new(
            &global.cfg.core_socket,
            global.upstream_tls.clone(),
            secs(global.cfg.upstream_connect_timeout),
            secs(global.cfg.upstream_idle_ttl),
        ));
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        tokio::spawn(serve(global.clone(), clients.clone(), acceptor.clone(), tcp, peer));
                    }
                    Err(e) => {
                        eprintln!("keyguard-edge: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        let deadline = Instant::now() + secs(global.cfg.shutdown_grace);
        while global.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() && s > 0.0 { s.min(1e9) } else { 0.0 })
}

async fn serve(global: Arc<Global>, clients: Arc<Clients>, acceptor: Option<Arc<SslAcceptor>>, tcp: TcpStream, peer: SocketAddr) {
    let stream = match acceptor {
        None => Stream::Tcp(tcp),
        Some(acc) => {
            let ssl = match Ssl::new(acc.context()) {
                Ok(s) => s,
                Err(_) => return,
            };
            let mut s = match SslStream::new(ssl, tcp) {
                Ok(s) => Box::pin(s),
                Err(_) => return,
            };
            match tokio::time::timeout(secs(global.cfg.header_timeout), s.as_mut().accept()).await {
                Ok(Ok(())) => Stream::Tls(s),
                Ok(Err(_)) => {
                    eprintln!("keyguard-edge: TLS handshake with a client failed");
                    return;
                }
                Err(_) => {
                    eprintln!("keyguard-edge: TLS handshake with a client timed out");
                    return;
                }
            }
        }
    };
    let conn = Arc::new(ConnShared::new(global.clone()));
    let io = ServerIo::new(stream, conn.clone());
    let g = global.clone();
    let service = service_fn(move |req| {
        conn.request_started();
        let guard = Guard::new(g.clone(), conn.clone(), Instant::now());
        handler::handle(g.clone(), clients.clone(), peer, guard, req)
    });
    let mut http = Http::new();
    http.http1_only(true).http1_keep_alive(true).max_buf_size((400 * 1024).max(global.cfg.max_header_bytes + 8192));
    // errors here are the client's (hang-ups, malformed requests hyper answered itself)
    let _ = http.serve_connection(io, service).await;
}

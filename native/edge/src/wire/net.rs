//! Client connections: the core's unix socket and upstreams over TCP (+ OpenSSL TLS), as
//! hyper connectors, and the per-thread pooled clients.

use hyper::client::connect::{Connected, Connection};
use hyper::service::Service;
use hyper::{Body, Client, Uri};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_openssl::SslStream;

pub enum Stream {
    Tcp(TcpStream),
    Tls(Pin<Box<SslStream<TcpStream>>>),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => s.as_mut().poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => s.as_mut().poll_write(cx, data),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => s.as_mut().poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => s.as_mut().poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

/// Connects to the core's unix socket, whatever the URI says.
#[derive(Clone)]
pub struct UnixConnector(pub Arc<str>);

impl Service<Uri> for UnixConnector {
    type Response = Stream;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> ConnectFuture {
        let path = self.0.clone();
        Box::pin(async move { UnixStream::connect(&*path).await.map(Stream::Unix) })
    }
}

/// Connects to one upstream origin (pinned host/port), TLS verified for `host`.
#[derive(Clone)]
pub struct UpstreamConnector {
    host: Arc<str>,
    port: u16,
    tls: Option<Arc<SslConnector>>,
    connect_timeout: Duration,
}

/// Why a connection attempt failed (the 502's message); never a secret.
#[derive(Debug)]
pub struct ConnectError(pub &'static str);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ConnectError {}

impl Service<Uri> for UpstreamConnector {
    type Response = Stream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let work = async {
                let tcp = TcpStream::connect((&*me.host, me.port))
                    .await
                    .map_err(|_| ConnectError("the upstream could not be reached"))?;
                let _ = tcp.set_nodelay(true);
                let tls = match me.tls {
                    None => return Ok(Stream::Tcp(tcp)),
                    Some(t) => t,
                };
                let ssl = tls
                    .configure()
                    .and_then(|c| c.into_ssl(&me.host))
                    .map_err(|_| ConnectError("the TLS handshake with the upstream failed"))?;
                let mut s = Box::pin(
                    SslStream::new(ssl, tcp).map_err(|_| ConnectError("the TLS handshake with the upstream failed"))?,
                );
                match s.as_mut().connect().await {
                    Ok(()) => Ok(Stream::Tls(s)),
                    Err(_) => {
                        let verify = s.ssl().verify_result();
                        if verify != openssl::x509::X509VerifyResult::OK {
                            Err(ConnectError("the upstream's TLS certificate could not be verified"))
                        } else {
                            Err(ConnectError("the TLS handshake with the upstream failed"))
                        }
                    }
                }
            };
            match tokio::time::timeout(me.connect_timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(ConnectError("connecting to the upstream timed out")),
            }
        })
    }
}

pub fn upstream_tls(ca_bundle: Option<&str>) -> Result<SslConnector, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::PEER);
    match ca_bundle {
        Some(path) => b.set_ca_file(path).map_err(|e| format!("upstream_ca_bundle: {e}"))?,
        None => {
            let probe = openssl_probe_paths();
            if b.set_default_verify_paths().is_err() && probe.is_none() {
                return Err("no system trust store".into());
            }
            if let Some(file) = probe {
                let _ = b.set_ca_file(file);
            }
        }
    }
    b.set_alpn_protos(b"\x08http/1.1").map_err(|e| e.to_string())?;
    Ok(b.build())
}

fn openssl_probe_paths() -> Option<&'static str> {
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

/// bytes an upstream may send before its response head is complete (as the Python client)
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

pub type UpstreamClient = Client<UpstreamConnector, Body>;
pub type CoreClient = Client<UnixConnector, Body>;

/// One event-loop thread's clients (hyper's pools belong to the runtime that made them).
pub struct Clients {
    pub core: CoreClient,
    upstreams: Mutex<HashMap<(String, String, u16), UpstreamClient>>,
    tls: Arc<SslConnector>,
    connect_timeout: Duration,
    idle_ttl: Duration,
}

impl Clients {
    pub fn new(core_socket: &str, tls: Arc<SslConnector>, connect_timeout: Duration, idle_ttl: Duration) -> Clients {
        let core = Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .set_host(false)
            .build(UnixConnector(Arc::from(core_socket)));
        Clients { core, upstreams: Mutex::new(HashMap::new()), tls, connect_timeout, idle_ttl }
    }

    pub fn upstream(&self, scheme: &str, host: &str, port: u16) -> UpstreamClient {
        let mut map = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        let key = (scheme.to_string(), host.to_string(), port);
        if let Some(c) = map.get(&key) {
            return c.clone();
        }
        let conn = UpstreamConnector {
            host: Arc::from(host),
            port,
            tls: if scheme == "https" { Some(self.tls.clone()) } else { None },
            connect_timeout: self.connect_timeout,
        };
        let client = Client::builder()
            .pool_idle_timeout(self.idle_ttl)
            .set_host(false)
            .retry_canceled_requests(false)
            // a response head must fit (as Python's MAX_RESPONSE_HEAD): else "invalid response"
            .http1_max_buf_size(MAX_RESPONSE_HEAD)
            .build(conn);
        map.insert(key, client.clone());
        client
    }
}

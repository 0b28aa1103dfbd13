//! `Expect: 100-continue` on a request handed to the core: the core decides whether it wants
//! the body (it answers a refused request at once, without `100 Continue`, and the client
//! never sends the body), so the client's body is not asked for (hyper's server sends
//! `100 Continue` when the body is first polled) until the core has sent its own
//! `100 Continue`. hyper's client drops interim responses, so the request goes over a
//! connection of its own whose first response bytes are watched for `HTTP/1.1 100 `.

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use hyper::body::HttpBody;
use hyper::{Body, Request, Response};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::body::BoxError;

const CONTINUE: &[u8] = b"HTTP/1.1 100 ";

/// The core's connection, telling (once) whether its first response is `100 Continue`.
struct Watch {
    inner: UnixStream,
    seen: Vec<u8>,
    tell: Option<oneshot::Sender<bool>>,
}

impl AsyncRead for Watch {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if me.tell.is_some() {
            if let Poll::Ready(Ok(())) = &r {
                let new = &buf.filled()[before..];
                let want = CONTINUE.len() - me.seen.len();
                me.seen.extend_from_slice(&new[..new.len().min(want)]);
                if new.is_empty() || me.seen.len() == CONTINUE.len() || !CONTINUE.starts_with(&me.seen) {
                    let go = me.seen == CONTINUE;
                    if let Some(t) = me.tell.take() {
                        let _ = t.send(go);
                    }
                }
            }
        }
        r
    }
}

impl AsyncWrite for Watch {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Held by the response: dropping it ends the dedicated connection.
pub struct Done(#[allow(dead_code)] oneshot::Sender<()>);

/// Sends `req` (its `Expect` header kept) over a new connection to the core; the client's
/// `body` is polled only once the core answered `100 Continue`. `wrap` turns the client body
/// into what is sent (the body timeout and its failure flags).
pub async fn request(
    core_socket: &str,
    req: Request<()>,
    body: Body,
    wrap: impl FnOnce(Body) -> Body + Send + 'static,
) -> Result<(Response<Body>, Done), BoxError> {
    let io = UnixStream::connect(core_socket).await?;
    let (tell, told) = oneshot::channel();
    let watch = Watch { inner: io, seen: Vec::with_capacity(CONTINUE.len()), tell: Some(tell) };
    let (mut sender, conn) = hyper::client::conn::Builder::new().handshake::<_, Body>(watch).await?;
    let (done, ended) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = conn => {}
            _ = ended => {}
        }
    });
    // the client body, once the core asked for it; else never (the response ends it all)
    let gate = async move {
        match told.await {
            Ok(true) => RestOf(wrap(body)),
            _ => std::future::pending().await,
        }
    };
    let gated = stream::once(gate).flatten();
    let (parts, ()) = req.into_parts();
    let resp = sender.send_request(Request::from_parts(parts, Body::wrap_stream(gated))).await?;
    Ok((resp, Done(done)))
}

/// A body as a stream of chunks.
struct RestOf(Body);

impl futures_util::Stream for RestOf {
    type Item = Result<Bytes, hyper::Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.get_mut().0).poll_data(cx)
    }
}

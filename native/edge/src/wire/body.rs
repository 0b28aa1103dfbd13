//! The response body sent to clients: a whole buffer or a stream (with a stall timeout and a
//! usage copy), carrying what must happen when the response ends: record, lease release,
//! the connection's idle clock.

use super::server::ConnShared;
use super::Global;
use bytes::Bytes;
use hyper::body::HttpBody;
use hyper::{Body, HeaderMap};
use kgpolicy::audit::{render_row, RequestAudit};
use kgpolicy::limits::Lease;
use kgpolicy::pricing::usage_from_response;
use kgpolicy::protocol::Record;
use kgpolicy::usage::UsageCopy;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What happens when a response ends (or is dropped unfinished).
pub struct Guard {
    pub global: Arc<Global>,
    pub lease: Option<Lease>,
    /// Some: the edge answered this request itself and records it
    pub record: Option<Record>,
    pub start: Instant,
    /// the request JSON, for the record when the supervisor must estimate
    pub request_json: Option<Bytes>,
    pub conn: Option<Arc<ConnShared>>,
    pub completed: bool,
    /// the response's top-level `usage` object
    pub usage: Option<serde_json::Value>,
    /// the secrets the audit row is redacted under (`Compiled::audit_known`)
    pub audit_known: Option<Arc<Vec<String>>>,
    /// a dedicated core connection, ended with the response
    pub hold: Option<super::expect::Done>,
}

impl Guard {
    pub fn new(global: Arc<Global>, conn: Arc<ConnShared>, start: Instant) -> Guard {
        Guard {
            global,
            lease: None,
            record: None,
            start,
            request_json: None,
            conn: Some(conn),
            completed: false,
            usage: None,
            audit_known: None,
            hold: None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.global.limiter.release(lease);
        }
        if let Some(mut rec) = self.record.take() {
            rec.t = super::unix_micros();
            rec.latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
            if rec.upstream_status > 0 && !self.completed {
                // the client hung up or the upstream stalled: the upstream had the request
                rec.abandoned = true;
            }
            rec.completed = rec.completed || (self.completed && rec.upstream_status > 0);
            if let Some(usage) = self.usage.take() {
                // `settle_figures`: reported usage -> its total, priced for the model
                if let (Some(prices), Some(u)) = (&self.global.prices, usage_from_response(&usage)) {
                    let model = rec.model.as_deref().filter(|m| !m.is_empty());
                    rec.tokens = Some(u.total);
                    rec.cost_nano = Some(prices.cost_nano(model, u.input, u.output, u.cached));
                }
                rec.usage = serde_json::to_string(&usage).ok();
            }
            if rec.usage.is_none() {
                // `settle_figures` without usage: the estimate only when the upstream answered
                // (< 400, completed or < 300) or had the request when it stopped; otherwise
                // nothing is charged, and the supervisor need not price anything
                let s = rec.upstream_status;
                let estimate = (s > 0 && s < 400 && (rec.completed || s < 300))
                    || (s == 0 && rec.abandoned);
                if !estimate {
                    rec.tokens = Some(0);
                    rec.cost_nano = Some(0);
                }
            }
            let wants_body =
                rec.abandoned || ((1..400).contains(&rec.upstream_status) && rec.usage.is_none());
            if wants_body {
                if let Some(json) = &self.request_json {
                    rec.body = Some(String::from_utf8_lossy(json).into_owned());
                }
            }
            if let Some(known) = &self.audit_known {
                rec.audit = render_row(
                    &RequestAudit {
                        time_us: rec.t,
                        key_id: rec.key_id.as_deref(),
                        client_ip: &rec.client_ip,
                        method: &rec.method,
                        path: &rec.path,
                        model: rec.model.as_deref(),
                        status: rec.status,
                        latency_ms: rec.latency_ms,
                        upstream: rec.upstream.as_deref(),
                        version: rec.version,
                    },
                    known,
                );
            }
            self.global.out.record(&rec);
        }
        if let Some(conn) = self.conn.take() {
            conn.response_done();
        }
    }
}

enum Inner {
    Full(Option<Bytes>),
    Stream { body: Body, stall: Duration, sleep: Pin<Box<Sleep>> },
}

pub struct EdgeBody {
    inner: Inner,
    /// an error held back for one turn, so that hyper flushes what it has (the head) first
    failure: Option<BoxError>,
    /// the upstream body broke or stalled: the response is cut, never completed
    broken: bool,
    usage: Option<UsageCopy>,
    guard: Option<Guard>,
}

impl EdgeBody {
    pub fn full(data: impl Into<Bytes>, guard: Guard) -> EdgeBody {
        EdgeBody { inner: Inner::Full(Some(data.into())), failure: None, broken: false, usage: None, guard: Some(guard) }
    }

    /// A streamed body; `stall`: longest pause between chunks (then the response is cut).
    pub fn stream(body: Body, stall: Duration, usage: Option<UsageCopy>, guard: Guard) -> EdgeBody {
        let sleep = Box::pin(tokio::time::sleep(stall));
        EdgeBody { inner: Inner::Stream { body, stall, sleep }, failure: None, broken: false, usage, guard: Some(guard) }
    }

    fn finished(&mut self) {
        if let Some(g) = self.guard.as_mut() {
            g.completed = true;
            if let Some(u) = self.usage.take() {
                g.usage = u.finish_value();
            }
        }
    }
}

/// How long a response the client dropped unfinished waits for the upstream's end that may
/// already be in flight (a client that closes right after the last SSE event, before the
/// edge has read the upstream's terminating chunk: the upstream did finish).
const SETTLE_GRACE: Duration = Duration::from_millis(20);

impl Drop for EdgeBody {
    fn drop(&mut self) {
        let unfinished = self.guard.as_ref().is_some_and(|g| !g.completed && g.record.is_some());
        if !unfinished {
            return;
        }
        let Inner::Stream { body, .. } = &mut self.inner else { return };
        if body.is_end_stream() || self.broken {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let mut body = std::mem::take(body);
        let mut guard = self.guard.take().expect("checked above");
        if let Some(lease) = guard.lease.take() {
            guard.global.limiter.release(lease); // the client is gone: its slot is free now
        }
        let mut usage = self.usage.take();
        handle.spawn(async move {
            let ended = tokio::time::timeout(SETTLE_GRACE, async {
                loop {
                    match body.data().await {
                        Some(Ok(c)) if c.is_empty() => continue,
                        Some(_) => return false, // more than the client got, or broken
                        None => return true,
                    }
                }
            })
            .await
            .unwrap_or(false);
            if ended {
                guard.completed = true;
                if let Some(u) = usage.take() {
                    guard.usage = u.finish_value();
                }
            }
            drop(body);
            drop(guard);
        });
    }
}

#[derive(Debug)]
struct Stalled;

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream stalled")
    }
}

impl std::error::Error for Stalled {}

impl HttpBody for EdgeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_data(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let me = self.get_mut();
        if let Some(e) = me.failure.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let failed: BoxError = match &mut me.inner {
            Inner::Full(data) => {
                let d = data.take();
                me.finished();
                return Poll::Ready(d.map(Ok));
            }
            Inner::Stream { body, stall, sleep } => match Pin::new(&mut *body).poll_data(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let deadline = tokio::time::Instant::now() + *stall;
                    sleep.as_mut().reset(deadline);
                    if let Some(u) = me.usage.as_mut() {
                        u.feed(&chunk);
                    }
                    if body.is_end_stream() {
                        // a sized body: hyper may never poll for its end
                        me.finished();
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Err(e))) => {
                    eprintln!("keyguard-edge: a response body broke off ({})", kind_of(&e));
                    Box::new(e)
                }
                Poll::Ready(None) => {
                    me.finished();
                    return Poll::Ready(None);
                }
                Poll::Pending => match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        eprintln!("keyguard-edge: the upstream stalled mid-body: response cut");
                        Box::new(Stalled)
                    }
                    Poll::Pending => return Poll::Pending,
                },
            },
        };
        // cut after one more turn: hyper then flushes the head and chunks it holds
        me.broken = true;
        me.failure = Some(failed);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_trailers(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<Option<HeaderMap>, BoxError>> {
        Poll::Ready(Ok(None))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(d) => d.is_none(),
            Inner::Stream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.inner {
            Inner::Full(Some(d)) => hyper::body::SizeHint::with_exact(d.len() as u64),
            Inner::Full(None) => hyper::body::SizeHint::with_exact(0),
            Inner::Stream { body, .. } => body.size_hint(),
        }
    }
}

use std::future::Future;

fn kind_of(e: &hyper::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_incomplete_message() {
        "incomplete message"
    } else if e.is_closed() || e.is_canceled() {
        "closed"
    } else {
        "error"
    }
}

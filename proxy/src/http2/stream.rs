//! One HTTP/2 stream, on its connection's task: the phases over the raw HTTP/1.1 client for a
//! request without a body to an HTTP/1.1 upstream ([`Raw`]), else the general path.
//!
//! A client that resets the stream while the proxy waits for the backend cancels the
//! exchange (the upstream connection is closed, the request is logged as the client's: 499),
//! as hyper did.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::header::{self, HeaderMap};
use http::{Method, Request};

use super::head::{write_upstream_head, H2Head};
use super::respond;
use crate::access_log::{AccessLog, Pending};
use crate::body::{ClientBody, H2Body};
use crate::edge::{Edge, Rejection};
use crate::error::ProxyError;
use crate::general;
use crate::headers;
use crate::mirror::Copy;
use crate::phases::{self, Served, Transport};
use crate::request::{End, RequestCtx};
use crate::retry::{self as policy, Failed};
use crate::table::{Backend, ServiceRoute};
use crate::upstream::raw::{self, Asked, ResponseHead};
use crate::upstream::RawConn;

/// What the streams of one connection share.
pub(super) struct Shared {
    pub(super) edge: Arc<Edge>,
    pub(super) client: SocketAddr,
    /// The client's address as `X-Forwarded-For` writes it.
    pub(super) client_ip: String,
    /// For the general path (hyper's client); holds the connection's slot.
    pub(super) general: Arc<general::Conn>,
}

/// Serves one stream to its end.
pub(super) async fn serve(c: &Shared, req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    if !req.body().is_end_stream() || req.method() == Method::CONNECT {
        // Boxed: rare, and its future is large (hyper's client, body state).
        return Box::pin(general_path(c, req, respond)).await;
    }
    let edge = &*c.edge;
    let arrived = Instant::now();
    let mut ctx = RequestCtx::new(edge.table.load_full(), c.client, edge.scheme, arrived);
    let mut t = Raw {
        req: &req,
        client_ip: &c.client_ip,
        request: Vec::new(),
        head: H2Head::default(),
    };
    // Pinned here and polled through a reference: a future passed by value into an async
    // fn is stored twice in its state (argument and local), ~1 KiB more per stream to copy.
    let served = {
        let phases = pin!(phases::run(edge, &mut ctx, &mut t));
        until_reset(&mut respond, phases).await
    };
    let Some(served) = served else {
        // The client reset the stream: the exchange is dropped, `ctx` logs it as the client's.
        return;
    };
    let head = std::mem::take(&mut t.head);
    drop(t);
    match served {
        Served::Upstream((mut up, response)) => {
            let head_method = req.method() == Method::HEAD;
            let pool = response.upstream_keep_alive;
            // By reference: the context and connection stay in this future's state once.
            let clean = respond::raw(&mut respond, head, &mut up, response, &mut ctx, head_method);
            if clean.await && pool {
                let backend = ctx.backend.expect("answered by a backend");
                ctx.version().backends[backend].pool.put_raw(up);
            }
        }
        Served::Proxy(e) => {
            let bytes = e.body().len() as u64;
            respond::general(&mut respond, general::into_response(&e)).await;
            ctx.finish(End::Complete, bytes);
        }
        Served::HandOff => {
            ctx.hand_off();
            Box::pin(general_path(c, req, respond)).await;
        }
    }
}

/// The general path for this stream: hyper's client, the client's body streamed to it
/// (`CONNECT`: none).
async fn general_path(c: &Shared, req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| headers::content_length(v.as_bytes()));
    let req = match req.method() == Method::CONNECT {
        // Never a tunnel (hyper's server answered it the same way): the stream's DATA is
        // dropped unread.
        true => req.map(|_| ClientBody::Empty),
        false => req.map(|recv| ClientBody::Http2(H2Body::new(recv, length))),
    };
    let handle = pin!(general::handle(&c.general, req));
    let Some(response) = until_reset(&mut respond, handle).await else {
        return;
    };
    respond::general(&mut respond, response).await;
}

/// Runs `f` until it ends, or `None` if the client resets the stream first.
pub(super) async fn until_reset<F: Future>(
    respond: &mut SendResponse<Bytes>,
    mut f: Pin<&mut F>,
) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A bodyless request to an HTTP/1.1 upstream, as this transport holds it through the phases.
struct Raw<'a> {
    req: &'a Request<RecvStream>,
    client_ip: &'a str,
    /// The upstream request head (kept until the response head came: a retry resends it).
    request: Vec<u8>,
    /// The response head for the client, filled in by the raw client.
    head: H2Head,
}

impl Transport for Raw<'_> {
    type Head = Request<RecvStream>;
    type Response = (RawConn, ResponseHead);

    fn head(&self) -> &Request<RecvStream> {
        self.req
    }

    fn check(&mut self, edge: &Edge) -> Result<(), ProxyError> {
        general::check_h2(self.req.headers())
            .inspect_err(|_| edge.rejections.count(Rejection::BadRequest))
    }

    fn takes(&self, service: &ServiceRoute) -> bool {
        // HTTP/2 upstreams are the general path's; it starts this request over.
        service.upstream_is_http1
    }

    fn log_line(&self, log: &Arc<AccessLog>, ctx: &RequestCtx) -> Pending {
        Pending::of_request(log, ctx.client, self.req, ctx.arrived)
    }

    fn prepare(&mut self, ctx: &RequestCtx, _keep: Option<u64>) {
        write_upstream_head(&mut self.request, self.req, self.client_ip, ctx.scheme);
    }

    fn again(&mut self) -> bool {
        // No body, and the upstream head stays in `request` until the response head came.
        true
    }

    fn copy(&mut self, _max_body: u64) -> Option<Copy> {
        // No body on this path.
        let method = self.req.method();
        Some(Copy::Raw {
            head: self.request.clone(),
            head_method: method == Method::HEAD,
            idempotent: policy::is_idempotent(method.as_str().as_bytes()),
        })
    }

    async fn exchange(
        &mut self,
        service: &ServiceRoute,
        backend: &Backend,
        _sent: &mut Instant,
    ) -> Result<(RawConn, ResponseHead), Failed> {
        let method = self.req.method();
        let asked = Asked {
            request: &self.request,
            head_method: method == Method::HEAD,
            idempotent: policy::is_idempotent(method.as_str().as_bytes()),
            client_close: false,
            may_reconnect: policy::may_reconnect,
        };
        raw::exchange(&backend.pool, asked, &service.timeouts, &mut self.head)
            .await
            .map_err(Failed::from)
    }

    fn status(response: &(RawConn, ResponseHead)) -> (u16, Option<&HeaderMap>) {
        (response.1.status, None)
    }
}

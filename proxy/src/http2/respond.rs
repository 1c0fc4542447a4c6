//! Respond, HTTP/2's part: a response head and its body sent on a stream, with the stream's
//! flow control as backpressure (a body is read from its source only as fast as the client's
//! window lets it go), trailers, and a reset when the source breaks off.
//!
//! Two sources: the raw HTTP/1.1 upstream connection ([`raw`]: the body taken out of its
//! framing — chunked data and trailers included — and the connection pooled again after a
//! clean end), and a general-path response ([`general`]: hyper's upstream body or a
//! proxy-made answer, as hyper's server sent it: connection headers out, `date` and
//! `content-length` added when missing).

use std::future::Future;
use std::ops::Range;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, SendStream};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;
use tokio::io::AsyncReadExt;

use super::head::H2Head;
use crate::headers;
use crate::request::{End, RequestCtx};
use crate::response::ResponseBody;
use crate::upstream::raw::{Framing, ResponseHead};
use crate::upstream::RawConn;

/// Read size for a body streamed from the upstream.
const BODY_READ: usize = 64 * 1024;

/// Sends the raw upstream's response: `head` (already the client's headers), then its body,
/// then finishes `ctx`. True if the exchange ended cleanly: nothing of it is left unread on
/// `up`, which the caller may then pool (if the upstream keeps it alive).
pub(super) async fn raw(
    respond: &mut SendResponse<Bytes>,
    head: H2Head,
    up: &mut RawConn,
    response: ResponseHead,
    ctx: &mut RequestCtx,
    head_method: bool,
) -> bool {
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    *res.headers_mut() = head.headers;
    date_if_missing(res.headers_mut());
    let ResponseHead { mut framing, .. } = response;
    let empty = head_method || matches!(framing, Framing::Length(0));
    let mut send = match respond.send_response(res, empty) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 response head not sent");
            ctx.finish(End::ClientGone, 0);
            return false;
        }
    };
    if empty {
        ctx.finish(End::Complete, 0);
        return up.buf.is_empty();
    }
    let mut sent = 0u64;
    // The payload's runs in what was read: one for a length-framed body (kept out of `more`,
    // so such a body allocates nothing here), more for chunks.
    let mut more: Vec<Range<usize>> = Vec::new();
    let mut trailers = matches!(framing, Framing::Chunked(_)).then(Vec::new);
    loop {
        if !up.buf.is_empty() {
            let mut first = None;
            more.clear();
            let run = |r| match first {
                None => first = Some(r),
                Some(_) => more.push(r),
            };
            let Ok((n, done)) = framing.decode(&up.buf, run, trailers.as_mut()) else {
                send.send_reset(Reason::INTERNAL_ERROR);
                ctx.finish(End::UpstreamAborted, sent);
                return false;
            };
            let reusable = n == up.buf.len();
            if !more.is_empty() {
                more.insert(0, first.take().expect("the first run comes first"));
            }
            let runs = if more.is_empty() {
                first.as_slice()
            } else {
                &more[..]
            };
            let data = payload(&mut up.buf, n, runs);
            sent += data.len() as u64;
            let more_frames = trailers.as_ref().is_some_and(|t| !t.is_empty());
            if !data.is_empty() && capacity(&mut send).await.is_err() {
                ctx.finish(End::ClientGone, sent);
                return false;
            }
            if !data.is_empty() || (done && !more_frames) {
                let eos = done && !more_frames;
                if send.send_data(data, eos).is_err() {
                    ctx.finish(End::ClientGone, sent);
                    return false;
                }
            }
            if done {
                if let Some(t) = trailers.filter(|t| !t.is_empty()) {
                    let _ = send.send_trailers(parse_trailers(&t));
                }
                ctx.finish(End::Complete, sent);
                return reusable;
            }
        }
        if up.buf.capacity() - up.buf.len() < 4096 {
            up.buf.reserve(BODY_READ);
        }
        let read = until_reset(&mut send, up.stream.read_buf(&mut up.buf)).await;
        match read {
            None => {
                // The client reset the stream: the rest of the body is never read.
                ctx.finish(End::ClientGone, sent);
                return false;
            }
            Some(Ok(0)) if matches!(framing, Framing::UntilClose) => {
                let _ = send.send_data(Bytes::new(), true);
                ctx.finish(End::Complete, sent);
                return false;
            }
            Some(Ok(0) | Err(_)) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                ctx.finish(End::UpstreamAborted, sent);
                return false;
            }
            Some(Ok(_)) => {}
        }
    }
}

/// The body bytes among the first `n` of `buf` (`runs`, ascending): taken out of the buffer
/// without a copy when they are all of it, else moved together first (chunk framing out).
fn payload(buf: &mut BytesMut, n: usize, runs: &[Range<usize>]) -> Bytes {
    match runs {
        [] => {
            let _ = buf.split_to(n);
            Bytes::new()
        }
        [one] if one.start == 0 && one.end == n => buf.split_to(n).freeze(),
        _ => {
            let mut at = 0;
            for r in runs {
                buf.copy_within(r.clone(), at);
                at += r.len();
            }
            let mut data = buf.split_to(n);
            data.truncate(at);
            data.freeze()
        }
    }
}

/// A chunked body's trailer lines as headers (what `http` refuses is left out).
fn parse_trailers(lines: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut block = lines.to_vec();
    block.extend_from_slice(b"\r\n");
    if let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&block, &mut raw) {
        for h in parsed {
            let name = http::HeaderName::from_bytes(h.name.as_bytes());
            if let (Ok(name), Ok(value)) = (name, HeaderValue::from_bytes(h.value)) {
                if !headers::is_hop_by_hop(name.as_str().as_bytes()) {
                    map.append(name, value);
                }
            }
        }
    }
    map
}

/// Sends a general-path response (hyper's upstream body, or a proxy-made answer) as hyper's
/// HTTP/2 server did. The body carries its request's context and finishes it.
pub(super) async fn general(respond: &mut SendResponse<Bytes>, response: Response<ResponseBody>) {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    date_if_missing(&mut parts.headers);
    let eos = body.is_end_stream();
    if let Some(n) = body.size_hint().exact().filter(|_| !eos) {
        parts
            .headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(n));
    }
    let send = respond.send_response(Response::from_parts(parts, ()), eos);
    let mut send = match send {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 response head not sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if !eos {
        // Dropping the body (here or on a reset) finishes its request if it has not ended.
        let mut body = pin!(body);
        let mut held = None;
        let _ = std::future::poll_fn(|cx| pipe(&mut send, body.as_mut(), &mut held, cx)).await;
    }
}

/// One step of piping `body` into `send` (hyper's `PipeToSendStream`): ready when the body
/// has ended, the client reset the stream, or the body broke off (then the stream is reset).
/// A data frame is taken from the body first and `held` until the stream has window for it:
/// window reserved before there is data could starve another stream of the connection's.
fn pipe(
    send: &mut SendStream<Bytes>,
    mut body: Pin<&mut ResponseBody>,
    held: &mut Option<(Bytes, bool)>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), ()>> {
    loop {
        if send.poll_reset(cx).is_ready() {
            return Poll::Ready(Err(()));
        }
        if held.is_some() {
            while send.capacity() == 0 {
                match send.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(0))) => {}
                    Poll::Ready(Some(Ok(_))) => break,
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(Err(())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let (data, eos) = held.take().expect("checked");
            send.send_data(data, eos).map_err(drop)?;
            if eos {
                return Poll::Ready(Ok(()));
            }
            continue;
        }
        let frame = match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                send.send_reset(reason_of(&e));
                return Poll::Ready(Err(()));
            }
            Poll::Ready(None) => {
                return Poll::Ready(send.send_data(Bytes::new(), true).map_err(drop));
            }
            Poll::Pending => return Poll::Pending,
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {
                let eos = body.is_end_stream();
                send.send_data(data, eos).map_err(drop)?;
                if eos {
                    return Poll::Ready(Ok(()));
                }
            }
            Ok(data) => {
                send.reserve_capacity(1);
                *held = Some((data, body.is_end_stream()));
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.reserve_capacity(0);
                    return Poll::Ready(send.send_trailers(trailers).map_err(drop));
                }
            }
        }
    }
}

/// The reset reason for a broken upstream body: an HTTP/2 upstream's own, else
/// `INTERNAL_ERROR` (as hyper chose it).
fn reason_of(e: &(dyn std::error::Error + 'static)) -> Reason {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(reason) = e.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return reason;
        }
        cause = e.source();
    }
    Reason::INTERNAL_ERROR
}

/// Waits until the stream may send data (at least one byte of window); `Err` if it never will.
async fn capacity(send: &mut SendStream<Bytes>) -> Result<(), ()> {
    if send.capacity() > 0 {
        return Ok(());
    }
    send.reserve_capacity(1);
    std::future::poll_fn(|cx| loop {
        if send.poll_reset(cx).is_ready() {
            return Poll::Ready(Err(()));
        }
        match send.poll_capacity(cx) {
            Poll::Ready(Some(Ok(0))) => {}
            Poll::Ready(Some(Ok(_))) => return Poll::Ready(Ok(())),
            Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(Err(())),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Runs `f` until it ends, or `None` if the client resets the stream first.
async fn until_reset<F: Future>(send: &mut SendStream<Bytes>, f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match send.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// RFC 9110 §6.6.1, as hyper's server adds it: most upstreams send their own.
fn date_if_missing(headers: &mut HeaderMap) {
    if !headers.contains_key(header::DATE) {
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        if let Ok(v) = HeaderValue::from_str(&now) {
            headers.insert(header::DATE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_framing_is_taken_out_of_the_payload() {
        let mut buf = BytesMut::from(&b"4\r\nwiki\r\n5\r\npedia\r\nNEXT"[..]);
        let data = payload(&mut buf, 19, &[3..7, 12..17]);
        assert_eq!(&data[..], b"wikipedia");
        assert_eq!(&buf[..], b"NEXT");
        let mut buf = BytesMut::from(&b"hello!"[..]);
        let whole = std::slice::from_ref(&(0..5));
        assert_eq!(&payload(&mut buf, 5, whole)[..], b"hello");
        assert_eq!(&buf[..], b"!");
    }

    #[test]
    fn trailer_lines_become_headers() {
        let t = parse_trailers(b"x-sum: 1\r\nConnection: close\r\nx-b: 2\r\n");
        assert_eq!(t.len(), 2);
        assert_eq!(t["x-sum"], "1");
    }
}

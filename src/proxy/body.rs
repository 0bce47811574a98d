//! Body types on the request path: the response body the gateway sends (an upstream
//! stream or a small gateway-made body) and the request body wrapper that enforces the
//! size limit while streaming (nothing is buffered whole).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::upstream_guard::Admission;

/// Error of a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// What the public listener answers with.
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        /// The upstream's response, streamed through; holds the upstream's bulkhead slot
        /// until the body is done.
        Upstream { #[pin] body: Incoming, slot: Option<Admission> },
        /// A response the gateway made itself (errors, pages, JSON).
        Local { #[pin] body: Full<Bytes> },
        /// An upstream stream of a session: cut off once the session is revoked.
        Watched {
            #[pin] body: Incoming,
            revoked: Pin<Box<dyn Future<Output = ()> + Send>>,
            slot: Option<Admission>,
        },
    }
}

/// The stream of a revoked session was cut off.
#[derive(Debug, thiserror::Error)]
#[error("session revoked; stream closed")]
pub struct StreamRevoked;

impl ProxyBody {
    /// A gateway-made body.
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Local {
            body: Full::new(bytes.into()),
        }
    }

    /// An upstream body, streamed; `slot` is released when the body is dropped.
    pub fn upstream(body: Incoming, slot: Option<Admission>) -> Self {
        ProxyBody::Upstream { body, slot }
    }

    /// An upstream body of a session, ended with an error (the connection or stream is
    /// reset) as soon as `revoked` resolves.
    pub fn watched(
        body: Incoming,
        revoked: impl Future<Output = ()> + Send + 'static,
        slot: Option<Admission>,
    ) -> Self {
        ProxyBody::Watched {
            body,
            revoked: Box::pin(revoked),
            slot,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Upstream { body, .. } => body.poll_frame(cx).map_err(Into::into),
            ProxyBodyProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
            ProxyBodyProj::Watched { body, revoked, .. } => {
                if revoked.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(StreamRevoked))));
                }
                body.poll_frame(cx).map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local { body } => body.is_end_stream(),
            ProxyBody::Watched { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local { body } => body.size_hint(),
            ProxyBody::Watched { body, .. } => body.size_hint(),
        }
    }
}

/// The client's request body exceeded the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

pin_project_lite::pin_project! {
    /// Streams the client's request body upstream and fails the stream once more than
    /// `limit` bytes went through, so the upstream sees an aborted request, never an
    /// oversized one.
    pub struct LimitedBody {
        #[pin]
        inner: Incoming,
        remaining: u64,
        limit: u64,
    }
}

impl LimitedBody {
    /// Wraps a body with a byte limit.
    pub fn new(inner: Incoming, limit: u64) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            limit,
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*this.limit)))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! The response body the public listener sends: an upstream's stream (holding its
//! bulkhead slot until done, cut off when its session is revoked) or a small
//! gateway-made body. The request body sent upstream is `upstream::body`'s.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::upstream::BoxError;
use crate::upstream::guard::Admission;

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

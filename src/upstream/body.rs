//! The request body sent upstream: the client's body, streamed through and cut off once
//! it exceeds the route's limit, so the upstream sees an aborted request, never an
//! oversized one. Nothing is buffered whole. When the client's body is what broke the
//! exchange (bad chunked framing, cut short, over the limit), [`ClientBodyFault`] says
//! so, so that the client gets a 400 or 413 and the upstream is not blamed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Error of a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's request body exceeded the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// How the client's body failed on its way upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyFault {
    /// The body could not be read: malformed chunked framing (a bad chunk size, chunk
    /// data without its CRLF, oversized chunk extensions) or the client stopped early.
    Malformed,
    /// More than the route's limit arrived.
    TooLarge,
}

/// Where a [`LimitedBody`] records its [`ClientBodyFault`]; shared with whoever sends it,
/// since the body itself is gone once the exchange fails.
#[derive(Debug, Clone, Default)]
pub struct BodyFault(Arc<AtomicU8>);

impl BodyFault {
    const MALFORMED: u8 = 1;
    const TOO_LARGE: u8 = 2;

    /// The client's fault, if its body broke the stream.
    pub fn get(&self) -> Option<ClientBodyFault> {
        match self.0.load(Ordering::Acquire) {
            Self::MALFORMED => Some(ClientBodyFault::Malformed),
            Self::TOO_LARGE => Some(ClientBodyFault::TooLarge),
            _ => None,
        }
    }

    fn set(&self, fault: u8) {
        self.0.store(fault, Ordering::Release);
    }
}

pin_project_lite::pin_project! {
    /// Streams the client's request body upstream and fails the stream once more than
    /// `limit` bytes went through, so the upstream sees an aborted request, never an
    /// oversized one.
    pub struct LimitedBody {
        #[pin]
        inner: Incoming,
        remaining: u64,
        limit: u64,
        fault: BodyFault,
    }
}

impl LimitedBody {
    /// Wraps a body with a byte limit.
    pub fn new(inner: Incoming, limit: u64) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            limit,
            fault: BodyFault::default(),
        }
    }

    /// Where this body records the client's fault, to read after the exchange failed.
    pub fn fault(&self) -> BodyFault {
        self.fault.clone()
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
                        this.fault.set(BodyFault::TOO_LARGE);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*this.limit)))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fault.set(BodyFault::MALFORMED);
                Poll::Ready(Some(Err(e.into())))
            }
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

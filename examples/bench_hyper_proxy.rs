//! Reference contender for `bench/run.sh`: the least a hyper reverse proxy can do, with
//! nothing of a gateway (no routing, no header rules, no auth, no limits, no logs).
//! HTTP/1.1 in, HTTP/1.1 out over a keep-alive pool, on a current-thread tokio runtime.
//! It shows the ceiling of the stack Portcullis is built on, so the table can tell
//! "cost of hyper" apart from "cost of the gateway's checks".
//!
//! With `--forwarding` it also does the least any forwarding proxy in front of an app
//! does to the request: one scan over the header names dropping hop-by-hop ones, a request
//! id, and `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` (values formatted once per
//! connection). That row shows what the forwarding headers alone cost in hyper's
//! `HeaderMap`, a floor under any gateway's cost.
//!
//! Usage: `bench_hyper_proxy --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--forwarding]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The gateway's allocator: a reference on a slower allocator would flatter the ratio.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Idle upstream connections, taken when hyper says they are ready.
struct Pool {
    upstream: SocketAddr,
    idle: Mutex<Vec<SendRequest<Incoming>>>,
}

impl Pool {
    async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, Error> {
        let ready = {
            let mut idle = self.idle.lock().map_err(|_| "pool lock poisoned")?;
            idle.retain(|s| !s.is_closed());
            idle.iter().position(|s| s.is_ready()).map(|i| idle.swap_remove(i))
        };
        let mut sender = match ready {
            Some(sender) => sender,
            None => {
                let stream = TcpStream::connect(self.upstream).await?;
                stream.set_nodelay(true)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                sender
            }
        };
        let sent = sender.send_request(req);
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        Ok(sent.await?)
    }
}

/// The forwarding headers of one client connection, formatted once.
struct Forwarding {
    for_value: HeaderValue,
    host: Option<HeaderValue>,
    forwarded: HeaderValue,
}

impl Forwarding {
    fn of(peer: SocketAddr, host: Option<&HeaderValue>) -> Option<Self> {
        let ip = peer.ip().to_string();
        let host_text = host.and_then(|h| h.to_str().ok()).unwrap_or("-");
        Some(Forwarding {
            for_value: HeaderValue::from_str(&ip).ok()?,
            host: host.cloned(),
            forwarded: HeaderValue::from_str(&format!("for={ip};proto=http;host={host_text}")).ok()?,
        })
    }

    fn apply(&self, headers: &mut HeaderMap, request_id: u64) {
        const HOP_BY_HOP: [&str; 8] = [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-connection",
            "proxy-authorization",
        ];
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| HOP_BY_HOP.contains(&name.as_str()))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
        headers.insert(HeaderName::from_static("x-request-id"), HeaderValue::from(request_id));
        headers.insert(HeaderName::from_static("x-forwarded-for"), self.for_value.clone());
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
        if let Some(host) = &self.host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
        }
        headers.insert(http::header::FORWARDED, self.forwarded.clone());
    }
}

fn main() -> Result<(), Error> {
    let (listen, upstream, forwarding) = parse_args(std::env::args().skip(1))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream, forwarding))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, SocketAddr, bool), Error> {
    const USAGE: &str = "usage: bench_hyper_proxy --listen IP:PORT --upstream IP:PORT [--forwarding]";
    let (mut listen, mut upstream, mut forwarding) = (None, None, false);
    while let Some(arg) = args.next() {
        if arg == "--forwarding" {
            forwarding = true;
            continue;
        }
        let slot = match arg.as_str() {
            "--listen" => &mut listen,
            "--upstream" => &mut upstream,
            other => return Err(format!("unknown argument {other:?} ({USAGE})").into()),
        };
        let value = args.next().ok_or(USAGE)?;
        *slot = Some(
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("{arg} {value:?}: {e}"))?,
        );
    }
    Ok((listen.ok_or(USAGE)?, upstream.ok_or(USAGE)?, forwarding))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr, forwarding: bool) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).await?;
    let pool = Arc::new(Pool {
        upstream,
        idle: Mutex::new(Vec::new()),
    });
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let pool = pool.clone();
        tokio::spawn(async move {
            let cached: std::cell::OnceCell<Forwarding> = std::cell::OnceCell::new();
            let next_id = std::cell::Cell::new(0u64);
            let service = service_fn(move |mut req: Request<Incoming>| {
                if forwarding {
                    let fwd = cached.get_or_init(|| {
                        Forwarding::of(peer, req.headers().get(http::header::HOST)).unwrap_or(Forwarding {
                            for_value: HeaderValue::from_static("-"),
                            host: None,
                            forwarded: HeaderValue::from_static("for=unknown"),
                        })
                    });
                    next_id.set(next_id.get() + 1);
                    fwd.apply(req.headers_mut(), next_id.get());
                }
                let pool = pool.clone();
                async move {
                    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    if let Ok(uri) = path.parse() {
                        *req.uri_mut() = uri;
                    }
                    match pool.send(req).await {
                        Ok(resp) => Ok::<_, Infallible>(resp.map(http_body_util::Either::Left)),
                        Err(_) => {
                            let mut resp = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
                            *resp.status_mut() = StatusCode::BAD_GATEWAY;
                            Ok(resp)
                        }
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

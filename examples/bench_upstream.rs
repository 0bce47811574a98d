//! Benchmark upstream for `bench/run.sh`: a tiny hyper server on a current-thread tokio
//! runtime that answers every request `200 OK` with the same 64-byte body and a
//! `Content-Length`, so the benchmark measures the proxies in front of it, not an app.
//!
//! Usage: `bench_upstream --listen 127.0.0.1:PORT` (HTTP/1.1 and h2c prior knowledge).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The fixed response body: exactly 64 bytes (the type says so).
const BODY: &[u8; 64] = b"portcullis bench upstream: a fixed body of sixty-four bytes....\n";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let listen = parse_args(std::env::args().skip(1))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<SocketAddr, Error> {
    const USAGE: &str = "usage: bench_upstream --listen IP:PORT";
    let mut listen = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or(USAGE)?;
                let addr = value
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("--listen {value:?}: {e} ({USAGE})"))?;
                listen = Some(addr);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} ({USAGE})").into()),
        }
    }
    listen.ok_or_else(|| USAGE.into())
}

async fn serve(listen: SocketAddr) -> Result<(), Error> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the open connections.
                eprintln!("bench_upstream: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

async fn answer(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(BODY.len()));
    Ok(response)
}

//! WebSocket upgrades through the gateway (SPEC "Details": foreign Origin → 403).

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::*;

/// Waits up to `within` for the gateway's close frame, which must carry 1008 (policy);
/// `after` names what should have closed the socket.
pub(crate) async fn assert_closed_with_1008(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    within: std::time::Duration,
    after: &str,
) {
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return Some(frame),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the WebSocket stayed open {:?} after {after}", started.elapsed()));
    let frame = closed.unwrap_or_else(|| panic!("a close frame after {after}, not a dropped connection"));
    assert_eq!(
        frame.map(|f| f.code),
        Some(CloseCode::Policy),
        "close code 1008 after {after}"
    );
}

async fn ws_connect(
    gw: &Gateway,
    origin: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://acme.test:{}/public/ws", gw.public.port())
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    let tcp = TcpStream::connect(gw.public).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.map(|(ws, _)| ws)
}

async fn echo_once(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("echo in time")
        .expect("a frame")
        .unwrap();
    assert_eq!(reply, Message::text(text));
}

/// If the tunnel broke, WebSocket apps behind the gateway would stop working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway() {
    let (ups, gw) = start().await;
    let mut ws = ws_connect(&gw, None)
        .await
        .expect("upgrade without Origin (non-browser client)");
    echo_once(&mut ws, "hello through portcullis").await;
    echo_once(&mut ws, "second message").await;
    ws.close(None).await.unwrap();
    let got = ups.acme.only();
    assert_eq!(got.target, "/public/ws");
    assert_eq!(got.header("upgrade"), Some("websocket"));
    assert!(got.has_header("sec-websocket-key"));
}

/// Cross-site WebSocket hijacking: a foreign Origin must be refused before the upstream
/// sees the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_from_a_foreign_origin_is_403() {
    let (ups, gw) = start().await;
    for origin in [
        "http://evil.example",
        "http://globex.test",
        "null",
        "http://acme.test.evil.example",
    ] {
        match ws_connect(&gw, Some(origin)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403, "{origin}"),
            Err(e) => panic!("{origin}: expected a 403 answer, got {e}"),
            Ok(_) => panic!("{origin}: cross-origin WebSocket was upgraded"),
        }
    }
    assert_eq!(ups.total(), 0, "the upstream saw a cross-origin handshake");
}

/// A WebSocket on a protected route needs a session like any request (WS-01).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_on_a_protected_route_needs_a_session() {
    let (ups, gw) = start().await;
    let req = format!("ws://acme.test:{}/admin/ws", gw.public.port())
        .into_client_request()
        .unwrap();
    let tcp = TcpStream::connect(gw.public).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("expected a 401 answer, got {e}"),
        Ok(_) => panic!("a WebSocket on a protected route was upgraded without a session"),
    }
    assert_eq!(ups.total(), 0);
}

/// The tenant's own origin (any port, any scheme) is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_from_the_same_origin_works() {
    let (ups, gw) = start().await;
    let origin = format!("http://acme.test:{}", gw.public.port());
    let mut ws = ws_connect(&gw, Some(&origin)).await.expect("same-origin upgrade");
    echo_once(&mut ws, "same origin").await;
    assert_eq!(ups.acme.count(), 1);
}

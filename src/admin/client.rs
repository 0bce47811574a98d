//! A minimal client for the admin API, used by CLI commands that act on a running gateway.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address or path does not form a URL.
    #[error("invalid admin address `{0}`")]
    Address(String),
    /// The gateway could not be reached.
    #[error("cannot reach the admin API at {0}: {1}")]
    Unreachable(String, String),
}

/// `POST` with an operator bearer token; returns the status and body text.
pub async fn post(admin: &str, path: &str, token: &str) -> Result<(u16, String), ClientError> {
    let uri: http::Uri = format!("http://{admin}{path}")
        .parse()
        .map_err(|_| ClientError::Address(admin.to_string()))?;
    let req = http::Request::post(uri)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .map_err(|_| ClientError::Address(admin.to_string()))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(req)
        .await
        .map_err(|e| ClientError::Unreachable(admin.to_string(), e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Unreachable(admin.to_string(), e.to_string()))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

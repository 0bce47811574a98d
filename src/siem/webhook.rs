//! The webhook sink: batches of events POSTed as a JSON array (`Content-Type:
//! application/json`), with `Authorization: Bearer` when a token is configured.
//!
//! A batch is at most [`BATCH`] events or [`LINGER`] old. A failed POST (connection
//! refused, timeout, 5xx, 408, 429) is retried with backoff until it succeeds; other
//! answers (a 4xx the receiver will give again) drop the batch and count it. Delivery is
//! at least once: a receiver that stored a batch but answered an error gets it again,
//! and can tell by `event.id`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use super::Record;
use super::queue::{Backoff, Complaints, Queue};
use crate::config::WebhookSink;

/// Most events in one POST.
pub const BATCH: usize = 100;
/// Longest an event waits for its batch to fill.
pub const LINGER: Duration = Duration::from_secs(1);
/// Longest one POST may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a POST failed.
enum Failure {
    /// Worth trying again (the receiver is down, busy or broken for now).
    Transient(String),
    /// The receiver refuses this batch and would again.
    Refused(String),
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends the queue's events to the webhook; once `stop` turns true, sends what is left
/// and returns.
pub async fn run(sink: WebhookSink, queue: Arc<Queue>, mut stop: watch::Receiver<bool>) {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CALL_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: HttpsClient = Client::builder(TokioExecutor::new()).build(connector);
    let mut complaints = Complaints::new("webhook", Duration::from_secs(10));
    let mut backoff = Backoff::default();
    // Once stopping: what is left goes out, one attempt per batch.
    let mut stopping = false;
    loop {
        let batch = if stopping {
            let batch = queue.take(BATCH);
            if batch.is_empty() {
                return;
            }
            batch
        } else {
            tokio::select! {
                batch = queue.next_batch(BATCH, LINGER) => batch,
                () = super::stopping(&mut stop) => {
                    stopping = true;
                    continue;
                }
            }
        };
        let body = encode(&batch);
        let lost = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        loop {
            match post(&client, &sink, body.clone()).await {
                Ok(()) => {
                    backoff.reset();
                    complaints.report_drops(&queue);
                    break;
                }
                Err(Failure::Refused(why)) => {
                    queue.count_dropped(lost);
                    complaints.complain(&queue, &format!("batch refused and dropped: {why}"));
                    break;
                }
                Err(Failure::Transient(why)) => {
                    if stopping {
                        queue.count_dropped(lost);
                        tracing::warn!(sink = "webhook", "SIEM events lost at shutdown: {why}");
                        break;
                    }
                    complaints.complain(&queue, &why);
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = super::stopping(&mut stop) => stopping = true,
                    }
                }
            }
        }
    }
}

/// The batch as one JSON array.
fn encode(batch: &[Arc<Record>]) -> Bytes {
    let mut body = String::with_capacity(batch.iter().map(|r| r.json.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, record) in batch.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&record.json);
    }
    body.push(']');
    Bytes::from(body)
}

async fn post(client: &HttpsClient, sink: &WebhookSink, body: Bytes) -> Result<(), Failure> {
    let mut request = http::Request::post(sink.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = &sink.token {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(token.expose_secret());
        let mut value = http::HeaderValue::from_bytes(&value)
            .map_err(|_| Failure::Refused("the token is not usable in a header".to_string()))?;
        value.set_sensitive(true);
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| Failure::Refused(format!("bad request: {e}")))?;
    let response = match tokio::time::timeout(CALL_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(Failure::Transient(format!("{e}"))),
        Err(_) => return Err(Failure::Transient("no answer in time".to_string())),
    };
    let status = response.status();
    // Read the answer to the end so the connection can be reused.
    let _ = tokio::time::timeout(CALL_TIMEOUT, response.into_body().collect()).await;
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == http::StatusCode::REQUEST_TIMEOUT
        || status == http::StatusCode::TOO_MANY_REQUESTS
    {
        Err(Failure::Transient(format!("the receiver answered {status}")))
    } else {
        Err(Failure::Refused(format!("the receiver answered {status}")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::encode;
    use crate::siem::{Record, Severity};

    #[test]
    fn a_batch_is_one_json_array_of_the_records() {
        let record = |n: u32| {
            Arc::new(Record {
                id: n.to_string(),
                timestamp: String::new(),
                action: "login".into(),
                severity: Severity::Info,
                json: format!("{{\"n\":{n}}}"),
            })
        };
        let body = encode(&[record(1), record(2)]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!([{"n": 1}, {"n": 2}]));
    }
}

//! The syslog sink: each event as an RFC 5424 message, framed by octet counting
//! (RFC 6587 §3.4.1, as RFC 5425 requires over TLS), over one long-lived TCP connection
//! with TLS (`tls://`), or plain TCP to a loopback relay (`tcp://`).
//!
//! A message: `<PRI>1 TIMESTAMP HOSTNAME portcullis PROCID ACTION [portcullis@32473
//! id=".." action=".." outcome=".."] BOM{the event's JSON}`, facility `authpriv` (10),
//! severity `warning` or `informational`. A write that fails reconnects (with backoff)
//! and sends the whole batch again; events may then arrive twice (same `event.id`).

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::queue::{Backoff, Complaints, Queue};
use super::{Record, Severity};
use crate::config::SyslogSink;

/// Most events written in one go.
const BATCH: usize = 100;
/// Longest an event waits for its batch to fill.
const LINGER: Duration = Duration::from_millis(200);
/// Longest a connection (and its handshake) or a batch's write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// `authpriv`: security and authorisation messages.
const FACILITY: u8 = 10;
/// The SD-ID of the message's structured data (32473 is the enterprise number RFC 5612
/// reserves for examples and documentation: Portcullis has none of its own).
const SD_ID: &str = "portcullis@32473";

/// A connection to the receiver, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Sends the queue's events to the syslog receiver; once `stop` turns true, sends what
/// is left and returns.
pub async fn run(sink: SyslogSink, queue: Arc<Queue>, mut stop: watch::Receiver<bool>) {
    let tls = match client_config(&sink) {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(sink = "syslog", "SIEM syslog sink not started: {e}");
            return;
        }
    };
    let header = Header {
        hostname: hostname(),
        procid: std::process::id(),
    };
    let mut complaints = Complaints::new("syslog", Duration::from_secs(10));
    let mut backoff = Backoff::default();
    let mut connection: Option<Box<dyn Connection>> = None;
    // Once stopping: what is left goes out, one attempt per batch.
    let mut stopping = false;
    loop {
        let batch = if stopping {
            let batch = queue.take(BATCH);
            if batch.is_empty() {
                if let Some(mut conn) = connection {
                    // TLS close_notify: the receiver knows nothing was cut short.
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.shutdown()).await;
                }
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
        let mut frames = Vec::new();
        for record in &batch {
            push_frame(&mut frames, &header, record);
        }
        loop {
            match send(&mut connection, &sink, &tls, &frames).await {
                Ok(()) => {
                    backoff.reset();
                    complaints.report_drops(&queue);
                    break;
                }
                Err(why) if stopping => {
                    queue.count_dropped(u64::try_from(batch.len()).unwrap_or(u64::MAX));
                    tracing::warn!(sink = "syslog", "SIEM events lost at shutdown: {why}");
                    break;
                }
                Err(why) => {
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

/// Writes `frames` on the open connection, or on a new one when there is none or the
/// receiver closed it; on failure the connection is dropped.
async fn send(
    connection: &mut Option<Box<dyn Connection>>,
    sink: &SyslogSink,
    tls: &Option<Arc<rustls::ClientConfig>>,
    frames: &[u8],
) -> Result<(), String> {
    let reusable = match connection.take() {
        Some(mut conn) => still_open(&mut *conn).await.then_some(conn),
        None => None,
    };
    let mut conn = match reusable {
        Some(conn) => conn,
        None => connect(sink, tls.clone()).await?,
    };
    tokio::time::timeout(IO_TIMEOUT, async {
        conn.write_all(frames).await?;
        conn.flush().await
    })
    .await
    .map_err(|_| "write timed out".to_string())?
    .map_err(|e| format!("write failed: {e}"))?;
    *connection = Some(conn);
    Ok(())
}

/// Whether the receiver has not closed the connection: a closed one would swallow the
/// next write (the kernel accepts it) and lose the batch.
async fn still_open(conn: &mut dyn Connection) -> bool {
    let mut byte = [0u8; 1];
    // Receivers send nothing; anything ready to read here is a close or an error.
    tokio::time::timeout(Duration::from_millis(1), conn.read(&mut byte))
        .await
        .is_err()
}

fn client_config(sink: &SyslogSink) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if !sink.tls {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in &sink.ca {
        roots
            .add(cert.clone())
            .map_err(|e| format!("syslog_ca certificate not usable: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

async fn connect(sink: &SyslogSink, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Box<dyn Connection>, String> {
    let address = (sink.host.as_str(), sink.port);
    let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| "connection timed out".to_string())?
        .map_err(|e| format!("connection failed: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = ServerName::try_from(sink.host.clone()).map_err(|e| format!("bad server name: {e}"))?;
    let stream = tokio::time::timeout(IO_TIMEOUT, tokio_rustls::TlsConnector::from(tls).connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    Ok(Box::new(stream))
}

/// The parts of the header that are the same for every message.
struct Header {
    hostname: String,
    procid: u32,
}

/// This machine's name as RFC 5424 allows it (printable ASCII, at most 255), else `-`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| (33..=126).contains(&b)) {
        "-".to_string()
    } else {
        name.to_string()
    }
}

/// An SD-PARAM value with `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A MSGID: printable ASCII, at most 32 characters, else `-`.
fn msgid(action: &str) -> &str {
    if !action.is_empty() && action.len() <= 32 && action.bytes().all(|b| (33..=126).contains(&b)) {
        action
    } else {
        "-"
    }
}

/// Appends `record` as one octet-counted RFC 5424 frame: `LEN SP MESSAGE`.
fn push_frame(out: &mut Vec<u8>, header: &Header, record: &Record) {
    let severity = match record.severity {
        Severity::Warn => 4,
        Severity::Info => 6,
    };
    let outcome = serde_json::from_str::<serde_json::Value>(&record.json)
        .ok()
        .and_then(|v| v.get("event.outcome").and_then(|o| o.as_str()).map(str::to_string))
        .unwrap_or_default();
    let message = format!(
        "<{pri}>1 {time} {host} portcullis {pid} {msgid} [{SD_ID} id=\"{id}\" action=\"{action}\" outcome=\"{outcome}\"] \u{feff}{json}",
        pri = u16::from(FACILITY) * 8 + severity,
        time = record.timestamp,
        host = header.hostname,
        pid = header.procid,
        msgid = msgid(&record.action),
        id = sd_escape(&record.id),
        action = sd_escape(&record.action),
        outcome = sd_escape(&outcome),
        json = record.json,
    );
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::{Header, push_frame, sd_escape};
    use crate::siem::{Record, Severity};

    /// If this broke, a receiver would split or merge messages (the count is in bytes,
    /// not characters) or mis-read the header.
    #[test]
    fn a_frame_is_the_byte_count_then_an_rfc5424_message() {
        let record = Record::build(
            "0a",
            "2026-12-07T01:02:03.000004Z",
            "login",
            Severity::Warn,
            &[("event.outcome", Some(crate::siem::schema::Value::Text("failure")))],
        );
        let mut out = Vec::new();
        let header = Header {
            hostname: "gw1".into(),
            procid: 42,
        };
        push_frame(&mut out, &header, &record);
        let text = String::from_utf8(out).unwrap();
        let (len, message) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), message.len());
        assert!(
            message.starts_with(
                "<84>1 2026-12-07T01:02:03.000004Z gw1 portcullis 42 login \
                 [portcullis@32473 id=\"0a\" action=\"login\" outcome=\"failure\"] \u{feff}{"
            ),
            "{message}"
        );
        let json = message.split('\u{feff}').nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["event.action"], "login");
        assert_eq!(sd_escape("a\"b]c\\"), "a\\\"b\\]c\\\\");
    }
}

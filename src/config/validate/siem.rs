//! `gateway.toml` `[siem]`: the webhook and syslog sinks of security events.
//!
//! Only checks and builds the settings; sending is `crate::siem`'s job.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use toml::Spanned;

use super::super::raw::RawSiem;
use super::super::{SiemConfig, SyslogSink, WebhookSink};
use super::{Problems, Source, resolve, size};
use crate::secret::{Env, SecretRef};

/// Fewest and most events a sink may hold.
const QUEUE_RANGE: (u64, u64) = (10, 1_000_000);

pub(super) fn build_siem(
    dir: &Path,
    src: &Source,
    raw: &RawSiem,
    env: &dyn Env,
    problems: &mut Problems,
) -> SiemConfig {
    let queue = match size(src, raw.queue.as_ref(), "siem.queue", QUEUE_RANGE.0, problems) {
        Some(n) if n > QUEUE_RANGE.1 => {
            if let Some(v) = &raw.queue {
                problems.at(
                    src,
                    v.span(),
                    format!("siem.queue: {n} is out of range (at most {})", QUEUE_RANGE.1),
                );
            }
            SiemConfig::DEFAULT_QUEUE
        }
        Some(n) => usize::try_from(n).unwrap_or(SiemConfig::DEFAULT_QUEUE),
        None => SiemConfig::DEFAULT_QUEUE,
    };
    let webhook = raw.webhook.as_ref().and_then(|url| match webhook_url(url.get_ref()) {
        Ok(url) => Some(url),
        Err(msg) => {
            problems.at(src, url.span(), format!("siem.webhook: {msg}"));
            None
        }
    });
    let token = raw
        .webhook_token
        .as_ref()
        .and_then(|value| by_reference(dir, src, value, env, "siem.webhook_token", problems));
    if let (None, Some(value)) = (&raw.webhook, &raw.webhook_token) {
        problems.at(src, value.span(), "siem.webhook_token: set `siem.webhook` too");
    }
    let syslog = raw.syslog.as_ref().and_then(|url| match syslog_target(url.get_ref()) {
        Ok(target) => Some(target),
        Err(msg) => {
            problems.at(src, url.span(), format!("siem.syslog: {msg}"));
            None
        }
    });
    let ca = match &raw.syslog_ca {
        None => Vec::new(),
        Some(value) => {
            if !raw.syslog.as_ref().is_some_and(|s| s.get_ref().starts_with("tls://")) {
                problems.at(src, value.span(), "siem.syslog_ca: set a `tls://` `siem.syslog` too");
            }
            let pem = resolve(dir, src, value, env, false, "siem.syslog_ca", problems);
            match pem.map(|pem| CertificateDer::pem_slice_iter(pem.expose_secret()).collect::<Result<Vec<_>, _>>()) {
                Some(Ok(certs)) if !certs.is_empty() => certs,
                Some(_) => {
                    problems.at(src, value.span(), "siem.syslog_ca: not a PEM certificate");
                    Vec::new()
                }
                None => Vec::new(),
            }
        }
    };
    SiemConfig {
        webhook: webhook.map(|url| WebhookSink {
            url,
            token: token.map(Arc::new),
        }),
        syslog: syslog.map(|(host, port, tls)| SyslogSink { host, port, tls, ca }),
        queue,
    }
}

/// A secret that must be given by reference (`env:NAME` or `file:PATH`): a bearer token
/// written into `gateway.toml` would travel with every copy of the policy.
fn by_reference(
    dir: &Path,
    src: &Source,
    value: &Spanned<String>,
    env: &dyn Env,
    key: &str,
    problems: &mut Problems,
) -> Option<crate::secret::SecretBytes> {
    if SecretRef::parse(value.get_ref()).is_ok_and(|r| r.is_inline()) {
        problems.at(
            src,
            value.span(),
            format!("{key}: give the secret by reference (env:NAME or file:PATH), not inline"),
        );
        return None;
    }
    let secret = resolve(dir, src, value, env, false, key, problems)?;
    if secret.expose_secret().is_empty() || http::HeaderValue::from_bytes(secret.expose_secret()).is_err() {
        problems.at(
            src,
            value.span(),
            format!("{key}: the secret is empty or not usable in an HTTP header"),
        );
        return None;
    }
    Some(secret)
}

/// Whether `host` (as in a URL, IPv6 in brackets) is this machine.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `https://host[:port]/path`, or `http://` to a loopback address (events name users and
/// addresses: they never cross a network in clear).
fn webhook_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL (expected https://host/path)"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("put no credentials in the URL; use `siem.webhook_token`".to_string());
    }
    let Some(host) = uri.host() else {
        return Err(format!("`{text}` has no host (expected https://host/path)"));
    };
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(format!(
            "`{text}`: plain http is only allowed to a loopback address; use https://"
        )),
        _ => Err(format!("`{text}` has an unsupported scheme (expected https://)")),
    }
}

/// `tls://host:port`, or `tcp://host:port` to a loopback address.
fn syslog_target(text: &str) -> Result<(String, u16, bool), String> {
    let (tls, rest) = if let Some(rest) = text.strip_prefix("tls://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("tcp://") {
        (false, rest)
    } else {
        return Err(format!("`{text}` has an unsupported scheme (expected tls://HOST:PORT)"));
    };
    let authority: http::uri::Authority = rest.parse().map_err(|_| format!("`{text}` is not tls://HOST:PORT"))?;
    if authority.as_str() != rest || rest.contains('@') {
        return Err(format!("`{text}` is not tls://HOST:PORT"));
    }
    let Some(port) = authority.port_u16() else {
        return Err(format!("`{text}` has no port (expected tls://HOST:PORT, e.g. 6514)"));
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(format!("`{text}` has no host"));
    }
    if !tls && !is_loopback(authority.host()) {
        return Err(format!(
            "`{text}`: plain tcp is only allowed to a loopback address; use tls://"
        ));
    }
    Ok((host, port, tls))
}

#[cfg(test)]
mod tests {
    use super::{syslog_target, webhook_url};

    /// If this broke, events naming users could be sent in clear over a network, or a
    /// good receiver address would be refused.
    #[test]
    fn sink_addresses_need_tls_unless_they_stay_on_this_machine() {
        assert!(webhook_url("https://siem.example/ingest").is_ok());
        assert!(webhook_url("http://127.0.0.1:9000/x").is_ok());
        assert!(webhook_url("http://[::1]:9000/x").is_ok());
        assert!(webhook_url("http://siem.example/x").is_err());
        assert!(webhook_url("ftp://siem.example/x").is_err());
        assert!(webhook_url("https://user:pw@siem.example/x").is_err());
        assert!(webhook_url("siem.example").is_err());
        assert_eq!(
            syslog_target("tls://siem.example:6514"),
            Ok(("siem.example".to_string(), 6514, true))
        );
        assert_eq!(
            syslog_target("tcp://127.0.0.1:514"),
            Ok(("127.0.0.1".to_string(), 514, false))
        );
        assert!(syslog_target("tcp://siem.example:514").is_err());
        assert!(syslog_target("tls://siem.example").is_err());
        assert!(syslog_target("udp://siem.example:514").is_err());
        assert!(syslog_target("tls://siem.example:6514/x").is_err());
    }
}

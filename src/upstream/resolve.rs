//! Name resolution for upstream connections, checked against the tier's allowlist at
//! connect time: a named upstream passed the allowlist when the policy was loaded, but
//! its DNS answers can change later (DNS rebinding to a metadata or admin address).
//!
//! Rule: when the tier's allowlist has address ranges, every address a name resolves to
//! must fall in one of them (for the upstream's port), or the connection is refused; an
//! allowlist of names only trusts the names' answers. Literal addresses were checked at
//! load and are used as they are.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use crate::config::{AllowEntry, AllowHost};
use crate::telemetry::{EventOutcome, SecurityEvent};

/// The addresses to connect to for `host:port`, refused (an error) when a DNS answer is
/// outside the allowlist.
pub async fn allowed_addrs(
    host: &str,
    port: u16,
    allow: &[AllowEntry],
    tier: &str,
) -> std::io::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let answers: Vec<SocketAddr> = tokio::net::lookup_host((bare, port)).await?.collect();
    if let Some(bad) = answers.iter().find(|a| !answer_allowed(a.ip(), port, allow)) {
        let ip = bad.ip().to_string();
        SecurityEvent {
            reason: Some("DNS answer outside the tier's upstream allowlist"),
            tier: Some(tier),
            upstream_host: Some(bare),
            upstream_ip: Some(&ip),
            ..SecurityEvent::new("upstream_refused", EventOutcome::Failure)
        }
        .warn("refused to connect to an upstream");
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "DNS answer outside the tier's upstream allowlist",
        ));
    }
    if answers.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no DNS answer"));
    }
    Ok(answers)
}

/// Whether one DNS answer may be connected to.
fn answer_allowed(ip: IpAddr, port: u16, allow: &[AllowEntry]) -> bool {
    let mut nets = allow
        .iter()
        .filter_map(|e| match &e.host {
            AllowHost::Net(net) => Some((net, e.port)),
            AllowHost::Name(_) => None,
        })
        .peekable();
    if nets.peek().is_none() {
        return true;
    }
    nets.any(|(net, p)| net.contains(&ip) && p.is_none_or(|p| p == port))
}

/// A resolver for hyper-util's connector that applies [`allowed_addrs`].
#[derive(Clone)]
pub struct AllowlistResolver {
    /// The tier's allowlist.
    pub allow: Arc<Vec<AllowEntry>>,
    /// The upstream's port (the connector sets it on the answers).
    pub port: u16,
    /// Tier name, for security events.
    pub tier: Arc<str>,
}

impl tower_service::Service<Name> for AllowlistResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            allowed_addrs(name.as_str(), this.port, &this.allow, &this.tier)
                .await
                .map(Vec::into_iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<AllowEntry> {
        list.iter()
            .map(|e| crate::config::parse_allow_entry_for_tests(e).unwrap())
            .collect()
    }

    #[test]
    fn answers_must_fall_in_an_address_range_when_there_is_one() {
        let allow = entries(&["app.internal", "10.0.0.0/8"]);
        assert!(answer_allowed("10.1.2.3".parse().unwrap(), 443, &allow));
        assert!(!answer_allowed("169.254.169.254".parse().unwrap(), 443, &allow));
        assert!(!answer_allowed("127.0.0.1".parse().unwrap(), 443, &allow));
    }

    #[test]
    fn a_names_only_allowlist_trusts_the_names_answers() {
        let allow = entries(&["app.internal"]);
        assert!(answer_allowed("192.0.2.7".parse().unwrap(), 443, &allow));
    }

    #[test]
    fn an_address_entry_with_a_port_covers_that_port_only() {
        let allow = entries(&["127.0.0.1:9000"]);
        assert!(answer_allowed("127.0.0.1".parse().unwrap(), 9000, &allow));
        assert!(!answer_allowed("127.0.0.1".parse().unwrap(), 9001, &allow));
    }

    #[tokio::test]
    async fn localhost_resolves_inside_a_loopback_allowlist_and_not_outside() {
        let ok = allowed_addrs("localhost", 80, &entries(&["localhost", "127.0.0.1", "::1"]), "t").await;
        assert!(ok.is_ok_and(|a| !a.is_empty()));
        let refused = allowed_addrs("localhost", 80, &entries(&["localhost", "10.0.0.0/8"]), "t").await;
        assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
    }
}

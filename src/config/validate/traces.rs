//! `[tracing]` of `gateway.toml`: the OTLP endpoint, the sampling ratio and the service
//! name, checked here so that a bad value stops the start with its line instead of
//! failing later inside the exporter.

use super::super::TracingConfig;
use super::super::raw::RawTracing;
use super::{Problems, Source};

/// The `service.name` when the policy names none.
const DEFAULT_SERVICE_NAME: &str = "portcullis";

/// The share of new traces recorded when the policy says nothing: a tenth keeps the
/// collector's load small on a busy gateway.
const DEFAULT_SAMPLE_RATIO: f64 = 0.1;

/// `None` when no `otlp_endpoint` is set (tracing off); the other keys are still checked,
/// so a typo does not wait until someone turns tracing on.
pub(super) fn build_tracing(src: &Source, raw: &RawTracing, problems: &mut Problems) -> Option<TracingConfig> {
    let sample_ratio = match &raw.sample_ratio {
        None => DEFAULT_SAMPLE_RATIO,
        Some(r) if (0.0..=1.0).contains(r.get_ref()) => *r.get_ref(),
        Some(r) => {
            problems.at(
                src,
                r.span(),
                format!("tracing.sample_ratio: {} is not between 0.0 and 1.0", r.get_ref()),
            );
            DEFAULT_SAMPLE_RATIO
        }
    };
    let service_name = match &raw.service_name {
        None => DEFAULT_SERVICE_NAME.to_string(),
        Some(name) => {
            let text = name.get_ref().trim();
            if text.is_empty() || text.len() > 255 || text.chars().any(char::is_control) {
                problems.at(
                    src,
                    name.span(),
                    "tracing.service_name: give 1 to 255 printable characters",
                );
            }
            text.to_string()
        }
    };
    let endpoint = raw.otlp_endpoint.as_ref()?;
    match traces_url(endpoint.get_ref()) {
        Ok(traces_url) => Some(TracingConfig {
            traces_url,
            sample_ratio,
            service_name,
        }),
        Err(why) => {
            problems.at(
                src,
                endpoint.span(),
                format!("tracing.otlp_endpoint: `{}` {why}", endpoint.get_ref()),
            );
            None
        }
    }
}

/// The OTLP/HTTP traces URL of a collector's base endpoint (`http://host:4318` →
/// `http://host:4318/v1/traces`); an endpoint that already names `/v1/traces` is kept.
fn traces_url(endpoint: &str) -> Result<String, &'static str> {
    let uri: http::Uri = endpoint.parse().map_err(|_| "is not a URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("is not an http:// or https:// URL");
    }
    let Some(authority) = uri.authority() else {
        return Err("names no host");
    };
    if authority.host().is_empty() {
        return Err("names no host");
    }
    // Credentials in the URL would end up in logs and process listings.
    if authority.as_str().contains('@') {
        return Err("carries credentials; give the collector's address only");
    }
    if uri.query().is_some() {
        return Err("has a query; give the collector's address only");
    }
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        return Ok(base.to_string());
    }
    Ok(format!("{base}/v1/traces"))
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn a_base_endpoint_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/").unwrap(),
            "https://otel.example/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/otlp").unwrap(),
            "http://collector:4318/otlp/v1/traces"
        );
    }

    #[test]
    fn endpoints_that_are_not_plain_http_urls_are_refused() {
        for bad in [
            "127.0.0.1:4318",
            "ftp://collector:4318",
            "collector",
            "",
            "http://user:secret@collector:4318",
            "http://collector:4318/?token=x",
            "http://collector with space",
        ] {
            assert!(traces_url(bad).is_err(), "{bad} was accepted");
        }
    }
}

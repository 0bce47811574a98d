//! Black-box tests of the gateway core: each test starts the real `portcullis` binary
//! on its own ports with a fixture policy and recording upstreams, and checks what the
//! client and the upstreams see. One test binary with modules (link time).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_attacks;
mod admin_limits;
mod admin_tls;
mod api_errors;
mod breakers;
mod browser;
mod changes;
mod check;
mod cli;
mod console;
mod dashboards;
mod demo_output;
mod deploy;
mod distributed;
mod edge_attacks;
mod external_origin;
mod forward_auth;
mod harness;
mod headers;
mod http2;
mod idp;
mod incidents;
mod isolation;
mod key_sharing;
mod login;
mod logs;
mod openapi;
mod otel;
mod pages;
mod paths;
mod protocol_attacks;
mod readme;
mod reload;
mod review_fixes;
mod routing;
mod sessions;
mod shutdown;
mod siem;
mod smuggling;
mod sso;
mod sso_admin;
mod sso_attacks;
mod sso_attacks_more;
mod sso_wizard;
mod sso_wizard_browser;
mod sso_wizard_page;
mod sso_wizard_refusals;
mod status;
mod streaming;
mod tenant_admin;
mod timeouts;
mod tls;
mod upstream_guard;
mod upstream_tls;
mod user_attacks;
mod websocket;

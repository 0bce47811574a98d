//! The console's start page, the tenants of the operator's tier with their state (kill
//! switch on or off with its reason, message, incident and since when; upstream breaker
//! state), and the upstream breakers page. Read only.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::{ConsoleState, PageHeader, page_operator, render};
use crate::killswitch::KillSwitch;
use crate::ui::readable::Moment;
use crate::upstream::guard::CircuitState;

/// A kill switch as a page shows it.
pub(super) struct SwitchView {
    pub scope: String,
    pub reason: String,
    pub message: String,
    pub incident: Option<String>,
    pub since: Moment,
    pub by: String,
    pub expires: Option<Moment>,
}

impl SwitchView {
    pub(super) fn of(k: &KillSwitch, now: i64) -> Self {
        SwitchView {
            scope: scope_words(&k.scope),
            reason: k.reason.clone(),
            message: k.message.clone(),
            incident: k.incident.clone(),
            since: Moment::at(k.tripped_at, now),
            by: format!("{} via {}", k.tripped_by, k.system),
            expires: k.expires_at.map(|e| Moment::at(e, now)),
        }
    }
}

/// A switch's scope in words: `tier prod`, `tenant acme`, `account acme/bob`.
pub(super) fn scope_words(scope: &crate::killswitch::Scope) -> String {
    use crate::killswitch::Scope;
    match scope {
        Scope::Tier { tier } => format!("tier {tier}"),
        Scope::Tenant { tenant, .. } => format!("tenant {tenant}"),
        Scope::Account { tenant, subject, .. } => format!("account {tenant}/{subject}"),
    }
}

/// One tenant's upstream breaker.
pub(super) struct UpstreamView {
    pub tenant: String,
    pub state: &'static str,
    /// Open (or half-open) for this long, in words.
    pub open_for: Option<String>,
    pub in_flight: usize,
    pub queued: usize,
}

struct TenantRow {
    id: String,
    name: String,
    hosts: String,
    /// The switch cutting it off (its own or its tier's).
    switch: Option<SwitchView>,
    upstream: &'static str,
}

#[derive(Template)]
#[template(path = "console_tenants.html")]
struct TenantsPage<'a> {
    header: PageHeader<'a>,
    tier_switch: Option<SwitchView>,
    tenants: Vec<TenantRow>,
}

fn circuit_name(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::HalfOpen => "half-open",
        CircuitState::Open => "open",
    }
}

/// The upstream breakers of the tier's tenants.
pub(super) fn upstream_views(state: &ConsoleState, tier: &str) -> Vec<UpstreamView> {
    let snapshot = state.live.snapshot();
    snapshot
        .config
        .tenants
        .iter()
        .filter(|t| t.tier == tier)
        .map(|t| {
            let guard = snapshot.upstreams.get(&t.id).map(|c| c.guard());
            UpstreamView {
                tenant: t.id.clone(),
                state: guard.map_or("unknown", |g| circuit_name(g.state())),
                open_for: guard
                    .and_then(|g| g.open_for())
                    .map(|d| humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()),
                in_flight: guard.map_or(0, |g| g.in_flight()),
                queued: guard.map_or(0, |g| g.queued()),
            }
        })
        .collect()
}

/// `GET /console/`: the tenants of the operator's tier with their state.
pub(super) async fn page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let session = match page_operator(&state, &headers) {
        Ok(s) => s,
        Err(to_signin) => return to_signin.into_response(),
    };
    let tier = &session.operator.tier;
    let now = crate::clock::unix_now();
    let config = state.live.snapshot().config.clone();
    let board = state.switches.board();
    let upstreams = upstream_views(&state, tier);
    let tenants = config
        .tenants
        .iter()
        .filter(|t| &t.tier == tier)
        .map(|t| TenantRow {
            id: t.id.clone(),
            name: t.name.clone(),
            hosts: t.hosts.join(", "),
            switch: board.tenant_switch(tier, &t.id, now).map(|k| SwitchView::of(&k, now)),
            upstream: upstreams
                .iter()
                .find(|u| u.tenant == t.id)
                .map_or("unknown", |u| u.state),
        })
        .collect();
    let tier_switch = state
        .switches
        .list(&config)
        .await
        .ok()
        .and_then(|all| {
            all.into_iter().find(|k| {
                matches!(&k.scope, crate::killswitch::Scope::Tier { tier: t } if t == tier) && k.in_force(now)
            })
        })
        .map(|k| SwitchView::of(&k, now));
    render(&TenantsPage {
        header: PageHeader::signed_in(&session, "tenants"),
        tier_switch,
        tenants,
    })
}

#[derive(Template)]
#[template(path = "console_upstreams.html")]
struct UpstreamsPage<'a> {
    header: PageHeader<'a>,
    upstreams: Vec<UpstreamView>,
}

/// `GET /console/upstreams`: each tenant's upstream breaker on this node.
pub(super) async fn upstreams(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let session = match page_operator(&state, &headers) {
        Ok(s) => s,
        Err(to_signin) => return to_signin.into_response(),
    };
    render(&UpstreamsPage {
        header: PageHeader::signed_in(&session, "upstreams"),
        upstreams: upstream_views(&state, &session.operator.tier),
    })
}

//! An incident's timeline in the console: `/console/incidents/{id}` shows the events of
//! `GET /v1/incidents/{id}` (built by the same function, `crate::incident::timeline`,
//! from the operator's tier's audit log), oldest first; `/console/incidents?id=` is the
//! form that leads there.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::error::ConsoleError;
use super::{ConsoleState, PageHeader, page_operator, render, see_other};
use crate::incident::{IncidentError, TimelineEvent};

#[derive(Template)]
#[template(path = "console_incident.html")]
struct IncidentPage<'a> {
    header: PageHeader<'a>,
    /// The incident shown, if any (the page is also the search form).
    incident: Option<&'a str>,
    events: Vec<TimelineEvent>,
}

/// `GET /console/incidents[?id=INC-7]`: the form, or a redirect to the timeline.
pub(super) async fn find(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let session = match page_operator(&state, &headers) {
        Ok(s) => s,
        Err(to_signin) => return Ok(to_signin.into_response()),
    };
    if let Some(id) = crate::ui::web::query_param(query.as_deref(), "id").filter(|id| !id.trim().is_empty()) {
        let id = id.trim();
        crate::incident::check_id(id).map_err(|e| ConsoleError::BadRequest(format!("Incident: {e}.")))?;
        // Checked above: only `[A-Za-z0-9._:-]`, safe in a path.
        return Ok(see_other(&format!("/console/incidents/{id}")));
    }
    Ok(render(&IncidentPage {
        header: PageHeader::signed_in(&session, "incidents"),
        incident: None,
        events: Vec::new(),
    }))
}

/// `GET /console/incidents/{id}`: the timeline, oldest first.
pub(super) async fn page(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let session = match page_operator(&state, &headers) {
        Ok(s) => s,
        Err(to_signin) => return Ok(to_signin.into_response()),
    };
    let store = state
        .switches
        .sessions()
        .store(&session.operator.tier)
        .map_err(|e| ConsoleError::store(&e))?;
    let log: &dyn crate::store::AuditLog = &*store;
    let timeline = match crate::incident::timeline(&id, &[log]).await {
        Ok(t) => t,
        Err(e @ IncidentError::InvalidId) => return Err(ConsoleError::BadRequest(format!("Incident: {e}."))),
        Err(IncidentError::NotFound) => return Err(ConsoleError::NotFound("incident")),
        Err(IncidentError::Store(e)) => return Err(ConsoleError::store(&e)),
    };
    Ok(render(&IncidentPage {
        header: PageHeader::signed_in(&session, "incidents"),
        incident: Some(&timeline.incident),
        events: timeline.events,
    }))
}

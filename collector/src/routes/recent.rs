//! `GET /v1/recent?site=demo&limit=100`: the most recent accepted samples, newest first, exactly as received.

use super::AppState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;

/// Default and largest `limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// The handler.
pub async fn get_recent(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let bad = |msg: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": msg })),
        )
            .into_response()
    };
    if let Some(k) = params.keys().find(|k| *k != "site" && *k != "limit") {
        return bad(format!("{k}: unknown parameter"));
    }
    let Some(site) = params.get("site") else {
        return bad("site: missing".into());
    };
    if vitals::SiteId::parse(site).is_none() {
        return bad(format!("site: {site:?} is not a site id"));
    }
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(l)) if (1..=crate::recent::PER_SITE).contains(&l) => l,
        _ => {
            return bad(format!(
                "limit: must be a whole number from 1 to {}",
                crate::recent::PER_SITE
            ))
        }
    };
    Json(serde_json::json!({ "site": site, "samples": state.recent.latest(site, limit) }))
        .into_response()
}

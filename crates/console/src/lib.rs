//! The web console: `GET /console`, a single-page application for marketers
//! and auditors over the public API. It holds no privileges of its own: the
//! browser signs in with an API key and calls the same endpoints any client
//! calls, so it shows exactly what that key may see.
//!
//! Every asset is compiled into the binary (no CDN, works offline), and every
//! answer carries a strict Content-Security-Policy: scripts and styles only
//! from this origin, no inline script, fetches only to this origin. Images may
//! also be `blob:` URLs, because media downloads need the `Authorization`
//! header, which an `<img src>` cannot send: the page fetches them and shows
//! the blob.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use domain::campaign::{CampaignStatus, CampaignType};
use domain::content::ContentStatus;
use domain::lead::LeadStatus;
use domain::task::TaskStatus;
use domain::Currency;
use serde_json::{json, Value};

/// Where the console lives. Outside the API's base path: it is a page, not an
/// endpoint, and is not in the OpenAPI document.
pub const PATH: &str = "/console";

/// The policy of every console answer. `frame-ancestors 'none'` keeps the
/// page (which holds a key) out of other sites' frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `(file name, media type, bytes)` of every asset under `/console/assets/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/console.css"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/api.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/ui.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "rows.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/rows.js"),
    ),
    (
        "campaign-form.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/campaign-form.js"),
    ),
    (
        "campaigns.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/campaigns.js"),
    ),
    (
        "audit.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/audit.js"),
    ),
    (
        "analytics.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/analytics.js"),
    ),
    (
        "content.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/content.js"),
    ),
    (
        "tasks.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/tasks.js"),
    ),
    (
        "leads.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/leads.js"),
    ),
    // Chart.js, vendored byte for byte from the npm package pinned in
    // deploy/local/console-e2e/package-lock.json (the browser test checks that).
    (
        "vendor/chart.umd.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/chart.umd.min.js"),
    ),
    (
        "vendor/chart.js-LICENSE.md",
        "text/markdown; charset=utf-8",
        include_bytes!("../assets/vendor/chart.js-LICENSE.md"),
    ),
];

const INDEX: &[u8] = include_bytes!("../assets/index.html");

/// The console's routes, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PATH, get(index))
        .route("/console/", get(index))
        .route("/console/vocabulary.json", get(vocabulary))
        .route("/console/assets/{*file}", get(asset))
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, media_type, bytes)) => page(media_type, bytes),
        None => {
            let body = Json(json!({ "message": "Not found", "code": "not_found" }));
            with_headers((StatusCode::NOT_FOUND, body).into_response())
        }
    }
}

/// The closed sets of names the forms offer (statuses, types, currencies),
/// and which status changes a campaign allows, taken from the domain so the
/// console cannot drift from the rules the API enforces.
async fn vocabulary() -> Response {
    with_headers(Json(vocabulary_json()).into_response())
}

pub fn vocabulary_json() -> Value {
    let transitions: serde_json::Map<String, Value> = CampaignStatus::ALL
        .iter()
        .map(|from| {
            let to: Vec<&str> = CampaignStatus::ALL
                .iter()
                .filter(|to| from.can_become(**to))
                .map(|to| to.as_str())
                .collect();
            (from.as_str().to_owned(), json!(to))
        })
        .collect();
    json!({
        "campaign_statuses": CampaignStatus::ALL.map(CampaignStatus::as_str),
        "initial_campaign_statuses": CampaignStatus::ALL
            .iter()
            .filter(|s| s.is_initial())
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
        "campaign_transitions": transitions,
        "campaign_types": CampaignType::ALL.map(CampaignType::as_str),
        "task_statuses": TaskStatus::ALL.map(TaskStatus::as_str),
        "content_statuses": ContentStatus::ALL.map(ContentStatus::as_str),
        "lead_statuses": LeadStatus::ALL.map(LeadStatus::as_str),
        "currencies": Currency::codes().collect::<Vec<_>>(),
    })
}

fn page(media_type: &'static str, bytes: &'static [u8]) -> Response {
    with_headers(([(header::CONTENT_TYPE, media_type)], bytes).into_response())
}

fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Assets change with the binary; revalidating costs little on loopback
    // and never shows a page from an older release.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let response = router::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, headers, body)
    }

    #[tokio::test]
    async fn the_page_and_every_asset_are_served_with_the_policy() {
        let (status, headers, body) = get("/console").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        let html = String::from_utf8(body).unwrap();
        // No inline script: every <script> has a src under /console/assets/.
        for tag in html.split("<script").skip(1) {
            let tag = &tag[..tag.find('>').unwrap()];
            assert!(
                tag.contains("src=\"/console/assets/"),
                "inline or foreign script: {tag}"
            );
        }
        for (name, media_type, bytes) in ASSETS {
            let (status, headers, body) = get(&format!("/console/assets/{name}")).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(headers[header::CONTENT_TYPE], *media_type);
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(&body, bytes);
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_json_404() {
        let (status, headers, body) = get("/console/assets/../Cargo.toml").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(String::from_utf8(body).unwrap().contains("not_found"));
    }

    /// A module imported but not listed in `ASSETS` would be a 404 in the
    /// browser and a console that never starts.
    #[test]
    fn every_imported_module_is_served() {
        for (name, _, bytes) in ASSETS.iter().filter(|(name, _, _)| name.ends_with(".js")) {
            let source = std::str::from_utf8(bytes).unwrap();
            for import in source.split(" from './").skip(1) {
                let module = &import[..import.find('\'').unwrap()];
                assert!(
                    ASSETS.iter().any(|(asset, _, _)| *asset == module),
                    "{name} imports {module}, which is not served"
                );
            }
        }
    }

    #[test]
    fn the_vocabulary_carries_the_domains_transition_table() {
        let v = vocabulary_json();
        assert_eq!(v["campaign_transitions"]["draft"], json!(["active", "cancelled"]));
        assert_eq!(v["campaign_transitions"]["completed"], json!([]));
        assert_eq!(v["initial_campaign_statuses"], json!(["draft", "active"]));
        assert_eq!(v["task_statuses"][1], "in_progress");
        let currencies = v["currencies"].as_array().unwrap();
        assert!(currencies.contains(&json!("EUR")) && currencies.contains(&json!("JPY")));
        assert!(currencies
            .iter()
            .all(|c| Currency::parse("currency", c.as_str().unwrap()).is_ok()));
    }
}

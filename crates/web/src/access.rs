//! The access guard in front of every API route: authenticate the bearer key
//! (the key cache, no database round trip for a known key), apply the key's
//! rate limit, check the scope the route declares, and hand the [`Caller`] to
//! the handler. In that order, so a request without a valid key is a 401
//! whatever else is wrong with it, and a refused one costs nothing further.
//!
//! Each route declares its scope once, in its `#[utoipa::path]`:
//! `security(("bearer" = ["leads:export"]))`. [`guard`] reads the router's own
//! OpenAPI entries into the table it enforces; a route without exactly one
//! known scope makes building the router panic (as axum does for a route
//! conflict), so no route can be served without one, and the document shows
//! every operation's scope to clients.
//!
//! The guard sits outside the routes' other layers (idempotency): a 401, 403
//! or 429 is never stored as a POST's idempotent result.

use crate::auth::{bearer_secret, Caller, Scope};
use crate::rate_limit::Decision;
use crate::{ApiError, ApiKeys};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// The security scheme every route names.
pub const SCHEME: &str = "bearer";

/// What each operation of a document requires: `(method, path, scope)`, or
/// every operation that does not declare exactly one known scope.
pub fn required_scopes(doc: &OpenApi) -> Result<Vec<(Method, String, Scope)>, Vec<String>> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (path, item) in &doc.paths.paths {
        let operations = [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            match declared_scope(&serde_json::to_value(&operation.security).unwrap_or_default()) {
                Ok(scope) => found.push((method, path.clone(), scope)),
                Err(why) => errors.push(format!("{method} {path}: {why}")),
            }
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}

/// The one scope of `security: [{"bearer": ["<scope>"]}]`.
fn declared_scope(security: &serde_json::Value) -> Result<Scope, String> {
    let hint = format!("declare its scope: security((\"{SCHEME}\" = [\"<scope>\"])) in its #[utoipa::path]");
    let requirements = security
        .as_array()
        .ok_or_else(|| format!("no security; {hint}"))?;
    let [requirement] = requirements.as_slice() else {
        return Err(format!("{} security requirements; {hint}", requirements.len()));
    };
    let scopes = requirement
        .get(SCHEME)
        .and_then(|s| s.as_array())
        .ok_or_else(|| format!("no {SCHEME} requirement; {hint}"))?;
    let [scope] = scopes.as_slice() else {
        return Err(format!("{} scopes; {hint}", scopes.len()));
    };
    Scope::parse(scope.as_str().unwrap_or_default())
}

struct Access {
    keys: ApiKeys,
    /// By route template, then method: looked up with the matched path as it
    /// is, no key built per request.
    scopes: HashMap<String, Vec<(Method, Scope)>>,
}

/// The routes as a router, every one behind the access guard.
///
/// # Panics
/// If a route does not declare exactly one known scope: a programming error,
/// found by the first test that builds the application.
pub fn guard<S>(routes: OpenApiRouter<S>, keys: ApiKeys) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let (router, doc) = routes.split_for_parts();
    let found = match required_scopes(&doc) {
        Ok(found) => found,
        Err(errors) => panic!("routes without an API-key scope:\n{}", errors.join("\n")),
    };
    let mut scopes: HashMap<String, Vec<(Method, Scope)>> = HashMap::new();
    for (method, path, scope) in found {
        scopes.entry(path).or_default().push((method, scope));
    }
    let access = Arc::new(Access { keys, scopes });
    router.route_layer(axum::middleware::from_fn_with_state(access, check))
}

async fn check(State(access): State<Arc<Access>>, mut req: Request, next: Next) -> Response {
    // HEAD is served by the GET handler, so it needs what GET needs.
    let method = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let Some(methods) = access.scopes.get(path) else {
        // Only a route added around utoipa (plain `.route`) gets here: refuse
        // rather than serve anything the guard has no scope for.
        return ApiError::internal(anyhow::anyhow!("{path} has no declared scope")).into_response();
    };
    let required = methods
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, scope)| *scope);
    let Some(required) = required else {
        // A method the path does not have: axum's route layers wrap the
        // path's `405 Method Not Allowed` too, so let it answer (with the
        // right `Allow`). A handler reached without the guard finds no
        // `Caller` and answers 500 (the `Caller` extractor).
        return next.run(req).await;
    };
    let caller = match bearer_secret(req.headers()) {
        Some(secret) => access.keys.authenticate(secret).await,
        None => Ok(None),
    };
    let caller = match caller {
        Ok(Some(caller)) => caller,
        Ok(None) => return ApiError::Unauthorized.into_response(),
        Err(error) => return error.into_response(),
    };
    access.keys.record_use(&caller);
    let decision = access
        .keys
        .rate_limits()
        .map(|limits| limits.check(caller.key_id));
    let mut response = match &decision {
        Some(Decision::Refused(refusal)) => ApiError::RateLimited {
            retry_after_secs: refusal.retry_after_secs(),
        }
        .into_response(),
        _ if !caller.may(required) => ApiError::InsufficientScope(required).into_response(),
        _ => {
            req.extensions_mut().insert::<Caller>(caller);
            next.run(req).await
        }
    };
    if let Some(decision) = decision {
        decision.set_headers(response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use utoipa_axum::routes;

    #[utoipa::path(get, path = "/unscoped", responses((status = 200)), security(("bearer" = [])))]
    async fn unscoped() {}

    #[utoipa::path(post, path = "/scoped", responses((status = 200)), security(("bearer" = ["events:read"])))]
    async fn scoped() {}

    #[utoipa::path(get, path = "/undeclared", responses((status = 200)))]
    async fn undeclared() {}

    #[test]
    fn a_route_without_exactly_one_known_scope_is_named() {
        let doc = OpenApiRouter::<()>::new()
            .routes(routes!(unscoped))
            .routes(routes!(scoped))
            .routes(routes!(undeclared))
            .into_openapi();
        let errors = required_scopes(&doc).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("GET /undeclared: no security"),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("GET /unscoped: 0 scopes"), "{errors:?}");

        let doc = OpenApiRouter::<()>::new().routes(routes!(scoped)).into_openapi();
        assert_eq!(
            required_scopes(&doc).unwrap(),
            vec![(Method::POST, "/scoped".to_owned(), Scope::EventsRead)]
        );
    }

    #[test]
    fn the_declared_scope_is_one_known_name_of_the_bearer_scheme() {
        assert_eq!(
            declared_scope(&json!([{"bearer": ["leads:export"]}])),
            Ok(Scope::LeadsExport)
        );
        for bad in [
            json!(null),
            json!([]),
            json!([{"bearer": []}]),
            json!([{"bearer": ["leads:read", "leads:write"]}]),
            json!([{"bearer": ["leads:read"]}, {"bearer": ["leads:write"]}]),
            json!([{"other": ["leads:read"]}]),
            json!([{"bearer": ["leads:everything"]}]),
        ] {
            assert!(declared_scope(&bad).is_err(), "{bad}");
        }
    }
}

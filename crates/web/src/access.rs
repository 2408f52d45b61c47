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
    scopes: HashMap<(Method, String), Scope>,
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
    let scopes = match required_scopes(&doc) {
        Ok(found) => found.into_iter().map(|(m, p, s)| ((m, p), s)).collect(),
        Err(errors) => panic!("routes without an API-key scope:\n{}", errors.join("\n")),
    };
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
        .map(|p| p.as_str().to_owned());
    let Some(required) = path.and_then(|path| access.scopes.get(&(method, path)).copied()) else {
        // A method the path does not have: axum's route layers wrap the
        // path's `405 Method Not Allowed` too, so let it answer. Nothing is
        // served unchecked this way: every route of the router has a scope
        // (`guard` refuses to build otherwise), and a handler reached without
        // the guard finds no `Caller` and answers 500 (the `Caller` extractor).
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

//! The OpenAPI document: the information and tags here, and every path from the
//! routers themselves (`command_api::openapi`, `query_api::openapi`), where each
//! route is declared once together with its entry.

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Marketing API",
        version = "1.0.0",
        description = "Campaigns, tasks, content calendar, analytics and leads. \
                       All endpoints take `Authorization: Bearer <key>`; each needs the \
                       one scope its security requirement names (else 403 \
                       `insufficient_scope`); each key is rate limited (`RateLimit-*` \
                       headers, 429 with `Retry-After`). Errors are \
                       `{\"message\": ...}` JSON; lists are `{data, has_more, next_cursor}`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "campaigns", description = "Campaign management"),
        (name = "audit", description = "The event history behind every resource"),
        (name = "tasks", description = "Campaign tasks"),
        (name = "content", description = "Content calendar, with media upload and download"),
        (name = "analytics", description = "Tracking and querying campaign metrics"),
        (name = "leads", description = "Campaign leads: CRUD, search, CSV import and export; personal data crypto-shredded on delete"),
        (name = "events", description = "The project's events, oldest first, as CloudEvents: the feed to reconcile from"),
        (name = "webhooks", description = "Signed webhooks (Standard Webhooks): endpoints, secrets, deliveries")
    )
)]
pub struct ApiDoc;

/// The whole document, whatever role this process serves: a client of a split
/// deployment sees one API.
///
/// Built once per process: it is the same for every request.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.merge(command_api::openapi());
        doc.merge(query_api::openapi());
        doc.merge(webhooks::openapi());
        SharedResponses.modify(&mut doc);
        ScopeDescriptions.modify(&mut doc);
        OperationIds.modify(&mut doc);
        CreatedLinks.modify(&mut doc);
        doc
    })
}

/// The answers every operation can give through machinery shared by all
/// routes, added where a handler's annotation does not already say more:
/// 400 (a query parameter with a control character), 401 (no valid key), 403
/// (the key lacks the route's scope), 429 with `Retry-After` (the key's rate
/// limit), 500, and 503 with `Retry-After` (the database is unavailable); and
/// for a JSON request body, 413 (over the body limit) and 415 (not JSON).
struct SharedResponses;

impl SharedResponses {
    fn error(description: &str, retry_after: bool) -> RefOr<Response> {
        Self::error_with(description, retry_after, &[])
    }

    fn error_with(description: &str, retry_after: bool, headers: &[(&str, &str)]) -> RefOr<Response> {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        );
        let retry = retry_after.then_some(("Retry-After", "Seconds to wait before retrying"));
        for (name, about) in retry.iter().chain(headers) {
            response = response.header(
                *name,
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some(*about))
                    .build(),
            );
        }
        RefOr::T(response.build())
    }
}

/// The rate-limit headers (docs/operations.md), on every authenticated
/// answer while limits are on.
const RATE_LIMIT_HEADERS: [(&str, &str); 3] = [
    ("RateLimit-Limit", "The key's burst: requests it may make at once"),
    (
        "RateLimit-Remaining",
        "Requests left before the limit applies (0: the next is refused)",
    ),
    (
        "RateLimit-Reset",
        "Seconds until the whole burst is available again",
    ),
];

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let shared = [
            ("400", Self::error("Invalid input", false)),
            ("401", Self::error("Missing, invalid or expired API key", false)),
            (
                "403",
                Self::error(
                    "The API key lacks the scope this operation needs (`code`: `insufficient_scope`); \
                     the operation's security requirement names it",
                    false,
                ),
            ),
            (
                "429",
                Self::error_with(
                    "The key's rate limit is exceeded (`code`: `rate_limited`); retry after Retry-After seconds",
                    true,
                    &RATE_LIMIT_HEADERS,
                ),
            ),
            ("500", Self::error("Internal error", false)),
            (
                "503",
                Self::error(
                    "The database is unavailable; retry after Retry-After seconds",
                    true,
                ),
            ),
        ];
        let body = [
            ("413", Self::error("Request body too large", false)),
            ("415", Self::error("Unsupported Content-Type", false)),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                for (status, response) in shared.iter().chain(body.iter().filter(|_| has_body)) {
                    responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| response.clone());
                }
            }
        }
    }
}

/// Each operation's description ends with the scope it needs, as its security
/// requirement names it (where `web::access::guard` reads it from).
struct ScopeDescriptions;

impl Modify for ScopeDescriptions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Ok(required) = web::access::required_scopes(openapi) else {
            return;
        };
        for (method, path, scope) in required {
            let Some(item) = openapi.paths.paths.get_mut(&path) else {
                continue;
            };
            let operation = match method.as_str() {
                "GET" => &mut item.get,
                "PUT" => &mut item.put,
                "POST" => &mut item.post,
                "DELETE" => &mut item.delete,
                "PATCH" => &mut item.patch,
                _ => continue,
            };
            if let Some(operation) = operation {
                let note = format!("Needs an API key with the scope `{scope}`.");
                operation.description = Some(match operation.description.take() {
                    Some(text) if !text.is_empty() => format!("{text}\n\n{note}"),
                    _ => note,
                });
            }
        }
    }
}

/// Every operation of an item.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// Operation ids `<tag>_<handler>` (`campaigns_create`, `tasks_create`):
/// utoipa names an operation after its handler alone, and handlers of
/// different resources share names, while an id must be unique in the document
/// (links refer to operations by it).
struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let tag = operation.tags.as_ref().and_then(|tags| tags.first());
                if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_ref()) {
                    operation.operation_id = Some(format!("{tag}_{id}"));
                }
            }
        }
    }
}

/// Links from each create's `201` to every operation on what it created (at
/// or below `<collection>/{<id>}`): the new resource's `id` fills that
/// parameter and the create's own path parameters the others, so a client (or
/// a stateful test) can follow a create to the resource and its children. No
/// link is guessed beyond that.
struct CreatedLinks;

impl CreatedLinks {
    /// The `{parameters}` of a path, in order.
    fn parameters(path: &str) -> Vec<&str> {
        path.split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect()
    }
}

impl Modify for CreatedLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut targets = Vec::new();
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in operations(item) {
                if let Some(id) = &operation.operation_id {
                    targets.push((path.clone(), id.clone()));
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            // A create is a POST to its collection; an upsert a PUT to
            // `<collection>/by-<key>/{<key>}`, whose `201` made an item of
            // that collection.
            let upsert_collection = path.rsplit_once("/by-").map(|(collection, _)| collection);
            let creates = [
                (item.post.as_mut(), Some(path.as_str())),
                (item.put.as_mut(), upsert_collection),
            ];
            for (operation, collection) in creates {
                let (Some(operation), Some(collection)) = (operation, collection) else {
                    continue;
                };
                if let Some(RefOr::T(created)) = operation.responses.responses.get_mut("201") {
                    Self::link(created, path, collection, &targets);
                }
            }
        }
    }
}

impl CreatedLinks {
    /// Adds to `created` (a `201` of the operation at `path`) a link to every
    /// operation at or below `<collection>/{<id>}`.
    fn link(created: &mut Response, path: &str, collection: &str, targets: &[(String, String)]) {
        for (target, operation_id) in targets {
            let Some(id) = target
                .strip_prefix(collection)
                .and_then(|rest| rest.strip_prefix("/{"))
                .and_then(|rest| rest.split_once('}'))
                .map(|(id, _)| id)
            else {
                continue;
            };
            let known = Self::parameters(path);
            let parameters = Self::parameters(target);
            // Only what the create's answer and request determine (not,
            // from a campaign's create, one of its tasks).
            if !parameters.iter().all(|p| *p == id || known.contains(p)) {
                continue;
            }
            let mut link = LinkBuilder::new();
            for parameter in parameters {
                let value = if parameter == id {
                    "$response.body#/id".to_owned()
                } else {
                    format!("$request.path.{parameter}")
                };
                link = link.parameter(parameter, value);
            }
            let mut link = link.build();
            // utoipa writes its `operation_id` under that snake-case key;
            // the specification's (and every tool's) key is `operationId`.
            link.extensions = Some(
                [("operationId", serde_json::Value::from(operation_id.as_str()))]
                    .into_iter()
                    .collect::<Extensions>(),
            );
            created.links.insert(operation_id.clone(), RefOr::T(link));
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

//! The OpenAPI document: the information and tags here, and every path from the
//! routers themselves (`command_api::openapi`, `query_api::openapi`), where each
//! route is declared once together with its entry.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Marketing API",
        version = "1.0.0",
        description = "Campaigns, tasks, content calendar, analytics and leads. \
                       All endpoints take `Authorization: Bearer <key>`; errors are \
                       `{\"message\": ...}` JSON; lists are `{data, has_more, next_cursor}`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "campaigns", description = "Campaign management"),
        (name = "audit", description = "The event history behind every resource"),
        (name = "tasks", description = "Campaign tasks"),
        (name = "content", description = "Content calendar, with media upload and download"),
        (name = "analytics", description = "Tracking and querying campaign metrics"),
        (name = "leads", description = "Campaign leads: CRUD, search, CSV import and export; personal data crypto-shredded on delete")
    )
)]
pub struct ApiDoc;

/// The whole document, whatever role this process serves: a client of a split
/// deployment sees one API.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(command_api::openapi());
    doc.merge(query_api::openapi());
    doc
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

//! The OpenAPI document, generated from the handlers' annotations.

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
    paths(
        command_api::campaigns::create,
        command_api::campaigns::update,
        command_api::campaigns::change_status,
        command_api::campaigns::delete,
        query_api::campaigns::list,
        query_api::campaigns::get_one,
        query_api::history::history,
        command_api::tasks::create,
        command_api::tasks::update,
        command_api::tasks::delete,
        query_api::tasks::list,
        query_api::tasks::get_one,
        command_api::content::create,
        command_api::content::update,
        command_api::content::delete,
        query_api::content::list,
        query_api::content::get_one,
        query_api::content::download_media,
        command_api::analytics::track,
        query_api::analytics::rows,
        query_api::analytics::summary,
        command_api::leads::create,
        command_api::leads::update,
        command_api::leads::delete,
        command_api::leads::import::import,
        query_api::leads::list,
        query_api::leads::get_one,
        query_api::leads::export,
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

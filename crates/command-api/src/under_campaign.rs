//! What every write to something under a campaign (tasks, content, leads,
//! analytics) shares: reading its request, checking its campaign, placing a
//! new item, and deleting one.

use crate::kernel::{CheckedCampaign, Resource, Writer, CAMPAIGN_NOT_FOUND};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use domain::aggregate::Placement;
use std::future::Future;
use uuid::Uuid;
use web::extract::{parse_id, IfMatch, IfMatchVersion};
use web::ApiError;

/// `POST .../campaigns/{campaign_id}/<items>`: the campaign as the path names
/// it, then the body (`B`, e.g. `JsonBody<CreateTask>`).
pub struct NewItem<B> {
    campaign_id: String,
    pub(crate) body: B,
}

impl<S: Send + Sync, B: FromRequest<S>> FromRequest<S> for NewItem<B> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Path(campaign_id) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = B::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self { campaign_id, body })
    }
}

impl<B> NewItem<B> {
    /// The campaign, checked (404 `Campaign not found` otherwise), and the
    /// place of the new item in it: its id derives from the request (see
    /// `IdSource`) under `kind`. The future does not hold the request, whose
    /// body may not be `Sync`.
    pub(crate) fn place<'w>(
        &self,
        writer: &'w Writer,
        kind: &'w str,
    ) -> impl Future<Output = Result<(CheckedCampaign, Placement), ApiError>> + Send + 'w {
        let campaign_id = parse_id(&self.campaign_id, CAMPAIGN_NOT_FOUND);
        async move {
            let campaign = writer.campaign(campaign_id?).await?;
            let place = Placement {
                id: writer.ids().id(kind, 0),
                campaign_id: campaign.id(),
                project: writer.caller().project.clone(),
            };
            Ok((campaign, place))
        }
    }
}

/// `PUT` or `DELETE .../campaigns/{campaign_id}/<items>/{id}`: the ids as the
/// path names them, `If-Match`, then the body (`B`; nothing for a delete).
pub struct ItemChange<B = ()> {
    ids: (String, String),
    pub(crate) if_match: Option<IfMatchVersion>,
    pub(crate) body: B,
}

/// A delete: no body.
impl<S: Send + Sync> FromRequestParts<S> for ItemChange {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(ids) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let IfMatch(if_match) = IfMatch::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            ids,
            if_match,
            body: (),
        })
    }
}

impl<S: Send + Sync, B: FromRequest<S>> FromRequest<S> for ItemChange<B> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let ItemChange { ids, if_match, .. } = ItemChange::from_request_parts(&mut parts, state).await?;
        let body = B::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self { ids, if_match, body })
    }
}

impl<B> ItemChange<B> {
    /// The campaign, checked, and the item's id. A malformed campaign id is
    /// `Campaign not found` and a malformed item id the item's own 404, both
    /// before the campaign is loaded. The future does not hold the request.
    pub(crate) fn target<'w, A: Resource>(
        &self,
        writer: &'w Writer,
    ) -> impl Future<Output = Result<(CheckedCampaign, Uuid), ApiError>> + Send + 'w {
        let ids = parse_id(&self.ids.0, CAMPAIGN_NOT_FOUND)
            .and_then(|campaign_id| Ok((campaign_id, parse_id(&self.ids.1, A::NOT_FOUND)?)));
        async move {
            let (campaign_id, id) = ids?;
            Ok((writer.campaign(campaign_id).await?, id))
        }
    }
}

/// Declares the `delete` handler of items under a campaign, with its OpenAPI
/// entry: every such delete checks the campaign and the item, honours
/// `If-Match` and answers 204, so only its path, names, 404 description and
/// how the write runs (`run`, given the writer and the write) are its own.
macro_rules! delete_item {
    (
        $(#[$doc:meta])*
        path = $path:literal, tag = $tag:literal, scope = $scope:literal, id = $id:literal, not_found = $not_found:literal,
        $state:ty, $command:expr,
        run = |$writer:ident, $write:ident| $run:expr
    ) => {
        $(#[$doc])*
        #[utoipa::path(
            delete, path = $path, tag = $tag,
            params(("campaign_id" = Uuid, Path), ($id = Uuid, Path), ("If-Match" = Option<String>, Header)),
            responses(
                (status = 204, description = "Deleted"),
                (status = 401, body = web::error::ErrorBody),
                (status = 404, description = $not_found, body = web::error::ErrorBody),
                (status = 412, body = web::error::ErrorBody),
            ),
            security(("bearer" = [$scope]))
        )]
        pub async fn delete(
            writer: $crate::kernel::Writer,
            request: $crate::under_campaign::ItemChange,
        ) -> Result<axum::http::StatusCode, web::ApiError> {
            let (campaign, id) = request.target::<$state>(&writer).await?;
            let $write = $crate::kernel::Write::<$state>::new(id, $command)
                .under(&campaign)
                .if_match(request.if_match);
            let $writer = &writer;
            $run.await?;
            Ok(axum::http::StatusCode::NO_CONTENT)
        }
    };
}
pub(crate) use delete_item;

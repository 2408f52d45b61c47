//! Query parameters that several lists read the same way.

use serde::de::DeserializeOwned;
use std::collections::HashMap;
use web::pagination::{decode_cursor, parse_limit};
use web::ApiError;

/// An optional enum query parameter: `None` when absent, a 400 listing the
/// choices when it is not one of them.
pub(crate) fn choice<T>(
    params: &HashMap<String, String>,
    name: &'static str,
    parse: impl Fn(&str) -> Option<T>,
    choices: &str,
) -> Result<Option<T>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            parse(raw).ok_or_else(|| ApiError::bad_request(name, format!("{name} must be one of {choices}")))
        })
        .transpose()
}

/// `limit` and `cursor`: the page size and where the page starts (the keyset
/// cursor of the previous page's last item).
pub(crate) fn page<C: DeserializeOwned>(
    params: &HashMap<String, String>,
) -> Result<(i64, Option<C>), ApiError> {
    let limit = parse_limit(params.get("limit").map(String::as_str))?;
    let cursor = params.get("cursor").map(|c| decode_cursor(c)).transpose()?;
    Ok((limit, cursor))
}

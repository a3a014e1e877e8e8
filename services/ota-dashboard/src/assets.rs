//! The stylesheet and script, compiled into the binary: the dashboard needs
//! no network at run time and no front-end build step.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

use crate::DashError;

const CSS: &str = include_str!("../assets/dashboard.css");
const JS: &str = include_str!("../assets/dashboard.js");

/// Versioned, so a new binary's assets are fetched at once.
pub const CSS_PATH: &str = concat!("/ui/assets/dashboard.css?v=", env!("CARGO_PKG_VERSION"));
pub const JS_PATH: &str = concat!("/ui/assets/dashboard.js?v=", env!("CARGO_PKG_VERSION"));

pub async fn serve(Path(file): Path<String>) -> Result<Response, DashError> {
    let (body, kind) = match file.as_str() {
        "dashboard.css" => (CSS, "text/css; charset=utf-8"),
        "dashboard.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return Err(DashError::NotFound(format!("no asset {file:?}"))),
    };
    Ok((
        [
            (CONTENT_TYPE, kind),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response())
}

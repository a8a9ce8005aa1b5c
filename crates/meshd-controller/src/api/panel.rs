//! The web panel: one page and its script and style, built into the binary and served by
//! every replica on its admin API port. It signs in with the admin token and is a client of
//! the same API as the CLI; nothing it loads comes from another origin, which its content
//! security policy enforces in the browser too.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_FRAME_OPTIONS};
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("panel/index.html");
const SCRIPT: &str = include_str!("panel/app.js");
const STYLE: &str = include_str!("panel/app.css");

/// Same origin only; no inline script or style, no framing (click-jacking the one-click
/// buttons), no plugins.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; object-src 'none'; base-uri 'none'; \
                      frame-ancestors 'none'; form-action 'self'";

pub(super) fn routes() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/panel/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/panel/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, POLICY),
            (X_FRAME_OPTIONS, "DENY"),
            // The binary is the version: a new one may change every file at once.
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

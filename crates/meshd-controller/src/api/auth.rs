//! The bearer-token check in front of every admin route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The expected token and the hint sent back when a request lacks it.
#[derive(Debug)]
pub(super) struct TokenCheck {
    token: String,
    rejection: String,
}

impl TokenCheck {
    pub(super) fn new(token: String, token_location: &str) -> Arc<Self> {
        Arc::new(Self {
            token,
            rejection: format!("missing or wrong bearer token (the token is in {token_location})"),
        })
    }

    /// Whether the request carries `Authorization: Bearer <token>`.
    fn admits(&self, request: &Request) -> bool {
        let Some(value) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, presented)) = value.trim().split_once(' ') else {
            return false;
        };
        // Constant time, so response timing does not reveal how much of a guess was right.
        // (The length is not secret: every token is 64 hex digits.)
        scheme.eq_ignore_ascii_case("bearer")
            && bool::from(presented.trim().as_bytes().ct_eq(self.token.as_bytes()))
    }
}

/// Middleware: passes the request on if it carries the token, else answers 401.
pub(super) async fn require_token(
    State(check): State<Arc<TokenCheck>>,
    request: Request,
    next: Next,
) -> Response {
    if check.admits(&request) {
        next.run(request).await
    } else {
        ApiError::unauthorized(check.rejection.clone()).into_response()
    }
}

//! The bearer-token check in front of every admin route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
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
    pub(super) fn new(token: String) -> Arc<Self> {
        Arc::new(Self {
            token,
            // Where the token lives is for the admin to know, not for anyone who asks.
            rejection: "missing or wrong bearer token: send `Authorization: Bearer TOKEN` with \
                        the token from the replica's data directory (api.token)"
                .to_owned(),
        })
    }

    /// Whether `headers` carry exactly `Authorization: Bearer <token>`: one spelling, so
    /// that whatever sits in front of the API (a proxy, a log filter) sees the same thing.
    pub(super) fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) else {
            return false;
        };
        let Some(presented) = value.strip_prefix(b"Bearer ") else {
            return false;
        };
        // Constant time, so response timing does not reveal how much of a guess was right.
        // (The length is not secret: every token is 64 hex digits.)
        bool::from(presented.ct_eq(self.token.as_bytes()))
    }
}

/// Middleware: passes the request on if it carries the token, else answers 401.
pub(super) async fn require_token(
    State(check): State<Arc<TokenCheck>>,
    request: Request,
    next: Next,
) -> Response {
    if check.admits(request.headers()) {
        next.run(request).await
    } else {
        ApiError::unauthorized(check.rejection.clone()).into_response()
    }
}

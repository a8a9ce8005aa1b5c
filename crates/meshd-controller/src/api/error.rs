//! Every way a request fails, mapped to a status and a JSON body `{"error": "..."}` in one
//! place, so handlers only say *what* went wrong.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshd_io::http::ErrorBody;
use meshd_proto::{NetworkId, NodeId};

use crate::controller::WriteError;
use crate::state::RejectKind;

use super::requests::InvalidRequest;

/// A failed request: the status and the one-line reason sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Same wording as the state machine's, so a read and a write about a missing network
    /// fail alike.
    pub fn no_network(network: NetworkId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("no network {network}; `meshd controller network list` shows the networks"),
        )
    }

    pub fn no_member(network: NetworkId, node: NodeId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!(
                "node {node} is not a member of network {network}; it must run `meshd join {network}` first"
            ),
        )
    }
}

/// The status for each reason the state machine refuses a command.
pub fn status_for(kind: RejectKind) -> StatusCode {
    match kind {
        RejectKind::NotFound => StatusCode::NOT_FOUND,
        // Both mean "the request is fine, the current state does not allow it".
        RejectKind::Conflict | RejectKind::Exhausted => StatusCode::CONFLICT,
        RejectKind::Invalid => StatusCode::BAD_REQUEST,
        RejectKind::Forbidden => StatusCode::FORBIDDEN,
    }
}

impl From<&WriteError> for ApiError {
    fn from(e: &WriteError) -> Self {
        match e {
            WriteError::Rejected(r) => Self::new(status_for(r.kind), r.message.clone()),
            WriteError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        Self::from(&e)
    }
}

impl From<InvalidRequest> for ApiError {
    fn from(e: InvalidRequest) -> Self {
        Self::bad_request(e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "admin API request failed");
        }
        let body = axum::Json(ErrorBody {
            error: self.message,
        });
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: tell the client which scheme is expected.
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

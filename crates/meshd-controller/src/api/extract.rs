//! Extractors whose rejections are [`ApiError`]s: a malformed body, id or query becomes a
//! JSON 400 that says what to fix, instead of axum's plain-text rejection.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use ipnet::IpNet;
use meshd_proto::{NetworkId, NodeId};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::requests::{RouteQuery, parse_route_target};

/// A JSON request body of type `T`.
///
/// The Content-Type is not checked: `curl -d '{...}'` sends form encoding by default, and
/// the body is JSON either way.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(
                e.status(),
                format!("cannot read the request body: {}", e.body_text()),
            )
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "the request body is empty; send a JSON object",
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(ApiError::bad_request(json_problem(&rejection))),
        }
    }
}

/// The serde error (with the path to the bad field) behind a JSON rejection.
fn json_problem(rejection: &JsonRejection) -> String {
    let inner = |e: &dyn std::error::Error| {
        e.source()
            .map_or_else(|| e.to_string(), ToString::to_string)
    };
    match rejection {
        JsonRejection::JsonSyntaxError(e) => {
            format!("the request body is not valid JSON: {}", inner(e))
        }
        JsonRejection::JsonDataError(e) => {
            format!("the request body has a wrong field: {}", inner(e))
        }
        other => format!("the request body is not usable: {}", other.body_text()),
    }
}

#[derive(Deserialize)]
struct NetworkParams {
    nwid: String,
}

#[derive(Deserialize)]
struct MemberParams {
    nwid: String,
    node: String,
}

/// The `{nwid}` of the path.
#[derive(Debug, Clone, Copy)]
pub struct NetworkPath(pub NetworkId);

/// The `{nwid}` and `{node}` of the path.
#[derive(Debug, Clone, Copy)]
pub struct MemberPath(pub NetworkId, pub NodeId);

impl<S: Send + Sync> FromRequestParts<S> for NetworkPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(p) = Path::<NetworkParams>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
        Ok(Self(parse_id(&p.nwid)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MemberPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(p) = Path::<MemberParams>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
        Ok(Self(parse_id(&p.nwid)?, parse_id(&p.node)?))
    }
}

/// Ids parse only from their exact printed form, so a typo is a 400 naming the rule rather
/// than a 404 for a different id.
fn parse_id<T>(text: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| ApiError::bad_request(e.to_string()))
}

/// The `?target=CIDR` of the query.
#[derive(Debug, Clone, Copy)]
pub struct RouteTarget(pub IpNet);

impl<S: Send + Sync> FromRequestParts<S> for RouteTarget {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(q) = Query::<RouteQuery>::try_from_uri(&parts.uri).map_err(|_| {
            ApiError::bad_request(
                "name the route to remove with ?target=CIDR, e.g. ?target=192.168.50.0/24",
            )
        })?;
        Ok(Self(parse_route_target(&q.target)?))
    }
}

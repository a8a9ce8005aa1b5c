//! The admin HTTP API: JSON over HTTP, bearer-token protected. Every `meshd controller`
//! admin command is a client of it ([`crate::admin_client`]).
//!
//! ```text
//! GET    /v1/health                                     {"status":"ok"}; with the token also
//!                                                        {"networks":N, replication, relay}
//! GET    /v1/networks                                   [network]
//! POST   /v1/networks                                   {name, v4_pools?, container_pool?, container_prefix?,
//!                                                        sixplane?, rfc4193?, mtu?} -> 201 network
//! GET    /v1/networks/{nwid}                            network
//! PATCH  /v1/networks/{nwid}                            {name?, mtu?} -> network
//! DELETE /v1/networks/{nwid}                            network as it was
//! GET    /v1/networks/{nwid}/members                    [member]
//! GET    /v1/networks/{nwid}/members/{node}             member
//! PATCH  /v1/networks/{nwid}/members/{node}             {name?} or {authorized?} -> member
//! DELETE /v1/networks/{nwid}/members/{node}             member as it was
//! POST   /v1/networks/{nwid}/members/{node}/authorize   member
//! POST   /v1/networks/{nwid}/members/{node}/deauthorize member
//! GET    /v1/networks/{nwid}/routes                     [route]
//! POST   /v1/networks/{nwid}/routes                     {target, via} -> 201 route
//! DELETE /v1/networks/{nwid}/routes?target=CIDR         route as it was
//! GET    /v1/networks/{nwid}/mesh                       the picture of the mesh: members and
//!                                                        a link per pair, as members report
//! GET    /metrics                                       Prometheus metrics (token required)
//! GET    /                                              the web panel (no token: it signs in)
//! ```
//!
//! A replica adds `GET/POST /v1/replicas` and `DELETE /v1/replicas/{id}` (see
//! [`crate::replica::admin_routes`]) through [`ApiOptions::admin_routes`].
//!
//! Shapes are in [`views`] and [`requests`]. Errors are `{"error": "..."}` with 400 (bad
//! input), 401 (token), 403, 404, 409 (conflict or pool exhausted) or 503 (no quorum).
//! A request applies at most one command, so it either happens entirely or not at all.

mod auth;
pub mod error;
pub(crate) mod extract;
mod handlers;
mod panel;
pub mod requests;
pub mod text;
pub mod views;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

use crate::controller::Controller;

pub use error::{ApiError, status_for};

/// Extra fields for `GET /v1/health`, e.g. the replica's raft role and leader. Called on
/// every health request; a JSON object's fields are merged into the answer.
pub type HealthHook = Arc<dyn Fn() -> HealthFuture + Send + Sync>;

/// What a [`HealthHook`] returns: the fields, possibly after asking another replica.
pub type HealthFuture = Pin<Box<dyn Future<Output = serde_json::Value> + Send>>;

/// What the replica adds to the API without changing it.
#[derive(Default)]
pub struct ApiOptions {
    /// Extra fields for `GET /v1/health`.
    pub health: Option<HealthHook>,
    /// More routes behind the same bearer token (e.g. `/v1/replicas`). They should answer
    /// errors with [`ApiError`] so clients see the same shape.
    pub admin_routes: Option<Router>,
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiOptions")
            .field("health", &self.health.as_ref().map(|_| "<hook>"))
            .field("admin_routes", &self.admin_routes)
            .finish()
    }
}

/// What the handlers share.
#[derive(Clone)]
struct AppState<C> {
    controller: C,
    health: Option<HealthHook>,
    /// Health details go only to requests with the token.
    token: Arc<auth::TokenCheck>,
}

/// The admin API for `controller`, requiring `Authorization: Bearer <token>` on every route
/// but `/v1/health`.
pub fn router<C: Controller>(controller: C, token: String) -> Router {
    router_with(controller, token, ApiOptions::default())
}

/// [`router`] with the replica's additions.
pub fn router_with<C: Controller>(controller: C, token: String, options: ApiOptions) -> Router {
    use handlers as h;

    let token = auth::TokenCheck::new(token);
    let app = AppState {
        controller,
        health: options.health,
        token: token.clone(),
    };
    let mut admin = Router::new()
        .route(
            "/v1/networks",
            get(h::list_networks::<C>).post(h::create_network::<C>),
        )
        .route(
            "/v1/networks/{nwid}",
            get(h::get_network::<C>)
                .patch(h::update_network::<C>)
                .delete(h::delete_network::<C>),
        )
        .route("/v1/networks/{nwid}/members", get(h::list_members::<C>))
        .route("/v1/networks/{nwid}/mesh", get(h::mesh::<C>))
        .route(
            "/v1/networks/{nwid}/members/{node}",
            get(h::get_member::<C>)
                .patch(h::update_member::<C>)
                .delete(h::delete_member::<C>),
        )
        .route(
            "/v1/networks/{nwid}/members/{node}/authorize",
            post(h::authorize::<C>),
        )
        .route(
            "/v1/networks/{nwid}/members/{node}/deauthorize",
            post(h::deauthorize::<C>),
        )
        .route(
            "/v1/networks/{nwid}/routes",
            get(h::list_routes::<C>)
                .post(h::add_route::<C>)
                .delete(h::remove_route::<C>),
        )
        .with_state(app.clone());
    if let Some(extra) = options.admin_routes {
        admin = admin.merge(extra);
    }
    // `route_layer`: the token check runs for existing routes only, so an unknown path is
    // a 404 whether or not the token is right.
    let admin = admin.route_layer(from_fn_with_state(token, auth::require_token));

    Router::new()
        .route("/v1/health", get(h::health::<C>))
        .with_state(app)
        .merge(panel::routes())
        .merge(admin)
        .fallback(h::no_route)
        .method_not_allowed_fallback(h::wrong_method)
}

#[cfg(test)]
mod tests;

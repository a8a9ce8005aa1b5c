//! The handlers: each turns a request into at most one command (or a read) and the result
//! into a view. Parsing lives in [`super::extract`] and [`super::requests`], error mapping
//! in [`super::error`].

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use ipnet::IpNet;
use meshd_io::clock::now_ms;
use meshd_proto::config::Ipv6Egress;
use meshd_proto::{NetworkId, NodeId};
use serde_json::{Value, json};

use crate::controller::Controller;
use crate::state::{Applied, Command, ControllerState, Network};

use super::AppState;
use super::error::ApiError;
use super::extract::{Body, MemberPath, NetworkPath, RouteTarget};
use super::requests::{AddRoute, CreateNetwork, UpdateMember, UpdateNetwork};
use super::views::{MemberView, MeshView, NetworkView, RouteView};

type ApiResult<T> = Result<Json<T>, ApiError>;
type Created<T> = Result<(StatusCode, Json<T>), ApiError>;

/// `{"status":"ok"}` for anyone (a load balancer's check); with the token, the details too.
pub(super) async fn health<C: Controller>(
    State(app): State<AppState<C>>,
    headers: axum::http::HeaderMap,
) -> Json<Value> {
    if !app.token.admits(&headers) {
        return Json(json!({ "status": "ok" }));
    }
    let networks = app.controller.read(|s| s.networks.len());
    let mut body = json!({ "status": "ok", "networks": networks });
    // The replica adds its replication state; its keys win over ours.
    let extra = match &app.health {
        Some(hook) => hook().await,
        None => Value::Null,
    };
    if let (Value::Object(extra), Some(fields)) = (extra, body.as_object_mut()) {
        fields.extend(extra);
    }
    Json(body)
}

pub(super) async fn list_networks<C: Controller>(
    State(app): State<AppState<C>>,
) -> Json<Vec<NetworkView>> {
    Json(
        app.controller
            .read(|s| s.networks.values().map(NetworkView::of).collect()),
    )
}

pub(super) async fn create_network<C: Controller>(
    State(app): State<AppState<C>>,
    Body(req): Body<CreateNetwork>,
) -> Created<NetworkView> {
    let spec = req.to_spec(new_key_seed()?, now_ms())?;
    match app.controller.write(Command::CreateNetwork(spec)).await? {
        Applied::NetworkCreated { network } => {
            if let Some(egress) = req.ipv6_egress.filter(|e| *e != Ipv6Egress::Off) {
                app.controller
                    .write(Command::SetIpv6Egress { network, egress })
                    .await?;
            }
            Ok((StatusCode::CREATED, Json(app.network_view(network)?)))
        }
        other => Err(unexpected(&other)),
    }
}

pub(super) async fn get_network<C: Controller>(
    State(app): State<AppState<C>>,
    NetworkPath(network): NetworkPath,
) -> ApiResult<NetworkView> {
    Ok(Json(app.network_view(network)?))
}

pub(super) async fn update_network<C: Controller>(
    State(app): State<AppState<C>>,
    NetworkPath(network): NetworkPath,
    Body(req): Body<UpdateNetwork>,
) -> ApiResult<NetworkView> {
    for cmd in req.to_commands(network) {
        app.controller.write(cmd).await?;
    }
    Ok(Json(app.network_view(network)?))
}

/// Answers with the network as it was before deletion.
pub(super) async fn delete_network<C: Controller>(
    State(app): State<AppState<C>>,
    NetworkPath(network): NetworkPath,
) -> ApiResult<NetworkView> {
    let before = app.network_view(network)?;
    app.controller
        .write(Command::DeleteNetwork { network })
        .await?;
    Ok(Json(before))
}

pub(super) async fn list_members<C: Controller>(
    State(app): State<AppState<C>>,
    NetworkPath(network): NetworkPath,
) -> ApiResult<Vec<MemberView>> {
    app.read_network(network, |net| {
        net.members
            .values()
            .map(|m| MemberView::of(net, m, now_ms()))
            .collect()
    })
    .map(Json)
}

pub(super) async fn mesh<C: Controller>(
    State(app): State<AppState<C>>,
    NetworkPath(network): NetworkPath,
) -> ApiResult<MeshView> {
    app.read_network(network, |net| MeshView::of(net, now_ms()))
        .map(Json)
}

pub(super) async fn get_member<C: Controller>(
    State(app): State<AppState<C>>,
    MemberPath(network, node): MemberPath,
) -> ApiResult<MemberView> {
    Ok(Json(app.member_view(network, node)?))
}

pub(super) async fn update_member<C: Controller>(
    State(app): State<AppState<C>>,
    MemberPath(network, node): MemberPath,
    Body(req): Body<UpdateMember>,
) -> ApiResult<MemberView> {
    if let Some(cmd) = req.to_command(network, node, now_ms())? {
        app.controller.write(cmd).await?;
    }
    Ok(Json(app.member_view(network, node)?))
}

/// Answers with the member as it was before deletion.
pub(super) async fn delete_member<C: Controller>(
    State(app): State<AppState<C>>,
    MemberPath(network, node): MemberPath,
) -> ApiResult<MemberView> {
    let before = app.member_view(network, node)?;
    app.controller
        .write(Command::DeleteMember { network, node })
        .await?;
    Ok(Json(before))
}

pub(super) async fn authorize<C: Controller>(
    State(app): State<AppState<C>>,
    MemberPath(network, node): MemberPath,
) -> ApiResult<MemberView> {
    let at_ms = now_ms();
    app.controller
        .write(Command::Authorize {
            network,
            node,
            at_ms,
        })
        .await?;
    Ok(Json(app.member_view(network, node)?))
}

pub(super) async fn deauthorize<C: Controller>(
    State(app): State<AppState<C>>,
    MemberPath(network, node): MemberPath,
) -> ApiResult<MemberView> {
    let at_ms = now_ms();
    app.controller
        .write(Command::Deauthorize {
            network,
            node,
            at_ms,
        })
        .await?;
    Ok(Json(app.member_view(network, node)?))
}

pub(super) async fn list_routes<C: Controller>(
    State(app): State<AppState<C>>,
    NetworkPath(network): NetworkPath,
) -> ApiResult<Vec<RouteView>> {
    app.read_network(network, |net| {
        net.routes
            .iter()
            .map(|(t, r)| RouteView::of(*t, r))
            .collect()
    })
    .map(Json)
}

pub(super) async fn add_route<C: Controller>(
    State(app): State<AppState<C>>,
    NetworkPath(network): NetworkPath,
    Body(req): Body<AddRoute>,
) -> Created<RouteView> {
    let command = req.to_command(network)?;
    if let Command::AddRoute { target, .. } | Command::AddFailoverRoute { target, .. } = &command
        && let Some(replica) = app
            .controller
            .replica_addresses()
            .iter()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .find(|a| target.contains(&a.ip()))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "route {target} covers {}, a controller replica's address: members would \
                 reach the controller through the mesh, which needs the controller",
                replica.ip()
            ),
        ));
    }
    match app.controller.write(command).await? {
        Applied::RouteAdded { target, .. } => {
            Ok((StatusCode::CREATED, Json(app.route_view(network, target)?)))
        }
        other => Err(unexpected(&other)),
    }
}

/// Answers with the route as it was before removal.
pub(super) async fn remove_route<C: Controller>(
    State(app): State<AppState<C>>,
    NetworkPath(network): NetworkPath,
    RouteTarget(target): RouteTarget,
) -> ApiResult<RouteView> {
    let before = app.route_view(network, target)?;
    app.controller
        .write(Command::RemoveRoute { network, target })
        .await?;
    Ok(Json(before))
}

pub(super) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no API endpoint {method} {}; the endpoints are under /v1/networks and /v1/replicas",
            uri.path()
        ),
    )
}

pub(super) async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}", uri.path()),
    )
}

impl<C: Controller> AppState<C> {
    fn read_network<T>(
        &self,
        network: NetworkId,
        f: impl FnOnce(&Network) -> T,
    ) -> Result<T, ApiError> {
        self.controller.read(|s: &ControllerState| {
            s.network(network)
                .map(f)
                .ok_or_else(|| ApiError::no_network(network))
        })
    }

    fn network_view(&self, network: NetworkId) -> Result<NetworkView, ApiError> {
        self.read_network(network, NetworkView::of)
    }

    fn member_view(&self, network: NetworkId, node: NodeId) -> Result<MemberView, ApiError> {
        self.read_network(network, |net| {
            net.members
                .get(&node)
                .map(|m| MemberView::of(net, m, now_ms()))
                .ok_or_else(|| ApiError::no_member(network, node))
        })?
    }

    fn route_view(&self, network: NetworkId, target: IpNet) -> Result<RouteView, ApiError> {
        self.read_network(network, |net| {
            net.routes
                .get(&target)
                .map(|r| RouteView::of(target, r))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("network {network} has no route {target}"),
                    )
                })
        })?
    }
}

/// A fresh network signing key seed. Generated here, by the replica that accepts the
/// request, and carried in the command so every replica holds the same key.
fn new_key_seed() -> Result<[u8; 32], ApiError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| ApiError::internal(format!("cannot generate a network key: {e}")))?;
    Ok(seed)
}

fn unexpected(applied: &Applied) -> ApiError {
    ApiError::internal(format!(
        "the controller answered with an unexpected result: {applied:?}"
    ))
}

//! The API in-process over [`InMemoryController`]: statuses, shapes, and that a failing
//! request changes nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use meshd_proto::{Identity, NetworkId, NodeId, addr};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::controller::{InMemoryController, WriteError};
use crate::state::{Command, ControllerState, RejectKind, Rejected};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Api {
    controller: InMemoryController,
    router: Router,
}

/// What came back: status, JSON body, and the WWW-Authenticate header if any.
struct Reply {
    status: StatusCode,
    body: Value,
    www_authenticate: Option<String>,
}

impl Reply {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_else(|| {
            panic!("no error text in {}", self.body);
        })
    }
}

impl Api {
    fn new() -> Self {
        let controller = InMemoryController::default();
        let router = router(controller.clone(), TOKEN.to_owned());
        Self { controller, router }
    }

    async fn send(&self, method: &str, uri: &str, auth: Option<&str>, body: Option<&str>) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let www_authenticate = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {uri}: {status} body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{method} {uri}"
        );
        Reply {
            status,
            body,
            www_authenticate,
        }
    }

    /// An authorized request.
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| b.to_string());
        self.send(
            method,
            uri,
            Some(&format!("Bearer {TOKEN}")),
            body.as_deref(),
        )
        .await
    }

    async fn call_raw(&self, method: &str, uri: &str, body: &str) -> Reply {
        self.send(method, uri, Some(&format!("Bearer {TOKEN}")), Some(body))
            .await
    }

    /// Creates a network; returns its id.
    async fn create(&self, body: Value) -> NetworkId {
        let r = self.call("POST", "/v1/networks", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().parse().unwrap()
    }

    /// A node asks to join `network` (as the node channel would); returns its id.
    async fn join(&self, network: NetworkId) -> NodeId {
        let identity = Identity::generate_unproven();
        self.controller
            .write(Command::MemberJoin {
                network,
                node: identity.node_id(),
                identity: *identity.public(),
                physical: Some(SocketAddr::from(([192, 0, 2, 7], 9993))),
                local: vec![SocketAddr::from(([10, 0, 0, 7], 9993))],
                at_ms: 1_700_000_000_000,
            })
            .await
            .unwrap();
        identity.node_id()
    }

    fn snapshot(&self) -> ControllerState {
        self.controller.read(Clone::clone)
    }
}

#[tokio::test]
async fn health_tells_details_only_with_the_token_and_takes_extra_fields() {
    let api = Api::new();
    let r = api.send("GET", "/v1/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"status": "ok"}));
    let r = api
        .send("GET", "/v1/health", Some(&format!("Bearer {TOKEN}")), None)
        .await;
    assert_eq!(r.body, json!({"status": "ok", "networks": 0}));

    let controller = InMemoryController::default();
    let hook: HealthHook = Arc::new(|| Box::pin(async { json!({"role": "leader", "term": 3}) }));
    let router = router_with(
        controller,
        TOKEN.to_owned(),
        ApiOptions {
            health: Some(hook),
            ..ApiOptions::default()
        },
    );
    let api = Api {
        controller: InMemoryController::default(),
        router,
    };
    let r = api.send("GET", "/v1/health", None, None).await;
    assert_eq!(
        r.body,
        json!({"status": "ok"}),
        "no details without the token"
    );
    let r = api
        .send("GET", "/v1/health", Some(&format!("Bearer {TOKEN}")), None)
        .await;
    assert_eq!(
        r.body,
        json!({"status": "ok", "networks": 0, "role": "leader", "term": 3})
    );
}

#[tokio::test]
async fn admin_routes_need_the_bearer_token() {
    let api = Api::new();
    let nwid = api.create(json!({"name": "prod"})).await;
    let routes = [
        ("GET", "/v1/networks".to_owned()),
        ("POST", "/v1/networks".to_owned()),
        ("GET", format!("/v1/networks/{nwid}")),
        ("PATCH", format!("/v1/networks/{nwid}")),
        ("DELETE", format!("/v1/networks/{nwid}")),
        ("GET", format!("/v1/networks/{nwid}/members")),
        ("GET", format!("/v1/networks/{nwid}/members/89e92ceee5")),
        ("PATCH", format!("/v1/networks/{nwid}/members/89e92ceee5")),
        ("GET", format!("/v1/networks/{nwid}/mesh")),
        (
            "POST",
            format!("/v1/networks/{nwid}/members/89e92ceee5/authorize"),
        ),
        ("GET", format!("/v1/networks/{nwid}/routes")),
        (
            "DELETE",
            format!("/v1/networks/{nwid}/routes?target=10.0.0.0/8"),
        ),
    ];
    let wrong = format!("Bearer {}", TOKEN.replace('0', "1"));
    let before = api.snapshot();
    for (method, uri) in &routes {
        for auth in [
            None,
            Some(wrong.as_str()),
            Some(&*format!("Basic {TOKEN}")),
            Some("Bearer"),
            // One spelling only: no other case, no extra spaces.
            Some(&*format!("bearer {TOKEN}")),
            Some(&*format!("Bearer  {TOKEN}")),
            Some(&*format!("Bearer {TOKEN} ")),
        ] {
            let r = api.send(method, uri, auth, Some(r#"{"name":"x"}"#)).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {auth:?}"
            );
            assert_eq!(
                r.error(),
                "missing or wrong bearer token: send `Authorization: Bearer TOKEN` with the \
                 token from the replica's data directory (api.token)"
            );
            assert_eq!(r.www_authenticate.as_deref(), Some("Bearer"));
        }
    }
    assert_eq!(api.snapshot(), before, "a refused request changed state");
    let r = api
        .send(
            "GET",
            "/v1/networks",
            Some(&format!("Bearer {TOKEN}")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn network_lifecycle() {
    let api = Api::new();
    let r = api
        .call("POST", "/v1/networks", Some(json!({"name": "prod"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let net = &r.body;
    let id: NetworkId = net["id"].as_str().unwrap().parse().unwrap();
    // Defaults, derived ranges, and never the key.
    assert_eq!(net["name"], "prod");
    assert_eq!(net["revision"], 1);
    assert_eq!(net["mtu"], 1420);
    assert_eq!(net["sixplane"], true);
    assert_eq!(net["rfc4193"], true);
    assert_eq!(net["v4_pools"], json!([crate::state::DEFAULT_V4_POOL]));
    assert_eq!(net["container_pool"], crate::state::DEFAULT_CONTAINER_POOL);
    assert_eq!(net["container_prefix"], 24);
    assert_eq!(
        net["sixplane_range"],
        addr::sixplane_network_prefix(id).to_string()
    );
    assert_eq!(
        net["rfc4193_range"],
        addr::rfc4193_network_prefix(id).to_string()
    );
    assert_eq!(net["routes"], json!([]));
    assert_eq!(net["members"], json!({"total": 0, "authorized": 0}));
    assert!(net["created_ms"].as_u64().unwrap() > 1_600_000_000_000);
    let keys: Vec<&str> = net
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(!keys.iter().any(|k| k.contains("key")), "{keys:?}");
    let seed = api.controller.read(|s| s.networks[&id].key_seed);
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!net.to_string().contains(&seed_hex));

    let list = api.call("GET", "/v1/networks", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body, json!([net]));
    let got = api.call("GET", &format!("/v1/networks/{id}"), None).await;
    assert_eq!(got.body, *net);

    let patched = api
        .call(
            "PATCH",
            &format!("/v1/networks/{id}"),
            Some(json!({"name": "production", "mtu": 1380})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["name"], "production");
    assert_eq!(patched.body["mtu"], 1380);
    assert_eq!(patched.body["revision"], 2);
    // An empty patch changes nothing, not even the revision.
    let same = api
        .call("PATCH", &format!("/v1/networks/{id}"), Some(json!({})))
        .await;
    assert_eq!(same.body, patched.body);

    let deleted = api
        .call("DELETE", &format!("/v1/networks/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.body, patched.body);
    let gone = api.call("GET", &format!("/v1/networks/{id}"), None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        gone.error(),
        format!("no network {id}; `meshd controller network list` shows the networks")
    );
    assert_eq!(api.call("GET", "/v1/networks", None).await.body, json!([]));
}

#[tokio::test]
async fn create_network_with_every_option() {
    let api = Api::new();
    let id = api
        .create(json!({
            "name": "lab",
            "v4_pools": ["10.77.0.0/16", "10.79.0.0/24"],
            "container_pool": "10.78.0.0/16",
            "container_prefix": 26,
            "sixplane": false,
            "rfc4193": true,
            "mtu": 1280,
        }))
        .await;
    let net = api
        .call("GET", &format!("/v1/networks/{id}"), None)
        .await
        .body;
    assert_eq!(net["v4_pools"], json!(["10.77.0.0/16", "10.79.0.0/24"]));
    assert_eq!(net["container_pool"], "10.78.0.0/16");
    assert_eq!(net["container_prefix"], 26);
    assert_eq!(net["sixplane_range"], Value::Null);
    assert_eq!(net["mtu"], 1280);

    // The state machine's own checks come back as 400 / 409 with its words.
    let r = api
        .call(
            "POST",
            "/v1/networks",
            Some(json!({"name": "x", "mtu": 100})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.error().contains("MTU 100 is out of range"),
        "{}",
        r.error()
    );
    let r = api
        .call(
            "POST",
            "/v1/networks",
            Some(
                json!({"name": "x", "v4_pools": ["10.0.0.0/8"], "container_pool": "10.78.0.0/16"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.error().contains("overlaps container pool"),
        "{}",
        r.error()
    );
}

#[tokio::test]
async fn malformed_bodies_are_json_400s_that_say_what_to_fix() {
    let api = Api::new();
    let before = api.snapshot();
    let cases: [(&str, &str); 8] = [
        ("{", "not valid JSON"),
        ("", "body is empty"),
        (
            r#"{"name": 5}"#,
            "name: invalid type: integer `5`, expected a string",
        ),
        (r#"{"v4_pools": []}"#, "missing field `name`"),
        (
            r#"{"name": "x", "v4_pool": ["10.1.0.0/16"]}"#,
            "unknown field `v4_pool`",
        ),
        (
            r#"{"name": "x", "v4_pools": ["10.1.0/16"]}"#,
            r#"IPv4 pool "10.1.0/16" is not a CIDR; write it like 10.147.0.0/16"#,
        ),
        (
            r#"{"name": "x", "container_pool": "10.1.2.3/16"}"#,
            "container pool 10.1.2.3/16 has host bits set; did you mean 10.1.0.0/16?",
        ),
        (r#"{"name": "x", "mtu": 70000}"#, "mtu: invalid value"),
    ];
    for (body, needle) in cases {
        let r = api.call_raw("POST", "/v1/networks", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert!(r.error().contains(needle), "{body}: {}", r.error());
    }
    assert_eq!(api.snapshot(), before);
}

#[tokio::test]
async fn malformed_ids_are_400s() {
    let api = Api::new();
    let id = api.create(json!({"name": "prod"})).await;
    for (uri, needle) in [
        (
            "/v1/networks/8056C2E21C000001".to_owned(),
            "a network id must be exactly 16 lowercase hex digits",
        ),
        (
            "/v1/networks/8056c2e21c".to_owned(),
            "a network id must be exactly 16 lowercase hex digits",
        ),
        (
            format!("/v1/networks/{id}/members/xyz"),
            "a node id must be exactly 10 lowercase hex digits",
        ),
        (
            format!("/v1/networks/{id}/members/ff00000001"),
            "is reserved",
        ),
        (
            "/v1/networks/zz/members/89e92ceee5".to_owned(),
            "a network id must be",
        ),
    ] {
        let r = api.call("GET", &uri, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(r.error().contains(needle), "{uri}: {}", r.error());
    }
}

#[tokio::test]
async fn unknown_networks_and_members_are_404s() {
    let api = Api::new();
    let id = api.create(json!({"name": "prod"})).await;
    let other = NetworkId::from_u64(0x8056_c2e2_1c00_0001);
    for (method, uri) in [
        ("GET", format!("/v1/networks/{other}")),
        ("DELETE", format!("/v1/networks/{other}")),
        ("GET", format!("/v1/networks/{other}/members")),
        ("GET", format!("/v1/networks/{other}/routes")),
        ("GET", format!("/v1/networks/{id}/members/89e92ceee5")),
        ("DELETE", format!("/v1/networks/{id}/members/89e92ceee5")),
        (
            "POST",
            format!("/v1/networks/{id}/members/89e92ceee5/authorize"),
        ),
        (
            "POST",
            format!("/v1/networks/{id}/members/89e92ceee5/deauthorize"),
        ),
        (
            "DELETE",
            format!("/v1/networks/{id}/routes?target=10.9.0.0/16"),
        ),
    ] {
        let r = api.call(method, &uri, None).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {}",
            r.body
        );
    }
    let r = api
        .call(
            "POST",
            &format!("/v1/networks/{id}/members/89e92ceee5/authorize"),
            None,
        )
        .await;
    assert_eq!(
        r.error(),
        format!(
            "node 89e92ceee5 is not a member of network {id}; it must run `meshd join {id}` first"
        )
    );
}

#[tokio::test]
async fn member_lifecycle() {
    let api = Api::new();
    let id = api.create(json!({"name": "prod"})).await;
    let a = api.join(id).await;
    let b = api.join(id).await;

    let list = api
        .call("GET", &format!("/v1/networks/{id}/members"), None)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body.as_array().unwrap().len(), 2);
    let m = api
        .call("GET", &format!("/v1/networks/{id}/members/{a}"), None)
        .await
        .body;
    assert_eq!(m["node_id"], a.to_string());
    assert_eq!(m["authorized"], false);
    assert_eq!(m["ipv4"], json!([]));
    assert_eq!(m["container_subnet"], Value::Null);
    assert_eq!(m["physical_endpoint"], "192.0.2.7:9993");
    assert_eq!(m["local_endpoints"], json!(["10.0.0.7:9993"]));
    assert_eq!(m["last_seen_ms"], 1_700_000_000_000_u64);
    assert_eq!(m["last_authorized_ms"], Value::Null);

    let r = api
        .call(
            "POST",
            &format!("/v1/networks/{id}/members/{a}/authorize"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let m = r.body;
    assert_eq!(m["authorized"], true);
    assert_eq!(m["ipv4"].as_array().unwrap().len(), 1);
    assert_eq!(m["container_subnet"], "172.28.0.0/24");
    assert_eq!(
        m["sixplane_subnet"],
        addr::sixplane_node_prefix(id, a).to_string()
    );
    assert_eq!(m["rfc4193_address"], addr::rfc4193_addr(id, a).to_string());
    assert!(m["last_authorized_ms"].as_u64().is_some());

    let net = api
        .call("GET", &format!("/v1/networks/{id}"), None)
        .await
        .body;
    assert_eq!(net["members"], json!({"total": 2, "authorized": 1}));

    let member_uri = format!("/v1/networks/{id}/members/{b}");
    let r = api
        .call("PATCH", &member_uri, Some(json!({"name": "db-1"})))
        .await;
    assert_eq!(r.body["name"], "db-1");
    assert_eq!(r.body["authorized"], false);
    let r = api
        .call("PATCH", &member_uri, Some(json!({"authorized": true})))
        .await;
    assert_eq!(r.body["authorized"], true);
    let before = api.snapshot();
    let r = api
        .call(
            "PATCH",
            &member_uri,
            Some(json!({"name": "db-2", "authorized": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("two requests"), "{}", r.error());
    assert_eq!(api.snapshot(), before);

    let r = api
        .call("POST", &format!("{member_uri}/deauthorize"), None)
        .await;
    assert_eq!(r.body["authorized"], false);
    // Addresses stay reserved while deauthorized.
    assert_eq!(r.body["ipv4"].as_array().unwrap().len(), 1);
    assert!(r.body["last_deauthorized_ms"].as_u64().is_some());

    let r = api.call("DELETE", &member_uri, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "db-1");
    let r = api.call("GET", &member_uri, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let list = api
        .call("GET", &format!("/v1/networks/{id}/members"), None)
        .await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn routes() {
    let api = Api::new();
    let id = api
        .create(
            json!({"name": "prod", "v4_pools": ["10.77.0.0/16"], "container_pool": "10.78.0.0/16"}),
        )
        .await;
    let a = api.join(id).await;
    let b = api.join(id).await;
    for n in [a, b] {
        api.call(
            "POST",
            &format!("/v1/networks/{id}/members/{n}/authorize"),
            None,
        )
        .await;
    }
    let b_ip = api
        .call("GET", &format!("/v1/networks/{id}/members/{b}"), None)
        .await
        .body["ipv4"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let routes_uri = format!("/v1/networks/{id}/routes");

    let r = api
        .call(
            "POST",
            &routes_uri,
            Some(json!({"target": "192.168.50.0/24", "via": a.to_string()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"target": "192.168.50.0/24", "via": a.to_string(), "gateway": null,
               "gateways": [a.to_string()]})
    );
    let r = api
        .call(
            "POST",
            &routes_uri,
            Some(json!({"target": "fd42::/64", "via": b_ip})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["via"], b.to_string());
    assert_eq!(r.body["gateway"], b_ip);

    // A list of gateways: a route that fails over, most preferred first.
    let r = api
        .call(
            "POST",
            &routes_uri,
            Some(json!({"target": "192.168.70.0/24", "via": [b.to_string(), a.to_string()]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["via"], b.to_string());
    assert_eq!(r.body["gateways"], json!([b.to_string(), a.to_string()]));

    let list = api.call("GET", &routes_uri, None).await.body;
    assert_eq!(list.as_array().unwrap().len(), 3);
    let net = api
        .call("GET", &format!("/v1/networks/{id}"), None)
        .await
        .body;
    assert_eq!(net["routes"], list);

    let before = api.snapshot();
    for (body, status, needle) in [
        (
            json!({"target": "192.168.50.128/25", "via": b.to_string()}),
            StatusCode::CONFLICT,
            "overlaps route 192.168.50.0/24",
        ),
        (
            json!({"target": "10.77.5.0/24", "via": a.to_string()}),
            StatusCode::CONFLICT,
            "overlaps the network's IPv4 pool 10.77.0.0/16",
        ),
        (
            json!({"target": "192.168.50.0/24", "via": a.to_string()}),
            StatusCode::CONFLICT,
            "exists already",
        ),
        (
            json!({"target": "192.168.60/24", "via": a.to_string()}),
            StatusCode::BAD_REQUEST,
            "is not a CIDR",
        ),
        (
            json!({"target": "192.168.60.1/24", "via": a.to_string()}),
            StatusCode::BAD_REQUEST,
            "did you mean 192.168.60.0/24?",
        ),
        (
            json!({"target": "192.168.60.0/24", "via": "gateway"}),
            StatusCode::BAD_REQUEST,
            "neither a node id",
        ),
        (
            json!({"target": "192.168.60.0/24", "via": "89e92ceee5"}),
            StatusCode::NOT_FOUND,
            "not an authorized member",
        ),
        (
            json!({"target": "192.168.60.0/24", "via": "10.77.200.200"}),
            StatusCode::NOT_FOUND,
            "holds gateway address 10.77.200.200",
        ),
        (
            json!({"target": "192.168.60.0/24"}),
            StatusCode::BAD_REQUEST,
            "missing field `via`",
        ),
        (
            json!({"target": "192.168.60.0/24", "via": []}),
            StatusCode::BAD_REQUEST,
            "names no gateway",
        ),
        (
            json!({"target": "192.168.60.0/24", "via": [a.to_string(), a.to_string()]}),
            StatusCode::BAD_REQUEST,
            "twice",
        ),
    ] {
        let r = api.call("POST", &routes_uri, Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.error().contains(needle), "{body}: {}", r.error());
    }
    for query in ["", "?target=192.168.50/24", "?cidr=192.168.50.0/24"] {
        let r = api
            .call("DELETE", &format!("{routes_uri}{query}"), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
    }
    assert_eq!(
        api.snapshot(),
        before,
        "a failing route request changed state"
    );

    let r = api
        .call("DELETE", &format!("{routes_uri}?target=fd42::/64"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["target"], "fd42::/64");
    let r = api
        .call("DELETE", &format!("{routes_uri}?target=fd42::/64"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), format!("network {id} has no route fd42::/64"));

    // A member that owns a route cannot be deleted under it.
    let r = api
        .call("DELETE", &format!("/v1/networks/{id}/members/{a}"), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.error().contains("remove it first"), "{}", r.error());
}

#[tokio::test]
async fn an_exhausted_pool_is_a_409_and_changes_nothing() {
    let api = Api::new();
    // A /30 has two usable addresses.
    let id = api
        .create(json!({"name": "tiny", "v4_pools": ["10.99.0.0/30"]}))
        .await;
    let nodes = [api.join(id).await, api.join(id).await, api.join(id).await];
    for n in &nodes[..2] {
        let r = api
            .call(
                "POST",
                &format!("/v1/networks/{id}/members/{n}/authorize"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let before = api.snapshot();
    let r = api
        .call(
            "POST",
            &format!("/v1/networks/{id}/members/{}/authorize", nodes[2]),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.error()
            .contains("no free address left in the IPv4 pools (10.99.0.0/30)"),
        "{}",
        r.error()
    );
    let r = api
        .call(
            "PATCH",
            &format!("/v1/networks/{id}/members/{}", nodes[2]),
            Some(json!({"authorized": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(api.snapshot(), before);
    let m = api
        .call(
            "GET",
            &format!("/v1/networks/{id}/members/{}", nodes[2]),
            None,
        )
        .await
        .body;
    assert_eq!(m["authorized"], false);
    assert_eq!(m["ipv4"], json!([]));
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let api = Api::new();
    let r = api.call("GET", "/v1/nets", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.error().contains("no API endpoint GET /v1/nets"),
        "{}",
        r.error()
    );
    let r = api.call("PUT", "/v1/networks", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.error().contains("does not accept PUT"), "{}", r.error());
}

#[test]
fn every_write_error_has_one_status() {
    let status = |kind| ApiError::from(&WriteError::Rejected(Rejected::new(kind, "m"))).status;
    assert_eq!(status(RejectKind::NotFound), StatusCode::NOT_FOUND);
    assert_eq!(status(RejectKind::Conflict), StatusCode::CONFLICT);
    assert_eq!(status(RejectKind::Exhausted), StatusCode::CONFLICT);
    assert_eq!(status(RejectKind::Invalid), StatusCode::BAD_REQUEST);
    assert_eq!(status(RejectKind::Forbidden), StatusCode::FORBIDDEN);
    let unavailable = ApiError::from(&WriteError::Unavailable("no leader".into()));
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.message, "controller unavailable: no leader");
}

#[tokio::test]
async fn a_route_over_a_replica_address_is_refused() {
    let api = Api::new();
    api.controller.set_replica_addresses(vec![
        "203.0.113.10:9994".into(),
        "ctl.example.com:9994".into(),
    ]);
    let nwid = api.create(json!({"name": "prod"})).await;
    let node = api.join(nwid).await;
    let r = api
        .call(
            "POST",
            &format!("/v1/networks/{nwid}/members/{node}/authorize"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let route = |target: &str| json!({"target": target, "via": node.to_string()});
    let uri = format!("/v1/networks/{nwid}/routes");
    let r = api.call("POST", &uri, Some(route("203.0.113.0/24"))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.error().contains("203.0.113.10"), "{}", r.error());
    let r = api.call("POST", &uri, Some(route("127.0.0.0/8"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = api.call("POST", &uri, Some(route("198.51.100.0/24"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

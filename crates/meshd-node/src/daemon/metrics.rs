//! `meshd daemon --metrics-listen ADDR:PORT`: the node's Prometheus metrics on
//! `GET /metrics`, rendered at each scrape from what `meshd status --json` shows.
//!
//! Off by default. The page names peers and networks but holds no secret, so it needs no
//! token: bind it to loopback or a management address, as with any exporter.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use meshd_io::metrics::{self, Exposition, Kind};
use tokio::net::TcpListener;
use tracing::warn;

use super::Daemon;
use super::api::{PeerPath, StatusView};

/// Binds the metrics listener; a taken port stops the daemon at start, not later.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))
}

/// Serves `GET /metrics` until the daemon stops.
pub(super) async fn serve(listener: TcpListener, daemon: Arc<Daemon>) {
    let mut stop = daemon.stop.clone();
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(daemon);
    let shutdown = async move { super::stopped(&mut stop).await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        warn!(error = %e, "the metrics listener failed");
    }
}

async fn scrape(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    let status = daemon.status_view();
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], render(&status))
}

/// The metrics page of a node whose status is `s`.
pub fn render(s: &StatusView) -> String {
    let mut e = Exposition::new();
    let node = s.node_id.to_string();
    e.family(
        "meshd_build_info",
        Kind::Gauge,
        "The node's id and version (always 1).",
    )
    .sample(&[("node", &node), ("version", &s.version)], 1.0);
    e.family(
        "meshd_controller_connected",
        Kind::Gauge,
        "1 while the node has a session with a controller replica.",
    )
    .sample(&[], f64::from(u8::from(s.online)));
    e.family(
        "meshd_networks",
        Kind::Gauge,
        "Networks the node joined, by status (OK, ACCESS_DENIED, ...).",
    );
    let mut by_status = std::collections::BTreeMap::<&str, u64>::new();
    for n in &s.networks {
        *by_status.entry(n.status.as_str()).or_default() += 1;
    }
    for (status, n) in by_status {
        e.sample(&[("status", status)], n as f64);
    }

    peers(&mut e, s);

    e.family(
        "meshd_dropped_packets_total",
        Kind::Counter,
        "Packets the node dropped, by network and reason.",
    );
    for n in &s.networks {
        let network = n.id.to_string();
        for (reason, count) in &n.drops {
            e.sample(&[("network", &network), ("reason", reason)], *count as f64);
        }
    }
    e.family(
        "meshd_relayed_packets_total",
        Kind::Counter,
        "Packets this node relayed between other members (`--relay`).",
    );
    for n in &s.networks {
        if let Some(r) = &n.relaying {
            e.sample(&[("network", &n.id.to_string())], r.packets as f64);
        }
    }
    e.family(
        "meshd_relayed_bytes_total",
        Kind::Counter,
        "Bytes this node relayed between other members (`--relay`).",
    );
    for n in &s.networks {
        if let Some(r) = &n.relaying {
            e.sample(&[("network", &n.id.to_string())], r.bytes as f64);
        }
    }

    e.family(
        "meshd_worker_packets_total",
        Kind::Counter,
        "Packets each packet worker moved: to_peers (TUN to UDP) and from_peers (UDP to TUN).",
    );
    for (i, w) in s.packet_workers.iter().enumerate() {
        let worker = i.to_string();
        e.sample(
            &[("worker", &worker), ("direction", "to_peers")],
            w.to_peers as f64,
        );
        e.sample(
            &[("worker", &worker), ("direction", "from_peers")],
            w.from_peers as f64,
        );
    }
    e.family(
        "meshd_worker_busy_poll_seconds_total",
        Kind::Counter,
        "Wall-clock time each packet worker spent polling for packets instead of sleeping.",
    );
    for (i, w) in s.packet_workers.iter().enumerate() {
        e.sample(
            &[("worker", &i.to_string())],
            w.busy_poll_ms as f64 / 1000.0,
        );
    }
    e.finish()
}

/// The per-peer families: traffic, round-trip time, path, handshakes.
fn peers(e: &mut Exposition, s: &StatusView) {
    type Value = fn(&super::api::PeerView) -> Option<f64>;
    let families: [(&str, Kind, &str, Value); 6] = [
        (
            "meshd_peer_received_bytes_total",
            Kind::Counter,
            "Bytes received from the peer, encrypted.",
            |p| Some(p.rx_bytes as f64),
        ),
        (
            "meshd_peer_sent_bytes_total",
            Kind::Counter,
            "Bytes sent to the peer, encrypted.",
            |p| Some(p.tx_bytes as f64),
        ),
        (
            "meshd_peer_received_packets_total",
            Kind::Counter,
            "Datagrams received from the peer.",
            |p| Some(p.rx_packets as f64),
        ),
        (
            "meshd_peer_sent_packets_total",
            Kind::Counter,
            "Datagrams sent to the peer.",
            |p| Some(p.tx_packets as f64),
        ),
        (
            "meshd_peer_handshakes_total",
            Kind::Counter,
            "Completed handshakes with the peer, initial and rekeys.",
            |p| Some(p.handshakes as f64),
        ),
        (
            "meshd_peer_rtt_seconds",
            Kind::Gauge,
            "Round-trip time to the peer on its current path.",
            |p| p.rtt_ms.map(|ms| ms / 1000.0),
        ),
    ];
    for (name, kind, help, value) in families {
        e.family(name, kind, help);
        for p in &s.peers {
            if let Some(v) = value(p) {
                let (network, peer) = (p.network.to_string(), p.node_id.to_string());
                e.sample(
                    &[("network", &network), ("peer", &peer), ("name", &p.name)],
                    v,
                );
            }
        }
    }
    e.family(
        "meshd_peer_path",
        Kind::Gauge,
        "How traffic to the peer goes: 1 for its current path (direct, relay or none) and kind \
         of direct path (lan, public, punched, port-mapped; empty otherwise).",
    );
    for p in &s.peers {
        let (network, peer) = (p.network.to_string(), p.node_id.to_string());
        let path = match p.path {
            PeerPath::Direct => "direct",
            PeerPath::Relay => "relay",
            PeerPath::None => "none",
        };
        let kind = p.direct.map_or("", |d| d.as_str());
        e.sample(
            &[
                ("network", &network),
                ("peer", &peer),
                ("name", &p.name),
                ("path", path),
                ("kind", kind),
            ],
            1.0,
        );
    }
}

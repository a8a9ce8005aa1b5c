//! `GET /metrics` on a replica's admin API (behind the admin token): the controller's
//! state, its node channel and relay, and its Raft progress, in Prometheus's text format.
//! Rendered at each scrape from what the replica keeps anyway.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use meshd_io::metrics::{self, Exposition, Kind};
use meshd_proto::reach::relay::RelayCounters;

use super::{ClusterView, Replica, ReplicaHealth, ReplicaRole};
use crate::api::views::is_online;
use crate::channel::ChannelStats;
use crate::channel::stats::ChannelSnapshot;
use crate::controller::Controller;
use crate::relay::RelayStats;
use crate::state::ControllerState;

#[derive(Clone)]
struct Sources {
    replica: Replica,
    channel: ChannelStats,
    relay: RelayStats,
}

/// The `/metrics` route of `replica`, whose node channel counts into `channel` and relay
/// into `relay`.
pub fn routes(replica: Replica, channel: ChannelStats, relay: RelayStats) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Sources {
            replica,
            channel,
            relay,
        })
}

async fn scrape(State(s): State<Sources>) -> impl IntoResponse {
    let view = s.replica.cluster_view().await;
    let now_ms = meshd_io::clock::now_ms();
    let mut e = s.replica.read(|state| {
        let mut e = Exposition::new();
        controller_metrics(&mut e, state, now_ms);
        e
    });
    channel_metrics(&mut e, &s.channel.snapshot());
    relay_metrics(&mut e, &s.relay.snapshot());
    raft_metrics(&mut e, &s.replica.metrics(), &view);
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], e.finish())
}

/// Members by state, online members and config revisions, per network.
pub fn controller_metrics(e: &mut Exposition, state: &ControllerState, now_ms: u64) {
    e.family(
        "meshd_controller_members",
        Kind::Gauge,
        "Members of each network by state: waiting (never authorized), authorized, deauthorized.",
    );
    for net in state.networks.values() {
        let network = net.id.to_string();
        let mut by_state: BTreeMap<&str, u64> =
            [("authorized", 0), ("deauthorized", 0), ("waiting", 0)].into();
        for m in net.members.values() {
            let s = if m.authorized {
                "authorized"
            } else if m.is_waiting() {
                "waiting"
            } else {
                "deauthorized"
            };
            *by_state.entry(s).or_default() += 1;
        }
        for (s, n) in by_state {
            e.sample(&[("network", &network), ("state", s)], n as f64);
        }
    }
    e.family(
        "meshd_controller_members_online",
        Kind::Gauge,
        "Members of each network that joined or reported within the last 30 s.",
    );
    for net in state.networks.values() {
        let online = net
            .members
            .values()
            .filter(|m| is_online(m, now_ms))
            .count();
        e.sample(&[("network", &net.id.to_string())], online as f64);
    }
    e.family(
        "meshd_controller_config_revision",
        Kind::Gauge,
        "Each network's config revision: it grows with every change members see.",
    );
    for net in state.networks.values() {
        e.sample(
            &[("network", &net.id.to_string()), ("name", &net.name)],
            net.revision as f64,
        );
    }
}

fn channel_metrics(e: &mut Exposition, c: &ChannelSnapshot) {
    e.family(
        "meshd_controller_connected_nodes",
        Kind::Gauge,
        "Nodes connected to this replica's node channel.",
    )
    .sample(&[], c.connected as f64);
    e.family(
        "meshd_controller_config_push_seconds",
        Kind::Histogram,
        "Time from a change applied on this replica to its signed config written to a connected \
         node's stream.",
    )
    .histogram(&[], &c.push_buckets, c.push_seconds, c.push_count);
}

fn relay_metrics(e: &mut Exposition, r: &RelayCounters) {
    e.family(
        "meshd_relay_reflections_total",
        Kind::Counter,
        "Reflect requests this replica's relay answered (nodes learning their public address).",
    )
    .sample(&[], r.reflections as f64);
    e.family(
        "meshd_relay_packets_total",
        Kind::Counter,
        "Packets this replica's relay forwarded between members.",
    )
    .sample(&[], r.relayed_packets as f64);
    e.family(
        "meshd_relay_bytes_total",
        Kind::Counter,
        "Bytes this replica's relay forwarded between members.",
    )
    .sample(&[], r.relayed_bytes as f64);
    e.family(
        "meshd_relay_dropped_packets_total",
        Kind::Counter,
        "Packets this replica's relay refused, by reason.",
    );
    let drops: BTreeMap<_, _> = r.drops.iter().collect();
    for (reason, n) in drops {
        e.sample(&[("reason", reason)], *n as f64);
    }
}

/// This replica's Raft progress, and every replica's as the leader's view has it.
pub fn raft_metrics(e: &mut Exposition, h: &ReplicaHealth, view: &ClusterView) {
    let index = |i: Option<u64>| i.map_or(0.0, |i| i as f64);
    e.family(
        "meshd_raft_term",
        Kind::Gauge,
        "This replica's current Raft term.",
    )
    .sample(&[], h.term as f64);
    e.family(
        "meshd_raft_is_leader",
        Kind::Gauge,
        "1 while this replica leads the cluster.",
    )
    .sample(&[], f64::from(u8::from(h.role == ReplicaRole::Leader)));
    e.family(
        "meshd_raft_last_log_index",
        Kind::Gauge,
        "The last index in this replica's log.",
    )
    .sample(&[], index(h.last_log_index));
    e.family(
        "meshd_raft_applied_index",
        Kind::Gauge,
        "The last log index this replica applied to its state.",
    )
    .sample(&[], index(h.applied_index));
    e.family(
        "meshd_raft_commit_index",
        Kind::Gauge,
        "The highest log index a quorum of voters stores, as the leader's view has it.",
    );
    if let Some(commit) = commit_index(view) {
        e.sample(&[], commit as f64);
    }
    e.family(
        "meshd_raft_replica_lag_entries",
        Kind::Gauge,
        "How many log entries each replica is behind the leader's last index.",
    );
    for r in &view.replicas {
        if let Some(lag) = r.lag {
            e.sample(&[("replica", &r.id.to_string())], lag as f64);
        }
    }
    e.family(
        "meshd_raft_replica_healthy",
        Kind::Gauge,
        "1 for each replica that answered the leader lately and is at most a few entries behind.",
    );
    for r in &view.replicas {
        if let Some(healthy) = r.healthy {
            e.sample(
                &[("replica", &r.id.to_string())],
                f64::from(u8::from(healthy)),
            );
        }
    }
}

/// The index a majority of voters has stored: what the leader may consider committed.
fn commit_index(view: &ClusterView) -> Option<u64> {
    let mut matched: Vec<u64> = view
        .replicas
        .iter()
        .filter(|r| r.role != ReplicaRole::Learner)
        .map(|r| r.matched_index.unwrap_or(0))
        .collect();
    if matched.is_empty() || view.leader.is_none() {
        return None;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(matched.len() / 2).copied()
}

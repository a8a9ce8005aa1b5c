//! The replica set as a whole: writes forwarded to the leader, membership changes, and the
//! cluster's replication status.
//!
//! Replicas talk to each other over HTTP inside TLS on their replication address (the TCP
//! side of `--listen`), every route behind the cluster secret (see [`crate::raft::network`]):
//!
//! ```text
//! POST /raft/append, /raft/vote, /raft/snapshot   openraft's RPCs
//! POST /raft/write       Command -> Result<(index, Result<Applied, Rejected>), Refusal>
//! POST /raft/membership  MembershipRequest -> Result<bool, MembershipError>       (to the leader)
//! POST /raft/replicas    () -> Result<ClusterView, String>                        (to the leader)
//! POST /raft/info        () -> ReplicaInfo              (the leader probes a replica it adds)
//! ```
//!
//! A follower passes a write or membership change on to the leader it knows (one hop) and
//! returns the leader's answer once it has applied the write itself (so a read on the same
//! replica right after sees it); while there is no leader it retries for [`LEADER_WAIT`].
//! The admin API adds `GET/POST /v1/replicas`, `DELETE /v1/replicas/{id}` and
//! `GET /v1/cluster-secret` ([`admin_routes`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};

use super::{Replica, ReplicaRole, unavailable_message};
use crate::api::ApiError;
use crate::api::extract::Body;
use crate::api::requests::AddReplica;
use crate::controller::WriteError;
use crate::raft::network::{HttpNetwork, TransportError, decode, guard, postcard_response};
use crate::raft::{ClientResponse, ReplicaId, ReplicaKey, ReplicaNode};
use crate::state::{Applied, Command, Rejected};

/// How long a write or membership change waits for a leader before failing: long enough
/// for an election after the leader died (see the raft timings in `Replica::open_with`).
pub const LEADER_WAIT: Duration = Duration::from_secs(4);
/// How long a follower waits for the leader to answer a forwarded write: it commits first.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a follower waits to apply a write the leader committed for it.
const APPLY_WAIT: Duration = Duration::from_secs(5);
/// How long a follower waits for the leader's view of the cluster before showing its own.
const VIEW_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the leader waits for a new replica to answer before adding it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a new replica may take to catch up (by log or snapshot) before it becomes a voter.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a follower waits for the leader to carry out a membership change.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(25);
/// A replica is healthy if the leader heard from it this recently ...
const HEALTHY_CONTACT: Duration = Duration::from_secs(3);
/// ... and it is at most this many entries behind.
const HEALTHY_LAG: u64 = 100;
/// Pause between attempts while the leader is unknown or unreachable.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One replica in [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub id: ReplicaId,
    /// Where the other replicas (and nodes) reach it: `host:port`.
    pub address: String,
    /// The key it proves to the other replicas; `None` if recorded before keys were pinned
    /// (`replica add` with its key records it).
    #[serde(default)]
    pub key: Option<ReplicaKey>,
    pub role: ReplicaRole,
    /// The highest log index known to be stored on it (for the leader: its last index).
    pub matched_index: Option<u64>,
    /// How many entries it is behind the leader's last log index.
    pub lag: Option<u64>,
    /// Answered the leader within the last few seconds and is at most a few entries behind.
    /// `None` when the view is not the leader's.
    pub healthy: Option<bool>,
    /// Milliseconds since it last answered the leader.
    pub last_contact_ms: Option<u64>,
}

/// The replica set and its replication progress, as `GET /v1/replicas` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The leader; `None` if there is none or it could not be asked.
    pub leader: Option<ReplicaId>,
    pub term: u64,
    /// The replica this view comes from: the leader, unless `note` says otherwise.
    pub reported_by: ReplicaId,
    /// The leader's last log index (in a local view, the reporting replica's).
    pub last_log_index: Option<u64>,
    pub replicas: Vec<ReplicaStatus>,
    /// Why this is not the leader's view, when it is not.
    pub note: Option<String>,
}

/// What a membership change failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipErrorKind {
    /// The request cannot work as given (bad address, last voter, wrong id).
    Invalid,
    NotFound,
    /// The cluster's state does not allow it (id or address taken, change in progress).
    Conflict,
    /// No leader, the new replica is unreachable, or the change timed out.
    Unavailable,
    /// Sent to a replica that is not the leader (any more): ask the leader.
    NotLeader,
}

/// Why a membership change did not happen. The message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct MembershipError {
    pub kind: MembershipErrorKind,
    pub message: String,
}

impl MembershipError {
    fn new(kind: MembershipErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(MembershipErrorKind::Invalid, message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(MembershipErrorKind::Conflict, message)
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(MembershipErrorKind::Unavailable, message)
    }
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        let status = match e.kind {
            MembershipErrorKind::Invalid => StatusCode::BAD_REQUEST,
            MembershipErrorKind::NotFound => StatusCode::NOT_FOUND,
            MembershipErrorKind::Conflict => StatusCode::CONFLICT,
            MembershipErrorKind::Unavailable | MembershipErrorKind::NotLeader => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError::new(status, e.message)
    }
}

/// A membership change, as a follower forwards it to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum MembershipRequest {
    Add {
        id: ReplicaId,
        address: String,
        key: ReplicaKey,
    },
    Remove {
        id: ReplicaId,
    },
}

/// Why the leader did not run a forwarded write.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refusal {
    /// Nothing was proposed (not the leader any more): the follower may ask again.
    retry: bool,
    message: String,
}

/// The answer to a forwarded write: its log index and outcome.
type WriteReply = Result<(u64, Result<Applied, Rejected>), Refusal>;

/// What a replica says about itself when the leader is about to add it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReplicaInfo {
    id: ReplicaId,
    voters: Vec<ReplicaId>,
}

/// Checks a replica address: `host:port` (an IP address or a DNS name; IPv6 in brackets),
/// returned in canonical form. The message says what to fix.
pub fn parse_replica_address(text: &str) -> Result<String, String> {
    let text = text.trim();
    let example = "write it as HOST:PORT, e.g. 10.0.0.2:9994 or ctl2.example.com:9994";
    if text.contains("://") {
        return Err(format!(
            "replica address {text:?} has a scheme; {example} (no http://)"
        ));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.ip().is_unspecified() {
            return Err(format!(
                "replica address {text:?} is the unspecified address, which nobody can connect \
                 to; give an address the other replicas reach this one at, e.g. 10.0.0.2:{}",
                addr.port()
            ));
        }
        if addr.port() == 0 {
            return Err(format!("replica address {text:?} has port 0; {example}"));
        }
        return Ok(addr.to_string());
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("replica address {text:?} has no port; {example}"));
    };
    if host.contains(':') {
        return Err(format!(
            "replica address {text:?} is not HOST:PORT; put an IPv6 address in brackets, \
             e.g. [fd00::2]:9994"
        ));
    }
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with(['-', '.']);
    if !port_ok || !host_ok {
        return Err(format!(
            "replica address {text:?} is not HOST:PORT; {example}"
        ));
    }
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// Whether a replica address names this host only (`127.0.0.0/8`, `::1`, `localhost`).
pub fn is_loopback_address(address: &str) -> bool {
    // Also an older replica's `http://host:port`.
    let address = address.split_once("://").map_or(address, |(_, rest)| rest);
    let address = address.trim_end_matches('/');
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return addr.ip().is_loopback();
    }
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// How a forwarded request went.
enum Forwarded<T> {
    Done(T),
    /// Nothing happened; asking again (the leader may have changed) may work.
    Retry(String),
}

impl Replica {
    fn metrics_now(&self) -> RaftMetrics<ReplicaId, ReplicaNode> {
        self.raft.metrics().borrow().clone()
    }

    /// A one-off client of replica `target`.
    fn peer(&self, target: ReplicaId, node: &ReplicaNode) -> HttpNetwork {
        HttpNetwork::peer(self.id, target, node.clone(), self.credentials.clone())
    }

    /// The leader this replica knows of, other than itself, as the membership records it.
    fn remote_leader(m: &RaftMetrics<ReplicaId, ReplicaNode>) -> Option<(ReplicaId, ReplicaNode)> {
        let leader = m.current_leader.filter(|l| *l != m.id)?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.clone()))
    }

    /// Proposes `cmd` here if this replica leads, else through the leader: the
    /// [`crate::controller::Controller::write`] of a replica.
    pub(super) async fn write_anywhere(&self, cmd: Command) -> Result<Applied, WriteError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let err = match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => return outcome(resp.data),
                Err(e) => e,
            };
            let leader = match &err {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f
                    .leader_id
                    .filter(|l| *l != self.id)
                    .zip(f.leader_node.clone()),
                _ => return Err(WriteError::Unavailable(unavailable_message(self.id, err))),
            };
            let retry = match leader {
                Some((leader, node)) => match self.forward_write(leader, &node, &cmd).await {
                    Forwarded::Done(result) => return result,
                    Forwarded::Retry(message) => message,
                },
                // No leader (an election), or this replica is about to lead: wait.
                None => unavailable_message(self.id, err),
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(WriteError::Unavailable(retry));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn forward_write(
        &self,
        leader: ReplicaId,
        node: &ReplicaNode,
        cmd: &Command,
    ) -> Forwarded<Result<Applied, WriteError>> {
        let addr = &node.addr;
        let reply: Result<WriteReply, _> = self
            .peer(leader, node)
            .post("/raft/write", cmd, FORWARD_TIMEOUT)
            .await;
        match reply {
            Ok(Ok((index, result))) => {
                // Read-your-writes on this replica: the caller reads here next.
                let applied = self
                    .raft
                    .wait(Some(APPLY_WAIT))
                    .applied_index_at_least(Some(index), "apply a forwarded write")
                    .await;
                if applied.is_err() {
                    tracing::warn!(
                        replica = self.id,
                        index,
                        "the leader committed a forwarded write that this replica has not \
                         applied within {APPLY_WAIT:?}"
                    );
                }
                Forwarded::Done(result.map_err(WriteError::Rejected))
            }
            Ok(Err(refusal)) if refusal.retry => Forwarded::Retry(refusal.message),
            Ok(Err(refusal)) => Forwarded::Done(Err(WriteError::Unavailable(refusal.message))),
            Err(e) if e.is_connect() => Forwarded::Retry(format!(
                "replica {} cannot reach the leader, replica {leader} at {addr}: {e}",
                self.id
            )),
            Err(e) if e.not_delivered() => Forwarded::Done(Err(WriteError::Unavailable(format!(
                "replica {} could not pass the write on to the leader, replica {leader} at \
                 {addr}: {e}",
                self.id
            )))),
            Err(e) => Forwarded::Done(Err(WriteError::Unavailable(format!(
                "replica {} passed the write on to the leader, replica {leader} at {addr}, \
                 but got no answer ({e}); it may or may not have been applied, check before \
                 retrying",
                self.id
            )))),
        }
    }

    /// Adds replica `id`, reached at `address` and proving `key`, to the cluster: first as a
    /// learner that catches up (by log or snapshot), then as a voter. Returns whether
    /// anything changed (`false`: it already was a voter at that address with that key).
    /// Runs on the leader; a follower asks the leader.
    pub async fn add_replica(
        &self,
        id: ReplicaId,
        address: &str,
        key: ReplicaKey,
    ) -> Result<bool, MembershipError> {
        let address = parse_replica_address(address).map_err(MembershipError::invalid)?;
        self.membership(MembershipRequest::Add { id, address, key })
            .await
    }

    /// Removes replica `id` from the cluster (it stops receiving the log; stop its process
    /// afterwards). The last voter cannot be removed. Runs on the leader; a follower asks the
    /// leader.
    pub async fn remove_replica(&self, id: ReplicaId) -> Result<bool, MembershipError> {
        self.membership(MembershipRequest::Remove { id }).await
    }

    async fn membership(&self, req: MembershipRequest) -> Result<bool, MembershipError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let m = self.metrics_now();
            let retry = if m.state == ServerState::Leader {
                match self.membership_here(&req).await {
                    Err(e) if e.kind == MembershipErrorKind::NotLeader => e.message,
                    done => return done,
                }
            } else if let Some((leader, node)) = Self::remote_leader(&m) {
                let addr = &node.addr;
                let reply: Result<Result<bool, MembershipError>, _> = self
                    .peer(leader, &node)
                    .post("/raft/membership", &req, MEMBERSHIP_TIMEOUT)
                    .await;
                match reply {
                    Ok(Err(e)) if e.kind == MembershipErrorKind::NotLeader => e.message,
                    Ok(done) => return done,
                    Err(e) if e.is_connect() => {
                        format!("cannot reach the leader, replica {leader} at {addr}: {e}")
                    }
                    Err(e) => {
                        return Err(MembershipError::unavailable(format!(
                            "the leader, replica {leader} at {addr}, did not carry out the \
                             change: {e}; check `meshd controller replica list` before retrying"
                        )));
                    }
                }
            } else {
                "no controller replica is leader right now (election in progress or no \
                 quorum); retry in a few seconds"
                    .to_owned()
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(MembershipError::unavailable(retry));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Carries out a membership change on this replica, which should be the leader.
    async fn membership_here(&self, req: &MembershipRequest) -> Result<bool, MembershipError> {
        match req {
            MembershipRequest::Add { id, address, key } => self.add_here(*id, address, *key).await,
            MembershipRequest::Remove { id } => self.remove_here(*id).await,
        }
    }

    async fn add_here(
        &self,
        id: ReplicaId,
        address: &str,
        key: ReplicaKey,
    ) -> Result<bool, MembershipError> {
        let m = self.metrics_now();
        let membership = m.membership_config.membership();
        let voter = membership.voter_ids().any(|v| v == id);
        let node = ReplicaNode::new(address, Some(key));
        // Addresses recorded before they were checked may carry a scheme (`http://`).
        let recorded_at =
            |n: &ReplicaNode| parse_replica_address(&n.addr).unwrap_or(n.addr.clone());
        match membership.get_node(&id) {
            Some(old) if recorded_at(old) != address => {
                return Err(MembershipError::conflict(format!(
                    "replica {id} is already a member, at {}; pick another --id for the new \
                     replica (re-run `meshd controller init --join` with --id), or remove the \
                     old one first with `meshd controller replica remove --id {id}`",
                    old.addr
                )));
            }
            Some(old) if old.key.is_some_and(|k| k != key) => {
                return Err(MembershipError::conflict(format!(
                    "replica {id} at {address} is a member with another key ({}); remove it \
                     first with `meshd controller replica remove --id {id}` if it was \
                     initialized again",
                    old.key.map(|k| k.to_string()).unwrap_or_default()
                )));
            }
            Some(_) if voter => return self.record_key(id, &node).await,
            _ => {}
        }
        if let Some((other, _)) = membership
            .nodes()
            .find(|(other, n)| **other != id && n.addr == address)
        {
            return Err(MembershipError::conflict(format!(
                "{address} is already the address of replica {other}"
            )));
        }
        let own = membership
            .get_node(&self.id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        if is_loopback_address(&own) != is_loopback_address(address) {
            let (lo, other) = if is_loopback_address(&own) {
                (
                    format!(
                        "this cluster's leader, replica {}, advertises the loopback address {own}",
                        self.id
                    ),
                    format!("a replica at {address}"),
                )
            } else {
                (
                    format!("{address} is a loopback address"),
                    format!("replica {} at {own}", self.id),
                )
            };
            return Err(MembershipError::invalid(format!(
                "{lo}, which only its own host can reach, so {other} cannot be in one cluster \
                 with it; every replica must reach every other. Give each replica an address \
                 the others can reach (`meshd controller init --advertise HOST:PORT`, or \
                 --listen with a specific IP)"
            )));
        }

        // Ask the new replica first: a clear error now beats a learner that never catches up.
        let info: Result<ReplicaInfo, TransportError> = self
            .peer(id, &node)
            .post("/raft/info", &(), PROBE_TIMEOUT)
            .await;
        let info = info.map_err(|e| match e {
            TransportError::Connect { .. } | TransportError::Timeout { .. } => {
                MembershipError::unavailable(format!(
                    "cannot reach replica {id} at {address} ({e}); start it there with \
                     `meshd controller run --data DIR` (after `meshd controller init --join`), \
                     and check that {address} is reachable over TCP from replica {}",
                    self.id
                ))
            }
            TransportError::Unauthorized { .. } => MembershipError::invalid(format!(
                "the replica at {address} does not hold this cluster's secret; initialize it \
                 with `meshd controller init --join URL --token TOKEN` (TOKEN: this cluster's \
                 admin token, in api.token of any replica's data directory)"
            )),
            TransportError::Tls { .. } => MembershipError::invalid(format!(
                "the replica at {address} did not prove the key {key}; pass the key that \
                 `meshd controller init --join` printed for it ({e})"
            )),
            TransportError::WrongReplica { .. } => {
                MembershipError::invalid(format!("cannot add replica {id}: {e}"))
            }
            e => MembershipError::unavailable(format!(
                "replica {id} at {address} gave no usable answer: {e}"
            )),
        })?;
        if !info.voters.is_empty() && !membership.nodes().any(|(n, _)| *n == id) {
            return Err(MembershipError::conflict(format!(
                "the replica at {address} already belongs to a cluster (voters {:?}); initialize \
                 it afresh with `meshd controller init --join URL` on an empty --data directory",
                info.voters
            )));
        }

        let added = self
            .raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| change_failed(self.id, e))?;
        let since = added.log_id.index;
        let caught_up = self
            .raft
            .wait(Some(CATCH_UP_TIMEOUT))
            .metrics(
                |m| {
                    m.state != ServerState::Leader
                        || m.replication
                            .as_ref()
                            .and_then(|r| r.get(&id).copied().flatten())
                            .is_some_and(|l| l.index >= since)
                },
                "the new replica catches up",
            )
            .await;
        match caught_up {
            Ok(m) if m.state != ServerState::Leader => {
                return Err(MembershipError::unavailable(format!(
                    "replica {} lost the leadership while replica {id} was catching up; it is \
                     a learner now: check `meshd controller replica list` and run `replica \
                     add` again",
                    self.id
                )));
            }
            Ok(_) => {}
            Err(_) => {
                // Undo: a learner that cannot be reached only makes the leader retry forever.
                let undo = self
                    .raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await;
                let state = if undo.is_ok() {
                    "it was not added"
                } else {
                    "it stays a learner (no vote); remove it with `meshd controller replica remove`"
                };
                return Err(MembershipError::unavailable(format!(
                    "replica {id} at {address} did not catch up within {} s; {state}. Check that \
                     `meshd controller run` runs there and its log, then try again",
                    CATCH_UP_TIMEOUT.as_secs()
                )));
            }
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| change_failed(self.id, e))?;
        tracing::info!(replica = self.id, added = id, %address, "replica added as a voter");
        Ok(true)
    }

    /// A voter recorded before keys were pinned gets its key (after proving it); one with the
    /// key already is left as it is.
    async fn record_key(&self, id: ReplicaId, node: &ReplicaNode) -> Result<bool, MembershipError> {
        let m = self.metrics_now();
        if m.membership_config.membership().get_node(&id) == Some(node) {
            return Ok(false);
        }
        let info: Result<ReplicaInfo, TransportError> = self
            .peer(id, node)
            .post("/raft/info", &(), PROBE_TIMEOUT)
            .await;
        info.map_err(|e| {
            MembershipError::invalid(format!(
                "replica {id} at {} did not prove the key given: {e}",
                node.addr
            ))
        })?;
        let nodes = std::collections::BTreeMap::from([(id, node.clone())]);
        self.raft
            .change_membership(ChangeMembers::SetNodes(nodes), false)
            .await
            .map_err(|e| change_failed(self.id, e))?;
        tracing::info!(replica = self.id, recorded = id, key = %node.key.map(|k| k.to_string()).unwrap_or_default(), "replica key recorded");
        Ok(true)
    }

    async fn remove_here(&self, id: ReplicaId) -> Result<bool, MembershipError> {
        let m = self.metrics_now();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(MembershipError::new(
                MembershipErrorKind::NotFound,
                format!(
                    "no replica {id} in the cluster; `meshd controller replica list` shows them"
                ),
            ));
        }
        let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(MembershipError::invalid(format!(
                    "replica {id} is the cluster's only voter; a cluster cannot remove its last \
                     replica (add another first, or stop this one)"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| change_failed(self.id, e))?;
        tracing::info!(replica = self.id, removed = id, "replica removed");
        Ok(true)
    }

    /// The replica set and replication progress: the leader's view (asked over the
    /// replication port when this replica is not the leader), else this replica's own.
    pub async fn cluster_view(&self) -> ClusterView {
        let m = self.metrics_now();
        if m.state == ServerState::Leader {
            return self.leader_view(&m);
        }
        let note = match Self::remote_leader(&m) {
            Some((leader, addr)) => {
                let reply: Result<Result<ClusterView, String>, _> = self
                    .peer(leader, &addr)
                    .post("/raft/replicas", &(), VIEW_TIMEOUT)
                    .await;
                match reply {
                    Ok(Ok(view)) => return view,
                    Ok(Err(e)) => e,
                    Err(e) => {
                        format!(
                            "the leader, replica {leader} at {}, did not answer: {e}",
                            addr.addr
                        )
                    }
                }
            }
            None if m.membership_config.membership().nodes().next().is_none() => format!(
                "replica {} is not in a cluster yet; add it on the cluster with `meshd \
                 controller replica add --id {} --address {} --key {}`",
                self.id,
                self.id,
                self.advertise,
                self.key()
            ),
            None => "no replica is leader right now (election in progress or no quorum)".into(),
        };
        self.local_view(&m, note)
    }

    /// The leader's view: replication progress from openraft, liveness from the transport.
    fn leader_view(&self, m: &RaftMetrics<ReplicaId, ReplicaNode>) -> ClusterView {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
        let last = m.last_log_index;
        let contacts = self
            .contacts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = Instant::now();
        let replicas = membership
            .nodes()
            .map(|(&id, node)| {
                if id == self.id {
                    return ReplicaStatus {
                        id,
                        address: node.addr.clone(),
                        key: node.key,
                        role: ReplicaRole::Leader,
                        matched_index: last,
                        lag: Some(0),
                        healthy: Some(true),
                        last_contact_ms: None,
                    };
                }
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .map(|l| l.index);
                // With nothing matched yet, everything up to `last` is missing.
                let lag = match (last, matched) {
                    (Some(last), Some(matched)) => last.saturating_sub(matched),
                    (Some(last), None) => last + 1,
                    (None, _) => 0,
                };
                let since = contacts.get(&id).map(|t| now.saturating_duration_since(*t));
                ReplicaStatus {
                    id,
                    address: node.addr.clone(),
                    key: node.key,
                    role: if voters.contains(&id) {
                        ReplicaRole::Follower
                    } else {
                        ReplicaRole::Learner
                    },
                    matched_index: matched,
                    lag: Some(lag),
                    healthy: Some(
                        since.is_some_and(|s| s <= HEALTHY_CONTACT) && lag <= HEALTHY_LAG,
                    ),
                    last_contact_ms: since
                        .map(|s| u64::try_from(s.as_millis()).unwrap_or(u64::MAX)),
                }
            })
            .collect();
        ClusterView {
            leader: Some(self.id),
            term: m.current_term,
            reported_by: self.id,
            last_log_index: last,
            replicas,
            note: None,
        }
    }

    /// What this replica knows on its own: the membership, and its own progress.
    fn local_view(&self, m: &RaftMetrics<ReplicaId, ReplicaNode>, note: String) -> ClusterView {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
        let own_role = self.metrics().role;
        let replicas = membership
            .nodes()
            .map(|(&id, node)| {
                let own = id == self.id;
                ReplicaStatus {
                    id,
                    address: node.addr.clone(),
                    key: node.key,
                    role: match (own, voters.contains(&id)) {
                        (true, _) => own_role,
                        (false, true) => ReplicaRole::Voter,
                        (false, false) => ReplicaRole::Learner,
                    },
                    matched_index: if own { m.last_log_index } else { None },
                    lag: None,
                    healthy: None,
                    last_contact_ms: None,
                }
            })
            .collect();
        ClusterView {
            leader: None,
            term: m.current_term,
            reported_by: self.id,
            last_log_index: m.last_log_index,
            replicas,
            note: Some(note),
        }
    }

    /// The replication routes: openraft's RPCs and the cluster requests above. Serve them on
    /// the replica's advertised address (TCP).
    pub fn router(&self) -> Router {
        let cluster = Router::new()
            .route("/raft/write", post(rpc_write))
            .route("/raft/membership", post(rpc_membership))
            .route("/raft/replicas", post(rpc_replicas))
            .route("/raft/info", post(rpc_info))
            .with_state(self.clone());
        let secret = self.credentials.cluster_secret.clone();
        crate::raft::raft_router(self.raft.clone(), secret.clone())
            .merge(guard(cluster, self.id, secret))
    }
}

fn outcome(data: ClientResponse) -> Result<Applied, WriteError> {
    match data {
        ClientResponse::Command(result) => result.map_err(WriteError::Rejected),
        ClientResponse::Internal => Err(WriteError::Unavailable(
            "the log entry for this write carried no command; this is a bug".to_owned(),
        )),
    }
}

fn change_failed(
    id: ReplicaId,
    e: RaftError<ReplicaId, ClientWriteError<ReplicaId, ReplicaNode>>,
) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MembershipError::new(
            MembershipErrorKind::NotLeader,
            format!("replica {id} is not the leader (any more)"),
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => MembershipError::conflict(
            "another membership change is in progress; retry when it is done",
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MembershipError::invalid(format!("the membership change was refused: {e}"))
        }
        e => MembershipError::unavailable(unavailable_message(id, e)),
    }
}

async fn rpc_write(State(r): State<Replica>, body: Bytes) -> Response {
    let cmd: Command = match decode(&body) {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    // One hop: the leader proposes itself and never forwards again.
    let reply: WriteReply = match r.raft.client_write(cmd).await {
        Ok(resp) => match outcome(resp.data) {
            Ok(applied) => Ok((resp.log_id.index, Ok(applied))),
            Err(WriteError::Rejected(rejected)) => Ok((resp.log_id.index, Err(rejected))),
            Err(e) => Err(Refusal {
                retry: false,
                message: e.to_string(),
            }),
        },
        Err(e) => {
            let retry = matches!(e, RaftError::APIError(ClientWriteError::ForwardToLeader(_)));
            Err(Refusal {
                retry,
                message: unavailable_message(r.id, e),
            })
        }
    };
    postcard_response(&reply)
}

async fn rpc_membership(State(r): State<Replica>, body: Bytes) -> Response {
    let req: MembershipRequest = match decode(&body) {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    let reply = if r.raft.metrics().borrow().state == ServerState::Leader {
        r.membership_here(&req).await
    } else {
        Err(MembershipError::new(
            MembershipErrorKind::NotLeader,
            format!("replica {} is not the leader", r.id),
        ))
    };
    postcard_response(&reply)
}

async fn rpc_replicas(State(r): State<Replica>) -> Response {
    let m = r.metrics_now();
    let reply: Result<ClusterView, String> = if m.state == ServerState::Leader {
        Ok(r.leader_view(&m))
    } else {
        Err(format!("replica {} is not the leader any more", r.id))
    };
    postcard_response(&reply)
}

async fn rpc_info(State(r): State<Replica>) -> Response {
    let m = r.metrics_now();
    postcard_response(&ReplicaInfo {
        id: r.id,
        voters: m.membership_config.membership().voter_ids().collect(),
    })
}

/// `GET /v1/replicas`, `POST /v1/replicas {"id":N,"address":"host:port","key":"HEX"}`,
/// `DELETE /v1/replicas/{id}` and `GET /v1/cluster-secret`, for [`crate::api::ApiOptions::admin_routes`]. Each answers
/// with the [`ClusterView`] (after the change).
pub fn admin_routes(replica: Replica) -> Router {
    Router::new()
        .route("/v1/replicas", get(list_replicas).post(add_replica))
        .route("/v1/replicas/{id}", delete(remove_replica))
        .route("/v1/cluster-secret", get(cluster_secret))
        .with_state(replica)
}

/// What `GET /v1/cluster-secret` answers: what a replica initialized with `--join` needs to
/// replicate with the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSecret {
    pub cluster_secret: String,
}

async fn cluster_secret(State(r): State<Replica>) -> Json<ClusterSecret> {
    Json(ClusterSecret {
        cluster_secret: r.credentials.cluster_secret.to_string(),
    })
}

async fn list_replicas(State(r): State<Replica>) -> Json<ClusterView> {
    Json(r.cluster_view().await)
}

async fn add_replica(
    State(r): State<Replica>,
    Body(req): Body<AddReplica>,
) -> Result<(StatusCode, Json<ClusterView>), ApiError> {
    let address = parse_replica_address(&req.address).map_err(ApiError::bad_request)?;
    let key = req.key.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "key: {e}; it is the new replica's key, printed by `meshd controller init --join` \
             and by `meshd controller run`"
        ))
    })?;
    let changed = r.add_replica(req.id, &address, key).await?;
    let status = if changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(r.cluster_view().await)))
}

async fn remove_replica(
    State(r): State<Replica>,
    Path(id): Path<String>,
) -> Result<Json<ClusterView>, ApiError> {
    let id: ReplicaId = id.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "replica id {id:?} is not a number; `meshd controller replica list` shows the ids"
        ))
    })?;
    r.remove_replica(id).await?;
    Ok(Json(r.cluster_view().await))
}

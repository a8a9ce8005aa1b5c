//! The node's side of reach: for each controller link, a [`ReachClient`] that registers with
//! every replica's relay from the data-plane socket (the relay is at the UDP port after each
//! replica's node channel, [`relay_port`]), learns the node's public endpoint and NAT
//! behaviour from their answers, tells the link to report a new public endpoint to the
//! controller, and keeps each network's tunnel on the relays that answer.
//!
//! The credential comes over the link's channel (`RelayCredential`); until it does, and on a
//! data plane without a socket, nothing is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshd_channel::Reach;
use meshd_channel::protocol::relay_port;
use meshd_proto::NetworkId;
use meshd_proto::reach::client::{ReachClient, RelayView};
use meshd_proto::reach::credential::Credential;
use meshd_proto::reach::nat::NatBehaviour;
use tracing::{debug, info};

use super::controller_link::{ControllerAddr, LinkKey, local_endpoints};
use super::{Daemon, stopped};

/// How often the reach task sends due requests and looks at the answers.
const TICK: Duration = Duration::from_millis(250);
/// How often relay addresses are resolved again (links and replicas come and go, names
/// move); an IP address costs no lookup.
const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// How often the live relays are given to every network again, changed or not (a network
/// that came up since starts with none).
const RELAYS_REFRESH: Duration = Duration::from_secs(2);

/// One link's reach state.
#[derive(Debug)]
pub(super) struct LinkReach {
    client: ReachClient,
    /// The live relays last given to the link's networks.
    live: Vec<SocketAddr>,
    live_given: Option<Instant>,
    /// The node's public endpoint as the best live relay sees it.
    pub reflexive: Option<SocketAddr>,
    nat: NatBehaviour,
}

impl LinkReach {
    pub fn new() -> Self {
        // Replicas refuse a sequence not above the last they saw: across restarts too.
        let first = meshd_io::clock::since_epoch().as_micros();
        LinkReach {
            client: ReachClient::new(u64::try_from(first).unwrap_or(u64::MAX / 2)),
            live: Vec::new(),
            live_given: None,
            reflexive: None,
            nat: NatBehaviour::Unknown,
        }
    }
}

/// What `meshd status` shows of reach.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReachSummary {
    pub public_endpoint: Option<SocketAddr>,
    pub nat: Option<NatBehaviour>,
    pub port_mapping: Option<super::port_map::Mapped>,
    pub relays: Vec<(RelayView, bool)>,
}

/// The relays of the replicas whose node channels are at `addrs`, resolved.
async fn relay_addresses(addrs: &[ControllerAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for addr in addrs {
        let Ok(found) = tokio::net::lookup_host(addr.to_string()).await else {
            continue;
        };
        for a in found.take(2) {
            if let Some(port) = relay_port(a.port()) {
                let relay = SocketAddr::new(a.ip(), port);
                if !out.contains(&relay) {
                    out.push(relay);
                }
            }
        }
    }
    out
}

impl Daemon {
    /// A link's controller handed out a relay credential.
    pub(super) fn on_relay_credential(&self, key: &LinkKey, expires: u64, secret: [u8; 32]) {
        let node = self.node_id();
        let mut inner = self.lock();
        if let Some(link) = inner
            .links
            .get_mut(&key.controllers)
            .filter(|l| l.id == key.id)
        {
            debug!(expires, "relay credential");
            link.reach.client.set_credential(Credential {
                node,
                expires,
                key: secret,
            });
        }
    }

    /// How link `key` should say the node is reached: the public endpoint is the router's
    /// port mapping when there is one (it takes traffic from anyone), else what the relays
    /// saw; and whether the node relays.
    pub(super) fn reach_for(&self, key: &LinkKey) -> Reach {
        let inner = self.lock();
        let seen = inner
            .links
            .get(&key.controllers)
            .filter(|l| l.id == key.id)
            .and_then(|l| l.reach.reflexive);
        let mapped = inner.port_mapping.map(|m| m.external);
        Reach {
            public: mapped.or(seen),
            port_mapped: mapped.is_some(),
            relay: self.relay,
        }
    }

    /// The router granted (or lost) a mapping of the data-plane port: every link reports the
    /// new public endpoint.
    pub(super) fn set_port_mapping(&self, mapped: Option<super::port_map::Mapped>) {
        let mut inner = self.lock();
        inner.port_mapping = mapped;
        for link in inner.links.values() {
            link.wake.notify_one();
        }
    }

    /// What every link knows of its relays, for the status.
    pub(crate) fn reach_summary(&self) -> ReachSummary {
        let now = Instant::now();
        let inner = self.lock();
        let mut summary = ReachSummary {
            port_mapping: inner.port_mapping,
            ..ReachSummary::default()
        };
        for link in inner.links.values() {
            let live = link.reach.client.live_relays(now);
            summary.public_endpoint = summary.public_endpoint.or(link.reach.reflexive);
            if link.reach.nat != NatBehaviour::Unknown || summary.nat.is_none() {
                summary.nat = Some(link.reach.nat);
            }
            for view in link.reach.client.relays() {
                let alive = live.contains(&view.address);
                summary.relays.push((view, alive));
            }
        }
        if summary.relays.is_empty() {
            summary.nat = None;
        }
        summary
    }

    /// One round: due requests out, live relays to the networks, a new public endpoint to
    /// its link.
    fn reach_tick(&self, now: Instant, local: &[SocketAddr]) {
        let mut requests = Vec::new();
        let mut relays_for: Vec<(Vec<NetworkId>, Vec<SocketAddr>)> = Vec::new();
        {
            let mut inner = self.lock();
            let super::Inner {
                networks, links, ..
            } = &mut *inner;
            for (controllers, link) in links.iter_mut() {
                let reach = &mut link.reach;
                requests.extend(reach.client.poll_requests(now));
                let live = reach.client.live_relays(now);
                let stale = reach
                    .live_given
                    .is_none_or(|t| now.saturating_duration_since(t) >= RELAYS_REFRESH);
                if live != reach.live || stale {
                    if live != reach.live {
                        info!(relays = ?live, "live relays");
                    }
                    reach.live.clone_from(&live);
                    reach.live_given = Some(now);
                    let nets = self.served_by(networks, controllers).map(|(id, _)| *id);
                    relays_for.push((nets.collect(), live));
                }
                let reflexive = reach.client.reflexive(now);
                reach.nat = reach.client.nat(now, local);
                if reflexive.is_some() && reflexive != reach.reflexive {
                    info!(endpoint = ?reflexive, nat = reach.nat.as_str(), "public endpoint");
                    reach.reflexive = reflexive;
                    link.wake.notify_one();
                }
            }
        }
        for (to, bytes) in requests {
            if !self.dataplane.send_datagram(to, &bytes) {
                debug!(relay = %to, "cannot send a reflect request");
            }
        }
        for (networks, live) in relays_for {
            for network in networks {
                self.dataplane.set_relays(network, live.clone());
            }
        }
    }

    /// Resolves every link's replicas to their relays.
    async fn resolve_relays(&self) {
        let links: Vec<(Vec<ControllerAddr>, Vec<ControllerAddr>)> = {
            let inner = self.lock();
            inner
                .links
                .iter()
                .map(|(k, l)| (k.clone(), l.addrs.iter().map(|a| a.addr.clone()).collect()))
                .collect()
        };
        for (key, addrs) in links {
            let relays = relay_addresses(&addrs).await;
            let mut inner = self.lock();
            if let Some(link) = inner.links.get_mut(&key) {
                link.reach.client.set_relays(&relays);
            }
        }
    }

    /// An answer from a relay: to the link whose relay sent it.
    fn on_reach_datagram(&self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let mut inner = self.lock();
        for link in inner.links.values_mut() {
            if link.reach.client.is_relay(from) {
                if let Err(e) = link.reach.client.handle_answer(now, from, bytes) {
                    debug!(%from, error = %e, "relay answer refused");
                }
                return;
            }
        }
        debug!(%from, "an answer from no relay of ours");
    }
}

/// Runs reach until the daemon stops; does nothing on a data plane without a socket.
pub(super) async fn run(daemon: Arc<Daemon>) {
    let Some(mut inbox) = daemon.dataplane.reach_datagrams() else {
        return;
    };
    let mut stop = daemon.stop.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resolve_at = Instant::now();
    let mut local = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= resolve_at {
                    daemon.resolve_relays().await;
                    local = local_endpoints(daemon.port);
                    resolve_at = now + RESOLVE_EVERY;
                }
                daemon.reach_tick(now, &local);
            }
            Some(datagram) = inbox.recv() => {
                daemon.on_reach_datagram(Instant::now(), datagram.from, &datagram.bytes);
            }
            () = stopped(&mut stop) => return,
        }
    }
}

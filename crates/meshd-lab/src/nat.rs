//! NAT routers: a host on the switch whose namespace translates for a LAN behind it, for
//! tests of NAT traversal.
//!
//! ```text
//!                 switch (the lab's underlay)
//!                    │
//!   netns <ns>-<router>   <link>h<i>  <subnet>.(10+i)/24   the public side (`wan`)
//!     nftables table `ip lab`, ip_forward on
//!     bridge <link>lan    <lan>.1                          the LAN side
//!        │          │
//!     <link>l0   <link>l1  ...                            (veth, router side)
//!      eth0       eth0                                     (veth, host side)
//!   netns <ns>-<role0>  netns <ns>-<role1>                 add_host_behind
//!   <lan>.10            <lan>.11                           default route via <lan>.1
//! ```
//!
//! Every router is a namespace of its own, so routers may all be given the same LAN (say
//! `192.168.1.0/24`). A router is a host of the lab like any other ([`Lab::ip`] is its
//! public address, [`Lab::exec`] runs in it, [`Lab::hosts`] lists it); the hosts behind it
//! are namespaces behind a host ([`Lab::exec`] and [`Lab::spawn`] run in them too). The
//! lab's drop deletes them all, and with them their rules and connection tracking.
//!
//! What every router does, whatever its [`NatKind`] (one nftables table, [`ruleset`]):
//!
//! - translates what the LAN sends out of `wan` to its public address (`masquerade`);
//! - lets in from `wan` only what belongs to a connection the LAN started (`ct state
//!   established,related`), plus, for [`NatKind::FullCone`], UDP to a mapped port, and on
//!   a router with port mapping ([`Lab::enable_port_mapping`]) what its mappings let in;
//!   every other packet from `wan`, to the LAN or to the router itself, is dropped
//!   silently;
//! - does not hairpin: a LAN host sending to the router's public address reaches the
//!   router itself and never gets back into the LAN (the full cone's inbound mapping, like
//!   a port mapping's, only applies to packets that arrive on `wan`);
//! - forwards between LAN hosts, also when the kernel passes bridged packets through the
//!   IP hooks (`br_netfilter`).
//!
//! How long a mapping lives is conntrack's UDP timeouts, per namespace:
//! [`Lab::set_udp_timeout`]. [`Lab::flush_conntrack`] forgets every mapping at once.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

use crate::lab::ip;
use crate::port_mapping::{FORWARD_MARK, PortMapping};
use crate::{Host, Lab, LabError};

/// The nftables table of every router.
const TABLE: &str = "lab";

/// How a router maps and filters UDP (RFC 4787's terms in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// `masquerade`: Linux keeps the source port when it can, so one internal socket has
    /// one external port whatever the destination (endpoint-independent mapping); only the
    /// address and port it sent to may answer (address- and port-dependent filtering).
    PortRestrictedCone,
    /// `masquerade random`: a new random external port for each destination
    /// (address- and port-dependent mapping and filtering).
    Symmetric,
    /// `masquerade`, and every external port it used for UDP recorded in a map, with the
    /// internal address and port behind it; UDP from *anyone* to a recorded port is
    /// translated back to that internal endpoint (endpoint-independent mapping and
    /// filtering).
    FullCone,
}

/// A NAT router of the lab ([`Lab::add_router`]).
#[derive(Debug, Clone)]
pub struct Router {
    /// Its role: it is a host on the switch, `lab.host(role)`.
    pub role: String,
    pub kind: NatKind,
    /// Its public address, on the switch (the same as `lab.ip(role)`).
    pub public_ip: Ipv4Addr,
    /// Its public interface: its veth on the switch.
    pub wan: String,
    /// The LAN behind it.
    pub lan: Ipv4Net,
    /// Its address on the LAN (the first one), the LAN hosts' default gateway.
    pub gateway: Ipv4Addr,
    /// The LAN's bridge, in the router's namespace.
    pub bridge: String,
    /// The roles of the hosts behind it, in the order they were added.
    pub behind: Vec<String>,
    /// Its port mapping service, once enabled ([`Lab::enable_port_mapping`]).
    pub port_mapping: Option<PortMapping>,
}

impl Lab {
    /// A NAT router `role` of `kind`: a host on the switch (its public side, the next
    /// underlay address) with a bridge for `lan` behind it, `lan`'s first address on the
    /// bridge. See the module docs for what it lets through. `lan` must not overlap the
    /// underlay and must have room for hosts from its 10th address on (a /28 or larger).
    pub fn add_router(
        &mut self,
        role: &str,
        kind: NatKind,
        lan: Ipv4Net,
    ) -> Result<&Router, LabError> {
        crate::interrupt::check()?;
        let lan = lan.trunc();
        let underlay = Ipv4Net::new(self.naming().subnet, 24).expect("a /24 is a valid prefix");
        assert!(
            !lan.contains(&underlay.network()) && !underlay.contains(&lan.network()),
            "the LAN {lan} of router {role:?} overlaps the lab's underlay {underlay}"
        );
        assert!(
            lan.prefix_len() <= 28,
            "the LAN {lan} of router {role:?} is too small: hosts start at its 10th address"
        );
        let host = self.add_host(role)?.clone();
        let router = Router {
            role: role.to_owned(),
            kind,
            public_ip: host.ip,
            wan: host.link,
            lan,
            gateway: nth(lan, 1),
            bridge: self.link_name("lan"),
            behind: Vec::new(),
            port_mapping: None,
        };
        let gateway = Ipv4Net::new(router.gateway, lan.prefix_len()).expect("the LAN's prefix");
        self.add_bridge(role, &router.bridge, &[IpNet::V4(gateway)])?;
        let ns = &host.netns;
        // A mapping of the full cone lives as long as conntrack keeps a replied flow.
        let mapping = read_sysctl(ns, UDP_TIMEOUT_STREAM)?;
        let rules = ruleset(kind, &router.wan, &router.bridge, &mapping);
        run_in(ns, &["nft", "-f", "-"], Some(&rules))?;
        run_in(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"], None)?;
        self.routers.push(router);
        Ok(self.routers.last().expect("just pushed"))
    }

    /// A host `role` on the LAN of `router`: a namespace of its own joined to the router's
    /// bridge by a veth (`eth0` inside), the LAN's next free address from its 10th on, a
    /// default route via the router. Afterwards `role` is a host of the lab like any other.
    pub fn add_host_behind(&mut self, router: &str, role: &str) -> Result<&Host, LabError> {
        crate::interrupt::check()?;
        let r = self.router(router).clone();
        let i = u32::try_from(r.behind.len()).expect("a few hosts");
        let address = nth(r.lan, 10 + i);
        assert!(
            address < r.lan.broadcast(),
            "no room for another host on router {router:?}'s LAN {}",
            r.lan
        );
        let port = self.link_name(&format!("l{i}"));
        let ns = self.add_namespace(role)?;
        let router_ns = self.netns(router).to_owned();
        ip(&[
            "link", "add", &port, "netns", &router_ns, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        ip(&[
            "-n", &router_ns, "link", "set", &port, "master", &r.bridge, "up",
        ])?;
        let cidr = Ipv4Net::new(address, r.lan.prefix_len())
            .expect("the LAN's prefix")
            .to_string();
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        let gateway = r.gateway.to_string();
        ip(&["-n", &ns, "route", "add", "default", "via", &gateway])?;
        let host = self
            .hosts
            .iter_mut()
            .find(|h| h.role == role)
            .expect("add_namespace added it");
        host.ip = address;
        self.routers
            .iter_mut()
            .find(|x| x.role == router)
            .expect("found above")
            .behind
            .push(role.to_owned());
        Ok(self.host(role))
    }

    /// The router `role`; panics if there is none.
    pub fn router(&self, role: &str) -> &Router {
        self.routers
            .iter()
            .find(|r| r.role == role)
            .unwrap_or_else(|| panic!("no router {role:?} in lab {}", self.tag()))
    }

    /// The routers, in the order they were added.
    pub fn routers(&self) -> &[Router] {
        &self.routers
    }

    /// Forgets every mapping of `router` at once: `conntrack -F` in its namespace (and the
    /// full cone's map). Replies to what the LAN sent before are dropped from then on, until
    /// the LAN sends again.
    pub fn flush_conntrack(&self, router: &str) -> Result<(), LabError> {
        let r = self.router(router);
        let ns = self.netns(router);
        run_in(ns, &["conntrack", "-F"], None)?;
        if r.kind == NatKind::FullCone {
            let flush = format!("flush map ip {TABLE} {FULL_CONE_MAP}\n");
            run_in(ns, &["nft", "-f", "-"], Some(&flush))?;
        }
        Ok(())
    }

    /// How long `router` keeps a UDP mapping without traffic: conntrack's
    /// `nf_conntrack_udp_timeout` (a flow seen one way, or replied to for less than 2 s)
    /// and `nf_conntrack_udp_timeout_stream` (a flow answered for longer) in its namespace
    /// (they are per namespace), and the full cone's map entries. Whole seconds, rounded
    /// up, at least one. Entries already in the map keep their old timeout until their
    /// next packet.
    pub fn set_udp_timeout(&self, router: &str, timeout: Duration) -> Result<(), LabError> {
        let r = self.router(router);
        let ns = self.netns(router);
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let secs = secs.max(1).to_string();
        let short = format!("{UDP_TIMEOUT}={secs}");
        let stream = format!("{UDP_TIMEOUT_STREAM}={secs}");
        run_in(ns, &["sysctl", "-qw", &short, &stream], None)?;
        if r.kind == NatKind::FullCone {
            let rules = format!(
                "flush chain ip {TABLE} record\nadd rule ip {TABLE} record {}\n",
                record_rule(&r.wan, &r.bridge, &secs)
            );
            run_in(ns, &["nft", "-f", "-"], Some(&rules))?;
        }
        Ok(())
    }
}

const UDP_TIMEOUT: &str = "net.netfilter.nf_conntrack_udp_timeout";
const UDP_TIMEOUT_STREAM: &str = "net.netfilter.nf_conntrack_udp_timeout_stream";

/// The full cone's map: external port → internal address . port.
const FULL_CONE_MAP: &str = "fullcone";

/// The nftables table of a router of `kind` between `wan` and the LAN's bridge `lan`; the
/// full cone's map entries last `mapping_secs` after their last packet.
///
/// The full cone records the external port *after* translation: its `record` chain hooks
/// postrouting after source NAT (`srcnat + 10`), where `udp sport` is the port the router
/// chose, and stores `ct original ip saddr . ct original proto-src`, the internal endpoint.
/// Prerouting translates UDP arriving on `wan` to a recorded port back to that endpoint
/// (`dnat ... map`); conntrack then treats the flow like any other, so the internal host's
/// answers leave from the same external port.
///
/// Every router's forward chain also accepts from `wan` to the LAN what carries
/// [`FORWARD_MARK`]: the mark of a packet that one of miniupnpd's filter rules accepted. A
/// port mapping's rules live in a table of their own (`inet miniupnpd`, which miniupnpd's
/// nftables backend writes to, see [`crate::port_mapping`]); an `accept` there does not
/// get a packet past this table's `policy drop` (a packet must pass every base chain on
/// its hook), and a jump cannot cross tables, so the mark carries the verdict over. On a
/// router without port mapping nothing sets the mark and the rule never matches.
///
/// That rule also wants `ct status dnat`: miniupnpd's filter rule matches the internal
/// address and port only, so on its own it would also let in a datagram sent straight to
/// the LAN address (which a host on the router's `wan` segment can do by routing the LAN
/// via the router); what a mapping lets in is only what arrived for the public address and
/// was translated, as on the routers without port mapping.
pub fn ruleset(kind: NatKind, wan: &str, lan: &str, mapping_secs: &str) -> String {
    let masquerade = match kind {
        NatKind::Symmetric => "masquerade random",
        NatKind::PortRestrictedCone | NatKind::FullCone => "masquerade",
    };
    let full_cone = if kind == NatKind::FullCone {
        format!(
            "
  map {FULL_CONE_MAP} {{
    type inet_service : ipv4_addr . inet_service
    flags dynamic, timeout
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{wan}\" dnat ip addr . port to udp dport map @{FULL_CONE_MAP}
  }}
  chain record {{
    type filter hook postrouting priority srcnat + 10; policy accept;
    {record}
  }}",
            record = record_rule(wan, lan, mapping_secs)
        )
    } else {
        String::new()
    };
    let dnat_in = if kind == NatKind::FullCone {
        format!("\n    iifname \"{wan}\" oifname \"{lan}\" ct status dnat accept")
    } else {
        String::new()
    };
    format!(
        "table ip {TABLE} {{{full_cone}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"{wan}\" {masquerade}
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname \"lo\" accept
    iifname \"{lan}\" accept
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname \"{lan}\" oifname \"{wan}\" accept
    iifname \"{lan}\" oifname \"{lan}\" accept{dnat_in}
    iifname \"{wan}\" oifname \"{lan}\" ct status dnat meta mark {FORWARD_MARK:#x} accept
  }}
}}
"
    )
}

/// The full cone's rule that records (or refreshes) a mapping for `secs` seconds.
fn record_rule(wan: &str, lan: &str, secs: &str) -> String {
    format!(
        "iifname \"{lan}\" oifname \"{wan}\" meta l4proto udp ct direction original \
         update @{FULL_CONE_MAP} {{ udp sport timeout {secs}s : \
         ct original ip saddr . ct original proto-src }}"
    )
}

/// The `n`th address of `net`.
fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

fn read_sysctl(ns: &str, key: &str) -> Result<String, LabError> {
    Ok(run_in(ns, &["sysctl", "-n", key], None)?.trim().to_owned())
}

/// `ip netns exec <ns> <argv>` with `input` on its stdin; its stdout, or its stderr as the
/// error. In a process group of its own like every step of building a lab, so a Ctrl-C
/// never cuts it short.
pub(crate) fn run_in(ns: &str, argv: &[&str], input: Option<&str>) -> Result<String, LabError> {
    let command = format!("{} (in {ns})", argv.join(" "));
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| LabError::Spawn {
            what: format!("`ip netns exec` for {command}"),
            source,
        })?;
    // Written before waiting (nft reads all of it first); on a write error the child is
    // still reaped, and its stderr says more than the broken pipe.
    let written = match (input, child.stdin.take()) {
        (Some(input), Some(mut stdin)) => stdin.write_all(input.as_bytes()),
        _ => Ok(()),
    };
    let out = child.wait_with_output().map_err(|source| LabError::Io {
        what: format!("cannot wait for {command}"),
        source,
    })?;
    if out.status.success()
        && let Err(source) = written
    {
        return Err(LabError::Io {
            what: format!("cannot write to {command}"),
            source,
        });
    }
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

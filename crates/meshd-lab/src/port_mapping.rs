//! Port mapping on a NAT router ([`Lab::enable_port_mapping`]): miniupnpd in the router's
//! namespace, serving NAT-PMP and PCP (UDP [`NAT_PMP_PORT`]) and UPnP-IGD (SSDP on UDP 1900,
//! HTTP on TCP [`UPNP_HTTP_PORT`]) to the LAN, mapping ports of the router's public address
//! on its `wan` link.
//!
//! ```text
//!   netns <ns>-<router>
//!     table ip lab          crate::nat; its forward chain (policy drop) also accepts from
//!                           wan to the LAN what was DNATed and carries FORWARD_MARK
//!     table inet miniupnpd  miniupnpd's chains, and base chains of this module that jump
//!                           to them:
//!       prerouting  nat     dstnat - 10   jump prerouting_miniupnpd   a DNAT rule per mapping
//!       postrouting nat     srcnat - 10   jump postrouting_miniupnpd  PCP PEER's SNAT rules
//!       forward     filter  filter - 10   mark, jump miniupnpd,       an accept rule per
//!                                         unmark                      mapping
//!     miniupnpd -d -f <dir>/miniupnpd-<router>.conf       a process of the lab
//!     a STUN responder on <public ip>:3478                a thread of the lab
//! ```
//!
//! Why it is built this way (Debian 12's miniupnpd 2.3.1, package `miniupnpd-nftables`):
//!
//! - Its nftables backend adds and deletes rules over netlink in chains of an `inet` table
//!   it is told the names of (`upnp_table_name`, `upnp_nat_table_name`, the `upnp_*_chain`
//!   options), and creates none of them itself: the table above is made before it starts.
//!   The router's own table is `ip lab`, and a jump cannot leave its table.
//! - An `accept` in one table's base chain does not take a packet past another table's
//!   `policy drop` on the same hook: every base chain must let it through. So the forward
//!   base chain here marks the packet, jumps to miniupnpd's chain and unmarks it if that
//!   returns; a packet one of miniupnpd's rules accepted keeps the mark, and the router's
//!   forward chain accepts it if it was also translated (miniupnpd's filter rule only
//!   names the internal address and port: see [`crate::nat::ruleset`]). Without that rule
//!   a mapped datagram is DNATed and then dropped.
//! - miniupnpd's rules match `iif <wan>`: a LAN host sending to a mapped public port is not
//!   translated (no hairpin), and nothing but a mapping opens the LAN to `wan`. Its NAT-PMP,
//!   PCP and UPnP sockets are on the LAN side; the router's input chain drops what `wan`
//!   sends them.
//! - The lab's public addresses are private ones (`10.200.<k>.0/24`), and miniupnpd 2.3.1
//!   refuses to map ports behind an external interface whose address is private ("Port
//!   forwarding is impossible"), answers NAT-PMP's public-address request with "network
//!   failure", and exits on an `ext_ip=` that is private; the option that allows one
//!   (`ext_allow_private_ipv4`) came in a later release. What it does take is an external
//!   address learnt by STUN (`ext_perform_stun`): when all four of its binding requests are
//!   answered, by the address it asked, with its own address and ports, it reports "not
//!   behind NAT" and maps ports for that address. So the lab answers them: a responder on
//!   the router's public address that answers only the router itself (whose requests reach
//!   it over `lo`). It ignores STUN's change requests, which miniupnpd never checks.
//!   miniupnpd asks at start and again whenever the `wan` link's addresses change (an IPv6
//!   link-local address settling counts), so the responder lives as long as the lab.
//! - `secure_mode=yes`: a LAN host maps ports to its own address only (UPnP's
//!   AddPortMapping for another address is refused; NAT-PMP always maps the sender; PCP
//!   third-party mappings stay off). No permission rules: every port may be mapped.
//!   Lifetimes from 1 s to a day, as the client asks.
//!
//! What a mapping does, then: a datagram arriving on `wan` for `public_ip:external_port`,
//! from anyone, is translated to the internal address and port and let in; the answers
//! leave through the same conntrack entry, from `public_ip:external_port`. Not more:
//! miniupnpd's nftables backend adds no source NAT for the internal endpoint (its iptables
//! backend does), so what the LAN host sends from the mapped port to someone new leaves
//! through the router's usual NAT, on a [`crate::NatKind::Symmetric`] router from a new
//! random port. (When such a flow exists and its peer then sends to the mapping, the
//! kernel keeps the two flows apart by translating the peer's source port on the way in.)
//! Deleting a mapping removes its rules; a flow conntrack already tracks through it goes on
//! until it times out or [`Lab::flush_conntrack`].

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::nat::Router;
use crate::{Lab, LabError, Proc};

/// Where NAT-PMP and PCP clients ask, on the router's LAN address.
pub const NAT_PMP_PORT: u16 = 5351;
/// miniupnpd's HTTP port (descriptions and SOAP), fixed so that a client may skip SSDP:
/// [`PortMapping::igd_url`].
pub const UPNP_HTTP_PORT: u16 = 5000;
/// The mark by which the router's forward chain knows what a mapping let in (see the module
/// docs).
pub const FORWARD_MARK: u32 = 0x6d75_7064;
/// The table of miniupnpd's chains, in the `inet` family.
const TABLE: &str = "miniupnpd";
/// Where the router's STUN responder listens, on its public address.
const STUN_PORT: u16 = 3478;
/// How long miniupnpd gets to answer NAT-PMP with the router's public address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A router's port mapping service ([`Lab::enable_port_mapping`]).
#[derive(Debug, Clone)]
pub struct PortMapping {
    /// miniupnpd, a process of the lab.
    pub proc: Proc,
    /// Where NAT-PMP and PCP requests go: the router's LAN address, [`NAT_PMP_PORT`].
    pub pcp_server: SocketAddrV4,
    /// UPnP-IGD's root description, for clients that skip SSDP discovery (`upnpc -u`):
    /// `http://<gateway>:5000/rootDesc.xml`.
    pub igd_url: String,
    /// miniupnpd's configuration, in the lab's directory.
    pub config: PathBuf,
    /// miniupnpd's log (it runs with `-d`: everything, debug messages too).
    pub log: PathBuf,
}

impl Lab {
    /// Port mapping on `router`: miniupnpd serving NAT-PMP, PCP and UPnP-IGD on its LAN,
    /// mapping ports of its public address (see the module docs). Once this returns,
    /// miniupnpd answers NAT-PMP with the router's public address; it runs until the lab
    /// goes. Its configuration and log are in the lab's directory, made now if the lab has
    /// none. Needs `miniupnpd` (Debian's `miniupnpd-nftables`). Panics for a role that is no
    /// router, or one whose port mapping is on already.
    pub fn enable_port_mapping(&mut self, router: &str) -> Result<(), LabError> {
        crate::interrupt::check()?;
        let r = self.router(router).clone();
        assert!(
            r.port_mapping.is_none(),
            "port mapping is on already on router {router:?}"
        );
        let index = self
            .routers
            .iter()
            .position(|x| x.role == router)
            .expect("found above");
        let dir = self.dir_or_make()?;
        let ns = self.netns(router).to_owned();
        crate::nat::run_in(&ns, &["nft", "-f", "-"], Some(&table()))?;
        let stun_at = SocketAddrV4::new(r.public_ip, STUN_PORT);
        let stun = StunResponder::start(self.udp_socket(router, stun_at)?, stun_at)?;
        self.responders.push(stun);

        let config = dir.join(format!("miniupnpd-{router}.conf"));
        let log = dir.join(format!("miniupnpd-{router}.log"));
        let pid = dir.join(format!("miniupnpd-{router}.pid"));
        let text = config_file(&r, self.tag(), index);
        std::fs::write(&config, text).map_err(|source| LabError::Io {
            what: format!("cannot write {}", config.display()),
            source,
        })?;
        let (config_arg, pid_arg) = (config.display().to_string(), pid.display().to_string());
        // -d: in the foreground, logging to stderr; -P: the pid file of this lab's router,
        // not the system's /var/run/miniupnpd.pid (which another lab's could be).
        let argv = ["miniupnpd", "-d", "-f", &config_arg, "-P", &pid_arg];
        let proc = self.spawn(router, &argv, &log)?;
        let pcp_server = SocketAddrV4::new(r.gateway, NAT_PMP_PORT);
        self.wait_until_mapping(&ns, &r, pcp_server, proc, &log)?
            .map_err(|stderr| LabError::Command {
                command: format!("{} (in {ns})", argv.join(" ")),
                stderr,
            })?;
        self.routers[index].port_mapping = Some(PortMapping {
            proc,
            pcp_server,
            igd_url: format!("http://{}:{UPNP_HTTP_PORT}/rootDesc.xml", r.gateway),
            config,
            log,
        });
        Ok(())
    }

    /// Makes `router`'s port mapping UPnP-IGD only, as on the many routers that speak
    /// nothing else: NAT-PMP and PCP requests are dropped from now on. Call it after
    /// [`Lab::enable_port_mapping`].
    pub fn disable_pcp(&self, router: &str) -> Result<(), LabError> {
        assert!(
            self.router(router).port_mapping.is_some(),
            "no port mapping on router {router:?}"
        );
        let rule = format!("insert rule ip lab input udp dport {NAT_PMP_PORT} drop");
        crate::nat::run_in(self.netns(router), &["nft", &rule], None).map(drop)
    }

    /// Asks miniupnpd, from the router itself (an address on the LAN), for the public
    /// address over NAT-PMP until it answers with the router's: then it has learnt it by
    /// STUN, enabled port forwarding and opened its sockets. If it does not, why not as
    /// the inner error.
    fn wait_until_mapping(
        &self,
        ns: &str,
        router: &Router,
        server: SocketAddrV4,
        proc: Proc,
        log: &Path,
    ) -> Result<Result<(), String>, LabError> {
        let probe = self.udp_socket(&router.role, SocketAddrV4::new(router.gateway, 0))?;
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|source| LabError::Io {
                what: format!("cannot make a NAT-PMP probe in {ns}"),
                source,
            })?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = "no answer".to_owned();
        loop {
            crate::interrupt::check()?;
            if let Some(status) = self.exited(proc) {
                return Ok(Err(format!(
                    "exited at start ({status}); {}",
                    log_tail(log)
                )));
            }
            // Version 0, opcode 0: what is the public address?
            let _ = probe.send_to(&[0, 0], server);
            let mut buf = [0u8; 64];
            if let Ok((n, _)) = probe.recv_from(&mut buf) {
                match public_address(&buf[..n]) {
                    Ok(ip) if ip == router.public_ip => return Ok(Ok(())),
                    Ok(ip) => last = format!("the public address {ip}"),
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                return Ok(Err(format!(
                    "did not answer NAT-PMP with the public address {} on {server} within \
                     {START_TIMEOUT:?} (last: {last}); {}",
                    router.public_ip,
                    log_tail(log)
                )));
            }
        }
    }
}

/// `table inet miniupnpd`: miniupnpd's empty chains (the names its configuration gives)
/// and the base chains that jump to them (see the module docs).
fn table() -> String {
    format!(
        "table inet {TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat - 10; policy accept;
    jump prerouting_miniupnpd
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat - 10; policy accept;
    jump postrouting_miniupnpd
  }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    meta mark set {FORWARD_MARK:#x}
    jump miniupnpd
    meta mark set 0
  }}
  chain miniupnpd {{
  }}
  chain prerouting_miniupnpd {{
  }}
  chain postrouting_miniupnpd {{
  }}
}}
"
    )
}

/// miniupnpd's configuration for `router`, the `index`th router of lab `tag`.
fn config_file(router: &Router, tag: &str, index: usize) -> String {
    let mut text = format!(
        "# miniupnpd for router {role} of lab {tag}, written by meshd-lab (port_mapping.rs).
ext_ifname={wan}
listening_ip={lan}
ipv6_disable=yes
# NAT-PMP and PCP on {gateway}:{NAT_PMP_PORT}; UPnP-IGD: SSDP, and HTTP on port {UPNP_HTTP_PORT}.
enable_natpmp=yes
enable_upnp=yes
http_port={UPNP_HTTP_PORT}
# Answer SSDP itself rather than through a minissdpd of the machine's.
minissdpdsocket=/nonexistent/minissdpd.sock
# The public address is private in the lab: learnt by STUN from the lab's responder.
ext_perform_stun=yes
ext_stun_host={public}
ext_stun_port={STUN_PORT}
# Mappings to the requesting host's own address only.
secure_mode=yes
min_lifetime=1
max_lifetime=86400
upnp_table_name={TABLE}
upnp_nat_table_name={TABLE}
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
system_uptime=no
",
        role = router.role,
        wan = router.wan,
        lan = router.bridge,
        gateway = router.gateway,
        public = router.public_ip,
    );
    // Unique to the process, the lab and the router; miniupnpd wants one.
    let lab = tag
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let _ = writeln!(
        text,
        "uuid={:08x}-6d73-4864-{lab_hi:04x}-{lab_lo:04x}{index:08x}",
        std::process::id(),
        lab_hi = lab >> 16,
        lab_lo = lab & 0xffff,
    );
    text
}

/// The address in a NAT-PMP public-address answer, or what else it said.
fn public_address(answer: &[u8]) -> Result<Ipv4Addr, String> {
    match answer {
        [0, 128, r0, r1, _, _, _, _, a, b, c, d, ..] => match u16::from_be_bytes([*r0, *r1]) {
            0 => Ok(Ipv4Addr::new(*a, *b, *c, *d)),
            code => Err(format!("result code {code}")),
        },
        _ => Err(format!("an answer that is not NAT-PMP's: {answer:02x?}")),
    }
}

/// The last lines of miniupnpd's log, for an error.
fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
            format!("its log {} ends:\n  {tail}", log.display())
        }
        Err(e) => format!("cannot read its log {}: {e}", log.display()),
    }
}

/// The router's STUN responder (see the module docs): a thread answering binding requests
/// from the router's own address, until dropped.
#[derive(Debug)]
pub(crate) struct StunResponder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StunResponder {
    /// Answers on `socket`, bound to `at` in the router's namespace.
    fn start(socket: UdpSocket, at: SocketAddrV4) -> Result<StunResponder, LabError> {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|source| LabError::Io {
                what: format!("cannot set up the STUN responder on {at}"),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("lab-stun".to_owned())
            .spawn(move || {
                let mut buf = [0u8; 576];
                while !stopped.load(Ordering::Relaxed) {
                    let Ok((n, SocketAddr::V4(from))) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if from.ip() == at.ip()
                        && let Some(answer) = binding_response(&buf[..n], from)
                    {
                        let _ = socket.send_to(&answer, from);
                    }
                }
            })
            .map_err(|source| LabError::Spawn {
                what: "a thread for the STUN responder".to_owned(),
                source,
            })?;
        Ok(StunResponder {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for StunResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// STUN's magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// The Binding success response to a Binding request from `from`: MAPPED-ADDRESS (RFC
/// 3489) and XOR-MAPPED-ADDRESS (RFC 5389) both `from`, the request's transaction ID;
/// `None` for anything else. Attributes of the request (CHANGE-REQUEST) are ignored.
fn binding_response(request: &[u8], from: SocketAddrV4) -> Option<Vec<u8>> {
    if request.len() < 20 || request[..2] != [0x00, 0x01] || request[4..8] != MAGIC_COOKIE {
        return None;
    }
    let (port, ip) = (from.port(), from.ip().octets());
    let mut answer = vec![0x01, 0x01, 0x00, 24];
    answer.extend_from_slice(&request[4..20]);
    // MAPPED-ADDRESS: type, length 8, reserved, family IPv4, port, address.
    answer.extend_from_slice(&[0x00, 0x01, 0x00, 8, 0x00, 0x01]);
    answer.extend_from_slice(&port.to_be_bytes());
    answer.extend_from_slice(&ip);
    // XOR-MAPPED-ADDRESS: the same, XORed with the magic cookie.
    answer.extend_from_slice(&[0x00, 0x20, 0x00, 8, 0x00, 0x01]);
    answer.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
    answer.extend(ip.iter().zip(MAGIC_COOKIE).map(|(a, k)| a ^ k));
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_request_is_answered_with_its_source() {
        // miniupnpd's request: a CHANGE-REQUEST attribute asking for another address.
        let mut request = vec![0x00, 0x01, 0x00, 0x08];
        request.extend_from_slice(&MAGIC_COOKIE);
        request.extend(1..=12u8);
        request.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0x04]);
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 200, 7, 12), 40000);
        let answer = binding_response(&request, from).expect("an answer");
        assert_eq!(answer.len(), 20 + 24);
        assert_eq!(answer[..4], [0x01, 0x01, 0x00, 24]);
        assert_eq!(answer[4..20], request[4..20], "cookie and transaction ID");
        assert_eq!(
            answer[20..32],
            [0, 1, 0, 8, 0, 1, 0x9c, 0x40, 10, 200, 7, 12]
        );
        let x = [
            0x9c ^ 0x21,
            0x40 ^ 0x12,
            10 ^ 0x21,
            200 ^ 0x12,
            7 ^ 0xa4,
            12 ^ 0x42,
        ];
        assert_eq!(answer[32..38], [0, 0x20, 0, 8, 0, 1]);
        assert_eq!(answer[38..], x);
        assert_eq!(binding_response(&request[..19], from), None);
        request[1] = 0x11;
        assert_eq!(
            binding_response(&request, from),
            None,
            "not a Binding request"
        );
    }

    #[test]
    fn nat_pmp_public_address_answers() {
        let ok = [0, 128, 0, 0, 0, 0, 0, 9, 10, 200, 7, 12];
        assert_eq!(public_address(&ok), Ok(Ipv4Addr::new(10, 200, 7, 12)));
        let failure = [0, 128, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0];
        assert_eq!(public_address(&failure), Err("result code 3".to_owned()));
        assert!(public_address(&[0, 0]).is_err());
    }
}

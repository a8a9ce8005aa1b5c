//! A lab of network namespaces on one switch.
//!
//! ```text
//!              netns <ns>-switch
//!   ┌──────────── bridge <link>br ────────────┐
//!   <link>s0        <link>s1        ...            (veth, switch side)
//!      │                │
//!   <link>h0        <link>h1        ...            (veth, host side)
//!   netns <ns>-<role0>  netns <ns>-<role1>
//!   <subnet>.10/24      <subnet>.11/24
//!                       bridge, containers, LANs behind a host (add_bridge, add_container,
//!                       add_namespace + add_veth); a NAT router with hosts on its LAN
//!                       (add_router, add_host_behind: see crate::nat); a process's own
//!                       namespace, a Docker container's say, by name (attach_namespace)
//! ```
//!
//! `<ns>` and `<link>` come from the lab's [`Naming`]: unique to the process (its pid) and
//! to the lab, so concurrent tests and concurrent runs never share a name, and short enough
//! that link names stay within Linux's 15 bytes. Every link is created directly inside one
//! of the lab's namespaces and every address is configured only there: deleting the
//! namespaces removes the links with them, and nothing is ever added to the caller's
//! namespace.
//!
//! [`Lab`] owns the processes it spawns ([`crate::process`]). Dropping it — on success, on
//! an error, while unwinding from a panic, after an interrupt — stops exactly those
//! processes (by the handles it holds, so a recycled pid is never hit), deletes the
//! namespaces it made (and the names it attached) and its directory; unless [`Lab::keep`]
//! was called.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipnet::IpNet;

use crate::LabError;
use crate::process::{self, Spawned};

/// Labs made by this process so far; part of each test lab's tag.
static LABS: AtomicU32 = AtomicU32::new(0);

/// How a lab names what it makes, where it keeps its files, and how it stops processes.
#[derive(Debug, Clone)]
pub struct Naming {
    /// The tag in every name, e.g. `3f2a1` (tests) or `12345` (the demo).
    pub tag: String,
    /// Every namespace is `<namespace_prefix>-<role>`.
    pub namespace_prefix: String,
    /// Every link is `<link_prefix><suffix>`.
    pub link_prefix: String,
    /// The underlay, a /24.
    pub subnet: Ipv4Addr,
    /// A directory for state and logs, made at once and removed with the lab. Without one,
    /// a lab that needs a directory for files of its own (a router's port mapping: see
    /// [`crate::port_mapping`]) makes `<tmp>/<namespace_prefix>` then, and removes it too.
    pub dir: Option<PathBuf>,
    /// How long a spawned process gets to exit after SIGTERM when the lab goes; zero kills
    /// at once.
    pub stop_grace: Duration,
    /// Run commands in process groups of their own, so that a Ctrl-C in the terminal is the
    /// lab owner's to handle (with [`crate::interrupt`]); otherwise they share ours and go
    /// with it.
    pub own_process_groups: bool,
    /// Print a summary line on stdout when the lab is cleaned up.
    pub report_cleanup: bool,
}

impl Naming {
    /// A test's lab: `msh-<pid hex><n>-<role>` namespaces, `msh-<pid hex><n>-<suffix>` links,
    /// `10.200.<k>.0/24`; processes killed at once and in the test's process group.
    pub fn test() -> Naming {
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        assert!(n < 36, "at most 36 labs per test process");
        let index = char::from_digit(n, 36).expect("below 36");
        // pid_max is at most 2^22: 6 hex digits. `msh-` + 7 + `-h99` = 15, Linux's limit.
        let tag = format!("{pid:x}{index}");
        let k = (pid.wrapping_mul(37).wrapping_add(n.wrapping_mul(101))) % 254 + 1;
        Naming {
            namespace_prefix: format!("msh-{tag}"),
            link_prefix: format!("msh-{tag}-"),
            subnet: Ipv4Addr::new(10, 200, u8::try_from(k).expect("below 255"), 0),
            tag,
            dir: None,
            stop_grace: Duration::ZERO,
            own_process_groups: false,
            report_cleanup: false,
        }
    }

    /// `meshd demo`'s lab: `mshdemo-<pid>-<role>` namespaces, `md<pid hex><suffix>` links,
    /// `10.201.<k>.0/24`, a directory `<tmp>/mshdemo-<pid>`; processes get 3 s after
    /// SIGTERM and run in process groups of their own.
    pub fn demo() -> Naming {
        let pid = std::process::id();
        let namespace_prefix = format!("mshdemo-{pid}");
        Naming {
            dir: Some(std::env::temp_dir().join(&namespace_prefix)),
            namespace_prefix,
            link_prefix: format!("md{pid:x}"),
            subnet: Ipv4Addr::new(10, 201, u8::try_from(pid % 254 + 1).expect("below 255"), 0),
            tag: pid.to_string(),
            stop_grace: Duration::from_secs(3),
            own_process_groups: true,
            report_cleanup: true,
        }
    }
}

/// One host of the lab: a namespace on the switch, or one added behind a host.
#[derive(Debug, Clone)]
pub struct Host {
    /// The name the lab's user gave it, e.g. `ctl` or `n1`.
    pub role: String,
    /// Its network namespace, `<namespace_prefix>-<role>`.
    pub netns: String,
    /// Its veth to the switch (inside `netns`); empty for a namespace behind a host.
    pub link: String,
    /// Its underlay address on `link` (a container's first IPv4 address; unspecified when
    /// it has none).
    pub ip: Ipv4Addr,
}

/// Network namespaces on one bridge, and the processes running in them. See the module docs.
#[derive(Debug)]
pub struct Lab {
    naming: Naming,
    switch: String,
    bridge: String,
    pub(crate) hosts: Vec<Host>,
    /// The NAT routers among the hosts ([`Lab::add_router`]).
    pub(crate) routers: Vec<crate::nat::Router>,
    /// Every namespace made or attached so far, in order (the switch first).
    namespaces: Vec<String>,
    pub(crate) procs: RefCell<Vec<Spawned>>,
    /// Threads that serve in the lab's namespaces (the STUN answers for port mapping:
    /// [`crate::port_mapping`]); stopped after the processes, before the namespaces go.
    pub(crate) responders: Vec<crate::port_mapping::StunResponder>,
    dir_made: bool,
    keep: bool,
}

impl Lab {
    /// The switch (a namespace with a bridge), and one host per role on it. A step that
    /// fails removes what was made and is the error.
    pub fn new(naming: Naming, roles: &[&str]) -> Result<Self, LabError> {
        let mut lab = Lab {
            switch: format!("{}-switch", naming.namespace_prefix),
            bridge: format!("{}br", naming.link_prefix),
            naming,
            hosts: Vec::new(),
            routers: Vec::new(),
            namespaces: Vec::new(),
            procs: RefCell::new(Vec::new()),
            responders: Vec::new(),
            dir_made: false,
            keep: false,
        };
        if let Some(dir) = &lab.naming.dir {
            std::fs::create_dir(dir).map_err(|source| LabError::Io {
                what: format!(
                    "cannot create {} (left over from an earlier lab that was kept?)",
                    dir.display()
                ),
                source,
            })?;
            lab.dir_made = true;
        }
        // From here on an error drops `lab`, which removes what exists.
        let (sw, br) = (lab.switch.clone(), lab.bridge.clone());
        lab.add_netns(&sw)?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", &br, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", &br, "up"])?;
        for role in roles {
            lab.add_host(role)?;
        }
        Ok(lab)
    }

    /// Another host on the switch: a namespace with loopback up and the next underlay
    /// address on its veth.
    pub fn add_host(&mut self, role: &str) -> Result<&Host, LabError> {
        crate::interrupt::check()?;
        self.check_role(role);
        let i = self.hosts.iter().filter(|h| !h.link.is_empty()).count();
        assert!(i < 100, "at most 100 hosts on a switch");
        let host = Host {
            role: role.to_owned(),
            netns: format!("{}-{role}", self.naming.namespace_prefix),
            link: self.link_name(&format!("h{i}")),
            ip: Ipv4Addr::from(
                u32::from(self.naming.subnet) + 10 + u32::try_from(i).expect("small"),
            ),
        };
        let port = self.link_name(&format!("s{i}"));
        let (ns, sw, br) = (host.netns.clone(), self.switch.clone(), self.bridge.clone());
        self.add_netns(&ns)?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // Both ends are created inside their namespaces: nothing appears in ours.
        ip(&[
            "link", "add", &host.link, "netns", &ns, "type", "veth", "peer", "name", &port,
            "netns", &sw,
        ])?;
        ip(&["-n", &sw, "link", "set", &port, "master", &br])?;
        ip(&["-n", &sw, "link", "set", &port, "up"])?;
        let cidr = format!("{}/24", host.ip);
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", &host.link])?;
        ip(&["-n", &ns, "link", "set", &host.link, "up"])?;
        self.hosts.push(host);
        Ok(self.hosts.last().expect("just pushed"))
    }

    /// Another namespace, `<namespace_prefix>-<role>`, with loopback up and no link yet (a
    /// router, or a LAN behind a host: see [`Lab::add_veth`]). [`Lab::exec`] and
    /// [`Lab::spawn`] run in it by its role. Its name.
    pub fn add_namespace(&mut self, role: &str) -> Result<String, LabError> {
        self.check_role(role);
        let netns = format!("{}-{role}", self.naming.namespace_prefix);
        self.add_netns(&netns)?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        self.hosts.push(Host {
            role: role.to_owned(),
            netns: netns.clone(),
            link: String::new(),
            ip: Ipv4Addr::UNSPECIFIED,
        });
        Ok(netns)
    }

    /// The network namespace of a running process `pid` (a Docker container's, say) under
    /// the lab's name for `role`, `<namespace_prefix>-<role>` (`ip netns attach`):
    /// [`Lab::exec`] and [`Lab::spawn`] then run in it by its role. The lab did not make the
    /// namespace and sets nothing up in it; its cleanup deletes the name, and the namespace
    /// lives on while its process does. Its name.
    pub fn attach_namespace(&mut self, role: &str, pid: u32) -> Result<String, LabError> {
        self.check_role(role);
        let netns = format!("{}-{role}", self.naming.namespace_prefix);
        ip(&["netns", "attach", &netns, &pid.to_string()])?;
        self.namespaces.push(netns.clone());
        self.hosts.push(Host {
            role: role.to_owned(),
            netns: netns.clone(),
            link: String::new(),
            ip: Ipv4Addr::UNSPECIFIED,
        });
        Ok(netns)
    }

    /// A bridge `name` in `role`'s namespace carrying `addresses` (the gateways of the
    /// containers behind it), up.
    pub fn add_bridge(&self, role: &str, name: &str, addresses: &[IpNet]) -> Result<(), LabError> {
        let ns = self.netns(role);
        ip(&["-n", ns, "link", "add", name, "type", "bridge"])?;
        for a in addresses {
            add_address(ns, name, *a)?;
        }
        ip(&["-n", ns, "link", "set", name, "up"])
    }

    /// A "container" `name`: a namespace of its own joined to `bridge` in `role`'s namespace
    /// by a veth (`eth0` inside), with `addresses`, default routes via `gateways` and `mtu`.
    /// Afterwards `name` is a role like any host's.
    pub fn add_container(
        &mut self,
        role: &str,
        name: &str,
        bridge: &str,
        addresses: &[IpNet],
        gateways: &[IpAddr],
        mtu: u16,
    ) -> Result<(), LabError> {
        crate::interrupt::check()?;
        let host_ns = self.netns(role).to_owned();
        let port = self.link_name(name);
        let ns = self.add_namespace(name)?;
        let mtu = mtu.to_string();
        ip(&[
            "link", "add", &port, "netns", &host_ns, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        ip(&[
            "-n", &host_ns, "link", "set", &port, "master", bridge, "mtu", &mtu, "up",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "mtu", &mtu, "up"])?;
        for a in addresses {
            add_address(&ns, "eth0", *a)?;
        }
        for gw in gateways {
            let family = if gw.is_ipv6() { "-6" } else { "-4" };
            let gw = gw.to_string();
            ip(&["-n", &ns, family, "route", "add", "default", "via", &gw])?;
        }
        let v4 = addresses.iter().find_map(|a| match a {
            IpNet::V4(n) => Some(n.addr()),
            IpNet::V6(_) => None,
        });
        let host = self.hosts.last_mut().expect("add_namespace pushed it");
        host.ip = v4.unwrap_or(Ipv4Addr::UNSPECIFIED);
        Ok(())
    }

    /// A veth pair between two namespaces of the lab (by role), `a_link` in `a` and
    /// `b_link` in `b`, both down and without addresses. Both ends are created inside
    /// their namespaces, so the pair goes with whichever is deleted first.
    pub fn add_veth(&self, a: &str, a_link: &str, b: &str, b_link: &str) -> Result<(), LabError> {
        ip(&[
            "link",
            "add",
            a_link,
            "netns",
            self.netns(a),
            "type",
            "veth",
            "peer",
            "name",
            b_link,
            "netns",
            self.netns(b),
        ])
    }

    /// `ip <args>` in a namespace of the lab (by role).
    pub fn run_ip(&self, role: &str, args: &[&str]) -> Result<(), LabError> {
        let mut argv = vec!["-n", self.netns(role)];
        argv.extend(args);
        ip(&argv)
    }

    /// A link name of this lab, `<link_prefix><suffix>`; panics beyond Linux's 15 bytes.
    pub fn link_name(&self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.naming.link_prefix);
        assert!(
            name.len() <= 15,
            "{name:?} is longer than a link name may be (15 bytes)"
        );
        name
    }

    /// The namespace of a role (a host, container or added namespace).
    pub fn netns(&self, role: &str) -> &str {
        &self.host(role).netns
    }

    /// A UDP socket bound to `at` in `role`'s namespace, made by a thread that enters it:
    /// the socket stays there whoever uses it.
    pub fn udp_socket(&self, role: &str, at: SocketAddrV4) -> Result<UdpSocket, LabError> {
        let ns = self.netns(role).to_owned();
        let what = format!("cannot bind a UDP socket to {at} in {ns}");
        std::thread::spawn(move || {
            meshd_engine::sys::netns::enter(&ns)?;
            UdpSocket::bind(at)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread that makes a socket panicked")))
        .map_err(|source| LabError::Io { what, source })
    }

    pub fn host(&self, role: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .unwrap_or_else(|| panic!("no host {role:?} in lab {}", self.naming.tag))
    }

    /// The hosts on the switch, in the order they were added.
    pub fn hosts(&self) -> Vec<&Host> {
        self.hosts.iter().filter(|h| !h.link.is_empty()).collect()
    }

    /// A host's underlay address.
    pub fn ip(&self, role: &str) -> Ipv4Addr {
        self.host(role).ip
    }

    /// The tag in every name this lab made.
    pub fn tag(&self) -> &str {
        &self.naming.tag
    }

    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// The switch's bridge.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The namespaces this lab made or attached, the switch first.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The lab's directory ([`Naming::dir`]); panics for a lab without one.
    pub fn dir(&self) -> &std::path::Path {
        self.naming.dir.as_deref().expect("a lab with a directory")
    }

    /// The lab's directory; a lab made without one gets `<tmp>/<namespace_prefix>` now,
    /// removed with the lab like one made at once.
    pub(crate) fn dir_or_make(&mut self) -> Result<PathBuf, LabError> {
        if let Some(dir) = &self.naming.dir {
            return Ok(dir.clone());
        }
        let dir = std::env::temp_dir().join(&self.naming.namespace_prefix);
        std::fs::create_dir(&dir).map_err(|source| LabError::Io {
            what: format!(
                "cannot create {} (left over from an earlier lab that was kept?)",
                dir.display()
            ),
            source,
        })?;
        self.naming.dir = Some(dir.clone());
        self.dir_made = true;
        Ok(dir)
    }

    /// Leave everything in place when the lab is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    fn check_role(&self, role: &str) {
        assert!(
            !role.is_empty() && role.chars().all(|c| c.is_ascii_alphanumeric()),
            "role names are short and alphanumeric: {role:?}"
        );
        assert!(
            role != "switch" && self.hosts.iter().all(|h| h.role != role),
            "duplicate role {role:?}"
        );
    }

    fn add_netns(&mut self, name: &str) -> Result<(), LabError> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        Ok(())
    }

    /// Stops every process, deletes the namespaces and the directory. Problems on stderr;
    /// with [`Naming::report_cleanup`] a summary line on stdout.
    fn cleanup(&mut self) {
        let procs = process::stop_all(&mut self.procs.borrow_mut(), self.naming.stop_grace);
        // Each joins its thread, which holds a socket in one of the namespaces.
        self.responders.clear();
        // Hosts first, then the switch: each veth goes with its namespaces.
        let namespaces = self.namespaces.len();
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("lab {}: {e}", self.naming.tag);
            }
        }
        if self.dir_made
            && let Some(dir) = &self.naming.dir
        {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                eprintln!(
                    "lab {}: cannot remove {}: {e}",
                    self.naming.tag,
                    dir.display()
                );
            }
            if self.naming.report_cleanup {
                println!(
                    "cleaned up: stopped {procs} processes, deleted {namespaces} namespaces (and \
                     their links), removed {}",
                    dir.display()
                );
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep {
            self.cleanup();
        }
    }
}

/// `ip -n <ns> addr add <address> dev <link>`; IPv6 without duplicate address detection,
/// which would hold the address back for a second or two on a link only the lab uses.
fn add_address(ns: &str, link: &str, address: IpNet) -> Result<(), LabError> {
    let a = address.to_string();
    let mut args = vec!["-n", ns, "addr", "add", &a, "dev", link];
    if address.addr().is_ipv6() {
        args.push("nodad");
    }
    ip(&args)
}

/// `ip <args>`: `netns add/del` and `link add ... netns` from our own namespace, everything
/// else with `-n` inside one of the lab's namespaces. Not interruptible: cleanup runs it
/// after an interrupt.
pub(crate) fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        // Its own process group: a Ctrl-C meant for the lab's owner never cuts a step (or
        // the cleanup) short.
        .process_group(0)
        .output()
        .map_err(|source| LabError::Spawn {
            what: "`ip` (is iproute2 installed?)".to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// What is left of a dropped test lab with this tag: namespaces named `msh-<tag>-...`, and
/// links of that name in the caller's namespace. Empty once the lab is gone.
pub fn leftovers(tag: &str) -> Vec<String> {
    let prefix = format!("msh-{tag}-");
    let run = |args: &[&str]| {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("`ip` (iproute2) is installed");
        assert!(out.status.success(), "ip {}", args.join(" "));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let namespaces = run(&["netns", "list"]);
    let links = run(&["-o", "link", "show"]);
    namespaces
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| format!("netns {l}"))
        .chain(
            links
                .lines()
                .filter(|l| l.contains(&prefix))
                .map(|l| format!("link {l}")),
        )
        .collect()
}

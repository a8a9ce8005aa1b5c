//! The harness behind `meshd demo`: network namespaces on a bridge, and the processes the
//! demo starts in them.
//!
//! ```text
//!              netns mshdemo-<pid>-sw
//!   ┌──────────── bridge md<hex>br ───────────┐
//!   md<hex>s0        md<hex>s1       ...            (veth, switch side)
//!      │                 │
//!   md<hex>h0        md<hex>h1       ...            (veth, host side)
//!   netns mshdemo-<pid>-ctl   netns mshdemo-<pid>-n1   ...
//!   10.201.<k>.10/24          10.201.<k>.11/24
//!                             bridge md<hex>b0 (the host's container subnets)
//!                               md<hex>n1c1      md<hex>n1c2          (veth, host side)
//!                                  │                 │
//!                               eth0 in netns     eth0 in netns       ("containers")
//!                               mshdemo-<pid>-n1c1   mshdemo-<pid>-n1c2
//! ```
//!
//! `<pid>` is the demo's pid (`<hex>` the same in hex, to keep link names within Linux's
//! 15 bytes), so two demos never share a name. Every link is created directly inside one of
//! the lab's namespaces and every address is configured only there: deleting the namespaces
//! removes the links with them, and nothing is ever added to the caller's namespace.
//!
//! [`Lab`] owns the processes it spawns (each in its own process group, so a Ctrl-C in the
//! terminal reaches the demo, not them). Dropping it — on success, on an error, after an
//! interrupt — stops exactly those processes (by the handles it holds, never by name),
//! deletes the namespaces it made, and removes its directory; unless [`Lab::keep`] was
//! called. This is the only place that shells out to `ip`.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::IpNet;

/// Set by the SIGINT/SIGTERM handler: every wait in the demo gives up, and the lab's drop
/// cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Catches SIGINT and SIGTERM for the rest of the process: they set a flag instead of
/// killing the demo, so that it stops at the next wait and cleans up.
pub fn install_signal_handler() -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::Builder::new()
        .name("demo-signals".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (mut int, mut term) = match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(i), Ok(t)) => (i, t),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                loop {
                    let name = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    };
                    if !INTERRUPTED.swap(true, Ordering::SeqCst) {
                        eprintln!("\n{name}: stopping the demo and cleaning up");
                    }
                }
            });
        })
        .context("cannot start the signal thread")?;
    ready_rx
        .recv()
        .context("the signal thread ended")?
        .context("cannot install the SIGINT/SIGTERM handler")
}

/// An error if the demo was interrupted.
pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, but returns an error as soon as the demo is interrupted.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

/// Polls `done` every 200 ms until it returns `Some` or `timeout` passes (`None`).
pub fn wait_for<T>(
    timeout: Duration,
    mut done: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = done()? {
            return Ok(Some(v));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        sleep(Duration::from_millis(200))?;
    }
}

/// Whether we run as root (effective uid 0), from `/proc/self/status`.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// One host of the lab: a namespace with a veth to the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub role: String,
    pub netns: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug)]
struct Spawned {
    label: String,
    child: Child,
}

/// Namespaces on one bridge, the processes started in them, and a directory for their
/// state and logs. See the module docs.
#[derive(Debug)]
pub struct Lab {
    /// `mshdemo-<pid>`: the prefix of every namespace and of the directory.
    pub tag: String,
    /// `md<pid in hex>`: the prefix of every link.
    pub link_tag: String,
    pub dir: PathBuf,
    pub subnet: Ipv4Addr,
    pub switch: String,
    pub bridge: String,
    hosts: Vec<Host>,
    dir_created: bool,
    /// Every namespace made so far, in order (the switch first).
    namespaces: Vec<String>,
    procs: RefCell<Vec<Spawned>>,
    keep: bool,
}

impl Lab {
    /// An empty lab; nothing exists yet. Its directory is made at once.
    pub fn new() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let tag = format!("mshdemo-{pid}");
        let k = u8::try_from(pid % 254 + 1).expect("below 255");
        let dir = std::env::temp_dir().join(&tag);
        let link_tag = format!("md{pid:x}");
        let mut lab = Lab {
            switch: format!("{tag}-sw"),
            bridge: format!("{link_tag}br"),
            subnet: Ipv4Addr::new(10, 201, k, 0),
            tag,
            link_tag,
            dir,
            hosts: Vec::new(),
            dir_created: false,
            namespaces: Vec::new(),
            procs: RefCell::new(Vec::new()),
            keep: false,
        };
        std::fs::create_dir(&lab.dir).with_context(|| {
            format!(
                "cannot create {} (left over from an earlier `meshd demo --keep`?)",
                lab.dir.display()
            )
        })?;
        lab.dir_created = true;
        Ok(lab)
    }

    /// The switch namespace with the bridge, then one namespace per role on it with its
    /// loopback up and an address on the underlay.
    pub fn build(&mut self, roles: &[&str]) -> anyhow::Result<()> {
        let sw = self.switch.clone();
        let br = self.bridge.clone();
        self.add_netns(&sw)?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", &br, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", &br, "up"])?;
        for (i, role) in roles.iter().enumerate() {
            check_interrupted()?;
            let host = Host {
                role: (*role).to_owned(),
                netns: format!("{}-{role}", self.tag),
                ip: Ipv4Addr::from(u32::from(self.subnet) + 10 + u32::try_from(i)?),
            };
            let link = format!("{}h{i}", self.link_tag);
            let port = format!("{}s{i}", self.link_tag);
            let ns = host.netns.clone();
            self.add_netns(&ns)?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // Both ends are created inside their namespaces: nothing appears in ours.
            ip(&[
                "link", "add", &link, "netns", &ns, "type", "veth", "peer", "name", &port, "netns",
                &sw,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", &br])?;
            ip(&["-n", &sw, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", host.ip);
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", &link])?;
            ip(&["-n", &ns, "link", "set", &link, "up"])?;
            self.hosts.push(host);
        }
        Ok(())
    }

    /// A bridge `name` in host `role`'s namespace carrying `addresses` (the gateways of the
    /// containers behind it), up.
    pub fn add_bridge(&self, role: &str, name: &str, addresses: &[IpNet]) -> anyhow::Result<()> {
        let ns = self.host(role).netns.clone();
        ip(&["-n", &ns, "link", "add", name, "type", "bridge"])?;
        for a in addresses {
            add_address(&ns, "dev", name, *a)?;
        }
        ip(&["-n", &ns, "link", "set", name, "up"])
    }

    /// A "container" `name`: its own namespace, joined to `bridge` in host `role`'s namespace
    /// by a veth (`eth0` inside), with `addresses`, default routes via `gateways` and the
    /// given MTU. Afterwards `name` is a role like any host's, for `exec` and `spawn`.
    pub fn add_container(
        &mut self,
        role: &str,
        name: &str,
        bridge: &str,
        addresses: &[IpNet],
        gateways: &[IpAddr],
        mtu: u16,
    ) -> anyhow::Result<()> {
        check_interrupted()?;
        let host_ns = self.host(role).netns.clone();
        let ns = format!("{}-{name}", self.tag);
        let port = format!("{}{name}", self.link_tag);
        let mtu = mtu.to_string();
        self.add_netns(&ns)?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", &port, "netns", &host_ns, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        ip(&[
            "-n", &host_ns, "link", "set", &port, "master", bridge, "mtu", &mtu, "up",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "mtu", &mtu, "up"])?;
        for a in addresses {
            add_address(&ns, "dev", "eth0", *a)?;
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
        self.hosts.push(Host {
            role: name.to_owned(),
            netns: ns,
            ip: v4.unwrap_or(Ipv4Addr::UNSPECIFIED),
        });
        Ok(())
    }

    fn add_netns(&mut self, name: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        Ok(())
    }

    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    pub fn host(&self, role: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .unwrap_or_else(|| panic!("no host {role:?} in the demo lab"))
    }

    /// The pids of the processes the lab started and still holds.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.borrow().iter().map(|p| p.child.id()).collect()
    }

    /// Leave everything in place when the lab is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    fn command(&self, role: &str, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host(role).netns])
            .args(argv)
            .stdin(Stdio::null())
            // Its own process group: a Ctrl-C in the terminal is the demo's to handle.
            .process_group(0);
        cmd
    }

    /// Runs `argv` in a host's namespace and waits for it (killed after `timeout` or on
    /// an interrupt).
    pub fn exec(&self, role: &str, argv: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        Ok(self
            .exec_all(&[(role, argv.to_vec())], timeout)?
            .pop()
            .expect("one output"))
    }

    /// Runs several commands at once, each in its host's namespace; their outputs, in order.
    pub fn exec_all(
        &self,
        commands: &[(&str, Vec<&str>)],
        timeout: Duration,
    ) -> anyhow::Result<Vec<Output>> {
        let mut cmds: Vec<Command> = commands
            .iter()
            .map(|(role, argv)| self.command(role, argv))
            .collect();
        run_all(&mut cmds, timeout, true)
    }

    /// Starts a long-running `argv` in a host's namespace, output appended to `log`. The
    /// lab keeps it; the pid (`ip netns exec` execs, so it is the command's own).
    pub fn spawn(&mut self, role: &str, argv: &[&str], log: &Path) -> anyhow::Result<u32> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = self
            .command(role, argv)
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("cannot run `ip netns exec` (is iproute2 installed?)")?;
        let pid = child.id();
        self.procs.get_mut().push(Spawned {
            label: format!("{role}: {}", argv.join(" ")),
            child,
        });
        Ok(pid)
    }

    /// Whether the process with this pid (one of ours) has exited.
    pub fn exited(&self, pid: u32) -> bool {
        self.procs
            .borrow_mut()
            .iter_mut()
            .find(|p| p.child.id() == pid)
            .is_some_and(|p| !matches!(p.child.try_wait(), Ok(None)))
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period), deletes the
    /// namespaces and the directory. A summary line on stdout, problems on stderr.
    fn cleanup(&mut self) {
        let made_dir = self.dir_created;
        let procs = self.procs.get_mut().len();
        let mut running: Vec<Spawned> = Vec::new();
        for mut p in self.procs.get_mut().drain(..) {
            if let Ok(None) = p.child.try_wait() {
                // Still unreaped, so the pid is certainly still this child's.
                let _ = Command::new("kill")
                    .args(["-TERM", &p.child.id().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                running.push(p);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !running.is_empty() {
            running.retain_mut(|p| matches!(p.child.try_wait(), Ok(None)));
            if Instant::now() >= deadline {
                for p in &mut running {
                    let _ = p.child.kill();
                    if p.child.wait().is_err() {
                        eprintln!("demo: cannot reap pid {} ({})", p.child.id(), p.label);
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Hosts first, then the switch: each veth goes with its namespaces.
        let namespaces = self.namespaces.len();
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("demo: {e:#}");
            }
        }
        if self.dir_created {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("demo: cannot remove {}: {e}", self.dir.display());
            }
            self.dir_created = false;
        }
        if made_dir {
            println!(
                "cleaned up: stopped {procs} processes, deleted {namespaces} namespaces (and \
                 their links), removed {}",
                self.dir.display()
            );
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
fn add_address(ns: &str, dev: &str, link: &str, address: IpNet) -> anyhow::Result<()> {
    let a = address.to_string();
    let mut args = vec!["-n", ns, "addr", "add", &a, dev, link];
    if address.addr().is_ipv6() {
        args.push("nodad");
    }
    ip(&args)
}

/// `ip <args>`: `netns add/del` and `link add ... netns` from our own namespace, everything
/// else with `-n` inside one of the lab's namespaces.
/// Not interruptible: cleanup runs it after an interrupt.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args).stdin(Stdio::null()).process_group(0);
    let out = run_all(
        std::slice::from_mut(&mut cmd),
        Duration::from_secs(10),
        false,
    )
    .context("cannot run `ip` (is iproute2 installed?)")?
    .pop()
    .expect("one output");
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs the commands at once with their output captured; waits for all of them. Each is
/// killed (and reaped) after `timeout`; if `interruptible`, on an interrupt all are, and it
/// is an error.
fn run_all(
    cmds: &mut [Command],
    timeout: Duration,
    interruptible: bool,
) -> anyhow::Result<Vec<Output>> {
    let interrupted_now = || interruptible && check_interrupted().is_err();
    type Running = (Child, JoinHandle<Vec<u8>>, JoinHandle<Vec<u8>>);
    let mut running: Vec<Running> = Vec::new();
    let mut spawn_error = None;
    for cmd in cmds.iter_mut() {
        match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
            Ok(mut child) => {
                let out = drain(child.stdout.take().expect("piped"));
                let err = drain(child.stderr.take().expect("piped"));
                running.push((child, out, err));
            }
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        }
    }
    let deadline = Instant::now() + timeout;
    let mut outputs = Vec::new();
    let mut interrupted = false;
    for (mut child, out, err) in running {
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None)
                    if spawn_error.is_none()
                        && !interrupted
                        && Instant::now() < deadline
                        && !interrupted_now() =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    interrupted |= interrupted_now();
                    let _ = child.kill();
                    break child.wait();
                }
                Err(e) => break Err(e),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        outputs.push(status.map(|status| Output {
            status,
            stdout,
            stderr,
        }));
    }
    if let Some(e) = spawn_error {
        return Err(e.into());
    }
    if interrupted_now() {
        bail!("interrupted");
    }
    outputs.into_iter().map(|o| o.map_err(Into::into)).collect()
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

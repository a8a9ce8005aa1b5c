//! A small lab of Linux network namespaces for end-to-end tests with real processes.
//!
//! ```text
//!            netns msh-<tag>-switch
//!   ┌──────────── bridge msh-<tag>-br ────────────┐
//!   msh-<tag>-s0        msh-<tag>-s1        ...          (veth, switch side)
//!        │                   │
//!   msh-<tag>-h0        msh-<tag>-h1        ...          (veth, host side)
//!   netns msh-<tag>-<role0>   netns msh-<tag>-<role1>
//!   10.200.<k>.10/24    10.200.<k>.11/24
//! ```
//!
//! More namespaces can hang off the hosts ([`Lab::add_namespace`], [`Lab::add_veth`]): a
//! container or a LAN behind a host, `msh-<tag>-<role>`, with veths named by
//! [`Lab::link_name`]; they are the lab's like the hosts, and go with it.
//!
//! `<tag>` is this process's pid in hex plus a per-process lab counter, so concurrent
//! tests and concurrent test runs never share a name; `<k>` is derived from it. Every link
//! is created directly inside a namespace of the lab (never in the caller's namespace), so
//! deleting the lab's namespaces removes every veth and the bridge with them. Addresses are
//! only ever configured inside the lab's namespaces.
//!
//! [`Lab`] owns every process it spawns. Dropping it — also while unwinding from a
//! panic — kills exactly those processes (by the handles it holds, so a recycled pid is
//! never hit), then deletes its namespaces. Nothing is ever killed by name.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long [`Lab::exec`] lets a command run before it kills it.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Labs made by this process so far; part of each lab's tag.
static LABS: AtomicU32 = AtomicU32::new(0);

/// One host of the lab: a namespace with a veth to the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// The name the test gave it, e.g. `ctl` or `n1`.
    pub role: String,
    /// Its network namespace, `msh-<tag>-<role>`.
    pub netns: String,
    /// Its veth (inside `netns`), `msh-<tag>-h<i>`.
    pub link: String,
    /// Its underlay address, on `link`.
    pub ip: Ipv4Addr,
}

/// A process the lab spawned; only the lab can signal or reap it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Its pid (`ip netns exec` execs the command, so this is the command itself).
    pub pid: u32,
}

#[derive(Debug)]
struct Spawned {
    host: String,
    argv: Vec<String>,
    child: Child,
}

/// Network namespaces on one bridge, and the processes running in them.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    switch: String,
    bridge: String,
    /// The underlay: `10.200.<k>.0/24`.
    subnet: Ipv4Addr,
    hosts: Vec<Host>,
    /// Namespaces added after the hosts, without an underlay link: `(role, netns)`.
    extra: Vec<(String, String)>,
    /// Every namespace created so far, in order (the switch first).
    namespaces: Vec<String>,
    procs: Vec<Spawned>,
}

impl Lab {
    /// A switch namespace with a bridge, and one namespace per role attached to it, with
    /// loopback up and an address on the underlay. Panics (after cleaning up what it made)
    /// if a step fails.
    pub fn new(roles: &[&str]) -> Self {
        assert!(
            !roles.is_empty() && roles.len() <= 100,
            "1 to 100 hosts per lab"
        );
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        assert!(n < 36, "at most 36 labs per test process");
        let index = char::from_digit(n, 36).expect("below 36");
        // pid_max is at most 2^22: 6 hex digits. `msh-` + 7 + `-h99` = 15, Linux's limit.
        let tag = format!("{pid:x}{index}");
        let k = (pid.wrapping_mul(37).wrapping_add(n.wrapping_mul(101))) % 254 + 1;
        let mut lab = Lab {
            switch: format!("msh-{tag}-switch"),
            bridge: format!("msh-{tag}-br"),
            subnet: Ipv4Addr::new(10, 200, u8::try_from(k).expect("below 255"), 0),
            tag,
            hosts: Vec::new(),
            extra: Vec::new(),
            namespaces: Vec::new(),
            procs: Vec::new(),
        };
        // From here on a panic unwinds through `lab`'s Drop, which removes what exists.
        lab.add_netns(&lab.switch.clone());
        let sw = lab.switch.clone();
        let br = lab.bridge.clone();
        ip(&["-n", &sw, "link", "set", "lo", "up"]);
        ip(&["-n", &sw, "link", "add", &br, "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", &br, "up"]);
        for (i, role) in roles.iter().enumerate() {
            assert!(
                !role.is_empty() && role.chars().all(|c| c.is_ascii_alphanumeric()),
                "role names are short and alphanumeric: {role:?}"
            );
            assert!(
                lab.hosts.iter().all(|h| h.role != *role),
                "duplicate role {role:?}"
            );
            let host = Host {
                role: (*role).to_owned(),
                netns: format!("msh-{}-{role}", lab.tag),
                link: format!("msh-{}-h{i}", lab.tag),
                ip: Ipv4Addr::from(u32::from(lab.subnet) + 10 + u32::try_from(i).expect("small")),
            };
            let port = format!("msh-{}-s{i}", lab.tag);
            lab.add_netns(&host.netns);
            let ns = host.netns.as_str();
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            // Both ends are created inside their namespaces: nothing appears in ours.
            ip(&[
                "link", "add", &host.link, "netns", ns, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", &br]);
            ip(&["-n", &sw, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", host.ip),
                "dev",
                &host.link,
            ]);
            ip(&["-n", ns, "link", "set", &host.link, "up"]);
            lab.hosts.push(host);
        }
        lab
    }

    fn add_netns(&mut self, name: &str) {
        ip(&["netns", "add", name]);
        self.namespaces.push(name.to_owned());
    }

    /// Another namespace, `msh-<tag>-<role>`, with loopback up and no link yet (e.g. a
    /// container or a LAN behind a host: see [`Lab::add_veth`]). [`Lab::exec`] and
    /// [`Lab::spawn`] run in it by its role; the lab deletes it on drop, with every link in
    /// it. Its name.
    pub fn add_namespace(&mut self, role: &str) -> String {
        assert!(
            !role.is_empty() && role.chars().all(|c| c.is_ascii_alphanumeric()),
            "role names are short and alphanumeric: {role:?}"
        );
        assert!(
            role != "switch" && !self.has_role(role),
            "duplicate role {role:?}"
        );
        let netns = format!("msh-{}-{role}", self.tag);
        self.add_netns(&netns);
        self.extra.push((role.to_owned(), netns.clone()));
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        netns
    }

    fn has_role(&self, role: &str) -> bool {
        self.hosts.iter().any(|h| h.role == role) || self.extra.iter().any(|(r, _)| r == role)
    }

    /// The namespace of a host or of an [added](Lab::add_namespace) namespace.
    pub fn netns(&self, role: &str) -> &str {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .map(|h| h.netns.as_str())
            .or_else(|| {
                self.extra
                    .iter()
                    .find(|(r, _)| r == role)
                    .map(|(_, ns)| ns.as_str())
            })
            .unwrap_or_else(|| panic!("no namespace {role:?} in the lab"))
    }

    /// A link name of this lab, `msh-<tag>-<suffix>`; panics beyond Linux's 15 bytes (the
    /// tag takes up to 7, which leaves 3 for `suffix`).
    pub fn link_name(&self, suffix: &str) -> String {
        let name = format!("msh-{}-{suffix}", self.tag);
        assert!(
            name.len() <= 15,
            "{name:?} is longer than a link name may be (15 bytes)"
        );
        name
    }

    /// A veth pair between two namespaces of the lab (by role), `a_link` in `a` and
    /// `b_link` in `b`, both down and without addresses. Both ends are created inside
    /// their namespaces, so the pair goes with whichever is deleted first.
    pub fn add_veth(&self, a: &str, a_link: &str, b: &str, b_link: &str) {
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
        ]);
    }

    /// `ip <args>` in a namespace of the lab (by role), panicking with its stderr on
    /// failure.
    pub fn run_ip(&self, role: &str, args: &[&str]) {
        let mut argv = vec!["-n", self.netns(role)];
        argv.extend(args);
        ip(&argv);
    }

    /// The tag in every name this lab made (`msh-<tag>-...`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The namespaces this lab made, the switch first.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host(&self, role: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .unwrap_or_else(|| panic!("no host {role:?} in the lab"))
    }

    /// A host's underlay address.
    pub fn ip(&self, role: &str) -> Ipv4Addr {
        self.host(role).ip
    }

    fn command(&self, role: &str, argv: &[&str]) -> Command {
        assert!(!argv.is_empty(), "a command to run");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns(role)]).args(argv);
        cmd
    }

    /// Runs `argv` in a namespace of the lab (by role) and waits for it (at most [`EXEC_TIMEOUT`]).
    pub fn exec(&self, role: &str, argv: &[&str]) -> Output {
        self.exec_timeout(role, argv, EXEC_TIMEOUT)
    }

    /// Runs `argv` in a host's namespace; after `timeout` it is killed and the output has
    /// a failed status and a note on stderr.
    pub fn exec_timeout(&self, role: &str, argv: &[&str], timeout: Duration) -> Output {
        self.exec_all(&[(role, argv)], timeout)
            .pop()
            .expect("one output")
    }

    /// Runs several commands at once, each in its host's namespace, and waits for all of
    /// them (each killed after `timeout`); their outputs in order.
    pub fn exec_all(&self, commands: &[(&str, &[&str])], timeout: Duration) -> Vec<Output> {
        let running: Vec<_> = commands
            .iter()
            .map(|(role, argv)| {
                let mut child = self
                    .command(role, argv)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("`ip netns exec` runs");
                let out = drain(child.stdout.take().expect("piped"));
                let err = drain(child.stderr.take().expect("piped"));
                (child, out, err)
            })
            .collect();
        let deadline = Instant::now() + timeout;
        running
            .into_iter()
            .zip(commands)
            .map(|((mut child, out, err), (role, argv))| {
                let (status, timed_out) = wait_deadline(&mut child, deadline);
                let stdout = out.join().unwrap_or_default();
                let mut stderr = err.join().unwrap_or_default();
                if timed_out {
                    stderr.extend_from_slice(
                        format!("\n[lab: killed after {timeout:?} on {role}: {argv:?}]\n")
                            .as_bytes(),
                    );
                }
                Output {
                    status,
                    stdout,
                    stderr,
                }
            })
            .collect()
    }

    /// Starts a long-running `argv` in a host's namespace, stdout and stderr appended to
    /// `log`. The lab keeps the process: stop it with [`Lab::kill`] / [`Lab::stop`], or
    /// let the lab's drop kill it.
    pub fn spawn(&mut self, role: &str, argv: &[&str], log: &Path) -> Proc {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let child = self
            .command(role, argv)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a second handle"))
            .stderr(file)
            .spawn()
            .expect("`ip netns exec` runs");
        let proc = Proc { pid: child.id() };
        self.procs.push(Spawned {
            host: role.to_owned(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            child,
        });
        proc
    }

    fn spawned(&mut self, proc: Proc) -> Option<usize> {
        self.procs.iter().position(|s| s.child.id() == proc.pid)
    }

    /// The exit status, if the process has exited (it stays the lab's until killed).
    pub fn exited(&mut self, proc: Proc) -> Option<ExitStatus> {
        let i = self.spawned(proc)?;
        self.procs[i].child.try_wait().ok().flatten()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self, proc: Proc) -> Option<ExitStatus> {
        let i = self.spawned(proc)?;
        let mut s = self.procs.remove(i);
        let _ = s.child.kill();
        s.child.wait().ok()
    }

    /// SIGTERM, wait up to `grace` for it to exit, then SIGKILL; reaps it either way.
    /// The exit status, and whether it exited on its own.
    pub fn stop(&mut self, proc: Proc, grace: Duration) -> (Option<ExitStatus>, bool) {
        let Some(i) = self.spawned(proc) else {
            return (None, false);
        };
        let mut s = self.procs.remove(i);
        if let Ok(Some(status)) = s.child.try_wait() {
            return (Some(status), true);
        }
        // The pid is still ours: the child is not reaped until we wait for it.
        let _ = Command::new("kill")
            .args(["-TERM", &proc.pid.to_string()])
            .status();
        let (status, timed_out) = wait_deadline(&mut s.child, Instant::now() + grace);
        (Some(status), !timed_out)
    }

    /// Polls `done` every 100 ms until it holds (true) or `timeout` passes (false).
    pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut s in self.procs.drain(..) {
            if let Ok(None) = s.child.try_wait() {
                let _ = s.child.kill();
            }
            if s.child.wait().is_err() {
                eprintln!(
                    "lab {}: cannot reap pid {} on {} ({:?})",
                    self.tag,
                    s.child.id(),
                    s.host,
                    s.argv
                );
            }
        }
        // Hosts first, then the switch: each veth goes with the host end's namespace.
        for ns in self.namespaces.drain(..).rev() {
            match Command::new("ip").args(["netns", "del", &ns]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "lab: cannot delete netns {ns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("lab: cannot run `ip netns del {ns}`: {e}"),
            }
        }
    }
}

/// `ip <args>`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) is installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child` until `deadline`, then kills it; reaps it either way. The status,
/// and whether it had to be killed.
fn wait_deadline(child: &mut Child, deadline: Instant) -> (ExitStatus, bool) {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, false),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                return (child.wait().expect("a killed child can be reaped"), true);
            }
        }
    }
}

/// What is left of a dropped lab with this tag: namespaces named `msh-<tag>-...`, and
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

//! Helpers for tests that run real `meshd` processes.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn meshd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshd"))
}

/// A free TCP port and a free UDP port on loopback (released again: a tiny race, fine here).
pub fn free_ports() -> (u16, u16) {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("a TCP port");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
    (
        tcp.local_addr().expect("bound").port(),
        udp.local_addr().expect("bound").port(),
    )
}

/// A port on `ip` that is free for both UDP and TCP (a replica's --listen takes both).
pub fn free_dual_port(ip: IpAddr) -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((ip, 0)).expect("a UDP port");
        let port = udp.local_addr().expect("bound").port();
        // The relay takes the next UDP port.
        let relay_free = port
            .checked_add(1)
            .is_some_and(|next| UdpSocket::bind((ip, next)).is_ok());
        if relay_free && TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for UDP, TCP and the next UDP port on {ip}");
}

/// One `meshd controller` replica process with its own data dir.
pub struct ReplicaProcess {
    pub dir: tempfile::TempDir,
    pub api: SocketAddr,
    /// The node channel (UDP) and replication (TCP) address.
    pub channel: SocketAddr,
    /// What `init` printed.
    pub init_stdout: String,
    child: Option<Child>,
}

impl ReplicaProcess {
    /// `meshd controller init` on fresh loopback ports.
    pub fn init() -> Self {
        Self::init_at(Ipv4Addr::LOCALHOST, &[])
    }

    /// `meshd controller init` on fresh ports of `ip` (any of 127.0.0.0/8 works on Linux),
    /// with `extra` arguments (e.g. `--join URL --token T`).
    pub fn init_at(ip: Ipv4Addr, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let api_port = TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a TCP port")
            .port();
        let api = SocketAddr::from((ip, api_port));
        let channel = SocketAddr::from((ip, free_dual_port(ip.into())));
        let out = meshd()
            .args(["controller", "init", "--data"])
            .arg(dir.path())
            .args([
                "--listen",
                &channel.to_string(),
                "--api-listen",
                &api.to_string(),
            ])
            .args(extra)
            .output()
            .expect("meshd runs");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            api,
            channel,
            init_stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            child: None,
        }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("api.token"))
            .expect("token file")
            .trim()
            .to_owned()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Starts `meshd controller run` and waits until its API answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = meshd()
            .args(["controller", "run", "--data"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("meshd runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_get(self.api, "/v1/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("replica exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("replica did not come up: {}", self.log());
    }

    /// The PID of the running `meshd controller run`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a `meshd controller ...` admin command against this replica via `--data`.
    pub fn cli(&self, args: &[&str]) -> Output {
        meshd()
            .arg("controller")
            .args(args)
            .arg("--data")
            .arg(self.dir.path())
            .output()
            .expect("meshd runs")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("test-run.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bare HTTP/1.1 GET over loopback; the raw response, if any.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    String::from_utf8(raw_exchange(addr, request.as_bytes())?).ok()
}

/// Writes `request` to a TCP connection to `addr` and reads whatever comes back until the
/// peer closes (or 2 s pass): `None` if it cannot connect.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(request).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Some(out)
}

/// stdout of a successful command, trimmed; panics with stderr otherwise.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A network namespace of the test's own, entered by the calling thread: every process the
/// thread starts afterwards (controller, daemons, CLI) lives in it, so daemons create their
/// TUN devices and routes there, never in the host's namespace. Deleted on drop.
pub struct TestNetns(meshd_lab::Netns);

impl TestNetns {
    pub fn enter(tag: &str) -> Self {
        let ns = meshd_lab::Netns::tagged(tag);
        ns.enter();
        Self(ns)
    }
}

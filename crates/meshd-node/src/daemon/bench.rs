//! The bench server: the far end of `meshd bench`, on TCP and UDP port [`BENCH_PORT`].
//!
//! Every daemon with an attached data plane answers bench sessions on its mesh addresses
//! (IPv4, RFC4193 and 6PLANE of every joined network), with no setup. A TCP connection to
//! any other local address (the underlay, loopback, a container's) is closed at once.
//!
//! ```text
//! client → server   {"v":1,"mode":"tcp"|"udp","seconds":N,"stream":k}\n
//! server → client   {"ok":true}\n                              (tcp)
//!                   {"ok":true,"session":"<16 hex digits>"}\n    (udp)
//!                   {"error":"..."}\n, then close                (refused)
//! tcp: client → server   data for N seconds, then a half-close
//! udp: client → server   datagrams to UDP port 9992: session id (8 bytes, big endian),
//!                        sequence number (8 bytes, from 0), padding; then a half-close of
//!                        the TCP connection
//! server → client   {"bytes":..,"seconds":..,"cpu_ms":..,"sink_cpu_ms":..}\n    (tcp)
//!                   the same, with "packets" and "max_seq"                    (udp)
//! ```
//!
//! `cpu_ms` is the daemon process's CPU time (user + system, from `/proc/self/stat`) spent
//! during the session; `sink_cpu_ms` the part of it spent by the bench server's own thread
//! that swallowed the data, which a client subtracts to see what the data plane cost.
//!
//! The input is untrusted: the header is at most [`MAX_HEADER_BYTES`] and must come within
//! [`HEADER_TIMEOUT`]; a session lasts at most `seconds` + [`GRACE`] (`seconds` at most
//! [`MAX_SECONDS`]); at most [`MAX_SESSIONS`] run at once (more are told "busy"); a TCP
//! stream idle for [`IDLE_TIMEOUT`] ends. Datagrams are counted only for a live session id
//! (random, 64 bits, handed out on the TCP connection); others are dropped. Sessions run on
//! their own threads, so that their CPU time can be told apart from the data plane's.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Daemon, stopped};

/// TCP and UDP port of the bench server, on every mesh address.
pub const BENCH_PORT: u16 = 9992;
/// The protocol version this daemon speaks (`"v"` in the request).
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line accepted, newline included.
pub const MAX_HEADER_BYTES: usize = 256;
/// Longest answer line a client accepts.
pub const MAX_REPLY_BYTES: usize = 1024;
/// Longest session a client may ask for.
pub const MAX_SECONDS: u32 = 60;
/// Sessions (TCP streams or UDP sessions) running at once; more are refused.
pub const MAX_SESSIONS: usize = 8;
/// Highest stream number accepted (the client numbers its parallel streams from 0).
pub const MAX_STREAM: u32 = 255;
/// Session id and sequence number at the start of each datagram.
pub const UDP_HEADER_BYTES: usize = 16;
/// How long a client has to send its request line.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A TCP stream that sends nothing for this long ends, and so does a blocked write.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a session may run beyond the seconds it announced.
pub const GRACE: Duration = Duration::from_secs(10);
/// Receive buffer of the UDP socket (the kernel doubles it for its bookkeeping).
const UDP_RECV_BUFFER: usize = 4 << 20;
/// Extra bytes tolerated on a UDP session's control connection.
const MAX_CONTROL_BYTES: usize = 1024;

/// What a session measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Tcp,
    Udp,
}

/// The request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub mode: Mode,
    pub seconds: u32,
    #[serde(default)]
    pub stream: u32,
}

/// The answer to a request line: accepted (with the session id for UDP) or refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    #[serde(default)]
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Ack {
    fn accepted(session: Option<u64>) -> Self {
        Ack {
            ok: true,
            session: session.map(|s| format!("{s:016x}")),
            error: None,
        }
    }

    fn refused(error: impl Into<String>) -> Self {
        Ack {
            ok: false,
            session: None,
            error: Some(error.into()),
        }
    }

    /// The UDP session id, if the server gave a well-formed one.
    pub fn session_id(&self) -> Option<u64> {
        let text = self.session.as_deref()?;
        (text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(text, 16).ok())
            .flatten()
    }
}

/// What the server measured, sent when the client half-closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Payload bytes received: the TCP stream's, or the datagrams' (headers included).
    pub bytes: u64,
    /// From the acknowledgement to the client's half-close.
    pub seconds: f64,
    /// The daemon process's CPU time during the session; null when /proc cannot tell.
    pub cpu_ms: Option<u64>,
    /// The part of `cpu_ms` spent by the bench server's thread swallowing the data.
    #[serde(default)]
    pub sink_cpu_ms: Option<u64>,
    /// UDP: datagrams received for the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// UDP: the highest sequence number received; null when none came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq: Option<u64>,
}

/// Why a request line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the request line is longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    #[error("the request line is not a bench request: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported; this daemon speaks version {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("seconds must be from 1 to {MAX_SECONDS}, not {0}")]
    Seconds(u32),
    #[error("stream must be from 0 to {MAX_STREAM}, not {0}")]
    Stream(u32),
}

/// Parses and checks a request line (with or without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, HeaderError> {
    if line.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let request: Request =
        serde_json::from_slice(line).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    if request.v != PROTOCOL_VERSION {
        return Err(HeaderError::Version(request.v));
    }
    if !(1..=MAX_SECONDS).contains(&request.seconds) {
        return Err(HeaderError::Seconds(request.seconds));
    }
    if request.stream > MAX_STREAM {
        return Err(HeaderError::Stream(request.stream));
    }
    Ok(request)
}

/// Reads one line of at most `max` bytes (newline included), byte by byte so that nothing
/// after it is consumed. `InvalidData` when longer, `UnexpectedEof` when the stream ends
/// first.
pub fn read_line(r: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed before the end of the line",
                ));
            }
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return Ok(line);
                }
                if line.len() >= max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a line longer than {max} bytes"),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `value` as one JSON line.
pub fn write_line(w: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Puts the session id and sequence number at the start of a datagram of at least
/// [`UDP_HEADER_BYTES`].
pub fn encode_datagram(buf: &mut [u8], session: u64, seq: u64) {
    if let Some(head) = buf.get_mut(..UDP_HEADER_BYTES) {
        head[..8].copy_from_slice(&session.to_be_bytes());
        head[8..].copy_from_slice(&seq.to_be_bytes());
    }
}

/// The session id and sequence number of a datagram; `None` when it is too short.
pub fn parse_datagram(buf: &[u8]) -> Option<(u64, u64)> {
    let session = u64::from_be_bytes(buf.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(buf.get(8..16)?.try_into().ok()?);
    Some((session, seq))
}

/// User + system CPU time in a `/proc/.../stat` line, in milliseconds. The kernel counts
/// in USER_HZ ticks, 100 per second on every Linux architecture meshd runs on.
pub fn parse_stat_cpu_ms(text: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    utime.checked_add(stime)?.checked_mul(10)
}

/// This process's CPU time (all threads), in milliseconds.
pub fn process_cpu_ms() -> Option<u64> {
    parse_stat_cpu_ms(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// The calling thread's CPU time, in milliseconds.
fn this_thread_cpu_ms() -> Option<u64> {
    parse_stat_cpu_ms(&std::fs::read_to_string("/proc/thread-self/stat").ok()?)
}

/// The CPU time of thread `tid` of this process, in milliseconds.
fn thread_cpu_ms(tid: u32) -> Option<u64> {
    parse_stat_cpu_ms(&std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?)
}

/// The calling thread's kernel id (`/proc/thread-self` points at `PID/task/TID`).
fn this_thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// `GET /v1/cpu` of the local API: the daemon's CPU time, for `meshd bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuView {
    /// User + system CPU time of the daemon process since it started, in milliseconds;
    /// null when /proc cannot tell.
    pub cpu_ms: Option<u64>,
}

/// The `GET /v1/cpu` handler.
pub(super) async fn cpu() -> axum::Json<CpuView> {
    axum::Json(CpuView {
        cpu_ms: process_cpu_ms(),
    })
}

/// Counters of one UDP session, updated by the receiver thread.
#[derive(Debug, Default)]
struct UdpCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// The highest sequence number + 1; 0 while none arrived.
    seq_end: AtomicU64,
}

/// What the session threads and the UDP receiver share.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    active: AtomicUsize,
    udp: Mutex<HashMap<u64, Arc<UdpCounters>>>,
    /// The UDP receiver's thread id, once it runs (then UDP sessions are offered).
    udp_thread: Mutex<Option<u32>>,
    udp_running: AtomicBool,
    stop: AtomicBool,
}

impl Sessions {
    fn udp(&self) -> MutexGuard<'_, HashMap<u64, Arc<UdpCounters>>> {
        self.udp.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn udp_thread_cpu_ms(&self) -> Option<u64> {
        let tid = (*self
            .udp_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner))?;
        thread_cpu_ms(tid)
    }
}

/// Holds one of the [`MAX_SESSIONS`] slots.
struct Slot(Arc<Sessions>);

impl Slot {
    fn take(sessions: &Arc<Sessions>) -> Option<Self> {
        let taken = sessions
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SESSIONS).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Slot(Arc::clone(sessions)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the bench server on [`BENCH_PORT`] when the data plane is attached (without it
/// the node has no mesh address to serve on). A port in use is logged, not fatal.
pub(super) fn start(daemon: &Arc<Daemon>) {
    if !daemon.dataplane.attached() {
        return;
    }
    let allowed = {
        let daemon = Arc::clone(daemon);
        move |ip: IpAddr| daemon.is_mesh_address(ip)
    };
    match Server::bind(BENCH_PORT, allowed) {
        Ok(server) => {
            info!(
                port = BENCH_PORT,
                "bench server listening on the mesh addresses"
            );
            let stop = daemon.stop.clone();
            daemon.lock().tasks.spawn(server.run(stop));
        }
        Err(e) => {
            warn!(port = BENCH_PORT, error = %e, "no bench server: `meshd bench` to this node will fail")
        }
    }
}

impl Daemon {
    /// Whether `ip` is one of this node's addresses on a joined network.
    fn is_mesh_address(&self, ip: IpAddr) -> bool {
        let node = self.node_id();
        self.lock().networks.values().any(|n| {
            n.config
                .as_ref()
                .is_some_and(|cfg| cfg.interface_addresses(node).iter().any(|a| a.addr() == ip))
        })
    }
}

/// The bound sockets, ready to serve.
pub struct Server {
    tcp: Vec<std::net::TcpListener>,
    sessions: Arc<Sessions>,
    allowed: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds TCP and UDP `port` on `[::]` (dual-stack), and on `0.0.0.0` too where `[::]`
    /// is IPv6-only or IPv6 is off. Accepts TCP connections only to local addresses for
    /// which `allowed` holds. Fails when no TCP socket could be bound; without UDP, UDP
    /// sessions are refused.
    pub fn bind(
        port: u16,
        allowed: impl Fn(IpAddr) -> bool + Send + Sync + 'static,
    ) -> io::Result<Self> {
        Self::bind_on(
            &[
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ],
            port,
            allowed,
        )
    }

    /// [`Server::bind`] on the given addresses (the tests use loopback).
    pub fn bind_on(
        addrs: &[IpAddr],
        port: u16,
        allowed: impl Fn(IpAddr) -> bool + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let sessions = Arc::new(Sessions::default());
        let mut tcp = Vec::new();
        let mut first_error = None;
        for &ip in addrs {
            // With a dual-stack [::] bound, 0.0.0.0 is in use: expected.
            match std::net::TcpListener::bind(SocketAddr::new(ip, port)) {
                Ok(l) => tcp.push(l),
                Err(e) => {
                    debug!(%ip, port, error = %e, "bench: cannot listen on TCP");
                    first_error.get_or_insert(e);
                }
            }
        }
        if tcp.is_empty() {
            return Err(first_error.unwrap_or_else(|| io::Error::other("no address to bind")));
        }
        // Port 0 (tests): UDP on the port TCP got.
        let udp_port = match (port, tcp.first().map(std::net::TcpListener::local_addr)) {
            (0, Some(Ok(a))) => a.port(),
            _ => port,
        };
        let mut udp = Vec::new();
        for &ip in addrs {
            match UdpSocket::bind(SocketAddr::new(ip, udp_port)) {
                Ok(s) => {
                    // Room for bursts: the default (~90 full datagrams) overflows, and the
                    // loss would be the server's, not the path's.
                    if let Err(e) = meshd_engine::sys::force_recv_buffer(s.as_fd(), UDP_RECV_BUFFER)
                    {
                        debug!(error = %e, "bench: cannot enlarge the UDP receive buffer");
                    }
                    udp.push(s);
                }
                Err(e) => debug!(%ip, port, error = %e, "bench: cannot bind UDP"),
            }
        }
        if udp.is_empty() {
            warn!(
                port,
                "bench: cannot bind UDP; `meshd bench --udp` to this node will fail"
            );
        }
        for socket in udp {
            let sessions = Arc::clone(&sessions);
            let spawned = std::thread::Builder::new()
                .name("meshd-bench-udp".into())
                .spawn(move || udp_receiver(&socket, &sessions));
            if let Err(e) = spawned {
                warn!(error = %e, "bench: cannot start the UDP receiver");
            }
        }
        Ok(Server {
            tcp,
            sessions,
            allowed: Arc::new(allowed),
        })
    }

    /// The first TCP listener's address (for tests binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.first().and_then(|l| l.local_addr().ok())
    }

    /// Accepts sessions until `stop` turns true. Needs a Tokio runtime.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        // Stops the UDP receiver however this ends (also when the task is dropped).
        struct StopOnDrop(Arc<Sessions>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.stop.store(true, Ordering::Release);
            }
        }
        let _stop_udp = StopOnDrop(Arc::clone(&self.sessions));
        let mut loops = tokio::task::JoinSet::new();
        for listener in self.tcp {
            let listener = match listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener))
            {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "bench: cannot use a listener");
                    continue;
                }
            };
            loops.spawn(accept_loop(
                listener,
                Arc::clone(&self.sessions),
                Arc::clone(&self.allowed),
            ));
        }
        stopped(&mut stop).await;
        loops.abort_all();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    sessions: Arc<Sessions>,
    allowed: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                debug!(error = %e, "bench: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = match stream.local_addr() {
            Ok(a) => a.ip().to_canonical(),
            Err(_) => continue,
        };
        if !allowed(local) {
            debug!(%peer, %local, "bench: refused a connection to a non-mesh address");
            continue;
        }
        let Some(slot) = Slot::take(&sessions) else {
            // The line fits in an empty send buffer: no need to wait for it.
            let _ = stream.try_write(
                format!("{{\"ok\":false,\"error\":\"busy: {MAX_SESSIONS} bench sessions are running; try again later\"}}\n")
                    .as_bytes(),
            );
            continue;
        };
        let stream = match stream
            .into_std()
            .and_then(|s| s.set_nonblocking(false).map(|()| s))
        {
            Ok(s) => s,
            Err(_) => continue,
        };
        let sessions = Arc::clone(&sessions);
        let spawned = std::thread::Builder::new()
            .name("meshd-bench".into())
            .spawn(move || {
                let _slot = slot;
                match session(&sessions, stream) {
                    Ok(()) => debug!(%peer, "bench session done"),
                    Err(e) => debug!(%peer, error = %e, "bench session ended early"),
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "bench: cannot start a session thread");
        }
    }
}

/// One session on its own thread: the request line, then the TCP or UDP measurement.
fn session(sessions: &Sessions, mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(HEADER_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let line = match read_line(&mut stream, MAX_HEADER_BYTES) {
        Ok(line) => line,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            write_line(&mut stream, &Ack::refused(HeaderError::TooLong.to_string()))?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let request = match parse_request(&line) {
        Ok(r) => r,
        Err(e) => {
            write_line(&mut stream, &Ack::refused(e.to_string()))?;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    };
    let hard_end = Instant::now() + Duration::from_secs(request.seconds.into()) + GRACE;
    match request.mode {
        Mode::Tcp => tcp_session(stream, hard_end),
        Mode::Udp => udp_session(sessions, stream, hard_end),
    }
}

fn tcp_session(mut stream: TcpStream, hard_end: Instant) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let cpu0 = process_cpu_ms();
    let sink0 = this_thread_cpu_ms();
    write_line(&mut stream, &Ack::accepted(None))?;
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes: u64 = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes = bytes.saturating_add(n as u64),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if Instant::now() > hard_end {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client sent past the session's end",
            ));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let report = Report {
        bytes,
        seconds,
        cpu_ms: delta(cpu0, process_cpu_ms()),
        sink_cpu_ms: delta(sink0, this_thread_cpu_ms()),
        packets: None,
        max_seq: None,
    };
    write_line(&mut stream, &report)
}

fn udp_session(sessions: &Sessions, mut stream: TcpStream, hard_end: Instant) -> io::Result<()> {
    if !sessions.udp_running.load(Ordering::Acquire) {
        return write_line(
            &mut stream,
            &Ack::refused("UDP bench is not available on this node: its UDP port is in use"),
        );
    }
    let counters = Arc::new(UdpCounters::default());
    let id = {
        let mut udp = sessions.udp();
        let mut id = 0;
        while id == 0 || udp.contains_key(&id) {
            id = getrandom::u64().map_err(io::Error::other)?;
        }
        udp.insert(id, Arc::clone(&counters));
        id
    };
    // Forget the session however this ends.
    struct Registered<'a>(&'a Sessions, u64);
    impl Drop for Registered<'_> {
        fn drop(&mut self) {
            self.0.udp().remove(&self.1);
        }
    }
    let _registered = Registered(sessions, id);

    let cpu0 = process_cpu_ms();
    let sink0 = sessions.udp_thread_cpu_ms();
    write_line(&mut stream, &Ack::accepted(Some(id)))?;
    let start = Instant::now();
    // The client says nothing until its half-close.
    stream.set_read_timeout(Some(hard_end.saturating_duration_since(start)))?;
    let mut buf = [0u8; 256];
    let mut extra = 0usize;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                extra += n;
                if extra > MAX_CONTROL_BYTES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected data on the control connection",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let seq_end = counters.seq_end.load(Ordering::Acquire);
    let report = Report {
        bytes: counters.bytes.load(Ordering::Acquire),
        seconds,
        cpu_ms: delta(cpu0, process_cpu_ms()),
        sink_cpu_ms: delta(sink0, sessions.udp_thread_cpu_ms()),
        packets: Some(counters.packets.load(Ordering::Acquire)),
        max_seq: seq_end.checked_sub(1),
    };
    write_line(&mut stream, &report)
}

fn delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// Counts the datagrams of live sessions until the server stops.
fn udp_receiver(socket: &UdpSocket, sessions: &Sessions) {
    if let Err(e) = socket.set_read_timeout(Some(Duration::from_secs(1))) {
        warn!(error = %e, "bench: cannot use the UDP socket");
        return;
    }
    *sessions
        .udp_thread
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = this_thread_id();
    sessions.udp_running.store(true, Ordering::Release);
    let mut buf = vec![0u8; 65536];
    // The last session seen: one lookup per session switch, not per datagram.
    let mut last: Option<(u64, Arc<UdpCounters>)> = None;
    while !sessions.stop.load(Ordering::Acquire) {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                last = None;
                continue;
            }
            Err(e) => {
                debug!(error = %e, "bench: UDP receive failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Some((id, seq)) = parse_datagram(&buf[..n]) else {
            continue;
        };
        let counters = match &last {
            Some((cached, c)) if *cached == id => Arc::clone(c),
            _ => {
                let Some(c) = sessions.udp().get(&id).cloned() else {
                    continue;
                };
                last = Some((id, Arc::clone(&c)));
                c
            }
        };
        counters.packets.fetch_add(1, Ordering::AcqRel);
        counters.bytes.fetch_add(n as u64, Ordering::AcqRel);
        counters
            .seq_end
            .fetch_max(seq.saturating_add(1), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn good_requests_parse() {
        assert_eq!(
            parse_request(br#"{"v":1,"mode":"tcp","seconds":5,"stream":3}"#).unwrap(),
            Request {
                v: 1,
                mode: Mode::Tcp,
                seconds: 5,
                stream: 3
            }
        );
        let udp = parse_request(b"{\"v\":1,\"mode\":\"udp\",\"seconds\":60}\n").unwrap();
        assert_eq!((udp.mode, udp.seconds, udp.stream), (Mode::Udp, 60, 0));
        // What the client sends round-trips.
        let sent = Request {
            v: PROTOCOL_VERSION,
            mode: Mode::Udp,
            seconds: 2,
            stream: 7,
        };
        let mut line = Vec::new();
        write_line(&mut line, &sent).unwrap();
        assert_eq!(parse_request(&line).unwrap(), sent);
    }

    #[test]
    fn bad_requests_are_refused() {
        let long = format!(
            r#"{{"v":1,"mode":"tcp","seconds":5,"pad":"{}"}}"#,
            "x".repeat(MAX_HEADER_BYTES)
        );
        assert_eq!(parse_request(long.as_bytes()), Err(HeaderError::TooLong));
        for bad in [
            &b""[..],
            b"\n",
            b"GET / HTTP/1.1\r\n",
            b"{\"v\":1,\"mode\":\"sctp\",\"seconds\":5}",
            b"{\"v\":1,\"seconds\":5}",
            b"{\"v\":1,\"mode\":\"tcp\",\"seconds\":-1}",
            b"{\"v\":1,\"mode\":\"tcp\",\"seconds\":5.5}",
            b"{\"v\":1,\"mode\":\"tcp\",\"seconds\":99999999999}",
            b"[1,2,3]",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_request(bad), Err(HeaderError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_request(br#"{"v":2,"mode":"tcp","seconds":5}"#),
            Err(HeaderError::Version(2))
        );
        for seconds in [0, MAX_SECONDS + 1] {
            let line = format!(r#"{{"v":1,"mode":"tcp","seconds":{seconds}}}"#);
            assert_eq!(
                parse_request(line.as_bytes()),
                Err(HeaderError::Seconds(seconds))
            );
        }
        assert_eq!(
            parse_request(br#"{"v":1,"mode":"tcp","seconds":5,"stream":256}"#),
            Err(HeaderError::Stream(256))
        );
    }

    #[test]
    fn lines_are_bounded() {
        let mut input: &[u8] = b"{\"a\":1}\nrest";
        assert_eq!(read_line(&mut input, 64).unwrap(), b"{\"a\":1}\n");
        assert_eq!(input, b"rest", "nothing after the line is consumed");
        let mut endless = io::repeat(b'x');
        let e = read_line(&mut endless, 300).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut truncated: &[u8] = b"{\"v\":1";
        let e = read_line(&mut truncated, 300).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn acks_and_datagrams() {
        let ack = Ack::accepted(Some(0x0123_4567_89ab_cdef));
        assert_eq!(ack.session.as_deref(), Some("0123456789abcdef"));
        assert_eq!(ack.session_id(), Some(0x0123_4567_89ab_cdef));
        for bad in ["", "123", "0123456789abcdeg", "+123456789abcdef"] {
            let ack = Ack {
                session: Some(bad.into()),
                ..Ack::default()
            };
            assert_eq!(ack.session_id(), None, "{bad}");
        }
        let refused: Ack = serde_json::from_str(r#"{"error":"busy"}"#).unwrap();
        assert!(!refused.ok);
        let mut buf = [0u8; 20];
        encode_datagram(&mut buf, 7, 9);
        assert_eq!(parse_datagram(&buf), Some((7, 9)));
        assert_eq!(parse_datagram(&buf[..15]), None);
        encode_datagram(&mut buf[..3], 1, 1); // too short: left alone, no panic
    }

    #[test]
    fn cpu_times_from_proc() {
        let stat = "4242 (meshd (x) y) S 1 4242 4242 0 -1 4194560 5000 0 0 0 \
                    150 25 0 0 20 0 12 0 100 0 0";
        assert_eq!(parse_stat_cpu_ms(stat), Some(1750));
        assert_eq!(parse_stat_cpu_ms("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ms("no parenthesis"), None);
        assert!(process_cpu_ms().is_some());
        assert!(this_thread_cpu_ms().is_some());
        assert!(this_thread_id().is_some());
    }

    proptest! {
        #[test]
        fn the_header_parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..400)) {
            let parsed = parse_request(&line);
            if line.len() > MAX_HEADER_BYTES {
                prop_assert_eq!(parsed, Err(HeaderError::TooLong));
            } else if let Ok(r) = parsed {
                prop_assert_eq!(r.v, PROTOCOL_VERSION);
                prop_assert!((1..=MAX_SECONDS).contains(&r.seconds));
            }
        }

        #[test]
        fn valid_headers_parse(seconds in 1..=MAX_SECONDS, stream in 0..=MAX_STREAM, udp: bool, spaces in 0usize..8) {
            let mode = if udp { "udp" } else { "tcp" };
            let pad = " ".repeat(spaces);
            let line = format!("{{{pad}\"v\":1,\"mode\":\"{mode}\",\"seconds\":{seconds},{pad}\"stream\":{stream}}}\n");
            let r = parse_request(line.as_bytes()).unwrap();
            prop_assert_eq!((r.seconds, r.stream, r.mode == Mode::Udp), (seconds, stream, udp));
        }

        #[test]
        fn read_line_never_overruns(data in proptest::collection::vec(any::<u8>(), 0..600), max in 1usize..300) {
            let mut input: &[u8] = &data;
            if let Ok(line) = read_line(&mut input, max) {
                prop_assert!(line.len() <= max);
                prop_assert_eq!(line.last(), Some(&b'\n'));
            }
        }
    }
}

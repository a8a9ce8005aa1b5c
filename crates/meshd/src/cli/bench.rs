//! `meshd bench`: tunnel throughput to one peer, measured against the bench server of the
//! peer's daemon ([`meshd_node::daemon::bench`]) on its mesh address.
//!
//! The local daemon's status resolves the peer (node id or mesh address) and gives the
//! path and the MTU; its `GET /v1/cpu` gives its CPU time before and after. The streams
//! are plain blocking sockets on their own threads.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use meshd_proto::{NetworkId, NodeId};
use serde::Serialize;

use super::daemon::with_daemon;
use super::output::{print, print_json};
use super::{Hinted, StateArgs};
use meshd_node::daemon::api::{PeerPath, PeerView, StatusView};
use meshd_node::daemon::bench::{
    Ack, BENCH_PORT, CpuView, GRACE, IDLE_TIMEOUT, MAX_REPLY_BYTES, MAX_SECONDS, MAX_SESSIONS,
    Mode, PROTOCOL_VERSION, Report, Request, UDP_HEADER_BYTES, encode_datagram, read_line,
    write_line,
};

/// Measure tunnel throughput to a peer, with a progress bar
///
/// Sends traffic through the encrypted tunnel to PEER for the given time and reports
/// throughput, packets per second, TCP retransmits (or, with --udp, loss), the path
/// (DIRECT or RELAY), the tunnel MTU and the CPU time both daemons spent, as a percentage
/// of one core. The peer must be online and in a network shared with this host; its
/// daemon answers on TCP and UDP port 9992 of its mesh addresses, with no setup.
///
/// TCP shows what an application gets; UDP sends as fast as it can (or at --rate) and
/// shows what arrives: loss at full speed means the path is slower than the sender, so
/// use --rate to see the loss at a given rate. TCP packets per second are estimated from
/// the bytes and the MTU; retransmits count all TCP of this host (its network namespace)
/// during the run.
///
/// Examples:
///
///   meshd bench 89e92ceee5
///   meshd bench 10.147.17.23 --seconds 30 --streams 4
///   meshd bench fc9c:56c2:e389:e92c:eee5::1 --udp --rate 200
///   meshd bench 89e92ceee5 --json | jq .mbit_per_s
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// The peer: its node id (10 lowercase hex digits, e.g. 89e92ceee5; then its mesh IPv4
    /// address is used) or one of its mesh addresses (IPv4, RFC4193 or 6PLANE)
    #[arg(value_name = "PEER")]
    pub peer: String,

    /// How long to send, in seconds (at most 60)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SECONDS))
    )]
    pub seconds: u32,

    /// Number of parallel streams (at most 8)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=MAX_SESSIONS as i64)
    )]
    pub streams: u16,

    /// Send UDP instead of TCP and report loss. Default: off (TCP)
    #[arg(long)]
    pub udp: bool,

    /// With --udp: bytes per datagram (the 16-byte session header included); keep it
    /// below the tunnel MTU minus 48 to avoid fragmentation
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 1200,
        requires = "udp",
        value_parser = clap::value_parser!(u16).range(UDP_HEADER_BYTES as i64..=65000)
    )]
    pub size: u16,

    /// With --udp: send at this many Mbit/s in total instead of as fast as possible
    #[arg(long, value_name = "MBIT_PER_S", requires = "udp", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Print the result as JSON (and no progress bar). Default: off
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub state: StateArgs,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{text:?} is not a positive number of Mbit/s")),
    }
}

/// How long connecting and the server's first answer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long UDP waits after sending, for the last datagrams to arrive.
const UDP_DRAIN: Duration = Duration::from_millis(300);
/// TCP write size.
const CHUNK: usize = 128 * 1024;

/// Runs `meshd bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let status = with_daemon(&args.state, |c| async move { Ok(c.status().await?) })?;
    let target = resolve(&status, &args.peer)?;
    let mtu = status
        .networks
        .iter()
        .find(|n| n.id == target.network)
        .and_then(|n| n.mtu);
    let mode = if args.udp { Mode::Udp } else { Mode::Tcp };
    let plan = Plan {
        address: SocketAddr::new(target.address, BENCH_PORT),
        mode,
        seconds: args.seconds,
        streams: args.streams,
        size: usize::from(args.size),
        rate_bytes_per_s: args.rate.map(|r| r * 1e6 / 8.0),
    };

    let retrans0 = (mode == Mode::Tcp).then(read_retransmits).flatten();
    let (cpu0, t0) = (local_cpu_ms(&args.state), Instant::now());
    let show = !args.json && io::stderr().is_terminal();
    let outcome = if show {
        let mut bar = Progress::new(plan.seconds);
        let outcome = measure(&plan, &mut |elapsed, bytes| bar.update(elapsed, bytes));
        bar.clear();
        outcome
    } else {
        measure(&plan, &mut |_, _| {})
    };
    let outcome = outcome.map_err(|e| e.for_peer(&target))?;
    let (cpu1, t1) = (local_cpu_ms(&args.state), Instant::now());
    let retrans1 = (mode == Mode::Tcp).then(read_retransmits).flatten();
    // The path as of now: a session may have come up with the bench traffic.
    let path = with_daemon(&args.state, |c| async move { Ok(c.status().await?) })
        .ok()
        .and_then(|s| {
            s.peers
                .iter()
                .find(|p| p.node_id == target.node && p.network == target.network)
                .map(|p| p.path)
        })
        .unwrap_or(target.path);

    let local_wall_ms = (t1 - t0).as_secs_f64() * 1000.0;
    let result = summarize(
        &plan,
        &target,
        &outcome,
        Measured {
            path,
            mtu,
            retransmits: retrans0.zip(retrans1).map(|(a, b)| b.saturating_sub(a)),
            cpu_local_percent: cpu0
                .zip(cpu1)
                .map(|(a, b)| percent(b.saturating_sub(a) as f64, local_wall_ms)),
        },
    );
    if args.json {
        print_json(&result)
    } else {
        print(&render(&result, &target, &outcome))
    }
}

/// The peer as resolved from the local status.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    node: NodeId,
    name: String,
    network: NetworkId,
    address: IpAddr,
    path: PeerPath,
}

/// Finds the peer `text` names (a node id or one of its mesh addresses) in `status`.
fn resolve(status: &StatusView, text: &str) -> anyhow::Result<Target> {
    let rank = |p: &&PeerView| match p.path {
        PeerPath::Direct => 0,
        PeerPath::Relay => 1,
        PeerPath::None => 2,
    };
    let target = |p: &PeerView, address: IpAddr| Target {
        node: p.node_id,
        name: p.name.clone(),
        network: p.network,
        address,
        path: p.path,
    };
    let text = text.trim();
    if let Ok(node) = text.parse::<NodeId>() {
        if node == status.node_id {
            bail!("{node} is this node; bench a peer. {}", peer_list(status));
        }
        let mut found: Vec<&PeerView> = status.peers.iter().filter(|p| p.node_id == node).collect();
        if found.is_empty() {
            bail!("unknown peer {node}. {}", peer_list(status));
        }
        found.sort_by_key(rank);
        return found
            .iter()
            .find_map(|p| preferred_address(&p.addresses).map(|a| target(p, a)))
            .with_context(|| {
                format!(
                    "the daemon lists no mesh address for peer {node}; pass one of its \
                     addresses instead of the node id"
                )
            });
    }
    let Ok(ip) = text.parse::<IpAddr>() else {
        bail!("{text:?} is neither a node id (10 hex digits, e.g. 89e92ceee5) nor an IP address");
    };
    let ip = ip.to_canonical();
    let mut found: Vec<&PeerView> = status
        .peers
        .iter()
        .filter(|p| p.addresses.contains(&ip))
        .collect();
    found.sort_by_key(rank);
    if let Some(p) = found.first() {
        return Ok(target(p, ip));
    }
    if status
        .networks
        .iter()
        .any(|n| n.addresses.iter().any(|a| a.addr() == ip))
    {
        bail!(
            "{ip} is this node's own mesh address; bench a peer. {}",
            peer_list(status)
        );
    }
    bail!(
        "{ip} is not a mesh address of any peer: `meshd bench` measures the tunnel to a \
         peer, on one of its mesh addresses. {}",
        peer_list(status)
    )
}

/// IPv4 first, then the others in the order given (RFC4193, 6PLANE).
fn preferred_address(addresses: &[IpAddr]) -> Option<IpAddr> {
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
}

/// "Peers: 1a2b3c4d5e (host-b) 10.147.17.2, ..." for errors.
fn peer_list(status: &StatusView) -> String {
    if status.peers.is_empty() {
        return "This node has no peers (yet): `meshd status` shows its networks".to_owned();
    }
    let mut seen = Vec::new();
    let mut out = "Peers:".to_owned();
    for p in &status.peers {
        if seen.contains(&p.node_id) {
            continue;
        }
        seen.push(p.node_id);
        let _ = write!(
            out,
            "{} {}",
            if seen.len() > 1 { "," } else { "" },
            p.node_id
        );
        if !p.name.is_empty() {
            let _ = write!(out, " ({})", p.name);
        }
        if let Some(a) = preferred_address(&p.addresses) {
            let _ = write!(out, " {a}");
        }
    }
    out
}

/// The daemon's CPU time, or `None` (an older daemon, no /proc).
fn local_cpu_ms(state: &StateArgs) -> Option<u64> {
    let body = with_daemon(state, |c| async move { Ok(c.get_json("/v1/cpu").await?) }).ok()?;
    serde_json::from_slice::<CpuView>(&body).ok()?.cpu_ms
}

/// `RetransSegs` of `/proc/net/snmp`: the TCP segments this network namespace
/// retransmitted.
fn read_retransmits() -> Option<u64> {
    parse_retransmits(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

fn parse_retransmits(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let i = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// What to measure.
#[derive(Debug, Clone)]
struct Plan {
    address: SocketAddr,
    mode: Mode,
    seconds: u32,
    streams: u16,
    /// UDP datagram size.
    size: usize,
    /// UDP: total send rate; `None` for as fast as possible.
    rate_bytes_per_s: Option<f64>,
}

/// What one stream did, with the server's report.
#[derive(Debug, Clone)]
struct StreamResult {
    report: Report,
    sent_bytes: u64,
    /// UDP datagrams sent.
    sent_packets: u64,
    /// When sending started.
    start: Instant,
    /// When the data was in: the report came (TCP), or sending stopped (UDP).
    end: Instant,
}

/// What all streams did.
#[derive(Debug, Clone)]
struct Outcome {
    streams: Vec<StreamResult>,
    /// From the start of sending to the end of the last stream.
    seconds: f64,
}

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// No connection, or no answer to the request.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered with a refusal.
    #[error("the peer refused the bench session: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl BenchError {
    fn for_peer(self, target: &Target) -> anyhow::Error {
        match self {
            BenchError::Unreachable(why) => anyhow::Error::new(Hinted {
                error: anyhow::anyhow!(
                    "no bench session with peer {} at {}: {why}",
                    target.node,
                    SocketAddr::new(target.address, BENCH_PORT)
                ),
                hint: "the peer's daemon may be older than this one (no bench server), or its \
                       mesh address is unreachable: `meshd peers` shows the path to it"
                    .to_owned(),
            }),
            other => anyhow::Error::msg(format!("bench to peer {}: {other}", target.node)),
        }
    }
}

/// Opens one session: connects, sends the request line, reads the answer.
fn open(plan: &Plan, stream: u32) -> Result<(TcpStream, Ack), BenchError> {
    let unreachable = |e: io::Error| BenchError::Unreachable(e.to_string());
    let mut conn = TcpStream::connect_timeout(&plan.address, CONNECT_TIMEOUT).map_err(|e| {
        BenchError::Unreachable(if e.kind() == io::ErrorKind::TimedOut {
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())
        } else {
            e.to_string()
        })
    })?;
    conn.set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(unreachable)?;
    conn.set_write_timeout(Some(IDLE_TIMEOUT))
        .map_err(unreachable)?;
    let _ = conn.set_nodelay(true);
    let request = Request {
        v: PROTOCOL_VERSION,
        mode: plan.mode,
        seconds: plan.seconds,
        stream,
    };
    write_line(&mut conn, &request).map_err(unreachable)?;
    let line = read_line(&mut conn, MAX_REPLY_BYTES).map_err(|e| {
        BenchError::Unreachable(match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                "the peer closed the connection without answering (is this its mesh address?)"
                    .to_owned()
            }
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())
            }
            _ => e.to_string(),
        })
    })?;
    let ack: Ack = serde_json::from_slice(&line)
        .map_err(|e| BenchError::Unreachable(format!("not a bench server's answer: {e}")))?;
    if !ack.ok {
        return Err(BenchError::Refused(
            ack.error.unwrap_or_else(|| "no reason given".to_owned()),
        ));
    }
    if plan.mode == Mode::Udp && ack.session_id().is_none() {
        return Err(BenchError::Failed(
            "the peer did not give a UDP session id".to_owned(),
        ));
    }
    Ok((conn, ack))
}

/// Runs every stream for the plan's time; `progress` is called about 4 times a second
/// with the seconds elapsed and the bytes sent so far.
fn measure(plan: &Plan, progress: &mut dyn FnMut(f64, u64)) -> Result<Outcome, BenchError> {
    let mut sessions = Vec::with_capacity(usize::from(plan.streams));
    for k in 0..u32::from(plan.streams) {
        sessions.push(open(plan, k)?);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let start_line = Arc::new(Barrier::new(sessions.len() + 1));
    let threads: Vec<JoinHandle<Result<StreamResult, BenchError>>> = sessions
        .into_iter()
        .map(|(conn, ack)| {
            let (plan, sent, start_line) =
                (plan.clone(), Arc::clone(&sent), Arc::clone(&start_line));
            std::thread::spawn(move || {
                start_line.wait();
                match plan.mode {
                    Mode::Tcp => tcp_stream(&plan, conn, &sent),
                    Mode::Udp => udp_stream(&plan, conn, &ack, &sent),
                }
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    while !threads.iter().all(JoinHandle::is_finished) {
        std::thread::sleep(Duration::from_millis(250));
        progress(start.elapsed().as_secs_f64(), sent.load(Ordering::Relaxed));
    }
    let mut streams = Vec::with_capacity(threads.len());
    for t in threads {
        let result = t
            .join()
            .map_err(|_| BenchError::Failed("a stream's thread panicked".to_owned()))?;
        streams.push(result?);
    }
    let first = streams.iter().map(|s| s.start).min().unwrap_or(start);
    let end = streams.iter().map(|s| s.end).max().unwrap_or(start);
    Ok(Outcome {
        streams,
        seconds: end.saturating_duration_since(first).as_secs_f64(),
    })
}

fn tcp_stream(
    plan: &Plan,
    mut conn: TcpStream,
    sent: &AtomicU64,
) -> Result<StreamResult, BenchError> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(plan.seconds.into());
    let buf = vec![0x5a_u8; CHUNK];
    let mut bytes = 0u64;
    while Instant::now() < deadline {
        match conn.write(&buf) {
            Ok(n) => {
                bytes += n as u64;
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(BenchError::Failed(format!(
                    "the TCP stream stalled: nothing could be sent for {} s",
                    IDLE_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(BenchError::Failed(format!("sending failed: {e}"))),
        }
    }
    let report = finish(&mut conn)?;
    Ok(StreamResult {
        report,
        sent_bytes: bytes,
        sent_packets: 0,
        start,
        end: Instant::now(),
    })
}

fn udp_stream(
    plan: &Plan,
    mut conn: TcpStream,
    ack: &Ack,
    sent: &AtomicU64,
) -> Result<StreamResult, BenchError> {
    let failed = |what: &str, e: io::Error| BenchError::Failed(format!("{what}: {e}"));
    let session = ack.session_id().unwrap_or_default();
    let local: IpAddr = if plan.address.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = UdpSocket::bind((local, 0)).map_err(|e| failed("cannot open a UDP socket", e))?;
    socket
        .connect(plan.address)
        .map_err(|e| failed("cannot address the peer over UDP", e))?;
    let mut buf = vec![0x5a_u8; plan.size.max(UDP_HEADER_BYTES)];
    let rate = plan
        .rate_bytes_per_s
        .map(|r| r / f64::from(plan.streams.max(1)));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(plan.seconds.into());
    let (mut seq, mut bytes) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(rate) = rate {
            // Ahead of schedule: wait until the bytes sent are due.
            let due = bytes as f64 / rate;
            let elapsed = (now - start).as_secs_f64();
            if due > elapsed {
                std::thread::sleep(Duration::from_secs_f64((due - elapsed).min(0.01)));
                continue;
            }
        }
        encode_datagram(&mut buf, session, seq);
        match socket.send(&buf) {
            Ok(n) => {
                seq += 1;
                bytes += n as u64;
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            // An ICMP error for an earlier datagram, or a full queue: go on.
            Err(_) => std::thread::yield_now(),
        }
    }
    let end = Instant::now();
    std::thread::sleep(UDP_DRAIN);
    let report = finish(&mut conn)?;
    Ok(StreamResult {
        report,
        sent_bytes: bytes,
        sent_packets: seq,
        start,
        end,
    })
}

/// Half-closes the connection and reads the server's report.
fn finish(conn: &mut TcpStream) -> Result<Report, BenchError> {
    let failed = |e: io::Error| BenchError::Failed(format!("no report from the peer: {e}"));
    conn.shutdown(Shutdown::Write).map_err(failed)?;
    conn.set_read_timeout(Some(GRACE)).map_err(failed)?;
    let line = read_line(conn, MAX_REPLY_BYTES).map_err(failed)?;
    serde_json::from_slice(&line)
        .map_err(|e| BenchError::Failed(format!("the peer's report is not readable: {e}")))
}

/// What was measured outside the streams.
#[derive(Debug, Clone, Copy)]
struct Measured {
    path: PeerPath,
    mtu: Option<u16>,
    retransmits: Option<u64>,
    cpu_local_percent: Option<f64>,
}

/// The result, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct BenchResult {
    peer: NodeId,
    address: IpAddr,
    mode: Mode,
    streams: u16,
    seconds: f64,
    mbit_per_s: f64,
    /// TCP: estimated from the bytes and the MTU; UDP: datagrams received.
    packets_per_s: Option<f64>,
    /// TCP: host-wide TCP retransmits (this network namespace) during the run.
    retransmits: Option<u64>,
    /// UDP: datagrams sent but not received, in percent.
    loss_percent: Option<f64>,
    path: PeerPath,
    mtu: Option<u16>,
    cpu_local_percent: Option<f64>,
    cpu_remote_percent: Option<f64>,
    /// Received by the peer.
    bytes: u64,
}

fn summarize(plan: &Plan, target: &Target, o: &Outcome, m: Measured) -> BenchResult {
    let seconds = o.seconds.max(1e-3);
    let bytes: u64 = o.streams.iter().map(|s| s.report.bytes).sum();
    let received: u64 = o.streams.iter().filter_map(|s| s.report.packets).sum();
    let sent_packets: u64 = o.streams.iter().map(|s| s.sent_packets).sum();
    let packets_per_s = match plan.mode {
        Mode::Tcp => m.mtu.map(|mtu| {
            // IP + TCP headers: what a full segment carries besides payload.
            let headers = if target.address.is_ipv4() { 40 } else { 60 };
            let payload = f64::from(mtu.saturating_sub(headers).max(1));
            bytes as f64 / payload / seconds
        }),
        Mode::Udp => Some(received as f64 / seconds),
    };
    let loss_percent = (plan.mode == Mode::Udp && sent_packets > 0).then(|| {
        let lost = sent_packets.saturating_sub(received);
        100.0 * lost as f64 / sent_packets as f64
    });
    BenchResult {
        peer: target.node,
        address: target.address,
        mode: plan.mode,
        streams: plan.streams,
        seconds: round(o.seconds, 3),
        mbit_per_s: round(bytes as f64 * 8.0 / 1e6 / seconds, 2),
        packets_per_s: packets_per_s.map(|p| round(p, 0)),
        retransmits: (plan.mode == Mode::Tcp).then_some(m.retransmits).flatten(),
        loss_percent: loss_percent.map(|l| round(l, 3)),
        path: m.path,
        mtu: m.mtu,
        cpu_local_percent: m.cpu_local_percent.map(|c| round(c, 1)),
        cpu_remote_percent: remote_cpu_percent(plan.mode, &o.streams).map(|c| round(c, 1)),
        bytes,
    }
}

/// The peer daemon's CPU time as a percentage of the sessions' time, without its bench
/// threads. The sessions overlap: each reports the whole process's time over about the
/// same window, so the largest stands for all. The bench threads are taken out: one per
/// TCP stream, or the one UDP receiver that all UDP sessions share.
fn remote_cpu_percent(mode: Mode, streams: &[StreamResult]) -> Option<f64> {
    let mut process = 0u64;
    let mut sinks = 0u64;
    let mut wall: f64 = 0.0;
    for s in streams {
        process = process.max(s.report.cpu_ms?);
        let sink = s.report.sink_cpu_ms.unwrap_or(0);
        sinks = match mode {
            Mode::Tcp => sinks + sink,
            Mode::Udp => sinks.max(sink),
        };
        wall = wall.max(s.report.seconds);
    }
    (!streams.is_empty()).then(|| percent(process.saturating_sub(sinks) as f64, wall * 1000.0))
}

fn percent(part_ms: f64, wall_ms: f64) -> f64 {
    if wall_ms <= 0.0 {
        0.0
    } else {
        100.0 * part_ms / wall_ms
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// The human form of a result.
fn render(r: &BenchResult, target: &Target, o: &Outcome) -> String {
    let mut out = String::new();
    let name = if target.name.is_empty() {
        String::new()
    } else {
        format!(" ({})", target.name)
    };
    let mode = match r.mode {
        Mode::Tcp => "TCP",
        Mode::Udp => "UDP",
    };
    let _ = writeln!(
        out,
        "bench {}{name} at {}: {mode}, {} stream{}, {:.1} s",
        r.peer,
        r.address,
        r.streams,
        if r.streams == 1 { "" } else { "s" },
        r.seconds
    );
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "  {key:<12} {value}");
    };
    let sent_bytes: u64 = o.streams.iter().map(|s| s.sent_bytes).sum();
    match r.mode {
        Mode::Tcp => {
            line(
                "throughput",
                format!("{:.1} Mbit/s ({})", r.mbit_per_s, megabytes(r.bytes)),
            );
            if let Some(p) = r.packets_per_s {
                line(
                    "packets",
                    format!("~{}/s (full-size segments at the tunnel MTU)", thousands(p)),
                );
            }
            line(
                "retransmits",
                r.retransmits.map_or_else(
                    || "unknown (no /proc/net/snmp)".to_owned(),
                    |n| format!("{n} (host-wide TCP retransmits)"),
                ),
            );
        }
        Mode::Udp => {
            let sent_mbit = sent_bytes as f64 * 8.0 / 1e6 / r.seconds.max(1e-3);
            line(
                "throughput",
                format!(
                    "{:.1} Mbit/s received ({}), {sent_mbit:.1} Mbit/s sent",
                    r.mbit_per_s,
                    megabytes(r.bytes)
                ),
            );
            let received: u64 = o.streams.iter().filter_map(|s| s.report.packets).sum();
            let sent: u64 = o.streams.iter().map(|s| s.sent_packets).sum();
            line(
                "packets",
                format!(
                    "{}/s received; {} of {} lost ({:.2}%)",
                    thousands(r.packets_per_s.unwrap_or(0.0)),
                    thousands(sent.saturating_sub(received) as f64),
                    thousands(sent as f64),
                    r.loss_percent.unwrap_or(0.0)
                ),
            );
        }
    }
    let path = match r.path {
        PeerPath::Direct => "DIRECT",
        PeerPath::Relay => "RELAY (through a controller replica)",
        PeerPath::None => "NONE (no session)",
    };
    let mtu = r
        .mtu
        .map_or_else(String::new, |m| format!(", tunnel MTU {m}"));
    line("path", format!("{path}{mtu}"));
    let cpu = |c: Option<f64>| c.map_or_else(|| "unknown".to_owned(), |c| format!("{c:.0}%"));
    line(
        "CPU",
        format!(
            "this daemon {}, the peer's {} (of one core)",
            cpu(r.cpu_local_percent),
            cpu(r.cpu_remote_percent)
        ),
    );
    out
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `1234567.8` → `1 234 568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The live line on stderr: `\r  3.0 s  812 Mbit/s  [#######.............]`.
#[derive(Debug)]
struct Progress {
    seconds: u32,
    last: Option<(f64, u64)>,
}

const BAR: usize = 20;

impl Progress {
    fn new(seconds: u32) -> Self {
        Progress {
            seconds,
            last: None,
        }
    }

    fn update(&mut self, elapsed: f64, bytes: u64) {
        // Past the end the streams only wait for the peer's reports.
        if elapsed > f64::from(self.seconds) + 0.1 {
            return;
        }
        let (t0, b0) = self.last.unwrap_or((0.0, 0));
        let rate = if elapsed > t0 {
            bytes.saturating_sub(b0) as f64 * 8.0 / 1e6 / (elapsed - t0)
        } else {
            0.0
        };
        self.last = Some((elapsed, bytes));
        let line = progress_line(elapsed, rate, f64::from(self.seconds));
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r{line}");
        let _ = err.flush();
    }

    fn clear(&self) {
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r{:width$}\r", "", width = BAR + 32);
        let _ = err.flush();
    }
}

fn progress_line(elapsed: f64, mbit_per_s: f64, total: f64) -> String {
    let done = if total > 0.0 {
        ((elapsed / total).clamp(0.0, 1.0) * BAR as f64).round() as usize
    } else {
        BAR
    };
    format!(
        "  {elapsed:.1} s  {mbit_per_s:.0} Mbit/s  [{}{}]",
        "#".repeat(done),
        ".".repeat(BAR - done)
    )
}

#[cfg(test)]
mod tests;

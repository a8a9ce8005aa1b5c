//! The measurement: bench sessions with the peer's bench server ([`crate::daemon::bench`]),
//! one thread per stream on plain blocking sockets.

use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::daemon::bench::{
    Ack, GRACE, IDLE_TIMEOUT, MAX_REPLY_BYTES, Mode, PROTOCOL_VERSION, Report, Request,
    UDP_HEADER_BYTES, encode_datagram, read_line, write_line,
};

/// How long connecting and the server's first answer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long UDP waits after sending, for the last datagrams to arrive.
const UDP_DRAIN: Duration = Duration::from_millis(300);
/// TCP write size.
const CHUNK: usize = 128 * 1024;

/// `RetransSegs` of `/proc/net/snmp`: the TCP segments this network namespace
/// retransmitted.
pub fn read_retransmits() -> Option<u64> {
    parse_retransmits(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

pub(super) fn parse_retransmits(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let i = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    pub address: SocketAddr,
    pub mode: Mode,
    pub seconds: u32,
    pub streams: u16,
    /// UDP datagram size.
    pub size: usize,
    /// UDP: total send rate; `None` for as fast as possible.
    pub rate_bytes_per_s: Option<f64>,
}

/// What one stream did, with the server's report.
#[derive(Debug, Clone)]
pub struct StreamResult {
    pub report: Report,
    pub sent_bytes: u64,
    /// UDP datagrams sent.
    pub sent_packets: u64,
    /// When sending started.
    pub start: Instant,
    /// When the data was in: the report came (TCP), or sending stopped (UDP).
    pub end: Instant,
}

/// What all streams did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub streams: Vec<StreamResult>,
    /// From the start of sending to the end of the last stream.
    pub seconds: f64,
}

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// No connection, or no answer to the request.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered with a refusal.
    #[error("the peer refused the bench session: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// Opens one session: connects, sends the request line, reads the answer.
pub(super) fn open(plan: &Plan, stream: u32) -> Result<(TcpStream, Ack), BenchError> {
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
pub fn measure(plan: &Plan, progress: &mut dyn FnMut(f64, u64)) -> Result<Outcome, BenchError> {
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
pub(super) fn finish(conn: &mut TcpStream) -> Result<Report, BenchError> {
    let failed = |e: io::Error| BenchError::Failed(format!("no report from the peer: {e}"));
    conn.shutdown(Shutdown::Write).map_err(failed)?;
    conn.set_read_timeout(Some(GRACE)).map_err(failed)?;
    let line = read_line(conn, MAX_REPLY_BYTES).map_err(failed)?;
    serde_json::from_slice(&line)
        .map_err(|e| BenchError::Failed(format!("the peer's report is not readable: {e}")))
}

//! What a measurement comes to: the result `--json` prints, its human form, and the live
//! progress line.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::IpAddr;

use meshd_proto::NodeId;
use serde::Serialize;

use super::measure::{Outcome, Plan, StreamResult};
use super::target::Target;
use crate::daemon::api::PeerPath;
use crate::daemon::bench::Mode;

/// What was measured outside the streams.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub path: PeerPath,
    pub mtu: Option<u16>,
    pub retransmits: Option<u64>,
    pub cpu_local_percent: Option<f64>,
}

/// The result, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    pub peer: NodeId,
    pub address: IpAddr,
    pub mode: Mode,
    pub streams: u16,
    pub seconds: f64,
    pub mbit_per_s: f64,
    /// TCP: estimated from the bytes and the MTU; UDP: datagrams received.
    pub packets_per_s: Option<f64>,
    /// TCP: host-wide TCP retransmits (this network namespace) during the run.
    pub retransmits: Option<u64>,
    /// UDP: datagrams sent but not received, in percent.
    pub loss_percent: Option<f64>,
    pub path: PeerPath,
    pub mtu: Option<u16>,
    pub cpu_local_percent: Option<f64>,
    pub cpu_remote_percent: Option<f64>,
    /// Received by the peer.
    pub bytes: u64,
}

pub fn summarize(plan: &Plan, target: &Target, o: &Outcome, m: Measured) -> BenchResult {
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
pub(super) fn remote_cpu_percent(mode: Mode, streams: &[StreamResult]) -> Option<f64> {
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

pub fn percent(part_ms: f64, wall_ms: f64) -> f64 {
    if wall_ms <= 0.0 {
        0.0
    } else {
        100.0 * part_ms / wall_ms
    }
}

pub(super) fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// The human form of a result.
pub fn render(r: &BenchResult, target: &Target, o: &Outcome) -> String {
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

pub(super) fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `1234567.8` → `1 234 568`.
pub(super) fn thousands(x: f64) -> String {
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
pub struct Progress {
    seconds: u32,
    last: Option<(f64, u64)>,
}

const BAR: usize = 20;

impl Progress {
    pub fn new(seconds: u32) -> Self {
        Progress {
            seconds,
            last: None,
        }
    }

    pub fn update(&mut self, elapsed: f64, bytes: u64) {
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

    pub fn clear(&self) {
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r{:width$}\r", "", width = BAR + 32);
        let _ = err.flush();
    }
}

pub(super) fn progress_line(elapsed: f64, mbit_per_s: f64, total: f64) -> String {
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

//! What the demo prints besides its steps: the ends of the logs when it fails, and how to
//! look around (and clean up) a lab kept with `--keep`.

use std::path::Path;

use std::net::IpAddr;

use meshd_lab::Lab;
use meshd_proto::NetworkId;

use crate::commands::{CTL, NODES};

/// What a successful run leaves for `--keep`'s instructions.
#[derive(Debug)]
pub struct Summary {
    pub nwid: NetworkId,
    /// n2's IPv4 address on the network.
    pub peer_v4: IpAddr,
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The end of each host's log, on stderr.
pub fn print_log_tails(dir: &Path) {
    for role in std::iter::once(CTL).chain(NODES) {
        let log = dir.join(format!("{role}.log"));
        if log.exists() {
            eprintln!("--- {role}.log (tail)\n{}", tail(&log));
        }
    }
}

/// How to explore a kept lab and how to remove it.
pub fn print_keep(lab: &Lab, exe: &str, summary: &Summary) {
    println!();
    println!("--keep: the lab is still running. To look around (as root):");
    for role in NODES {
        println!(
            "  ip netns exec {} {exe} status --state {}",
            lab.host(role).netns,
            lab.dir().join(role).display()
        );
    }
    println!(
        "  ip netns exec {} {exe} controller member list {} --data {}",
        lab.host(CTL).netns,
        summary.nwid,
        lab.dir().join(CTL).display()
    );
    println!(
        "  ip netns exec {} ping {}    (n1 -> n2 over the mesh; logs: {}/*.log)",
        lab.host(NODES[0]).netns,
        summary.peer_v4,
        lab.dir().display()
    );
    println!("To remove it (as root):");
    let namespaces = lab.namespaces().join(" ");
    println!(
        "  for ns in {namespaces}; do ip netns pids $ns | xargs -r kill; ip netns del $ns; \
         done; rm -rf {}",
        lab.dir().display()
    );
}

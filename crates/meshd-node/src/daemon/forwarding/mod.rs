//! Whether this host forwards what the mesh needs: packets from the mesh to this host's
//! container subnets go from the TUN to the container bridge, and container packets the
//! other way, so the kernel must forward (`net.ipv4.ip_forward=1`,
//! `net.ipv6.conf.all.forwarding=1`) and no firewall FORWARD policy may drop them (Docker
//! sets iptables' `FORWARD` policy to DROP).
//!
//! The sysctls are per network namespace: the daemon's namespace is what counts. Files are
//! read under a root laid out like `/proc/sys` ([`PROC_SYS`]), so tests use a temp dir.
//!
//! The firewall check runs `iptables -S` / `ip6tables -S` and `nft -j list ruleset` when
//! those tools are installed (with a short timeout), and parses their output in pure
//! functions ([`parse_iptables`], [`parse_nft_ruleset`]). It is a heuristic: a FORWARD
//! chain whose policy is DROP is fine when some rule in it (or in a chain it jumps to, like
//! Docker's `DOCKER-USER`) accepts traffic in or out of a mesh interface (`-i mesh+`,
//! `-o mesh-…`, `iifname "mesh*"`); rule order and other matches are not weighed.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod egress;
mod firewall;
mod sysctl;

pub use egress::*;
pub use firewall::*;
pub use sysctl::*;

/// How long a firewall check is reused: `meshd status` stays fast.
pub const FIREWALL_CACHE: Duration = Duration::from_secs(5);

/// `meshd status`'s view of forwarding on this host (`"forwarding"` in `status --json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForwardingReport {
    /// `net.ipv4.ip_forward` is on (false when unreadable).
    pub ipv4: bool,
    /// `net.ipv6.conf.all.forwarding` is on (false when unreadable).
    pub ipv6: bool,
    /// The firewall's FORWARD state in one line, e.g. `iptables FORWARD policy DROP, no rule
    /// for mesh-*`, or `unknown (no iptables or nft)`.
    pub firewall: String,
    /// What `--configure-forwarding` set at start, e.g. `net.ipv4.ip_forward=1`.
    pub configured: Vec<String>,
    /// What stops forwarding for this host's containers, one line each with the fix. Empty
    /// when no joined network gives this host a container subnet.
    pub problems: Vec<String>,
}

/// The address families this host forwards for: those its container subnets are in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Needs {
    fn any(self, other: Needs) -> bool {
        (self.ipv4 && other.ipv4) || (self.ipv6 && other.ipv6)
    }
}

const V4: Needs = Needs {
    ipv4: true,
    ipv6: false,
};
const V6: Needs = Needs {
    ipv4: false,
    ipv6: true,
};
const BOTH: Needs = Needs {
    ipv4: true,
    ipv6: true,
};

/// Builds [`ForwardingReport`]s: reads the sysctls each time, the firewall at most every
/// [`FIREWALL_CACHE`]. May block for the firewall tools (a few seconds at worst).
#[derive(Debug)]
pub struct Checker {
    root: PathBuf,
    configured: Vec<String>,
    probe: fn() -> Firewall,
    firewall: Mutex<Option<(Instant, Firewall)>>,
}

impl Checker {
    /// Sysctls under `root` (a `/proc/sys`); `configured`: what `--configure-forwarding` set.
    pub fn new(root: impl Into<PathBuf>, configured: Vec<String>) -> Self {
        Self::with_probe(root, configured, probe_firewall)
    }

    /// The same with another firewall check (tests).
    pub fn with_probe(
        root: impl Into<PathBuf>,
        configured: Vec<String>,
        probe: fn() -> Firewall,
    ) -> Self {
        Self {
            root: root.into(),
            configured,
            probe,
            firewall: Mutex::new(None),
        }
    }

    fn firewall(&self) -> Firewall {
        // Held while probing: concurrent requests wait for one check instead of each
        // running the tools.
        let mut cache = self.firewall.lock().unwrap_or_else(PoisonError::into_inner);
        match &*cache {
            Some((at, fw)) if at.elapsed() < FIREWALL_CACHE => fw.clone(),
            _ => {
                let fw = (self.probe)();
                *cache = Some((Instant::now(), fw.clone()));
                fw
            }
        }
    }

    /// The report, with problems only for the families in `needs` (those of this host's
    /// container subnets).
    pub fn report(&self, needs: Needs) -> ForwardingReport {
        self.report_for(needs, &[])
    }

    /// [`Checker::report`], whose firewall fixes open the mesh only towards `owned`: the
    /// host's container subnets and the routes it is the gateway of.
    pub fn report_for(&self, needs: Needs, owned: &[IpNet]) -> ForwardingReport {
        let mut problems = Vec::new();
        let (v4, v6) = read_sysctls(&self.root);
        let mut values = [false, false];
        for ((s, value), out) in SYSCTLS.iter().zip([v4, v6]).zip(&mut values) {
            let needed = needs.any(s.family);
            match value {
                Ok(on) => {
                    *out = on;
                    if !on && needed {
                        problems.push(format!(
                            "{name} is 0: containers behind this host are unreachable over \
                             {over} from other hosts; run `sysctl -w {name}=1` or start the \
                             daemon with --configure-forwarding",
                            name = s.name,
                            over = s.over
                        ));
                    }
                }
                Err(e) if needed => problems.push(format!(
                    "cannot read {} ({}): {e}; containers behind this host may be unreachable \
                     over {} from other hosts",
                    s.name,
                    self.root.join(s.path).display(),
                    s.over
                )),
                Err(_) => {}
            }
        }
        let firewall = self.firewall();
        problems.extend(
            firewall
                .problems
                .into_iter()
                .filter(|p| needs.any(p.family))
                .map(|p| p.text(owned)),
        );
        ForwardingReport {
            ipv4: values[0],
            ipv6: values[1],
            firewall: firewall.summary,
            configured: self.configured.clone(),
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::firewall::tests::DOCKER_IPTABLES;
    use super::sysctl::tests::proc_sys;
    use super::*;

    static PROBES: AtomicUsize = AtomicUsize::new(0);

    fn docker_firewall() -> Firewall {
        PROBES.fetch_add(1, Ordering::SeqCst);
        let (line, problem) = assess_iptables("iptables", &parse_iptables(DOCKER_IPTABLES));
        Firewall {
            summary: line,
            problems: problem.into_iter().collect(),
        }
    }

    #[test]
    fn report_has_problems_only_for_the_families_containers_use() {
        let dir = proc_sys("0\n", "1\n");
        let checker = Checker::with_probe(dir.path(), vec![], docker_firewall);
        let before = PROBES.load(Ordering::SeqCst);

        // No container subnet: values, no problems.
        let report = checker.report(Needs::default());
        assert_eq!(
            report,
            ForwardingReport {
                ipv4: false,
                ipv6: true,
                firewall: "iptables FORWARD policy DROP, no rule for mesh-*".into(),
                configured: vec![],
                problems: vec![],
            }
        );
        // IPv6 containers only: IPv6 forwarding is on, iptables is IPv4: fine.
        assert!(checker.report(V6).problems.is_empty());
        // IPv4 containers: the sysctl, then the firewall.
        let problems = checker.report(BOTH).problems;
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(
            problems[0],
            "net.ipv4.ip_forward is 0: containers behind this host are unreachable over IPv4 \
             from other hosts; run `sysctl -w net.ipv4.ip_forward=1` or start the daemon with \
             --configure-forwarding"
        );
        assert!(problems[1].starts_with("iptables FORWARD policy is DROP"));
        // The firewall was checked once: cached.
        assert_eq!(PROBES.load(Ordering::SeqCst) - before, 1);

        // The sysctls are read on every report.
        std::fs::write(dir.path().join("net/ipv4/ip_forward"), "1\n").unwrap();
        assert!(checker.report(BOTH).ipv4);
    }

    #[test]
    fn unreadable_sysctls_are_problems_only_when_needed() {
        let empty = tempfile::tempdir().unwrap();
        let no_fw = || Firewall {
            summary: NO_FIREWALL_TOOL.into(),
            problems: vec![],
        };
        let checker = Checker::with_probe(empty.path(), vec!["x=1".into()], no_fw);
        let report = checker.report(Needs::default());
        assert_eq!(
            (report.ipv4, report.ipv6, report.problems.len()),
            (false, false, 0)
        );
        assert_eq!(report.firewall, NO_FIREWALL_TOOL);
        assert_eq!(report.configured, vec!["x=1".to_owned()]);
        let report = checker.report(V6);
        assert_eq!(report.problems.len(), 1);
        assert!(
            report.problems[0].starts_with("cannot read net.ipv6.conf.all.forwarding"),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn report_json_keys() {
        let json = serde_json::to_value(ForwardingReport::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "ipv4": false, "ipv6": false, "firewall": "", "configured": [], "problems": []
            })
        );
    }
}

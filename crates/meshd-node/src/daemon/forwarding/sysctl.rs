//! The forwarding sysctls: read them, and set them for `--configure-forwarding`.

use std::path::Path;

use tracing::{error, info, warn};

use super::{Needs, V4, V6};

/// Where the kernel's sysctls are.
pub const PROC_SYS: &str = "/proc/sys";

/// One forwarding sysctl.
pub(super) struct Sysctl {
    pub(super) name: &'static str,
    /// Under the `/proc/sys` root.
    pub(super) path: &'static str,
    pub(super) family: Needs,
    pub(super) over: &'static str,
}

pub(super) const SYSCTLS: [Sysctl; 2] = [
    Sysctl {
        name: "net.ipv4.ip_forward",
        path: "net/ipv4/ip_forward",
        family: V4,
        over: "IPv4",
    },
    Sysctl {
        name: "net.ipv6.conf.all.forwarding",
        path: "net/ipv6/conf/all/forwarding",
        family: V6,
        over: "IPv6",
    },
];

/// Reads a 0/1 sysctl file: whether it is non-zero.
fn read_flag(path: &Path) -> Result<bool, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("unexpected value {:?}", text.trim()))?;
    Ok(value != 0)
}

/// `net.ipv4.ip_forward` and `net.ipv6.conf.all.forwarding` under `root` (a `/proc/sys`).
pub fn read_sysctls(root: &Path) -> (Result<bool, String>, Result<bool, String>) {
    let [v4, v6] = SYSCTLS.map(|s| read_flag(&root.join(s.path)));
    (v4, v6)
}

/// What `--configure-forwarding` does: writes 1 into `net.ipv4.ip_forward` and
/// `net.ipv6.conf.all.forwarding` under `root` (a `/proc/sys`), and returns those it
/// changed (the ones that were 0), as `name=1`.
///
/// Turning on IPv6 forwarding makes the kernel ignore router advertisements on interfaces
/// with `accept_ra=1`: a host that gets its IPv6 address by SLAAC needs `accept_ra=2` on
/// its uplink ([`accept_ra_interfaces`] finds the candidates; accept_ra is left alone).
pub fn configure(root: &Path) -> Result<Vec<String>, String> {
    let mut set = Vec::new();
    for s in &SYSCTLS {
        let path = root.join(s.path);
        let step = read_flag(&path)
            .map_err(|e| format!("cannot read {}: {e}", s.name))
            .and_then(|on| {
                if on {
                    return Ok(false);
                }
                std::fs::write(&path, "1\n")
                    .map(|()| true)
                    .map_err(|e| format!("cannot set {}=1: {e}", s.name))
            });
        match step {
            Ok(true) => set.push(format!("{}=1", s.name)),
            Ok(false) => {}
            Err(e) if set.is_empty() => return Err(e),
            Err(e) => return Err(format!("{e} (set before that: {})", set.join(", "))),
        }
    }
    Ok(set)
}

/// The interfaces under `root/net/ipv6/conf` with `accept_ra=1`: with forwarding on, the
/// kernel ignores their router advertisements. Leaves out `all`, `default`, `lo` and the
/// mesh's own interfaces.
pub fn accept_ra_interfaces(root: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root.join("net/ipv6/conf")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            !matches!(name.as_str(), "all" | "default" | "lo") && !name.starts_with("mesh-")
        })
        .filter(|name| {
            std::fs::read_to_string(root.join("net/ipv6/conf").join(name).join("accept_ra"))
                .is_ok_and(|v| v.trim() == "1")
        })
        .collect();
    out.sort();
    out
}

/// `--configure-forwarding` at the daemon's start: [`configure`] under `root`, logged (an
/// error is logged and the daemon runs on), plus the accept_ra hint. Returns what it set.
pub fn configure_at_start(root: &Path) -> Vec<String> {
    let set = match configure(root) {
        Ok(set) if set.is_empty() => {
            info!(
                "--configure-forwarding: forwarding was already on (net.ipv4.ip_forward=1, \
                 net.ipv6.conf.all.forwarding=1)"
            );
            set
        }
        Ok(set) => {
            info!("--configure-forwarding: set {}", set.join(", "));
            set
        }
        Err(e) => {
            error!("--configure-forwarding: {e}; running on without it");
            Vec::new()
        }
    };
    let ra = accept_ra_interfaces(root);
    if read_sysctls(root).1 == Ok(true) && !ra.is_empty() {
        warn!(
            "IPv6 forwarding is on, so the kernel ignores router advertisements on interfaces \
             with accept_ra=1 ({}); if this host gets its IPv6 address by SLAAC, set \
             accept_ra=2 on its uplink (sysctl -w net.ipv6.conf.IFACE.accept_ra=2)",
            ra.join(", ")
        );
    }
    set
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A temp dir laid out like `/proc/sys` with the two sysctls and some accept_ra files.
    pub(in crate::daemon::forwarding) fn proc_sys(v4: &str, v6: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("net/ipv4")).unwrap();
        std::fs::write(root.join("net/ipv4/ip_forward"), v4).unwrap();
        for (iface, ra) in [
            ("all", "1"),
            ("default", "1"),
            ("lo", "1"),
            ("eth0", "1"),
            ("eth1", "2"),
            ("mesh-8056c2e21c", "1"),
        ] {
            let d = root.join("net/ipv6/conf").join(iface);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("accept_ra"), format!("{ra}\n")).unwrap();
        }
        std::fs::write(root.join("net/ipv6/conf/all/forwarding"), v6).unwrap();
        dir
    }

    #[test]
    fn reads_and_configures_the_sysctls() {
        let dir = proc_sys("0\n", "0\n");
        let root = dir.path();
        assert_eq!(read_sysctls(root), (Ok(false), Ok(false)));
        assert_eq!(
            configure(root).unwrap(),
            vec![
                "net.ipv4.ip_forward=1".to_owned(),
                "net.ipv6.conf.all.forwarding=1".to_owned()
            ]
        );
        assert_eq!(read_sysctls(root), (Ok(true), Ok(true)));
        assert_eq!(
            std::fs::read_to_string(root.join("net/ipv4/ip_forward")).unwrap(),
            "1\n"
        );
        // Again: nothing to change.
        assert_eq!(configure(root).unwrap(), Vec::<String>::new());

        // Only what was 0 is set and reported.
        let dir = proc_sys("1\n", "0\n");
        assert_eq!(
            configure(dir.path()).unwrap(),
            vec!["net.ipv6.conf.all.forwarding=1".to_owned()]
        );
    }

    #[test]
    fn configure_fails_with_a_reason() {
        // No IPv6 (ipv6.disable=1): the IPv4 part is done and said so.
        let dir = proc_sys("0\n", "0\n");
        std::fs::remove_dir_all(dir.path().join("net/ipv6")).unwrap();
        let err = configure(dir.path()).unwrap_err();
        assert!(
            err.starts_with("cannot read net.ipv6.conf.all.forwarding: "),
            "{err}"
        );
        assert!(
            err.ends_with("(set before that: net.ipv4.ip_forward=1)"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        let err = configure(empty.path()).unwrap_err();
        assert!(
            err.starts_with("cannot read net.ipv4.ip_forward: "),
            "{err}"
        );
        let (v4, v6) = read_sysctls(empty.path());
        assert!(v4.is_err() && v6.is_err());
    }

    #[test]
    fn accept_ra_candidates_are_real_interfaces_with_1() {
        let dir = proc_sys("0", "0");
        assert_eq!(accept_ra_interfaces(dir.path()), vec!["eth0".to_owned()]);
        assert!(accept_ra_interfaces(Path::new("/nonexistent")).is_empty());
    }
}

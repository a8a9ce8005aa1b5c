//! Network namespaces, per thread.
//!
//! `setns(2)` moves only the calling thread. Sockets, TUN devices and netlink sockets belong
//! to the namespace of the thread that creates them, so a thread that enters a namespace and
//! then builds a tokio runtime (whose worker threads inherit the namespace) runs a whole node
//! inside it. Used by the namespace tests and the demo; the daemon runs where it is started.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Where `ip netns add` pins named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Moves the calling thread into the namespace `ip netns add <name>` created.
pub fn enter(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network namespace name {name:?}"),
        ));
    }
    let ns = File::open(Path::new(NETNS_DIR).join(name))?;
    enter_fd(ns.as_fd())
}

/// Moves the calling thread into the network namespace `ns` refers to (a file from
/// [`NETNS_DIR`] or `/proc/<pid>/ns/net`, or the result of [`current`]).
pub fn enter_fd(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `ns` is an open descriptor for the whole call (a `BorrowedFd` cannot outlive
    // its owner); setns(2) only reads it, and with CLONE_NEWNET the kernel checks that it
    // refers to a network namespace (EINVAL otherwise). It changes no memory of ours.
    super::check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// The calling thread's current network namespace, to come back to with [`enter_fd`].
pub fn current() -> io::Result<OwnedFd> {
    Ok(File::open("/proc/thread-self/ns/net")?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_missing_namespaces_reported() {
        for bad in ["", ".", "..", "a/b", "../../proc/1/ns/net"] {
            assert_eq!(
                enter(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        let missing = enter("meshd-no-such-namespace").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_thread_can_come_back_to_where_it_was() {
        // Needs CAP_SYS_ADMIN, as every namespace test does; entering our own namespace
        // changes nothing else.
        let here = current().unwrap();
        enter_fd(here.as_fd()).unwrap();
        let not_a_namespace = File::open("/proc/self/stat").unwrap();
        assert!(enter_fd(not_a_namespace.as_fd()).is_err());
    }
}
